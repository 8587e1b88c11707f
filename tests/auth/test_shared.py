"""``SharedValue``: the one-at-a-time rule the token strategies stand on, over a store."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import anyio
import pytest

from asgi_rotator.auth._shared import SharedValue
from asgi_rotator.errors import GatewayError
from asgi_rotator.state import MemoryStore


@pytest.mark.anyio
async def test_a_worker_waits_for_the_value_another_is_producing() -> None:
    store = MemoryStore()
    first, second = SharedValue(store), SharedValue(store)
    calls: list[str] = []

    def producer(name: str) -> Callable[[], Awaitable[tuple[bytes, float | None]]]:
        async def produce() -> tuple[bytes, float | None]:
            calls.append(name)
            await anyio.sleep(0.2)
            return name.encode(), None

        return produce

    got: list[bytes] = []

    async def ask(shared: SharedValue, name: str) -> None:
        got.append(await shared.obtain("k", lambda raw: raw is not None, producer(name)))

    async with anyio.create_task_group() as tg:
        tg.start_soon(ask, first, "first")
        await anyio.sleep(0.05)  # the first holds the lease by now
        tg.start_soon(ask, second, "second")
    assert calls == ["first"] and got == [b"first", b"first"]


@pytest.mark.anyio
async def test_a_dead_workers_lease_runs_out_and_the_work_is_done_here() -> None:
    store = MemoryStore()
    await store.set("lock:k", b"a worker that died", ttl=0.2)
    shared = SharedValue(store, timeout=0.2)

    async def produce() -> tuple[bytes, float | None]:
        return b"done", None

    assert await shared.obtain("k", lambda raw: raw is not None, produce) == b"done"


@pytest.mark.anyio
async def test_the_leaders_work_finishes_though_its_caller_is_cancelled() -> None:
    shared = SharedValue(MemoryStore())
    finished: list[bool] = []

    async def produce() -> tuple[bytes, float | None]:
        await anyio.sleep(0.2)
        finished.append(True)  # e.g. a rotated refresh token written back
        return b"v", None

    with anyio.move_on_after(0.05):
        await shared.obtain("k", lambda raw: raw is not None, produce)
    assert finished == [True]
    assert await shared.get("k") == b"v"


@pytest.mark.anyio
async def test_a_failure_reaches_every_waiter_and_frees_the_lease() -> None:
    store = MemoryStore()
    shared = SharedValue(store)

    async def fail() -> tuple[bytes, float | None]:
        await anyio.sleep(0.05)
        raise GatewayError("auth", "refused")

    outcomes: list[str] = []

    async def ask() -> None:
        try:
            await shared.obtain("k", lambda raw: raw is not None, fail)
        except GatewayError as error:
            outcomes.append(error.message)

    async with anyio.create_task_group() as tg:
        for _ in range(3):
            tg.start_soon(ask)
    assert outcomes == ["refused"] * 3

    async def succeed() -> tuple[bytes, float | None]:
        return b"ok", None

    with anyio.fail_after(1):  # not after the failed leader's 30 s lease
        assert await shared.obtain("k", lambda raw: raw is not None, succeed) == b"ok"
