"""RedisStore against a real redis-server (conftest's ``redis_server``).

The contract suite runs against Redis too; this file holds the real-time twins of its
fake-clock tests, what only a shared server can show (two workers, one winner per round), and
the Redis-specific behaviour: stored formats, lost scripts, an unreachable or silent server.
"""

from __future__ import annotations

import asyncio
import inspect
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Any

import anyio
import anyio.to_thread
import pytest
import redis.asyncio
import redis.exceptions

from asgi_rotator.state import RedisStore, StateUnavailableError, namespaced

from . import test_contract
from .conftest import make_redis_store

pytestmark = pytest.mark.anyio

PTTL = Callable[[str], Coroutine[Any, Any, int]]


@pytest.fixture
async def store(redis_server: str) -> AsyncIterator[RedisStore]:
    async with make_redis_store(redis_server) as backend:
        yield backend  # type: ignore[misc]


@pytest.fixture
async def raw(redis_server: str) -> AsyncIterator[redis.asyncio.Redis]:
    """A plain redis-py client, to look at what the store wrote."""
    client = redis.asyncio.Redis.from_url(redis_server)
    try:
        yield client
    finally:
        await client.aclose()


@pytest.fixture
def pttl(store: RedisStore, raw: redis.asyncio.Redis) -> PTTL:
    """The key's remaining time to live on the server in ms (-1: none, -2: absent)."""

    async def pttl(key: str) -> int:
        return int(await raw.pttl(store.prefix + key))

    return pttl


# -- the real-time twins of the contract's fake-clock tests ----------------------------------
# Where the contract checks a key just before its deadline, a twin reads the server's PTTL
# right after the write (exact, whatever the machine's load) and checks presence with at
# least 0.3 s of margin; absence is checked after the deadline, which a late wake-up only helps.


def test_every_fake_clock_contract_test_has_a_real_time_twin() -> None:
    tests = {
        name: function
        for name, function in vars(test_contract).items()
        if name.startswith("test_") and inspect.iscoroutinefunction(function)
    }
    marked = {
        name
        for name, function in tests.items()
        if any(mark.name == "fake_clock" for mark in getattr(function, "pytestmark", []))
    }
    uses_clock = {
        name
        for name, function in tests.items()
        if "clock" in inspect.signature(function).parameters
    }
    assert marked == uses_clock
    assert {f"{name}_in_real_time" for name in marked} - set(globals()) == set()


async def test_get_many_keeps_order_and_reports_missing_in_real_time(store: RedisStore) -> None:
    await store.set("a", b"1")
    await store.set("b", b"2", ttl=0.05)
    await store.set("c", b"3")
    await anyio.sleep(0.2)
    assert await store.get_many(["c", "missing", "a", "b"]) == [b"3", None, b"1", None]
    assert await store.get_many([]) == []


async def test_ttl_expiry_in_real_time(store: RedisStore, pttl: PTTL) -> None:
    await store.set("k", b"v", ttl=1)
    assert 800 < await pttl("k") <= 1000
    await anyio.sleep(0.5)
    assert await store.get("k") == b"v"
    await anyio.sleep(0.6)
    assert await store.get("k") is None
    assert await store.delete("k") is False


async def test_set_replaces_the_expiry_in_real_time(store: RedisStore, pttl: PTTL) -> None:
    await store.set("k", b"v", ttl=0.2)
    await store.set("k", b"w")
    assert await pttl("k") == -1
    await anyio.sleep(0.4)
    assert await store.get("k") == b"w"
    await store.set("k", b"x", ttl=0.2)
    assert 0 < await pttl("k") <= 200
    await anyio.sleep(0.4)
    assert await store.get("k") is None


async def test_incr_ttl_is_a_fixed_window_from_creation_in_real_time(
    store: RedisStore, pttl: PTTL
) -> None:
    assert await store.incr("n", ttl=1) == 1
    await anyio.sleep(0.5)
    assert await store.incr("n", ttl=1) == 2
    assert 0 < await pttl("n") <= 500  # the window was not restarted
    await anyio.sleep(0.7)
    assert await store.get("n") is None
    assert await store.incr("n", ttl=1) == 1
    await store.incr("forever")
    assert await store.incr("forever", ttl=0.05) == 2
    assert await pttl("forever") == -1
    await anyio.sleep(0.2)
    assert await store.get("forever") == b"2"


