"""What ``incr``, ``compare_and_set`` and ``set_max`` do, written once for the local backends.

Each operation is a *mutation*: a pure function from the current live entry (``None`` when
absent or expired) and the store's clock reading to the entry to store and the result to
return.  A backend only has to run a mutation atomically (``LocalStore._update``): the memory
store by running it with no ``await`` in between, the file store under a lock.  A Redis
backend's Lua scripts must compute exactly what these functions compute.
"""

from __future__ import annotations

import math
import re
from abc import abstractmethod
from collections.abc import Callable
from typing import NamedTuple, TypeVar

from ._store import StateStore, check_ttl, check_value, validate_key

__all__ = ["Entry", "LocalStore", "Mutation"]

R = TypeVar("R")

_INT64_MIN = -(2**63)
_INT64_MAX = 2**63 - 1
# What Redis's string2ll accepts: an optional minus and digits, no spaces, no plus sign.
_INTEGER = re.compile(rb"-?[0-9]+")


class Entry(NamedTuple):
    value: bytes
    expires_at: float | None  # on the store's clock; None never expires


# (current live entry or None, now) -> (entry to store, or None to leave the key as it is; result)
Mutation = Callable[[Entry | None, float], tuple[Entry | None, R]]


class LocalStore(StateStore):
    """A store that runs the read-modify-write operations as mutations."""

    @abstractmethod
    async def _update(self, key: str, mutate: Mutation[R]) -> R:
        """Run ``mutate`` on the live entry at ``key`` (already validated) atomically."""

    async def incr(self, key: str, amount: int = 1, *, ttl: float | None = None) -> int:
        validate_key(key)
        if not isinstance(amount, int):
            raise TypeError(f"incr amount must be an int, not {type(amount).__name__}")
        check_ttl(ttl)

        def mutate(current: Entry | None, now: float) -> tuple[Entry | None, int]:
            if current is None:
                total, expires_at = amount, _deadline(now, ttl)
            else:
                total, expires_at = _parse_int(current.value) + amount, current.expires_at
            if not _INT64_MIN <= total <= _INT64_MAX:
                raise ValueError("increment would overflow a signed 64-bit counter")
            return Entry(str(total).encode(), expires_at), total

        return await self._update(key, mutate)

    async def compare_and_set(
        self, key: str, expected: bytes | None, value: bytes, *, ttl: float | None = None
    ) -> bool:
        validate_key(key)
        if expected is not None:
            expected = check_value(expected)
        value = check_value(value)
        check_ttl(ttl)

        def mutate(current: Entry | None, now: float) -> tuple[Entry | None, bool]:
            if (None if current is None else current.value) != expected:
                return None, False
            return Entry(value, _deadline(now, ttl)), True

        return await self._update(key, mutate)

    async def set_max(self, key: str, value: float, *, ttl: float | None = None) -> float:
        validate_key(key)
        value = float(value)
        if not math.isfinite(value):
            raise ValueError(f"set_max value must be finite, not {value!r}")
        check_ttl(ttl)

        def mutate(current: Entry | None, now: float) -> tuple[Entry | None, float]:
            deadline = _deadline(now, ttl)
            if current is None:
                return Entry(repr(value).encode(), deadline), value
            stored = _parse_float(current.value)
            if current.expires_at is None or deadline is None:
                expires_at = None
            else:
                expires_at = max(current.expires_at, deadline)
            if value <= stored and expires_at == current.expires_at:
                return None, stored
            if value > stored:
                return Entry(repr(value).encode(), expires_at), value
            return Entry(current.value, expires_at), stored

        return await self._update(key, mutate)


def _deadline(now: float, ttl: float | None) -> float | None:
    return None if ttl is None else now + ttl


def _parse_int(value: bytes) -> int:
    if len(value) <= 20 and _INTEGER.fullmatch(value):
        number = int(value)
        if _INT64_MIN <= number <= _INT64_MAX:
            return number
    raise ValueError(f"value is not a 64-bit integer: {value[:40]!r}")


def _parse_float(value: bytes) -> float:
    try:
        number = float(value)
    except ValueError:
        number = math.nan
    if not math.isfinite(number):
        raise ValueError(f"value is not a number: {value[:40]!r}")
    return number
