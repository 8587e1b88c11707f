"""A real redis-server on a free loopback port, for the tests that need one (RedisStore,
workers sharing state).  The binary comes from scripts/system-deps.sh."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest


def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real redis-server on a free loopback port for the session; its URL."""
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.fail(
            "redis-server is not installed, and the RedisStore tests need a real one: "
            "sh scripts/system-deps.sh (the README test command runs it)",
            pytrace=False,
        )
    directory = tmp_path_factory.mktemp("redis")
    # The free port may be taken between the probe and the server's bind: try a few.
    for _ in range(5):
        port = _free_port()
        process = _launch(binary, port, directory)
        if _wait_until_ready(process, port):
            break
        _stop(process)
    else:
        pytest.fail(f"redis-server did not start; see the logs in {directory}", pytrace=False)
    try:
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        _stop(process)


def start_redis(port: int, directory: Path) -> subprocess.Popen[bytes]:
    """A redis-server on ``port`` (e.g. one a test stopped and now starts again), ready."""
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.fail("redis-server is not installed: sh scripts/system-deps.sh", pytrace=False)
    process = _launch(binary, port, directory)
    if not _wait_until_ready(process, port):
        _stop(process)
        pytest.fail(f"redis-server did not start on port {port}", pytrace=False)
    return process


def stop_redis(process: subprocess.Popen[bytes]) -> None:
    _stop(process)


def _launch(binary: str, port: int, directory: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [
            binary,
            "--save", "",
            "--appendonly", "no",
            "--port", str(port),
            "--bind", "127.0.0.1",
            "--dir", str(directory),
            "--logfile", str(directory / f"redis-{port}.log"),
        ],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _wait_until_ready(process: subprocess.Popen[bytes], port: int) -> bool:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if process.poll() is not None:
            return False
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as connection:
                connection.sendall(b"PING\r\n")
                if connection.recv(64).startswith(b"+PONG"):
                    return True
        except OSError:
            pass
        time.sleep(0.02)
    return False


def _stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
