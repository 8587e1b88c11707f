"""``asgi_rotator._watch``: the disconnect watcher and ending a helper task for good."""

from __future__ import annotations

import asyncio
from typing import Any

import anyio
import pytest

from asgi_rotator import _watch

pytestmark = pytest.mark.anyio


def never_disconnects() -> Any:
    async def receive() -> dict[str, Any]:
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    return receive


async def test_stop_ends_a_waiting_watcher_before_it_returns() -> None:
    called: list[bool] = []
    task = _watch.start(_watch.watch_disconnect(never_disconnects(), lambda: called.append(True)))
    await asyncio.sleep(0)  # the watcher is waiting in receive
    await _watch.stop(task)
    assert task.done() and not called


async def test_stop_ends_a_watcher_that_never_ran() -> None:
    task = _watch.start(_watch.watch_disconnect(never_disconnects(), lambda: None))
    await _watch.stop(task)
    assert task.done()


async def test_stop_waits_for_a_task_that_takes_more_than_one_step_to_end() -> None:
    """A task that does more work after its cancellation than one step is still waited
    for: nothing outlives the request."""
    cleaned: list[str] = []

    async def slow_to_end() -> None:
        try:
            await asyncio.Event().wait()
        finally:
            for _ in range(3):
                await asyncio.sleep(0)  # several steps to end, not one
            cleaned.append("done")

    task = _watch.start(slow_to_end())
    await asyncio.sleep(0)
    await _watch.stop(task)  # the task's own cancellation is not the caller's: not raised
    assert cleaned == ["done"] and task.cancelled()


async def test_a_disconnect_calls_back_and_a_receive_error_surfaces_from_stop() -> None:
    called: list[bool] = []

    async def gone() -> dict[str, Any]:
        return {"type": "http.disconnect"}

    task = _watch.start(_watch.watch_disconnect(gone, lambda: called.append(True)))
    await asyncio.sleep(0)  # it runs, hears the disconnect and ends
    await _watch.stop(task)
    assert called == [True]

    async def broken() -> dict[str, Any]:
        raise OSError("connection reset")

    task = _watch.start(_watch.watch_disconnect(broken, lambda: called.append(True)))
    await asyncio.sleep(0)
    with pytest.raises(OSError, match="connection reset"):
        await _watch.stop(task)
    assert called == [True, True]


async def test_the_callers_cancellation_while_stopping_is_kept_and_the_task_still_ends() -> None:
    task = _watch.start(_watch.watch_disconnect(never_disconnects(), lambda: None))
    await asyncio.sleep(0)
    with anyio.CancelScope() as scope:
        scope.cancel()  # the caller is cancelled as it stops its helper
        await _watch.stop(task)
        raise AssertionError("the caller's cancellation was lost")
    assert scope.cancelled_caught  # anyio recognised the cancellation as its own
    assert task.done()
