"""What the two routing layers, ``FallbackRouter`` and ``CooldownRetry``, share.

* ``routed_exchange``: the exchange with its unified request, made here when no layer above
  made it, so that each routing layer works alone around any app (``parsed_exchange``: the
  usual case, a layer above made it).
* ``AttemptRunner``: one layer's attempts for one request.  ``open`` moves the attempts to
  a target with its request; ``run`` is one attempt there (and moves to a target itself
  when given the request): it opens a fresh ``exchange.current`` with its target and
  credential, calls the inner app held (``Held``) until the attempt commits or fails, and
  closes it: a failure is noted on it, an attempt a foreign app made without recording it
  is recorded, and a response that neither failed nor committed goes out as it was.  The
  response start goes out with the attempt count (``x-rotator-attempts``) when the layer
  is the outermost router.  ``answer`` and ``fail`` are how a layer ends without a
  committed attempt.
* ``TargetParams`` / ``target_request``: a target's ``params`` applied to a copy of the
  request.
* ``FAILOVER_KEY``: how the fallback layer tells the layers below, per target, for which
  error kinds it has another target to try now.  A layer below that meets one of them does
  not wait for a key or retry the key that just failed: the next target answers sooner
  (docs/routing.md, "A failing target is never waited for").

Nothing here is a layer; both layers import it, and neither imports the other.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

import msgspec

from .._types import App, Message, Receive, Scope, Send
from ..answer import ensure_request, send_error
from ..errors import GatewayError
from ..exchange import ERROR, SCOPE_KEY, Attempt, CurrentAttempt, Exchange
from ..providers import Credential, Target
from ..routes import match_route, route_path
from ..unified import Request
from ._held import Abandon, Held, run_held

__all__ = [
    "ATTEMPTS_HEADER",
    "FAILOVER_KEY",
    "NO_FAILOVER",
    "Abandon",
    "AttemptRunner",
    "Held",
    "RoutingLayer",
    "TargetParams",
    "failover",
    "open_attempt",
    "parsed_exchange",
    "routed_exchange",
    "run_held",
    "send_counted_error",
    "target_request",
]


ATTEMPTS_HEADER = b"x-rotator-attempts"
# The error kinds for which a routing layer above has another target to try now, set in the
# scope before each target's attempt (a frozenset; absent or empty: nobody to hand over to).
FAILOVER_KEY = "asgi_rotator.failover"
NO_FAILOVER: frozenset[str] = frozenset()
# The routing layer that writes the attempt count for the request: the outermost one.  What a
# layer below it writes would be replaced on the way out (every start passes the outer hold),
# so a layer below leaves the header alone.
_COUNTER_KEY = "asgi_rotator.attempts_counter"

# Request fields a target's params may not override: they are the conversation itself, or
# decided by the client and the layers (model comes from the target).
_FIXED_FIELDS = frozenset({"model", "messages", "stream", "origin", "extra"})
_REQUEST_FIELDS = frozenset(f.name for f in msgspec.structs.fields(Request)) - _FIXED_FIELDS


def failover(scope: Scope) -> frozenset[str]:
    """The error kinds for which a routing layer above will try another target now."""
    kinds: frozenset[str] = scope.get(FAILOVER_KEY, NO_FAILOVER)
    return kinds


def parsed_exchange(scope: Scope) -> Exchange | None:
    """The exchange, when a layer above made it and parsed the request: where a routing
    layer usually sits (under ``ProtocolNegotiation``), nothing to read or answer, and no
    coroutine for it.  ``None``: ask ``routed_exchange``."""
    exchange: Exchange | None = scope.get(SCOPE_KEY)
    if exchange is not None and exchange.request is not None and scope["type"] == "http":
        return exchange
    return None


async def routed_exchange(app: App, scope: Scope, receive: Receive, send: Send) -> Exchange | None:
    """The exchange with its unified request, for a generation request; ``None`` when the
    request was not one (any other scope, lifespan included, or route: passed on to ``app``
    as it came) or was bad (answered with an error)."""
    if scope["type"] != "http":
        await app(scope, receive, send)
        return None
    exchange = parsed_exchange(scope)
    if exchange is not None:
        return exchange
    route = match_route(route_path(scope))
    if route is None or route.endpoint != "generate" or scope["method"] not in route.allowed:
        await app(scope, receive, send)  # not consumed: pass it on as it came
        return None
    try:
        return await ensure_request(scope, receive)
    except GatewayError as error:
        exchange = scope.get(SCOPE_KEY)
        protocol = exchange.protocol if exchange else None
        await send_counted_error(send, exchange, error, protocol=protocol or route.protocol)
        return None


class RoutingLayer(Protocol):
    """What ``AttemptRunner`` needs of a routing layer: the inner app each attempt calls."""

    app: App


class AttemptRunner:
    """One routing layer's attempts for one request, each held until it commits.

    ``layer`` is the routing layer (its ``app`` is what each attempt calls).  The attempt
    count goes into the response start only when no routing layer above counts already:
    the outermost one knows the whole story.
    """

    __slots__ = ("app", "counts", "entered", "exchange", "floor", "send")

    def __init__(self, layer: RoutingLayer, scope: Scope, exchange: Exchange, send: Send) -> None:
        self.app: App = layer.app
        self.exchange = exchange
        self.send = send
        # The attempt the layer was entered with: the hooks on it, set by a layer above,
        # carry into each attempt this layer opens.
        self.entered = exchange.current
        # The number of attempts before the current one: an inner app that does not record
        # its attempts (a foreign app) sends its start before the layer can note it.
        self.floor = 0
        # Whether this layer writes the count.  Not ``self.count`` kept on ``self``: a bound
        # method of its own object would make a reference cycle, freed only by the garbage
        # collector, for every request (see ``Exchange.detach``).
        self.counts = scope.setdefault(_COUNTER_KEY, layer) is layer

    def open(self, target: Target, request: Request) -> None:
        """Move to ``target`` with ``request``, a copy the layers below may change: what
        the attempts on the previous target left is gone."""
        open_attempt(self.exchange, self.entered, target, request)

    async def run(
        self,
        scope: Scope,
        target: Target | None,
        credential: Credential | None = None,
        *,
        request: Request | None = None,
    ) -> Held:
        """One attempt on ``target`` with ``credential`` (``None``: the layers below
        choose): a fresh ``exchange.current``, and the inner app called once, held until
        it commits (``Held.committed``) or fails (``Held.error``, nothing sent to the
        client, and the error on the attempt).  An attempt that ended without failing or
        committing (a response with no content) has gone out as it was when this returns.

        ``request``, when given, moves the attempts to ``target`` with it, as ``open``
        does, in the same step: the attempt this opens is the target's first."""
        exchange = self.exchange
        if request is not None:
            exchange.request = request
        # Fresh, so the previous attempt's failure is not this one's: a retry that succeeds
        # leaves no error for the request log and the request span to report.
        current = exchange.current = self.entered.fresh(target, credential)
        before = self.floor = len(exchange.attempts)
        held = Held(self.send, self.count if self.counts else None, exchange)
        try:
            await self.app(scope, exchange.replay(), held.send)
        except Abandon:
            pass
        finally:
            current.close()
        if len(exchange.attempts) == before:
            _note_foreign_attempt(exchange, before, target, current.credential, held)
        if held.error is not None:
            # On the attempt now current: a routing layer below opened attempts of its own.
            exchange.current.error = held.error
        elif not held.committed:
            await held.release(self.send)
        return held

    async def answer(self, held: Held, error: GatewayError) -> None:
        """The failed attempt's own error response, as the inner app sent it (or rendered,
        for an in-band failure that has no response to release)."""
        self.exchange.current.error = error
        if held.messages:
            await held.release(self.send)  # with the attempt count (the hold's ``on_start``)
        else:
            await send_counted_error(self.send, self.exchange, error)

    async def fail(self, error: GatewayError) -> None:
        """Answer ``error``, rendered in the client's protocol, with the attempt count."""
        self.exchange.current.error = error
        await send_counted_error(self.send, self.exchange, error)

    def count(self, start: Message) -> Message:
        """``start`` with the attempt count.  An error response of our own stack (it carries
        the ``ERROR`` twin) is counted as it is: a layer that refused without calling
        upstream made no attempt."""
        count = len(self.exchange.attempts)
        if ERROR not in start:
            count = max(count, self.floor + 1)
        return _with_header(start, ATTEMPTS_HEADER, str(count).encode())


