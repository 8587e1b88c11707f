"""``StreamGuard``: time limits, heartbeats, disconnect cancellation and one close record per
response.

Where it sits: directly above ``ProviderDispatch``, under the routing layers (fallback,
cooldown/retry, field cache).  Those layers choose ``exchange.target`` before they call it,
which is how per-provider and per-model limits are found, and they may retry only what this
layer has not committed, which is why a timeout before the first event is an ordinary error
response (504, kind ``timeout``) and not a broken stream.  Alone around any ASGI app it still
works: it makes the exchange itself, and a foreign app without unified twins is judged by its
bytes only (heartbeats only on event boundaries, no in-band errors it cannot render).

Deliberate choices:

* Limits are deadlines on one cancel scope around the inner app, not timer tasks:
  ``ttfb_timeout`` from the call to the first body message (headers included, so a provider
  that never answers is caught too), then ``stall_timeout`` from the end of each message to
  the next, and ``total_timeout`` over all.  While a message is being handed to the client
  the clock stops: a slow reader is not an upstream stall, and the upstream is only read as
  fast as the client takes it.  The gaps are those between the inner app's messages: on a
  translated stream, upstream events with nothing to show in the client's protocol (an
  Anthropic ``ping``, the Responses ``*.done`` events) make no message, so they do not
  count as signs of life.  A total timeout closes as ``total_timeout``.
* ``http.response.start`` is held until the first body message, so "before commit" means
  nothing has left this layer: a timeout then ends the inner app and answers with the
  client protocol's error response (``dispatch.send_error``, status 504, ERROR twin), which
  the routing layers above retry on another credential or target.  After commit a timeout
  is the protocol's in-band error event (OpenAI error chunk, Anthropic ``event: error``,
  Responses ``response.failed``, Gemini error object) and a clean end.  The routing layers
  hold a stream's prelude (``MessageStart``, usage) themselves, so a stall after the prelude
  is still retryable up there.
* A stream with unified twins that ends without a ``Finish`` and without an ``Error`` was
  cut short: it gets the in-band ``connection`` error (code ``premature_close``, the same
  marker dispatch sets), never a clean end that looks complete.
* Heartbeats go out only while a committed SSE response is idle, only between whole events
  (one send lock, and the last body sent must end on an event boundary), and never reset the
  stall clock.  They carry an empty EVENT twin, so a routing layer that is still holding a
  prelude keeps holding it.  Most SDKs ignore an SSE comment (``: keepalive``); google-genai
  does not (it takes every line that is not ``data:`` for raw JSON and fails on it), so a
  Gemini client gets a bare blank line, which every SSE reader skips.
* ``keepalive_before_first_event`` commits a streamed SSE request early (its own 200 and SSE
  headers, after one ``heartbeat_interval`` without a first event) so proxies with idle
  timeouts keep the connection.  That heartbeat carries no twin on purpose: it makes the
  routing layers above commit, which gives up fallback for that request; an upstream error
  after that reaches the client in-band.  Off by default.
* This layer owns the disconnect watch: one task reads ``receive`` (nothing else does once
  the body is in), sets an event and cancels the inner app at once.  The inner app gets a
  ``receive`` that yields the exchange's body once, then blocks until the disconnect and
  returns ``http.disconnect`` on every later call, as servers do; dispatch's own watcher and
  a foreign app without one both work.  A ``send`` that raises (``OSError``, which covers
  uvicorn's ``ClientDisconnected``, or anyio's resource errors) cancels the inner app the
  same way, as ``client_write_failed``.  Cancelling dispatch closes the upstream response,
  which discards its connection.  Any other exception from ``send`` (a routing layer
  abandoning the attempt) cancels the inner app and is re-raised unchanged.
* One ``StreamClose`` per call on ``exchange.close`` (the last attempt wins there; every
  attempt is recorded as a ``stream_guard.close`` pass), appended as one JSON line to
  ``close_log`` when configured, for generation requests only (not health checks).
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Mapping
from typing import Any

import anyio
import anyio.lowlevel
import msgspec
from anyio.abc import TaskGroup

from .._types import App, Message, Receive, Scope, Send
from ..dispatch import ensure_request, send_error
from ..errors import PREMATURE_CLOSE, GatewayError, classify, premature_close
from ..exchange import DEFAULT_MAX_BODY, DISCONNECT_WATCHED, ERROR, EVENT, Exchange, StreamClose
from ..protocols import get_codec
from ..unified import Error, Finish, MessageStart, ReasoningDelta, Signature

__all__ = ["CLOSE_REASONS", "PREMATURE_CLOSE", "TTFB_HEADER", "Limits", "StreamGuard"]


CLOSE_REASONS = (
    "completed",
    "client_disconnected",
    "client_write_failed",
    "upstream_error",
    "upstream_premature_close",
    "ttfb_timeout",
    "stall_timeout",
    "total_timeout",
)
TTFB_HEADER = b"x-rotator-ttfb-timeout"

_LIMIT_KEYS = ("ttfb_timeout", "stall_timeout", "total_timeout", "heartbeat_interval")
_COMMENT = b": keepalive\n\n"
# google-genai reads every non-``data:`` line as raw JSON (see the module docstring).
_HEARTBEAT = {"gemini": b"\n"}
_SSE_HEADERS = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-cache, no-transform"),
    (b"x-accel-buffering", b"no"),
]
_WRITE_ERRORS = (OSError, anyio.BrokenResourceError, anyio.ClosedResourceError)
_BOUNDARIES = (b"\n\n", b"\r\n\r\n", b"\r\r")
_json_line = msgspec.json.Encoder().encode


class Limits(msgspec.Struct, frozen=True, kw_only=True):
    """The time limits of one call, in seconds; ``None`` switches one off."""

    ttfb_timeout: float | None = 30.0
    stall_timeout: float | None = 60.0
    total_timeout: float | None = None
    heartbeat_interval: float | None = 15.0


class StreamGuard:
    """TTFB/stall/total timeouts, heartbeats, disconnect cancellation and the close record.

    ``overrides`` maps ``"provider"`` or ``"provider/model"`` (the target's upstream model)
    to a mapping of any of ``ttfb_timeout``, ``stall_timeout``, ``total_timeout``,
    ``heartbeat_interval``; the more specific wins, key by key.  A client may set its own
    TTFB limit with the ``x-rotator-ttfb-timeout`` header (seconds), capped at
    ``max_ttfb_timeout`` (default: the configured TTFB limit, so the header can only
    shorten it).  ``close_log`` is a path that gets one JSON line per generation response.
    """

    def __init__(
        self,
        app: App,
        *,
        ttfb_timeout: float | None = 30.0,
        stall_timeout: float | None = 60.0,
        total_timeout: float | None = None,
        heartbeat_interval: float | None = 15.0,
        keepalive_before_first_event: bool = False,
        max_ttfb_timeout: float | None = None,
        overrides: Mapping[str, Mapping[str, float | None]] | None = None,
        close_log: str | os.PathLike[str] | None = None,
        max_body: int = DEFAULT_MAX_BODY,
    ) -> None:
        self.app = app
        self.limits = Limits(
            ttfb_timeout=_seconds("ttfb_timeout", ttfb_timeout),
            stall_timeout=_seconds("stall_timeout", stall_timeout),
            total_timeout=_seconds("total_timeout", total_timeout),
            heartbeat_interval=_seconds("heartbeat_interval", heartbeat_interval),
        )
        if keepalive_before_first_event and self.limits.heartbeat_interval is None:
            raise ValueError("keepalive_before_first_event needs a heartbeat_interval")
        self.keepalive_before_first_event = keepalive_before_first_event
        self.max_ttfb_timeout = _seconds("max_ttfb_timeout", max_ttfb_timeout)
        self.overrides: dict[str, dict[str, float | None]] = {}
        for key, values in (overrides or {}).items():
            if not isinstance(key, str) or not key or not isinstance(values, Mapping):
                raise ValueError(
                    f"overrides: expected 'provider' or 'provider/model' -> mapping, got {key!r}"
                )
            unknown = set(values) - set(_LIMIT_KEYS)
            if unknown:
                raise ValueError(
                    f"overrides[{key!r}]: unknown key(s) {sorted(unknown)}; "
                    f"known: {', '.join(_LIMIT_KEYS)}"
                )
            self.overrides[key] = {
                name: _seconds(f"overrides[{key!r}].{name}", value)
                for name, value in values.items()
            }
        self.close_log = os.fspath(close_log) if close_log is not None else None
        self.max_body = max_body

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        try:
            exchange = await Exchange.of(scope, receive, max_body=self.max_body)
        except GatewayError as error:
            await send_error(send, None, error)
            return
        try:
            limits, source = self.resolve(exchange)
        except GatewayError as error:
            exchange.error = error
            await send_error(send, exchange.protocol, error)
            return
        early = False
        if self.keepalive_before_first_event:
            try:
                await ensure_request(scope, receive, max_body=self.max_body)
            except GatewayError:
                pass  # the inner app answers it in the client's protocol
            early = _streams_sse(exchange)
        exchange.record(
            "stream_guard.limits",
            ttfb=limits.ttfb_timeout,
            stall=limits.stall_timeout,
            total=limits.total_timeout,
            heartbeat=limits.heartbeat_interval,
            source=source,
        )
        guarded = _GuardedCall(exchange, limits, send, early)
        scope[DISCONNECT_WATCHED] = True  # this layer cancels the inner app on disconnect
        try:
            await guarded.run(self.app, scope, receive)
        finally:
            close = guarded.close_record()
            exchange.close = close
            exchange.record(
                "stream_guard.close",
                reason=close.reason,
                events=close.events,
                bytes=close.bytes,
                heartbeats=close.heartbeats,
                attempt=close.attempt,
                ttfb=close.ttfb,
                duration=close.duration,
            )
            if self.close_log is not None and (exchange.request is not None or guarded.sse):
                line = _json_line(
                    {"time": time.time(), **msgspec.structs.asdict(close)}  # type: ignore[arg-type]
                )
                with anyio.CancelScope(shield=True):
                    await anyio.to_thread.run_sync(_append, self.close_log, line + b"\n")

    def resolve(self, exchange: Exchange) -> tuple[Limits, str]:
        """The limits for this call: global, then the target's provider, then its
        ``provider/model``, then the client's TTFB header.  Raises ``GatewayError``
        (bad_request) for a header that is not a positive number of seconds."""
        limits, source = self.limits, "global"
        target = exchange.target
        if target is not None and self.overrides:
            provider = target.provider.name
            for key in (provider, f"{provider}/{target.model}"):
                values = self.overrides.get(key)
                if values:
                    limits, source = msgspec.structs.replace(limits, **values), key
        for name, value in exchange.scope.get("headers", ()):
            if name == TTFB_HEADER:
                try:
                    wanted = float(value)
                except ValueError:
                    wanted = math.nan
                if not (wanted > 0 and math.isfinite(wanted)):
                    raise GatewayError(
                        "bad_request",
                        f"{TTFB_HEADER.decode()}: expected a positive number of seconds, "
                        f"got {value.decode('latin-1')!r}",
                        param=TTFB_HEADER.decode(),
                    )
                cap = self.max_ttfb_timeout or limits.ttfb_timeout
                if cap is not None:
                    wanted = min(wanted, cap)
                limits, source = msgspec.structs.replace(limits, ttfb_timeout=wanted), "header"
                break
        return limits, source


class _GuardedCall:
    """The state of one call: what went out, when, and how it ended."""

    def __init__(self, exchange: Exchange, limits: Limits, send: Send, early: bool) -> None:
        self.exchange = exchange
        self.limits = limits
        self.send = send
        self.keepalive_early = early
        self.attempts_before = len(exchange.attempts)
        self.lock = anyio.Lock(fast_acquire=True)  # uncontended: no trip through the loop
        self.scope = anyio.CancelScope()
        self.group: TaskGroup  # set by run()
        self.heartbeating = False
        self.disconnected = anyio.Event()
        self.committed_event = anyio.Event()
        self.body_given = False
        now = anyio.current_time()
        self.started = now
        self.total_deadline = (
            now + limits.total_timeout if limits.total_timeout is not None else math.inf
        )
        self.deadline_kind = "ttfb"
        self.first_event_at: float | None = None
        self.ended_at: float | None = None
        self.last_write = now
        self.held_start: Message | None = None
        self.inner_start: Message | None = None  # the inner app's start after an early commit
        self.committed = False
        self.early = False  # committed with our own start, before the inner app answered
        self.sse = False
        self.twins = False
        self.at_boundary = True
        self.ended = False
        self.stopped = False  # the inner app's further messages are dropped
        self.cancelled_by_us = False
        self.timeout: str | None = None
        self.reason: str | None = None
        self.error: GatewayError | None = None
        self.escaped: Exception | None = None
        self.events = 0
        self.bytes = 0
        self.heartbeats = 0
        self.last_event: str | None = None
        self.terminal_sent = False
        self.reasoning_seen = False
        self.response_id: str | None = None
        self.status: int | None = None
        self._set_deadline(now, first=True)

    # --- the run ----------------------------------------------------------------------------

    async def run(self, app: App, scope: Scope, receive: Receive) -> None:
        failure: Exception | None = None
        async with anyio.create_task_group() as group:
            self.group = group
            group.start_soon(self._watch_disconnect, receive)
            if self.keepalive_early:
                # Heartbeats may have to commit before the first event: they start now.
                # Otherwise they start at commit, and only for a stream (_send_messages),
                # so a plain request never pays for the task.
                group.start_soon(self._heartbeats)
                self.heartbeating = True
            with self.scope:
                try:
                    await app(scope, self._receive, self._send)
                except Exception as exc:
                    # Handled outside the task group, so callers see the exception itself
                    # rather than an ExceptionGroup around it.
                    failure = exc
            group.cancel_scope.cancel()
        self.ended_at = anyio.current_time()
        if self.scope.cancelled_caught and not self.cancelled_by_us:
            self.timeout = f"{self.deadline_kind}_timeout"
            self.reason = self.reason or self.timeout
            self.exchange.record("stream_guard.timeout", limit=self.timeout)
        await self._finish(failure)
        if self.escaped is not None:
            raise self.escaped
        if failure is not None and not isinstance(failure, GatewayError):
            raise failure

    async def _finish(self, failure: Exception | None) -> None:
        """Whatever the client still needs once the inner app has stopped."""
        if self.cancelled_by_us:
            return  # the client is gone, or a layer above abandoned the attempt
        error: GatewayError | None = None
        if self.timeout is not None and self.reason == self.timeout:
            error = self._timeout_error(self.timeout)
        elif failure is not None:
            error = (
                failure
                if isinstance(failure, GatewayError)
                else GatewayError(
                    "server_error",
                    f"internal gateway error (request {self.exchange.request_id})",
                )
            )
            self.reason = self.reason or "upstream_error"
        elif self.ended:
            return
        elif self.twins and self.sse and not self.terminal_sent and self.error is None:
            error = premature_close()  # the inner app stopped short of a terminal event
        elif not self.committed and self.held_start is None:
            error = GatewayError("server_error", "the inner app returned without a response")
            self.reason = "upstream_error"
        if error is not None:
            self.error = self.error or error
            self._mark_attempt(error)
        if self.committed:
            await self._end_in_band(error)
        elif error is not None:
            await self._deliver_error_response(error)
        else:
            await self._end_in_band(None)  # the held start, and an empty end

    # --- the inner app's receive and send ---------------------------------------------------

    async def _receive(self) -> Message:
        if not self.body_given:
            self.body_given = True
            return {"type": "http.request", "body": self.exchange.body, "more_body": False}
        await self.disconnected.wait()
        return {"type": "http.disconnect"}

    async def _send(self, message: Message) -> None:
        if self.stopped:
            return
        kind = message["type"]
        if kind == "http.response.start":
            self.status = message.get("status")
            if self.early:
                self.inner_start = message
            else:
                self.held_start = message
                self.sse = _is_sse(message)
            return
        if kind != "http.response.body":
            async with self.lock:
                await self._send_messages([message])
            await self._stopped_checkpoint()
            return
        self.scope.deadline = math.inf  # the stall clock stops while the client takes it
        if self.first_event_at is None:
            self.first_event_at = anyio.current_time()
            self.exchange.record(
                "stream_guard.first_event",
                ttfb=self.first_event_at - self.started,
                early=self.early,
            )
        if self.inner_start is not None and not _is_stream_start(self.inner_start):
            await self._inner_error_in_band(message)
            return
        start = self.held_start
        if start is not None and start.get("status", 200) >= 400 and self.error is None:
            self.error = start.get(ERROR) or classify(start["status"])
            self.reason = self.reason or "upstream_error"
        out = [message]
        events = message.get(EVENT)
        if events is not None:
            self.twins = True
            self._note(events)
        elif self.sse and message.get("body"):
            self.events += 1  # a foreign app's stream: one message, one event as far as we know
        more = message.get("more_body", False)
        if not more and self.twins and self.sse and not self.terminal_sent and self.error is None:
            # The inner app (not dispatch, which says so itself) ended its stream without a
            # terminal event.
            error = premature_close()
            out.insert(0, self._error_message(error))
            self._note([Error(error=error)])
            self._mark_attempt(error)
        async with self.lock:
            await self._send_messages(out)
        await self._stopped_checkpoint()
        if more:
            self._set_deadline(anyio.current_time())

    async def _stopped_checkpoint(self) -> None:
        if self.cancelled_by_us:
            # Our scope is cancelled (a failed send): this unwinds the inner app from here.
            await anyio.lowlevel.checkpoint()

    async def _inner_error_in_band(self, message: Message) -> None:
        """After an early commit the inner app answered with an error response (or with no
        stream): the client already has a 200 stream, so the error goes in-band."""
        start = self.inner_start
        assert start is not None
        status = start.get("status", 200)
        error = start.get(ERROR) or message.get(ERROR)
        if error is None:
            error = (
                classify(status)
                if status >= 400
                else GatewayError("server_error", "the inner app answered with no stream")
            )
        self.inner_start = None
        self.error = error
        self.reason = self.reason or "upstream_error"
        self._mark_attempt(error)
        await self._end_in_band(error)
        self.stopped = True  # the rest of the inner app's error body is dropped

    # --- sending ----------------------------------------------------------------------------

    async def _send_messages(self, messages: list[Message], *, heartbeat: bool = False) -> None:
        """Send (the caller holds the lock): the held start first, then ``messages``.  A
        failed write never raises here; it stops the call instead."""
        if self.held_start is not None:
            start, self.held_start = self.held_start, None
            messages = [start, *messages]
        for message in messages:
            if self.cancelled_by_us:
                return
            is_start = message["type"] == "http.response.start"
            if is_start:
                self.committed = True
                self.committed_event.set()
                if (
                    self.sse
                    and not self.heartbeating
                    and self.limits.heartbeat_interval is not None
                ):
                    self.heartbeating = True
                    self.group.start_soon(self._heartbeats)
            try:
                await self.send(message)
            except _WRITE_ERRORS:
                self._stop("client_write_failed")
                return
            except Exception as exc:
                self.escaped = exc
                self._stop(None)
                return
            if not is_start and message["type"] == "http.response.body":
                body = message.get("body", b"")
                self.bytes += len(body)
                if body and not heartbeat:
                    self.at_boundary = body.endswith(_BOUNDARIES)
                if not message.get("more_body", False):
                    self.ended = True
        self.last_write = anyio.current_time()

    def _stop(self, reason: str | None) -> None:
        if reason is not None and (self.reason is None or reason == "client_write_failed"):
            self.reason = reason
        self.stopped = True
        self.cancelled_by_us = True
        self.scope.cancel()

    async def _end_in_band(self, error: GatewayError | None) -> None:
        """After commit: the in-band error event (when the protocol has one and the response
        is a stream), then the end of the body."""
        messages: list[Message] = []
        if self.ended:
            return
        if error is not None and self.sse:
            message = self._error_message(error)
            if message["body"]:
                messages.append(message)
                self._note(message[EVENT])
        messages.append({"type": "http.response.body", "body": b"", "more_body": False})
        async with self.lock:
            await self._send_messages(messages)

    async def _deliver_error_response(self, error: GatewayError) -> None:
        """Before commit: the whole error response, in the client's protocol."""
        self.held_start = None
        sent: list[Message] = []

        async def collect(message: Message) -> None:
            sent.append(message)

        await send_error(collect, self.exchange.protocol, error)
        async with self.lock:
            await self._send_messages(sent)

    def _error_message(self, error: GatewayError) -> Message:
        """The in-band error event in the client's protocol (an empty body when the protocol
        is unknown: a foreign app's stream then only gets its end)."""
        event = Error(error=error)
        body = b""
        protocol = self.exchange.protocol
        if protocol is not None:
            encoder = get_codec(protocol).stream_encoder(self.exchange.request)
            if self.events:
                # A fresh encoder opens the stream first (role chunk, response.created ...);
                # mid-stream that opening already went out, so it is primed and dropped.
                encoder.encode(
                    MessageStart(
                        id=self.response_id or self.exchange.response_id or "",
                        model=self.exchange.model or "",
                    )
                )
            body = encoder.encode(event)
        return {
            "type": "http.response.body",
            "body": body,
            "more_body": True,
            EVENT: [event],
            ERROR: error,
        }

    # --- the two helper tasks ---------------------------------------------------------------

    async def _watch_disconnect(self, receive: Receive) -> None:
        while (await receive())["type"] != "http.disconnect":
            pass  # the body again (a replaying receive above us): the inner app has it
        if self.ended:
            return  # the whole response went out; the client leaving now changes nothing
        self.disconnected.set()
        self._stop("client_disconnected")

    async def _heartbeats(self) -> None:
        interval = self.limits.heartbeat_interval
        assert interval is not None
        if self.keepalive_early:
            with anyio.move_on_after(interval):
                await self.committed_event.wait()
            async with self.lock:
                if not self.committed and not self.cancelled_by_us:
                    await self._commit_early()
        await self.committed_event.wait()
        if not self.sse:
            return
        due = self.last_write + interval
        while True:
            await anyio.sleep_until(due)
            async with self.lock:
                if self.ended or self.cancelled_by_us:
                    return
                now = anyio.current_time()
                due = self.last_write + interval
                if now < due:
                    continue  # something went out meanwhile
                if self.at_boundary:
                    await self._beat()
                    due = self.last_write + interval
                else:
                    due = now + interval  # a foreign app is inside an event: not now

    async def _commit_early(self) -> None:
        """No first event after one interval: commit with a 200 stream (ours, or the inner
        app's when its headers are in) and a heartbeat the layers above will pass on."""
        start = self.held_start
        if start is not None and not _is_stream_start(start):
            return  # an error response is on its way; it needs no keepalive
        self.sse = True
        if start is None:
            self.early = True
            self.held_start = {
                "type": "http.response.start",
                "status": 200,
                "headers": list(_SSE_HEADERS),
            }
        self.exchange.record("stream_guard.early_commit", own_start=start is None)
        await self._beat()

    async def _beat(self) -> None:
        protocol = self.exchange.protocol  # known by now: dispatch sets it before it answers
        body = _HEARTBEAT.get(protocol, _COMMENT) if protocol is not None else _COMMENT
        message: Message = {"type": "http.response.body", "body": body, "more_body": True}
        if self.twins:
            # No content: a routing layer still holding a prelude keeps holding it.  Before
            # the first event (early commit) there is no twin, which makes it commit.
            message[EVENT] = []
        self.heartbeats += 1
        await self._send_messages([message], heartbeat=True)

    # --- bookkeeping ------------------------------------------------------------------------

    def _set_deadline(self, now: float, *, first: bool = False) -> None:
        limit = self.limits.ttfb_timeout if first else self.limits.stall_timeout
        self.deadline_kind = "ttfb" if first else "stall"
        deadline = now + limit if limit is not None else math.inf
        if self.total_deadline <= deadline:
            deadline, self.deadline_kind = self.total_deadline, "total"
        self.scope.deadline = deadline

    def _note(self, events: list[Any]) -> None:
        for event in events:
            self.events += 1
            self.last_event = type(event).__struct_config__.tag
            if isinstance(event, Finish):
                self.terminal_sent = True
            elif isinstance(event, (ReasoningDelta, Signature)):
                self.reasoning_seen = True
            elif isinstance(event, MessageStart):
                self.response_id = self.response_id or event.id
            elif isinstance(event, Error) and isinstance(event.error, GatewayError):
                self.error = self.error or event.error
                if self.reason is None:
                    self.reason = (
                        "upstream_premature_close"
                        if event.error.code == PREMATURE_CLOSE
                        else "upstream_error"
                    )

    def _timeout_error(self, reason: str) -> GatewayError:
        limits = self.limits
        target = self.exchange.target
        where = f" from {target.name}" if target is not None else ""
        if reason == "ttfb_timeout":
            message = f"no first event{where} within {limits.ttfb_timeout:g} s (ttfb_timeout)"
        elif reason == "stall_timeout":
            message = f"no event{where} for {limits.stall_timeout:g} s (stall_timeout)"
        else:
            message = f"no complete response{where} within {limits.total_timeout:g} s"
            message += " (total_timeout)"
        provider = target.provider.name if target is not None else None
        return GatewayError("timeout", message, status=504, code=reason, provider=provider)

    def _mark_attempt(self, error: GatewayError) -> None:
        self.exchange.error = error
        if len(self.exchange.attempts) > self.attempts_before:
            self.exchange.attempts[-1].kind = error.kind

    def close_record(self) -> StreamClose:
        exchange = self.exchange
        end = self.ended_at if self.ended_at is not None else anyio.current_time()
        reason = self.reason
        if reason is None:
            reason = "upstream_error" if self.error is not None else "completed"
        made = len(exchange.attempts) > self.attempts_before
        attempt = exchange.attempts[-1] if made else None
        target = exchange.target
        credential = exchange.credential
        error = self.error
        return StreamClose(
            reason=reason,
            events=self.events,
            bytes=self.bytes,
            last_event=self.last_event,
            terminal_sent=self.terminal_sent,
            reasoning_seen=self.reasoning_seen,
            error=f"{error.kind}: {error.message}" if error is not None else None,
            request_id=exchange.request_id,
            provider=target.provider.name if target is not None else None,
            model=target.model if target is not None else exchange.model,
            credential=credential.id if credential is not None else None,
            attempt=attempt.number if attempt is not None else None,
            response_id=self.response_id or exchange.response_id,
            upstream_status=attempt.status if attempt is not None else self.status,
            ttfb=self.first_event_at - self.started if self.first_event_at is not None else None,
            duration=end - self.started,
            heartbeats=self.heartbeats,
        )


def _streams_sse(exchange: Exchange) -> bool:
    """A streamed request whose answer will be SSE (Gemini streams a JSON array unless the
    client asks for ``alt=sse``, which the SDKs always do)."""
    request = exchange.request
    if request is None or not request.stream:
        return False
    if exchange.protocol == "gemini":
        return b"alt=sse" in exchange.scope.get("query_string", b"")
    return True


def _is_stream_start(start: Message) -> bool:
    return bool(start.get("status", 200) < 400 and _is_sse(start))


def _is_sse(start: Message) -> bool:
    for name, value in start.get("headers", ()):
        if name.lower() == b"content-type":
            return value.lower().startswith(b"text/event-stream")
    return False


def _seconds(name: str, value: float | None) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{name}: expected seconds as a number or None, got {value!r}")
    if not (value > 0 and math.isfinite(value)):
        raise ValueError(f"{name}: expected a positive number of seconds, got {value!r}")
    return float(value)


def _append(path: str, line: bytes) -> None:
    # One write per line with O_APPEND: concurrent requests never interleave within a line.
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line)
    finally:
        os.close(fd)
