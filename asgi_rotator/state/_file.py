"""``FileStore``: state for one node that survives a restart, one file per key.

Deliberate choices:

* One file per key, named by the SHA-256 of the key, so any key is a safe file name.  The file
  holds a header (format version, when it was written, when it expires), a CRC-32, the key
  itself and the value.  The key is checked on every read, the CRC on every full read, and the
  length always: a truncated, torn or foreign file is logged and treated as absent, never
  raised.
* Writes are atomic: the new content goes to a temporary file in the same directory, is
  fsynced, renamed over the old file with ``os.replace``, and the directory is fsynced.  A
  reader or a crash sees the old file or the new one, whole.  A crash can leave a temporary
  file behind (``.tmp-*``); it is never read or counted as an entry, and ``purge_expired``
  removes those older than a minute (older than any write in progress).
* Disk work runs in worker threads (``anyio.to_thread.run_sync``), never on the event loop.
  A thread is not abandoned when its caller is cancelled, so a write always ends as a whole
  write or none.
* Every write (``set``, ``delete``, ``incr``, ``compare_and_set``, ``set_max``) holds the lock
  of the key's stripe, so a read-modify-write never interleaves with another write to the same
  key.  Locks are striped (a key hashes to one of 64), which keeps their number fixed: within a
  process an ``anyio.Lock`` per stripe, so waiting writers park as coroutines rather than as
  threads; across processes ``fcntl.flock`` on a lock file per stripe (``.lock-NN``) in the
  directory.  ``flock`` is advisory: only FileStores take it, and it needs a local file system
  (it is not reliable over NFS).  Plain reads take no lock; the atomic rename is enough.
* Expiry is on wall time (``time.time``) since it must survive a restart; a large clock step
  moves every deadline with it.  Expired files stay on disk until overwritten or purged.
* ``max_entries`` is approximate.  Each process counts the entries it creates and deletes,
  starting from a scan of the directory; when its count passes the limit it purges expired,
  corrupt and stale temporary files, then removes the least recently *written* entries down to
  90% of the limit.  Other processes' writes are seen only at the next scan, so several writers
  can overshoot the limit between cleanups.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import struct
import tempfile
import time
import zlib
from collections.abc import Callable, Sequence
from functools import partial
from typing import TypeVar

import anyio
import anyio.to_thread

from ..redaction import redacting_logger
from ._local import Entry, LocalStore, Mutation
from ._store import check_ttl, check_value, validate_key

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

__all__ = ["FileStore"]

logger = redacting_logger("asgi_rotator.state")

T = TypeVar("T")

_MAGIC = b"ASRS"
_VERSION = 1
_HAS_EXPIRY = 1
# magic, version, flags, written_at, expires_at, key length, value length; then CRC-32 of the
# header, key and value; then the key (UTF-8) and the value.
_HEADER = struct.Struct("<4sBBddIQ")
_CRC = struct.Struct("<I")
_BODY_START = _HEADER.size + _CRC.size
_SUFFIX = ".entry"
_TEMP_PREFIX = ".tmp-"
_LOCK_STRIPES = 64
_STALE_TEMP_AGE = 60.0
_LOW_WATER = 0.9


class _Corrupt(Exception):
    pass


class FileStore(LocalStore):
    """State in ``directory``, one file per key, kept across restarts.

    ``max_entries`` (``None``: unbounded) bounds the number of keys approximately; ``clock``
    returns wall-clock seconds.
    """

    def __init__(
        self,
        directory: str | os.PathLike[str],
        *,
        max_entries: int | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if fcntl is None:  # pragma: no cover - Windows
            raise RuntimeError("FileStore needs POSIX file locks (fcntl.flock)")
        if max_entries is not None and max_entries < 1:
            raise ValueError(f"max_entries must be at least 1 or None, not {max_entries}")
        self.directory = os.fspath(directory)
        self.max_entries = max_entries
        self._clock = clock
        self._locks = [anyio.Lock() for _ in range(_LOCK_STRIPES)]
        self._cleanup_lock = anyio.Lock()
        self._count: int | None = None  # entries on disk as this process knows them
        self._directory_made = False

    # -- the interface ---------------------------------------------------------------------

    async def get(self, key: str) -> bytes | None:
        entry = await anyio.to_thread.run_sync(self._read_live, validate_key(key))
        return None if entry is None else entry.value

    async def get_many(self, keys: Sequence[str]) -> list[bytes | None]:
        keys = [validate_key(key) for key in keys]

        def read_all() -> list[bytes | None]:
            entries = [self._read_live(key) for key in keys]
            return [None if entry is None else entry.value for entry in entries]

        return await anyio.to_thread.run_sync(read_all)

    async def set(self, key: str, value: bytes, *, ttl: float | None = None) -> None:
        validate_key(key)
        value = check_value(value)
        ttl = check_ttl(ttl)

        def write() -> tuple[None, int]:
            now = self._clock()
            return None, self._write(key, Entry(value, None if ttl is None else now + ttl), now)

        await self._locked(key, write)

    async def delete(self, key: str) -> bool:
        validate_key(key)

        def remove() -> tuple[bool, int]:
            path = self._path(key)
            try:
                header = self._read_header(path)
            except FileNotFoundError:
                return False, 0
            self._unlink(path)
            return header is not None and not _expired(header[1], self._clock()), -1

        return await self._locked(key, remove)

    async def aclose(self) -> None:
        # Nothing is held open between operations, and no task runs in the background.
        pass

    async def ping(self) -> None:
        """``OSError`` unless the directory exists (made if need be) and can be written."""

        def check() -> None:
            os.makedirs(self.directory, exist_ok=True)
            if not os.access(self.directory, os.W_OK | os.X_OK):
                raise PermissionError(f"state directory {self.directory} is not writable")

        await anyio.to_thread.run_sync(check)

    async def purge_expired(self) -> int:
        """Remove expired and corrupt entries and stale temporary files; entries removed."""
        async with self._cleanup_lock:
            dropped, remaining = await anyio.to_thread.run_sync(self._clean, None)
            self._count = remaining
        return dropped

    async def size(self) -> int:
        """Entry files on disk, counting expired ones not purged yet (never temporary files)."""
        return await anyio.to_thread.run_sync(lambda: len(self._entry_names()))

    async def _update(self, key: str, mutate: Mutation[T]) -> T:
        def update() -> tuple[T, int]:
            now = self._clock()
            entry, result = mutate(self._read_live(key, now), now)
            return result, (0 if entry is None else self._write(key, entry, now))

        return await self._locked(key, update)

    # -- locking and accounting ------------------------------------------------------------

    async def _locked(self, key: str, operation: Callable[[], tuple[T, int]]) -> T:
        """Run ``operation`` in a thread holding the key's stripe lock in this process and
        across processes; it returns its result and the change in the number of entries."""
        stripe = _stripe(_digest(key))
        async with self._locks[stripe]:
            result, created = await anyio.to_thread.run_sync(self._flocked, stripe, operation)
        if self.max_entries is not None and created:
            await self._account(created, self.max_entries)
        return result

    def _flocked(self, stripe: int, operation: Callable[[], T]) -> T:
        if not self._directory_made:
            os.makedirs(self.directory, mode=0o700, exist_ok=True)
            self._directory_made = True
        lock_path = os.path.join(self.directory, f".lock-{stripe:02x}")
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            # Locks taken through separate open() calls exclude each other even within one
            # process, so this also orders this process's cleanup thread against its writers.
            fcntl.flock(fd, fcntl.LOCK_EX)
            return operation()
        finally:
            os.close(fd)

    async def _account(self, change: int, limit: int) -> None:
        if self._count is None:
            # The first scan already sees the entry just written.
            self._count = await anyio.to_thread.run_sync(lambda: len(self._entry_names()))
        else:
            self._count += change
        if self._count > limit and not self._cleanup_lock.locked():
            async with self._cleanup_lock:
                _, self._count = await anyio.to_thread.run_sync(
                    self._clean, max(1, int(limit * _LOW_WATER))
                )

    # -- disk work, in worker threads ------------------------------------------------------

    def _path(self, key: str) -> str:
        return os.path.join(self.directory, _digest(key) + _SUFFIX)

    def _read_live(self, key: str, now: float | None = None) -> Entry | None:
        path = self._path(key)
        try:
            with open(path, "rb") as file:
                data = file.read()
        except FileNotFoundError:
            return None
        try:
            entry = _decode(data, key)
        except _Corrupt as exc:
            logger.warning("state file %s is unreadable (%s); treating it as absent", path, exc)
            return None
        return None if _expired(entry.expires_at, self._clock() if now is None else now) else entry

    def _read_header(self, path: str) -> tuple[float, float | None] | None:
        """``(written_at, expires_at)``, or ``None`` for a corrupt file; a missing file raises
        ``FileNotFoundError``.  Checks the lengths but not the CRC, to stay cheap."""
        with open(path, "rb") as file:
            head = file.read(_BODY_START)
            size = os.fstat(file.fileno()).st_size
        try:
            _, written_at, expires_at, key_length, value_length = _unpack_header(head)
        except _Corrupt:
            return None
        if size != _BODY_START + key_length + value_length:
            return None
        return written_at, expires_at

    def _write(self, key: str, entry: Entry, now: float) -> int:
        """Replace the key's file atomically; 1 if it did not exist before, else 0."""
        path = self._path(key)
        key_bytes = key.encode()
        flags = 0 if entry.expires_at is None else _HAS_EXPIRY
        head = _HEADER.pack(
            _MAGIC, _VERSION, flags, now, entry.expires_at or 0.0, len(key_bytes), len(entry.value)
        )
        crc = zlib.crc32(entry.value, zlib.crc32(key_bytes, zlib.crc32(head)))
        fd, temp = tempfile.mkstemp(prefix=_TEMP_PREFIX, dir=self.directory)
        try:
            with os.fdopen(fd, "wb") as file:
                file.write(head)
                file.write(_CRC.pack(crc))
                file.write(key_bytes)
                file.write(entry.value)
                file.flush()
                os.fsync(file.fileno())
            created = not os.path.lexists(path)
            os.replace(temp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(temp)
            raise
        self._fsync_directory()
        return int(created)

    def _unlink(self, path: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        self._fsync_directory()

    def _fsync_directory(self) -> None:
        fd = os.open(self.directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            os.fsync(fd)
        except OSError as exc:
            # Some file systems cannot fsync a directory; the rename is then as durable as
            # they make it.
            if exc.errno not in (errno.EINVAL, errno.ENOTSUP):
                raise
        finally:
            os.close(fd)

    def _entry_names(self) -> list[str]:
        try:
            names = os.listdir(self.directory)
        except FileNotFoundError:
            return []
        return [name for name in names if name.endswith(_SUFFIX) and not name.startswith(".")]

    def _clean(self, keep: int | None) -> tuple[int, int]:
        """Remove stale temporary files, expired and corrupt entries, then the least recently
        written entries beyond ``keep``; ``(entries removed, entries left)``."""
        try:
            names = os.listdir(self.directory)
        except FileNotFoundError:
            return 0, 0
        wall = time.time()
        for name in names:
            if name.startswith(_TEMP_PREFIX):
                path = os.path.join(self.directory, name)
                # mtime is set by the OS clock, hence time.time() and not the store's clock.
                with contextlib.suppress(FileNotFoundError):
                    if wall - os.stat(path).st_mtime > _STALE_TEMP_AGE:
                        os.unlink(path)
        dropped = 0
        live: list[tuple[float, str]] = []
        for name in names:
            if not name.endswith(_SUFFIX) or name.startswith("."):
                continue
            path = os.path.join(self.directory, name)
            try:
                header = self._read_header(path)
            except FileNotFoundError:
                continue
            if header is not None and not _expired(header[1], self._clock()):
                live.append((header[0], name))
            elif self._flocked(_stripe(name), partial(self._remove_if_dead, path)):
                dropped += 1
        if keep is not None and len(live) > keep:
            live.sort()
            for _, name in live[: len(live) - keep]:
                path = os.path.join(self.directory, name)
                self._flocked(_stripe(name), partial(self._unlink, path))
                dropped += 1
            del live[: len(live) - keep]
        return dropped, len(live)

    def _remove_if_dead(self, path: str) -> bool:
        # Checked again under the lock: the entry may have been rewritten since the scan.
        try:
            header = self._read_header(path)
        except FileNotFoundError:
            return False
        if header is None:
            logger.warning("state file %s is unreadable; removing it", path)
        elif not _expired(header[1], self._clock()):
            return False
        self._unlink(path)
        return True

    def __repr__(self) -> str:
        return f"FileStore({self.directory!r}, max_entries={self.max_entries})"


def _digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def _stripe(name: str) -> int:
    return int(name[:4], 16) % _LOCK_STRIPES


def _expired(expires_at: float | None, now: float) -> bool:
    return expires_at is not None and expires_at <= now


def _unpack_header(head: bytes) -> tuple[int, float, float | None, int, int]:
    if len(head) < _BODY_START:
        raise _Corrupt(f"{len(head)} bytes, shorter than the header")
    magic, version, flags, written_at, expires_at, key_length, value_length = _HEADER.unpack_from(
        head
    )
    if magic != _MAGIC:
        raise _Corrupt("not a state file")
    if version != _VERSION:
        raise _Corrupt(f"format version {version}, expected {_VERSION}")
    (crc,) = _CRC.unpack_from(head, _HEADER.size)
    return crc, written_at, expires_at if flags & _HAS_EXPIRY else None, key_length, value_length


def _decode(data: bytes, key: str) -> Entry:
    crc, _, expires_at, key_length, value_length = _unpack_header(data)
    if len(data) != _BODY_START + key_length + value_length:
        raise _Corrupt(
            f"{len(data)} bytes, the header promises {_BODY_START + key_length + value_length}"
        )
    body = memoryview(data)[_BODY_START:]
    if zlib.crc32(body, zlib.crc32(memoryview(data)[: _HEADER.size])) != crc:
        raise _Corrupt("checksum mismatch")
    if body[:key_length] != key.encode():
        raise _Corrupt("it holds another key")
    return Entry(bytes(body[key_length:]), expires_at)
