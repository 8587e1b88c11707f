"""A slow client and a stalled client under ``total_timeout`` and ``send_timeout`` (issue 21
item 2), through the whole stack behind uvicorn.

The upstream streams megabytes as fast as it is read, so a client that reads slowly (about
40 KB/s) or not at all keeps the gateway's sends waiting on it.  Before the fix the deadline
stopped during every send: both clients stayed connected, the upstream stream open, for as
long as they liked.  Now the total deadline runs during sends, and a client that accepts
nothing for ``send_timeout`` is dropped: the upstream is cancelled at once and the
connection closed.  Bounds are generous wall-clock bounds (the machine is shared).
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from asgi_rotator.mock import MockUpstream
from tests.e2e.conftest import wait_for
from tests.reliability._wire import PROTOCOLS, RawClient, gateway, model_of, request_of
from tests.server import serve

# 12 MB in 4000 events, one a millisecond: at least 4 s to stream, longer than any limit
# here, and far more than the buffers between the gateway and a client that stops reading
# hold (the gateway's send buffer is small: ``gateway(small_buffers=True)``).
TEXT = "lorem ipsum " * 1_000_000
EVENTS = 4000


@pytest.fixture(scope="module")
def big_upstream() -> Iterator[tuple[MockUpstream, str]]:
    mock = MockUpstream(text=TEXT, stream_events=EVENTS, chunk_delay=0.001)
    with serve(mock) as url:
        yield mock, url


@pytest.fixture
def big(big_upstream: tuple[MockUpstream, str]) -> Iterator[tuple[MockUpstream, str]]:
    mock = big_upstream[0]
    wait_for(lambda: mock.open_streams == 0, timeout=10)
    mock.clear()
    yield big_upstream
    mock.clear()


def start_stream(url: str, client: str) -> RawClient:
    raw = RawClient(url)
    path, body, headers = request_of(client, model_of(client), stream=True)
    raw.send_request(path, body, headers)
    head = raw.read_head()
    assert head.startswith(b"HTTP/1.1 200"), head
    return raw


def upstream_closed(mock: MockUpstream, timeout: float) -> float | None:
    """When the mock saw its stream end (monotonic), if it did within ``timeout``."""
    closed = wait_for(lambda: mock.closed_streams, timeout=timeout)
    if not closed:
        return None
    assert [c.reason for c in closed] == ["client_disconnected"]
    assert closed[0].events < EVENTS  # cut short, not streamed to the end into buffers
    return closed[0].time


@pytest.mark.parametrize("client", PROTOCOLS)
def test_a_stalled_client_is_dropped_after_send_timeout(
    big: tuple[MockUpstream, str], client: str
) -> None:
    mock, mock_url = big
    stream = {"send_timeout": 1.0, "stall_timeout": 60.0, "heartbeat_interval": None}
    with gateway(mock_url, small_buffers=True, stream=stream) as url:
        raw = start_stream(url, client)
        try:
            started = time.monotonic()
            # The client reads nothing more, socket open.  The upstream stream is cancelled
            # while it still holds on (the client has not read or closed anything).
            closed_at = upstream_closed(mock, timeout=10)
            assert closed_at is not None, "the upstream stream stayed open"
            assert closed_at - started < 8
            # And the gateway closed the connection, the response unfinished (a chunked
            # body without its last chunk): nothing the client can take for a whole answer.
            assert raw.read_to_end(timeout=20), "the connection stayed open"
            assert not raw.received.endswith(b"0\r\n\r\n")
        finally:
            raw.close()
        assert wait_for(lambda: mock.open_streams == 0, timeout=5)


def test_a_stalled_client_is_bounded_by_total_timeout(big: tuple[MockUpstream, str]) -> None:
    mock, mock_url = big
    stream = {
        "total_timeout": 1.5,
        "send_timeout": 2.0,  # bounds the closing write of the in-band error, too
        "stall_timeout": 60.0,
        "heartbeat_interval": None,
    }
    with gateway(mock_url, small_buffers=True, stream=stream) as url:
        raw = start_stream(url, "openai_chat")
        try:
            started = time.monotonic()
            closed_at = upstream_closed(mock, timeout=10)
            assert closed_at is not None, "the upstream stream stayed open"
            assert closed_at - started < 8
            # Still not reading when the closing write's own bound (send_timeout) is over:
            # the gateway gave up on the in-band error and closed the connection.
            time.sleep(max(0.0, started + 6.0 - time.monotonic()))
            assert raw.read_to_end(timeout=20), "the connection stayed open"
            assert not raw.received.endswith(b"0\r\n\r\n")
        finally:
            raw.close()


def test_a_slow_reader_is_bounded_by_total_timeout(big: tuple[MockUpstream, str]) -> None:
    mock, mock_url = big
    stream = {"total_timeout": 2.0, "stall_timeout": 60.0, "heartbeat_interval": None}
    with gateway(mock_url, small_buffers=True, stream=stream) as url:
        raw = start_stream(url, "openai_chat")
        try:
            started = time.monotonic()
            # About 40 KB/s: the client always takes something within send_timeout (30 s by
            # default), so only the total deadline can end this stream.  It reads slowly
            # until the upstream is closed (or long past the deadline).
            while not mock.closed_streams and time.monotonic() < started + 12:
                assert not raw.read_slowly(40_000, until=time.monotonic() + 0.25)
            closed_at = upstream_closed(mock, timeout=1)
            assert closed_at is not None, "the upstream stream stayed open"
            assert closed_at - started < 8
            # What was already on its way (how much the kernel buffers varies) and then
            # the total_timeout in-band error end the answer: never a complete one.
            assert raw.read_to_end_of_body(timeout=20), "the answer did not end"
            assert b"total_timeout" in raw.received
        finally:
            raw.close()
