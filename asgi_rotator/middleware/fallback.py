"""``FallbackRouter``: a model or group name becomes an ordered list of targets, and a failed
target hands the request to the next one, until a response is committed.

Where it sits: under the protocol and Responses-state layers (it needs the unified request
and answers errors in the client's protocol), above ``CooldownRetry`` (which works on the one
target this layer chose) and everything per target below it.  Alone around any app it still
works: it makes the exchange itself and tells the inner app its choice through
``exchange.current.target``.

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
* A failing target is never waited for while another can answer now.  Before each target
  this layer sets ``FAILOVER_KEY`` in the scope to the kinds for which another target
  follows; ``CooldownRetry`` below then tries only keys available now and not yet failed in
  this request, and otherwise hands back at once (no sleeping through a ``retry-after``, no
  second TTFB wait on a key that just timed out).  The plan's last target keeps the retries
  and waits of a single target: nothing else could answer sooner.
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

from collections.abc import Iterable

from .._types import App, Receive, Scope, Send
from ..config import RoutingConfig
from ..errors import DEFAULT_STATUS, GatewayError
from ..providers import Providers, Target
from ..unified import Request
from .routing import (
    ATTEMPTS_HEADER,
    FAILOVER_KEY,
    NO_FAILOVER,
    AttemptRunner,
    Held,
    TargetParams,
    parsed_exchange,
    routed_exchange,
)

__all__ = ["ATTEMPTS_HEADER", "DEFAULT_FALLBACK_ON", "FallbackRouter"]


DEFAULT_FALLBACK_ON = tuple(RoutingConfig().fallback_on)
_PLANS_CACHED = 1024  # model names whose plan is kept
_PLAN_NAME_LIMIT = 256  # a longer model name is planned afresh each time, never kept


class _Step:
    """One target of a plan, with its request overrides validated and split once."""

    __slots__ = ("name", "params", "target")

    def __init__(self, target: Target) -> None:
        self.target = target
        self.name = target.name
        self.params = TargetParams(target)

    def request(self, original: Request) -> Request:
        return self.params.apply(original)


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
        # The discovered model lists the plans were made with (providers.models_version).
        self._plans_version = providers.models_version
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
        exchange = parsed_exchange(scope) or await routed_exchange(self.app, scope, receive, send)
        if exchange is None:
            return  # not a generation request (passed on as it came), or a bad one (answered)
        original = exchange.request
        assert original is not None
        attempts = AttemptRunner(self, scope, exchange, send)
        try:
            plan = self._cached_plan(original.model) or await self._new_plan(original.model)
        except GatewayError as unknown:
            await attempts.fail(unknown)
            return
        if exchange.recording:
            exchange.record("fallback.plan", group=plan.group_name, targets=plan.targets)
        group = plan.group
        # The steps in order, until a branch switches to its alternatives (once each).
        steps, position = plan.steps, 0
        switched: tuple[str, ...] = ()
        outcomes: tuple[_Outcome, ...] = ()  # the failed attempts, on the failure path only
        held: Held | None = None
        while position < len(steps):
            step = steps[position]
            position += 1
            # While another target follows, the layers below fail over rather than wait.
            scope[FAILOVER_KEY] = self.fallback_on if position < len(steps) else NO_FAILOVER
            before = len(exchange.attempts)
            held = await attempts.run(scope, step.target, request=step.request(original))
            error = held.error
            if error is None:
                if exchange.recording:
                    exchange.record("fallback.attempt", target=step.name, outcome="answered")
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
                    steps, position = alternatives, 0
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
            await attempts.fail(final)
            return
        await attempts.answer(held, final)

    def _cached_plan(self, model: str) -> _Plan | None:
        if self._plans_version != self.providers.models_version:
            # A discovered list changed: a bare name may belong elsewhere now.
            self._plans.clear()
            self._plans_version = self.providers.models_version
        return self._plans.get(model)

    async def _new_plan(self, model: str) -> _Plan:
        await self.providers.discover(model)
        plan = _Plan(*self._route(model))
        if len(model) <= _PLAN_NAME_LIMIT and self._plans_version == self.providers.models_version:
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
