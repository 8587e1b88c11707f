from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

import asgi_rotator.protocols as registry
from asgi_rotator.protocols import Codec, codec_names, get_codec
from asgi_rotator.protocols.openai_chat import OpenAIChatCodec


class ShoutingChat(OpenAIChatCodec):
    """A subclass overriding one method, as a user would to adapt a provider's quirk."""

    def request_path(self, request: Any) -> str:
        return "/chat/completions?shout=1"


@pytest.fixture
def clean_registry() -> Iterator[None]:
    saved = dict(registry._registered)
    yield
    registry._registered.clear()
    registry._registered.update(saved)
    registry._entry_point_targets.cache_clear()


def test_builtin_codecs_by_name() -> None:
    assert codec_names() == ["anthropic_messages", "gemini", "openai_chat", "openai_responses"]
    for name in codec_names():
        codec = get_codec(name)
        assert isinstance(codec, Codec) and codec.name == name
        assert get_codec(name) is codec  # made once


def test_unknown_codec_names_the_known_ones() -> None:
    with pytest.raises(KeyError, match="known: anthropic_messages, gemini"):
        get_codec("carrier_pigeon")


def test_entry_point_replaces_a_builtin(clean_registry: None, monkeypatch: pytest.MonkeyPatch) -> None:
    registry._registered.pop("openai_chat", None)
    monkeypatch.setattr(
        registry, "_entry_point_targets", lambda: {"openai_chat": f"{__name__}:ShoutingChat"}
    )
    codec = get_codec("openai_chat")
    assert isinstance(codec, ShoutingChat)
    assert codec.request_path(None) == "/chat/completions?shout=1"
    # Everything else is inherited unchanged.
    assert codec.parse_request({"model": "m", "messages": [{"role": "user", "content": "hi"}]}).model == "m"


def test_register_an_instance(clean_registry: None) -> None:
    class Carrier(OpenAIChatCodec):
        name = "carrier"

    registry.register(Carrier())
    assert isinstance(get_codec("carrier"), Carrier)
    assert "carrier" in codec_names()


@pytest.mark.anyio
async def test_a_codec_subclass_shapes_the_models_listing(clean_registry: None) -> None:
    """The models endpoint answers in the shape the client's codec gives, so a replaced
    codec's listing is what its clients get."""
    from asgi_rotator.config import parse_config
    from asgi_rotator.dispatch import ProviderDispatch
    from asgi_rotator.protocols.gemini import GeminiCodec
    from asgi_rotator.providers import Providers

    class PagedGemini(GeminiCodec):
        def models_listing(self, model_ids: list[str]) -> dict[str, Any]:
            return {**super().models_listing(model_ids), "nextPageToken": ""}

    registry.register(PagedGemini())
    config = {"providers": {"p": {"preset": "mock", "protocols": ["gemini"], "models": ["m1"]}}}
    providers = Providers(parse_config(config, {}), {})
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "method": "GET",
        "path": "/v1beta/models",
        "root_path": "",
        "query_string": b"",
        "headers": [(b"x-goog-api-key", b"k")],
    }
    try:
        await ProviderDispatch(providers)(scope, receive, send)
    finally:
        await providers.aclose()
    assert sent[0]["status"] == 200
    listing = json.loads(b"".join(m.get("body", b"") for m in sent[1:]))
    assert listing["nextPageToken"] == ""
    assert "models/p/m1" in [m["name"] for m in listing["models"]]
