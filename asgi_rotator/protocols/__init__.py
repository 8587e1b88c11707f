"""Codec registry: built-in codecs by name, plus any registered under the entry point group
``asgi_rotator.protocols`` (``name = "package.module:CodecClass"``).  An entry point with a
built-in name replaces the built-in, which is how a subclass overriding one method is
installed."""

from __future__ import annotations

from functools import cache
from importlib import import_module
from importlib.metadata import entry_points

from .base import Codec, StreamDecoder, StreamEncoder

__all__ = [
    "BUILTIN",
    "Codec",
    "StreamDecoder",
    "StreamEncoder",
    "codec_names",
    "get_codec",
    "register",
]

BUILTIN = {
    "openai_chat": "asgi_rotator.protocols.openai_chat:OpenAIChatCodec",
    "openai_responses": "asgi_rotator.protocols.openai_responses:OpenAIResponsesCodec",
    "anthropic_messages": "asgi_rotator.protocols.anthropic:AnthropicCodec",
    "gemini": "asgi_rotator.protocols.gemini:GeminiCodec",
}

_registered: dict[str, Codec] = {}


def register(codec: Codec) -> None:
    """Install a codec instance under its ``name`` (replacing any other of that name)."""
    _registered[codec.name] = codec


def _load(target: str) -> Codec:
    module, _, attr = target.partition(":")
    cls = getattr(import_module(module), attr)
    return cls()


@cache
def _entry_point_targets() -> dict[str, str]:
    return {ep.name: ep.value for ep in entry_points(group="asgi_rotator.protocols")}


def get_codec(name: str) -> Codec:
    codec = _registered.get(name)
    if codec is None:
        target = _entry_point_targets().get(name) or BUILTIN.get(name)
        if target is None:
            raise KeyError(f"unknown protocol {name!r}; known: {', '.join(codec_names())}")
        codec = _registered[name] = _load(target)
    return codec


def codec_names() -> list[str]:
    return sorted({*BUILTIN, *_entry_point_targets(), *_registered})