def open_attempt(
    exchange: Exchange, entered: CurrentAttempt, target: Target | None, request: Request
) -> None:
    """Start the exchange's next attempt afresh: on ``target`` (``None``: the layers below
    choose) with ``request``, and the hooks of ``entered``, the attempt that was current
    when the calling layer was entered (what a layer above set for every attempt).  What
    the previous attempt left (its credential, upstream protocol, hooks, error and close
    record) is gone, so no layer below reads a stale one."""
    exchange.request = request
    exchange.current = entered.fresh(target)


async def send_counted_error(
    send: Send, exchange: Exchange | None, error: GatewayError, *, protocol: str | None = None
) -> None:
    """An error response in the client's protocol, with the attempt count."""
    count = len(exchange.attempts) if exchange is not None else 0
    await send_error(
        send,
        protocol or (exchange.protocol if exchange is not None else None),
        error,
        [(ATTEMPTS_HEADER, str(count).encode())],
    )


class TargetParams:
    """A target's ``params``, validated and split once: known request fields (converted to
    their types) and the rest, which go into the request's ``extra``."""

    __slots__ = ("extra", "fields")

    def __init__(self, target: Target) -> None:
        self.fields, self.extra = _split_params(target.params, target.model, target.name)

    def apply(self, original: Request) -> Request:
        """A copy of ``original`` with the params applied.  Always a copy: layers below
        mutate the request in place, and the next target must start again from what the
        client sent."""
        if not self.fields and not self.extra:
            return msgspec.structs.replace(original)
        changes: dict[str, Any] = dict(self.fields)
        if self.extra:
            changes["extra"] = {**original.extra, **self.extra}
        return msgspec.structs.replace(original, **changes)