async def test_compare_and_set_in_real_time(store: RedisStore, pttl: PTTL) -> None:
    assert await store.compare_and_set("k", b"x", b"v") is False
    assert await store.get("k") is None
    assert await store.compare_and_set("k", None, b"v1", ttl=0.2) is True
    assert 0 < await pttl("k") <= 200
    assert await store.compare_and_set("k", None, b"v2") is False
    assert await store.compare_and_set("k", b"other", b"v2") is False
    assert await store.get("k") == b"v1"
    assert await store.compare_and_set("k", b"v1", b"v2") is True
    assert await store.get("k") == b"v2"
    # The new value came without a ttl, so it replaced the old expiry.
    assert await pttl("k") == -1
    await anyio.sleep(0.4)
    assert await store.get("k") == b"v2"
    assert await store.compare_and_set("k", b"v2", b"v3", ttl=0.1) is True
    assert 0 < await pttl("k") <= 100
    await store.set("gone", b"old", ttl=0.05)
    await anyio.sleep(0.2)
    assert await store.compare_and_set("gone", b"old", b"new") is False
    assert await store.compare_and_set("gone", None, b"new") is True


async def test_set_max_only_extends_the_expiry_in_real_time(store: RedisStore, pttl: PTTL) -> None:
    await store.set_max("k", 1.0, ttl=1)  # expires at t=1.0
    await anyio.sleep(0.3)
    await store.set_max("k", 2.0, ttl=0.1)  # would expire at t=0.4: must keep t=1.0
    assert 100 < await pttl("k") <= 700
    await anyio.sleep(0.4)
    assert await store.get("k") == b"2.0"
    await store.set_max("k", 0.5, ttl=1)  # smaller value, later expiry: value kept, expiry moved
    assert 800 < await pttl("k") <= 1000
    await anyio.sleep(0.6)  # past t=1.0
    assert await store.get("k") == b"2.0"
    await anyio.sleep(0.6)
    assert await store.get("k") is None


async def test_set_max_without_ttl_removes_the_expiry_in_real_time(
    store: RedisStore, pttl: PTTL
) -> None:
    await store.set_max("k", 1.0, ttl=0.1)
    await store.set_max("k", 1.0)
    assert await pttl("k") == -1
    await anyio.sleep(0.3)
    assert await store.get("k") == b"1.0"
    await store.set_max("k", 1.0, ttl=0.05)  # no expiry is the longest one
    assert await pttl("k") == -1
    await anyio.sleep(0.2)
    assert await store.get("k") == b"1.0"


async def test_set_max_after_expiry_starts_afresh_in_real_time(store: RedisStore) -> None:
    await store.set_max("k", 100.0, ttl=0.05)
    await anyio.sleep(0.2)
    assert await store.set_max("k", 5.0, ttl=1) == 5.0


async def test_purge_expired_in_real_time(store: RedisStore, raw: redis.asyncio.Redis) -> None:
    await store.set("short", b"v", ttl=0.05)
    await store.set("long", b"v", ttl=100)
    await store.set("forever", b"v")
    await anyio.sleep(0.2)
    # Redis drops expired keys on its own: there is never anything left to purge.
    assert await store.purge_expired() == 0
    assert await store.get_many(["short", "long", "forever"]) == [None, b"v", b"v"]
    assert await raw.exists(store.prefix + "short") == 0


# -- sharing between workers -----------------------------------------------------------------


async def test_two_workers_share_state(redis_server: str) -> None:
    async with (
        RedisStore(redis_server, prefix="shared:") as first,
        RedisStore(redis_server, prefix="shared:") as second,
    ):
        async with anyio.create_task_group() as tg:
            for n in range(200):
                tg.start_soon((first, second)[n % 2].incr, "requests", n)
        assert await first.get("requests") == str(sum(range(200))).encode()
        assert await second.get("requests") == str(sum(range(200))).encode()

        async with anyio.create_task_group() as tg:
            for n in range(100):
                tg.start_soon((first, second)[n % 2].set_max, "cooldown", float(n * 37 % 100))
        assert await first.get("cooldown") == b"99.0"
        assert await first.set_max("cooldown", 50.0) == 99.0
        assert await second.set_max("cooldown", 120.5) == 120.5
        assert await first.get("cooldown") == b"120.5"

        await first.set("response", b"stored by one worker", ttl=60)
        assert await second.get("response") == b"stored by one worker"
        assert await second.delete("response") is True
        assert await first.get("response") is None


