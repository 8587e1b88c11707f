"""Appending to a JSON-lines file (the stream close log, the request log), off the event loop.

Each line is one ``write`` on a descriptor opened with ``O_APPEND``: lines from concurrent
requests and worker processes never interleave, and the file is opened per line, so
``logrotate`` may move it away at any time (the next line makes a new one)."""

from __future__ import annotations

import os

import anyio

__all__ = ["append_line"]


async def append_line(path: str, line: bytes) -> None:
    """Append ``line`` (which ends with its newline) to ``path`` in a worker thread."""
    await anyio.to_thread.run_sync(_append, path, line)


def _append(path: str, line: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line)
    finally:
        os.close(fd)
