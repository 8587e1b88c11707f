"""``RedisStore``: state shared by every worker and machine that points at one Redis.

Needs the ``redis`` package (``pip install 'asgi-rotator[redis]'``, redis-py >= 5.0.1) and a
Redis server >= 7.0 (``set_max`` uses ``PEXPIRE ... GT``).

Deliberate choices:

* Each operation is one round trip and atomic on its own: ``get`` is GET, ``get_many`` MGET,
  ``set`` SET with PX, ``delete`` DEL; ``incr``, ``compare_and_set`` and ``set_max`` are a Lua
  script each, computing exactly what ``_local``'s mutations compute.  The scripts are sent by
  SHA (EVALSHA) and loaded again on NOSCRIPT, so a Redis restart or SCRIPT FLUSH costs one
  extra round trip.
* Numbers are stored as ``_local`` stores them: ``incr`` an ASCII decimal (``b"42"``),
  ``set_max`` ``repr(float)`` (``b"100.0"``) formatted in Python and passed to Lua as a string,
  so every backend's ``get`` reads the same bytes.  Lua numbers are doubles, so the ``incr``
  script returns the counter as Redis stored it (a string) rather than INCRBY's reply, which
  Lua would round past 2**53; ``set_max`` returns a kept value as ``%.17g``, which round-trips
  a double exactly.
* ``ttl`` is rounded up to whole milliseconds for PX; a key expires on the *server's* clock, so
  every worker sees one deadline and there is no clock to inject.
* The connection pool is made on first use, inside the running event loop (a mounted app's
  lifespan may never run), and the store stays bound to that loop; ``aclose`` closes it.  The
  pool is bounded (``max_connections``): a caller waits up to ``timeout`` for a free
  connection.  Every socket operation has the same ``timeout``, since redis-py waits forever
  by default.
* A command is never retried by the client: a reply lost after the server ran ``incr`` or
  ``compare_and_set`` must not count twice or turn a win into a loss.  A pooled connection the
  server has closed is still replaced before a command is sent on it (redis-py checks it when
  taking it from the pool), so a Redis restart costs nothing more than the requests in flight.
* When Redis cannot be reached, times out, is loading its data or is a read-only replica,
  every operation raises ``StateUnavailableError`` (a ``ConnectionError``), with the redis-py
  error as its cause, so a caller can log it and carry on without state.  After a timeout the
  command may or may not have run.  The URL in messages and ``repr`` never shows a password.
* Keys are validated (``validate_key``) before any network call, then prefixed with
  ``prefix`` so several deployments can share one Redis database; the prefix does not count
  toward ``MAX_KEY_LENGTH``.
* ``purge_expired`` keeps the base class's ``0``: Redis expires keys on its own.
* A value Lua's ``tonumber`` reads differently from Python's ``float`` (hexadecimal is refused
  like Python refuses it; ``1_0`` is refused where Python accepts it) only matters for values
  no backend writes.  ``incr`` follows Redis's integer syntax, which also refuses leading zeros
  (``b"007"``).
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Any, cast
from urllib.parse import urlsplit

from ..redaction import register_url_password
from ._store import MAX_KEY_LENGTH, StateStore, check_ttl, check_value, validate_key

if TYPE_CHECKING:
    from redis.asyncio import Redis
    from redis.commands.core import AsyncScript

__all__ = ["RedisStore", "StateUnavailableError"]

_INT64_MIN = -(2**63)
_INT64_MAX = 2**63 - 1
# Redis refuses an expiry whose deadline overflows a 64-bit millisecond count; refuse sooner
# and say why (2**46 ms is over two thousand years).
_MAX_TTL_MS = 2**46
_NO_TTL = b""

# KEYS[1] counter; ARGV[1] amount, ARGV[2] ttl in ms or "".  A fixed window: the ttl applies
# only when this call creates the counter.
_INCR = b"""
if ARGV[2] ~= '' then
    redis.call('SET', KEYS[1], '0', 'NX', 'PX', ARGV[2])
end
redis.call('INCRBY', KEYS[1], ARGV[1])
return redis.call('GET', KEYS[1])
"""

# KEYS[1]; ARGV[1] "1" if a value is expected, "0" for "only if absent", ARGV[2] the expected
# value, ARGV[3] the new value, ARGV[4] ttl in ms or "".  The new value replaces the expiry.
_COMPARE_AND_SET = b"""
local current = redis.call('GET', KEYS[1])
if ARGV[1] == '0' then
    if current then return 0 end
elseif current ~= ARGV[2] then
    return 0
end
if ARGV[4] == '' then
    redis.call('SET', KEYS[1], ARGV[3])
else
    redis.call('SET', KEYS[1], ARGV[3], 'PX', ARGV[4])
