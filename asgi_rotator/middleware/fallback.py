"""``FallbackRouter``: a model or group name becomes an ordered list of targets, and a failed
target hands the request to the next one, until a response is committed.

Where it sits: under the protocol and Responses-state layers (it needs the unified request
and answers errors in the client's protocol), above ``CooldownRetry`` (which works on the one
target this layer chose) and everything per target below it.  Alone around any app it still
works: it makes the exchange itself and tells the inner app its choice through
``exchange.target``.

Deliberate choices:

* A plan is a group's targets in order.  A client may ask for the group by name (or an alias
  of it), or for one ``provider/model`` that belongs to a group: that target goes first and
  the rest of the group follows, in the group's order.  A target listed in several groups
  belongs to the first one in the configuration.  Per-target ``params`` are validated once,
  here, and applied to a fresh copy of the request for each attempt, so a later target never
  inherits an earlier one's overrides (nor what a layer below changed in place).
* Every attempt runs through ``Held``: the response start is held until the first event
  that carries content.  An upstream 200 whose first event is an error is a failure like any
  other; once content went out, nothing is retried (a second answer would follow half of the
  first).  The same hold applies to every target, not just the first, so a failure of the
  last target still reaches the client as a proper error response with a real status rather
  than a 200 with an in-band error.
* Which failure moves on is decided on the error kind alone: ``fallback_on`` (retryable kinds
  by default) tries the next target; ``context_window_exceeded`` and ``content_filtered`` go
  to the group's ``context_fallbacks`` / ``content_fallbacks`` when it has them; anything
  else (``bad_request``, ``auth``, ``not_found`` by default) is answered at once, because it
  would fail everywhere.
* When every target failed, the client gets one error in its own protocol whose status sums
  up the causes: 429 when all were rate limits (``retry-after`` = the earliest any target
  named), 504 when all timed out, 503 when capacity was the problem (rate limits or overload
  among the causes), 502 otherwise.  Its message lists each target with kind and status, and
  never the providers' own messages (some echo part of the key back).
* The number of upstream attempts goes out in ``x-rotator-attempts`` on every response
  (``exchange.attempts`` holds the details for tracing: one entry per upstream call).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import msgspec

from .._types import App, Message, Receive, Scope, Send
from ..errors import DEFAULT_STATUS, GatewayError
from ..exchange import ERROR, SCOPE_KEY, Attempt, Exchange
from ..providers import Providers, Target
from ..routes import match_route, route_path
from ..unified import Request
from ._held import Abandon, Held

__all__ = [
    "ATTEMPTS_HEADER",
    "DEFAULT_FALLBACK_ON",
    "CountingSend",
    "FallbackRouter",
    "counts_attempts",
    "note_foreign_attempt",
    "routed_exchange",
    "send_counted_error",
    "target_request",
]


ATTEMPTS_HEADER = b"x-rotator-attempts"
# The routing layer that writes the attempt count for the request: the outermost one.  What a
# layer below it writes would be replaced on the way out (every start passes the outer hold),
# so a layer below leaves the header alone.
_COUNTER_KEY = "asgi_rotator.attempts_counter"
DEFAULT_FALLBACK_ON = ("rate_limited", "overloaded", "server_error", "timeout", "connection")
_PLANS_CACHED = 1024  # model names whose plan is kept
_PLAN_NAME_LIMIT = 256  # a longer model name is planned afresh each time, never kept

# Request fields a target's params may not override: they are the conversation itself, or
# decided by the client and the layers (model comes from the target).
_FIXED_FIELDS = frozenset({"model", "messages", "stream", "origin", "extra"})
_REQUEST_FIELDS = frozenset(f.name for f in msgspec.structs.fields(Request)) - _FIXED_FIELDS


class _Step:
    """One target of a plan, with its request overrides validated and split once."""

    __slots__ = ("extra", "fields", "name", "target")

    def __init__(self, target: Target) -> None:
        self.target = target
        self.name = target.name
        self.fields, self.extra = _split_params(target.params, target.model, target.name)

    def request(self, original: Request) -> Request:
        if not self.fields and not self.extra:
            return msgspec.structs.replace(original)  # a copy, as below
        changes: dict[str, Any] = dict(self.fields)
        if self.extra:
            changes["extra"] = {**original.extra, **self.extra}
        # Always a copy: layers below mutate the request in place, and the next target must
        # start again from what the client sent.
        return msgspec.structs.replace(original, **changes)


class _Group:
    __slots__ = ("content", "context", "name", "steps")

    def __init__(
        self, name: str, steps: list[_Step], context: list[_Step], content: list[_Step]
    ) -> None:
        self.name = name
        self.steps = steps
        self.context = context
        self.content = content


class _Plan:
    """What a model name is routed to, worked out once per name: the group, the steps in
    order and their target names (for the ``fallback.plan`` pass)."""

    __slots__ = ("group", "group_name", "steps", "targets")

    def __init__(self, group: _Group | None, steps: list[_Step]) -> None:
        self.group = group
        self.group_name = group.name if group is not None else None
        self.steps = steps
        self.targets = [s.name for s in steps]


class _Outcome:
    __slots__ = ("error", "target")

    def __init__(self, target: str, error: GatewayError) -> None:
        self.target = target
        self.error = error


class FallbackRouter:
    """Try a request's targets in order until one answers.

    ``providers`` resolves names and holds the groups (``providers.config.groups``);
    ``fallback_on`` is the set of error kinds that move on to the next target.
    """

    def __init__(
        self,
        app: App,
        *,
        providers: Providers,
        fallback_on: Iterable[str] = DEFAULT_FALLBACK_ON,
    ) -> None:
        self.app = app
        self.providers = providers
        self.fallback_on = frozenset(fallback_on)
        unknown = self.fallback_on - set(DEFAULT_STATUS)
        if unknown:
            raise ValueError(
                f"fallback_on: unknown error kind(s) {sorted(unknown)}; "
                f"known: {', '.join(DEFAULT_STATUS)}"
            )
        self._aliases = dict(providers.config.aliases)
        self._plans: dict[str, _Plan] = {}
        self._groups: dict[str, _Group] = {}
        self._member: dict[str, tuple[_Group, int]] = {}
        for name, config in providers.config.groups.items():
            group = _Group(
                name,
                [_Step(t) for t in providers.resolve(name)],
                self._steps(config.context_fallbacks, f"groups.{name}.context_fallbacks"),
                self._steps(config.content_fallbacks, f"groups.{name}.content_fallbacks"),
            )
            self._groups[name] = group
            for i, step in enumerate(group.steps):
                self._member.setdefault(step.target.name, (group, i))

    def _steps(self, specs: Iterable[str], where: str) -> list[_Step]:
        steps: list[_Step] = []
        for i, spec in enumerate(specs):
            try:
                targets = self.providers.resolve(spec)
            except GatewayError as error:
                raise ValueError(f"{where}[{i}]: {error.message}") from None
            steps.extend(_Step(t) for t in targets)
        return steps

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        exchange: Exchange | None = scope.get(SCOPE_KEY)
        if exchange is None or exchange.request is None:
            exchange = await routed_exchange(self.app, scope, receive, send)
            if exchange is None:
                return
        assert exchange.request is not None
        try:
            plan = self._plan(exchange.request.model)
        except GatewayError as unknown:
            exchange.error = unknown
            await send_counted_error(send, exchange, unknown)
            return
        if exchange.recording:
            exchange.record("fallback.plan", group=plan.group_name, targets=plan.targets)
        # The attempts run here rather than in a helper: this frame stays suspended for the
        # whole response, and every event resumes each frame on the way down.
        group = plan.group
        original = exchange.request
        assert original is not None
        out = CountingSend(send, exchange)
        on_start = out.count if counts_attempts(scope, self) else None
        # The attempts in order, until a branch switches to its alternatives (once each).
        queue = iter(plan.steps)
        switched: tuple[str, ...] = ()
        outcomes: tuple[_Outcome, ...] = ()  # the failed attempts, on the failure path only
        held: Held | None = None
        while (step := next(queue, None)) is not None:
            target = step.target
            exchange.target = target
            exchange.credential = None
            exchange.upstream_protocol = None  # negotiated per provider by dispatch
            exchange.error = None
            exchange.close = None
            exchange.request = step.request(original)
            before = out.floor = len(exchange.attempts)
            held = Held(send, on_start)
            try:
                await self.app(scope, exchange.replay(), held.send)  # run_held, inlined
            except Abandon:
                pass
            note_foreign_attempt(exchange, before, target, held)
            error = held.error
            if held.committed or error is None:
                if exchange.recording:
                    exchange.record("fallback.attempt", target=step.name, outcome="answered")
                if error is None and not held.committed:
                    await held.release(send)  # whatever the app sent, as it sent it
                return
            outcomes += (_Outcome(step.name, error),)
            exchange.record(
                "fallback.attempt",
                target=step.name,
                outcome=error.kind,
                status=error.status,
                upstream_attempts=len(exchange.attempts) - before,
            )
            branch = _BRANCHES.get(error.kind)
            if branch is not None and group is not None:
                alternatives = getattr(group, branch)
                if branch in switched:
                    # Already among the alternatives (bigger contexts, laxer filters, in the
                    # configured order): the next one may take it.
                    continue
                if alternatives:
                    switched += (branch,)
                    queue = iter(alternatives)
                    exchange.record(
                        "fallback.switch",
                        reason=error.kind,
                        targets=[s.name for s in alternatives],
                    )
                    continue
            if error.kind not in self.fallback_on:
                break  # it would fail everywhere: answer it as it is
        assert held is not None and held.error is not None
        final = held.error
        if len(outcomes) > 1 and final.kind in self.fallback_on:
            final = _exhausted(outcomes)
            exchange.record("fallback.exhausted", status=final.status, targets=len(outcomes))
            exchange.error = final
            await send_counted_error(send, exchange, final)
            return
        exchange.error = final
        if held.messages:
            await held.release(send)
        else:
            await send_counted_error(send, exchange, final)

    def _plan(self, model: str) -> _Plan:
        plan = self._plans.get(model)
        if plan is None:
            plan = _Plan(*self._route(model))
            if len(model) <= _PLAN_NAME_LIMIT:
                if len(self._plans) >= _PLANS_CACHED:
                    self._plans.clear()  # a client cycling through model names: start again
                self._plans[model] = plan
        return plan

    def _route(self, model: str) -> tuple[_Group | None, list[_Step]]:
        group = self._groups.get(self._aliases.get(model, model))
        if group is not None:
            return group, group.steps
        targets = self.providers.resolve(model)
        member = self._member.get(targets[0].name) if len(targets) == 1 else None
        if member is None:
            return None, [_Step(t) for t in targets]
        group, index = member
        steps = group.steps
        return group, [steps[index], *steps[:index], *steps[index + 1 :]]


_BRANCHES = {"context_window_exceeded": "context", "content_filtered": "content"}


def _exhausted(outcomes: tuple[_Outcome, ...]) -> GatewayError:
    """The one error for a request every target failed, with a status that sums up why."""
    kinds = {o.error.kind for o in outcomes}
    waits = [o.error.retry_after for o in outcomes if o.error.retry_after is not None]
    if kinds == {"rate_limited"}:
        kind, status = "rate_limited", 429
    elif kinds == {"timeout"}:
        kind, status = "timeout", 504
    elif kinds & {"rate_limited", "overloaded"}:
        kind, status = "overloaded", 503
    else:
        kind, status = "server_error", 502
    listed = "; ".join(
        f"{o.target}: {o.error.kind} ({o.error.upstream_status or o.error.status})"
        for o in outcomes
    )
    return GatewayError(
        kind,  # type: ignore[arg-type]
        f"all {len(outcomes)} targets failed: {listed}",
        status=status,
        retry_after=min(waits) if waits and status in (429, 503) else None,
    )


# --- shared with CooldownRetry ------------------------------------------------------------


async def routed_exchange(app: App, scope: Scope, receive: Receive, send: Send) -> Exchange | None:
    """The exchange with its unified request, for a generation request; ``None`` when the
    request was not one (passed on to ``app`` as it was) or was bad (answered with an error)."""
    exchange: Exchange | None = scope.get(SCOPE_KEY)
    if exchange is None or exchange.request is None:
        route = match_route(route_path(scope))
        if route is None or route.endpoint != "generate" or scope["method"] not in route.allowed:
            await app(scope, receive, send)  # not consumed: pass it on as it came
            return None
        from ..dispatch import ensure_request  # local: dispatch imports the codecs

        try:
            exchange = await ensure_request(scope, receive)
        except GatewayError as error:
            exchange = scope.get(SCOPE_KEY)
            protocol = exchange.protocol if exchange else None
            await send_counted_error(send, exchange, error, protocol=protocol or route.protocol)
            return None
    return exchange


def target_request(request: Request, target: Target) -> Request:
    """``request`` with ``target.params`` applied, as a copy (validated on each call: for
    layers that resolve a target themselves; ``FallbackRouter`` validates once)."""
    if not target.params:
        return request
    return _Step(target).request(request)


class CountingSend:
    """``send`` that writes the attempt count into the response start (replacing a count an
    inner layer wrote: the outermost layer knows the whole story).

    Set ``floor`` to the number of attempts before the current one: an inner app that does
    not record its attempts (a foreign app) sends its start before the layer can note it.
    An error response of our own stack (it carries the ``ERROR`` twin) is counted as it is:
    a layer that refused without calling upstream made no attempt.  The routing layers use
    ``count`` alone, as the ``on_start`` of ``Held``: their start is always held.
    """

    __slots__ = ("exchange", "floor", "send")

    def __init__(self, send: Send, exchange: Exchange) -> None:
        self.send = send
        self.exchange = exchange
        self.floor = 0

    async def __call__(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            message = self.count(message)
        await self.send(message)

    def count(self, start: Message) -> Message:
        """``start`` with the attempt count."""
        count = len(self.exchange.attempts)
        if ERROR not in start:
            count = max(count, self.floor + 1)
        return with_header(start, ATTEMPTS_HEADER, str(count).encode())


def counts_attempts(scope: Scope, layer: object) -> bool:
    """Whether ``layer`` writes the attempt count: no routing layer above it does."""
    return scope.setdefault(_COUNTER_KEY, layer) is layer


def with_header(message: Message, name: bytes, value: bytes) -> Message:
    headers = [header for header in message.get("headers", ()) if header[0].lower() != name]
    headers.append((name, value))
    return {**message, "headers": headers}


def note_foreign_attempt(
    exchange: Exchange, before: int, target: Target | None, held: Held
) -> None:
    """Record an attempt the inner app did not record itself (a foreign app), so the count
    and the history stay right whatever sits below."""
    if len(exchange.attempts) != before:
        return
    if held.committed:
        pass  # dispatch records its attempt before it sends anything: this app does not
    elif not held.messages or ERROR in held.messages[0]:
        # Nothing sent, an in-band error (only our dispatch makes those), or an error
        # response of our own stack: a layer below refused without calling upstream.
        return
    credential = exchange.credential
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


async def send_counted_error(
    send: Send, exchange: Exchange | None, error: GatewayError, *, protocol: str | None = None
) -> None:
    """An error response in the client's protocol, with the attempt count."""
    from ..dispatch import send_error  # local: dispatch imports the codecs

    count = len(exchange.attempts) if exchange is not None else 0
    await send_error(
        send,
        protocol or (exchange.protocol if exchange is not None else None),
        error,
        [(ATTEMPTS_HEADER, str(count).encode())],
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
