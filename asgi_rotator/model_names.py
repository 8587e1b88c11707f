"""What a model name may be, and how one goes into a URL path.

A client's model name travels far: into routing (group and alias lookups, ``provider/model``),
into state keys (cooldowns), into logs and traces, and for Gemini into the upstream URL
(``/v1beta/models/{model}:generateContent``).  So it is checked once, at the edge, by every
codec's ``parse_request`` (``check_model_name``), and again wherever a name becomes part of
a path (``path_segment``), so the request line a provider receives is always the protocol's
template with the name inside one segment, whatever a client sent.

What the edge refuses is what no provider's model names use and what changes the meaning of
a URL, a log line or a key: characters that are not printable (control characters, line and
paragraph separators, invisible format characters), ``?``, ``#``, ``%`` and ``\\``, empty,
``.`` and ``..`` path segments, and names over ``MAX_MODEL_NAME`` characters.  ``/`` and
``:`` are accepted there: ``provider/model``, ``org/model`` ids (OpenRouter, vLLM, Together)
and tags (Ollama's ``llama3:8b``, OpenRouter's ``:free``) use them, and they are harmless in
a JSON body.  They are refused only where they would change a path's template: a Gemini
upstream, whose model is a single path segment followed by ``:method``.
"""

from __future__ import annotations

from urllib.parse import quote

from .errors import GatewayError

__all__ = ["MAX_MODEL_NAME", "check_model_name", "path_segment"]

# Longer than any provider's model id (the longest seen are fine-tune and deployment ids of
# about 100 characters), short enough that a name cannot bloat logs, keys and spans.
MAX_MODEL_NAME = 256

# Characters that change what a URL means (query, fragment, escapes, a Windows-style
# separator some servers normalise to "/").
_URL_SPECIAL = frozenset("?#%\\")
# In a path template: also a segment separator and Gemini's ":method" separator.
_PATH_SPECIAL = _URL_SPECIAL | frozenset("/:")
# What a path segment may not be: empty ("a//b"), "." or "..".
_REFUSED_SEGMENTS = frozenset({"", ".", ".."})


def check_model_name(name: str, field: str = "model") -> str:
    """``name`` if it is an acceptable model name, else a ``bad_request`` naming ``field``."""
    problem = _problem(name)
    if problem is not None:
        raise GatewayError("bad_request", f"{field}: {problem}", param=field)
    return name


def path_segment(name: str, field: str = "model") -> str:
    """``name`` made one percent-encoded URL path segment.

    Refused (``bad_request`` naming ``field``) when it would change the template it goes
    into: a ``/`` (another segment, ``..`` climbing out of the base path), a ``:`` (Gemini's
    method separator), ``?``, ``#``, ``%``, or anything the edge refuses.  What remains is
    encoded, so no byte of it can be read as URL syntax.
    """
    check_model_name(name, field)
    for char in name:
        if char in _PATH_SPECIAL:
            raise GatewayError(
                "bad_request",
                f"{field}: {char!r} is not allowed in a model name that goes into this "
                f"provider's URL path",
                param=field,
            )
    return quote(name, safe="")


def _problem(name: str) -> str | None:
    if not name:
        return "must not be empty"
    if len(name) > MAX_MODEL_NAME:
        return f"must be at most {MAX_MODEL_NAME} characters, got {len(name)}"
    if not name.isprintable():
        # isprintable: no control characters (C0, DEL, C1), no separators but the space,
        # no invisible format characters.
        bad = next(c for c in name if not c.isprintable())
        return f"contains a non-printable character (U+{ord(bad):04X})"
    if not _URL_SPECIAL.isdisjoint(name):
        char = next(c for c in name if c in _URL_SPECIAL)
        return f"{char!r} is not allowed in a model name"
    if not _REFUSED_SEGMENTS.isdisjoint(name.split("/")):
        return "has an empty, '.' or '..' segment between slashes"
    return None