async def test_compare_and_set_has_exactly_one_winner_per_round(redis_server: str) -> None:
    async def claim(
        worker: RedisStore, expected: bytes | None, value: bytes, winners: list[bytes]
    ) -> None:
        if await worker.compare_and_set("lock", expected, value):
            winners.append(value)

    workers = [RedisStore(redis_server, prefix="race:") for _ in range(3)]
    try:
        current: bytes | None = None
        for round_ in range(20):
            winners: list[bytes] = []
            async with anyio.create_task_group() as tg:
                for n in range(30):
                    value = f"{round_}:{n}".encode()
                    tg.start_soon(claim, workers[n % 3], current, value, winners)
            assert len(winners) == 1, (round_, winners)
            assert await workers[round_ % 3].get("lock") == winners[0]
            current = winners[0]
    finally:
        for worker in workers:
            await worker.aclose()


async def test_namespaced_views_over_one_redis_store(store: RedisStore) -> None:
    cooldown = namespaced(store, "cooldown")
    assert await cooldown.set_max("openai/key-1", 1732100000.5, ttl=60) == 1732100000.5
    assert await store.get("cooldown:openai/key-1") == b"1732100000.5"


# -- what Redis stores -----------------------------------------------------------------------


async def test_numbers_are_stored_as_redis_stores_them(
    store: RedisStore, raw: redis.asyncio.Redis
) -> None:
    assert await store.incr("n", 42) == 42
    assert await raw.get(store.prefix + "n") == b"42"
    assert await raw.incrby(store.prefix + "n", 8) == 50  # Redis's own INCRBY reads it
    assert await store.incr("n") == 51
    assert await store.set_max("m", 100) == 100.0
    assert await raw.get(store.prefix + "m") == b"100.0"
    assert await store.set_max("m", 1e16) == 1e16
    assert await raw.get(store.prefix + "m") == b"1e+16"
    assert await store.set_max("m", 5.0) == 1e16  # a kept value comes back exactly


async def test_counters_past_2_to_the_53_stay_exact(store: RedisStore) -> None:
    # Lua numbers are doubles: the script must not round the counter it returns.
    assert await store.incr("big", 2**53 + 1) == 2**53 + 1
    assert await store.incr("big", 2) == 2**53 + 3
    assert await store.get("big") == str(2**53 + 3).encode()


@pytest.mark.parametrize("value", [b"0x10", b"1e400", b"nan", b"-inf", b""])
async def test_set_max_refuses_what_is_not_a_finite_number(store: RedisStore, value: bytes) -> None:
    await store.set("k", value)
    with pytest.raises(ValueError, match="not a number"):
        await store.set_max("k", 1.0)
    assert await store.get("k") == value


async def test_incr_amount_outside_64_bits_is_refused(store: RedisStore) -> None:
    with pytest.raises(ValueError, match="overflow"):
        await store.incr("n", 2**63)
    with pytest.raises(TypeError, match="int"):
        await store.incr("n", 1.5)  # type: ignore[arg-type]
    assert await store.incr("n", True) == 1
    assert await store.get("n") == b"1"


async def test_a_ttl_redis_cannot_hold_is_refused(store: RedisStore) -> None:
    with pytest.raises(ValueError, match="ttl"):
        await store.set("k", b"v", ttl=1e30)
    assert await store.get("k") is None


async def test_ttl_is_rounded_up_to_a_millisecond(store: RedisStore, pttl: PTTL) -> None:
    await store.set("k", b"v", ttl=0.0001)
    assert await pttl("k") in (-2, 0, 1)  # PX 1, not PX 0 (which Redis refuses)
    await store.set("k", b"v", ttl=2.0001)
    assert 1900 < await pttl("k") <= 2001


