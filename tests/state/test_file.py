from __future__ import annotations

import logging
import os
import random
import stat
import sys
import threading
import time
from pathlib import Path
from subprocess import PIPE
from typing import Any

import anyio
import pytest

from asgi_rotator.state import FileStore

from .conftest import FakeClock

pytestmark = pytest.mark.anyio

# A value whose completeness can be checked: the same header at both ends, one byte in between.
VALUE_CODE = """
def make_value(n):
    head = b"%08d|" % n
    return head + bytes([n % 251]) * (1 << 20) + b"|" + head
"""

WRITER = (
    VALUE_CODE
    + """
import sys, anyio
from asgi_rotator.state import FileStore

async def main():
    store = FileStore(sys.argv[1])
    n = int(sys.argv[2])
    while True:
        n += 1
        await store.set("doc", make_value(n))
        if n % 5 == 0:
            print(n, flush=True)

anyio.run(main)
"""
)

COUNTER = """
import sys, anyio
from asgi_rotator.state import FileStore

async def main():
    store = FileStore(sys.argv[1])
    sys.stdin.readline()
    for _ in range(int(sys.argv[2])):
        await store.incr("hits")

anyio.run(main)
"""

namespace: dict[str, object] = {}
exec(VALUE_CODE, namespace)


def make_value(n: int) -> bytes:
    return namespace["make_value"](n)  # type: ignore[operator,no-any-return]


def is_whole_value(value: bytes) -> bool:
    head = value[:9]
    n = int(head[:8])
    return value == make_value(n)


def entry_files(directory: Path) -> list[Path]:
    return sorted(directory.glob("*.entry"))


async def test_state_survives_a_restart(tmp_path: Path, clock: FakeClock) -> None:
    async with FileStore(tmp_path, clock=clock) as store:
        await store.set("response", b'{"id": "resp_1"}', ttl=100)
        await store.set("forever", b"v")
        await store.incr("usage", 3)
        await store.set_max("cooldown", 1234.5, ttl=50)
    async with FileStore(tmp_path, clock=clock) as store:
        assert await store.get_many(["response", "forever", "usage", "cooldown"]) == [
            b'{"id": "resp_1"}',
            b"v",
            b"3",
            b"1234.5",
        ]
        assert await store.incr("usage") == 4
        clock.advance(50)
        assert await store.get("cooldown") is None
        clock.advance(50)
        assert await store.get("response") is None
        assert await store.get("forever") == b"v"


async def test_directory_is_made_on_first_write_and_files_are_private(tmp_path: Path) -> None:
    directory = tmp_path / "a" / "b"
    store = FileStore(directory)
    assert await store.get("k") is None
    assert await store.size() == 0
    assert await store.purge_expired() == 0
    assert not directory.exists()
    await store.set("secret key", b"v")
    (path,) = entry_files(directory)
    assert "secret" not in path.name
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700


