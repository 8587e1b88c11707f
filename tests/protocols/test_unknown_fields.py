"""The one convention every codec keeps unknown fields and its round-trip markers by
(``protocols/unknown_fields.py``): markers sit in one dict under ``"__" + protocol name`` in a
struct's ``extra``, another protocol's markers never appear there, and none reaches the wire."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest

from asgi_rotator.protocols import codec_names, get_codec
from asgi_rotator.protocols.unknown_fields import marker_key

FIXTURES = Path(__file__).parent.parent / "fixtures"
BUILTIN = ("anthropic_messages", "gemini", "openai_chat", "openai_responses")


def _fixtures(kind: str) -> list[tuple[str, Path]]:
    return [
        (name, path)
        for name in BUILTIN
        for path in sorted((FIXTURES / name).glob(f"{kind}_*.json"))
    ]


def _extras(value: Any) -> Iterator[dict[str, Any]]:
    """Every ``extra`` dict of a unified struct, at any depth."""
    if isinstance(value, dict):
        for key, item in value.items():
            if key == "extra" and isinstance(item, dict):
                yield item
            yield from _extras(item)
    elif isinstance(value, list):
        for item in value:
            yield from _extras(item)


def _keys(value: Any) -> Iterator[str]:
    if isinstance(value, dict):
        for key, item in value.items():
            yield key
            yield from _keys(item)
    elif isinstance(value, list):
        for item in value:
            yield from _keys(item)


def _check_markers(unified: Any, protocol: str) -> None:
    own = marker_key(protocol)
    others = {marker_key(name) for name in codec_names()} - {own}
    for extra in _extras(msgspec.to_builtins(unified)):
        assert not others & extra.keys()
        if own in extra:
            assert isinstance(extra[own], dict) and extra[own]


@pytest.mark.parametrize(
    ("protocol", "path"), _fixtures("request"), ids=lambda v: getattr(v, "stem", v)
)
def test_request_markers_stay_off_the_wire(protocol: str, path: Path) -> None:
    codec = get_codec(protocol)
    body = json.loads(path.read_text())
    request = codec.parse_request(body, model=body.get("model", "gemini-2.5-flash"))
    _check_markers(request, protocol)
    built = codec.build_request(request)
    assert marker_key(protocol) not in set(_keys(built))


@pytest.mark.parametrize(
    ("protocol", "path"), _fixtures("response"), ids=lambda v: getattr(v, "stem", v)
)
def test_response_markers_stay_off_the_wire(protocol: str, path: Path) -> None:
    codec = get_codec(protocol)
    response = codec.parse_response(json.loads(path.read_text()))
    _check_markers(response, protocol)
    for name in BUILTIN:  # the client's protocol, same or another
        built = get_codec(name).build_response(response)
        assert not {marker_key(n) for n in BUILTIN} & set(_keys(built))