end
return 1
"""

# KEYS[1]; ARGV[1] the value as repr(float), ARGV[2] ttl in ms or "".  The value only grows
# (KEEPTTL keeps the expiry when it does); the expiry only moves later, no ttl being the latest:
# PEXPIRE ... GT treats a key without expiry as never expiring, so it never gains one.
_SET_MAX = b"""
local current = redis.call('GET', KEYS[1])
if not current then
    if ARGV[2] == '' then
        redis.call('SET', KEYS[1], ARGV[1])
    else
        redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
    end
    return ARGV[1]
end
local stored = tonumber(current)
if stored == nil or stored ~= stored or stored == math.huge or stored == -math.huge
        or string.find(current, '[xX]') then
    return redis.error_reply('NOTANUMBER value is not a number')
end
local result
if tonumber(ARGV[1]) > stored then
    redis.call('SET', KEYS[1], ARGV[1], 'KEEPTTL')
    result = ARGV[1]
else
    result = string.format('%.17g', stored)
end
if ARGV[2] == '' then
    redis.call('PERSIST', KEYS[1])
else
    redis.call('PEXPIRE', KEYS[1], ARGV[2], 'GT')
end
return result
"""


class StateUnavailableError(ConnectionError):
    """Redis could not serve the operation (unreachable, timed out, loading, read-only).

    The redis-py exception is the ``__cause__``.  The state the operation would have read or
    written is unknown; callers may log this and carry on without state.
    """


class RedisStore(StateStore):
    """State in Redis, shared by every process that uses the same ``url`` and ``prefix``.

    ``url`` is a redis-py URL (``redis://``, ``rediss://``, ``unix://``), a password in it is
    never shown; ``prefix`` starts every key; ``max_connections`` bounds the pool; ``timeout``
    (seconds) bounds connecting, each reply, and the wait for a free connection.
    """

    def __init__(
        self,
        url: str = "redis://127.0.0.1:6379/0",
        *,
        prefix: str = "asgi_rotator:",
        max_connections: int = 64,
        timeout: float = 5.0,
    ) -> None:
        redis = _import_redis()
        if not isinstance(prefix, str) or not (prefix == "" or prefix.isprintable()):
            raise ValueError(f"prefix must be a printable str: {prefix!r}")
        if len(prefix) > MAX_KEY_LENGTH:
            raise ValueError(f"prefix is longer than {MAX_KEY_LENGTH} characters")
        if max_connections < 1:
            raise ValueError(f"max_connections must be at least 1, not {max_connections}")
        if not (timeout > 0 and math.isfinite(timeout)):
            raise ValueError(f"timeout must be a positive number of seconds, not {timeout!r}")
        self._url = url  # may hold a password: kept private, shown only through _redact
        register_url_password(url)  # redis-py's own errors may quote the URL
        self.prefix = prefix
        self.max_connections = max_connections
        self.timeout = timeout
        self._safe_url = _redact(url)
        self._unavailable: tuple[type[BaseException], ...] = (
            redis.exceptions.ConnectionError,
            redis.exceptions.TimeoutError,
            redis.exceptions.ReadOnlyError,
        )
        self._response_error: type[BaseException] = redis.exceptions.ResponseError
        self._client: Redis | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closed = False
        self._guard = _Translate(self)
        self._incr: AsyncScript
        self._compare_and_set: AsyncScript
        self._set_max: AsyncScript

    # -- the interface ---------------------------------------------------------------------

    async def get(self, key: str) -> bytes | None:
        full = self._key(key)
        with self._guard:
            # Replies are bytes: the pool is made without decode_responses.
            return cast("bytes | None", await self._connect().get(full))

    async def get_many(self, keys: Sequence[str]) -> list[bytes | None]:
        full = [self._key(key) for key in keys]
        if not full:
            return []  # MGET needs at least one key
        with self._guard:
            return cast("list[bytes | None]", await self._connect().mget(full))

    async def set(self, key: str, value: bytes, *, ttl: float | None = None) -> None:
        full = self._key(key)
        value = check_value(value)
        px = _milliseconds(ttl)
        with self._guard:
            await self._connect().set(full, value, px=px)

    async def delete(self, key: str) -> bool:
        full = self._key(key)
        with self._guard:
            return await self._connect().delete(full) == 1  # type: ignore[no-any-return]

    async def incr(self, key: str, amount: int = 1, *, ttl: float | None = None) -> int:
        full = self._key(key)
        if not isinstance(amount, int):
            raise TypeError(f"incr amount must be an int, not {type(amount).__name__}")
        amount = int(amount)  # a bool becomes 1 or 0, not "True"
        px = _milliseconds(ttl)
        if not _INT64_MIN <= amount <= _INT64_MAX:
            raise ValueError("increment would overflow a signed 64-bit counter")
        client = self._connect()
        try:
            with self._guard:
                total = await self._incr(
                    keys=[full], args=[amount, _NO_TTL if px is None else px], client=client
                )
        except self._response_error as exc:
            message = str(exc)
            # Redis's own replies to INCRBY (t_string.c); nothing else in the script can fail.
            if "overflow" in message:
                raise ValueError("increment would overflow a signed 64-bit counter") from None
            if "not an integer" in message:
                raise ValueError(f"value at {key!r} is not a 64-bit integer") from None
            raise
        return int(total)

    async def compare_and_set(
        self, key: str, expected: bytes | None, value: bytes, *, ttl: float | None = None
    ) -> bool:
        full = self._key(key)
        if expected is not None:
            expected = check_value(expected)
        value = check_value(value)
        px = _milliseconds(ttl)
        args = [
            b"0" if expected is None else b"1",
            b"" if expected is None else expected,
            value,
            _NO_TTL if px is None else px,
        ]
        client = self._connect()  # before self._compare_and_set: it registers the scripts
        with self._guard:
            stored = await self._compare_and_set(keys=[full], args=args, client=client)
        return stored == 1

    async def set_max(self, key: str, value: float, *, ttl: float | None = None) -> float:
        full = self._key(key)
        value = float(value)
        if not math.isfinite(value):
            raise ValueError(f"set_max value must be finite, not {value!r}")
        px = _milliseconds(ttl)
        client = self._connect()
        try:
            with self._guard:
                stored = await self._set_max(
                    keys=[full], args=[repr(value), _NO_TTL if px is None else px], client=client
                )
        except self._response_error as exc:
            if "NOTANUMBER" not in str(exc):
                raise
            raise ValueError(f"value at {key!r} is not a number") from None
        return float(stored)

    async def ping(self) -> None:
        """One PING round trip; ``StateUnavailableError`` when Redis does not answer."""
        with self._guard:
            await self._connect().ping()

    async def aclose(self) -> None:
        self._closed = True
        client, self._client = self._client, None
        if client is not None:
            pool = client.connection_pool
            await client.aclose()
            await pool.aclose()

    def __repr__(self) -> str:
        return f"RedisStore({self._safe_url!r}, prefix={self.prefix!r})"

    # -- helpers ---------------------------------------------------------------------------

    def _key(self, key: str) -> str:
        return self.prefix + validate_key(key)

    def _connect(self) -> Redis:
        """The client, made on first use in the running loop, with the scripts registered."""
        loop = asyncio.get_running_loop()
        client = self._client
        if client is not None:
            if loop is not self._loop:
                raise RuntimeError(
                    f"{self!r} is bound to the event loop that first used it; "
                    "make one store per event loop"
                )
            return client
        if self._closed:
            raise RuntimeError(f"{self!r} is closed")
        redis = _import_redis()
        pool = redis.asyncio.BlockingConnectionPool.from_url(
            self._url,
            max_connections=self.max_connections,
            timeout=self.timeout,
            socket_timeout=self.timeout,
            socket_connect_timeout=self.timeout,
            retry=redis.asyncio.retry.Retry(redis.backoff.NoBackoff(), 0),
        )
        client = redis.asyncio.Redis(connection_pool=pool)
        self._incr = client.register_script(_INCR)
        self._compare_and_set = client.register_script(_COMPARE_AND_SET)
        self._set_max = client.register_script(_SET_MAX)
        self._client, self._loop = client, loop
        return client


class _Translate:
    """``with store._guard:`` turns redis-py's "could not serve" errors into
    ``StateUnavailableError``; a context manager, not a wrapper, so no coroutine is made and
    then dropped."""

    def __init__(self, store: RedisStore) -> None:
        self._store = store

    def __enter__(self) -> None:
        pass

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc is not None and isinstance(exc, self._store._unavailable):
            raise StateUnavailableError(
                f"Redis at {self._store._safe_url} is unavailable: {type(exc).__name__}: {exc}"
            ) from exc


def _import_redis() -> Any:
    try:
        import redis.asyncio
        import redis.asyncio.retry
        import redis.backoff
        import redis.exceptions
    except ImportError as exc:
        raise ImportError(
            "RedisStore needs the redis package: pip install 'asgi-rotator[redis]'"
        ) from exc
    return redis


def _milliseconds(ttl: float | None) -> int | None:
    if check_ttl(ttl) is None:
        return None
    assert ttl is not None
    ms = math.ceil(ttl * 1000)
    if ms > _MAX_TTL_MS:
        raise ValueError(f"ttl is too large: {ttl!r} seconds")
    return ms


def _redact(url: str) -> str:
    """The URL without its user, password or query (which may carry ``password=``)."""
    parts = urlsplit(url)
    host = parts.netloc.rpartition("@")[2]
    return f"{parts.scheme}://{host}{parts.path}"