@pytest.mark.parametrize(
    "damage",
    ["truncated", "empty", "flipped_byte", "garbage", "another_key", "future_version", "too_long"],
)
async def test_corrupt_file_reads_as_absent_and_is_logged(
    tmp_path: Path, damage: str, caplog: pytest.LogCaptureFixture
) -> None:
    store = FileStore(tmp_path)
    await store.set("other", b"another value")
    (other,) = entry_files(tmp_path)
    await store.set("k", b"12")
    (path,) = set(entry_files(tmp_path)) - {other}
    data = path.read_bytes()
    if damage == "truncated":
        path.write_bytes(data[: len(data) // 2])
    elif damage == "empty":
        path.write_bytes(b"")
    elif damage == "flipped_byte":
        path.write_bytes(data[:-1] + bytes([data[-1] ^ 1]))
    elif damage == "garbage":
        path.write_bytes(os.urandom(500))
    elif damage == "another_key":
        path.write_bytes(other.read_bytes())
    elif damage == "future_version":
        path.write_bytes(data[:4] + b"\x09" + data[5:])
    elif damage == "too_long":
        path.write_bytes(data + b"\x00")
    with caplog.at_level(logging.WARNING, logger="asgi_rotator.state"):
        assert await store.get("k") is None
        assert await store.get_many(["k", "other"]) == [None, b"another value"]
    assert any(str(path) in record.getMessage() for record in caplog.records)
    assert await store.compare_and_set("k", None, b"41") is True
    assert await store.incr("k") == 42
    path.write_bytes(b"junk")
    assert await store.delete("k") is False
    assert not path.exists()


async def test_purge_removes_corrupt_files(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = FileStore(tmp_path)
    await store.set("k", b"v")
    await store.set("fine", b"v")
    (path,) = [p for p in entry_files(tmp_path) if p.read_bytes().endswith(b"k" + b"v")]
    path.write_bytes(path.read_bytes()[:-1])
    with caplog.at_level(logging.WARNING, logger="asgi_rotator.state"):
        assert await store.purge_expired() == 1
    assert await store.size() == 1
    assert await store.get("fine") == b"v"


async def test_temporary_files_are_not_entries_and_stale_ones_are_purged(tmp_path: Path) -> None:
    store = FileStore(tmp_path)
    await store.set("k", b"v")
    young = tmp_path / ".tmp-young"
    stale = tmp_path / ".tmp-stale"
    young.write_bytes(b"half a val")
    stale.write_bytes(b"half a val")
    two_minutes_ago = time.time() - 120
    os.utime(stale, (two_minutes_ago, two_minutes_ago))
    assert await store.size() == 1
    assert await store.purge_expired() == 0
    assert young.exists()
    assert not stale.exists()
    assert await store.get("k") == b"v"


async def test_max_entries_drops_expired_then_least_recently_written(
    tmp_path: Path, clock: FakeClock
) -> None:
    store = FileStore(tmp_path, max_entries=10, clock=clock)
    for n in range(5):
        await store.set(f"expiring{n}", b"v", ttl=1)
        clock.advance(0.1)
    clock.advance(1)
    for n in range(10):
        await store.set(f"live{n}", b"v")
        clock.advance(1)
    assert await store.size() == 10
    assert await store.get_many([f"live{n}" for n in range(10)]) == [b"v"] * 10
    await store.set("live10", b"v")
    # Over the limit with nothing expired: the oldest writes go, down to 90% of the limit.
    assert await store.size() == 9
    assert await store.get_many(["live0", "live1", "live2", "live10"]) == [None, None, b"v", b"v"]
    await store.set("live2", b"rewritten")
    clock.advance(1)
    await store.set("live11", b"v")
    await store.set("live12", b"v")
    assert await store.size() == 9
    assert await store.get_many(["live2", "live3", "live4"]) == [b"rewritten", None, None]


async def test_max_entries_counts_what_is_already_on_disk(tmp_path: Path, clock: FakeClock) -> None:
    async with FileStore(tmp_path, clock=clock) as unbounded:
        for n in range(20):
            await unbounded.set(f"k{n}", b"v")
            clock.advance(1)
    store = FileStore(tmp_path, max_entries=10, clock=clock)
    await store.set("new", b"v")
    assert await store.size() == 9
    assert await store.get("new") == b"v"


async def test_max_entries_of_one_keeps_the_latest(tmp_path: Path, clock: FakeClock) -> None:
    store = FileStore(tmp_path, max_entries=1, clock=clock)
    for n in range(3):
        await store.set(f"k{n}", b"v")
        clock.advance(1)
    assert await store.get_many(["k0", "k1", "k2"]) == [None, None, b"v"]


async def test_disk_work_runs_off_the_event_loop_thread(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    threads: set[int] = set()
    original = FileStore._write

    def recording_write(self: FileStore, *args: Any) -> int:
        threads.add(threading.get_ident())
        return original(self, *args)

    monkeypatch.setattr(FileStore, "_write", recording_write)
    store = FileStore(tmp_path)
    await store.set("k", b"v")
    await store.incr("n")
    assert threads and threading.get_ident() not in threads


async def test_killed_writer_leaves_the_old_or_the_new_value_whole(tmp_path: Path) -> None:
    store = FileStore(tmp_path)
    await store.set("doc", make_value(0))
    last = 0
    for _ in range(6):
        async with await anyio.open_process(
            [sys.executable, "-c", WRITER, str(tmp_path), str(last * 1000)],
            stdout=PIPE,
            stderr=None,
        ) as process:
            assert process.stdout is not None
            await process.stdout.receive()  # it has written a few values and is writing more
            await anyio.sleep(random.uniform(0, 0.05))
            process.kill()
            await process.wait()
        value = await store.get("doc")
        assert value is not None, "the key vanished"
        assert is_whole_value(value), f"torn value, {len(value)} bytes"
        last = int(value[:8]) // 1000 + 1
    # A writer killed between creating its temporary file and renaming it leaves that file
    # behind: it is not an entry, and purging removes it once it is old.
    assert await store.size() == 1
    for leftover in tmp_path.glob(".tmp-*"):
        os.utime(leftover, (time.time() - 120, time.time() - 120))
    assert await store.purge_expired() == 0
    assert list(tmp_path.glob(".tmp-*")) == []
    assert is_whole_value(await store.get("doc") or b"0")


async def test_concurrent_incr_from_processes_is_exact(tmp_path: Path) -> None:
    store = FileStore(tmp_path)
    await store.set("warm", b"")  # makes the directory before the processes race to
    processes = [
        await anyio.open_process(
            [sys.executable, "-c", COUNTER, str(tmp_path), "150"], stdout=None, stderr=None
        )
        for _ in range(2)
    ]
    try:
        for process in processes:
            assert process.stdin is not None
            await process.stdin.send(b"go\n")
        async with anyio.create_task_group() as tg:
            for _ in range(50):
                tg.start_soon(store.incr, "hits")
        for process in processes:
            assert await process.wait() == 0
    finally:
        for process in processes:
            await process.aclose()
    assert await store.get("hits") == b"350"
