"""``CooldownRetry``: for one target, pick a credential that is not cooling down, retry a
failed attempt on another one, and remember what each failure means for later requests.

Where it sits: under ``FallbackRouter`` (which chooses the target and moves on when this
layer gives up) and above the per-target layers and dispatch.  ``StreamGuard`` must be
below it, so that a TTFB timeout is a failure this layer can still retry.  Alone, it resolves
the request's model to its first target itself and works around any inner app, telling it
the chosen key through ``exchange.current.credential``.

Deliberate choices:

* Cooldowns have four scopes, each a deadline in the ``StateStore``: a credential, a
  (credential, model) pair, a model at a provider, a whole provider.  A 429 cools the key
  (or the key for this model, with ``rate_limit_scope="credential_model"``, for providers
  whose limits are per model), never the provider: the provider is unavailable only when
  every key is.  A quota error cools the key for the provider's stated reset, or
  ``quota_cooldown``.  401 takes the key out for ``auth_cooldown`` (403 only for the model
  it was refused: a permission can be per model) and is logged once, by whichever worker
  cools it first.  5xx, overload and timeouts cool the model at the provider after
  ``failure_threshold`` consecutive failures; connection failures, the provider.
* How long: the provider's ``retry-after`` header, else its body hint (both already on the
  error), else exponential backoff with full jitter on the consecutive-failure count.
  Deadlines go through ``set_max``, so a later failure that asks for longer extends a
  cooldown and nothing ever shortens one (a late short ``retry-after`` must not revive a
  key another worker just cooled for an hour).  A success deletes the failure counts it saw.
* Deadlines are wall-clock seconds (the injectable ``clock``, ``time.time`` by default):
  a shared store shares them between processes and machines, where monotonic clocks differ.
* Rotation: ``round_robin`` (an atomic counter), ``fair_cycle`` (every healthy key once
  before any twice: each key is claimed for the current cycle with compare-and-set; a key
  back from a cooldown gets its one turn, it does not catch up), ``least_used`` (fewest
  selections so far), ``priority`` (keys in tiers; the next tier only when every key of the
  ones before is cooling down).  ``tiers`` apply to every policy; ``priority`` just defaults
  to one tier per key, in the configured order.  Selection reads all the state it needs in
  one ``get_many`` and writes one counter, so it is fair under concurrency on one process
  and costs one or two round trips on a shared store.
* Retries are bounded by ``max_attempts`` per target and a time budget per request
  (``retry_budget``, shared by all targets the fallback layer tries).  A retry goes to a key
  not tried yet in this request first; the same key again only after a backoff pause.  When
  every key is cooling down, the layer waits only if the earliest one is back within
  ``max_wait`` and the remaining budget; otherwise it fails at once (the fallback layer
  moves on, or the client gets a 429 whose ``retry-after`` is the earliest availability),
  rather than sleeping longer than the client will wait.
* Under a fallback layer with another target to go to (``routing.FAILOVER_KEY`` names the
  error kinds it moves on for), the layer neither waits nor retries a key that just failed:
  a fresh key available now, or it hands back at once.  The next target answers sooner.
* Every key refused by the provider (401, 403 for the model) is an ``auth`` error saying so,
  never a rate limit: an SDK would retry that for an hour.
* The model name is the client's: it goes into state keys through ``model_in_key``, which
  no string can make fail.
* The same hold-until-content rule as the fallback layer (``Held``): only an attempt
  that sent nothing to the client is retried.
"""

from __future__ import annotations

import random as _random
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from typing import Any

import anyio

from .._types import App, Receive, Scope, Send
from ..config import CooldownConfig
from ..errors import DEFAULT_STATUS, GatewayError
from ..exchange import Exchange
from ..providers import Provider, Providers, Target
from ..redaction import redacting_logger
from ..state import MemoryStore, StateStore, namespaced
from .cooldown_keys import Pool, ScopeState, model_in_key
from .routing import AttemptRunner, Held, failover, parsed_exchange, routed_exchange, target_request

