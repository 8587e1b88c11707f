"""``MemoryStore``: the embedded default, a bounded LRU with expiry, for one process.

Deliberate choices:

* No lock.  Every operation runs from start to end without an ``await``, so no other coroutine
  on the event loop can see or make a half-done change; read-modify-write operations are
  atomic for free.  The store is for one event loop: it is not thread-safe.
* Expiry is on ``time.monotonic`` by default (a wall-clock step must not revive or kill
  cooldowns); the clock is injectable so tests never sleep.
* Expired entries are dropped lazily when touched.  When the store is full, entries whose
  expiry has passed go first, found through a heap of expiry times, and only then the least
  recently used live entry.  The heap may hold stale items for keys rewritten since; it is
  rebuilt when it grows past twice the entries, so both stay bounded and each insert costs
  ``O(log n)`` amortised.
* Values are kept as the ``bytes`` given (a ``bytearray`` is copied), never re-encoded.
"""

from __future__ import annotations

import heapq
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence

from ._local import Entry, LocalStore, Mutation, R
from ._store import check_ttl, check_value, validate_key, validate_keys

__all__ = ["MemoryStore"]


class MemoryStore(LocalStore):
    """State in this process's memory, lost on exit.

    ``max_entries`` bounds the number of keys; ``clock`` returns seconds (monotonic).
    """

    def __init__(
        self, *, max_entries: int = 100_000, clock: Callable[[], float] = time.monotonic
    ) -> None:
        if max_entries < 1:
            raise ValueError(f"max_entries must be at least 1, not {max_entries}")
        self.max_entries = max_entries
        self._clock = clock
        self._entries: OrderedDict[str, Entry] = OrderedDict()
        self._expiries: list[tuple[float, str]] = []

    async def get(self, key: str) -> bytes | None:
        entry = self._live(validate_key(key), self._clock())
        return None if entry is None else entry.value

    async def get_many(self, keys: Sequence[str]) -> list[bytes | None]:
        validate_keys(keys)
        entries = self._entries
        if entries.keys().isdisjoint(keys):
            # The usual read of a request's cooldown state: nothing cooling, nothing failing.
            return [None] * len(keys)
        now = self._clock()
        values: list[bytes | None] = []
        for key in keys:
            entry = self._live(key, now) if key in entries else None
            values.append(None if entry is None else entry.value)
        return values

    async def set(self, key: str, value: bytes, *, ttl: float | None = None) -> None:
        validate_key(key)
        value = check_value(value)
        ttl = check_ttl(ttl)
        now = self._clock()
        self._put(key, Entry(value, None if ttl is None else now + ttl), now)

    async def delete(self, key: str) -> bool:
        entry = self._entries.pop(validate_key(key), None)
        return entry is not None and not _expired(entry, self._clock())

    async def aclose(self) -> None:
        pass

    async def purge_expired(self) -> int:
        return self._drop_expired(self._clock())

    async def size(self) -> int:
        """Entries held, counting expired ones not dropped yet."""
        return len(self._entries)

    async def _update(self, key: str, mutate: Mutation[R]) -> R:
        now = self._clock()
        entry, result = mutate(self._live(key, now), now)
        if entry is not None:
            self._put(key, entry, now)
        return result

    def _live(self, key: str, now: float) -> Entry | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        if _expired(entry, now):
            del self._entries[key]
            return None
        self._entries.move_to_end(key)
        return entry

    def _put(self, key: str, entry: Entry, now: float) -> None:
        entries = self._entries
        if key in entries:
            entries[key] = entry
            entries.move_to_end(key)
        else:
            if len(entries) >= self.max_entries:
                self._drop_expired(now)
                if len(entries) >= self.max_entries:
                    entries.popitem(last=False)
            entries[key] = entry
        if entry.expires_at is not None:
            heapq.heappush(self._expiries, (entry.expires_at, key))
            if len(self._expiries) > 2 * len(entries) + 64:
                self._expiries = [
                    (e.expires_at, k) for k, e in entries.items() if e.expires_at is not None
                ]
                heapq.heapify(self._expiries)

    def _drop_expired(self, now: float) -> int:
        entries, expiries = self._entries, self._expiries
        dropped = 0
        while expiries and expiries[0][0] <= now:
            _, key = heapq.heappop(expiries)
            entry = entries.get(key)
            # The heap item may be stale (key rewritten or deleted since): check the entry itself.
            if entry is not None and _expired(entry, now):
                del entries[key]
                dropped += 1
        return dropped

    def __repr__(self) -> str:
        return f"MemoryStore(max_entries={self.max_entries})"


def _expired(entry: Entry, now: float) -> bool:
    return entry.expires_at is not None and entry.expires_at <= now
