"""A group never waits on a failing target while another can answer now (issue 14 item 3):
FallbackRouter over CooldownRetry, with a scripted inner app and a fake clock that records
every sleep."""

from __future__ import annotations

from typing import Any

import pytest

from asgi_rotator.errors import GatewayError
from asgi_rotator.middleware.cooldown import CooldownRetry
from asgi_rotator.middleware.fallback import FallbackRouter
from asgi_rotator.state import MemoryStore
from tests.middleware.test_cooldown import Clock, Upstream, call, make_providers, rate_limited

pytestmark = pytest.mark.anyio

TIMEOUT = GatewayError("timeout", "no first byte within 2s")


def stack(
    script: Any, keys: dict[str, int], targets: list[str], **options: Any
) -> tuple[Any, Upstream, Clock, MemoryStore]:
    clock = Clock()
    store = MemoryStore()
    providers = make_providers(keys, groups={"g": {"targets": targets}})
    upstream = Upstream(script)
    options.setdefault("random", lambda: 1.0)
    cooldown = CooldownRetry(
        upstream, providers=providers, store=store, clock=clock, sleep=clock.sleep, **options
    )
    return FallbackRouter(cooldown, providers=providers), upstream, clock, store


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
async def test_a_429_with_retry_after_moves_on_without_waiting(stream: bool) -> None:
    app, upstream, clock, _ = stack(
        lambda t, key, n: rate_limited(2) if t == "a/m" else "ok",
        {"a": 1, "b": 1},
        ["a/m", "b/m"],
    )
    result = await call(app, "g", stream=stream)
    assert result.status == 200 and result.attempts == 2
    assert upstream.calls == [("a/m", "a#0"), ("b/m", "b#0")]
    assert clock.slept == []


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
async def test_a_timed_out_key_is_not_retried_while_the_next_target_can_answer(
    stream: bool,
) -> None:
    app, upstream, clock, _ = stack(
        lambda t, key, n: TIMEOUT if t == "a/m" else "ok", {"a": 1, "b": 1}, ["a/m", "b/m"]
    )
    result = await call(app, "g", stream=stream)
    assert result.status == 200
    assert upstream.calls == [("a/m", "a#0"), ("b/m", "b#0")]
    assert clock.slept == []


async def test_another_key_of_the_same_target_is_tried_first_if_available_now() -> None:
    app, upstream, clock, _ = stack(
        lambda t, key, n: TIMEOUT if t == "a/m" else "ok", {"a": 2, "b": 1}, ["a/m", "b/m"]
    )
    result = await call(app, "g")
    assert result.status == 200
    assert upstream.calls == [("a/m", "a#0"), ("a/m", "a#1"), ("b/m", "b#0")]
    assert clock.slept == []


async def test_a_target_cooling_down_briefly_is_skipped_not_waited_for() -> None:
    # a's one key rests for 2 s (less than max_wait): alone it would be waited for.
    answers = iter([rate_limited(2)])
    app, upstream, clock, _ = stack(
        lambda t, key, n: next(answers, "ok") if t == "a/m" else "ok",
        {"a": 1, "b": 1},
        ["a/m", "b/m"],
    )
    await call(app, "g")
    upstream.calls.clear()
    result = await call(app, "g")
    assert result.status == 200 and result.attempts == 1
    assert upstream.calls == [("b/m", "b#0")]
    assert clock.slept == []


async def test_the_last_target_still_waits_within_the_budget_when_nothing_can_answer() -> None:
    # Both targets rate limited for 2 s: nobody can answer now, so a wait is worth it, and
    # the last target (nobody after it) waits for its key.
    answers = {"a/m": iter([rate_limited(2)]), "b/m": iter([rate_limited(2)])}
    app, upstream, clock, _ = stack(
        lambda t, key, n: next(answers[t], "ok"), {"a": 1, "b": 1}, ["a/m", "b/m"]
    )
    result = await call(app, "g")
    assert result.status == 200
    assert upstream.calls == [("a/m", "a#0"), ("b/m", "b#0"), ("b/m", "b#0")]
    assert clock.slept == [2]


async def test_the_last_target_never_waits_beyond_the_budget() -> None:
    answers = {"a/m": iter([rate_limited(2)]), "b/m": iter([rate_limited(2)])}
    app, upstream, clock, _ = stack(
        lambda t, key, n: next(answers[t], "ok"),
        {"a": 1, "b": 1},
        ["a/m", "b/m"],
        retry_budget=1,
    )
    result = await call(app, "g")
    assert result.status == 429 and result.headers[b"retry-after"] == b"2"
    assert len(upstream.calls) == 2 and clock.slept == []


async def test_a_failure_that_does_not_fall_back_is_still_retried_on_another_key() -> None:
    # auth does not move the group on (it would fail everywhere), so the target's other key
    # is tried, as a single target's would be.
    refused = GatewayError("auth", "bad key", status=401)
    app, upstream, _, _ = stack(
        lambda t, key, n: refused if key == "a#0" else "ok", {"a": 2, "b": 1}, ["a/m", "b/m"]
    )
    result = await call(app, "g")
    assert result.status == 200
    assert upstream.calls == [("a/m", "a#0"), ("a/m", "a#1")]


async def test_a_single_target_keeps_its_retries_and_waits() -> None:
    answers = iter([rate_limited(2)])
    clock = Clock()
    providers = make_providers({"a": 1})
    upstream = Upstream(lambda t, key, n: next(answers, "ok"))
    app = FallbackRouter(
        CooldownRetry(
            upstream, providers=providers, store=MemoryStore(), clock=clock, sleep=clock.sleep
        ),
        providers=providers,
    )
    result = await call(app, "a/m")
    assert result.status == 200 and upstream.calls == [("a/m", "a#0")] * 2
    assert clock.slept == [2]
