"""Many streams held open on one worker, watched for their heartbeats.

``python -m benchmarks.many_streams --url URL --count N --seconds S`` opens ``N`` streams to
the hold model (each gets its first text, then the upstream goes quiet), prints ``ready
OPENED FAILED`` once they are all open, then reads every one of them for ``S`` seconds and
prints one JSON line: how late each heartbeat came (the gap between two arrivals on a stream,
minus the interval), which streams ended or went quiet for three intervals (starved), and
how many heartbeats came in all.

It runs in a process of its own so that the harness can put plain-request load on the same
gateway meanwhile, and measure that load's latency against an idle gateway.  Each stream is
one asyncio task that only reads: what is measured is the gateway's timing, give or take this
process's own scheduling, which the report says.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import statistics
import sys
import time
from collections.abc import Sequence
from urllib.parse import urlsplit

from benchmarks.load import FirstText, make_request

# StreamGuard's heartbeat on an OpenAI Chat stream: an SSE comment.
HEARTBEAT = b": keepalive"


def raise_open_files(wanted: int) -> int:
    """Raise this process's open-file limit towards ``wanted`` (the hard limit too, where
    the process may: root may); the soft limit it got."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < wanted:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, wanted))
            return wanted
        except (ValueError, OSError):
            pass  # not allowed here: the hard limit is what there is
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return max(soft, target)


class Watched:
    """One open stream: when each piece arrived after its first text."""

    __slots__ = ("arrivals", "ended")

    def __init__(self) -> None:
        self.arrivals: list[float] = []
        self.ended = False


async def open_stream(
    host: str, port: int, request: bytes, gate: asyncio.Semaphore
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter] | None:
    async with gate:  # a burst of connects, not a SYN flood
        try:
            reader, writer = await asyncio.open_connection(host, port, limit=2**16)
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            if head[9:12] != b"200":
                writer.close()
                return None
            first = FirstText()
            while first.at is None:
                chunk = await reader.read(65536)
                if not chunk:
                    writer.close()
                    return None
                first(chunk)
        except (OSError, asyncio.IncompleteReadError):
            return None
    return reader, writer


async def read_until(reader: asyncio.StreamReader, watched: Watched, deadline: float) -> None:
    loop = asyncio.get_running_loop()
    try:
        while True:
            left = deadline - loop.time()
            if left <= 0:
                return
            chunk = await asyncio.wait_for(reader.read(65536), left)
            if not chunk:
                watched.ended = True
                return
            if HEARTBEAT in chunk:  # what else comes (the rest of a prelude) is not timed
                watched.arrivals.append(loop.time())
    except TimeoutError:
        return
    except OSError:
        watched.ended = True


async def watch(
    url: str,
    body: bytes,
    headers: Sequence[tuple[str, str]],
    count: int,
    seconds: float,
    interval: float,
) -> dict[str, object]:
    parts = urlsplit(url)
    assert parts.hostname is not None and parts.port is not None
    request = make_request(url, body, headers)
    gate = asyncio.Semaphore(256)
    opened = await asyncio.gather(
        *(open_stream(parts.hostname, parts.port, request, gate) for _ in range(count))
    )
    streams = [s for s in opened if s is not None]
    print(f"ready {len(streams)} {count - len(streams)}", flush=True)
    loop = asyncio.get_running_loop()
    start = loop.time()
    watched = [Watched() for _ in streams]
    await asyncio.gather(
        *(
            read_until(reader, w, start + seconds)
            for (reader, _writer), w in zip(streams, watched, strict=True)
        )
    )
    lateness: list[float] = []
    starved = ended = beats = 0
    for w in watched:
        ended += w.ended
        beats += len(w.arrivals)
        times = [start, *w.arrivals]
        gaps = [b - a for a, b in zip(times, times[1:], strict=False)]
        # The first gap starts at an arbitrary point of the stream's heartbeat cycle: only
        # gaps between two arrivals say how late a heartbeat was.
        lateness += [gap - interval for gap in gaps[1:]]
        tail = start + seconds - times[-1]
        if max([*gaps, tail], default=seconds) > 3 * interval:
            starved += 1
    for _reader, writer in streams:
        writer.close()
    lateness.sort()

    def pct(p: float) -> float | None:
        return lateness[min(len(lateness) - 1, int(p * len(lateness)))] if lateness else None

    return {
        "requested": count,
        "opened": len(streams),
        "failed": count - len(streams),
        "seconds": seconds,
        "interval": interval,
        "heartbeats": beats,
        "ended": ended,
        "starved": starved,
        "lateness_ms": {
            "p50": _ms(pct(0.50)),
            "p99": _ms(pct(0.99)),
            "max": _ms(lateness[-1] if lateness else None),
            "mean": _ms(statistics.fmean(lateness) if lateness else None),
        },
    }


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else seconds * 1000


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.many_streams")
    parser.add_argument("--url", required=True)
    parser.add_argument("--body", required=True)
    parser.add_argument("--header", action="append", default=[], help="Name: value")
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--seconds", type=float, required=True)
    parser.add_argument("--interval", type=float, default=1.0)
    args = parser.parse_args(argv)
    limit = raise_open_files(args.count + 256)
    if limit < args.count + 64:
        print(f"open-file limit {limit} is below {args.count} streams", file=sys.stderr)
    headers = [tuple(h.split(": ", 1)) for h in args.header]
    started = time.monotonic()
    result = asyncio.run(
        watch(
            args.url,
            args.body.encode(),
            headers,  # type: ignore[arg-type]
            args.count,
            args.seconds,
            args.interval,
        )
    )
    result["open_files_limit"] = limit
    result["wall_seconds"] = time.monotonic() - started
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
