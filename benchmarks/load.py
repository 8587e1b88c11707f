"""Load generation and stream probes.

``wrk`` (the Debian package of that name) generates the request load when it is installed:
it is written in C and costs the load core little.  Without it a Python generator stands in
(asyncio, keep-alive HTTP/1.1 over raw streams); it is slower, so at the top arms it may
measure itself rather than the gateway, and every result says which generator made it.

The stream probes (time to first text, event counts, streams held open) are Python in all
cases: they need per-stream timing and the bodies, which wrk does not give.
"""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit


class MeasurementError(RuntimeError):
    """A load run that could not measure (the load generator failed); its message says why."""


@dataclass
class LoadResult:
    tool: str
    connections: int
    requests: int
    seconds: float
    errors: int
    p50_ms: float
    p99_ms: float
    error_sample: str = ""  # one answer fetched after a run with errors: why they happened

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0


def sample_response(url: str, body: bytes, headers: Sequence[tuple[str, str]]) -> str:
    """Status and the head of the body of one more request: after a run with errors, what
    the server answers now (a cooldown, an auth failure, a crash) says why."""
    request = urllib.request.Request(url, data=body, headers=dict(headers), method="POST")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return f"{response.status} {response.read(300).decode(errors='replace')}"
    except urllib.error.HTTPError as exc:
        return f"{exc.code} {exc.read(300).decode(errors='replace')}"
    except OSError as exc:
        return f"no answer: {exc!r}"


def wrk_path() -> str | None:
    return shutil.which("wrk")


def make_request(url: str, body: bytes, headers: Sequence[tuple[str, str]]) -> bytes:
    """One HTTP/1.1 POST, as bytes, for the Python generator and the probes."""
    parts = urlsplit(url)
    lines = [
        f"POST {parts.path or '/'}{'?' + parts.query if parts.query else ''} HTTP/1.1",
        f"Host: {parts.netloc}",
        f"Content-Length: {len(body)}",
        *(f"{k}: {v}" for k, v in headers),
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


def run_load(
    tool: str,
    url: str,
    body: bytes,
    headers: Sequence[tuple[str, str]],
    connections: int,
    seconds: float,
) -> LoadResult:
    if tool == "wrk":
        return run_wrk(url, body, headers, connections, seconds)
    return asyncio.run(python_load(url, body, headers, connections, seconds))


# --- wrk ----------------------------------------------------------------------------------


def run_wrk(
    url: str,
    body: bytes,
    headers: Sequence[tuple[str, str]],
    connections: int,
    seconds: float,
) -> LoadResult:
    lua = ["wrk.method = 'POST'", f"wrk.body = {_lua_string(body)}"]
    lua += [
        f"wrk.headers[{_lua_string(k.encode())}] = {_lua_string(v.encode())}" for k, v in headers
    ]
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
        script.write("\n".join(lua) + "\n")
    try:
        duration = max(1, round(seconds))
        completed = subprocess.run(
            [
                wrk_path() or "wrk",
                "-t1",
                f"-c{connections}",
                f"-d{duration}s",
                "--timeout",
                "30s",
                "--latency",
                "-s",
                script.name,
                url,
            ],
            capture_output=True,
            text=True,
        )
    finally:
        Path(script.name).unlink()
    if completed.returncode != 0:
        said = (completed.stderr.strip() or completed.stdout.strip())[-800:]
        raise MeasurementError(f"wrk exited with status {completed.returncode}: {said}")
    return parse_wrk(completed.stdout, connections)


def _lua_string(raw: bytes) -> str:
    return (
        '"' + "".join(f"\\{b}" if not (32 <= b < 127) or b in b'"\\' else chr(b) for b in raw) + '"'
    )


_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3}


def parse_wrk(output: str, connections: int) -> LoadResult:
    """Requests, duration, errors and p50/p99 from ``wrk --latency`` output."""
    done = re.search(r"(\d+) requests in ([\d.]+)(us|ms|s|m)", output)
    if done is None:
        raise ValueError(f"unexpected wrk output:\n{output}")
    requests = int(done.group(1))
    seconds = float(done.group(2)) * _UNITS[done.group(3)] / 1e3
    latency = {
        int(m.group(1)): float(m.group(2)) * _UNITS[m.group(3)]
        for m in re.finditer(r"^\s+(\d+)%\s+([\d.]+)(us|ms|s|m)\s*$", output, re.MULTILINE)
    }
    errors = 0
    if m := re.search(r"Non-2xx or 3xx responses: (\d+)", output):
        errors += int(m.group(1))
    if m := re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output
    ):
        # A read error is how wrk counts the server closing an idle connection; only count
        # the others.
        errors += int(m.group(1)) + int(m.group(3)) + int(m.group(4))
    return LoadResult(
        tool="wrk",
        connections=connections,
        requests=requests,
        seconds=seconds,
        errors=errors,
        p50_ms=latency.get(50, float("nan")),
        p99_ms=latency.get(99, float("nan")),
    )


# --- Python ---------------------------------------------------------------------------------


