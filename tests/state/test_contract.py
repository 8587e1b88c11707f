"""The StateStore contract, run against every backend.

A test that moves the fake clock is marked ``fake_clock``: Redis expires keys on the server's
clock, so for Redis it is skipped and ``test_redis.py`` runs its real-time twin,
``<name>_in_real_time`` (``test_redis.py`` checks that every marked test has one).
"""

from __future__ import annotations

import anyio
import pytest

from asgi_rotator import state
from asgi_rotator.state import StateStore, namespaced
from asgi_rotator.state._store import MAX_KEY_LENGTH

from .conftest import FakeClock

pytestmark = pytest.mark.anyio


def test_all_is_complete_and_sorted() -> None:
    public = {name for name in vars(state) if not name.startswith("_")} - {"annotations"}
    assert public == set(state.__all__)
    assert state.__all__ == sorted(state.__all__)


async def test_get_set_delete(store: StateStore) -> None:
    assert await store.get("k") is None
    await store.set("k", b"one")
    assert await store.get("k") == b"one"
    await store.set("k", b"two")
    assert await store.get("k") == b"two"
    assert await store.delete("k") is True
    assert await store.get("k") is None
    assert await store.delete("k") is False


async def test_values_are_bytes_exactly(store: StateStore) -> None:
    value = bytes(range(256)) * 1000 + b"\n\r\x00"
    await store.set("blob", value)
    await store.set("empty", b"")
    mutable = bytearray(b"mutable")
    await store.set("copied", mutable)  # type: ignore[arg-type]
    mutable[0:1] = b"M"
    assert await store.get("blob") == value
    assert await store.get("empty") == b""
    assert await store.get("copied") == b"mutable"


@pytest.mark.fake_clock
async def test_get_many_keeps_order_and_reports_missing(
    store: StateStore, clock: FakeClock
) -> None:
    await store.set("a", b"1")
    await store.set("b", b"2", ttl=1)
    await store.set("c", b"3")
    clock.advance(1)
    assert await store.get_many(["c", "missing", "a", "b"]) == [b"3", None, b"1", None]
    assert await store.get_many([]) == []


@pytest.mark.fake_clock
async def test_ttl_expiry(store: StateStore, clock: FakeClock) -> None:
    await store.set("k", b"v", ttl=10)
    clock.advance(9.9)
    assert await store.get("k") == b"v"
    clock.advance(0.1)
    assert await store.get("k") is None
    assert await store.delete("k") is False


@pytest.mark.fake_clock
async def test_set_replaces_the_expiry(store: StateStore, clock: FakeClock) -> None:
    await store.set("k", b"v", ttl=5)
    await store.set("k", b"w")
    clock.advance(100)
    assert await store.get("k") == b"w"
    await store.set("k", b"x", ttl=5)
    clock.advance(5)
    assert await store.get("k") is None


@pytest.mark.parametrize("ttl", [0, -1, float("nan"), float("inf")])
async def test_bad_ttl_is_refused(store: StateStore, ttl: float) -> None:
    with pytest.raises(ValueError, match="ttl"):
        await store.set("k", b"v", ttl=ttl)
    with pytest.raises(ValueError, match="ttl"):
        await store.incr("k", ttl=ttl)
    with pytest.raises(ValueError, match="ttl"):
        await store.compare_and_set("k", None, b"v", ttl=ttl)
    with pytest.raises(ValueError, match="ttl"):
        await store.set_max("k", 1.0, ttl=ttl)
    assert await store.get("k") is None


async def test_str_value_is_refused(store: StateStore) -> None:
    with pytest.raises(TypeError, match="bytes"):
        await store.set("k", "text")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="bytes"):
        await store.compare_and_set("k", None, "text")  # type: ignore[arg-type]


async def test_incr_creates_at_zero_and_counts(store: StateStore) -> None:
    assert await store.incr("n") == 1
    assert await store.incr("n", 5) == 6
    assert await store.incr("n", -10) == -4
    assert await store.get("n") == b"-4"
    await store.set("m", b"41")
    assert await store.incr("m") == 42


@pytest.mark.fake_clock
async def test_incr_ttl_is_a_fixed_window_from_creation(
    store: StateStore, clock: FakeClock
) -> None:
    assert await store.incr("n", ttl=10) == 1
    clock.advance(6)
    assert await store.incr("n", ttl=10) == 2
    clock.advance(4)
    assert await store.get("n") is None
    assert await store.incr("n", ttl=10) == 1
    await store.incr("forever")
    assert await store.incr("forever", ttl=1) == 2
    clock.advance(5)
    assert await store.get("forever") == b"2"


@pytest.mark.parametrize("value", [b"abc", b"1.5", b" 1", b"+1", b"", b"99999999999999999999"])
async def test_incr_on_a_non_integer_raises(store: StateStore, value: bytes) -> None:
    await store.set("k", value)
    with pytest.raises(ValueError, match="integer"):
        await store.incr("k")
    assert await store.get("k") == value


