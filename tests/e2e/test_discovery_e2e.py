"""Model discovery end to end: the gateway built as a new user runs it (no configuration
file, only the providers' standard key variables), each provider's models endpoint served by
its own mock, the official SDKs listing models and asking for them by bare name."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from typing import Any

import anthropic
import httpx
import openai
import pytest

from asgi_rotator import discovery
from asgi_rotator.mock import Fault, MockUpstream
from asgi_rotator.stack import Gateway, build_app
from tests.e2e.clients import AnthropicDriver, ChatDriver, GeminiDriver
from tests.server import free_port, serve

OPENAI_KEY = "sk-discovery-openai-canary"
ANTHROPIC_KEY = "sk-ant-discovery-canary"
GEMINI_KEY = "AIza-discovery-canary"
OPENAI_MODELS = ("gpt-4.1", "gpt-4.1-mini", "o4-mini")
ANTHROPIC_MODELS = ("claude-sonnet-4-5", "claude-haiku-4-5")
# More than one page of Gemini's listing (1000 a page): the second page is read too.
GEMINI_MODELS = (
    "gemini-2.5-flash",
    "text-embedding-004",
    *(f"gemini-tuned-{i}" for i in range(1100)),
)


@pytest.fixture(scope="module")
def upstreams() -> Iterator[dict[str, tuple[MockUpstream, str]]]:
    mocks = {
        "openai": MockUpstream(models=OPENAI_MODELS),
        "anthropic": MockUpstream(models=ANTHROPIC_MODELS),
        "gemini": MockUpstream(models=GEMINI_MODELS),
    }
    with serve(mocks["openai"]) as a, serve(mocks["anthropic"]) as b, serve(mocks["gemini"]) as c:
        yield {
            "openai": (mocks["openai"], a),
            "anthropic": (mocks["anthropic"], b),
            "gemini": (mocks["gemini"], c),
        }


@pytest.fixture(autouse=True)
def cleared(upstreams: dict[str, tuple[MockUpstream, str]]) -> None:
    """Each test sees only its own requests and faults."""
    for mock, _ in upstreams.values():
        mock.clear()


def user_environment(upstreams: dict[str, tuple[MockUpstream, str]]) -> dict[str, str]:
    """What a new user sets: the key variables; the base URLs only point at the mocks."""
    return {
        "OPENAI_API_KEY": OPENAI_KEY,
        "ANTHROPIC_API_KEY": ANTHROPIC_KEY,
        "GEMINI_API_KEY": GEMINI_KEY,
        "ASGI_ROTATOR__PROVIDERS__OPENAI__BASE_URL": f"{upstreams['openai'][1]}/v1",
        "ASGI_ROTATOR__PROVIDERS__ANTHROPIC__BASE_URL": upstreams["anthropic"][1],
        "ASGI_ROTATOR__PROVIDERS__GEMINI__BASE_URL": upstreams["gemini"][1],
    }


@pytest.fixture
def gateway(upstreams: dict[str, tuple[MockUpstream, str]]) -> Iterator[tuple[Gateway, str]]:
    """A fresh gateway (nothing discovered yet) over the module's mocks."""
    app = build_app(None, environ=user_environment(upstreams))
    with serve(app) as url:
        yield app, url


def listings(mock: MockUpstream) -> list[Any]:
    return [r for r in mock.requests if r.method == "GET" and r.path.endswith("/models")]


def test_without_a_config_file_bare_names_resolve_to_the_provider_that_lists_them(
    gateway: tuple[Gateway, str], upstreams: dict[str, tuple[MockUpstream, str]]
) -> None:
    _, url = gateway
    with ChatDriver(url) as chat, AnthropicDriver(url) as claude, GeminiDriver(url) as gemini:
        assert "You said: Hello there" in chat.ask("gpt-4.1").text
        assert "You said: Hello there" in claude.ask("claude-sonnet-4-5", stream=True).text
        assert "You said: Hello there" in gemini.ask("gemini-2.5-flash").text
        # Translated: the OpenAI SDK, a model only the Anthropic provider has.
        assert "You said: Hello there" in chat.ask("claude-haiku-4-5", stream=True).text
    asked = {
        name: [(r.model, r.key) for r in mock.requests if r.method == "POST"]
        for name, (mock, _) in upstreams.items()
    }
    assert asked == {
        "openai": [("gpt-4.1", OPENAI_KEY)],
        "anthropic": [("claude-sonnet-4-5", ANTHROPIC_KEY), ("claude-haiku-4-5", ANTHROPIC_KEY)],
        "gemini": [("gemini-2.5-flash", GEMINI_KEY)],
    }