async def python_load(
    url: str,
    body: bytes,
    headers: Sequence[tuple[str, str]],
    connections: int,
    seconds: float,
) -> LoadResult:
    parts = urlsplit(url)
    request = make_request(url, body, headers)
    latencies: list[float] = []
    errors = 0
    started = time.perf_counter()
    deadline = started + seconds

    async def worker() -> None:
        nonlocal errors
        reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
        try:
            while (begin := time.perf_counter()) < deadline:
                writer.write(request)
                status, _ = await read_response(reader)
                latencies.append(time.perf_counter() - begin)
                if status >= 400:
                    errors += 1
        finally:
            writer.close()

    await asyncio.gather(*(worker() for _ in range(connections)))
    elapsed = time.perf_counter() - started
    latencies.sort()
    return LoadResult(
        tool="python",
        connections=connections,
        requests=len(latencies),
        seconds=elapsed,
        errors=errors,
        p50_ms=_percentile(latencies, 50) * 1e3,
        p99_ms=_percentile(latencies, 99) * 1e3,
    )


def _percentile(ordered: Sequence[float], p: float) -> float:
    if not ordered:
        return float("nan")
    return ordered[min(len(ordered) - 1, int(len(ordered) * p / 100))]


async def read_response(
    reader: asyncio.StreamReader, on_chunk: Callable[[bytes], None] | None = None
) -> tuple[int, bytes]:
    """Status and body of one response (content-length or chunked); ``on_chunk`` sees each
    piece of the body the moment it has arrived."""
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    lower = head.lower()
    if b"transfer-encoding: chunked" not in lower:
        match = re.search(rb"content-length:\s*(\d+)", lower)
        body = await reader.readexactly(int(match.group(1))) if match else b""
        if on_chunk is not None:
            on_chunk(body)
        return status, body
    pieces: list[bytes] = []
    while True:
        size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
        if size == 0:
            await reader.readuntil(b"\r\n")
            return status, b"".join(pieces)
        piece = await reader.readexactly(size)
        await reader.readexactly(2)
        pieces.append(piece)
        if on_chunk is not None:
            on_chunk(piece)


# --- stream probes --------------------------------------------------------------------------


@dataclass
class StreamProbe:
    ttft_ms: list[float]  # request written -> first SSE event carrying text, per stream
    events: list[int]  # SSE events received, per stream
    content_events: list[int]  # events carrying text, per stream
    errors: int


class FirstText:
    """Notes when the first SSE event carrying text has arrived whole."""

    def __init__(self) -> None:
        self.buffer = b""
        self.at: float | None = None

    def __call__(self, piece: bytes) -> None:
        if self.at is not None:
            return
        self.buffer += piece.replace(b"\r\n", b"\n")
        *complete, self.buffer = self.buffer.split(b"\n\n")
        if any(has_text(event) for event in complete):
            self.at = time.perf_counter()


async def probe_streams(
    url: str, body: bytes, headers: Sequence[tuple[str, str]], count: int
) -> StreamProbe:
    """``count`` streams one after another on one keep-alive connection: time to the first
    text (what a user waits for; a gateway may hold back a text-less prelude until then),
    and how many events and text events came."""
    parts = urlsplit(url)
    request = make_request(url, body, headers)
    reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
    probe = StreamProbe([], [], [], 0)
    try:
        for _ in range(count):
            first = FirstText()
            begin = time.perf_counter()
            writer.write(request)
            status, raw = await read_response(reader, first)
            if status != 200 or first.at is None:
                probe.errors += 1
                continue
            probe.ttft_ms.append((first.at - begin) * 1e3)
            events = [e for e in raw.replace(b"\r\n", b"\n").split(b"\n\n") if e.strip()]
            probe.events.append(len(events))
            probe.content_events.append(sum(1 for e in events if has_text(e)))
    finally:
        writer.close()
    return probe


def has_text(event: bytes) -> bool:
    """Does this SSE event carry reply text (OpenAI Chat, Anthropic, Responses, Gemini)?"""
    for line in event.split(b"\n"):
        if not line.startswith(b"data:"):
            continue
        try:
            data = json.loads(line[5:])
        except ValueError:
            return False
        if not isinstance(data, dict):
            return False
        for choice in data.get("choices") or ():
            if (choice.get("delta") or {}).get("content"):
                return True
        delta = data.get("delta")
        if isinstance(delta, dict) and delta.get("text"):
            return True
        if data.get("type") == "response.output_text.delta" and data.get("delta"):
            return True
        for candidate in data.get("candidates") or ():
            for part in (candidate.get("content") or {}).get("parts") or ():
                if part.get("text"):
                    return True
    return False


class HeldStreams:
    """Streams opened and left open (each has had its first text), closed on exit."""

    def __init__(self) -> None:
        self.writers: list[asyncio.StreamWriter] = []
        self.failed = 0

    async def open(
        self, url: str, body: bytes, headers: Sequence[tuple[str, str]], count: int
    ) -> None:
        parts = urlsplit(url)
        request = make_request(url, body, headers)
        gate = asyncio.Semaphore(64)  # a burst of connects, not a SYN flood

        async def one() -> None:
            async with gate:
                try:
                    reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
                    writer.write(request)
                    head = await reader.readuntil(b"\r\n\r\n")
                    if head[9:12] != b"200":
                        raise OSError(head[:12].decode("latin-1"))
                    first = FirstText()
                    while first.at is None:
                        chunk = await reader.read(65536)
                        if not chunk:
                            raise OSError("closed")
                        first(chunk)  # chunked framing around it does not matter here
                except (OSError, asyncio.IncompleteReadError):
                    self.failed += 1
                    return
                self.writers.append(writer)

        await asyncio.wait_for(asyncio.gather(*(one() for _ in range(count))), 120)

    async def close(self) -> None:
        for writer in self.writers:
            writer.close()
        for writer in self.writers:
            try:
                await writer.wait_closed()
            except OSError:
                pass
        self.writers.clear()
