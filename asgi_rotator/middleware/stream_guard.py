"""``StreamGuard``: time limits, heartbeats, disconnect cancellation and one close record per
response.

Where it sits: directly above ``ProviderDispatch``, under the routing layers (fallback,
cooldown/retry, field cache).  Those layers choose the attempt's target (``exchange.current``)
before they call it, which is how per-provider and per-model limits are found, and they may
retry only what this layer has not committed, which is why a timeout before the first event
is an ordinary error response (504, kind ``timeout``) and not a broken stream.  Alone around
any ASGI app it still works: it makes the exchange itself, and a foreign app without unified
twins is judged by its bytes only (heartbeats only on event boundaries, no in-band errors it
cannot render).

Deliberate choices:

* Limits are one deadline on one cancel scope around the inner app, not timer tasks:
  ``ttfb_timeout`` from the call to the first body message (headers included, so a provider
  that never answers is caught too), then ``stall_timeout`` from the end of each message to
  the next, and ``total_timeout`` over all, client time included.  While a message is
  being handed to the client the stall clock stops (a slow reader is not an upstream stall,
  and the upstream is only read as fast as the client takes it) and ``send_timeout`` runs
  instead: a client that has not accepted a message for that long (it stopped reading but
  keeps its socket open, or reads slower than the server's buffers drain) is dropped as
  ``client_write_timeout``, the inner app cancelled at once (which closes the upstream) and
  the response left unfinished, so the server closes the connection; the total deadline
  still applies during a send.  The in-band error and the end that follow any timeout are
  themselves bounded by ``send_timeout`` (``_CLOSING_WRITE`` when it is off), so no limit
  waits on a client that does not read.  The gaps are those between the inner app's messages: on a
  translated stream, upstream events with nothing to show in the client's protocol (an
  Anthropic ``ping``, the Responses ``*.done`` events) make no message, so they do not
  count as signs of life.  A total timeout closes as ``total_timeout``.  Each message only
  notes when its send began and when it ended; one loop timer (``call_at``) works out the
  deadline that makes when it fires and re-arms itself when the deadline has moved on, so
  a stream of thousands of events costs no timer work per event (an anyio deadline
  re-schedules its timer on every change).  From one message to the next the deadlines
  only move later, but a send's can come sooner than the timer is armed for, so the timer
  is never armed further than ``send_timeout`` past the last write, and a send that
  started after that ends after the timer fires: a busy stream still re-arms at most once
  per ``send_timeout``.  (Only the first message can bring the wait's deadline sooner, when
  ``stall_timeout`` is below ``ttfb_timeout``; the timer is re-armed for it then.)
* ``http.response.start`` is held until the first body message, so "before commit" means
  nothing has left this layer: a timeout then ends the inner app and answers with the
  client protocol's error response (``answer.send_error``, status 504, ERROR twin), which
  the routing layers above retry on another credential or target.  After commit a timeout
  is the protocol's in-band error event (OpenAI error chunk, Anthropic ``event: error``,
  Responses ``response.failed``, Gemini error object) and a clean end, rendered by the
  client's stream (``exchange.stream.error_message``), so it continues what the client has:
  same response id, numbering that goes on.  The routing layers
  hold a stream's prelude (``MessageStart``, usage) themselves, so a stall after the prelude
  is still retryable up there.
* A stream with unified twins that ends without a ``Finish`` and without an ``Error`` was
  cut short: it gets the in-band ``connection`` error (code ``premature_close``, the same
  marker dispatch sets), never a clean end that looks complete.
* Heartbeats go out only while a committed SSE response is idle, only between whole events
  (one send lock, and the last body sent must end on an event boundary), and never reset the
  stall clock.  The same loop timer checks them (it fires at whichever of the deadline and
  the heartbeat check comes first), re-armed from the last write; only a
  heartbeat that is due makes a task to send it, and the send lock is made with the first
  one: until then the inner app is the only sender and a busy stream pays for neither.
  They carry an empty EVENT twin, so a routing layer that is still holding a prelude keeps
  holding it.  A heartbeat is an SSE comment (``: keepalive``) unless the client's codec
  says otherwise (``Codec.heartbeat``: a client that reads a comment as data gets a blank
  line, which every SSE reader skips).
* ``keepalive_before_first_event`` commits a streamed SSE request early (its own 200 and SSE
  headers, after one ``heartbeat_interval`` without a first event) so proxies with idle
  timeouts keep the connection.  That heartbeat carries no twin on purpose: it makes the
  routing layers above commit, which gives up fallback for that request; an upstream error
  after that reaches the client in-band.  Off by default.
* This layer owns the disconnect watch: one task reads ``receive`` (nothing else does once
  the body is in), wakes the inner app's ``receive`` and cancels the inner app at once.  It
  is a plain asyncio task (``asgi_rotator._watch``), as are the timers and the heartbeat
  task: this layer is asyncio-specific, like every server it runs under, for a fraction of
  the cost of a task group per request.  Whatever it starts is finished before the call
  returns.  The inner app gets a ``receive`` that yields the exchange's body once, then
  blocks until the disconnect and returns ``http.disconnect`` on every later call, as
  servers do; dispatch's own watcher and a foreign app without one both work.  A ``send``
  that raises (``OSError``, which covers uvicorn's ``ClientDisconnected``, or anyio's
  resource errors) cancels the inner app the same way, as ``client_write_failed``.
  Cancelling dispatch closes the upstream response, which discards its connection.  Any
  other exception from ``send`` (a routing layer abandoning the attempt) cancels the inner
  app and is re-raised unchanged.
* One ``StreamClose`` per call, on the attempt's ``close_record`` (``exchange.current``: the
  last attempt's is there after the request; every attempt is recorded as a
  ``stream_guard.close`` pass), appended as one JSON line to ``close_log`` when configured,
  for generation requests only (not health checks).
"""