def test_with_only_openai_api_key_set_the_models_are_listed_and_a_bare_name_is_served(
    upstreams: dict[str, tuple[MockUpstream, str]],
) -> None:
    mock, mock_url = upstreams["openai"]
    environ = {
        "OPENAI_API_KEY": OPENAI_KEY,
        "ASGI_ROTATOR__PROVIDERS__OPENAI__BASE_URL": f"{mock_url}/v1",
    }
    with serve(build_app(None, environ=environ)) as url, ChatDriver(url) as chat:
        ids = [m.id for m in chat.client.models.list()]
        assert "You said" in chat.ask("gpt-4.1").text
    assert ids == [*(f"openai/{m}" for m in OPENAI_MODELS), *OPENAI_MODELS]
    assert [r.key for r in listings(mock)] == [OPENAI_KEY]


@pytest.mark.parametrize(
    "without",
    [{"fallback"}, {"fallback", "cooldown", "field_cache", "responses"}],
    ids=["cooldown", "dispatch"],
)
def test_the_first_layer_that_resolves_a_bare_name_discovers_it(
    upstreams: dict[str, tuple[MockUpstream, str]], without: set[str]
) -> None:
    app = build_app(None, environ=user_environment(upstreams), without=without)
    with serve(app) as url, ChatDriver(url) as chat:
        assert "You said" in chat.ask("gpt-4.1-mini", stream=True).text
    (asked,) = [r for r in upstreams["openai"][0].requests if r.method == "POST"]
    assert asked.model == "gpt-4.1-mini"


def test_each_sdk_lists_the_discovered_models(
    gateway: tuple[Gateway, str], upstreams: dict[str, tuple[MockUpstream, str]]
) -> None:
    _, url = gateway
    with ChatDriver(url) as chat, AnthropicDriver(url) as claude, GeminiDriver(url) as gemini:
        ids = {m.id for m in chat.client.models.list()}
        claude_ids = {m.id for m in claude.client.models.list()}
        gemini_names = {m.name for m in gemini.client.models.list()}
    expected = {*OPENAI_MODELS, *ANTHROPIC_MODELS, "gemini-2.5-flash", "gemini-tuned-1099"}
    assert expected | {"openai/gpt-4.1", "anthropic/claude-sonnet-4-5"} <= ids
    assert expected <= claude_ids
    assert {f"models/{m}" for m in expected} <= gemini_names
    # Gemini lists it for embedContent only: nothing a generation request could use.
    assert "text-embedding-004" not in ids
    # Fetched once per provider for all three listings, all pages of Gemini's in one fetch.
    assert [len(listings(mock)) for mock, _ in upstreams.values()] == [1, 1, 2]
    (openai_listing,) = listings(upstreams["openai"][0])
    assert openai_listing.key == OPENAI_KEY and openai_listing.path == "/v1/models"


def test_concurrent_first_requests_share_one_fetch(
    gateway: tuple[Gateway, str], upstreams: dict[str, tuple[MockUpstream, str]]
) -> None:
    _, url = gateway

    async def ask_all() -> list[Any]:
        async with openai.AsyncOpenAI(base_url=f"{url}/v1", api_key="k", max_retries=0) as c:
            return await asyncio.gather(
                *(
                    c.chat.completions.create(
                        model="o4-mini", messages=[{"role": "user", "content": "hi"}]
                    )
                    for _ in range(20)
                )
            )

    completions = asyncio.run(ask_all())
    assert all(c.choices[0].message.content for c in completions)
    assert len(listings(upstreams["openai"][0])) == 1


def test_a_list_is_fetched_again_once_its_ttl_has_passed(
    gateway: tuple[Gateway, str], upstreams: dict[str, tuple[MockUpstream, str]]
) -> None:
    app, url = gateway
    mock = upstreams["openai"][0]
    with ChatDriver(url) as chat:
        assert chat.ask("gpt-4.1").text
        mock.models = (*OPENAI_MODELS, "gpt-5")
        try:
            with pytest.raises(openai.NotFoundError, match="gpt-5"):
                chat.ask("gpt-5")  # still within the TTL: the list as fetched
            # The list's age passes its TTL (one hour by default).
            app.providers.discovery["openai"].fetched_at -= 3600
            assert "You said" in chat.ask("gpt-5").text
            assert "gpt-5" in {m.id for m in chat.client.models.list()}
        finally:
            mock.models = OPENAI_MODELS
    assert len(listings(mock)) == 2


