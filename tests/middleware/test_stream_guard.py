"""StreamGuard unit tests: hand-built scopes, scripted inner apps, a recording client.

Timing tests use limits of a few tenths of a second and assert what happened and in which
order, never how fast.
"""

from __future__ import annotations

import asyncio
import gc
import json
from collections.abc import Awaitable, Callable, MutableMapping, Sequence
from pathlib import Path
from typing import Any

import anyio
import pytest

from asgi_rotator.errors import GatewayError
from asgi_rotator.exchange import ERROR, EVENT, RECORD, SCOPE_KEY, Attempt, Exchange
from asgi_rotator.middleware._held import run_held
from asgi_rotator.middleware.stream_guard import TTFB_HEADER, StreamGuard
from asgi_rotator.protocols import get_codec
from asgi_rotator.sse import SSEDecoder
from asgi_rotator.unified import (
    Error,
    Finish,
    MessageStart,
    ReasoningDelta,
    Request,
    TextDelta,
    Usage,
    UsageEvent,
)
from tests.continuation import assert_stream_continued_by_one_error

pytestmark = pytest.mark.anyio

PROTOCOLS = ("openai_chat", "openai_responses", "anthropic_messages", "gemini")
PATHS = {
    "openai_chat": "/v1/chat/completions",
    "openai_responses": "/v1/responses",
    "anthropic_messages": "/v1/messages",
    "gemini": "/v1beta/models/m:streamGenerateContent",
}
SSE = [(b"content-type", b"text/event-stream; charset=utf-8")]
JSON = [(b"content-type", b"application/json")]
Message = MutableMapping[str, Any]
Send = Callable[[Message], Awaitable[None]]


class FakeProvider:
    def __init__(self, name: str) -> None:
        self.name = name


class FakeTarget:
    def __init__(self, provider: str, model: str) -> None:
        self.provider = FakeProvider(provider)
        self.model = model

    @property
    def name(self) -> str:
        return f"{self.provider.name}/{self.model}"


class FakeCredential:
    id = "up#0"


class Client:
    """The server side of one request: gives the body, records what is sent, and can
    disconnect (``leave``) or fail writes (``fail_on``: the index of the send that raises)."""

    def __init__(self, *, fail_on: int | None = None, error: Exception | None = None) -> None:
        self.sent: list[Message] = []
        self.gone = anyio.Event()
        self.fail_on = fail_on
        self.error = error or BrokenPipeError("client went away")
        self.body_given = False

    async def receive(self) -> Message:
        if not self.body_given:
            self.body_given = True
            return {"type": "http.request", "body": b"{}", "more_body": False}
        await self.gone.wait()
        return {"type": "http.disconnect"}

    async def send(self, message: Message) -> None:
        if self.fail_on is not None and len(self.sent) >= self.fail_on:
            raise self.error
        self.sent.append(message)

    def leave(self) -> None:
        self.gone.set()

    @property
    def bodies(self) -> list[Message]:
        return [m for m in self.sent if m["type"] == "http.response.body"]

    @property
    def raw(self) -> bytes:
        return b"".join(m.get("body", b"") for m in self.bodies)


def make_scope(
    protocol: str = "openai_chat",
    headers: list[tuple[bytes, bytes]] | None = None,
    *,
    exchange: bool = True,
    stream: bool = True,
    target: FakeTarget | None = None,
) -> dict[str, Any]:
    scope: dict[str, Any] = {
        "type": "http",
        "method": "POST",
        "path": PATHS[protocol],
        "root_path": "",
        "headers": headers or [],
        "query_string": b"alt=sse" if protocol == "gemini" else b"",
        RECORD: True,  # the tests read the exchange's transform passes
    }
    if exchange:
        ex = Exchange(scope, b"{}")
        ex.protocol = protocol
        ex.request = Request(model="m", stream=stream)
        ex.model = "m"
        ex.current.target = target
        scope[SCOPE_KEY] = ex
    return scope


def exchange_of(scope: dict[str, Any]) -> Exchange:
    exchange = scope[SCOPE_KEY]
    assert isinstance(exchange, Exchange)
    return exchange


def start(status: int = 200, headers: list[tuple[bytes, bytes]] | None = None) -> Message:
    return {"type": "http.response.start", "status": status, "headers": headers or SSE}


def event(*events: Any, data: bytes | None = None, more: bool = True) -> Message:
    """One body message per SSE event, the way dispatch sends them."""
    body = (
        data
        if data is not None
        else b"data: " + b"|".join(type(e).__name__.encode() for e in events) + b"\n\n"
    )
    return {"type": "http.response.body", "body": body, "more_body": more, EVENT: list(events)}


def end() -> Message:
    return {"type": "http.response.body", "body": b"", "more_body": False}


TEXT = TextDelta(index=0, text="hi")
FINISH = Finish(reason="stop")


class Script:
    """An inner app that sends ``steps`` (messages, or numbers = seconds to sleep, or
    ``FOREVER``) and notes whether it was cancelled and what its receive gave."""

    FOREVER = object()

    def __init__(self, *steps: Any) -> None:
        self.steps = steps
        self.cancelled = False
        self.finished = False
        self.received: list[Message] = []

    async def __call__(self, scope: Any, receive: Any, send: Send) -> None:
        if scope["type"] != "http":
            return
        self.received.append(await receive())
        try:
            for step in self.steps:
                if step is Script.FOREVER:
                    await anyio.sleep_forever()
                elif isinstance(step, (int, float)):
                    await anyio.sleep(step)
                else:
                    await send(step)
            self.finished = True
        except anyio.get_cancelled_exc_class():
            self.cancelled = True
            raise


