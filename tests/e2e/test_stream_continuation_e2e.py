"""After commit, a failure continues the client's stream: every client protocol against its
own protocol's upstream (passthrough) and another (translated), every failure after commit
(stall, premature close, an upstream error event, total timeout, an exception in a layer),
through the whole stack behind a real uvicorn, read raw and by the official SDKs.

Each failure is rendered by a different layer (StreamGuard for the timeouts, dispatch for
what the upstream did, the protocol layer for an exception), and each must continue what
the client already has: one opening, one response id, Responses sequence numbers that keep
increasing, and nothing after the terminal event.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import anthropic
import httpx
import openai
import pytest
from google.genai import errors as genai_errors

from asgi_rotator.config import parse_config
from asgi_rotator.dispatch import ProviderDispatch
from asgi_rotator.middleware import ProtocolNegotiation, ResponsesState, StreamGuard
from asgi_rotator.mock import Fault, MockUpstream
from asgi_rotator.providers import Providers
from asgi_rotator.stack import build_app
from tests.continuation import assert_stream_continued_by_one_error
from tests.e2e.clients import DRIVERS
from tests.e2e.conftest import UPSTREAMS, provider_config
from tests.e2e.test_stream_guard_e2e import PAIRS, raw_request
from tests.server import serve

LIMIT = 1.0
# Every upstream's stream has at least eight events, and six are past its prelude (the
# routing layers hold a prelude; a failure inside it is retried, not continued).
AFTER = 6
API_ERRORS = (openai.APIError, anthropic.APIError, genai_errors.APIError)


def config(mock_url: str, **stream: Any) -> Any:
    return parse_config(
        {
            "providers": provider_config(mock_url),
            "stream": {
                "ttfb_timeout": 10.0,
                "stall_timeout": LIMIT,
                "heartbeat_interval": None,
                **stream,
            },
            # Many failures in a row on one key: none of them may cool it for the next test.
            "cooldown": {"failure_threshold": 1_000_000},
        },
        {},
    )


class RaiseAfter:
    """A foreign layer that raises instead of passing on the body message that holds the
    ``after``-th SSE event, once something has gone out.  It counts events, not messages:
    under load several upstream events arrive in one read and go out as one message, and
    a stream whose terminal event went out could not be continued."""

    def __init__(self, app: Any, after: int) -> None:
        self.app = app
        self.after = after

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        events = 0

        async def counting(message: dict[str, Any]) -> None:
            nonlocal events
            if message["type"] == "http.response.body" and message.get("body"):
                if events and events + message["body"].count(b"\n\n") >= self.after:
                    raise RuntimeError("a layer broke")
                events += message["body"].count(b"\n\n")
            await send(message)

        await self.app(scope, receive, counting)


@pytest.fixture(scope="module")
def whole(mock_server: tuple[MockUpstream, str]) -> Iterator[str]:
    with serve(build_app(config(mock_server[1]), environ={})) as url:
        yield url


@pytest.fixture(scope="module")
def whole_with_total(mock_server: tuple[MockUpstream, str]) -> Iterator[str]:
    app = build_app(config(mock_server[1], stall_timeout=30.0, total_timeout=1.5), environ={})
    with serve(app) as url:
        yield url


@pytest.fixture(scope="module")
def breaking_layer(mock_server: tuple[MockUpstream, str]) -> Iterator[str]:
    providers = Providers(config(mock_server[1]), {})
    inner = StreamGuard(ProviderDispatch(providers), ttfb_timeout=10.0, heartbeat_interval=None)
    app = ProtocolNegotiation(ResponsesState(RaiseAfter(inner, after=AFTER)))
    with serve(app) as url:
        yield url


@pytest.fixture
def paced(mock: MockUpstream) -> Iterator[MockUpstream]:
    """One event per read: an upstream error in the same read as the content before it
    fails the attempt before commit (nothing went out), which the routing layers retry."""
    mock.chunk_delay = 0.05
    yield mock
    mock.chunk_delay = 0.0


FAILURES = {
    "stall": ("whole", Fault(stall_after=AFTER, times=2), "stall_timeout"),
    "premature_close": ("whole", Fault(eof_after=AFTER, times=2), "premature_close"),
    "upstream_error": ("whole", Fault(error_event_after=AFTER, status=500, times=2), None),
    "total_timeout": ("whole_with_total", Fault(stall_after=AFTER, times=2), "total_timeout"),
    "exception_in_a_layer": ("breaking_layer", None, None),
}


@pytest.mark.parametrize("failure", list(FAILURES))
@pytest.mark.parametrize(("client", "upstream"), PAIRS)
def test_a_failure_after_commit_continues_the_clients_stream(
    request: pytest.FixtureRequest, paced: MockUpstream, client: str, upstream: str, failure: str
) -> None:
    gateway, fault, code = FAILURES[failure]
    url = request.getfixturevalue(gateway)
    if fault is not None:
        paced.add_fault(fault)
    model = f"{UPSTREAMS[upstream]}/model-x"
    path, body, headers = raw_request(client, model)
    with httpx.Client(base_url=url, timeout=30) as http:
        response = http.post(path, json=body, headers=headers)
    assert response.status_code == 200
    data = assert_stream_continued_by_one_error(client, response.content)
    if code is not None and client == "openai_responses":
        assert data[-1]["code"] == code  # the gateway's own error event, last
    # The official SDK's stream helper raises, never reads it as complete.
    expected: Any = API_ERRORS
    if (client, upstream, failure) == ("openai_responses", "openai_responses", "upstream_error"):
        # OpenAI's own ``response.failed``, passed through as sent: the SDK's stream helper
        # raises RuntimeError on it (no response.completed), not APIError.
        expected = RuntimeError
    with DRIVERS[client](url) as driver, pytest.raises(expected):
        driver.ask(model, "Hello there", stream=True)


def test_the_issue_example_responses_premature_close_after_eight_events(
    whole: str, mock: MockUpstream
) -> None:
    """`eof_after=8`: the delta numbered 7 is followed by response.failed numbered 8."""
    mock.add_fault(Fault(eof_after=8))
    path, body, headers = raw_request("openai_responses", "up-responses/model-x")
    with httpx.Client(base_url=whole, timeout=30) as http:
        response = http.post(path, json=body, headers=headers)
    data = assert_stream_continued_by_one_error("openai_responses", response.content)
    assert [(d["type"], d["sequence_number"]) for d in data[-3:]] == [
        ("response.output_text.delta", 7),
        ("response.failed", 8),
        ("error", 9),
    ]
    assert data[-2]["response"]["id"] == data[0]["response"]["id"]