from __future__ import annotations

import asyncio
import math
import os
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal

import anyio
import anyio.lowlevel
import msgspec

from .. import _watch
from .._types import App, Message, Receive, Scope, Send
from ..answer import SSE_HEADERS, ClientStream, ensure_request, is_event_stream, send_error
from ..config import StreamConfig
from ..errors import PREMATURE_CLOSE, GatewayError, classify, premature_close
from ..exchange import (
    DEFAULT_MAX_BODY,
    DISCONNECT_WATCHED,
    ERROR,
    EVENT,
    SCOPE_KEY,
    Exchange,
    StreamClose,
)
from ..jsonl import append_line
from ..protocols import get_codec
from ..unified import Error, Finish, MessageStart, ReasoningDelta, Signature

__all__ = ["CLOSE_REASONS", "PREMATURE_CLOSE", "TTFB_HEADER", "Limits", "StreamGuard"]


CLOSE_REASONS = (
    "completed",
    "client_disconnected",
    "client_write_failed",
    "client_write_timeout",
    "upstream_error",
    "upstream_premature_close",
    "ttfb_timeout",
    "stall_timeout",
    "total_timeout",
)
TTFB_HEADER = b"x-rotator-ttfb-timeout"

_LIMIT_KEYS = (
    "ttfb_timeout",
    "stall_timeout",
    "total_timeout",
    "send_timeout",
    "heartbeat_interval",
)
# How long the closing writes after a timeout (in-band error, end of body) may wait for the
# client when ``send_timeout`` is off: a limit that fired must not then wait forever.
_CLOSING_WRITE = 10.0
_COMMENT = b": keepalive\n\n"
_WRITE_ERRORS = (OSError, anyio.BrokenResourceError, anyio.ClosedResourceError)
_BOUNDARIES = (b"\n\n", b"\r\n\r\n", b"\r\r")
# The events the close record notes something of (``_CloseStats.note``).
_NOTED = frozenset({Finish, ReasoningDelta, Signature, MessageStart, Error})
_json_line = msgspec.json.Encoder().encode
_DEFAULTS = StreamConfig()


class Limits(msgspec.Struct, frozen=True, kw_only=True):
    """The time limits of one call, in seconds; ``None`` switches one off."""

    ttfb_timeout: float | None = _DEFAULTS.ttfb_timeout
    stall_timeout: float | None = _DEFAULTS.stall_timeout
    total_timeout: float | None = _DEFAULTS.total_timeout
    send_timeout: float | None = _DEFAULTS.send_timeout
    heartbeat_interval: float | None = _DEFAULTS.heartbeat_interval


