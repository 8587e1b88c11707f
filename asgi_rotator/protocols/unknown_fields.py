"""Carrying what the unified model has no place for, so a same-protocol rebuild keeps it.

Every unified struct has an ``extra`` dict, read back only by the codec of the protocol the
struct came from (``Request.origin``, ``Response.origin``, ``Reasoning.source``):

* **Unknown fields**: the fields of the wire object the codec does not name, verbatim
  (``unknown_fields``), written back under what the codec built (``write_back``).  Whether a
  *known* field sent as ``null`` (or ``[]``) is kept as sent is the protocol's decision, made
  where it calls ``unknown_fields``: such a field carries no value, so it becomes none in the
  unified model, and only keeping it in ``extra`` writes it back as the client sent it.
* **Markers**: how the wire said what the unified value now holds (a string or an array
  ``content``, a legacy spelling, a synthesised id ...).  One convention for every codec: a
  dict under one key, ``marker_key(protocol)`` (``"__" + protocol``).  No protocol has a wire
  field of that name, and ``wire_fields`` / ``write_back`` never send it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = [
    "marker_key",
    "marks_of",
    "own_marks",
    "unknown_fields",
    "wire_fields",
    "with_marks",
    "write_back",
]


def marker_key(protocol: str) -> str:
    """The key of ``protocol``'s markers in an ``extra`` dict."""
    return f"__{protocol}"


def unknown_fields(
    body: Mapping[str, Any],
    known: frozenset[str],
    *,
    keep_null: bool = False,
    keep_empty: bool = False,
) -> dict[str, Any]:
    """The fields of ``body`` not in ``known``; with ``keep_null`` also known fields sent as
    ``null``, with ``keep_empty`` also known fields sent as ``[]``."""
    if not (keep_null or keep_empty) and known.issuperset(body):
        return {}  # the usual wire object: every field known
    # A loop rather than a comprehension: a wire object has a few fields, and a
    # comprehension is a call of its own.
    found: dict[str, Any] = {}
    for k, v in body.items():
        if k not in known or (keep_null and v is None) or (keep_empty and v == []):
            found[k] = v
    return found


def marks_of(extra: Mapping[str, Any], key: str) -> dict[str, Any]:
    """The markers under ``key`` (read only: ``{}`` when there are none)."""
    found = extra.get(key)
    return found if isinstance(found, dict) else {}


def own_marks(extra: dict[str, Any], key: str) -> dict[str, Any]:
    """The markers under ``key``, made when there are none yet: for writing one."""
    found = extra.get(key)
    if not isinstance(found, dict):
        found = extra[key] = {}
    return found


def with_marks(extra: dict[str, Any], key: str, found: dict[str, Any]) -> dict[str, Any]:
    """``extra`` with ``found`` as its markers under ``key``, when there are any."""
    if found:
        extra[key] = found
    return extra


def wire_fields(extra: Mapping[str, Any], key: str) -> dict[str, Any]:
    """``extra`` without the markers under ``key``: the unknown fields, as sent."""
    return {k: v for k, v in extra.items() if k != key}


def write_back(out: dict[str, Any], extra: Mapping[str, Any], key: str) -> None:
    """The unknown fields of ``extra`` written under what was built in ``out``: a value a
    layer set wins over a kept ``null``."""
    for k, v in extra.items():
        if k != key:
            out.setdefault(k, v)
