"""StreamGuard behind a real uvicorn, over ProviderDispatch and the mock upstream, driven by
the official SDKs: every close reason for every client protocol, heartbeats, keepalive before
the first event, and a TTFB timeout that lets a fallback group move on.

Each stack is ``Recorder(StreamGuard(ProviderDispatch(...)))``; the recorder is a foreign
ASGI middleware on top that keeps each request's exchange and every message sent, and knows
the server's event loop so a test can count the tasks left on it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any

import anthropic
import httpx
import openai
import pytest
from google.genai import errors as genai_errors

from asgi_rotator.config import parse_config
from asgi_rotator.dispatch import ProviderDispatch
from asgi_rotator.exchange import RECORD, SCOPE_KEY, Exchange
from asgi_rotator.middleware.stream_guard import StreamGuard
from asgi_rotator.mock import Fault, MockUpstream
from asgi_rotator.providers import Providers
from tests.e2e.clients import DRIVERS
from tests.e2e.conftest import UPSTREAMS, provider_config, wait_for
from tests.middleware.test_stream_guard import assert_heartbeats_only_between_events
from tests.server import serve

# Short enough to keep the suite quick, long enough for a loaded two-core machine: the
# faults that provoke them wait far longer (and are cancelled, so they cost nothing).
LIMIT = 1.0
NEVER = 30.0
COMMENT = b": keepalive\n\n"
# Each client against its own protocol's upstream (passthrough) and against another one.
OTHER = {
    "openai_chat": "anthropic_messages",
    "openai_responses": "gemini",
    "anthropic_messages": "openai_responses",
    "gemini": "openai_chat",
}
PAIRS = [
    pytest.param(client, upstream, id=f"{client}->{upstream}")
    for client in DRIVERS
    for upstream in (client, OTHER[client])
]
API_ERRORS = (openai.APIError, anthropic.APIError, genai_errors.APIError)


class Recorder:
    """A foreign middleware: the exchange and sent messages of each request, the loop."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.calls: list[tuple[Exchange | None, list[dict[str, Any]]]] = []
        self.loop: asyncio.AbstractEventLoop | None = None

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        self.loop = asyncio.get_running_loop()
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        scope[RECORD] = True  # the layers keep their transform passes, for the tests to read
        sent: list[dict[str, Any]] = []

        async def recording(message: dict[str, Any]) -> None:
            sent.append(message)
            await send(message)

        try:
            await self.app(scope, receive, recording)
        finally:
            self.calls.append((scope.get(SCOPE_KEY), sent))

    def tasks(self) -> int:
        """Tasks alive on the server's loop, this probe excluded."""

        async def count() -> int:
            return len(asyncio.all_tasks()) - 1

        assert self.loop is not None
        return asyncio.run_coroutine_threadsafe(count(), self.loop).result(5)

    def last(self) -> tuple[Exchange, list[dict[str, Any]]]:
        calls = wait_for(lambda: self.calls)
        exchange, sent = calls[-1]
        assert exchange is not None
        return exchange, sent

    def clear(self) -> None:
        self.calls.clear()


class BreakingServer:
    """A server whose ``send`` raises once the client is gone, as hypercorn and daphne do
    (uvicorn drops such writes silently): here the client is gone after the first event."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        bodies = 0

        async def breaking(message: dict[str, Any]) -> None:
            nonlocal bodies
            if message["type"] == "http.response.body" and message.get("body"):
                bodies += 1
                if bodies > 1:
                    raise BrokenPipeError("the client closed the connection")
            await send(message)

        await self.app(scope, receive, breaking)


def stack(mock_url: str, *, groups: dict[str, Any] | None = None, **options: Any) -> Any:
    config = parse_config({"providers": provider_config(mock_url), "groups": groups or {}}, {})
    options = {
        "ttfb_timeout": LIMIT,
        "stall_timeout": LIMIT,
        "heartbeat_interval": None,
        **options,
    }
    return StreamGuard(ProviderDispatch(Providers(config, {})), **options)


@pytest.fixture(scope="module")
def guarded(mock_server: tuple[MockUpstream, str]) -> Iterator[tuple[Recorder, str]]:
    recorder = Recorder(stack(mock_server[1]))
    with serve(recorder) as url:
        yield recorder, url


@pytest.fixture(scope="module")
def breaking(mock_server: tuple[MockUpstream, str]) -> Iterator[tuple[Recorder, str]]:
    recorder = Recorder(BreakingServer(stack(mock_server[1])))
    with serve(recorder) as url:
        yield recorder, url


@pytest.fixture
def gateway(guarded: tuple[Recorder, str]) -> Iterator[tuple[Recorder, str]]:
    guarded[0].clear()
    yield guarded


def model_of(upstream: str) -> str:
    return f"{UPSTREAMS[upstream]}/model-x"


def settle(recorder: Recorder, mock: MockUpstream, baseline: int, mock_reason: str) -> None:
    """The upstream stream was closed (the mock saw it end, and how) and nothing is left
    running on the gateway's loop."""
    closed = wait_for(lambda: mock.closed_streams, timeout=5)
    assert [c.reason for c in closed] == [mock_reason]
    assert mock.open_streams == 0
    assert wait_for(lambda: recorder.tasks() <= baseline, timeout=5)