class StreamGuard:
    """TTFB/stall/total timeouts, heartbeats, disconnect cancellation and the close record.

    ``overrides`` maps ``"provider"`` or ``"provider/model"`` (the target's upstream model)
    to a mapping of any of ``ttfb_timeout``, ``stall_timeout``, ``total_timeout``,
    ``send_timeout``, ``heartbeat_interval``; the more specific wins, key by key.  A client may set its own
    TTFB limit with the ``x-rotator-ttfb-timeout`` header (seconds), capped at
    ``max_ttfb_timeout`` (default: the configured TTFB limit, so the header can only
    shorten it).  ``close_log`` is a path that gets one JSON line per generation response.
    """

    def __init__(
        self,
        app: App,
        *,
        ttfb_timeout: float | None = _DEFAULTS.ttfb_timeout,
        stall_timeout: float | None = _DEFAULTS.stall_timeout,
        total_timeout: float | None = _DEFAULTS.total_timeout,
        send_timeout: float | None = _DEFAULTS.send_timeout,
        heartbeat_interval: float | None = _DEFAULTS.heartbeat_interval,
        keepalive_before_first_event: bool = _DEFAULTS.keepalive_before_first_event,
        max_ttfb_timeout: float | None = _DEFAULTS.max_ttfb_timeout,
        overrides: Mapping[str, Mapping[str, float | None]] | None = None,
        close_log: str | os.PathLike[str] | None = _DEFAULTS.close_log,
        max_body: int = DEFAULT_MAX_BODY,
    ) -> None:
        self.app = app
        self.limits = Limits(
            ttfb_timeout=_seconds("ttfb_timeout", ttfb_timeout),
            stall_timeout=_seconds("stall_timeout", stall_timeout),
            total_timeout=_seconds("total_timeout", total_timeout),
            send_timeout=_seconds("send_timeout", send_timeout),
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
            # Made by a layer above, as a rule: then no coroutine is needed to find it.
            exchange = scope.get(SCOPE_KEY) or await Exchange.of(
                scope, receive, max_body=self.max_body
            )
        except GatewayError as error:
            await send_error(send, None, error)
            return
        try:
            limits, source = self.resolve(exchange)
        except GatewayError as error:
            exchange.current.error = error
            await send_error(send, exchange.protocol, error)
            return
        early = False
        if self.keepalive_before_first_event:
            try:
                await ensure_request(scope, receive, max_body=self.max_body)
            except GatewayError:
                pass  # the inner app answers it in the client's protocol
            early = _streams_sse(exchange)
        if exchange.recording:
            exchange.record(
                "stream_guard.limits",
                ttfb=limits.ttfb_timeout,
                stall=limits.stall_timeout,
                total=limits.total_timeout,
                send=limits.send_timeout,
                heartbeat=limits.heartbeat_interval,
                source=source,
            )
        guarded = _GuardedCall(exchange, limits, send, early)
        scope[DISCONNECT_WATCHED] = True  # this layer cancels the inner app on disconnect
        try:
            await guarded.run(self.app, scope, receive)
        finally:
            close = guarded.close_record()
            exchange.current.close_record = close
            if exchange.recording:
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
                    await append_line(self.close_log, line + b"\n")

    def resolve(self, exchange: Exchange) -> tuple[Limits, str]:
        """The limits for this call: global, then the target's provider, then its
        ``provider/model``, then the client's TTFB header.  Raises ``GatewayError``
        (bad_request) for a header that is not a positive number of seconds."""
        limits, source = self.limits, "global"
        target = exchange.current.target
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


# Where one call's response stands.  It moves forward only, and to "stopped" from any phase:
# "held": nothing went out yet (the inner app's start, if any, is held here); "committed":
# the start went out, body messages follow; "ended": the last body message went out, the
# client has the whole response; "stopped": this layer cancelled the inner app, nothing more
# goes out.  Strings typed as a Literal (mypy checks each one) rather than an Enum: the call
# tests its phase on every message, and on Python 3.11 every Enum member lookup goes through
# the metaclass's __getattr__.
_Phase = Literal["held", "committed", "ended", "stopped"]


class _Deadline:
    """The call's time limits on one loop timer (see the module docstring): ``ttfb_timeout``
    until the first body message, ``stall_timeout`` from the end of each message to the
    next, ``send_timeout`` while the client takes one, ``total_timeout`` over all.  The same
    timer tells the heartbeat check when it is due.

    A message only notes when the send or the wait began (``began``) and which it is
    (``in_send``); the timer works out which deadline that makes when it fires, and
    re-arms itself when the deadline has moved on.  ``on_expired`` gets the kind of the
    deadline that passed (``ttfb``, ``stall``, ``send`` or ``total``)."""

    __slots__ = (
        "began",
        "check_at",
        "clock",
        "in_send",
        "kind",
        "loop",
        "on_check",
        "on_expired",
        "send_limit",
        "stall",
        "timer",
        "timer_at",
        "total",
        "wait_kind",
        "wait_limit",
    )

    def __init__(
        self,
        limits: Limits,
        now: float,
        loop: asyncio.AbstractEventLoop,
        on_expired: Callable[[str], None],
        on_check: Callable[[], None],
    ) -> None:
        self.loop = loop
        self.clock = loop.time
        # inf when off: ``now + inf`` is a deadline that never comes, with no test for None.
        # (A limit is a positive number or None, so ``or`` only ever replaces None.)
        self.stall = limits.stall_timeout or math.inf
        self.send_limit = limits.send_timeout or math.inf
        self.total = now + (limits.total_timeout or math.inf)
        # What limits the wait for the next body message: ttfb for the first, then stall.
        self.wait_limit = limits.ttfb_timeout or math.inf
        self.wait_kind = "ttfb"
        self.on_expired: Callable[[str], None] | None = on_expired
        self.on_check: Callable[[], None] | None = on_check
        self.began = now  # of the wait for the next body message, or of its send
        self.in_send = False  # the client is taking a message
        self.kind = "ttfb"  # of the deadline last worked out
        self.check_at = math.inf  # when the heartbeat check is due (inf: not asked for)
        self.timer: asyncio.TimerHandle | None = None
        self.timer_at = math.inf

    def start(self) -> None:
        """The call began: the timer armed for its first deadline."""
        self._rearm(self.began)

    def waiting(self, now: float) -> None:
        """From ``now`` the next body message is awaited (a message went out): the first
        within ``ttfb_timeout``, every later one within ``stall_timeout``."""
        self.began = now
        self.in_send = False
        # The timer is armed no later than this wait's deadline already, unless the wait's
        # limit just shrank (stall_timeout below ttfb_timeout, after the first message):
        # deadlines only move later from one message to the next, and the timer is never
        # armed further than one send_timeout past a write.
        if now + self.wait_limit < self.timer_at:
            self._rearm(now)

    def sending(self, now: float) -> None:
        """A body message is handed to the client from ``now``: the stall clock stops and the
        send clock runs; the total deadline stays.  The timer works out which comes first."""
        self.began = now
        self.in_send = True
        self.wait_limit, self.wait_kind = self.stall, "stall"  # the first one came

    def check(self, at: float) -> None:
        """Have ``on_check`` called at ``at``, unless a check is already due."""
        if self.check_at == math.inf and self.on_check is not None:  # not stopped
            self.check_at = at
            if at < self.timer_at:
                self._arm(at)

    def stop(self) -> None:
        """The call is over: the timer off, and the callbacks let go of (they are the call's
        own methods, and would keep it in a reference cycle)."""
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        self.on_expired = self.on_check = None

    def _due(self) -> float:
        """The deadline now in force, its kind noted in ``kind``."""
        if self.in_send:
            at, kind = self.began + self.send_limit, "send"
        else:
            at, kind = self.began + self.wait_limit, self.wait_kind
        if self.total <= at:
            at, kind = self.total, "total"
        self.kind = kind
        return at

    def _rearm(self, now: float) -> None:
        """Arm the timer for the deadline in force or the heartbeat check, whichever comes
        first, and never further than one send_timeout ahead: a send that begins later has
        a later deadline, so the timer sees it without being re-armed for it (see the module
        docstring).  A time later than the timer is armed for leaves it alone: it re-arms
        itself when it fires."""
        at = min(self._due(), self.check_at, now + self.send_limit)
        if at < self.timer_at:  # not inf: something to wait for
            self._arm(at)

    def _arm(self, at: float) -> None:
        """Re-arm the timer for ``at``, sooner than it is armed for (the callers see to that)."""
        if self.timer is not None:
            self.timer.cancel()
        self.timer = self.loop.call_at(at, self._fire)
        self.timer_at = at

    def _fire(self) -> None:
        self.timer = None
        self.timer_at = math.inf
        on_expired, on_check = self.on_expired, self.on_check
        if on_expired is None or on_check is None:
            return  # stopped
        now = self.clock()
        if now >= self._due():
            on_expired(self.kind)
            return
        if now >= self.check_at:
            self.check_at = math.inf
            on_check()
        self._rearm(now)


class _Heartbeats:
    """Heartbeats while a committed SSE response is idle, and the early commit
    (``keepalive_before_first_event``).  Made only for a call that may need them (an SSE
    response committed with a ``heartbeat_interval``, or the early commit asked for): a
    plain response never has any.  The call's timer says when a check is due; only a
    heartbeat that is due makes a task to send it, and the call's send lock is made with
    the first one: until then the inner app is the only sender."""

    __slots__ = ("early", "early_tried", "interval", "task")

    def __init__(self, interval: float, early: bool) -> None:
        self.interval = interval
        self.early = early  # may commit before the first event
        self.early_tried = False
        self.task: asyncio.Task[None] | None = None

    def check(self, call: _GuardedCall) -> None:
        """Is a heartbeat (or the early commit) due?"""
        phase = call.phase
        if phase == "ended" or phase == "stopped" or self.task is not None:
            return
        interval = self.interval
        if phase == "held":
            if self.early and not self.early_tried:
                self.early_tried = True
                self._start(call)
            return  # otherwise heartbeats start at commit
        if not call.sse:
            return
        now = call.clock()
        due = call.last_write + interval
        if now < due:
            call.deadline.check(due)
        elif call.sending or not call.at_boundary:
            # A send is under way (what it sends resets the clock), or a foreign app is
            # inside an event: not now.
            call.deadline.check(now + interval)
        else:
            self._start(call)

    def committed(self, call: _GuardedCall) -> None:
        """The SSE response was committed: heartbeats from now on (the task sending the
        early commit checks again when it is done)."""
        if self.task is None:
            call.deadline.check(call.clock() + self.interval)

    async def stop(self) -> None:
        task = self.task
        if task is not None:
            # Let go of it first: a task cancelled before it began keeps its error, whose
            # traceback holds the call, and a reference from here would close the cycle.
            self.task = None
            await _watch.stop(task)

    def _start(self, call: _GuardedCall) -> None:
        if call.lock is None:
            call.lock = asyncio.Lock()  # from now on every send takes it
        self.task = _watch.start(self._run(call))

    async def _run(self, call: _GuardedCall) -> None:
        interval = self.interval
        assert call.lock is not None
        try:
            async with call.lock:
                if call.phase == "ended" or call.phase == "stopped":
                    return
                if call.phase == "held":
                    await self._commit_early(call)
                elif call.clock() >= call.last_write + interval and call.at_boundary:
                    await self._beat(call)  # else something went out while we waited
        finally:
            self.task = None
        if call.phase == "committed":
            call.deadline.check(call.last_write + interval)

    async def _commit_early(self, call: _GuardedCall) -> None:
        """No first event after one interval: commit with a 200 stream (ours, or the inner
        app's when its headers are in) and a heartbeat the layers above will pass on."""
        start = call.held_start
        if start is not None and not _is_stream_start(start):
            return  # an error response is on its way; it needs no keepalive
        call.sse = True
        if start is None:
            call.early = True
            call.held_start = {
                "type": "http.response.start",
                "status": 200,
                "headers": list(SSE_HEADERS),
            }
        call.exchange.record("stream_guard.early_commit", own_start=start is None)
        await self._beat(call)

    async def _beat(self, call: _GuardedCall) -> None:
        protocol = call.exchange.protocol  # known by now: dispatch sets it before it answers
        body = get_codec(protocol).heartbeat if protocol is not None else _COMMENT
        message: Message = {"type": "http.response.body", "body": body, "more_body": True}
        if call.twins:
            # No content: a routing layer still holding a prelude keeps holding it.  Before
            # the first event (early commit) there is no twin, which makes it commit.
            message[EVENT] = []
        call.stats.heartbeats += 1
        await call.send_out((message,), heartbeat=True)


class _CloseStats:
    """What the close record counts, and what it notes of the events that went out."""

    __slots__ = (
        "bytes",
        "ended_at",
        "events",
        "first_event_at",
        "heartbeats",
        "last_type",
        "reasoning_seen",
        "response_id",
        "started",
        "status",
        "terminal_sent",
    )

    def __init__(self, started: float) -> None:
        self.started = started
        self.first_event_at: float | None = None
        self.ended_at: float | None = None
        self.events = 0
        self.bytes = 0
        self.heartbeats = 0
        # The last event's class: its tag (the record's ``last_event``) is looked up once, at
        # the end, rather than for every event.
        self.last_type: type[Any] | None = None
        self.terminal_sent = False
        self.reasoning_seen = False
        self.response_id: str | None = None
        self.status: int | None = None  # the inner app's

    def note(self, events: list[Any]) -> GatewayError | None:
        """Count ``events`` (never empty) and note what they tell; the first in-band error
        among them."""
        self.events += len(events)
        self.last_type = type(events[-1])
        error: GatewayError | None = None
        for event in events:
            # By exact type (the unified event classes are not subclassed): most events are
            # content, which tells nothing here, and this runs for every event.
            kind = type(event)
            if kind not in _NOTED:
                continue
            if kind is Finish:
                self.terminal_sent = True
            elif kind is ReasoningDelta or kind is Signature:
                self.reasoning_seen = True
            elif kind is MessageStart:
                self.response_id = self.response_id or event.id
            elif isinstance(event.error, GatewayError):  # an Error
                error = error or event.error
        return error

    def record(
        self,
        exchange: Exchange,
        reason: str | None,
        error: GatewayError | None,
        attempts_before: int,
        end: float,
    ) -> StreamClose:
        if reason is None:
            reason = "upstream_error" if error is not None else "completed"
        made = len(exchange.attempts) > attempts_before
        attempt = exchange.attempts[-1] if made else None
        target = exchange.current.target
        credential = exchange.current.credential
        last_type = self.last_type
        close = StreamClose(
            reason=reason,
            events=self.events,
            bytes=self.bytes,
            last_event=last_type.__struct_config__.tag if last_type is not None else None,
            terminal_sent=self.terminal_sent,
            reasoning_seen=self.reasoning_seen,
            error=f"{error.kind}: {error.message}" if error is not None else None,
            heartbeats=self.heartbeats,
            request_id=exchange.request_id,
            provider=target.provider.name if target is not None else None,
            model=target.model if target is not None else exchange.model,
            credential=credential.id if credential is not None else None,
            attempt=attempt.number if attempt is not None else None,
            response_id=self.response_id or exchange.response_id,
            upstream_status=attempt.status if attempt is not None else self.status,
        )
        # Timing and usage set apart: Python compiles a call with more than fifteen keywords
        # into one that builds a dict of them first, and a dict of keywords takes msgspec's
        # slow path, which matches each one by name.
        first = self.first_event_at
        close.ttfb = first - self.started if first is not None else None
        close.duration = end - self.started
        close.usage = exchange.usage
        close.cost = exchange.cost
        return close


class _GuardedCall:
    """One call: its phase, what is held, the send path, and how it ended."""

    __slots__ = (
        "at_boundary",
        "attempts_before",
        "body_given",
        "client_gone",
        "clock",
        "deadline",
        "disconnected",
        "early",
        "error",
        "escaped",
        "exchange",
        "heartbeats",
        "held_start",
        "inner_start",
        "last_write",
        "limits",
        "lock",
        "own_stream",
        "phase",
        "reason",
        "rest_dropped",
        "scope",
        "send",
        "sending",
        "sse",
        "stats",
        "stream_before",
        "timed_out",
        "twins",
    )

    def __init__(self, exchange: Exchange, limits: Limits, send: Send, early: bool) -> None:
        self.exchange = exchange
        self.limits = limits
        self.send = send
        self.phase: _Phase = "held"
        self.attempts_before = len(exchange.attempts)
        # The client's stream this call's inner app opens replaces this one; if none does,
        # this layer opens its own (``own_stream``) and notes what it sends.
        self.stream_before = exchange.stream
        self.own_stream: ClientStream | None = None
        loop = asyncio.get_running_loop()
        self.clock = loop.time
        now = self.clock()
        self.stats = _CloseStats(now)
        self.deadline = _Deadline(limits, now, loop, self._on_expired, self._check_heartbeat)
        self.heartbeats: _Heartbeats | None = None
        if early:
            assert limits.heartbeat_interval is not None  # StreamGuard's __init__ checks
            self.heartbeats = _Heartbeats(limits.heartbeat_interval, early=True)
        self.scope = _watch.cancel_scope()
        self.timed_out: str | None = None  # the deadline kind that cancelled the call
        # Only heartbeats make a second sender: the lock is made with the first one.
        # ``sending`` tells a heartbeat check that a send is under way.
        self.lock: asyncio.Lock | None = None
        self.sending = False
        self.last_write = now
        self.held_start: Message | None = None
        self.inner_start: Message | None = None  # the inner app's start after an early commit
        # After an early commit the inner app's error response went out in-band: the rest of
        # it is dropped.
        self.rest_dropped = False
        self.early = False  # committed with our own start, before the inner app answered
        self.sse = False
        self.twins = False
        self.at_boundary = True
        self.reason: str | None = None
        self.error: GatewayError | None = None
        self.escaped: Exception | None = None
        # The inner app's receive: the body once, then the wait for the client to leave.
        self.body_given = False
        self.client_gone = False
        self.disconnected: anyio.Event | None = None  # made when the inner app waits for it

    # --- the run ----------------------------------------------------------------------------

    async def run(self, app: App, scope: Scope, receive: Receive) -> None:
        failure: Exception | None = None
        watcher = _watch.start(_watch.watch_disconnect(receive, self._on_disconnect))
        try:
            started = self.stats.started
            self.deadline.start()
            heartbeats = self.heartbeats
            if heartbeats is not None:
                # Heartbeats may have to commit before the first event: they are due now.
                # Otherwise they start at commit, and only for a stream, so a plain request
                # never has them.
                self.deadline.check(started + heartbeats.interval)
            with self.scope:
                try:
                    await app(scope, self._receive, self._send)
                except Exception as exc:
                    # Handled after the helpers are stopped, so callers see the exception
                    # itself, never a group around it.
                    failure = exc
        finally:
            # The timer off, then the heartbeats and the watcher ended (and waited for:
            # nothing this call started outlives it).
            watcher.cancel()  # at once: a disconnect from now on changes nothing
            self.deadline.stop()
            try:
                if self.heartbeats is not None:
                    await self.heartbeats.stop()
            finally:
                await _watch.stop(watcher)
        self.stats.ended_at = self.clock()
        timeout: str | None = None
        if self.scope.cancelled_caught and self.phase != "stopped":
            timeout = f"{self.timed_out or self.deadline.kind}_timeout"
            self.reason = self.reason or timeout
            self.exchange.record("stream_guard.timeout", limit=timeout)
        if failure is not None or timeout is not None or self.phase != "ended":
            # A response that went out whole, with nothing failed, needs nothing more.
            await self._finish(failure, timeout)
        if self.escaped is not None:
            raise self.escaped
        if failure is not None and not isinstance(failure, GatewayError):
            raise failure

    async def _finish(self, failure: Exception | None, timeout: str | None) -> None:
        """Whatever the client still needs once the inner app has stopped."""
        phase = self.phase
        if phase == "stopped":
            return  # the client is gone, or a layer above abandoned the attempt
        error: GatewayError | None = None
        if timeout is not None and self.reason == timeout:
            error = self._timeout_error(timeout)
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
        elif phase == "ended":
            return
        elif self.twins and self.sse and not self.stats.terminal_sent and self.error is None:
            error = premature_close()  # the inner app stopped short of a terminal event
        elif phase == "held" and self.held_start is None:
            error = GatewayError("server_error", "the inner app returned without a response")
            self.reason = "upstream_error"
        if error is not None:
            self.error = self.error or error
            self._mark_attempt(error)
        # What goes out now waits on the client like any send, and may not wait forever:
        # a client that stopped reading gets its connection closed instead.
        send_timeout = self.limits.send_timeout
        bound = send_timeout if send_timeout is not None else _CLOSING_WRITE
        with _watch.cancel_scope() as closing:
            closing.deadline = self.clock() + bound
            if phase != "held":
                await self._end_in_band(error)
            elif error is not None:
                await self._deliver_error_response(error)
            else:
                await self._end_in_band(None)  # the held start, and an empty end
        if closing.cancelled_caught:
            # The client did not take even the end: dropped, like a send_timeout.
            self.exchange.record("stream_guard.timeout", limit="closing_write")
            self.exchange.client_dropped = True

    # --- the inner app's receive and send ---------------------------------------------------

    async def _receive(self) -> Message:
        if not self.body_given:
            self.body_given = True
            return {"type": "http.request", "body": self.exchange.body, "more_body": False}
        if not self.client_gone:
            if self.disconnected is None:
                self.disconnected = anyio.Event()
            await self.disconnected.wait()
        return {"type": "http.disconnect"}

    async def _send(self, message: Message) -> None:
        if self.phase == "stopped" or self.rest_dropped:
            return
        if message["type"] != "http.response.body":
            await self._send_other(message)
            return
        now = self.clock()
        self.deadline.sending(now)
        stats = self.stats
        if stats.first_event_at is None:
            # The first body message: the start it follows says what the response is.
            stats.first_event_at = now
            if self.exchange.recording:
                self.exchange.record(
                    "stream_guard.first_event", ttfb=now - stats.started, early=self.early
                )
            if self.inner_start is not None and not _is_stream_start(self.inner_start):
                await self._inner_error_in_band(message)
                return
            start = self.held_start
            if start is not None and start.get("status", 200) >= 400 and self.error is None:
                self.error = start.get(ERROR) or classify(start["status"])
                self.reason = self.reason or "upstream_error"
        events = message.get(EVENT)
        if events is not None:
            self.twins = True
            if events:
                error = stats.note(events)
                if error is not None:
                    self._upstream_error(error)
        elif self.sse and message.get("body"):
            stats.events += 1  # a foreign app's stream: one message, one event as far as we know
        if self.own_stream is not None:
            self.own_stream.sent(message.get("body", b""), events)
        more = message.get("more_body", False)
        out: tuple[Message, ...] = (message,)
        if not more and self.twins and self.sse and not stats.terminal_sent and self.error is None:
            # The inner app (not dispatch, which says so itself) ended its stream without a
            # terminal event.
            error = premature_close()
            out = (self._error_message(error), message)
            stats.note(out[0][EVENT])
            self._upstream_error(error)
            self._mark_attempt(error)
        await self.send_out(out)
        if self.phase == "stopped":
            # Our scope is cancelled (a failed send): this unwinds the inner app from here.
            await anyio.lowlevel.checkpoint()
        if more:
            self.deadline.waiting(self.last_write)  # just set, when the send ended

    async def _send_other(self, message: Message) -> None:
        """The inner app's start (held), or a message that is neither start nor body."""
        if message["type"] == "http.response.start":
            self.stats.status = message.get("status")
            if self.early:
                self.inner_start = message
            else:
                self.held_start = message
                self.sse = is_event_stream(message)
                if self.sse and self.exchange.stream is self.stream_before:
                    # No layer below opened the client's stream (a foreign app): this one
                    # notes what goes out, so an error can continue it.
                    self.own_stream = ClientStream.open(self.exchange)
            return
        await self.send_out((message,))
        if self.phase == "stopped":
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
        self.rest_dropped = True

    # --- the one send path ------------------------------------------------------------------

    async def send_out(self, messages: Sequence[Message], *, heartbeat: bool = False) -> None:
        """Send to the client: the held start first, then ``messages``, moving the phase on.
        One sender at a time: once heartbeats exist, every send takes the lock (a heartbeat
        is sent by the task that holds it already).  A failed write never raises here; it
        stops the call instead."""
        lock = None if heartbeat else self.lock
        if lock is not None:
            await lock.acquire()
        self.sending = True
        try:
            if self.held_start is not None:
                messages = (self.held_start, *messages)
                self.held_start = None
            for message in messages:
                if self.phase == "stopped":
                    return
                kind = message["type"]
                if kind == "http.response.start":
                    self.phase = "committed"
                    if self.sse:
                        self._start_heartbeats()
                try:
                    await self.send(message)
                except _WRITE_ERRORS:
                    self._stop("client_write_failed")
                    return
                except Exception as exc:
                    self.escaped = exc
                    self._stop(None)
                    return
                if kind == "http.response.body":
                    body = message.get("body", b"")
                    if body:
                        self.stats.bytes += len(body)
                        if not heartbeat:
                            self.at_boundary = body.endswith(_BOUNDARIES)
                    if not message.get("more_body", False) and self.phase == "committed":
                        self.phase = "ended"
            self.last_write = self.clock()
        finally:
            self.sending = False
            if lock is not None:
                lock.release()

    def _stop(self, reason: str | None) -> None:
        if reason is not None and (self.reason is None or reason == "client_write_failed"):
            self.reason = reason
        self.phase = "stopped"
        self.scope.cancel()

    async def _end_in_band(self, error: GatewayError | None) -> None:
        """After commit: the in-band error event (when the protocol has one and the response
        is a stream), then the end of the body."""
        if self.phase == "ended":
            return
        messages: list[Message] = []
        if error is not None and self.sse:
            message = self._error_message(error)
            if message["body"]:
                messages.append(message)
                self.stats.note(message[EVENT])
                self._upstream_error(error)
        messages.append({"type": "http.response.body", "body": b"", "more_body": False})
        await self.send_out(messages)

    async def _deliver_error_response(self, error: GatewayError) -> None:
        """Before commit: the whole error response, in the client's protocol."""
        self.held_start = None
        sent: list[Message] = []

        async def collect(message: Message) -> None:
            sent.append(message)

        await send_error(collect, self.exchange.protocol, error)
        await self.send_out(sent)

    def _error_message(self, error: GatewayError) -> Message:
        """The in-band error event that continues the client's stream (an empty body when
        the protocol is unknown: a foreign app's stream then only gets its end)."""
        stream = self.exchange.stream
        if stream is None or stream is self.stream_before:
            # Nothing below opened the stream (committed early, with only heartbeats sent).
            stream = self.own_stream = ClientStream.open(self.exchange)
        return stream.error_message(error)

    # --- what the helpers call: disconnect watch and timer ----------------------------------

    def _on_disconnect(self) -> None:
        if self.phase == "ended":
            return  # the whole response went out; the client leaving now changes nothing
        self.client_gone = True
        if self.disconnected is not None:
            self.disconnected.set()
        self._stop("client_disconnected")

    def _on_expired(self, kind: str) -> None:
        if kind == "send":
            # The client has not taken a message for send_timeout: it is dropped, as if it
            # had left (nothing more is written to it), and the upstream closed.
            self.exchange.record("stream_guard.timeout", limit="send_timeout")
            self.exchange.client_dropped = True
            self._stop("client_write_timeout")
            return
        self.timed_out = kind
        self.scope.cancel()

    def _check_heartbeat(self) -> None:
        # Only heartbeats ask the timer for a check, so they exist by now.
        assert self.heartbeats is not None
        self.heartbeats.check(self)

    def _start_heartbeats(self) -> None:
        """An SSE response was committed: it gets heartbeats from now on, if configured."""
        interval = self.limits.heartbeat_interval
        if interval is None:
            return
        if self.heartbeats is None:
            self.heartbeats = _Heartbeats(interval, early=False)
        self.heartbeats.committed(self)

    # --- bookkeeping ------------------------------------------------------------------------

    def _upstream_error(self, error: GatewayError) -> None:
        """An in-band error went out: the call's error, unless it had one, and its reason."""
        self.error = self.error or error
        if self.reason is None:
            self.reason = (
                "upstream_premature_close" if error.code == PREMATURE_CLOSE else "upstream_error"
            )

    def _timeout_error(self, reason: str) -> GatewayError:
        limits = self.limits
        target = self.exchange.current.target
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
        self.exchange.current.error = error
        if len(self.exchange.attempts) > self.attempts_before:
            self.exchange.attempts[-1].kind = error.kind

    def close_record(self) -> StreamClose:
        stats = self.stats
        # Not ended only when the run itself was interrupted (its caller cancelled).
        end = stats.ended_at if stats.ended_at is not None else self.clock()
        return stats.record(self.exchange, self.reason, self.error, self.attempts_before, end)


def _streams_sse(exchange: Exchange) -> bool:
    """A streamed request whose answer will be SSE: the client's codec says, for protocols
    whose clients may ask for another framing (``Codec.streams_sse``)."""
    request = exchange.request
    if request is None or not request.stream:
        return False
    protocol = exchange.protocol
    return protocol is None or get_codec(protocol).streams_sse(exchange.scope)


def _is_stream_start(start: Message) -> bool:
    return bool(start.get("status", 200) < 400 and is_event_stream(start))


def _seconds(name: str, value: float | None) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{name}: expected seconds as a number or None, got {value!r}")
    if not (value > 0 and math.isfinite(value)):
        raise ValueError(f"{name}: expected a positive number of seconds, got {value!r}")
    return float(value)
