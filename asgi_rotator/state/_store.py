"""``StateStore``: the one async interface every piece of shared state goes through.

Stored Responses, cooldown deadlines, failure counters, credential usage counters and
field-cache values are all ``str`` keys holding ``bytes`` values (callers encode with msgspec),
each with an optional time to live.

Deliberate choices:

* The operations are the ones a Redis backend can do in one round trip, each atomic on its own:
  ``get`` is GET, ``get_many`` is MGET, ``set`` is SET with PX, ``delete`` is DEL,
  ``incr``/``compare_and_set``/``set_max`` are a small Lua script each.  There is no
  transaction and no key listing, so nothing here needs a second round trip or a SCAN.
* Numbers are stored the way Redis stores them: ``incr`` keeps an ASCII decimal integer
  (``b"42"``), ``set_max`` an ASCII float (``repr(float)``, ``b"1732100000.5"``), so ``get``
  reads the same bytes from every backend.
* ``ttl`` is seconds, ``None`` for "never expires"; anything else must be finite and positive
  (Redis refuses ``PX 0`` too).  An expired key is absent for every operation.
* ``set`` and ``compare_and_set`` replace the whole entry, expiry included, as SET does
  without KEEPTTL.  ``incr`` applies ``ttl`` only when it creates the counter: a fixed window
  from the first increment, as INCRBY keeps the TTL of an existing key.  ``set_max`` only ever
  extends the expiry, with ``None`` as the longest (as ``PEXPIRE ... GT`` treats a key without
  expiry as infinite).
* Keys are validated in one place: non-empty, printable (no newline, tab or other control
  character, which would corrupt a log line or a RESP inline command), at most
  ``MAX_KEY_LENGTH`` characters.  Keys that passed are remembered in a small bounded set, as
  the same cooldown keys are read on every request.
* ``namespaced`` returns a view that prefixes keys, so each layer owns its keys
  (``responses:``, ``cooldown:``) over one shared store; the view does not own the store and
  its ``aclose`` does nothing.  ``Namespace.prepare`` checks and prefixes a set of keys
  once and gives ``PreparedKeys``, which read and delete them straight in the underlying
  store: the contract for a layer that reads the same keys on every request (cooldowns),
  so that no layer reaches through the view to the store behind it.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Sequence
from types import TracebackType

__all__ = [
    "MAX_KEY_LENGTH",
    "Namespace",
    "PreparedKeys",
    "StateStore",
    "check_ttl",
    "check_value",
    "namespaced",
    "validate_key",
    "validate_keys",
]

MAX_KEY_LENGTH = 512


class StateStore(ABC):
    """Async key-value state with expiry.  Every operation is atomic on its own."""

    @abstractmethod
    async def get(self, key: str) -> bytes | None:
        """The value, or ``None`` when absent or expired."""

    @abstractmethod
    async def get_many(self, keys: Sequence[str]) -> list[bytes | None]:
        """``get`` for each key, in order, in one round trip."""

    @abstractmethod
    async def set(self, key: str, value: bytes, *, ttl: float | None = None) -> None:
        """Store ``value``, replacing any earlier value and its expiry."""

    @abstractmethod
    async def delete(self, key: str) -> bool:
        """Remove the key; ``True`` if it was there (and not expired)."""

    @abstractmethod
    async def incr(self, key: str, amount: int = 1, *, ttl: float | None = None) -> int:
        """Add ``amount`` to the integer counter at ``key`` (absent counts as 0); the new value.

        ``ttl`` applies only when this call creates the counter; an existing counter keeps its
        expiry.  A value that is not an ASCII integer, or a result outside the signed 64-bit
        range, raises ``ValueError``.
        """

    @abstractmethod
    async def compare_and_set(
        self, key: str, expected: bytes | None, value: bytes, *, ttl: float | None = None
    ) -> bool:
        """Store ``value`` (with ``ttl``, as ``set``) only if the current value is ``expected``.

        ``expected=None`` means "only if absent".  ``True`` if the value was stored.
        """

    @abstractmethod
    async def set_max(self, key: str, value: float, *, ttl: float | None = None) -> float:
        """Store ``max(current, value)``; the value stored.

        A later cooldown never shortens an earlier one: the value only grows, and the expiry
        only moves later (``ttl=None`` removes it; a key without expiry keeps none).  A current
        value that is not a number raises ``ValueError``; ``value`` must be finite.
        """

    @abstractmethod
    async def aclose(self) -> None:
        """Release what the store holds (connections, handles)."""

    async def ping(self) -> None:
        """Raise (``OSError``, ``ConnectionError``) when the store cannot serve operations
        now: what a readiness probe asks.  In-process stores always can."""
        return None

    async def purge_expired(self) -> int:
        """Drop expired entries now; how many were dropped.  Stores that expire on their own
        (Redis) have nothing to do."""
        return 0

    async def __aenter__(self) -> StateStore:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()


def validate_key(key: str) -> str:
    if key.__class__ is str and key in _valid_keys:
        return key
    if not isinstance(key, str):
        raise TypeError(f"state key must be a str, not {type(key).__name__}")
    if not key:
        raise ValueError("state key must not be empty")
    if len(key) > MAX_KEY_LENGTH:
        raise ValueError(f"state key is {len(key)} characters long; the limit is {MAX_KEY_LENGTH}")
    if not key.isprintable():
        raise ValueError(f"state key must be printable (no newline or control character): {key!r}")
    if key.__class__ is str:
        if len(_valid_keys) >= _VALID_KEYS_MAX:
            _valid_keys.clear()
        _valid_keys.add(key)
    return key


def validate_keys(keys: Sequence[str]) -> None:
    """``validate_key`` for each key; one set operation when all were seen lately."""
    try:
        if _valid_keys.issuperset(keys):
            return
    except TypeError:
        pass  # an unhashable key: refused below with the usual message
    for key in keys:
        validate_key(key)


# Keys that passed ``validate_key`` lately: the same cooldown and rotation keys are checked on
# every request, and a set lookup is cheaper than the checks.  Only exact ``str`` keys (a
# subclass could compare equal and be something else); cleared when full, so it stays small.
_VALID_KEYS_MAX = 4096
_valid_keys: set[str] = set()


def check_value(value: bytes) -> bytes:
    # A str here is almost always a forgotten encode; refuse it rather than guess an encoding.
    if isinstance(value, bytes):
        return value
    if isinstance(value, bytearray | memoryview):
        return bytes(value)
    raise TypeError(f"state value must be bytes, not {type(value).__name__}")


def check_ttl(ttl: float | None) -> float | None:
    if ttl is not None and not (ttl > 0 and math.isfinite(ttl)):
        raise ValueError(f"ttl must be a positive number of seconds or None, not {ttl!r}")
    return ttl


class Namespace(StateStore):
    """A view of ``store`` in which every key is prefixed with ``prefix``."""

    def __init__(self, store: StateStore, prefix: str) -> None:
        self.store = store
        self.prefix = prefix

    def _key(self, key: str) -> str:
        return self.prefix + validate_key(key)

    def full_key(self, key: str) -> str:
        """``key`` as ``store`` knows it: checked and prefixed."""
        return validate_key(self.prefix + validate_key(key))

    def prepare(self, keys: Sequence[str]) -> PreparedKeys:
        """``keys`` checked and prefixed now, to be read on a hot path without either."""
        return PreparedKeys(self.store, [self.full_key(key) for key in keys])

    async def get(self, key: str) -> bytes | None:
        return await self.store.get(self._key(key))

    async def get_many(self, keys: Sequence[str]) -> list[bytes | None]:
        prefix = self.prefix
        return await self.store.get_many([prefix + validate_key(key) for key in keys])

    async def set(self, key: str, value: bytes, *, ttl: float | None = None) -> None:
        await self.store.set(self._key(key), value, ttl=ttl)

    async def delete(self, key: str) -> bool:
        return await self.store.delete(self._key(key))

    async def incr(self, key: str, amount: int = 1, *, ttl: float | None = None) -> int:
        return await self.store.incr(self._key(key), amount, ttl=ttl)

    async def compare_and_set(
        self, key: str, expected: bytes | None, value: bytes, *, ttl: float | None = None
    ) -> bool:
        return await self.store.compare_and_set(self._key(key), expected, value, ttl=ttl)

    async def set_max(self, key: str, value: float, *, ttl: float | None = None) -> float:
        return await self.store.set_max(self._key(key), value, ttl=ttl)

    async def aclose(self) -> None:
        # The view does not own the store: whoever made the store closes it.
        pass

    async def ping(self) -> None:
        await self.store.ping()

    async def purge_expired(self) -> int:
        # Purges the whole store; expired entries are dead in every namespace.
        return await self.store.purge_expired()

    def __repr__(self) -> str:
        return f"namespaced({self.store!r}, {self.prefix!r})"


class PreparedKeys:
    """Keys of a ``Namespace``, checked and prefixed once (``Namespace.prepare``), read and
    deleted by position straight in the store behind the view."""

    __slots__ = ("_store", "keys")

    def __init__(self, store: StateStore, keys: list[str]) -> None:
        self._store = store
        self.keys = keys  # as the store behind the view knows them

    def __len__(self) -> int:
        return len(self.keys)

    def get_all(self) -> Awaitable[list[bytes | None]]:
        """Every key's value, in order, in one ``get_many``."""
        return self._store.get_many(self.keys)

    def delete(self, position: int) -> Awaitable[bool]:
        """Delete the key at ``position``."""
        return self._store.delete(self.keys[position])


def namespaced(store: StateStore, prefix: str) -> Namespace:
    """A view of ``store`` whose keys all start with ``prefix`` followed by ``:``.

    The separator is added when missing, so ``"responses"`` and ``"responses:"`` are the same
    namespace and no two namespaces can share a key by concatenation.  Views nest:
    ``namespaced(namespaced(store, "a"), "b")`` is ``namespaced(store, "a:b")``.
    """
    validate_key(prefix)
    if not prefix.endswith(":"):
        prefix += ":"
    if isinstance(store, Namespace):
        return Namespace(store.store, store.prefix + prefix)
    return Namespace(store, prefix)