async def run(
    guard: StreamGuard, scope: dict[str, Any], client: Client | None = None
) -> tuple[Client, Exchange]:
    client = client or Client()
    before = len(asyncio.all_tasks())
    await guard(scope, client.receive, client.send)
    # Nothing the guard started outlives the call.
    assert len(asyncio.all_tasks()) == before
    return client, exchange_of(scope)


def guard(app: Any, **options: Any) -> StreamGuard:
    defaults: dict[str, Any] = {
        "ttfb_timeout": 5.0,
        "stall_timeout": 5.0,
        "heartbeat_interval": None,
    }
    return StreamGuard(app, **{**defaults, **options})


# --- pass-through and the plain path ---------------------------------------------------------


async def test_other_scope_types_pass_through_untouched() -> None:
    seen: list[Any] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        seen.append((scope["type"], receive, send))

    async def receive() -> Message:
        return {"type": "lifespan.startup"}

    async def send(message: Message) -> None:
        pass

    for kind in ("lifespan", "websocket"):
        await StreamGuard(app)({"type": kind}, receive, send)
    assert seen == [("lifespan", receive, send), ("websocket", receive, send)]


async def test_a_completed_stream_goes_out_unchanged_with_one_close_record() -> None:
    messages = [
        start(),
        event(MessageStart(id="resp_1", model="m")),
        event(ReasoningDelta(index=0, text="hmm")),
        event(TEXT),
        event(UsageEvent(usage=Usage(input_tokens=3)), FINISH),
        end(),
    ]
    scope = make_scope(target=FakeTarget("up", "model-x"))
    exchange = exchange_of(scope)
    exchange.current.credential = FakeCredential()

    async def app(scope: Any, receive: Any, send: Send) -> None:
        exchange.attempts.append(Attempt(number=1, provider="up", model="model-x", status=200))
        for message in messages:
            await send(message)

    client, exchange = await run(guard(app), scope)
    assert client.sent == messages
    close = exchange.current.close_record
    assert close is not None
    assert close.reason == "completed"
    assert (close.events, close.terminal_sent, close.reasoning_seen) == (5, True, True)
    assert close.last_event == "finish"
    assert close.response_id == "resp_1"
    assert (close.provider, close.model, close.credential, close.attempt) == (
        "up",
        "model-x",
        "up#0",
        1,
    )
    assert close.upstream_status == 200
    assert close.bytes == len(client.raw)
    assert close.ttfb is not None and close.duration is not None and close.ttfb <= close.duration
    assert [p.name for p in exchange.passes].count("stream_guard.close") == 1


async def test_a_plain_response_passes_through_and_is_completed() -> None:
    body = {"type": "http.response.body", "body": b'{"ok":true}', "more_body": False}
    client, exchange = await run(guard(Script(start(200, JSON), body)), make_scope(stream=False))
    assert [m["type"] for m in client.sent] == ["http.response.start", "http.response.body"]
    assert client.sent[1] is body
    assert (
        exchange.current.close_record is not None
        and exchange.current.close_record.reason == "completed"
    )


async def test_an_upstream_error_response_passes_through_as_upstream_error() -> None:
    error = GatewayError("rate_limited", "slow down", retry_after=3)
    script = Script(
        {**start(429, JSON), ERROR: error},
        {"type": "http.response.body", "body": b'{"error":{}}', ERROR: error},
    )
    client, exchange = await run(guard(script), make_scope())
    assert client.sent[0]["status"] == 429 and client.sent[0][ERROR] is error
    assert (
        exchange.current.close_record is not None
        and exchange.current.close_record.reason == "upstream_error"
    )
    assert exchange.current.close_record.error == "rate_limited: slow down"


async def test_alone_around_a_foreign_app_it_makes_the_exchange_and_keeps_the_bytes() -> None:
    async def foreign(scope: Any, receive: Any, send: Send) -> None:
        request = await receive()
        await send(start())
        await send(
            {
                "type": "http.response.body",
                "body": b"data: " + request["body"] + b"\n\n",
                "more_body": True,
            }
        )
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    scope = make_scope(exchange=False)
    client, exchange = await run(guard(foreign), scope)
    assert client.raw == b"data: {}\n\n"
    assert (
        exchange.current.close_record is not None
        and exchange.current.close_record.reason == "completed"
    )
    assert exchange.current.close_record.events == 1


# --- timeouts --------------------------------------------------------------------------------


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_ttfb_timeout_before_commit_is_a_504_error_response(protocol: str) -> None:
    script = Script(start(), Script.FOREVER)
    scope = make_scope(protocol, target=FakeTarget("up", "model-x"))
    exchange = exchange_of(scope)

    async def app(scope: Any, receive: Any, send: Send) -> None:
        exchange.attempts.append(Attempt(number=1, provider="up", model="model-x"))
        await script(scope, receive, send)

    client, exchange = await run(guard(app, ttfb_timeout=0.2), scope)
    assert script.cancelled  # the inner app was ended, not left running
    first, body = client.sent
    assert first["status"] == 504 and body["type"] == "http.response.body"
    error = first[ERROR]
    assert error.kind == "timeout" and error.retryable and error.code == "ttfb_timeout"
    assert "up/model-x" in error.message
    parsed = get_codec(protocol).parse_error(504, json.loads(body["body"]), {})
    assert parsed.kind == "timeout"
    assert (
        exchange.current.close_record is not None
        and exchange.current.close_record.reason == "ttfb_timeout"
    )
    assert exchange.current.close_record.ttfb is None
    assert exchange.attempts[-1].kind == "timeout"
    assert exchange.current.error is error