def check_bytes(sent: list[dict[str, Any]]) -> None:
    """Every SSE body message the client got ends on an event boundary."""
    start = next(m for m in sent if m["type"] == "http.response.start")
    if dict(start["headers"]).get(b"content-type", b"").startswith(b"text/event-stream"):
        assert_heartbeats_only_between_events(sent, COMMENT)


# --- every close reason, every client protocol -----------------------------------------------


@pytest.mark.parametrize(("client", "upstream"), PAIRS)
def test_completed(
    gateway: tuple[Recorder, str], mock: MockUpstream, client: str, upstream: str
) -> None:
    recorder, url = gateway
    baseline = recorder.tasks()
    with DRIVERS[client](url) as driver:
        result = driver.ask(model_of(upstream), "Hello there", stream=True)
    assert "You said: Hello there" in result.text
    exchange, sent = recorder.last()
    assert (
        exchange.current.close_record is not None
        and exchange.current.close_record.reason == "completed"
    )
    assert exchange.current.close_record.terminal_sent and exchange.current.close_record.events > 0
    assert exchange.current.close_record.provider == UPSTREAMS[upstream]
    assert exchange.current.close_record.credential == f"{UPSTREAMS[upstream]}#0"
    assert (
        exchange.current.close_record.attempt == 1
        and exchange.current.close_record.upstream_status == 200
    )
    check_bytes(sent)
    settle(recorder, mock, baseline, "completed")


@pytest.mark.parametrize(
    ("reason", "fault", "mock_reason"),
    [
        ("upstream_error", Fault(error_event_after=3, status=500), "faulted"),
        ("upstream_premature_close", Fault(eof_after=3), "faulted"),
        ("stall_timeout", Fault(stall_after=3), "client_disconnected"),
    ],
    ids=["upstream_error", "upstream_premature_close", "stall_timeout"],
)
@pytest.mark.parametrize(("client", "upstream"), PAIRS)
def test_in_band_failures_raise_the_sdks_own_api_error(
    gateway: tuple[Recorder, str],
    mock: MockUpstream,
    client: str,
    upstream: str,
    reason: str,
    fault: Fault,
    mock_reason: str,
) -> None:
    recorder, url = gateway
    baseline = recorder.tasks()
    mock.add_fault(fault)
    expected: Any = API_ERRORS
    if (client, upstream, reason) == ("openai_responses", "openai_responses", "upstream_error"):
        # Passthrough of OpenAI's own failure event: ``response.failed`` alone, as OpenAI
        # sends it, on which the SDK's stream helper raises RuntimeError (no
        # response.completed), not APIError.  Still never a clean success.
        expected = RuntimeError
    with DRIVERS[client](url) as driver, pytest.raises(expected):
        driver.ask(model_of(upstream), "Hello there", stream=True)
    exchange, sent = recorder.last()
    assert (
        exchange.current.close_record is not None and exchange.current.close_record.reason == reason
    )
    assert not exchange.current.close_record.terminal_sent
    assert exchange.current.close_record.last_event == "error"
    assert sent[-1] == {"type": "http.response.body", "body": b"", "more_body": False}
    check_bytes(sent)
    settle(recorder, mock, baseline, mock_reason)


