"""Fallback and cooldown/retry end to end: the official SDKs against FallbackRouter over
CooldownRetry over dispatch, behind a real uvicorn server, with the mock upstream faulting.

The routing stack is rebuilt for every test (fresh cooldown state, a fake clock that the
layers also sleep on, so nothing here waits for a cooldown); the dispatch app and its pooled
upstream clients live for the module."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from typing import Any

import anthropic
import anyio
import httpx
import openai
import pytest
from google.genai import errors as genai_errors

from asgi_rotator.config import parse_config
from asgi_rotator.dispatch import ProviderDispatch
from asgi_rotator.middleware.cooldown import CooldownRetry
from asgi_rotator.middleware.fallback import FallbackRouter
from asgi_rotator.mock import Fault, MockUpstream
from asgi_rotator.providers import Providers
from asgi_rotator.state import MemoryStore
from tests.e2e.clients import DRIVERS
from tests.e2e.conftest import UPSTREAMS, provider_config
from tests.middleware.test_cooldown import Clock
from tests.server import free_port, serve

# The failing target is on the client's own upstream protocol (passthrough); the fallback on
# another one (translation).
OTHER = {
    "openai_chat": "up-anthropic",
    "openai_responses": "up-gemini",
    "anthropic_messages": "up-chat",
    "gemini": "up-responses",
}
FAILURES = {
    "429": Fault(status=429, model="bad", times=None),
    "500": Fault(status=500, model="bad", times=None),
    "529": Fault(status=529, model="bad", times=None),
    "timeout": Fault(header_delay=3, model="slow", times=None),
    "connection": None,  # up-dead: nothing listens on its port
}


def routing_config(mock_url: str) -> dict[str, Any]:
    providers = provider_config(mock_url)
    providers["up-dead"] = {
        "protocol": "openai_chat",
        "base_url": f"http://127.0.0.1:{free_port()}/v1",
        "keys": ["key-dead"],
    }
    providers["up-slow"] = {**providers["up-anthropic"], "keys": ["key-slow"], "timeout": 0.5}
    providers["pool"] = {
        "protocol": "openai_chat",
        "base_url": f"{mock_url}/v1",
        "keys": ["key-a", "key-b"],
    }
    providers["quad"] = {
        "protocol": "anthropic_messages",
        "base_url": mock_url,
        "keys": [f"key-q{i}" for i in range(4)],
    }
    groups: dict[str, Any] = {
        f"via-{client}": {"targets": [f"{UPSTREAMS[client]}/bad", f"{OTHER[client]}/good"]}
        for client in UPSTREAMS
    }
    groups.update(
        {
            "via-slow": {"targets": ["up-slow/slow", "up-chat/good"]},
            "via-dead": {"targets": ["up-dead/x", "up-gemini/good"]},
            "ctx": {
                "targets": ["up-anthropic/small"],
                "context_fallbacks": ["up-gemini/large"],
            },
            "strict": {
                "targets": ["up-chat/strict", "up-responses/other"],
                "content_fallbacks": ["up-anthropic/lenient"],
            },
            "doomed": {"targets": ["up-chat/rl1", "up-anthropic/rl2"]},
            "broken": {"targets": ["up-chat/e500", "up-gemini/e529"]},
            "tuned": {
                "targets": [
                    {"target": "up-chat/first", "params": {"max_tokens": 11}},
                    {"target": "up-anthropic/second", "params": {"temperature": 0.25}},
                ]
            },
        }
    )
    return {"providers": providers, "groups": groups}


class Gateway:
    """One dispatch for the module; a fresh routing stack per test (``build``)."""

    def __init__(self, providers: Providers) -> None:
        self.providers = providers
        self.dispatch = ProviderDispatch(providers)
        self.clock = Clock()
        self.app: Any = None

    def build(self, **options: Any) -> None:
        self.clock = Clock()
        cooldown = CooldownRetry(
            self.dispatch,
            providers=self.providers,
            store=MemoryStore(),
            clock=self.clock,
            sleep=self.clock.sleep,
            **options,
        )
        self.app = FallbackRouter(cooldown, providers=self.providers)

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            await self.dispatch(scope, receive, send)  # closes the upstream clients
            return
        await self.app(scope, receive, send)


@pytest.fixture(scope="module")
def routing(mock_server: tuple[MockUpstream, str]) -> Iterator[tuple[Gateway, str]]:
    config = parse_config(routing_config(mock_server[1]), {})
    gateway = Gateway(Providers(config, {}))
    gateway.build()
    with serve(gateway) as url:
        yield gateway, url


@pytest.fixture
def gateway(routing: tuple[Gateway, str], mock: MockUpstream) -> Gateway:
    routing[0].build()
    return routing[0]


@pytest.fixture
def url(routing: tuple[Gateway, str], gateway: Gateway) -> str:
    return routing[1]


def models_asked(mock: MockUpstream) -> list[str | None]:
    return [r.model for r in mock.requests]


def status_of(exc: Exception) -> int:
    return exc.code if isinstance(exc, genai_errors.APIError) else exc.status_code  # type: ignore[attr-defined]


def header_of(exc: Exception, name: str) -> str | None:
    response = exc.response  # type: ignore[attr-defined]
    return response.headers.get(name) if response is not None else None


# --- fallback, for every client protocol, plain and streamed --------------------------------


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
@pytest.mark.parametrize("failure", list(FAILURES))
@pytest.mark.parametrize("client", list(DRIVERS))
def test_group_falls_back_on_a_failing_target(
    url: str, gateway: Gateway, mock: MockUpstream, client: str, failure: str, stream: bool
) -> None:
    fault = FAILURES[failure]
    if fault is not None:
        mock.add_fault(fault)
    group = {"timeout": "via-slow", "connection": "via-dead"}.get(failure, f"via-{client}")
    if failure == "timeout":
        gateway.build(max_attempts=1)  # each attempt costs the provider's 0.5 s timeout
    with DRIVERS[client](url) as driver:
        result = driver.ask(group, "fall back please", stream=stream)
    assert "You said: fall back please" in result.text
    asked = models_asked(mock)
    assert asked[-1] == "good"
    if failure in ("429", "500", "529"):
        # The failing target's one key, once: never retried while the next target can answer.
        assert asked == ["bad", "good"]
    elif failure == "timeout":
        assert asked[:-1] == ["slow"]
    else:
        assert asked == ["good"]


@pytest.mark.parametrize("client", list(DRIVERS))
def test_an_upstream_200_whose_first_event_is_an_error_still_falls_back(
    url: str, mock: MockUpstream, client: str
) -> None:
    mock.add_fault(Fault(status=529, error_event_after=0, model="bad", times=None))
    with DRIVERS[client](url) as driver:
        result = driver.ask(f"via-{client}", "still here?", stream=True)
    assert "You said: still here?" in result.text
    assert models_asked(mock)[-1] == "good"
    faulted = [c for c in mock.closed_streams if c.model == "bad"]
    assert faulted and all(c.reason == "faulted" and c.events == 0 for c in faulted)


@pytest.mark.parametrize("client", list(DRIVERS))
def test_context_window_error_goes_to_the_context_fallback(
    url: str, mock: MockUpstream, client: str
) -> None:
    mock.add_fault(
        Fault(
            status=400, message="prompt is too long: 250000 tokens > 200000 maximum", model="small"
        )
    )
    with DRIVERS[client](url) as driver:
        result = driver.ask("ctx", "a very long prompt")
    assert "You said: a very long prompt" in result.text
    assert models_asked(mock) == ["small", "large"]


@pytest.mark.parametrize("client", list(DRIVERS))
def test_content_filter_error_goes_to_the_content_fallback(
    url: str, mock: MockUpstream, client: str
) -> None:
    mock.add_fault(
        Fault(status=400, message="Output blocked by content filtering policy", model="strict")
    )
    with DRIVERS[client](url) as driver:
        result = driver.ask("strict", "something edgy", stream=True)
    assert "You said: something edgy" in result.text
    # Straight to the content fallback, not to the group's next target.
    assert models_asked(mock) == ["strict", "lenient"]


@pytest.mark.parametrize("client", list(DRIVERS))
def test_all_rate_limited_is_one_429_with_the_earliest_retry_after(
    url: str, mock: MockUpstream, client: str
) -> None:
    mock.add_fault(Fault(status=429, retry_after=40, model="rl1", times=None))
    mock.add_fault(Fault(status=429, retry_after=7, model="rl2", times=None))
    with DRIVERS[client](url) as driver, pytest.raises(Exception) as info:
        driver.ask("doomed", stream=client == "anthropic_messages")
    assert status_of(info.value) == 429
    assert header_of(info.value, "retry-after") == "7"
    assert header_of(info.value, "x-rotator-attempts") == "2"
    message = str(info.value)
    assert "up-chat/rl1: rate_limited (429)" in message
    assert "up-anthropic/rl2: rate_limited (429)" in message
    assert "key-up" not in message
    # Both retry-afters are longer than max_wait: one request each, no waiting.
    assert models_asked(mock) == ["rl1", "rl2"]


@pytest.mark.parametrize("client", list(DRIVERS))
def test_all_failed_for_other_causes_is_a_503_in_the_clients_terms(
    url: str, mock: MockUpstream, client: str
) -> None:
    mock.add_fault(Fault(status=500, model="e500", times=None))
    mock.add_fault(Fault(status=529, model="e529", times=None))
    with DRIVERS[client](url) as driver, pytest.raises(Exception) as info:
        driver.ask("broken")
    # Overload is 529 in Anthropic's own protocol (its codec's choice), 503 elsewhere.
    assert status_of(info.value) == (529 if client == "anthropic_messages" else 503)
    assert "up-chat/e500: server_error (500)" in str(info.value)
    assert "up-gemini/e529: overloaded (529)" in str(info.value)
    # The first target's one key is not retried while another target can answer; the last
    # target, with nobody after it, gets its retries (max_attempts).
    assert models_asked(mock) == ["e500"] + ["e529"] * 3


def test_per_target_params_reach_their_target_only(url: str, mock: MockUpstream) -> None:
    mock.add_fault(Fault(status=503, model="first", times=None))
    with DRIVERS["openai_chat"](url) as driver:
        driver.ask("tuned", "params")
    first = [r.body for r in mock.requests if r.model == "first"]
    second = [r.body for r in mock.requests if r.model == "second"]
    assert first and all(
        b.get("max_completion_tokens", b.get("max_tokens")) == 11 and "temperature" not in b
        for b in first
    )
    assert second[0]["temperature"] == 0.25 and second[0]["max_tokens"] != 11


def test_attempt_count_is_in_a_response_header(url: str, mock: MockUpstream) -> None:
    mock.add_fault(Fault(status=429, retry_after=60, model="bad"))
    body = {"model": "via-openai_chat", "messages": [{"role": "user", "content": "hi"}]}
    with httpx.Client(base_url=url) as client:
        first = client.post("/v1/chat/completions", json=body)
        again = client.post("/v1/chat/completions", json=body)
    assert first.status_code == 200 and first.headers["x-rotator-attempts"] == "2"
    # up-chat's only key is cooling down for 60 s: skipped without an upstream call.
    assert again.status_code == 200 and again.headers["x-rotator-attempts"] == "1"
    assert models_asked(mock) == ["bad", "good", "good"]


# --- rotation and cooldown under concurrency ------------------------------------------------


async def _burst(url: str, model: str, n: int = 100, **extra: Any) -> list[httpx.Response]:
    body = {"model": model, "messages": [{"role": "user", "content": "hi"}], **extra}
    responses: list[httpx.Response] = []
    limits = httpx.Limits(max_connections=n, max_keepalive_connections=n)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=30) as client:

        async def one() -> None:
            responses.append(await client.post("/v1/chat/completions", json=body))

        async with anyio.create_task_group() as group:
            for _ in range(n):
                group.start_soon(one)
    return responses


@pytest.mark.anyio
async def test_rate_limited_key_rotates_and_rests_until_its_retry_after_under_concurrency(
    url: str, gateway: Gateway, mock: MockUpstream
) -> None:
    mock.add_fault(Fault(status=429, retry_after=30, key="key-a", times=None))
    responses = await _burst(url, "pool/m")
    assert [r.status_code for r in responses] == [200] * 100
    attempts = [int(r.headers["x-rotator-attempts"]) for r in responses]
    keys = [r.key for r in mock.requests]
    # No request went upstream more often than allowed, and every try is accounted for.
    assert max(attempts) <= 2 and sum(attempts) == len(keys)
    assert keys.count("key-b") == 100
    assert 1 <= keys.count("key-a") == attempts.count(2)
    # key-a is cooling down: the next burst never touches it.
    mock.requests.clear()
    responses = await _burst(url, "pool/m", stream=True)
    assert [r.status_code for r in responses] == [200] * 100
    assert {r.key for r in mock.requests} == {"key-b"} and len(mock.requests) == 100
    assert all(r.headers["x-rotator-attempts"] == "1" for r in responses)
    # 29 s later it still rests; once its retry-after has passed it is used again.
    gateway.clock.now += 29
    mock.requests.clear()
    await _burst(url, "pool/m", n=10)
    assert {r.key for r in mock.requests} == {"key-b"}
    gateway.clock.now += 1.5
    mock.requests.clear()
    await _burst(url, "pool/m", n=10)
    assert "key-a" in {r.key for r in mock.requests}


@pytest.mark.anyio
async def test_round_robin_is_fair_under_concurrency(url: str, mock: MockUpstream) -> None:
    responses = await _burst(url, "quad/m")
    assert [r.status_code for r in responses] == [200] * 100
    keys = [r.key for r in mock.requests]
    assert {key: keys.count(key) for key in set(keys)} == {f"key-q{i}": 25 for i in range(4)}


@pytest.mark.anyio
async def test_every_key_cooling_longer_than_the_budget_fails_at_once(
    url: str, gateway: Gateway, mock: MockUpstream
) -> None:
    mock.add_fault(Fault(status=429, retry_after=120, model="m", times=None))
    first = await _burst(url, "pool/m", n=1)
    assert first[0].status_code == 429 and first[0].headers["retry-after"] == "120"
    mock.requests.clear()
    gateway.clock.now += 20
    responses = await _burst(url, "pool/m", n=20)
    assert {r.status_code for r in responses} == {429}
    assert {r.headers["retry-after"] for r in responses} == {"100"}
    assert mock.requests == [] and gateway.clock.slept == []


@pytest.mark.parametrize(
    ("client", "upstream"), list(itertools.product(["openai_chat"], UPSTREAMS))
)
def test_single_target_errors_keep_their_sdk_shape(
    url: str, mock: MockUpstream, client: str, upstream: str
) -> None:
    mock.add_fault(Fault(status=401, times=None))
    with DRIVERS[client](url) as driver, pytest.raises(openai.AuthenticationError):
        driver.ask(f"{UPSTREAMS[upstream]}/model-x")
    assert len(mock.requests) == 1  # one key, refused: out of rotation, not retried


def test_anthropic_client_sees_overloaded_as_its_own_error(url: str, mock: MockUpstream) -> None:
    mock.add_fault(Fault(status=529, times=None))
    with DRIVERS["anthropic_messages"](url) as driver, pytest.raises(anthropic.OverloadedError):
        driver.ask("up-anthropic/model-x")
    assert len(mock.requests) == 3