async def test_ttfb_timeout_covers_waiting_for_headers_and_plain_requests() -> None:
    script = Script(Script.FOREVER)  # never even sends its start
    client, exchange = await run(guard(script, ttfb_timeout=0.2), make_scope(stream=False))
    assert script.cancelled
    assert client.sent[0]["status"] == 504
    assert (
        exchange.current.close_record is not None
        and exchange.current.close_record.reason == "ttfb_timeout"
    )


async def test_with_the_ttfb_limit_off_the_total_limit_bounds_the_wait_for_an_answer() -> None:
    # No TTFB deadline: the first one in force is then the total one.
    script = Script(Script.FOREVER)
    with anyio.fail_after(10):
        client, exchange = await run(
            guard(script, ttfb_timeout=None, total_timeout=0.2), make_scope(stream=False)
        )
    assert script.cancelled
    assert client.sent[0]["status"] == 504 and client.sent[0][ERROR].code == "total_timeout"
    assert (
        exchange.current.close_record is not None
        and exchange.current.close_record.reason == "total_timeout"
    )


async def test_ttfb_timeout_is_retryable_for_a_routing_layer_above() -> None:
    script = Script(start(), Script.FOREVER)
    client = Client()
    scope = make_scope()
    held = await run_held(guard(script, ttfb_timeout=0.2), scope, client.receive, client.send)
    assert not held.committed and client.sent == []
    assert held.error is not None and held.error.kind == "timeout" and held.status == 504


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_stall_after_commit_ends_with_the_in_band_error_and_a_clean_end(
    protocol: str,
) -> None:
    script = Script(start(), event(MessageStart(id="r1", model="m")), event(TEXT), Script.FOREVER)
    client, exchange = await run(guard(script, stall_timeout=0.2), make_scope(protocol))
    assert script.cancelled
    *_, error_message, last = client.sent
    assert last == {"type": "http.response.body", "body": b"", "more_body": False}
    (error_event,) = error_message[EVENT]
    assert isinstance(error_event, Error) and error_message[ERROR] is error_event.error
    assert error_event.error.kind == "timeout" and error_event.error.code == "stall_timeout"
    assert error_message["body"].endswith(b"\n\n")
    # The protocol's own error event, and no second opening of the stream.
    body = error_message["body"]
    decoder = get_codec(protocol).stream_decoder()
    unified = [e for sse in SSEDecoder().feed(body) for e in decoder.feed(sse)]
    assert Error in [type(e) for e in unified]
    for opening in (b'"role"', b"response.created", b"message_start"):
        assert opening not in body
    assert (
        exchange.current.close_record is not None
        and exchange.current.close_record.reason == "stall_timeout"
    )
    assert (
        exchange.current.close_record.last_event == "error"
        and not exchange.current.close_record.terminal_sent
    )


async def test_a_stall_after_23_responses_events_continues_their_numbering() -> None:
    """The issue's case: a foreign app under StreamGuard (no layer below opened the client's
    stream, so StreamGuard notes it) stalls after 23 events numbered 0 to 22."""
    encoder = get_codec("openai_responses").stream_encoder(Request(model="m", stream=True))
    unified = [MessageStart(id="resp_upstream", model="m")]
    unified += [TextDelta(index=0, text=f"t{i} ") for i in range(19)]
    script = Script(start(), *(event(e, data=encoder.encode(e)) for e in unified), Script.FOREVER)
    client, exchange = await run(guard(script, stall_timeout=0.2), make_scope("openai_responses"))
    data = assert_stream_continued_by_one_error("openai_responses", client.raw)
    assert [d["sequence_number"] for d in data] == list(range(25))
    assert data[-2]["type"] == "response.failed" and data[-1]["code"] == "stall_timeout"
    assert data[-2]["response"]["id"] == "resp_upstream"
    assert exchange.stream is not None and exchange.stream.last_sequence == 24


async def test_stall_after_the_prelude_is_still_retryable_above() -> None:
    script = Script(start(), event(MessageStart(id="r1", model="m")), Script.FOREVER)
    client = Client()
    g = guard(script, stall_timeout=0.2, heartbeat_interval=0.05)
    held = await run_held(g, make_scope("anthropic_messages"), client.receive, client.send)
    assert not held.committed and client.sent == []
    assert held.error is not None and held.error.code == "stall_timeout"


async def test_total_timeout_bounds_a_stream_that_keeps_trickling() -> None:
    steps: list[Any] = [start()]
    for _ in range(50):
        steps += [event(TEXT), 0.05]
    script = Script(*steps)
    client, exchange = await run(guard(script, stall_timeout=1.0, total_timeout=0.4), make_scope())
    assert script.cancelled
    assert client.bodies[-2][ERROR].code == "total_timeout"
    assert (
        exchange.current.close_record is not None
        and exchange.current.close_record.reason == "total_timeout"
    )


