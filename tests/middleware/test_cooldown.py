"""CooldownRetry with a hand-built scope, a scripted inner app, a recording send and a fake
clock: nothing here sleeps."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import Any

import anyio
import pytest

from asgi_rotator.answer import send_error
from asgi_rotator.config import parse_config
from asgi_rotator.errors import GatewayError
from asgi_rotator.exchange import EVENT, RECORD, RESPONSE, SCOPE_KEY, Attempt, Exchange
from asgi_rotator.middleware.cooldown import CooldownRetry
from asgi_rotator.providers import Providers
from asgi_rotator.state import MemoryStore
from asgi_rotator.unified import Error, Finish, MessageStart, Response, TextDelta

pytestmark = pytest.mark.anyio

NOTHING: Any = None  # a receive or send the layer must not touch

# --- harness (also used by test_fallback) ---------------------------------------------------


class Clock:
    """A fake wall clock; ``sleep`` advances it instead of waiting."""

    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def make_providers(
    keys: dict[str, int] | None = None, groups: dict[str, Any] | None = None
) -> Providers:
    """Providers p, q ... with n keys each (``k-<provider>-<i>``), speaking OpenAI Chat."""
    keys = keys or {"p": 3}
    config = {
        "providers": {
            name: {
                "protocol": "openai_chat",
                "base_url": f"http://{name}.invalid/v1",
                "keys": [f"k-{name}-{i}" for i in range(n)],
                # The upstream is a stand-in: no models endpoint to discover from.
                "discover_models": False,
            }
            for name, n in keys.items()
        },
        "groups": groups or {},
    }
    return Providers(parse_config(config, {}), {})


Outcome = Any  # "ok" | "stream" | GatewayError | ("inband", GatewayError) | ("late", GatewayError)


class Upstream:
    """A stand-in for dispatch: answers per (provider/model, credential id) from a script,
    records an Attempt like dispatch does, and logs every call."""

    def __init__(self, script: Callable[[str, str | None, int], Outcome] | None = None) -> None:
        self.script = script or (lambda target, key, n: "ok")
        self.calls: list[tuple[str, str | None]] = []
        self.requests: list[Any] = []

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        message = await receive()
        assert message["type"] == "http.request" and message["body"]
        exchange: Exchange = scope[SCOPE_KEY]
        request: Any = exchange.request
        target = exchange.current.target
        name = target.name if target is not None else request.model
        key = exchange.current.credential.id if exchange.current.credential is not None else None
        self.calls.append((name, key))
        self.requests.append(request)
        attempt = Attempt(
            number=len(exchange.attempts) + 1,
            provider=name.partition("/")[0],
            model=name.partition("/")[2],
            credential=key,
        )
        exchange.attempts.append(attempt)
        outcome = self.script(name, key, len(self.calls))
        if isinstance(outcome, GatewayError):
            attempt.kind, attempt.status = outcome.kind, outcome.status
            await send_error(send, exchange.protocol, outcome)
            return
        attempt.status = 200
        if outcome == "ok" and request.stream:
            outcome = "stream"
        if outcome == "ok":
            response = Response(id="r1", model=name)
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b'{"id":"r1"}', RESPONSE: response})
            return
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send(
            {
                "type": "http.response.body",
                "body": b"start",
                "more_body": True,
                EVENT: [MessageStart(id="r1", model=name)],
            }
        )
        if isinstance(outcome, tuple) and outcome[0] == "inband":
            attempt.kind = outcome[1].kind
            await send(
                {
                    "type": "http.response.body",
                    "body": b"error",
                    "more_body": True,
                    EVENT: [Error(error=outcome[1])],
                }
            )
            await send({"type": "http.response.body", "body": b"", "more_body": False})
            return
        await send(
            {
                "type": "http.response.body",
                "body": b"hello",
                "more_body": True,
                EVENT: [TextDelta(index=0, text="hello")],
            }
        )
        if isinstance(outcome, tuple) and outcome[0] == "late":
            await send(
                {
                    "type": "http.response.body",
                    "body": b"error",
                    "more_body": True,
                    EVENT: [Error(error=outcome[1])],
                }
            )
        else:
            await send(
                {"type": "http.response.body", "body": b"fin", "more_body": True, EVENT: [Finish()]}
            )
        await send({"type": "http.response.body", "body": b"", "more_body": False})


class Result:
    def __init__(self, messages: list[dict[str, Any]], exchange: Exchange | None) -> None:
        self.messages = messages
        self.exchange = exchange

    @property
    def status(self) -> int:
        return int(self.messages[0]["status"])

    @property
    def headers(self) -> dict[bytes, bytes]:
        return dict(self.messages[0]["headers"])

    @property
    def attempts(self) -> int:
        return int(self.headers[b"x-rotator-attempts"])

    @property
    def body(self) -> bytes:
        return b"".join(m.get("body", b"") for m in self.messages[1:])

    def json(self) -> Any:
        return json.loads(self.body)


async def call(
    app: Any,
    model: str = "p/m",
    *,
    stream: bool = False,
    path: str = "/v1/chat/completions",
    body: dict[str, Any] | None = None,
) -> Result:
    payload = body or {
        "model": model,
        "messages": [{"role": "user", "content": "hi"}],
        "stream": stream,
    }
    raw = json.dumps(payload).encode()
    scope: dict[str, Any] = {
        "type": "http",
        "method": "POST",
        "path": path,
        "root_path": "",
        "query_string": b"",
        "headers": [(b"content-type", b"application/json")],
        RECORD: True,  # the tests read the exchange's transform passes
    }
    sent = False

    async def receive() -> dict[str, Any]:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": raw, "more_body": False}
        await anyio.sleep_forever()
        raise AssertionError

    messages: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        messages.append(dict(message))

    await app(scope, receive, send)
    return Result(messages, scope.get(SCOPE_KEY))


def rate_limited(retry_after: float | None = None, **kw: Any) -> GatewayError:
    return GatewayError("rate_limited", "slow down", retry_after=retry_after, **kw)


def layer(upstream: Any, providers: Providers, clock: Clock, **kw: Any) -> CooldownRetry:
    kw.setdefault("random", lambda: 1.0)
    return CooldownRetry(
        upstream,
        providers=providers,
        clock=clock,
        sleep=clock.sleep,
        store=kw.pop("store", None) or MemoryStore(),
        **kw,
    )


# --- rotation ------------------------------------------------------------------------------


async def test_round_robin_spreads_requests_over_every_key() -> None:
    upstream = Upstream()
    app = layer(upstream, make_providers(), Clock())
    for _ in range(6):
        assert (await call(app)).status == 200
    assert [key for _, key in upstream.calls] == ["p#0", "p#1", "p#2"] * 2


async def test_round_robin_is_fair_under_concurrency() -> None:
    upstream = Upstream()
    app = layer(upstream, make_providers({"p": 4}), Clock())
    async with anyio.create_task_group() as group:
        for _ in range(100):
            group.start_soon(call, app)
    counts = {
        key: sum(1 for _, k in upstream.calls if k == key) for key in ("p#0", "p#1", "p#2", "p#3")
    }
    assert counts == {"p#0": 25, "p#1": 25, "p#2": 25, "p#3": 25}


async def test_fair_cycle_uses_every_healthy_key_once_before_any_twice() -> None:
    clock = Clock()
    cooled: set[str] = {"p#1"}

    def script(target: str, key: str | None, n: int) -> Outcome:
        return rate_limited(10) if key in cooled else "ok"

    upstream = Upstream(script)
    app = layer(upstream, make_providers(), clock, rotation="fair_cycle", random=lambda: 0.0)
    for _ in range(3):
        await call(app)
    # p#1 failed its turn (and was retried on p#2); from then on p#0 and p#2 take turns.
    assert upstream.calls[:4] == [("p/m", "p#0"), ("p/m", "p#1"), ("p/m", "p#2"), ("p/m", "p#0")]
    cooled.clear()
    upstream.calls.clear()
    for _ in range(4):
        await call(app)
    assert [k for _, k in upstream.calls] == ["p#2", "p#0", "p#2", "p#0"]
    clock.now += 11  # p#1 is back: it gets one turn per cycle, it does not catch up
    upstream.calls.clear()
    for _ in range(6):
        await call(app)
    keys = [k for _, k in upstream.calls]
    assert keys.count("p#1") == 2 and keys.count("p#0") == 2 and keys.count("p#2") == 2
    for cycle in (keys[:3], keys[3:]):
        assert sorted(map(str, cycle)) == ["p#0", "p#1", "p#2"]


async def test_least_used_picks_the_key_with_fewest_selections() -> None:
    clock = Clock()
    answers = iter([rate_limited(5)])
    upstream = Upstream(lambda t, key, n: next(answers, "ok"))
    app = layer(upstream, make_providers(), clock, rotation="least_used", random=lambda: 0.0)
    for _ in range(5):
        await call(app)
    keys = [k for _, k in upstream.calls]
    assert keys[:2] == ["p#0", "p#1"]  # p#0 was rate limited, retried on p#1
    clock.now += 6
    upstream.calls.clear()
    for _ in range(3):
        await call(app)
    # p#0 (1 use) and p#2 (2 uses) are behind p#1 (3 uses).
    assert [k for _, k in upstream.calls] == ["p#0", "p#0", "p#2"]


async def test_priority_tiers_use_lower_tiers_only_when_higher_ones_are_cooling() -> None:
    clock = Clock()
    failing: set[str] = set()
    upstream = Upstream(lambda t, key, n: rate_limited(30) if key in failing else "ok")
    app = layer(
        upstream, make_providers({"p": 3}), clock, rotation="priority", tiers={"p": [0, 0, 1]}
    )
    for _ in range(4):
        await call(app)
    assert [k for _, k in upstream.calls] == ["p#0", "p#1", "p#0", "p#1"]
    failing.update({"p#0", "p#1"})
    upstream.calls.clear()
    await call(app)
    await call(app)
    assert [k for _, k in upstream.calls] == ["p#0", "p#1", "p#2", "p#2"]


async def test_priority_without_tiers_is_the_configured_key_order() -> None:
    clock = Clock()
    upstream = Upstream(lambda t, key, n: rate_limited(30) if key == "p#0" else "ok")
    app = layer(upstream, make_providers(), clock, rotation="priority")
    for _ in range(3):
        await call(app)
    assert [k for _, k in upstream.calls] == ["p#0", "p#1", "p#1", "p#1"]


# --- cooldowns ------------------------------------------------------------------------------


async def test_rate_limited_key_is_skipped_until_its_retry_after_passed() -> None:
    clock = Clock()
    limited = True
    upstream = Upstream(lambda t, key, n: rate_limited(20) if key == "p#0" and limited else "ok")
    app = layer(upstream, make_providers({"p": 2}), clock)
    result = await call(app)
    assert result.status == 200 and result.attempts == 2
    assert upstream.calls == [("p/m", "p#0"), ("p/m", "p#1")]
    upstream.calls.clear()
    for _ in range(4):
        clock.now += 4.9
        await call(app)
    assert {k for _, k in upstream.calls} == {"p#1"}  # 19.6 s later: still cooling
    limited = False
    clock.now += 0.5
    upstream.calls.clear()
    await call(app)
    await call(app)
    assert {k for _, k in upstream.calls} == {"p#0", "p#1"}


async def test_one_keys_429_never_cools_the_provider_or_the_model() -> None:
    store = MemoryStore()
    upstream = Upstream(lambda t, key, n: rate_limited(60) if key == "p#0" else "ok")
    app = layer(upstream, make_providers(), Clock(), store=store)
    await call(app)
    assert await store.get("cooldown:until:key:p#0") is not None
    assert await store.get("cooldown:until:provider:p") is None
    assert await store.get("cooldown:until:model:p/m") is None


async def test_cooldown_extension_never_shortens() -> None:
    clock = Clock()
    store = MemoryStore()
    answers = iter([rate_limited(60), rate_limited(5)])
    upstream = Upstream(lambda t, key, n: next(answers) if key == "p#0" else "ok")
    app = layer(upstream, make_providers({"p": 1, "q": 1}), clock, store=store)
    result = await call(app)
    assert result.status == 429
    until = float(await store.get("cooldown:until:key:p#0") or 0)
    assert until == clock.now + 60
    # Another worker that still picked p#0 gets a shorter retry-after: the deadline stays.
    other = layer(upstream, make_providers({"p": 1, "q": 1}), clock, store=store)
    await store.delete("cooldown:until:key:p#0")
    await store.set_max("cooldown:until:key:p#0", until)
    clock.now += 1
    stale = Exchange({"type": "http"})
    pool = other._pools["p"]
    await other._failed(stale, pool, 0, "m", rate_limited(5))
    assert float(await store.get("cooldown:until:key:p#0") or 0) == until
    # ... while a longer one extends it.
    await other._failed(stale, pool, 0, "m", rate_limited(120))
    assert float(await store.get("cooldown:until:key:p#0") or 0) == clock.now + 120


async def test_a_later_shorter_retry_after_does_not_revive_a_key() -> None:
    clock = Clock()
    answers = {"p#0": iter([rate_limited(60)]), "p#1": iter([rate_limited(1)])}
    upstream = Upstream(lambda t, key, n: next(answers[str(key)], "ok"))
    app = layer(upstream, make_providers({"p": 2}), clock, max_wait=2)
    result = await call(app)
    # p#0 cooled 60 s, p#1 1 s: the layer waits for p#1 (within max_wait), not p#0.
    assert result.status == 200 and clock.slept == [1]
    assert upstream.calls == [("p/m", "p#0"), ("p/m", "p#1"), ("p/m", "p#1")]


async def test_backoff_without_retry_after_grows_and_success_resets_it() -> None:
    clock = Clock()
    store = MemoryStore()
    failing = True
    upstream = Upstream(lambda t, key, n: rate_limited() if failing else "ok")
    app = layer(upstream, make_providers({"p": 1}), clock, store=store, backoff_base=2, max_wait=0)
    deadlines = []
    for _ in range(3):
        result = await call(app)
        assert result.status == 429
        deadlines.append(float(await store.get("cooldown:until:key:p#0") or 0) - clock.now)
        clock.now += 100
    assert deadlines == [2, 4, 8]  # full jitter with random() == 1.0: the ceiling
    assert await store.get("cooldown:fails:key:p#0") == b"3"
    failing = False
    assert (await call(app)).status == 200
    assert await store.get("cooldown:fails:key:p#0") is None
    failing = True
    await call(app)
    assert float(await store.get("cooldown:until:key:p#0") or 0) - clock.now == 2


async def test_full_jitter_draws_below_the_ceiling() -> None:
    clock = Clock()
    store = MemoryStore()
    upstream = Upstream(lambda t, key, n: rate_limited())
    app = layer(
        upstream, make_providers({"p": 1}), clock, store=store, random=lambda: 0.25, max_wait=0
    )
    await call(app)
    assert float(await store.get("cooldown:until:key:p#0") or 0) - clock.now == 0.25


async def test_per_model_rate_limit_scope_cools_the_key_for_that_model_only() -> None:
    clock = Clock()
    upstream = Upstream(
        lambda t, key, n: rate_limited(30) if t == "p/big" and key == "p#0" else "ok"
    )
    app = layer(
        upstream, make_providers({"p": 2}), clock, rate_limit_scope={"p": "credential_model"}
    )
    await call(app, "p/big")
    upstream.calls.clear()
    for _ in range(2):
        await call(app, "p/small")
        await call(app, "p/big")
    assert [c for c in upstream.calls if c[0] == "p/big"] == [("p/big", "p#1")] * 2
    assert {k for t, k in upstream.calls if t == "p/small"} == {"p#0", "p#1"}


async def test_quota_error_cools_the_key_for_the_stated_reset_or_the_default() -> None:
    clock = Clock()
    store = MemoryStore()
    answers = iter([rate_limited(quota=True), rate_limited(7200, quota=True)])
    upstream = Upstream(lambda t, key, n: next(answers, "ok"))
    app = layer(upstream, make_providers({"p": 2}), clock, store=store, quota_cooldown=900)
    await call(app)
    assert float(await store.get("cooldown:until:key:p#0") or 0) == clock.now + 900
    assert float(await store.get("cooldown:until:key:p#1") or 0) == clock.now + 7200


async def test_auth_failure_takes_the_key_out_and_is_logged_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = Clock()
    store = MemoryStore()
    refused = GatewayError(
        "auth", "Incorrect API key provided: k-p-0", status=401, upstream_status=401
    )
    upstream = Upstream(lambda t, key, n: refused if key == "p#0" else "ok")
    providers = make_providers({"p": 2})
    # Two workers sharing one store, both picking p#0 before either cooled it.
    first = layer(upstream, providers, clock, store=store, auth_cooldown=1800, rotation="priority")
    second = layer(upstream, providers, clock, store=store, auth_cooldown=1800, rotation="priority")
    with caplog.at_level(logging.WARNING, logger="asgi_rotator.cooldown"):
        assert (await call(first)).status == 200
        await store.delete("cooldown:until:key:p#0")
        assert (await call(second)).status == 200
    assert float(await store.get("cooldown:until:key:p#0") or 0) == clock.now + 1800
    warnings = [r for r in caplog.records if r.name == "asgi_rotator.cooldown"]
    assert len(warnings) == 1
    assert "p#0" in warnings[0].getMessage() and "k-p-0" not in warnings[0].getMessage()


async def test_forbidden_takes_the_key_out_for_that_model_only() -> None:
    clock = Clock()
    forbidden = GatewayError("auth", "no access to this model", status=403, upstream_status=403)
    upstream = Upstream(lambda t, key, n: forbidden if t == "p/secret" else "ok")
    app = layer(upstream, make_providers({"p": 1}), clock)
    assert (await call(app, "p/secret")).status == 403
    assert (await call(app, "p/open")).status == 200
    result = await call(app, "p/secret")
    # Cooling, so no upstream call, and said as what it is: a refusal, not a rate limit.
    assert result.status == 403 and result.attempts == 0
    assert result.json()["error"]["code"] != "rate_limit_exceeded"
    assert b"retry-after" not in result.headers


async def test_server_errors_cool_the_model_after_the_threshold() -> None:
    clock = Clock()
    store = MemoryStore()
    upstream = Upstream(lambda t, key, n: GatewayError("server_error", "boom", status=500))
    app = layer(
        upstream,
        make_providers({"p": 3}),
        clock,
        store=store,
        failure_threshold=3,
        backoff_base=4,
        max_wait=0,
    )
    result = await call(app)
    assert result.status == 500 and result.attempts == 3
    assert sorted(str(k) for _, k in upstream.calls) == ["p#0", "p#1", "p#2"]  # another key first
    assert float(await store.get("cooldown:until:model:p/m") or 0) == clock.now + 4
    for index in range(3):
        assert await store.get(f"cooldown:until:key:p#{index}") is None
    upstream.calls.clear()
    result = await call(app)
    assert result.status == 503 and upstream.calls == []
    assert result.headers[b"retry-after"] == b"4"


async def test_connection_failures_cool_the_provider_after_the_threshold() -> None:
    clock = Clock()
    store = MemoryStore()
    refused = GatewayError("connection", "connection refused")
    upstream = Upstream(lambda t, key, n: refused)
    app = layer(
        upstream, make_providers({"p": 2}), clock, store=store, failure_threshold=2, max_wait=0
    )
    await call(app)
    assert await store.get("cooldown:until:provider:p") is not None
    upstream.calls.clear()
    assert (await call(app, "p/other")).status == 503
    assert upstream.calls == []


async def test_success_resets_the_model_failure_count() -> None:
    clock = Clock()
    store = MemoryStore()
    answers = iter([GatewayError("overloaded", "busy", status=529)])
    upstream = Upstream(lambda t, key, n: next(answers, "ok"))
    app = layer(upstream, make_providers({"p": 2}), clock, store=store)
    result = await call(app)
    assert result.status == 200 and result.attempts == 2
    assert await store.get("cooldown:fails:model:p/m") is None


# --- retries and budget ---------------------------------------------------------------------


async def test_retries_are_bounded_by_max_attempts() -> None:
    clock = Clock()
    upstream = Upstream(lambda t, key, n: GatewayError("overloaded", "busy", status=503))
    app = layer(upstream, make_providers({"p": 5}), clock, max_attempts=2, failure_threshold=99)
    result = await call(app)
    assert result.status == 503 and len(upstream.calls) == 2 and result.attempts == 2


async def test_single_key_retry_pauses_with_backoff_or_retry_after() -> None:
    clock = Clock()
    answers = iter(
        [
            GatewayError("overloaded", "busy", status=503, retry_after=1.5),
            GatewayError("server_error", "x"),
        ]
    )
    upstream = Upstream(lambda t, key, n: next(answers, "ok"))
    app = layer(upstream, make_providers({"p": 1}), clock, backoff_base=0.5, failure_threshold=99)
    assert (await call(app)).status == 200
    assert clock.slept == [1.5, 1.0]  # retry-after, then backoff ceiling 0.5 * 2 (random == 1)


async def test_every_key_cooling_past_the_budget_fails_at_once() -> None:
    clock = Clock()
    upstream = Upstream(lambda t, key, n: rate_limited(60))
    app = layer(upstream, make_providers({"p": 2}), clock, max_wait=30, retry_budget=10)
    first = await call(app)
    assert first.status == 429 and first.attempts == 2
    assert first.headers[b"retry-after"] == b"60"
    upstream.calls.clear()
    clock.now += 15
    result = await call(app)
    assert result.status == 429 and upstream.calls == [] and clock.slept == []
    assert result.headers[b"retry-after"] == b"45"  # the earliest key's remaining cooldown
    assert "cooling down" in result.json()["error"]["message"]


async def test_retry_after_of_the_answer_is_the_earliest_key() -> None:
    clock = Clock()
    answers = {"p#0": rate_limited(40), "p#1": rate_limited(90)}
    upstream = Upstream(lambda t, key, n: answers[str(key)])
    app = layer(upstream, make_providers({"p": 2}), clock, max_wait=0)
    result = await call(app)
    assert result.status == 429 and result.headers[b"retry-after"] == b"40"


async def test_waits_for_a_key_that_is_back_within_max_wait() -> None:
    clock = Clock()
    answers = iter([rate_limited(3)])
    upstream = Upstream(lambda t, key, n: next(answers, "ok"))
    app = layer(upstream, make_providers({"p": 1}), clock, max_wait=5)
    result = await call(app)
    assert result.status == 200 and clock.slept == [3] and result.attempts == 2


class EarlyClock(Clock):
    """A clock whose sleeps end half a millisecond early, as a loop timer's may (uvloop's
    count whole milliseconds from when the loop last read its clock)."""

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds - min(0.0005, seconds / 2)


async def test_a_wait_that_ends_early_is_still_one_wait_for_the_key() -> None:
    clock = EarlyClock()
    answers = iter([rate_limited(3)])
    upstream = Upstream(lambda t, key, n: next(answers, "ok"))
    app = layer(upstream, make_providers({"p": 1}), clock, max_wait=5, max_attempts=1)
    assert (await call(app)).status == 429  # its one attempt was refused; the key cools 3 s
    # The next request waits for the key.  Its timer ending a hair early is not the key
    # cooling down again: no 429 "available again in 0.0s".
    result = await call(app)
    assert result.status == 200 and result.attempts == 1
    assert clock.slept[0] == 3 and clock.now >= 1_000_003


async def test_budget_is_shared_by_every_target_of_one_request() -> None:
    clock = Clock()

    async def slow_failure(scope: Any, receive: Any, send: Any) -> None:
        clock.now += 8
        await Upstream(lambda t, key, n: GatewayError("timeout", "slow", status=504))(
            scope, receive, send
        )

    app = layer(
        slow_failure, make_providers({"p": 3}), clock, retry_budget=10, failure_threshold=99
    )
    result = await call(app)
    assert result.status == 504 and result.attempts == 2  # 8 s, 16 s: no budget left


async def test_non_retryable_errors_are_answered_at_once() -> None:
    upstream = Upstream(lambda t, key, n: GatewayError("bad_request", "no such parameter"))
    app = layer(upstream, make_providers(), Clock())
    result = await call(app)
    assert result.status == 400 and len(upstream.calls) == 1
    assert result.json()["error"]["message"] == "no such parameter"


async def test_error_event_before_content_is_retried_on_another_key() -> None:
    busy = GatewayError("overloaded", "Overloaded", status=529)
    upstream = Upstream(lambda t, key, n: ("inband", busy) if key == "p#0" else "stream")
    app = layer(upstream, make_providers({"p": 2}), Clock())
    result = await call(app, stream=True)
    assert result.status == 200 and result.attempts == 2
    assert result.body == b"starthellofin"
    assert [k for _, k in upstream.calls] == ["p#0", "p#1"]


async def test_a_retried_success_leaves_no_error_on_the_exchange() -> None:
    # The request log and the request span read ``exchange.current.error``: a 200 after a retry
    # must not show the first key's failure as the request's.
    upstream = Upstream(lambda t, key, n: rate_limited(20) if key == "p#0" else "ok")
    app = layer(upstream, make_providers({"p": 2}), Clock())
    for stream in (False, True):
        result = await call(app, stream=stream)
        assert result.status == 200 and result.exchange is not None
        assert result.exchange.current.error is None


async def test_error_event_on_the_last_attempt_becomes_an_error_response() -> None:
    busy = GatewayError("overloaded", "Overloaded", status=529)
    upstream = Upstream(lambda t, key, n: ("inband", busy))
    app = layer(upstream, make_providers({"p": 1}), Clock(), max_attempts=1)
    result = await call(app, stream=True)
    # 529 is Anthropic's; an OpenAI client gets 503.
    assert result.status == 503 and result.json()["error"]["message"] == "Overloaded"


async def test_nothing_is_retried_after_commit() -> None:
    late = GatewayError("server_error", "cut")
    upstream = Upstream(lambda t, key, n: ("late", late))
    app = layer(upstream, make_providers({"p": 2}), Clock())
    result = await call(app, stream=True)
    assert result.status == 200 and len(upstream.calls) == 1
    assert result.body == b"starthelloerror"


# --- standalone -----------------------------------------------------------------------------


async def test_works_alone_around_a_foreign_app() -> None:
    seen: list[str | None] = []

    async def foreign(scope: Any, receive: Any, send: Any) -> None:
        body = (await receive())["body"]
        assert json.loads(body)["model"] == "p/m"
        credential = scope[SCOPE_KEY].current.credential
        seen.append(credential.id if credential else None)
        status = 503 if len(seen) == 1 else 200
        await send({"type": "http.response.start", "status": status, "headers": []})
        await send({"type": "http.response.body", "body": b"plain bytes"})

    app = layer(foreign, make_providers({"p": 2}), Clock())
    result = await call(app)
    assert result.status == 200 and result.body == b"plain bytes"
    assert seen == ["p#0", "p#1"]
    assert result.exchange is not None and [a.status for a in result.exchange.attempts] == [
        503,
        200,
    ]
    assert result.attempts == 2


async def test_passes_through_what_it_does_not_handle() -> None:
    seen: list[str] = []

    async def inner(scope: Any, receive: Any, send: Any) -> None:
        seen.append(scope["type"] if scope["type"] != "http" else scope["path"])
        if scope["type"] == "http":
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b"models"})

    app = layer(inner, make_providers(), Clock())
    await app({"type": "lifespan"}, NOTHING, NOTHING)
    scope = {
        "type": "http",
        "method": "GET",
        "path": "/v1/models",
        "headers": [],
        "query_string": b"",
    }
    sent: list[Any] = []

    async def send(message: Any) -> None:
        sent.append(message)

    await app(scope, NOTHING, send)
    assert seen == ["lifespan", "/v1/models"] and sent[-1]["body"] == b"models"


async def test_bad_request_body_is_an_error_in_the_clients_protocol() -> None:
    app = layer(Upstream(), make_providers(), Clock())
    result = await call(app, path="/v1/messages", body={"messages": "nope"})
    assert result.status == 400 and result.json()["type"] == "error"


async def test_resolves_the_target_and_its_params_when_no_layer_chose_one() -> None:
    providers = make_providers(
        {"p": 1}, groups={"g": {"targets": [{"target": "p/m", "params": {"max_tokens": 9}}]}}
    )
    upstream = Upstream()
    app = layer(upstream, providers, Clock())
    assert (await call(app, "g")).status == 200
    assert upstream.calls == [("p/m", "p#0")] and upstream.requests[0].max_tokens == 9


async def test_unknown_model_is_not_found() -> None:
    result = await call(layer(Upstream(), make_providers({"p": 1, "q": 1}), Clock()), "nope")
    assert result.status == 404 and result.attempts == 0


async def test_provider_without_keys_cools_as_a_whole() -> None:
    config = parse_config(
        {"providers": {"local": {"protocol": "openai_chat", "base_url": "http://l.invalid/v1"}}}, {}
    )
    clock = Clock()
    upstream = Upstream(lambda t, key, n: rate_limited(10) if n == 1 else "ok")
    app = layer(upstream, Providers(config, {}), clock, max_wait=0)
    assert (await call(app, "local/m")).status == 429
    assert (await call(app, "local/m")).status == 429 and len(upstream.calls) == 1
    clock.now += 10
    assert (await call(app, "local/m")).status == 200


@pytest.mark.parametrize(
    "options",
    [
        {"rotation": "random"},
        {"rotation": {"nope": "round_robin"}},
        {"tiers": {"p": [0, 1]}},
        {"rate_limit_scope": "model"},
        {"max_attempts": 0},
        {"retry_on": ["teapot"]},
        {"backoff_base": 2, "backoff_max": 1},
        {"max_wait": -1},
    ],
)
def test_options_are_validated_at_construction(options: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        CooldownRetry(Upstream(), providers=make_providers(), **options)


class CountingStore(MemoryStore):
    """A memory store that counts its round trips and writes."""

    def __init__(self) -> None:
        super().__init__()
        self.reads = 0
        self.writes = 0

    async def get_many(self, keys: Any) -> list[bytes | None]:
        self.reads += 1
        return await super().get_many(keys)

    async def delete(self, key: str) -> bool:
        self.writes += 1
        return await super().delete(key)

    async def incr(self, key: str, amount: int = 1, *, ttl: float | None = None) -> int:
        self.writes += 1
        return await super().incr(key, amount, ttl=ttl)

    async def set_max(self, key: str, value: float, *, ttl: float | None = None) -> float:
        self.writes += 1
        return await super().set_max(key, value, ttl=ttl)


async def test_a_success_with_nothing_recorded_reads_once_and_writes_nothing() -> None:
    store = CountingStore()
    app = layer(Upstream(), make_providers({"p": 1}), Clock(), store=store)
    for _ in range(3):
        assert (await call(app)).status == 200
    assert (store.reads, store.writes) == (3, 0)


async def test_a_success_clears_only_the_failure_counts_it_saw() -> None:
    clock = Clock()
    store = CountingStore()
    failing = True
    upstream = Upstream(lambda t, key, n: rate_limited() if failing else "ok")
    app = layer(upstream, make_providers({"p": 1}), clock, store=store, max_wait=0)
    assert (await call(app)).status == 429
    assert await store.get("cooldown:fails:key:p#0") == b"1"
    clock.now += 100
    failing = False
    writes = store.writes
    assert (await call(app)).status == 200
    assert store.writes == writes + 1  # the one delete
    assert await store.get("cooldown:fails:key:p#0") is None
    writes = store.writes
    assert (await call(app)).status == 200
    assert store.writes == writes


async def test_scope_keys_are_kept_for_a_bounded_number_of_models() -> None:
    upstream = Upstream()
    app = layer(upstream, make_providers({"p": 1}), Clock())
    for n in range(1100):
        assert (await call(app, model=f"p/m{n}")).status == 200
    assert all(len(pool._scopes) <= 1024 for pool in app._pools.values())