async def test_incr_refuses_to_overflow_64_bits(store: StateStore) -> None:
    await store.set("k", str(2**63 - 1).encode())
    with pytest.raises(ValueError, match="overflow"):
        await store.incr("k")
    assert await store.incr("k", -1) == 2**63 - 2


async def test_concurrent_incr_loses_nothing(store: StateStore) -> None:
    async with anyio.create_task_group() as tg:
        for _ in range(100):
            tg.start_soon(store.incr, "n")
    assert await store.get("n") == b"100"


@pytest.mark.fake_clock
async def test_compare_and_set(store: StateStore, clock: FakeClock) -> None:
    assert await store.compare_and_set("k", b"x", b"v") is False
    assert await store.get("k") is None
    assert await store.compare_and_set("k", None, b"v1", ttl=10) is True
    assert await store.compare_and_set("k", None, b"v2") is False
    assert await store.compare_and_set("k", b"other", b"v2") is False
    assert await store.get("k") == b"v1"
    assert await store.compare_and_set("k", b"v1", b"v2") is True
    assert await store.get("k") == b"v2"
    clock.advance(20)
    # The new value came without a ttl, so it replaced the old expiry.
    assert await store.get("k") == b"v2"
    await store.set("gone", b"old", ttl=1)
    clock.advance(1)
    assert await store.compare_and_set("gone", b"old", b"new") is False
    assert await store.compare_and_set("gone", None, b"new") is True


async def test_compare_and_set_tells_empty_from_absent(store: StateStore) -> None:
    assert await store.compare_and_set("k", b"", b"v") is False
    await store.set("k", b"")
    assert await store.compare_and_set("k", None, b"v") is False
    assert await store.compare_and_set("k", b"", b"v") is True
    assert await store.get("k") == b"v"


async def test_compare_and_set_race_has_one_winner(store: StateStore) -> None:
    winners: list[int] = []

    async def claim(n: int) -> None:
        if await store.compare_and_set("lock", None, str(n).encode()):
            winners.append(n)

    async with anyio.create_task_group() as tg:
        for n in range(50):
            tg.start_soon(claim, n)
    assert len(winners) == 1
    assert await store.get("lock") == str(winners[0]).encode()


async def test_compare_and_set_loop_loses_no_update(store: StateStore) -> None:
    attempts = 0

    async def bump() -> None:
        nonlocal attempts
        while True:
            attempts += 1
            current = await store.get("counter")
            following = str(int(current or b"0") + 1).encode()
            if await store.compare_and_set("counter", current, following):
                return

    async with anyio.create_task_group() as tg:
        for _ in range(40):
            tg.start_soon(bump)
    assert await store.get("counter") == b"40"
    assert attempts >= 40


async def test_set_max_never_shortens(store: StateStore) -> None:
    assert await store.set_max("cooldown", 100.0) == 100.0
    assert await store.set_max("cooldown", 50) == 100.0
    assert await store.get("cooldown") == b"100.0"
    assert await store.set_max("cooldown", 150.25) == 150.25
    assert float(await store.get("cooldown") or b"") == 150.25


@pytest.mark.fake_clock
async def test_set_max_only_extends_the_expiry(store: StateStore, clock: FakeClock) -> None:
    await store.set_max("k", 1.0, ttl=10)
    clock.advance(5)
    await store.set_max("k", 2.0, ttl=2)  # would expire at 7: must keep 10
    clock.advance(4)
    assert await store.get("k") == b"2.0"
    await store.set_max("k", 0.5, ttl=10)  # smaller value, later expiry: value kept, expiry moved
    clock.advance(9.5)
    assert await store.get("k") == b"2.0"
    clock.advance(0.5)
    assert await store.get("k") is None


@pytest.mark.fake_clock
async def test_set_max_without_ttl_removes_the_expiry(store: StateStore, clock: FakeClock) -> None:
    await store.set_max("k", 1.0, ttl=10)
    await store.set_max("k", 1.0)
    clock.advance(100)
    assert await store.get("k") == b"1.0"
    await store.set_max("k", 1.0, ttl=1)  # no expiry is the longest one
    clock.advance(100)
    assert await store.get("k") == b"1.0"


@pytest.mark.fake_clock
async def test_set_max_after_expiry_starts_afresh(store: StateStore, clock: FakeClock) -> None:
    await store.set_max("k", 100.0, ttl=1)
    clock.advance(1)
    assert await store.set_max("k", 5.0, ttl=1) == 5.0


async def test_set_max_refuses_bad_numbers(store: StateStore) -> None:
    with pytest.raises(ValueError, match="finite"):
        await store.set_max("k", float("nan"))
    with pytest.raises(ValueError, match="finite"):
        await store.set_max("k", float("inf"))
    await store.set("k", b"soon")
    with pytest.raises(ValueError, match="not a number"):
        await store.set_max("k", 1.0)