@pytest.mark.parametrize(("client", "upstream"), PAIRS)
def test_ttfb_timeout(
    gateway: tuple[Recorder, str], mock: MockUpstream, client: str, upstream: str
) -> None:
    recorder, url = gateway
    baseline = recorder.tasks()
    mock.add_fault(Fault(first_event_delay=NEVER))
    with DRIVERS[client](url) as driver, pytest.raises(API_ERRORS) as info:
        driver.ask(model_of(upstream), "Hello there", stream=True)
    # Nothing had gone out: a proper 504 error response, not a broken stream.
    error = info.value
    status = error.code if isinstance(error, genai_errors.APIError) else error.status_code  # type: ignore[attr-defined]
    assert status == 504
    exchange, _ = recorder.last()
    assert (
        exchange.current.close_record is not None
        and exchange.current.close_record.reason == "ttfb_timeout"
    )
    assert exchange.attempts[-1].kind == "timeout"
    settle(recorder, mock, baseline, "client_disconnected")


@pytest.mark.parametrize(("client", "upstream"), PAIRS)
def test_ttfb_timeout_covers_slow_headers_of_a_plain_request(
    gateway: tuple[Recorder, str], mock: MockUpstream, client: str, upstream: str
) -> None:
    recorder, url = gateway
    baseline = recorder.tasks()
    mock.add_fault(Fault(header_delay=NEVER))
    with DRIVERS[client](url) as driver, pytest.raises(API_ERRORS):
        driver.ask(model_of(upstream), "Hello there", stream=False)
    exchange, _ = recorder.last()
    assert (
        exchange.current.close_record is not None
        and exchange.current.close_record.reason == "ttfb_timeout"
    )
    settle(recorder, mock, baseline, "client_disconnected")


# Raw requests (the disconnect test needs to hang up after the first event).
def raw_request(client: str, model: str) -> tuple[str, dict[str, Any], dict[str, str]]:
    text = [{"role": "user", "content": "Hello there"}]
    if client == "openai_chat":
        return "/v1/chat/completions", {"model": model, "messages": text, "stream": True}, {}
    if client == "openai_responses":
        return "/v1/responses", {"model": model, "input": "Hello there", "stream": True}, {}
    if client == "anthropic_messages":
        body = {"model": model, "max_tokens": 64, "messages": text, "stream": True}
        return "/v1/messages", body, {"anthropic-version": "2023-06-01"}
    body = {"contents": [{"role": "user", "parts": [{"text": "Hello there"}]}]}
    return f"/v1beta/models/{model}:streamGenerateContent?alt=sse", body, {}


@pytest.mark.parametrize(("client", "upstream"), PAIRS)
def test_client_disconnected(
    gateway: tuple[Recorder, str], mock: MockUpstream, client: str, upstream: str
) -> None:
    recorder, url = gateway
    baseline = recorder.tasks()
    mock.add_fault(Fault(stall_after=3))
    path, body, headers = raw_request(client, model_of(upstream))
    with httpx.Client(base_url=url) as http:
        with http.stream("POST", path, json=body, headers=headers) as response:
            assert response.status_code == 200
            next(response.iter_raw())
            left = time.monotonic()
    exchange, sent = recorder.last()
    assert (
        exchange.current.close_record is not None
        and exchange.current.close_record.reason == "client_disconnected"
    )
    check_bytes(sent)
    settle(recorder, mock, baseline, "client_disconnected")
    # The upstream was released right after the client left (typically a few ms; the bound
    # is loose because the machine is shared).
    assert mock.closed_streams[0].time - left < 1.0


@pytest.mark.parametrize(("client", "upstream"), PAIRS)
def test_client_write_failed(
    breaking: tuple[Recorder, str], mock: MockUpstream, client: str, upstream: str
) -> None:
    recorder, url = breaking
    recorder.clear()
    baseline = recorder.tasks()
    mock.add_fault(Fault(stall_after=4))
    with DRIVERS[client](url) as driver, pytest.raises(Exception) as info:
        driver.ask(model_of(upstream), "Hello there", stream=True)
    assert not isinstance(info.value, AssertionError)
    exchange, _ = recorder.last()
    assert (
        exchange.current.close_record is not None
        and exchange.current.close_record.reason == "client_write_failed"
    )
    settle(recorder, mock, baseline, "client_disconnected")


# --- heartbeats and keepalive ----------------------------------------------------------------


