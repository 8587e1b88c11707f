"""``RequestLog``: one JSON line per generation request, and usage totals per inbound key.

It sits outside the whole stack (under InboundKeys, whose key name it reads) and reads the
exchange once the inner app has returned, so it costs a request nothing while it runs but a
wrapper around ``send`` that notes the status and the time of the first byte.

What a line holds is ``RequestRecord`` (docs/usage.md, and its JSON Schema in
docs/request-log.schema.json, which a test checks against this struct): ids, the client's
protocol, the model, each attempt's target, credential id, kind, status, duration, usage and
cost, the request's usage and cost, how it closed, and timings.  Never content (no prompt, no
reply, no error message, which may quote either) and never a secret: credential ids, key
names, error kinds only, and the line passes through ``redaction.redact_bytes`` for what a
client typed into the model name.

The file is opened, appended to with one ``write`` (``O_APPEND``: concurrent workers never
interleave within a line) and closed for every line, in a worker thread, so rotation needs
nothing from the gateway: ``logrotate`` may move the file away at any time (the next line
creates a new one), and ``copytruncate`` works as well.
"""

from __future__ import annotations

import os
import time

import anyio
import msgspec

from .._types import App, Message, Receive, Scope, Send
from ..exchange import KEY_NAME, SCOPE_KEY, Attempt, Exchange
from ..jsonl import append_line
from ..redaction import redact_bytes, redacting_logger
from ..routes import match_route, route_path
from ..unified import Usage
from ..usage_totals import UsageTotals

__all__ = ["AttemptRecord", "RequestLog", "RequestRecord", "UsageCounts", "record"]


logger = redacting_logger("asgi_rotator.request_log")


class UsageCounts(msgspec.Struct, kw_only=True):
    """The unified counts (``unified.Usage``): input includes cache reads and writes, output
    includes reasoning; the others are parts of those, never added on top."""

    input: int
    output: int
    cache_read: int
    cache_write: int
    cache_write_1h: int
    reasoning: int
    provider_cost: float | None  # USD, as the provider reported it


class AttemptRecord(msgspec.Struct, kw_only=True):
    number: int
    target: str  # provider/model
    credential: str | None  # credential id (provider#index), never the key
    protocol: str | None
    status: int | None  # the upstream's HTTP status
    kind: str | None  # the error kind when it failed
    duration: float | None  # seconds
    ttfb: float | None  # seconds to the upstream's response headers
    usage: UsageCounts | None
    cost: float | None  # USD; null: unknown


class RequestRecord(msgspec.Struct, kw_only=True):
    time: float  # Unix time the request arrived
    request_id: str
    key: str | None  # inbound key name
    client_protocol: str | None
    model: str | None  # as the client asked for it
    stream: bool
    status: int | None  # the HTTP status the client got
    attempts: list[AttemptRecord]
    usage: UsageCounts | None
    cost: float | None  # USD over all attempts; null: unknown
    close_reason: str | None
    error: str | None  # the error kind, when the request failed
    duration: float  # seconds, arrival to the end of the response
    ttfb: float | None  # seconds to the first response byte sent to the client


_encode = msgspec.json.Encoder().encode


def counts(usage: Usage | None) -> UsageCounts | None:
    if usage is None:
        return None
    return UsageCounts(
        input=usage.input_tokens,
        output=usage.output_tokens,
        cache_read=usage.cache_read_tokens,
        cache_write=usage.cache_write_tokens,
        cache_write_1h=usage.cache_write_1h_tokens,
        reasoning=usage.reasoning_tokens,
        provider_cost=usage.cost,
    )


def attempt_record(attempt: Attempt) -> AttemptRecord:
    return AttemptRecord(
        number=attempt.number,
        target=f"{attempt.provider}/{attempt.model}",
        credential=attempt.credential,
        protocol=attempt.protocol,
        status=attempt.status,
        kind=attempt.kind,
        duration=attempt.duration,
        ttfb=attempt.ttfb,
        usage=counts(attempt.usage),
        cost=attempt.charged(),
    )


