"""A cheap per-request disconnect watcher and a helper to end a helper task for good.

StreamGuard and ProviderDispatch (when no layer above watches) both need one thing beside
the call: a task that reads ``receive`` until ``http.disconnect`` and then cancels the
call.  An anyio task group per request did that, at several times the cost of everything
else the watch needs (task group bookkeeping, sniffio lookups, repeated cancellation
delivery).  Here it is one plain ``asyncio`` task on a tiny coroutine, which makes these
hot paths asyncio-specific: the gateway runs under uvicorn, hypercorn, Django or FastAPI,
all on asyncio, and the tests use anyio's asyncio backend.

What cancels the call is still an anyio ``CancelScope`` owned by the caller (its
``cancel()`` is safe from another task), never ``Task.cancel()`` on the request's task: a
native cancellation would go through the shields that anyio code below (httpcore's pool
bookkeeping) relies on.

``stop`` keeps the structured-concurrency promise a task group made: the helper task is
finished before the request returns, its exception (if any) surfaces as itself, and a
cancellation of the caller while it waits is neither lost nor reported with the wrong
origin (it waits with a bare yield, then on fresh futures, so the ``CancelledError`` it
re-raises is the one delivered to the caller, which anyio recognises as its own).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any

import anyio

from ._types import Receive

__all__ = ["cancel_scope", "start", "stop", "watch_disconnect"]

_CancelScope: type[anyio.CancelScope] | None = None


def cancel_scope() -> anyio.CancelScope:
    """A new ``anyio.CancelScope``, made by the running backend's class directly.

    ``anyio.CancelScope()`` asks sniffio which async library runs, on every call: more than
    half the cost of making the scope.  The answer is asyncio for this module's callers (see
    above), so the class is looked up once."""
    global _CancelScope
    if _CancelScope is None:
        scope = anyio.CancelScope()
        _CancelScope = type(scope)
        return scope
    return _CancelScope()


def start(coroutine: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
    """Run ``coroutine`` as a helper task of the current request (end it with ``stop``)."""
    return asyncio.get_running_loop().create_task(coroutine)


async def watch_disconnect(receive: Receive, on_disconnect: Callable[[], None]) -> None:
    """Read ``receive`` until the client disconnects, then call ``on_disconnect``.

    Anything else ``receive`` gives (a replaying ``receive`` above us handing out the body
    again) is dropped: the inner app has the body by other means.  When ``receive`` raises,
    the client is as good as gone: ``on_disconnect`` runs and the exception is kept on the
    task, for ``stop`` to raise.
    """
    try:
        while (await receive())["type"] != "http.disconnect":
            pass
    except asyncio.CancelledError:
        # ``stop`` ending the watch: the usual end of every request.  Returning (rather
        # than re-raising) lets the task end without keeping the error, whose traceback
        # would tie this request's frames into a cycle for the garbage collector.
        return
    except Exception:
        on_disconnect()
        raise
    on_disconnect()


async def stop(task: asyncio.Task[None]) -> None:
    """Cancel ``task`` (when still running) and wait until it has finished.

    ``watch_disconnect`` returns when it is cancelled, so stopping a watcher leaves no
    error on its task.

    Raises the task's own exception, if it failed, and the caller's cancellation, if the
    caller was cancelled meanwhile (after the task has finished all the same).
    """
    if not task.done():
        task.cancel()
        cancelled: BaseException | None = None
        try:
            # cancel() queued the task's wakeup ahead of ours: one bare yield usually finds
            # it finished, with no future and callback made to wait for it.
            await asyncio.sleep(0)
        except asyncio.CancelledError as exc:
            cancelled = exc
        while not task.done():
            waiter = task.get_loop().create_future()
            task.add_done_callback(_release(waiter))
            try:
                await waiter
            except asyncio.CancelledError as exc:
                # Our caller is being cancelled: note it, but let the task finish first
                # (it already has its cancellation and ends at its next step).
                cancelled = exc
        if cancelled is not None:
            raise cancelled
    if not task.cancelled():
        error = task.exception()
        if error is not None:
            raise error


def _release(waiter: asyncio.Future[None]) -> Callable[[asyncio.Task[None]], None]:
    def release(_: asyncio.Task[None]) -> None:
        if not waiter.done():
            waiter.set_result(None)

    return release