async def test_prefix_starts_every_key(redis_server: str, raw: redis.asyncio.Redis) -> None:
    async with RedisStore(redis_server, prefix="deployment-a:") as store:
        await store.set("k", b"v")
        assert await raw.get("deployment-a:k") == b"v"
    with pytest.raises(ValueError, match="prefix"):
        RedisStore(redis_server, prefix="bad\nprefix")


async def test_scripts_are_loaded_again_after_a_flush(
    store: RedisStore, raw: redis.asyncio.Redis
) -> None:
    assert await store.incr("n") == 1
    await raw.script_flush()  # as after a Redis restart or failover
    assert await store.incr("n") == 2
    assert await store.compare_and_set("c", None, b"x") is True
    assert await store.set_max("m", 1.0) == 1.0


async def test_server_supports_pexpire_gt(raw: redis.asyncio.Redis) -> None:
    version = (await raw.info("server"))["redis_version"]
    assert tuple(int(part) for part in str(version).split(".")[:2]) >= (7, 0), version


# -- connections -----------------------------------------------------------------------------


def test_nothing_is_opened_before_first_use(redis_server: str) -> None:
    # Made outside any event loop, never used: nothing to close, nothing to warn about.
    store = RedisStore(redis_server)
    assert store._client is None


async def test_the_pool_is_made_on_first_use_and_closed_once(redis_server: str) -> None:
    store = make_redis_store(redis_server)
    assert store._client is None
    await store.set("k", b"v")
    client = store._client
    assert client is not None
    pool = client.connection_pool
    assert await store.get("k") == b"v"
    await store.aclose()
    assert store._client is None
    assert not pool._in_use_connections
    await store.aclose()
    with pytest.raises(RuntimeError, match="closed"):
        await store.get("k")


async def test_a_store_is_bound_to_one_event_loop(store: RedisStore) -> None:
    await store.set("k", b"v")

    def from_another_loop() -> bytes | None:
        return asyncio.run(store.get("k"))

    with pytest.raises(RuntimeError, match="event loop"):
        await anyio.to_thread.run_sync(from_another_loop)


async def test_an_unreachable_redis_raises_state_unavailable() -> None:
    port = _closed_port()
    url = f"redis://user:s3cret@127.0.0.1:{port}/0?password=s3cret"
    async with RedisStore(url, timeout=1) as store:
        assert "s3cret" not in repr(store)
        for operation in (
            store.get("k"),
            store.get_many(["k"]),
            store.set("k", b"v"),
            store.delete("k"),
            store.incr("k", ttl=1),
            store.compare_and_set("k", None, b"v"),
            store.set_max("k", 1.0),
        ):
            with pytest.raises(StateUnavailableError) as caught:
                await operation
            assert isinstance(caught.value, ConnectionError)
            assert isinstance(caught.value.__cause__, redis.exceptions.ConnectionError)
            assert f"127.0.0.1:{port}" in str(caught.value)
            assert "s3cret" not in str(caught.value)


async def test_a_silent_redis_times_out_as_state_unavailable() -> None:
    with socket.socket() as listener:
        # Connections complete in the kernel's backlog, and no reply ever comes.
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        port = listener.getsockname()[1]
        async with RedisStore(f"redis://127.0.0.1:{port}/0", timeout=0.3) as store:
            with anyio.fail_after(5):
                with pytest.raises(StateUnavailableError, match="unavailable"):
                    await store.get("k")


async def test_keys_are_validated_before_any_network_call() -> None:
    store = RedisStore(f"redis://127.0.0.1:{_closed_port()}/0")
    async with store:
        with pytest.raises(ValueError, match="key"):
            await store.get("bad\nkey")
        with pytest.raises(ValueError, match="key"):
            await store.get_many(["fine", ""])
        with pytest.raises(ValueError, match="ttl"):
            await store.set("k", b"v", ttl=0)
        assert store._client is None


def test_the_base_install_imports_without_redis() -> None:
    code = (
        "import sys; sys.modules['redis'] = None\n"
        "import asgi_rotator.state as state\n"
        "try:\n"
        "    state.RedisStore()\n"
        "except ImportError as exc:\n"
        "    print(exc)\n"
    )
    result = subprocess.run(
        [sys.executable, "-W", "error", "-c", code], capture_output=True, text=True, check=True
    )
    assert "pip install 'asgi-rotator[redis]'" in result.stdout


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])