async def test_concurrent_set_max_keeps_the_largest(store: StateStore) -> None:
    async with anyio.create_task_group() as tg:
        for n in range(60):
            tg.start_soon(store.set_max, "k", float(n * 7 % 60))
    assert await store.get("k") == b"59.0"


async def test_namespaces_are_isolated(store: StateStore) -> None:
    responses = namespaced(store, "responses")
    cooldown = namespaced(store, "cooldown:")
    await responses.set("k", b"a response")
    await cooldown.set("k", b"a cooldown")
    assert await responses.get("k") == b"a response"
    assert await cooldown.get("k") == b"a cooldown"
    assert await store.get("responses:k") == b"a response"
    assert await store.get("cooldown:k") == b"a cooldown"
    assert await store.get("k") is None
    assert await cooldown.incr("n") == 1
    assert await responses.get("n") is None
    assert await cooldown.compare_and_set("c", None, b"x") is True
    assert await responses.compare_and_set("c", None, b"y") is True
    assert await cooldown.set_max("m", 3.0) == 3.0
    assert await responses.get_many(["k", "c", "m"]) == [b"a response", b"y", None]
    assert await responses.delete("k") is True
    assert await cooldown.get("k") == b"a cooldown"
    await cooldown.aclose()  # a view does not close the store under it
    assert await store.get("cooldown:k") == b"a cooldown"


async def test_namespaces_nest(store: StateStore) -> None:
    inner = namespaced(namespaced(store, "a"), "b")
    await inner.set("k", b"v")
    assert await namespaced(store, "a:b").get("k") == b"v"
    assert await store.get("a:b:k") == b"v"


@pytest.mark.parametrize(
    "key",
    [
        "",
        "line\nbreak",
        "carriage\rreturn",
        "tab\there",
        "nul\x00",
        "bell\x07",
        "\ud800",
        "x" * (MAX_KEY_LENGTH + 1),
    ],
)
async def test_bad_keys_are_refused(store: StateStore, key: str) -> None:
    with pytest.raises(ValueError, match="key"):
        await store.get(key)
    with pytest.raises(ValueError, match="key"):
        await store.set(key, b"v")
    with pytest.raises(ValueError, match="key"):
        await store.get_many(["fine", key])
    with pytest.raises(ValueError, match="key"):
        await store.incr(key)
    with pytest.raises(ValueError, match="key"):
        await namespaced(store, "ns").delete(key)
    with pytest.raises(ValueError, match="key"):
        namespaced(store, key)


async def test_keys_may_be_long_printable_unicode(store: StateStore) -> None:
    key = "responses:resp_Ωμέγα 🙂/" + "x" * (MAX_KEY_LENGTH - 30)
    await store.set(key, b"v")
    assert await store.get(key) == b"v"


async def test_namespace_prefix_counts_toward_the_key_length(store: StateStore) -> None:
    view = namespaced(store, "ns")
    with pytest.raises(ValueError, match="limit"):
        await view.set("x" * (MAX_KEY_LENGTH - 2), b"v")


async def test_non_str_key_is_refused(store: StateStore) -> None:
    with pytest.raises(TypeError, match="str"):
        await store.get(b"k")  # type: ignore[arg-type]


@pytest.mark.fake_clock
async def test_purge_expired(store: StateStore, clock: FakeClock) -> None:
    await store.set("short", b"v", ttl=1)
    await store.set("long", b"v", ttl=100)
    await store.set("forever", b"v")
    clock.advance(2)
    assert await store.purge_expired() == 1
    assert await store.purge_expired() == 0
    assert await store.get_many(["short", "long", "forever"]) == [None, b"v", b"v"]


async def test_keys_checked_before_are_still_refused_in_bad_company(store: StateStore) -> None:
    # Keys seen before are remembered as valid; a batch that mixes them with a bad one is
    # still refused, and so are non-str keys equal in value to nothing remembered.
    await store.get_many(["seen:a", "seen:b"])
    with pytest.raises(ValueError, match="key"):
        await store.get_many(["seen:a", "bad\nkey", "seen:b"])
    with pytest.raises(TypeError, match="str"):
        await store.get_many(["seen:a", b"seen:b"])  # type: ignore[list-item]
    with pytest.raises(TypeError, match="str"):
        await store.get_many(["seen:a", ["unhashable"]])  # type: ignore[list-item]


async def test_a_namespace_full_key_reads_the_same_entry(store: StateStore) -> None:
    view = namespaced(store, "ns")
    await view.set("k", b"v")
    full = view.full_key("k")
    assert full == "ns:k"
    assert await store.get_many([full, view.full_key("absent")]) == [b"v", None]
    with pytest.raises(ValueError, match="limit"):
        view.full_key("x" * (MAX_KEY_LENGTH - 2))
    with pytest.raises(ValueError, match="key"):
        view.full_key("bad\tkey")
