"""``SharedValue``: a value every worker computes at most once at a time (a refreshed token,
a discovered project), through the ``StateStore``.

Deliberate choices:

* Two levels of "once".  In a process, the first caller for a key leads and the others
  await its result (no store traffic for them); between processes, the leader takes a lease
  in the store (``compare_and_set`` on an absent key, with a TTL) and the others poll the
  published value until it is usable or the lease ends.  The lease's TTL is what frees a
  lock whose holder died; a holder releases it by overwriting its own value with a
  millisecond-long one (the store has no delete-if-equal), so it never frees another's.
* The leader's work is shielded from cancellation and bounded by time instead: a
  refresh that rotates the refresh token must be written back once the token endpoint has
  answered, or the credential is lost.  The request that leads waits for it; nothing
  outlives that request.
* What is published is read back by every worker, so it is checked (``usable``) by the
  reader: a value another worker published for an older state is not taken.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Awaitable, Callable

import anyio

from ..errors import GatewayError
from ..state import MemoryStore, StateStore

__all__ = ["SharedValue"]

_RELEASED = b"released"
_RELEASE_TTL = 0.001  # the smallest TTL every store takes
_POLL_FIRST = 0.02
_POLL_MAX = 0.25


class SharedValue:
    """Values by key, published in ``store``.  ``timeout`` is a lease's length (what a
    leader's work may take); a caller gives up after two of them, which is long enough to
    outlast a dead worker's lease and then do the work itself."""

    def __init__(self, store: StateStore | None = None, *, timeout: float = 30.0) -> None:
        self.store: StateStore = store if store is not None else MemoryStore(max_entries=1024)
        self.timeout = timeout
        self._flights: dict[str, asyncio.Future[bytes]] = {}

    async def get(self, key: str) -> bytes | None:
        return await self.store.get(f"value:{key}")

    async def obtain(
        self,
        key: str,
        usable: Callable[[bytes | None], bool],
        produce: Callable[[], Awaitable[tuple[bytes, float | None]]],
    ) -> bytes:
        """The published value for ``key`` when ``usable`` says so; else ``produce`` it
        (``(value, ttl)``) in one worker while the others wait, and publish it."""
        flight = self._flights.get(key)
        if flight is not None:
            return await asyncio.shield(flight)
        flight = self._flights[key] = asyncio.get_running_loop().create_future()
        try:
            with anyio.CancelScope(shield=True), anyio.fail_after(2 * self.timeout):
                value = await self._lead(key, usable, produce)
        except BaseException as exc:
            if isinstance(exc, TimeoutError):
                exc = GatewayError(
                    "auth", f"credential refresh did not finish in {2 * self.timeout:g}s"
                )
            flight.set_exception(exc)
            flight.exception()  # retrieved: the followers may be none
            raise exc from None
        else:
            flight.set_result(value)
            return value
        finally:
            del self._flights[key]

    async def _lead(
        self,
        key: str,
        usable: Callable[[bytes | None], bool],
        produce: Callable[[], Awaitable[tuple[bytes, float | None]]],
    ) -> bytes:
        store = self.store
        value_key, lock_key = f"value:{key}", f"lock:{key}"
        owner = secrets.token_hex(8).encode()
        poll = _POLL_FIRST
        while True:
            published = await store.get(value_key)
            if published is not None and usable(published):
                return published
            if await store.compare_and_set(lock_key, None, owner, ttl=self.timeout):
                try:
                    # Another worker may have published between the read and the lease.
                    published = await store.get(value_key)
                    if published is not None and usable(published):
                        return published
                    value, ttl = await produce()
                    await store.set(value_key, value, ttl=ttl)
                    return value
                finally:
                    await store.compare_and_set(lock_key, owner, _RELEASED, ttl=_RELEASE_TTL)
            await anyio.sleep(poll)
            poll = min(poll * 2, _POLL_MAX)

    async def forget(self, key: str) -> None:
        await self.store.delete(f"value:{key}")


def now() -> float:
    """Wall-clock seconds: token expiries are wall-clock times, shared between machines."""
    return time.time()
