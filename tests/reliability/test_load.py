"""300 concurrent streams, about half of whose clients hang up at a random moment, through
the whole stack behind uvicorn: afterwards the gateway holds no more descriptors or sockets
than before, every hang-up cancelled its upstream stream (the mock saw exactly as many
client disconnects as there were hang-ups), and every other stream completed.

The four client protocols take turns, each against another protocol's upstream every
other time.  The clients are raw asyncio sockets in the test's own event loop: an SDK
cannot be told to hang up mid-stream.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
from collections.abc import Iterator
from pathlib import Path

import pytest

from asgi_rotator.mock import MockUpstream
from tests.e2e.conftest import UPSTREAMS, wait_for
from tests.jsonl_log import complete_lines
from tests.jsonl_log import records as read_records
from tests.reliability._wire import PROTOCOLS, gateway, request_of
from tests.server import serve

STREAMS = 300
EVENTS = 40
DELAY = 0.025  # seconds between events: a stream lasts at least a second
OTHER = {
    "openai_chat": "anthropic_messages",
    "openai_responses": "gemini",
    "anthropic_messages": "openai_responses",
    "gemini": "openai_chat",
}


@pytest.fixture(scope="module")
def paced() -> Iterator[tuple[MockUpstream, str]]:
    mock = MockUpstream(stream_events=EVENTS, chunk_delay=DELAY)
    with serve(mock) as url:
        yield mock, url


def descriptors() -> tuple[int, int]:
    """Open descriptors of this process (servers and clients alike), and how many are
    sockets."""
    fds = os.listdir("/proc/self/fd")
    sockets = 0
    for fd in fds:
        try:
            sockets += os.readlink(f"/proc/self/fd/{fd}").startswith("socket:")
        except OSError:
            pass  # closed meanwhile (the listing's own descriptor)
    return len(fds), sockets


def lines(log: Path) -> int:
    return len(complete_lines(log))


async def one_stream(url: str, n: int, hang_up_after: float | None) -> bool:
    """One streamed request; hang up ``hang_up_after`` seconds after the first bytes of
    the body (None: read to the end).  True when the answer was complete."""
    client = PROTOCOLS[n % 4]
    upstream = client if (n // 4) % 2 else OTHER[client]
    path, body, headers = request_of(client, f"{UPSTREAMS[upstream]}/m", stream=True)
    host, port = url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        payload = json.dumps(body).encode()
        head = f"POST {path} HTTP/1.1\r\nhost: gateway\r\ncontent-type: application/json\r\n"
        head += f"content-length: {len(payload)}\r\nconnection: close\r\n"
        head += "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        writer.write(head.encode() + b"\r\n" + payload)
        await writer.drain()
        received = await reader.readuntil(b"\r\n\r\n")
        assert received.startswith(b"HTTP/1.1 200"), received
        received = await reader.read(65536)  # the first events
        if hang_up_after is not None:
            async with asyncio.timeout(hang_up_after):
                while chunk := await reader.read(65536):
                    received += chunk
            raise AssertionError("the stream ended before the client hung up")
        while chunk := await reader.read(65536):
            received += chunk
        return received.endswith(b"0\r\n\r\n")
    except TimeoutError:
        return False  # hung up on purpose
    finally:
        writer.close()
        try:
            await writer.wait_closed()
        except OSError:
            pass


async def run_all(url: str, plan: list[float | None]) -> list[bool]:
    return await asyncio.gather(*(one_stream(url, n, after) for n, after in enumerate(plan)))


def test_300_concurrent_streams_with_random_disconnects(
    paced: tuple[MockUpstream, str], tmp_path: Path
) -> None:
    mock, mock_url = paced
    log = tmp_path / "close.jsonl"
    stream = {"close_log": str(log), "heartbeat_interval": None}
    with gateway(mock_url, stream=stream) as url:
        # A first round where everyone reads to the end fills the upstream connection pool,
        # which is meant to stay: the baseline is taken after it.
        warm = asyncio.run(run_all(url, [None] * STREAMS))
        assert all(warm)
        assert wait_for(lambda: mock.open_streams == 0, timeout=10)
        # Every warm-up close record is written (off the event loop, after the answer)
        # before the log is started afresh.
        assert wait_for(lambda: lines(log) == STREAMS, timeout=20)
        baseline = descriptors()
        mock.clear()
        log.unlink()

        rng = random.Random(21)
        # Hang up between 0.05 and 0.4 s into a stream that lasts at least 1 s.
        plan = [rng.uniform(0.05, 0.4) if rng.random() < 0.5 else None for _ in range(STREAMS)]
        hang_ups = sum(after is not None for after in plan)
        complete = asyncio.run(run_all(url, plan))
        assert complete == [after is None for after in plan]

        assert wait_for(lambda: len(mock.closed_streams) == STREAMS, timeout=20)
        assert wait_for(lambda: mock.open_streams == 0, timeout=10)
        reasons = [c.reason for c in mock.closed_streams]
        assert reasons.count("client_disconnected") == hang_ups
        assert reasons.count("completed") == STREAMS - hang_ups
        assert wait_for(lambda: lines(log) >= STREAMS, timeout=20)
        records = [record["reason"] for record in read_records(log)]
        assert records.count("client_disconnected") == hang_ups
        assert records.count("completed") == STREAMS - hang_ups
        # Nothing left behind: descriptors and sockets are back where they were.
        assert wait_for(lambda: descriptors()[0] <= baseline[0], timeout=10), (
            descriptors(),
            baseline,
        )
        assert descriptors()[1] <= baseline[1]
