"""The per-request ``Exchange``: what the layers know about one request, in
``scope["asgi_rotator"]``.

HTTP over ASGI stays the contract between layers; the exchange is the fast path beside it.
Whichever layer first needs it makes it with ``await Exchange.of(scope, receive)``, which
reads the body once and keeps it; inner layers get the body again from ``exchange.replay()``
(a fresh ``receive`` per attempt, so a layer that retries can call its inner app again).
Once a routing layer's attempt commits, no attempt follows, and ``body`` is let go (empty).

Response messages carry their unified twin beside the bytes:

* ``message[EVENT]`` on a streamed body message: the unified events it encodes (a list);
* ``message[RESPONSE]`` on a plain body message: the unified ``Response``, when a layer
  asked for it (``WANT_RESPONSE``) or the response was translated;
* ``message[ERROR]`` on the start or body message of an error: the ``GatewayError``.

Once a streamed response is committed, ``exchange.stream`` is the client's stream
(``answer.ClientStream``): what was sent, and the one way to continue it with an error.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from random import getrandbits
from typing import TYPE_CHECKING, Any, TypeAlias

import anyio
from msgspec import Struct, field

from ._types import Message, Receive, Scope
from .errors import GatewayError
from .unified import Request, Usage

if TYPE_CHECKING:
    from .answer import ClientStream
    from .providers import Credential, Target

__all__ = [
    "ATTEMPT_HOOK",
    "DISCONNECT_WATCHED",
    "ERROR",
    "EVENT",
    "KEY_NAME",
    "PRINCIPAL",
    "RECORD",
    "RESPONSE",
    "SCOPE_KEY",
    "WANT_RESPONSE",
    "Attempt",
    "CurrentAttempt",
    "Exchange",
    "Observe",
    "Pass",
    "Shape",
    "StreamClose",
]

SCOPE_KEY = "asgi_rotator"
# Set in the scope by a layer that owns ``receive`` and cancels the layers below it when the
# client disconnects (StreamGuard): inner layers then need no disconnect watcher of their own.
DISCONNECT_WATCHED = "asgi_rotator.disconnect_watched"
EVENT = "asgi_rotator.event"
# Set (true) in the scope, before the exchange is made, by whatever reads the transform passes
# (a tracing or logging middleware above the stack): ``Exchange.record`` keeps them only then.
RECORD = "asgi_rotator.record"
RESPONSE = "asgi_rotator.response"
# Set (true) in the scope, before the request reaches dispatch, by a layer that reads
# ``message[RESPONSE]`` (FieldCache, ResponsesState, Tracing).  Without it, a plain answer
# already in the client's protocol goes on as its bytes, with only its id and usage read
# (``Codec.response_id_and_usage``).  The whole parse, for a twin nobody read, was 3% of a
# served plain request's instructions (29,000 of 1,005,000; benchmarks.instructions --mode
# served), and what kept the goal "CPU per plain request <= 2x the passthrough's" at 2.00x
# rather than 1.94x.  A translated answer always has its twin.
WANT_RESPONSE = "asgi_rotator.want_response"
# Set in the scope by a tracing layer above: ``hook(exchange, attempt) -> [(name, value)]``,
# called by dispatch as each upstream attempt starts; the headers it returns (a W3C
# ``traceparent`` for the attempt's span) go out with that upstream request.  It must not
# raise.
ATTEMPT_HOOK = "asgi_rotator.on_attempt"
# Set in the scope by InboundKeys: the name of the inbound key the client presented (never
# the key), for the request log and the usage totals.
KEY_NAME = "asgi_rotator.key_name"
ERROR = "asgi_rotator.error"
# Set in the scope by whatever authenticated the client (InboundKeys): a fingerprint of its
# key, never the key.  Layers that keep state per client (ResponsesState) scope it by this.
PRINCIPAL = "asgi_rotator.principal"

DEFAULT_MAX_BODY = 32 * 1024 * 1024

# The per-attempt hooks a layer above dispatch may set (FieldCache does): ``Shape`` changes the
# provider-native request body dispatch built, for ``protocol``; ``Observe`` sees the
# provider-native answer (a decoded plain body, or each stream event's ``data`` text).
Shape: TypeAlias = Callable[[dict[str, Any], str], dict[str, Any]]
Observe: TypeAlias = Callable[[Any], None]

_monotonic = time.monotonic
_perf_counter = time.perf_counter


class Attempt(Struct, kw_only=True):
    """One try at one upstream: what the routing layers and tracing read."""

    number: int
    provider: str
    model: str
    credential: str | None = None  # credential id, never the key
    protocol: str | None = None
    started: float = 0.0  # time.monotonic()
    status: int | None = None
    kind: str | None = None  # the GatewayError kind when it failed
    duration: float | None = None
    ttfb: float | None = None
    usage: Usage | None = None  # as this attempt's provider reported it
    cost: float | None = None  # USD: the provider's figure, else the price table's; None unknown

    def charged(self) -> float | None:
        """What this attempt cost: its ``cost``; nothing for an attempt the provider refused
        (an error status, or no answer at all) without reporting usage; ``None`` when it is
        not known (an answer that started and broke off before its usage came)."""
        if self.cost is not None:
            return self.cost
        if self.usage is None and self.kind is not None:
            if self.status is None or self.status >= 400:
                return 0.0
        return None


class StreamClose(Struct, kw_only=True):
    """How a response stream ended, with what is needed to debug it."""

    reason: str
    events: int = 0
    bytes: int = 0
    last_event: str | None = None
    terminal_sent: bool = False
    reasoning_seen: bool = False
    error: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    # Correlation and timing (StreamGuard fills them; seconds, time.monotonic() based).
    request_id: str | None = None
    provider: str | None = None
    model: str | None = None
    credential: str | None = None  # credential id, never the key
    attempt: int | None = None
    response_id: str | None = None
    upstream_status: int | None = None
    ttfb: float | None = None
    duration: float | None = None
    heartbeats: int = 0
    # The response's usage (unified counts) and the request's cost in USD over all its
    # attempts, when known (docs/usage.md).
    usage: Usage | None = None
    cost: float | None = None


class CurrentAttempt(Struct, eq=False):
    """The attempt in progress (after the request: the last one): where it goes, with which
    key, in which upstream protocol, the hooks on it, how its stream closed, its error.

    The routing helper (``middleware.routing``) opens a fresh one for each call of the
    layers below, so nothing an attempt left is read by the next one and no layer resets a
    field by hand; the exchange starts with one for a request no routing layer handles,
    and a refusal before any routing is noted on it.  ``Attempt`` is the other thing: the
    record of one upstream call, kept in ``Exchange.attempts``.

    A ``Struct`` like the records beside it: one is made for every call of the layers below
    a routing layer, and a ``Struct`` is made without running Python code.  Compared by
    identity (``eq=False``): two attempts are never the same because their fields match.
    """

    # None: the layers below choose (dispatch: the model's first target).
    target: Target | None = None
    # None: the layers below choose.
    credential: Credential | None = None
    # Set by a layer above dispatch (FieldCache): ``shape(body, protocol)`` changes the
    # provider-native body dispatch built, for fields the unified request has no place for
    # (OpenAI Responses ``include``).  None: nothing to change.
    shape: Shape | None = None
    # Likewise: ``observe(data)`` sees the provider-native answer, the decoded body of a
    # plain response or each stream event's ``data`` text, before it is translated.  None:
    # nobody is looking.
    observe: Observe | None = None
    # Negotiated per provider by dispatch.
    upstream_protocol: str | None = None
    # StreamGuard's, when it ran.
    close_record: StreamClose | None = None
    # Why the attempt failed, or why the request did (a refusal before any attempt, or the
    # routing layers' final answer): what the request log and the span report.
    error: GatewayError | None = None

    def fresh(self, target: Target | None, credential: Credential | None = None) -> CurrentAttempt:
        """The next attempt, on ``target`` with ``credential``: nothing of this one but its
        hooks, which a layer above the routing layer set for every attempt below it."""
        return CurrentAttempt(target, credential, self.shape, self.observe)

    def close(self) -> None:
        """The attempt's call has returned: let go of its hooks.  They are of no more use,
        and a layer's hook may hold the exchange (FieldCache's do), which holds this
        attempt: a cycle that only the garbage collector would free (``Exchange.detach``).
        """
        self.shape = self.observe = None

    def __repr__(self) -> str:
        target = self.target.name if self.target is not None else None
        credential = self.credential.id if self.credential is not None else None
        return f"<CurrentAttempt target={target!r} credential={credential!r}>"


class Pass(Struct, array_like=True):
    name: str
    at: float  # time.perf_counter()
    data: dict[str, Any]


class Exchange:
    __slots__ = (
        "_receive",
        "attempts",
        "body",
        "client_dropped",
        "current",
        "model",
        "passes",
        "protocol",
        "recording",
        "request",
        "request_id",
        "response_id",
        "scope",
        "started",
        "stream",
        "usage",
    )

    def __init__(self, scope: Scope, body: bytes = b"", receive: Receive | None = None) -> None:
        self.scope = scope
        self.body = body
        self._receive = receive
        self.protocol: str | None = None  # the client's protocol
        self.request: Request | None = None  # parsed once, mutated in place by the layers
        self.model: str | None = None  # the model name as the client asked for it
        # The attempt in progress, opened afresh by the routing helper for each call of the
        # layers below (``middleware.routing.open_attempt``); after the request, the last.
        self.current = CurrentAttempt()
        self.attempts: list[Attempt] = []  # every upstream call's record, in order
        self.usage: Usage | None = None
        # Set by the layer that gave up on the client (StreamGuard: it stopped reading past
        # send_timeout): layers above write nothing more, and leave the unfinished response
        # for the server to cut, which closes the connection.
        self.client_dropped = False
        self.response_id: str | None = None
        self.stream: ClientStream | None = None  # the client's stream, once one is committed
        # A correlation id, not a secret: the PRNG (reseeded in forked workers) is enough,
        # and a tenth of the cost of a system call per request.
        self.request_id = f"req_{getrandbits(64):016x}"
        self.started = _monotonic()
        # The transform passes, when someone reads them (``RECORD``); otherwise every request
        # would keep a dict per pass (2 KiB for a stream) for nobody.
        self.recording: bool = bool(scope.get(RECORD, False))
        self.passes: list[Pass] = []

    @classmethod
    async def of(
        cls, scope: Scope, receive: Receive, *, max_body: int = DEFAULT_MAX_BODY
    ) -> Exchange:
        """The request's exchange, made (reading the whole body) if no layer made it yet.

        A body over ``max_body`` raises ``GatewayError`` with status 413 before it is all read.
        """
        exchange = scope.get(SCOPE_KEY)
        if exchange is not None:
            return exchange  # type: ignore[no-any-return]
        body = await read_body(receive, max_body)
        exchange = scope[SCOPE_KEY] = cls(scope, body, receive)
        return exchange

    @property
    def cost(self) -> float | None:
        """The request's cost in USD: the sum over its attempts, ``None`` if any attempt's
        cost is unknown (or there was none)."""
        if not self.attempts:
            return None
        total = 0.0
        for attempt in self.attempts:
            charged = attempt.charged()
            if charged is None:
                return None
            total += charged
        return total

    def replay(self) -> Receive:
        """A ``receive`` that gives the body once, then passes through (disconnects)."""
        return _Replay(self, self._receive)

    def detach(self) -> None:
        """Let go of the request once it is answered: ``scope`` becomes a copy without this
        exchange, and the server's ``receive`` is dropped.

        The scope holds the exchange and the exchange held the scope (and ``receive``,
        whose server object holds the scope too): a cycle that left every finished request,
        all its passes and messages included, to the garbage collector rather than to
        reference counting.  Under load those collections cost more than all the layers
        together, so the outermost layer that made the exchange calls this on its way
        out; what reads the exchange after that (a tracing or logging middleware above)
        still finds everything on it, and the scope's entries in the copy.
        """
        scope = self.scope
        if scope.get(SCOPE_KEY) is not self:
            return  # let go of already: the layer that made it, then the stack, both call this
        copy = self.scope = dict(scope)  # C-speed copy, then the one key out
        del copy[SCOPE_KEY]
        self._receive = None
        self.current.close()  # closed already if a routing layer opened it

    def record(self, name: str, **data: Any) -> None:
        """Note a transform pass (``protocol.parse``, ``dispatch.translate_request`` ...), if
        the exchange is ``recording``.  What runs on every request checks ``recording``
        first: the call's keyword arguments are a dict made whether kept or not."""
        if self.recording:
            self.passes.append(Pass(name, _perf_counter(), data))

    def __repr__(self) -> str:
        return f"<Exchange {self.request_id} {self.protocol} model={self.model!r}>"


class _Replay(Struct, eq=False):
    """``Exchange.replay``: an object rather than a closure, which would be a function, three
    cells and a tuple for each routing layer of every request; a ``Struct``, made without
    running Python code, as one is made for every attempt of every layer that replays."""

    exchange: Exchange
    receive: Receive | None
    body_sent: bool = False

    async def __call__(self) -> Message:
        if not self.body_sent:
            self.body_sent = True
            return {"type": "http.request", "body": self.exchange.body, "more_body": False}
        if self.receive is not None:
            return await self.receive()
        # No client to hear from: wait like a connected one would, rather than report a
        # disconnect that would cancel the request.
        await anyio.sleep_forever()
        raise AssertionError("unreachable")


async def read_body(receive: Receive, max_body: int = DEFAULT_MAX_BODY) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            break
        chunk = message.get("body", b"")
        if chunk:
            size += len(chunk)
            if size > max_body:
                raise GatewayError(
                    "bad_request",
                    f"request body exceeds the limit of {max_body} bytes",
                    status=413,
                )
            chunks.append(chunk)
        if not message.get("more_body", False):
            break
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)