@pytest.fixture(scope="module")
def slow_upstream() -> Iterator[tuple[MockUpstream, str]]:
    mock = MockUpstream(chunk_delay=0.25, stream_events=3)
    with serve(mock) as url:
        yield mock, url


@pytest.mark.parametrize(("client", "upstream"), PAIRS)
def test_heartbeats_in_idle_gaps_are_invisible_to_every_sdk(
    slow_upstream: tuple[MockUpstream, str], client: str, upstream: str
) -> None:
    mock, mock_url = slow_upstream
    mock.clear()
    # A generous stall limit: a translated stream has upstream events with nothing to show
    # in the client's protocol (Responses' *.done events for an Anthropic client), and
    # dispatch sends no message for those, so the guard sees longer gaps than the mock makes.
    recorder = Recorder(stack(mock_url, heartbeat_interval=0.05, stall_timeout=10.0))
    with serve(recorder) as url, DRIVERS[client](url) as driver:
        result = driver.ask(model_of(upstream), "Hello there", stream=True)
        exchange, sent = recorder.last()
    assert "You said: Hello there" in result.text
    assert (
        exchange.current.close_record is not None
        and exchange.current.close_record.reason == "completed"
    )
    assert exchange.current.close_record.heartbeats >= 1
    heartbeat = b"\n" if client == "gemini" else COMMENT
    assert heartbeat in [m.get("body") for m in sent]
    assert (
        assert_heartbeats_only_between_events(sent, heartbeat)
        == exchange.current.close_record.heartbeats
    )


@pytest.mark.parametrize(("client", "upstream"), PAIRS)
def test_keepalive_before_first_event(
    mock_server: tuple[MockUpstream, str], mock: MockUpstream, client: str, upstream: str
) -> None:
    mock.add_fault(Fault(first_event_delay=0.6))
    recorder = Recorder(
        stack(
            mock_server[1],
            heartbeat_interval=0.1,
            keepalive_before_first_event=True,
            ttfb_timeout=5.0,
        )
    )
    with serve(recorder) as url, DRIVERS[client](url) as driver:
        result = driver.ask(model_of(upstream), "Hello there", stream=True)
        exchange, sent = recorder.last()
    assert "You said: Hello there" in result.text
    # Committed before the upstream said anything: our start, then heartbeats.
    assert sent[0]["type"] == "http.response.start" and sent[0]["status"] == 200
    assert sent[1]["body"] in (COMMENT, b"\n")
    assert (
        exchange.current.close_record is not None
        and exchange.current.close_record.reason == "completed"
    )
    assert any(p.name == "stream_guard.early_commit" for p in exchange.passes)


# --- a TTFB timeout moves a fallback group on ------------------------------------------------


def test_ttfb_timeout_before_commit_lets_fallback_move_on(
    mock_server: tuple[MockUpstream, str], mock: MockUpstream
) -> None:
    from asgi_rotator.middleware.fallback import FallbackRouter

    groups = {"chain": {"targets": ["up-anthropic/slow", "up-chat/fast"]}}
    config = parse_config({"providers": provider_config(mock_server[1]), "groups": groups}, {})
    providers = Providers(config, {})
    guard = StreamGuard(
        ProviderDispatch(providers),
        ttfb_timeout=LIMIT,
        stall_timeout=LIMIT,
        heartbeat_interval=None,
    )
    recorder = Recorder(FallbackRouter(guard, providers=providers))
    mock.add_fault(Fault(model="slow", first_event_delay=NEVER))
    with serve(recorder) as url, DRIVERS["openai_chat"](url) as driver:
        result = driver.ask("chain", "Hello there", stream=True)
        exchange, _ = recorder.last()
    assert "You said: Hello there" in result.text
    assert [r.model for r in mock.requests] == ["slow", "fast"]
    closes = [p.data["reason"] for p in exchange.passes if p.name == "stream_guard.close"]
    assert closes == ["ttfb_timeout", "completed"]
    assert [a.kind for a in exchange.attempts] == ["timeout", None]
    # The abandoned upstream stream was closed, not left running.
    closed = wait_for(lambda: len(mock.closed_streams) == 2 and mock.closed_streams, timeout=5)
    assert sorted(c.reason for c in closed) == ["client_disconnected", "completed"]