def target_request(request: Request, target: Target) -> Request:
    """``request`` with ``target.params`` applied, as a copy (validated on each call: for
    a layer that resolves a target itself; ``FallbackRouter`` validates once per target)."""
    if not target.params:
        return request
    return TargetParams(target).apply(request)


def _with_header(message: Message, name: bytes, value: bytes) -> Message:
    headers = [header for header in message.get("headers", ()) if header[0].lower() != name]
    headers.append((name, value))
    return {**message, "headers": headers}


def _note_foreign_attempt(
    exchange: Exchange,
    before: int,
    target: Target | None,
    credential: Credential | None,
    held: Held,
) -> None:
    """Record an attempt the inner app did not record itself (a foreign app), so the count
    and the history stay right whatever sits below; called when the inner app recorded
    none."""
    if held.committed:
        pass  # dispatch records its attempt before it sends anything: this app does not
    elif not held.messages or ERROR in held.messages[0]:
        # Nothing sent, an in-band error (only our dispatch makes those), or an error
        # response of our own stack: a layer below refused without calling upstream.
        return
    exchange.attempts.append(
        Attempt(
            number=before + 1,
            provider=target.provider.name if target is not None else "",
            model=target.model if target is not None else "",
            credential=credential.id if credential is not None else None,
            status=held.status,
            kind=held.error.kind if held.error is not None else None,
        )
    )


def _split_params(
    params: Mapping[str, Any], model: str, where: str
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Known request fields (validated and converted once) and the rest, for ``extra``."""
    fixed = _FIXED_FIELDS.intersection(params)
    if fixed:
        raise ValueError(f"{where}: params may not override {', '.join(sorted(fixed))}")
    known = {k: v for k, v in params.items() if k in _REQUEST_FIELDS}
    extra = {k: v for k, v in params.items() if k not in _REQUEST_FIELDS}
    if not known:
        return {}, extra
    try:
        converted = msgspec.convert({"model": model, **known}, Request)
    except msgspec.ValidationError as exc:
        raise ValueError(f"{where}: params: {exc}") from None
    return {k: getattr(converted, k) for k in known}, extra
