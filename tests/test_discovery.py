"""Model discovery: which providers discover, how discovered names resolve next to configured
ones, and the mock's model listings held to the official SDKs (the oracle discovery is
tested against)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import anthropic
import openai
import pytest
from google import genai
from google.genai import types as gt

from asgi_rotator.config import ConfigError, parse_config
from asgi_rotator.errors import GatewayError
from asgi_rotator.mock import MODELS, MockUpstream, mock_transport
from asgi_rotator.providers import Providers
from asgi_rotator.upstream import HttpxUpstream
from tests.server import serve

# Enough for several pages at the SDKs' and the services' default page sizes (20, 50).
MANY = tuple(f"model-{i:03}" for i in range(120))


def providers(config: dict[str, Any]) -> Providers:
    return Providers(parse_config({"providers": config}, {}), {})


def test_which_providers_discover_their_models() -> None:
    discovering = providers(
        {
            # OpenAI-compatible, no models listed: what a new user's provider looks like.
            "local": {"protocol": "openai_chat", "base_url": "http://127.0.0.1:1/v1"},
            "openai": {"keys": ["sk-discovery-test-openai"]},  # a preset with a models endpoint
            "anthropic": {"keys": ["sk-discovery-test-anthropic"]},
            "listed": {"protocol": "openai_chat", "base_url": "http://x/v1", "models": ["m"]},
            "listed-too": {
                "protocol": "openai_chat",
                "base_url": "http://x/v1",
                "models": ["m2"],
                "discover_models": True,
            },
            # Not OpenAI-compatible and of no preset: whether it has a listing is unknown.
            "custom-claude": {"protocol": "anthropic_messages", "base_url": "http://x"},
            "off": {"protocol": "openai_chat", "base_url": "http://x/v1", "discover_models": False},
            # A backend that needs its shaping steps to answer: the fetch would carry none.
            "shaped": {
                "protocol": "openai_chat",
                "base_url": "http://x/v1",
                "shaping": [{"step": "headers", "options": {"set": {"editor-version": "x/1"}}}],
            },
        }
    ).discovery
    assert sorted(discovering) == ["anthropic", "listed-too", "local", "openai"]
    assert discovering["anthropic"].protocol == "anthropic_messages"
    assert discovering["openai"].protocol == "openai_chat"


def test_discovery_options_are_checked() -> None:
    with pytest.raises(ConfigError) as raised:
        parse_config(
            {
                "providers": {
                    "p": {
                        "protocol": "openai_chat",
                        "base_url": "http://x/v1",
                        "models": ["m"],
                        "allow_models": "listed",
                        "discover_models": True,
                        "models_ttl": 0,
                    }
                }
            },
            {},
        )
    assert [p.split(":")[1].strip() for p in raised.value.problems] == [
        "providers.p.discover_models",
        "providers.p.models_ttl",
    ]


@pytest.mark.anyio
async def test_a_configured_model_wins_and_a_name_two_lists_hold_is_ambiguous() -> None:
    # Two in-process mocks, each listing MODELS; "a" also lists one of them itself.
    both = providers(
        {
            "a": {"preset": "mock", "models": ["mock-gpt"], "discover_models": True},
            "b": {"preset": "mock"},
        }
    )
    try:
        await both.discover()
        assert [t.name for t in both.resolve("mock-gpt")] == ["a/mock-gpt"]
        with pytest.raises(GatewayError, match=r"several providers.*'provider/mock-claude'"):
            both.resolve("mock-claude")
        assert [t.name for t in both.resolve("b/mock-claude")] == ["b/mock-claude"]
        ids = both.model_ids()
        assert {"a/mock-gpt", "b/mock-gpt", "a/mock-claude", "b/mock-claude", "mock-gpt"} <= set(
            ids
        )
        assert "mock-claude" not in ids
    finally:
        await both.aclose()


@pytest.mark.anyio
async def test_a_name_the_configuration_resolves_never_waits_for_a_fetch() -> None:
    mocked = providers({"a": {"preset": "mock"}, "b": {"preset": "mock", "models": ["x"]}})
    try:
        for name in ("a/anything", "x", "b/y"):
            await mocked.targets(name)
        assert all(m.fetched_at is None for m in mocked.discovery.values())
        assert [t.name for t in await mocked.targets("mock-gemini")] == ["a/mock-gemini"]
        assert mocked.discovery["a"].models == MODELS
    finally:
        await mocked.aclose()


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("protocol", "pages"), [("openai_chat", 1), ("anthropic_messages", 2), ("gemini", 2)]
)
async def test_every_page_of_a_protocols_listing_is_read(protocol: str, pages: int) -> None:
    catalogue = tuple(f"model-{i:04}" for i in range(1500))  # more than a page of 1000
    base = "mock://upstream/v1" if protocol == "openai_chat" else "mock://upstream"
    one = providers({"p": {"protocol": protocol, "base_url": base, "discover_models": True}})
    mock = MockUpstream(models=catalogue)
    provider = one.providers["p"]
    await provider.client.aclose()
    provider.client = HttpxUpstream(transport=mock_transport(mock))
    try:
        await one.discover()
        assert one.discovery["p"].models == catalogue
        assert len(mock.requests) == pages
    finally:
        await one.aclose()


# --- the mock's listings, as the official SDKs read them ----------------------------------


@pytest.fixture(scope="module")
def listing_mock() -> Iterator[str]:
    with serve(MockUpstream(models=MANY)) as url:
        yield url


def test_the_openai_sdk_lists_the_mock_models(listing_mock: str) -> None:
    with openai.OpenAI(base_url=f"{listing_mock}/v1", api_key="k", max_retries=0) as client:
        assert [m.id for m in client.models.list()] == list(MANY)


def test_the_anthropic_sdk_pages_through_the_mock_models(listing_mock: str) -> None:
    with anthropic.Anthropic(base_url=listing_mock, api_key="k", max_retries=0) as client:
        first = client.models.list()
        assert len(first.data) == 20 and first.has_more  # the service's default page
        assert [m.id for m in client.models.list()] == list(MANY)  # auto-paging
        assert [m.id for m in client.models.list(limit=1000)] == list(MANY)
        with pytest.raises(anthropic.BadRequestError):
            client.models.list(limit=1001)


def test_the_gemini_sdk_pages_through_the_mock_models(listing_mock: str) -> None:
    options = gt.HttpOptions(base_url=listing_mock, retry_options=gt.HttpRetryOptions(attempts=1))
    client = genai.Client(api_key="k", http_options=options)
    try:
        names = [m.name for m in client.models.list()]
        assert names == [f"models/{m}" for m in MANY]
    finally:
        client.close()