__all__ = [
    "BUDGET_KEY",
    "DEFAULT_RETRY_ON",
    "RATE_LIMIT_SCOPES",
    "ROTATIONS",
    "CooldownRetry",
]


logger = redacting_logger("asgi_rotator.cooldown")

ROTATIONS = ("round_robin", "fair_cycle", "priority", "least_used")
RATE_LIMIT_SCOPES = ("credential", "credential_model")  # the first is the default
# ``auth`` is retried on another key (this one is out of rotation); the fallback layer does
# not move on for it, because another target would not help a bad configuration.
DEFAULT_RETRY_ON = ("rate_limited", "overloaded", "server_error", "timeout", "connection", "auth")
# The request's retry deadline, in the scope so every target of one request shares it.
BUDGET_KEY = "asgi_rotator.retry_deadline"

_DEFAULTS = CooldownConfig()
_MODEL_KINDS = frozenset({"overloaded", "server_error", "timeout"})
# A name longer than this is shown escaped and cut in a message.
_SHOWN_LIMIT = 256


class CooldownRetry:
    """Credential rotation, cooldowns and bounded retries for one target per request.

    ``providers`` gives the credential pools (and resolves the model when no layer above
    chose a target); ``store`` holds all cooldown and rotation state (namespaced
    ``cooldown:``; an in-memory store by default).  ``retry_on`` is the error kinds retried
    on another key (``None``: ``DEFAULT_RETRY_ON``).  ``clock``, ``sleep`` and ``random`` are
    injectable so tests never sleep.
    """

    def __init__(
        self,
        app: App,
        *,
        providers: Providers,
        store: StateStore | None = None,
        rotation: str | Mapping[str, str] = _DEFAULTS.rotation,
        tiers: Mapping[str, Sequence[int]] | None = None,
        rate_limit_scope: str | Mapping[str, str] = RATE_LIMIT_SCOPES[0],
        max_attempts: int = _DEFAULTS.max_attempts,
        retry_budget: float = _DEFAULTS.retry_budget,
        max_wait: float = _DEFAULTS.max_wait,
        retry_on: Iterable[str] | None = None,
        backoff_base: float = _DEFAULTS.backoff_base,
        backoff_max: float = _DEFAULTS.backoff_max,
        failure_threshold: int = _DEFAULTS.failure_threshold,
        failure_window: float = _DEFAULTS.failure_window,
        auth_cooldown: float = _DEFAULTS.auth_cooldown,
        quota_cooldown: float = _DEFAULTS.quota_cooldown,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], Awaitable[Any]] = anyio.sleep,
        random: Callable[[], float] = _random.random,
    ) -> None:
        self.app = app
        self.providers = providers
        self.store = namespaced(store if store is not None else MemoryStore(), "cooldown")
        if max_attempts < 1:
            raise ValueError(f"max_attempts must be at least 1, not {max_attempts}")
        if failure_threshold < 1:
            raise ValueError(f"failure_threshold must be at least 1, not {failure_threshold}")
        for name, value in (("retry_budget", retry_budget), ("max_wait", max_wait)):
            if not value >= 0:
                raise ValueError(f"{name} must be >= 0, not {value}")
        for name, value in (
            ("backoff_base", backoff_base),
            ("failure_window", failure_window),
            ("auth_cooldown", auth_cooldown),
            ("quota_cooldown", quota_cooldown),
        ):
            if not value > 0:
                raise ValueError(f"{name} must be > 0, not {value}")
        if backoff_max < backoff_base:
            raise ValueError(
                f"backoff_max ({backoff_max}) must be >= backoff_base ({backoff_base})"
            )
        self.retry_on = frozenset(DEFAULT_RETRY_ON if retry_on is None else retry_on)
        unknown = self.retry_on - set(DEFAULT_STATUS)
        if unknown:
            raise ValueError(f"retry_on: unknown error kind(s) {sorted(unknown)}")
        self.max_attempts = max_attempts
        self.retry_budget = retry_budget
        self.max_wait = max_wait
        self.backoff_base = backoff_base
        self.backoff_max = backoff_max
        self.failure_threshold = failure_threshold
        self.failure_window = failure_window
        self.auth_cooldown = auth_cooldown
        self.quota_cooldown = quota_cooldown
        self._clock = clock
        self._sleep = sleep
        self._random = random

        names = set(providers.providers)
        rotations = _per_provider("rotation", rotation, _DEFAULTS.rotation, ROTATIONS, names)
        scopes = _per_provider(
            "rate_limit_scope", rate_limit_scope, RATE_LIMIT_SCOPES[0], RATE_LIMIT_SCOPES, names
        )
        tiers = dict(tiers or {})
        for name, levels in tiers.items():
            provider = providers.providers.get(name)
            if provider is None:
                raise ValueError(f"tiers: unknown provider {name!r}")
            if len(levels) != max(1, len(provider.credentials)) or not all(
                isinstance(t, int) for t in levels
            ):
                raise ValueError(
                    f"tiers.{name}: expected one integer per key "
                    f"({len(provider.credentials)}), got {list(levels)!r}"
                )
        self._rotations = rotations
        self._default_rotation = rotation if isinstance(rotation, str) else _DEFAULTS.rotation
        self._scopes = scopes
        self._tiers = tiers
        self._pools = {
            name: self._make_pool(provider) for name, provider in providers.providers.items()
        }

    def _make_pool(self, provider: Provider) -> Pool:
        name = provider.name
        return Pool(
            self.store,
            provider,
            self._rotations.get(name, self._default_rotation),
            self._tiers.get(name),
            self._scopes.get(name, RATE_LIMIT_SCOPES[0]) == "credential_model",
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        exchange = parsed_exchange(scope) or await routed_exchange(self.app, scope, receive, send)
        if exchange is None:
            return  # not a generation request (passed on as it came), or a bad one (answered)
        attempts = AttemptRunner(self, scope, exchange, send)
        target: Target | None = exchange.current.target
        if target is None:
            assert exchange.request is not None
            try:
                target = (await self.providers.targets(exchange.request.model))[0]
            except GatewayError as unknown:
                await attempts.fail(unknown)
                return
            attempts.open(target, target_request(exchange.request, target))
        pool = self._pools.get(target.provider.name)
        if pool is None or pool.provider is not target.provider:
            pool = self._make_pool(target.provider)
        model = target.model
        deadline: float = scope.setdefault(BUDGET_KEY, self._clock() + self.retry_budget)
        tried: tuple[int, ...] = ()  # the keys that failed in this request (few)
        count = waits = 0
        held: Held | None = None
        pause_until = 0.0  # when a key that failed without cooling down may be tried again
        scopes = pool.scopes(model)
        while True:
            state = ScopeState(scopes, await scopes.keys.get_all())
            now = self._clock()
            healthy, available, blocked = self._healthy(state, now)
            fresh = _untried(healthy, tried) if tried else healthy
            if fresh:
                candidates, wait = fresh, 0.0
            elif healthy:
                # Every usable key already failed in this request (5xx, timeout ...): the same
                # again, after a pause.
                candidates, wait = healthy, max(0.0, pause_until - now)
            else:
                candidates, wait = [], available - now
            if count or not candidates:
                if (
                    count >= self.max_attempts
                    or waits >= self.max_attempts  # keys re-cooled while we waited
                    or wait > min(self.max_wait, deadline - now)
                    # The fallback layer above has another target to try now for this
                    # kind (``failover``): neither wait nor retry a key that just failed.
                    or (not fresh and _failing(held, blocked) in failover(scope))
                ):
                    await self._give_up(attempts, target, pool, held, state, now, available)
                    return
                if wait > 0:
                    exchange.record("cooldown.wait", seconds=round(wait, 3), attempt=count + 1)
                    await self._sleep_until(now + wait)
                if not candidates:
                    waits += 1
                    continue  # a key should be back: read the state again
            index = candidates[0] if len(candidates) == 1 else await self._pick(pool, candidates)
            credential = pool.credentials[index]
            if exchange.recording:
                exchange.record(
                    "cooldown.select",
                    provider=pool.name,
                    model=model,
                    credential=credential.id if credential is not None else None,
                    rotation=pool.rotation,
                    healthy=len(healthy),
                    attempt=count + 1,
                )
            held = await attempts.run(scope, target, credential)
            count += 1
            error = held.error
            if error is None:
                if not state.quiet:
                    await self._succeeded(index, state)
                return
            tried += (index,)
            await self._failed(exchange, pool, index, model, error)
            if error.kind not in self.retry_on:
                await attempts.answer(held, error)
                return
            retry_after = error.retry_after
            pause_until = self._clock() + (
                retry_after if retry_after is not None else self._backoff(count)
            )

    async def _sleep_until(self, until: float) -> None:
        """Sleep until the clock reads ``until``.  A loop timer may end a little before: its
        clock is not this one (the wall clock the cooldown state is kept in), and uvloop's
        timers count whole milliseconds from the time the loop last read.  A wait that
        ended early would find the key still cooling, count as a second wait and, with
        ``max_attempts = 1``, answer 429 "available again in 0.0s"."""
        while (left := until - self._clock()) > 0:
            await self._sleep(left)

    async def _give_up(
        self,
        attempts: AttemptRunner,
        target: Target,
        pool: Pool,
        held: Held | None,
        state: ScopeState,
        now: float,
        available: float,
    ) -> None:
        exchange = attempts.exchange
        wait = max(0.0, available - now)
        if held is None or held.error is None:
            # Nothing tried: every key, or the model, is cooling down.
            error = await self._unavailable(target, pool, state, now, wait)
            exchange.record(
                "cooldown.unavailable", target=target.name, kind=error.kind, retry_after=wait
            )
            await attempts.fail(error)
            return
        error = held.error
        exchange.record("cooldown.give_up", target=target.name, kind=error.kind)
        if wait > 0 and error.kind in ("rate_limited", "overloaded"):
            # The client may come back when the first key (or the model) does, not when the
            # last answer said.
            await attempts.fail(_with_retry_after(error, wait))
            return
        await attempts.answer(held, error)

    async def _unavailable(
        self, target: Target, pool: Pool, state: ScopeState, now: float, wait: float
    ) -> GatewayError:
        """Why no key of ``target`` may be tried now.  Keys the provider refused are an
        ``auth`` error with the refusal's status, never a rate limit: an SDK would retry a
        429 (or a 503) for a key that will stay refused until someone fixes it."""
        provider = target.provider.name
        scopes = state.scopes
        if max(state.until(scopes.model), state.until(scopes.whole)) > now:
            return GatewayError(
                "overloaded",
                f"{_shown(target.name)} is cooling down after repeated failures; "
                f"available again in {wait:.1f}s",
                retry_after=wait,
                provider=provider,
            )
        refused = await self._refusals(pool, target.model)
        if refused is not None:
            return GatewayError(
                "auth",
                f"every key of {provider} was refused by the provider (HTTP {refused}) and "
                f"is out of rotation for another {wait:.0f}s; the gateway's keys for "
                f"{provider} need attention",
                status=refused,
                provider=provider,
            )
        return GatewayError(
            "rate_limited",
            f"every key of {provider} is cooling down for {_shown(target.model)}; "
            f"available again in {wait:.1f}s",
            retry_after=wait,
            provider=provider,
        )

    # --- state --------------------------------------------------------------------------------

    def _healthy(self, state: ScopeState, now: float) -> tuple[list[int], float, bool]:
        """The usable keys; when none is, when the first one is again and whether the model
        (or the provider) itself is cooling down."""
        scopes = state.scopes
        if state.quiet:
            return scopes.everyone, now, False  # nothing cooling down, nothing failing
        until = state.until
        block = max(until(scopes.model), until(scopes.whole))
        keys = [max(until(own), until(for_model)) for own, for_model in scopes.per_key]
        if block <= now:
            healthy = [i for i, deadline in enumerate(keys) if deadline <= now]
            if healthy:
                return healthy, now, False
        return [], max(block, min(keys)), block > now

    async def _pick(self, pool: Pool, candidates: list[int]) -> int:
        if len(pool.credentials) == 1:
            return candidates[0]
        best = min(pool.tiers[i] for i in candidates)
        candidates = [i for i in candidates if pool.tiers[i] == best]
        if len(candidates) == 1:
            return candidates[0]
        rotation = pool.rotation
        if rotation == "fair_cycle":
            return await self._fair_cycle(pool, candidates)
        if rotation == "least_used":
            return await self._least_used(pool, candidates)
        turn = await self.store.incr(f"turn:{pool.name}")
        return candidates[(turn - 1) % len(candidates)]

    async def _fair_cycle(self, pool: Pool, candidates: list[int]) -> int:
        cycle_key = f"cycle:{pool.name}"
        claims = [f"claim:{pool.key(i)}" for i in candidates]
        for _ in range(2 * len(candidates) + 2):
            values = await self.store.get_many([cycle_key, *claims])
            cycle = int(values[0]) if values[0] is not None else 0
            free = [
                (i, key, value)
                for i, key, value in zip(candidates, claims, values[1:], strict=True)
                if (int(value) if value is not None else -1) < cycle
            ]
            if not free:
                # Every healthy key had its turn: start the next cycle (one racer wins).
                await self.store.compare_and_set(cycle_key, values[0], str(cycle + 1).encode())
                continue
            # A random free key rather than the first: racers on a shared store collide less.
            index, key, value = free[min(int(self._random() * len(free)), len(free) - 1)]
            if await self.store.compare_and_set(key, value, str(cycle).encode()):
                return index
        return candidates[0]  # heavy contention: any healthy key will do

    async def _least_used(self, pool: Pool, candidates: list[int]) -> int:
        keys = [f"used:{pool.key(i)}" for i in candidates]
        values = await self.store.get_many(keys)
        counts = [int(v) if v is not None else 0 for v in values]
        low = min(counts)
        ties = [n for n, count in enumerate(counts) if count == low]
        chosen = ties[min(int(self._random() * len(ties)), len(ties) - 1)]
        await self.store.incr(keys[chosen])
        return candidates[chosen]

    async def _succeeded(self, index: int, state: ScopeState) -> None:
        """Delete the failure counts this request saw for the scopes the success clears."""
        scopes = state.scopes
        own, for_model = scopes.per_key[index]
        for position in dict.fromkeys((own, for_model, scopes.model, scopes.whole)):
            if state.failed(position):
                await scopes.keys.delete(scopes.count + position)

    async def _failed(
        self, exchange: Exchange, pool: Pool, index: int, model: str, error: GatewayError
    ) -> None:
        kind = error.kind
        if kind == "rate_limited":
            if error.quota:
                seconds = (
                    error.retry_after if error.retry_after is not None else self.quota_cooldown
                )
                await self._cool(exchange, pool.key(index), seconds, "quota")
                return
            scope = pool.key_model(index, model) if pool.per_model else pool.key(index)
            count = await self.store.incr(f"fails:{scope}", ttl=self.failure_window)
            seconds = error.retry_after if error.retry_after is not None else self._backoff(count)
            await self._cool(exchange, scope, seconds, kind)
        elif kind == "auth":
            status = error.upstream_status or error.status
            scope = pool.key_model(index, model) if status == 403 else pool.key(index)
            await self._cool(exchange, scope, self.auth_cooldown, kind)
            # The refusal is remembered for as long as the key rests, so that a request that
            # finds every key out can say why (``_unavailable``); its first writer logs it.
            first = await self.store.compare_and_set(
                f"refused:{scope}",
                None,
                b"403" if status == 403 else b"401",
                ttl=self.auth_cooldown,
            )
            if first:
                credential = pool.credentials[index]
                logger.warning(
                    "%s refused credential %s (HTTP %s%s); out of rotation for %.0fs",
                    pool.name,
                    credential.id if credential is not None else "(none)",
                    status,
                    f", model {model_in_key(model)}" if status == 403 else "",
                    self.auth_cooldown,
                )
        elif kind in _MODEL_KINDS:
            await self._count(exchange, pool.model(model), error)
        elif kind == "connection":
            await self._count(exchange, pool.whole(), error)

    async def _refusals(self, pool: Pool, model: str) -> int | None:
        """The status that took every key out, when the provider refused each of them (401,
        or 403 for this model); ``None`` when some key rests for another reason."""
        keys: list[str] = []
        for index in range(len(pool.credentials)):
            keys.append(f"refused:{pool.key(index)}")
            keys.append(f"refused:{pool.key_model(index, model)}")
        values = await self.store.get_many(keys)
        statuses = [
            own or for_model for own, for_model in zip(values[::2], values[1::2], strict=True)
        ]
        if not all(statuses):
            return None
        return 401 if b"401" in statuses else 403

    async def _count(self, exchange: Exchange, scope: str, error: GatewayError) -> None:
        count = await self.store.incr(f"fails:{scope}", ttl=self.failure_window)
        if count >= self.failure_threshold:
            seconds = (
                error.retry_after
                if error.retry_after is not None
                else self._backoff(count - self.failure_threshold + 1)
            )
            await self._cool(exchange, scope, seconds, error.kind)

    async def _cool(self, exchange: Exchange, scope: str, seconds: float, reason: str) -> None:
        if seconds <= 0:
            return
        until = self._clock() + seconds
        # The store's own expiry only collects garbage; the deadline value decides.
        stored = await self.store.set_max(f"until:{scope}", until, ttl=seconds + 1.0)
        exchange.record(
            "cooldown.cool",
            scope=scope,
            reason=reason,
            seconds=round(seconds, 3),
            extended=stored == until,
        )

    def _backoff(self, failures: int) -> float:
        """Full jitter: uniform in [0, min(backoff_max, backoff_base * 2^(failures-1))]."""
        ceiling = min(self.backoff_max, self.backoff_base * 2.0 ** min(max(failures, 1) - 1, 62))
        return ceiling * self._random()


def _shown(name: str) -> str:
    """``name`` as a message may show it: as it is when printable and of a sane length,
    else escaped (a client chose it, and an error message goes out as JSON and into logs)."""
    if len(name) <= _SHOWN_LIMIT and name.isprintable():
        return name
    return ascii(name[:_SHOWN_LIMIT])


def _untried(keys: list[int], tried: tuple[int, ...]) -> list[int]:
    # A function, not a comprehension in ``__call__``: before Python 3.12 that would make
    # ``tried`` a cell, kept for as long as the call (a whole stream) lasts.
    return [i for i in keys if i not in tried]


def _failing(held: Held | None, blocked: bool) -> str:
    """The error kind the layer would give up with now: the last attempt's, or, before any,
    what every key (``blocked``: the model or provider) cooling down is."""
    if held is not None and held.error is not None:
        return held.error.kind
    return "overloaded" if blocked else "rate_limited"


def _with_retry_after(error: GatewayError, seconds: float) -> GatewayError:
    return GatewayError(
        error.kind,
        error.message,
        status=error.status,
        upstream_status=error.upstream_status,
        retry_after=seconds,
        param=error.param,
        code=error.code,
        provider=error.provider,
        quota=error.quota,
    )


def _per_provider(
    name: str, value: str | Mapping[str, str], default: str, allowed: Sequence[str], known: set[str]
) -> dict[str, str]:
    if isinstance(value, str):
        if value not in allowed:
            raise ValueError(f"{name}: {value!r} is not one of {', '.join(allowed)}")
        return dict.fromkeys(known, value)
    result = dict.fromkeys(known, default)
    for provider, choice in value.items():
        if provider not in known:
            raise ValueError(f"{name}: unknown provider {provider!r}")
        if choice not in allowed:
            raise ValueError(f"{name}.{provider}: {choice!r} is not one of {', '.join(allowed)}")
        result[provider] = choice
    return result
