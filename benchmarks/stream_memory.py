"""What an open stream holds, by who allocated it: ``python -m benchmarks.stream_memory``.

The served memory figure is RSS: it says how much, not whose.  This opens ``--streams``
streams through the whole stack (``build_app``, the aiohttp upstream client) against the
benchmark upstream in a process of its own, holds them past their first text, and compares
two ``tracemalloc`` snapshots: before the streams opened and while they are all open.  Each
byte is charged to the file that allocated it, grouped by package, and our own by module.
A coroutine's frame is charged to the line that called it, so a layer's frame shows under
the layer above it.

Python's allocations only: the allocator's slack and the kernel's socket buffers are in the
RSS figure and not here.  The server's side (uvicorn's connection objects) is left out: the
stack is called directly, as the in-process figures call it.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import subprocess
import sys
import time
import tracemalloc
from collections import Counter
from pathlib import Path
from typing import Any

from benchmarks import inprocess
from benchmarks.apps import build_stack
from benchmarks.run import free_port, wait_ready
from benchmarks.upstream import HOLD_MODEL

_FIRST_TEXT = b"word"  # the benchmark upstream's text
_ROOT = str(Path(__file__).resolve().parent.parent)
# What stands in for the server and the client: not the stack's memory.
_CLIENT_SIDE = frozenset({__file__, inprocess.__file__})


class _HeldStreams:
    """Streams through ``app``, each held open (its client connected) until ``release``."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.released = asyncio.Event()
        self.first_text = 0
        self.body = (
            f'{{"model":"chat/{HOLD_MODEL}","messages":[{{"role":"user","content":"Say hello"}}],'
            '"max_tokens":16,"stream":true}'
        ).encode()

    async def one(self, i: int) -> None:
        given = False
        seen = False

        async def receive() -> dict[str, Any]:
            nonlocal given
            if not given:
                given = True
                return {"type": "http.request", "body": self.body, "more_body": False}
            await self.released.wait()
            return {"type": "http.disconnect"}

        async def send(message: dict[str, Any]) -> None:
            nonlocal seen
            if not seen and _FIRST_TEXT in message.get("body", b""):
                seen = True
                self.first_text += 1

        await self.app(inprocess.chat_scope(self.body, 10000 + i), receive, send)

    async def hold(self, count: int, timeout: float = 60) -> list[asyncio.Task[None]]:
        start = self.first_text
        tasks = [asyncio.create_task(self.one(i)) for i in range(count)]
        deadline = time.monotonic() + timeout
        while self.first_text - start < count and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        return tasks

    async def release(self, tasks: list[asyncio.Task[None]]) -> None:
        self.released.set()
        await asyncio.gather(*tasks, return_exceptions=True)
        self.released = asyncio.Event()


def _owner(filename: str) -> tuple[str, str | None]:
    """(package, our module or None) for a file that allocated."""
    if "/asgi_rotator/" in filename:
        return "asgi_rotator", filename.rsplit("/asgi_rotator/", 1)[1]
    if "site-packages/" in filename:
        return filename.split("site-packages/", 1)[1].split("/", 1)[0], None
    return Path(filename).stem, None  # the standard library's asyncio, weakref ...


async def measure(streams: int, upstream: str) -> dict[str, Any]:
    app = build_stack(upstream, "aiohttp", max_connections=streams + 20)
    held = _HeldStreams(app)
    # Warm: pools, caches and the codecs' first use are not a stream's.
    await held.release(await held.hold(min(20, streams)))
    gc.collect()
    tracemalloc.start(1)
    before = tracemalloc.take_snapshot()
    tasks = await held.hold(streams)
    opened = held.first_text - min(20, streams)
    await asyncio.sleep(0.5)
    gc.collect()
    during = tracemalloc.take_snapshot()
    tracemalloc.stop()
    await held.release(tasks)
    await app.aclose()
    packages: Counter[str] = Counter()
    ours: Counter[str] = Counter()
    for stat in during.compare_to(before, "filename"):
        filename = stat.traceback[0].filename
        if filename in _CLIENT_SIDE:
            continue  # the client's side of the streams (its scope and messages), made here
        package, module = _owner(filename)
        packages[package] += stat.size_diff
        if module is not None:
            ours[module] += stat.size_diff
    opened = max(opened, 1)
    return {
        "streams": opened,
        "kib_per_stream": round(sum(packages.values()) / opened / 1024, 2),
        "packages_bytes": {k: round(v / opened) for k, v in packages.most_common(10)},
        "ours_bytes": {k: round(v / opened) for k, v in ours.most_common(15)},
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.stream_memory")
    parser.add_argument("--streams", type=int, default=500)
    args = parser.parse_args(argv)
    port = free_port()
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [_ROOT, env.get("PYTHONPATH")]))
    argv_up = [sys.executable, "-m", "benchmarks.apps", "upstream", "--port", str(port)]
    upstream = subprocess.Popen(argv_up, env=env, stdout=subprocess.DEVNULL)
    try:
        wait_ready(f"http://127.0.0.1:{port}", upstream, Path(os.devnull), 60)
        figures = asyncio.run(measure(args.streams, f"http://127.0.0.1:{port}"))
    finally:
        upstream.terminate()
        upstream.wait(10)
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
