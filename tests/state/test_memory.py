from __future__ import annotations

import pytest

from asgi_rotator.state import MemoryStore

from .conftest import FakeClock

pytestmark = pytest.mark.anyio


async def test_least_recently_used_is_evicted_when_full(clock: FakeClock) -> None:
    store = MemoryStore(max_entries=3, clock=clock)
    for key in "abc":
        await store.set(key, key.encode())
    assert await store.get("a") == b"a"  # a is now more recent than b
    await store.set("d", b"d")
    assert await store.get_many(["a", "b", "c", "d"]) == [b"a", None, b"c", b"d"]
    assert await store.compare_and_set("c", b"c", b"c2")  # writes count as use too
    await store.set("e", b"e")
    assert await store.get_many(["a", "c", "d", "e"]) == [None, b"c2", b"d", b"e"]
    assert await store.size() == 3


async def test_expired_entries_are_evicted_before_live_ones(clock: FakeClock) -> None:
    store = MemoryStore(max_entries=3, clock=clock)
    await store.set("old", b"live")
    await store.set("x", b"short", ttl=1)
    await store.set("y", b"short", ttl=1)
    await store.get("x")
    await store.get("y")  # the expiring ones are the most recently used
    clock.advance(1)
    await store.set("new", b"live")
    assert await store.size() == 2
    assert await store.get_many(["old", "new"]) == [b"live", b"live"]


async def test_rewriting_a_key_does_not_evict(clock: FakeClock) -> None:
    store = MemoryStore(max_entries=2, clock=clock)
    await store.set("a", b"1")
    await store.set("b", b"1")
    for n in range(10):
        await store.set("b", str(n).encode(), ttl=5)
    assert await store.get_many(["a", "b"]) == [b"1", b"9"]


async def test_expiry_heap_stays_bounded_under_rewrites(clock: FakeClock) -> None:
    store = MemoryStore(max_entries=10, clock=clock)
    for n in range(10_000):
        await store.set("cooldown", b"x", ttl=60)
        await store.incr(f"n{n % 5}", ttl=60)
    assert len(store._expiries) <= 2 * 6 + 64 + 1
    clock.advance(60)
    assert await store.purge_expired() == 6
    assert await store.size() == 0


async def test_default_clock_is_monotonic() -> None:
    store = MemoryStore()
    await store.set("k", b"v", ttl=60)
    assert await store.get("k") == b"v"


def test_max_entries_must_be_positive() -> None:
    with pytest.raises(ValueError, match="max_entries"):
        MemoryStore(max_entries=0)