@pytest.mark.parametrize(
    "failure",
    ["http_500", "http_401", "invalid_json", "deep_json", "timeout", "connection_refused"],
)
def test_a_discovery_failure_fails_no_request_and_is_logged_once(
    upstreams: dict[str, tuple[MockUpstream, str]],
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
    failure: str,
) -> None:
    mock = upstreams["openai"][0]
    environ = user_environment(upstreams)
    listing = "/v1/models"
    if failure == "http_500":
        mock.add_fault(Fault(path=listing, status=500, times=None))
    elif failure == "http_401":
        mock.add_fault(Fault(path=listing, status=401, message=f"bad key {OPENAI_KEY}", times=None))
    elif failure == "invalid_json":
        mock.add_fault(Fault(path=listing, malformed_json=True, times=None))
    elif failure == "deep_json":
        mock.add_fault(Fault(path=listing, deep_json=True, times=None))
    elif failure == "timeout":
        mock.add_fault(Fault(path=listing, header_delay=2, times=None))
        environ["ASGI_ROTATOR__PROVIDERS__OPENAI__TIMEOUT"] = "0.3"
    else:
        environ["ASGI_ROTATOR__PROVIDERS__OPENAI__BASE_URL"] = f"http://127.0.0.1:{free_port()}/v1"
    # Asked again on every request that needs it, to show that it is still logged once.
    monkeypatch.setattr(discovery, "RETRY_AFTER_FAILURE", 0.0)
    caplog.set_level(logging.INFO, logger="asgi_rotator.discovery")
    with serve(build_app(None, environ=environ)) as url, ChatDriver(url) as chat:
        for _ in range(3):
            # The other providers' models, by bare name and on the listing, as if nothing
            # had failed.
            assert "You said" in chat.ask("claude-sonnet-4-5").text
            ids = {m.id for m in chat.client.models.list()}
            assert {*ANTHROPIC_MODELS, "gemini-2.5-flash"} <= ids
            assert not ids & set(OPENAI_MODELS)
            # The failing provider's own models stay reachable by their full name.
            if failure != "connection_refused":
                assert "You said" in chat.ask("openai/gpt-4.1").text
            with pytest.raises(openai.NotFoundError) as refused:
                chat.ask("gpt-4.1")
            assert "the model lists of openai could not be fetched" in str(refused.value)
    warnings = [r for r in caplog.records if r.name == "asgi_rotator.discovery"]
    assert [(r.levelno, r.getMessage().split(":")[0]) for r in warnings] == [
        (logging.WARNING, "provider openai")
    ]
    if failure == "deep_json":
        # Our words for it, not the decoder's recursion message.
        assert "nested too deeply" in warnings[0].getMessage()
    assert OPENAI_KEY not in caplog.text


def test_discovery_works_again_after_a_failure(
    upstreams: dict[str, tuple[MockUpstream, str]],
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    mock = upstreams["openai"][0]
    mock.add_fault(Fault(path="/v1/models", status=503, times=1))
    monkeypatch.setattr(discovery, "RETRY_AFTER_FAILURE", 0.0)
    caplog.set_level(logging.INFO, logger="asgi_rotator.discovery")
    with serve(build_app(None, environ=user_environment(upstreams))) as url:
        with ChatDriver(url) as chat:
            with pytest.raises(openai.NotFoundError):
                chat.ask("gpt-4.1")
            assert "You said" in chat.ask("gpt-4.1").text
    levels = [r.levelno for r in caplog.records if r.name == "asgi_rotator.discovery"]
    assert levels == [logging.WARNING, logging.INFO]


def test_a_configured_model_list_is_not_replaced_by_discovery(
    upstreams: dict[str, tuple[MockUpstream, str]],
) -> None:
    mock, mock_url = upstreams["openai"]
    base = {"protocol": "openai_chat", "base_url": f"{mock_url}/v1", "keys": ["k1"]}
    config = {
        "providers": {
            "curated": {**base, "models": ["gpt-4.1"]},
            "other": {**base, "models": ["o4-mini"]},
        }
    }
    with serve(build_app(config, environ={})) as url:
        ids = {m["id"] for m in httpx.get(f"{url}/v1/models").json()["data"]}
        with anthropic.Anthropic(base_url=url, api_key="k", max_retries=0) as claude:
            with pytest.raises(anthropic.NotFoundError):
                claude.messages.create(
                    model="gpt-4.1-mini",
                    max_tokens=16,
                    messages=[{"role": "user", "content": "hi"}],
                )
    assert ids == {"curated/gpt-4.1", "other/o4-mini", "gpt-4.1", "o4-mini"}
    assert listings(mock) == []