async def test_the_stall_clock_stops_while_the_client_is_slow() -> None:
    class SlowClient(Client):
        async def send(self, message: Message) -> None:
            if message.get(EVENT):
                await anyio.sleep(0.3)  # longer than the stall limit
            await super().send(message)

    script = Script(start(), event(TEXT), event(TEXT), event(FINISH), end())
    _, exchange = await run(guard(script, stall_timeout=0.15), make_scope(), SlowClient())
    assert script.finished
    assert (
        exchange.current.close_record is not None
        and exchange.current.close_record.reason == "completed"
    )


class StalledClient(Client):
    """A client that takes the first ``takes`` body messages, then none: its ``send``
    never returns (a socket that is open but no longer read)."""

    def __init__(self, takes: int) -> None:
        super().__init__()
        self.takes = takes

    async def send(self, message: Message) -> None:
        if message["type"] == "http.response.body" and len(self.bodies) >= self.takes:
            await anyio.sleep_forever()
        await super().send(message)


async def test_a_client_that_stops_reading_is_dropped_after_send_timeout() -> None:
    script = Script(start(), event(TEXT), event(TEXT), event(FINISH), end())
    client = StalledClient(takes=1)
    with anyio.fail_after(10):
        _, exchange = await run(guard(script, send_timeout=0.2), make_scope(), client)
    assert script.cancelled  # the inner app (the upstream) was cancelled at once
    assert (
        exchange.current.close_record is not None
        and exchange.current.close_record.reason == "client_write_timeout"
    )
    assert exchange.client_dropped  # layers above write nothing more
    assert len(client.bodies) == 1  # nothing was added after the message it did not take


async def test_total_timeout_runs_while_the_client_is_slow() -> None:
    # Before the fix the deadline stopped during every send, so a slow client kept a
    # stream going past total_timeout for as long as it liked.
    class SlowClient(Client):
        async def send(self, message: Message) -> None:
            if message.get(EVENT):
                await anyio.sleep(0.3)
            await super().send(message)

    steps: list[Any] = [start()] + [event(TEXT)] * 20 + [event(FINISH), end()]
    script = Script(*steps)
    with anyio.fail_after(10):
        client, exchange = await run(
            guard(script, total_timeout=0.5, send_timeout=5), make_scope(), SlowClient()
        )
    assert script.cancelled
    assert (
        exchange.current.close_record is not None
        and exchange.current.close_record.reason == "total_timeout"
    )
    assert client.bodies[-2][ERROR].code == "total_timeout"  # the in-band error, then the end


async def test_the_closing_write_after_a_timeout_is_bounded_too() -> None:
    # A stall timeout's in-band error goes to a client that stopped reading: the guard
    # gives up after send_timeout instead of waiting on it forever.
    script = Script(start(), event(TEXT), Script.FOREVER)
    with anyio.fail_after(10):
        _, exchange = await run(
            guard(script, stall_timeout=0.2, send_timeout=0.3), make_scope(), StalledClient(1)
        )
    assert (
        exchange.current.close_record is not None
        and exchange.current.close_record.reason == "stall_timeout"
    )
    assert exchange.client_dropped


async def test_a_stall_limit_shorter_than_the_ttfb_limit_applies_from_the_first_event() -> None:
    # The TTFB deadline is the sooner one at the start; after the first event the stall
    # deadline is sooner still, and it must not wait for the TTFB one to come round.
    script = Script(start(), event(TEXT), Script.FOREVER)
    with anyio.fail_after(10):
        _, exchange = await run(guard(script, ttfb_timeout=60, stall_timeout=0.2), make_scope())
    assert script.cancelled
    assert (
        exchange.current.close_record is not None
        and exchange.current.close_record.reason == "stall_timeout"
    )


async def test_the_stall_clock_restarts_after_each_message_however_many() -> None:
    # Events come quicker than the stall limit for much longer than the limit: no timeout.
    steps: list[Any] = [start()]
    for _ in range(12):
        steps += [0.05, event(TEXT)]
    steps += [event(FINISH), end()]
    script = Script(*steps)
    _, exchange = await run(guard(script, ttfb_timeout=0.3, stall_timeout=0.2), make_scope())
    assert script.finished
    assert (
        exchange.current.close_record is not None
        and exchange.current.close_record.reason == "completed"
    )


# --- limits: overrides and the header --------------------------------------------------------


def test_limits_resolve_global_provider_model_then_header() -> None:
    g = StreamGuard(
        Script(),
        ttfb_timeout=30,
        stall_timeout=60,
        overrides={
            "slow": {"ttfb_timeout": 90},
            "slow/big": {"stall_timeout": 120, "total_timeout": 600},
        },
    )
    limits, source = g.resolve(exchange_of(make_scope()))
    assert (limits.ttfb_timeout, limits.stall_timeout, source) == (30, 60, "global")
    limits, source = g.resolve(exchange_of(make_scope(target=FakeTarget("slow", "small"))))
    assert (limits.ttfb_timeout, limits.stall_timeout, source) == (90, 60, "slow")
    limits, source = g.resolve(exchange_of(make_scope(target=FakeTarget("slow", "big"))))
    assert (limits.ttfb_timeout, limits.stall_timeout, limits.total_timeout) == (90, 120, 600)
    assert source == "slow/big"
    # The header may shorten the TTFB limit, and lengthen it only up to the maximum.
    header = [(TTFB_HEADER, b"2.5")]
    assert g.resolve(exchange_of(make_scope(headers=header)))[0].ttfb_timeout == 2.5
    header = [(TTFB_HEADER, b"100")]
    assert g.resolve(exchange_of(make_scope(headers=header)))[0].ttfb_timeout == 30
    capped = StreamGuard(Script(), ttfb_timeout=30, max_ttfb_timeout=60)
    assert capped.resolve(exchange_of(make_scope(headers=header)))[0].ttfb_timeout == 60


