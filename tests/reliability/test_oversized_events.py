"""An upstream SSE line or event over ``stream.max_event_bytes`` (issue 21 item 7), through
the whole stack behind uvicorn.

Before: a 64 MiB line with no line end was buffered whole and re-concatenated on every
chunk (97 MB RSS, 6 s of CPU over three attempts).  Now the attempt fails as soon as the
limit is passed, as an ``upstream_error``: retryable before anything reached the client (a
group moves on), an in-band error after; the upstream stream is closed at once.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from asgi_rotator.mock import Fault, MockUpstream
from tests.e2e.clients import DRIVERS
from tests.e2e.conftest import UPSTREAMS, wait_for
from tests.jsonl_log import records
from tests.reliability._wire import PROTOCOLS, gateway, model_of, request_of
from tests.server import serve

LIMIT = 1024 * 1024  # 1 MiB, so the test sends little
HUGE = 64 * LIMIT  # what the upstream would send if nobody stopped it


@pytest.fixture(scope="module")
def mock_server() -> Iterator[tuple[MockUpstream, str]]:
    mock = MockUpstream()
    with serve(mock) as url:
        yield mock, url


@pytest.fixture
def limited(
    mock_server: tuple[MockUpstream, str], tmp_path: Path
) -> Iterator[tuple[MockUpstream, str, Path]]:
    mock = mock_server[0]
    mock.clear()
    groups = {
        f"g-{p}": {"targets": [f"{UPSTREAMS[p]}/bad", f"{UPSTREAMS[p]}/good"]} for p in PROTOCOLS
    }
    log = tmp_path / "close.jsonl"
    stream = {"max_event_bytes": LIMIT, "close_log": str(log), "heartbeat_interval": None}
    cooldown = {"max_attempts": 1}  # no retry on the same key: the group moves on at once
    with gateway(mock_server[1], stream=stream, groups=groups, cooldown=cooldown) as url:
        yield mock, url, log
    wait_for(lambda: mock.open_streams == 0, timeout=5)
    mock.clear()


def closes(log: Path) -> list[dict[str, object]]:
    return records(log)


@pytest.mark.parametrize("client", PROTOCOLS)
def test_an_oversized_first_event_is_retried_on_the_next_target(
    limited: tuple[MockUpstream, str, Path], client: str
) -> None:
    mock, url, log = limited
    mock.add_fault(Fault(model="bad", oversized_event=HUGE, eof_after=0, times=None))
    with DRIVERS[client](url) as driver:
        result = driver.ask(f"g-{client}", "Hello there", stream=True)
    assert "You said: Hello there" in result.text
    assert [r.model for r in mock.requests] == ["bad", "good"]
    # Nothing is left streaming at the mock.  (How the mock saw the bad stream end says
    # little here: uvicorn drops writes to a closed connection, so the mock "finishes"
    # its 64 MiB into the void as soon as the gateway hangs up.)
    assert wait_for(lambda: len(mock.closed_streams) == 2 and mock.open_streams == 0, timeout=5)
    # One close record per attempt: the bad one's says what happened.
    records = wait_for(lambda: len(closes(log)) == 2 and closes(log), timeout=5)
    assert [c["reason"] for c in records] == ["upstream_error", "completed"]
    assert "stream.max_event_bytes" in str(records[0]["error"])


@pytest.mark.parametrize("client", PROTOCOLS)
def test_an_oversized_event_after_commit_is_an_in_band_error(
    limited: tuple[MockUpstream, str, Path], client: str
) -> None:
    mock, url, log = limited
    # After a few content events, whatever each protocol's opening events are.
    mock.add_fault(Fault(oversized_event=HUGE, eof_after=6, times=None))
    path, body, headers = request_of(client, model_of(client), stream=True)
    with httpx.Client(base_url=url, timeout=30) as http:
        response = http.post(path, json=body, headers=headers)
    assert response.status_code == 200
    text = response.text
    assert "larger than 1048576 bytes" in text  # the in-band error says what happened
    assert "stream.max_event_bytes" in text
    [close] = wait_for(lambda: closes(log), timeout=5)
    assert close["reason"] == "upstream_error"
    assert not close["terminal_sent"]
    assert wait_for(lambda: mock.closed_streams and mock.open_streams == 0, timeout=5)