def record(
    exchange: Exchange,
    *,
    arrived: float,
    status: int | None,
    duration: float,
    ttfb: float | None,
    key: str | None,
) -> RequestRecord:
    """The request log's line for a finished exchange."""
    close = exchange.current.close_record
    error = exchange.current.error
    request = exchange.request
    if close is not None:
        reason: str | None = close.reason
    elif status is not None:
        reason = "completed" if status < 400 else "error"
    else:
        reason = None
    return RequestRecord(
        time=arrived,
        request_id=exchange.request_id,
        key=key,
        client_protocol=exchange.protocol,
        model=exchange.model,
        stream=bool(request is not None and request.stream),
        status=status,
        attempts=[attempt_record(a) for a in exchange.attempts],
        usage=counts(exchange.usage),
        cost=exchange.cost,
        close_reason=reason,
        error=error.kind if error is not None else None,
        duration=duration,
        ttfb=ttfb,
    )


class RequestLog:
    """``path``: the JSON-lines file (None: no file).  ``totals``: where usage totals by key,
    model and day go (None: not kept).  Either may be left out; with neither this layer
    only passes requests through."""

    def __init__(
        self,
        app: App,
        *,
        path: str | os.PathLike[str] | None = None,
        totals: UsageTotals | None = None,
    ) -> None:
        self.app = app
        self.path = os.fspath(path) if path is not None else None
        self.totals = totals

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or (self.path is None and self.totals is None):
            await self.app(scope, receive, send)
            return
        arrived = time.time()
        started = time.monotonic()
        seen = _Seen(send, started)
        try:
            await self.app(scope, receive, seen)
        finally:
            exchange = scope.get(SCOPE_KEY)
            if exchange is not None and _generates(scope):
                with anyio.CancelScope(shield=True):
                    await self._note(scope, exchange, arrived, started, seen)

    async def _note(
        self, scope: Scope, exchange: Exchange, arrived: float, started: float, seen: _Seen
    ) -> None:
        key = scope.get(KEY_NAME)
        # What is noted here must never break the response that was already sent.
        try:
            if self.path is not None:
                line = record(
                    exchange,
                    arrived=arrived,
                    status=seen.status,
                    duration=time.monotonic() - started,
                    ttfb=seen.first_byte,
                    key=key,
                )
                # The model name is the client's text: a key pasted there is not written.
                text = redact_bytes(_encode(line))
                await append_line(self.path, text + b"\n")
            if self.totals is not None and exchange.attempts:
                await self.totals.add(
                    key or "-",
                    _model_of(exchange),
                    exchange.usage,
                    exchange.cost,
                    now=arrived,
                )
        except Exception:
            logger.exception("request log: could not note request %s", exchange.request_id)


def _generates(scope: Scope) -> bool:
    """A generation route (not a model listing, a health check or a stored response), also
    when the request was refused before it was parsed."""
    route = match_route(route_path(scope))
    return route is not None and route.endpoint == "generate"


def _model_of(exchange: Exchange) -> str:
    """The model that answered (the last attempt's target), as ``provider/model``."""
    last = exchange.attempts[-1]
    return f"{last.provider}/{last.model}"


class _Seen:
    """The client's ``send``, noting the status and when the first body byte went out."""

    __slots__ = ("first_byte", "send", "started", "status")

    def __init__(self, send: Send, started: float) -> None:
        self.send = send
        self.started = started
        self.status: int | None = None
        self.first_byte: float | None = None

    async def __call__(self, message: Message) -> None:
        kind = message["type"]
        if kind == "http.response.start":
            self.status = message["status"]
        elif self.first_byte is None and kind == "http.response.body" and message.get("body"):
            self.first_byte = time.monotonic() - self.started
        await self.send(message)