@pytest.mark.parametrize("value", [b"soon", b"0", b"-1", b"nan", b"inf"])
async def test_a_bad_ttfb_header_is_a_400_in_the_client_protocol(value: bytes) -> None:
    script = Script(start(), end())
    client, _ = await run(guard(script), make_scope("anthropic_messages", [(TTFB_HEADER, value)]))
    assert client.sent[0]["status"] == 400
    assert json.loads(client.sent[1]["body"])["type"] == "error"
    assert script.received == []  # the inner app never ran


async def test_the_ttfb_header_applies_per_request() -> None:
    script = Script(start(), 0.5, event(TEXT), event(FINISH), end())
    scope = make_scope(headers=[(TTFB_HEADER, b"0.1")])
    client, exchange = await run(guard(script, ttfb_timeout=5), scope)
    assert client.sent[0]["status"] == 504
    assert (
        exchange.current.close_record is not None
        and exchange.current.close_record.reason == "ttfb_timeout"
    )


@pytest.mark.parametrize(
    "options",
    [
        {"ttfb_timeout": 0},
        {"stall_timeout": -1},
        {"heartbeat_interval": "15"},
        {"total_timeout": float("inf")},
        {"overrides": {"p": {"ttfb": 3}}},
        {"overrides": {"p": {"ttfb_timeout": 0}}},
        {"heartbeat_interval": None, "keepalive_before_first_event": True},
    ],
)
def test_bad_options_fail_at_construction(options: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        StreamGuard(Script(), **options)


# --- premature close and upstream errors -----------------------------------------------------


async def test_dispatchs_premature_close_marker_is_classified() -> None:
    error = GatewayError(
        "connection", "upstream closed the stream before its terminal event", code="premature_close"
    )
    error_message = {**event(Error(error=error)), ERROR: error}
    client, exchange = await run(
        guard(Script(start(), event(TEXT), error_message, end())), make_scope()
    )
    assert client.sent[-2] is error_message
    assert (
        exchange.current.close_record is not None
        and exchange.current.close_record.reason == "upstream_premature_close"
    )


async def test_an_upstream_error_event_is_upstream_error() -> None:
    error = GatewayError("overloaded", "busy", status=529)
    error_message = {**event(Error(error=error)), ERROR: error}
    _, exchange = await run(guard(Script(start(), event(TEXT), error_message, end())), make_scope())
    assert (
        exchange.current.close_record is not None
        and exchange.current.close_record.reason == "upstream_error"
    )
    assert exchange.current.close_record.error == "overloaded: busy"


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_a_stream_ending_without_its_terminal_event_never_ends_clean(protocol: str) -> None:
    # A foreign inner app (dispatch says so itself) that stops without a Finish.
    client, exchange = await run(guard(Script(start(), event(TEXT), end())), make_scope(protocol))
    *_, injected, last = client.sent
    assert injected[ERROR].code == "premature_close" and injected["body"]
    assert last["more_body"] is False
    assert (
        exchange.current.close_record is not None
        and exchange.current.close_record.reason == "upstream_premature_close"
    )


async def test_an_inner_app_returning_mid_stream_gets_an_in_band_end() -> None:
    client, exchange = await run(
        guard(Script(start(), event(TEXT))), make_scope("anthropic_messages")
    )
    assert b"event: error" in client.bodies[-2]["body"]
    assert client.bodies[-1]["more_body"] is False
    assert (
        exchange.current.close_record is not None
        and exchange.current.close_record.reason == "upstream_premature_close"
    )


# --- heartbeats ------------------------------------------------------------------------------


def assert_heartbeats_only_between_events(messages: Sequence[Message], heartbeat: bytes) -> int:
    """Every body message ends on an event boundary; a heartbeat is a message of its own and
    never lands between the lines of one event.  Returns how many heartbeats went out."""
    beats = 0
    stream = b""
    at_boundary = True  # nothing sent yet, or the last event ended; a heartbeat keeps it so
    for message in messages:
        if message["type"] != "http.response.body" or not message.get("body"):
            continue
        body = message["body"]
        if body == heartbeat:
            beats += 1
            assert at_boundary, "heartbeat inside an event"
        else:
            assert body.endswith(b"\n\n"), f"body message not on an event boundary: {body!r}"
            at_boundary = True
        stream += body
    # Byte level: split the whole stream into lines and check each comment stands alone.
    inside = False
    for line in stream.split(b"\n"):
        if line.startswith(b":"):
            assert not inside, "a comment between the lines of one event"
        elif line:
            inside = True
        else:
            inside = False
    return beats


async def test_heartbeats_fill_idle_gaps_between_whole_events() -> None:
    multi_line = b'event: message\nid: 7\ndata: {"a":\ndata: 1}\n\n'
    steps: list[Any] = [start(), event(MessageStart(id="r", model="m"))]
    for _ in range(4):
        steps += [0.12, event(TEXT, data=multi_line)]
    steps += [event(FINISH), end()]
    client, exchange = await run(guard(Script(*steps), heartbeat_interval=0.03), make_scope())
    beats = assert_heartbeats_only_between_events(client.sent, b": keepalive\n\n")
    assert beats >= 4
    heartbeats = [m for m in client.bodies if m["body"] == b": keepalive\n\n"]
    assert all(m[EVENT] == [] for m in heartbeats)  # no content: a held prelude stays held
    assert (
        exchange.current.close_record is not None
        and exchange.current.close_record.heartbeats == beats
    )
    assert (
        exchange.current.close_record.reason == "completed"
        and exchange.current.close_record.events == 6
    )


async def test_heartbeats_racing_a_busy_stream_never_split_an_event() -> None:
    # Many small events with tiny pauses and a tiny interval: sends race the heartbeat task.
    steps: list[Any] = [start()]
    for i in range(200):
        steps += [event(TEXT, data=b"event: delta\ndata: %d\n\n" % i)]
        if i % 3 == 0:
            steps.append(0.002)
    steps += [event(FINISH), end()]
    client, _ = await run(guard(Script(*steps), heartbeat_interval=0.001), make_scope())
    beats = assert_heartbeats_only_between_events(client.sent, b": keepalive\n\n")
    assert beats > 0


async def test_a_foreign_app_inside_an_event_gets_no_heartbeat_there() -> None:
    # Without twins the guard can only judge bytes: half an event out means no heartbeat yet.
    half = {"type": "http.response.body", "body": b"data: one", "more_body": True}
    rest = {"type": "http.response.body", "body": b" two\n\n", "more_body": True}
    script = Script(start(), half, 0.2, rest, 0.2, end())
    client, _ = await run(guard(script, heartbeat_interval=0.03), make_scope(exchange=False))
    raw = [m["body"] for m in client.bodies]
    assert raw.index(b" two\n\n") == raw.index(b"data: one") + 1
    assert b": keepalive\n\n" in raw[raw.index(b" two\n\n") :]


async def test_gemini_clients_get_a_blank_line_not_a_comment() -> None:
    steps = [start(), event(TEXT), 0.15, event(FINISH), end()]
    client, _ = await run(guard(Script(*steps), heartbeat_interval=0.03), make_scope("gemini"))
    assert b"\n" in [m["body"] for m in client.bodies]
    assert b":" not in b"".join(m["body"] for m in client.bodies if m.get(EVENT) == [])


async def test_heartbeats_do_not_keep_a_stalled_stream_alive() -> None:
    script = Script(start(), event(TEXT), Script.FOREVER)
    _, exchange = await run(guard(script, stall_timeout=0.3, heartbeat_interval=0.05), make_scope())
    assert (
        exchange.current.close_record is not None
        and exchange.current.close_record.reason == "stall_timeout"
    )
    assert exchange.current.close_record.heartbeats >= 2


async def test_one_timer_serves_the_stall_deadline_and_the_heartbeats() -> None:
    """The heartbeat check and the stall deadline share one loop timer: the heartbeats that
    come due first neither push the deadline back nor stop when it is further off."""
    script = Script(start(), event(TEXT), Script.FOREVER)
    _, exchange = await run(guard(script, stall_timeout=0.4, heartbeat_interval=0.1), make_scope())
    close = exchange.current.close_record
    assert close is not None and close.reason == "stall_timeout"
    assert 2 <= close.heartbeats <= 4  # at about 0.1, 0.2 and 0.3 s
    assert close.duration is not None and close.duration < 2.0


async def test_no_heartbeat_before_commit_or_on_a_plain_response() -> None:
    body = {"type": "http.response.body", "body": b"{}", "more_body": False}
    client, _ = await run(
        guard(Script(0.2, start(200, JSON), body), heartbeat_interval=0.02), make_scope()
    )
    assert [m.get("body") for m in client.sent] == [None, b"{}"]


# --- keepalive before the first event --------------------------------------------------------


async def test_keepalive_before_first_event_commits_early_and_gives_up_fallback() -> None:
    steps = [
        0.3,
        start(),
        event(MessageStart(id="r", model="m")),
        event(TEXT),
        event(FINISH),
        end(),
    ]
    script = Script(*steps)
    client = Client()
    g = guard(script, heartbeat_interval=0.05, keepalive_before_first_event=True)
    held = await run_held(g, make_scope(), client.receive, client.send)
    assert held.committed  # the routing layer above had to commit at the first heartbeat
    first = client.sent[0]
    assert first["type"] == "http.response.start" and first["status"] == 200
    assert dict(first["headers"])[b"content-type"].startswith(b"text/event-stream")
    assert client.bodies[0]["body"] == b": keepalive\n\n" and EVENT not in client.bodies[0]
    assert sum(m["type"] == "http.response.start" for m in client.sent) == 1
    assert script.finished
    assert_heartbeats_only_between_events(client.sent, b": keepalive\n\n")


async def test_keepalive_then_an_upstream_error_response_goes_in_band() -> None:
    error = GatewayError("rate_limited", "slow down")
    script = Script(
        0.3,
        {**start(429, JSON), ERROR: error},
        {"type": "http.response.body", "body": b'{"error":{}}', ERROR: error},
    )
    g = guard(script, heartbeat_interval=0.05, keepalive_before_first_event=True)
    client, exchange = await run(g, make_scope("anthropic_messages"))
    assert client.sent[0]["status"] == 200
    assert client.bodies[-2][ERROR] is error and b"event: error" in client.bodies[-2]["body"]
    assert client.bodies[-1]["more_body"] is False
    assert (
        exchange.current.close_record is not None
        and exchange.current.close_record.reason == "upstream_error"
    )


async def test_keepalive_then_ttfb_timeout_goes_in_band() -> None:
    script = Script(Script.FOREVER)
    g = guard(script, ttfb_timeout=0.3, heartbeat_interval=0.05, keepalive_before_first_event=True)
    client, exchange = await run(g, make_scope("openai_responses"))
    assert client.sent[0]["status"] == 200
    assert b"response.failed" in client.bodies[-2]["body"]
    assert (
        exchange.current.close_record is not None
        and exchange.current.close_record.reason == "ttfb_timeout"
    )


async def test_keepalive_passes_on_the_inner_apps_own_stream_headers_when_they_are_in() -> None:
    headers = [*SSE, (b"x-upstream", b"yes")]
    steps = [start(200, headers), 0.3, event(TEXT), event(FINISH), end()]
    g = guard(Script(*steps), heartbeat_interval=0.05, keepalive_before_first_event=True)
    client, exchange = await run(g, make_scope())
    assert client.sent[0]["headers"] == headers
    assert client.bodies[0]["body"] == b": keepalive\n\n"
    assert (
        exchange.current.close_record is not None
        and exchange.current.close_record.reason == "completed"
    )


async def test_keepalive_leaves_a_gemini_json_array_stream_alone() -> None:
    # streamGenerateContent without alt=sse answers one JSON array, not SSE.
    array = {"type": "http.response.body", "body": b"[{}]", "more_body": False}
    scope = make_scope("gemini")
    scope["query_string"] = b""
    g = guard(
        Script(0.2, start(200, JSON), array),
        heartbeat_interval=0.03,
        keepalive_before_first_event=True,
    )
    client, _ = await run(g, scope)
    assert [m.get("body") for m in client.sent] == [None, b"[{}]"]


async def test_keepalive_is_only_for_streamed_requests() -> None:
    body = {"type": "http.response.body", "body": b"{}", "more_body": False}
    g = guard(
        Script(0.2, start(200, JSON), body),
        heartbeat_interval=0.03,
        keepalive_before_first_event=True,
    )
    client, _ = await run(g, make_scope(stream=False))
    assert [m.get("body") for m in client.sent] == [None, b"{}"]


# --- disconnects and failed writes -----------------------------------------------------------


async def test_a_disconnect_cancels_a_foreign_app_without_its_own_watcher() -> None:
    script = Script(
        start(),
        {"type": "http.response.body", "body": b"data: 1\n\n", "more_body": True},
        Script.FOREVER,
    )
    client = Client()

    async def leave_after_first_body(message: Message) -> None:
        await Client.send(client, message)
        if message.get("body"):
            client.leave()

    client.send = leave_after_first_body  # type: ignore[method-assign]
    _, exchange = await run(guard(script), make_scope(exchange=False), client)
    assert script.cancelled
    assert (
        exchange.current.close_record is not None
        and exchange.current.close_record.reason == "client_disconnected"
    )
    assert len(client.sent) == 2  # nothing more went to a client that left


async def test_the_inner_receive_gives_the_body_once_then_disconnects_for_good() -> None:
    got: list[Message] = []

    async def app(scope: Any, receive: Any, send: Send) -> None:
        got.append(await receive())
        await send(start())
        await send(event(TEXT))
        with anyio.CancelScope(shield=True):
            got.append(await receive())  # blocks until the client leaves
            got.append(await receive())  # and keeps saying so, as servers do

    client = Client()

    async def leave_on_body(message: Message) -> None:
        await Client.send(client, message)
        if message.get(EVENT):
            client.leave()

    client.send = leave_on_body  # type: ignore[method-assign]
    _, exchange = await run(guard(app), make_scope(), client)
    assert got == [
        {"type": "http.request", "body": b"{}", "more_body": False},
        {"type": "http.disconnect"},
        {"type": "http.disconnect"},
    ]
    assert (
        exchange.current.close_record is not None
        and exchange.current.close_record.reason == "client_disconnected"
    )


async def test_a_disconnect_while_waiting_for_the_first_event_sends_nothing() -> None:
    script = Script(start(), Script.FOREVER)
    client = Client()
    async with anyio.create_task_group() as group:
        group.start_soon(run, guard(script), make_scope(), client)
        await anyio.sleep(0.1)
        client.leave()
    assert script.cancelled and client.sent == []


@pytest.mark.parametrize(
    "error", [BrokenPipeError("gone"), ConnectionResetError("reset"), anyio.BrokenResourceError()]
)
async def test_a_failing_send_is_client_write_failed_and_stops_the_inner_app(
    error: Exception,
) -> None:
    script = Script(start(), event(TEXT), event(TEXT), event(TEXT), Script.FOREVER)
    client = Client(fail_on=2, error=error)
    _, exchange = await run(guard(script, heartbeat_interval=0.02), make_scope(), client)
    assert script.cancelled and not script.finished
    assert (
        exchange.current.close_record is not None
        and exchange.current.close_record.reason == "client_write_failed"
    )


async def test_a_failing_heartbeat_send_is_client_write_failed_too() -> None:
    script = Script(start(), event(TEXT), Script.FOREVER)
    client = Client(fail_on=2)  # the start and the event go out; the heartbeat fails
    _, exchange = await run(guard(script, heartbeat_interval=0.05), make_scope(), client)
    assert script.cancelled
    assert (
        exchange.current.close_record is not None
        and exchange.current.close_record.reason == "client_write_failed"
    )


async def test_any_other_exception_from_send_is_reraised_after_stopping_the_inner_app() -> None:
    class Abandon(Exception):
        pass

    script = Script(start(), event(TEXT), Script.FOREVER)
    client = Client(fail_on=1, error=Abandon())
    with pytest.raises(Abandon):
        await run(guard(script), make_scope(), client)
    assert script.cancelled


async def test_an_inner_exception_after_commit_ends_in_band_and_is_reraised() -> None:
    async def app(scope: Any, receive: Any, send: Send) -> None:
        await send(start())
        await send(event(TEXT))
        raise RuntimeError("bug")

    client = Client()
    with pytest.raises(RuntimeError, match="bug"):
        await StreamGuard(app)(make_scope(), client.receive, client.send)
    assert client.bodies[-2][ERROR].kind == "server_error"
    assert client.bodies[-1]["more_body"] is False


async def test_cancelled_from_outside_it_ends_everything_it_started() -> None:
    # A layer above gives up on the call (its own cancel scope) while heartbeats and the
    # watcher are running: the cancellation is that layer's to catch, and nothing is left.
    script = Script(start(), event(TEXT), Script.FOREVER)
    client = Client()
    before = len(asyncio.all_tasks())
    with anyio.move_on_after(0.2) as outer:
        await guard(script, heartbeat_interval=0.01)(make_scope(), client.receive, client.send)
    assert outer.cancelled_caught
    assert script.cancelled
    assert len(asyncio.all_tasks()) == before
    assert any(m.get("body") == b": keepalive\n\n" for m in client.bodies)


@pytest.mark.parametrize("heartbeat_interval", [None, 0.002])
async def test_a_finished_call_leaves_nothing_for_the_garbage_collector(
    heartbeat_interval: float | None,
) -> None:
    # The call's timer lets go of it when it ends, so it is freed by reference counting:
    # under load, collecting every request's leftovers costs more than the layers
    # themselves (see ``Exchange.detach``).  Only this layer's own objects are looked for,
    # so garbage made meanwhile by anything else does not count.  With heartbeats, a
    # heartbeat task is stopped with the call.
    steps = [start(), event(TEXT), 0.01, event(TEXT), event(FINISH), end()]
    g = guard(Script(*steps), heartbeat_interval=heartbeat_interval)
    await run(g, make_scope())  # the first call's one-time imports and caches
    gc.collect()
    gc.disable()
    try:
        for _ in range(10):
            client, exchange = await run(g, make_scope())
            assert (
                exchange.current.close_record is not None
                and exchange.current.close_record.reason == "completed"
            )
            exchange.detach()  # as the outermost layer does on its way out
        del client, exchange
        gc.set_debug(gc.DEBUG_SAVEALL)  # what the collector finds stays in gc.garbage
        gc.collect()
        left = [o for o in gc.garbage if type(o).__module__ == StreamGuard.__module__]
        assert left == []
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
        gc.enable()


async def test_a_slow_client_delays_the_heartbeat_rather_than_racing_it() -> None:
    # Each event takes longer to hand over than the heartbeat interval: a heartbeat that
    # falls due meanwhile waits for the send to end, and never lands inside an event.
    class SlowClient(Client):
        async def send(self, message: Message) -> None:
            if message.get(EVENT):
                await anyio.sleep(0.05)
            await super().send(message)

    steps: list[Any] = [start()]
    for i in range(5):
        steps += [event(TEXT, data=b"event: delta\ndata: %d\n\n" % i), 0.05]
    steps += [event(FINISH), end()]
    client, exchange = await run(
        guard(Script(*steps), heartbeat_interval=0.02), make_scope(), SlowClient()
    )
    assert_heartbeats_only_between_events(client.sent, b": keepalive\n\n")
    assert (
        exchange.current.close_record is not None
        and exchange.current.close_record.reason == "completed"
    )


async def test_an_inner_exception_before_commit_is_reraised_as_itself() -> None:
    async def app(scope: Any, receive: Any, send: Send) -> None:
        await anyio.sleep(0)
        raise KeyError("bug")

    client = Client()
    with pytest.raises(KeyError):
        await StreamGuard(app)(make_scope(), client.receive, client.send)
    assert client.sent[0]["status"] == 500


# --- the close log ---------------------------------------------------------------------------


async def test_close_records_are_appended_as_json_lines(tmp_path: Path) -> None:
    log = tmp_path / "closes.jsonl"
    g = guard(Script(start(), event(TEXT), event(FINISH), end()), close_log=log, stall_timeout=0.2)
    await run(g, make_scope(target=FakeTarget("up", "model-x")))
    g = guard(Script(start(), event(TEXT), Script.FOREVER), close_log=log, stall_timeout=0.2)
    await run(g, make_scope())
    lines = [json.loads(line) for line in log.read_text().splitlines()]
    assert [line["reason"] for line in lines] == ["completed", "stall_timeout"]
    first = lines[0]
    assert first["provider"] == "up" and first["model"] == "model-x"
    assert first["request_id"].startswith("req_") and first["terminal_sent"] is True
    assert isinstance(first["time"], float)


async def test_no_close_log_line_for_a_non_generation_request(tmp_path: Path) -> None:
    log = tmp_path / "closes.jsonl"
    body = {"type": "http.response.body", "body": b'{"status":"ok"}', "more_body": False}
    scope = make_scope(exchange=False)
    scope["path"], scope["method"] = "/health", "GET"
    await run(guard(Script(start(200, JSON), body), close_log=log), scope)
    assert not log.exists()
