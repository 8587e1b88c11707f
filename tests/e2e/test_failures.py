"""Provider failures reach each client as its SDK's own exception; disconnects and pooling.

These check what dispatch makes of each failure, so the gateway here has no routing layers:
with them, one test's 429 would (rightly) cool a key for the next test.  Retries, fallbacks
and cooldowns have their own end-to-end tests (test_routing_e2e.py)."""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterator

import anthropic
import httpx
import openai
import pytest
from google.genai import errors as genai_errors

from asgi_rotator.config import parse_config
from asgi_rotator.mock import Fault, MockUpstream
from asgi_rotator.stack import build_app
from tests.e2e.clients import DRIVERS
from tests.e2e.conftest import UPSTREAMS, provider_config, wait_for
from tests.server import free_port, serve

# kind -> (upstream status, what each client's SDK raises)
CASES = {
    "rate_limited": (
        429,
        openai.RateLimitError,
        anthropic.RateLimitError,
        genai_errors.ClientError,
    ),
    "auth": (
        401,
        openai.AuthenticationError,
        anthropic.AuthenticationError,
        genai_errors.ClientError,
    ),
    "not_found": (404, openai.NotFoundError, anthropic.NotFoundError, genai_errors.ClientError),
    "context_window_exceeded": (
        400,
        openai.BadRequestError,
        anthropic.BadRequestError,
        genai_errors.ClientError,
    ),
    "server_error": (
        500,
        openai.InternalServerError,
        anthropic.InternalServerError,
        genai_errors.ServerError,
    ),
    "overloaded": (
        529,
        openai.InternalServerError,
        anthropic.OverloadedError,
        genai_errors.ServerError,
    ),
}
CLIENT_COLUMN = {"openai_chat": 1, "openai_responses": 1, "anthropic_messages": 2, "gemini": 3}
MESSAGES = {"context_window_exceeded": "prompt is too long: 250000 tokens > 200000 maximum"}


def status_of(exc: Exception) -> int:
    return exc.code if isinstance(exc, genai_errors.APIError) else exc.status_code  # type: ignore[attr-defined]


def retry_after_of(exc: Exception) -> str | None:
    response = exc.response  # type: ignore[attr-defined]
    return response.headers.get("retry-after") if response is not None else None


@pytest.fixture(scope="module")
def gateway_url(mock_server: tuple[MockUpstream, str]) -> Iterator[str]:
    config = parse_config({"providers": provider_config(mock_server[1])}, {})
    with serve(build_app(config, environ={}, without={"cooldown", "fallback", "responses"})) as url:
        yield url


@pytest.mark.parametrize("kind", list(CASES))
@pytest.mark.parametrize(
    ("client", "upstream"),
    [pytest.param(c, u, id=f"{c}->{u}") for c, u in itertools.product(DRIVERS, UPSTREAMS)],
)
def test_provider_errors_arrive_as_the_sdk_exception(
    gateway_url: str, mock: MockUpstream, client: str, upstream: str, kind: str
) -> None:
    status, *classes = CASES[kind]
    expected_class = classes[CLIENT_COLUMN[client] - 1]
    mock.add_fault(
        Fault(
            status=status,
            message=MESSAGES.get(kind),
            retry_after=7 if status == 429 else None,
            times=None,
        )
    )
    with DRIVERS[client](gateway_url) as driver, pytest.raises(expected_class) as info:
        driver.ask(f"{UPSTREAMS[upstream]}/model-x", stream=kind == "rate_limited")
    expected_status = {529: 529 if client == "anthropic_messages" else 503}.get(status, status)
    assert status_of(info.value) == expected_status
    if kind == "rate_limited":
        assert retry_after_of(info.value) == "7"
    if kind == "context_window_exceeded":
        assert "prompt is too long" in str(info.value)


@pytest.fixture(scope="module")
def fragile_gateway(mock_server: tuple[MockUpstream, str]) -> Iterator[str]:
    """Providers that cannot answer: a closed port, and one with a short timeout."""
    providers = provider_config(mock_server[1])
    providers["up-dead"] = {
        "protocol": "openai_chat",
        "base_url": f"http://127.0.0.1:{free_port()}/v1",
        "keys": ["k"],
    }
    providers["up-slow"] = {**providers["up-anthropic"], "timeout": 0.5}
    config = parse_config({"providers": providers}, {})
    with serve(build_app(config, environ={}, without={"cooldown", "fallback", "responses"})) as url:
        yield url


@pytest.mark.parametrize("client", list(DRIVERS))
def test_connection_refused_and_timeout_are_gateway_errors(
    fragile_gateway: str, mock: MockUpstream, client: str
) -> None:
    mock.add_fault(Fault(header_delay=3, times=None))
    with DRIVERS[client](fragile_gateway) as driver:
        with pytest.raises(Exception) as refused:
            driver.ask("up-dead/model-x")
        assert status_of(refused.value) == 502
        with pytest.raises(Exception) as slow:
            driver.ask("up-slow/model-x")
        assert status_of(slow.value) == 504


@pytest.mark.parametrize("upstream", list(UPSTREAMS))
def test_client_disconnect_mid_stream_closes_the_upstream(
    gateway_url: str, mock: MockUpstream, upstream: str
) -> None:
    # A stream an earlier test left may still close into the mock's records: wait for it,
    # and look only at this test's model.
    wait_for(lambda: mock.open_streams == 0, timeout=5.0)
    mock.clear()
    model = f"disconnect-{upstream}"
    mock.add_fault(Fault(stall_after=2))
    body = {
        "model": f"{UPSTREAMS[upstream]}/{model}",
        "messages": [{"role": "user", "content": "hi"}],
        "stream": True,
    }
    with (
        httpx.Client(base_url=gateway_url) as client,
        client.stream("POST", "/v1/chat/completions", json=body) as response,
    ):
        assert response.status_code == 200
        lines = response.iter_lines()
        assert next(lines).startswith("data: ")
    left = time.monotonic()
    # The gateway saw the client go and closed its upstream stream within a second, as the
    # mock's own clock says (the test thread may look late on a busy machine; the mock's
    # record time does not depend on when we look).
    closed = wait_for(lambda: [c for c in mock.closed_streams if c.model == model], timeout=5.0)
    assert [c.reason for c in closed] == ["client_disconnected"]
    assert closed[0].time - left < 1.0
    # Nothing is left streaming at the mock (read once it settles: a read at the exact
    # moment of the close record once saw a count of 1, cause not yet understood).
    assert wait_for(lambda: mock.open_streams == 0, timeout=5.0)


def test_client_disconnect_while_waiting_for_headers_cancels_the_upstream(
    gateway_url: str, mock: MockUpstream
) -> None:
    mock.add_fault(Fault(header_delay=10))
    body = {"model": "up-anthropic/model-x", "messages": [{"role": "user", "content": "hi"}]}
    with httpx.Client(base_url=gateway_url) as client, pytest.raises(httpx.ReadTimeout):
        client.post("/v1/chat/completions", json=body, timeout=0.3)
    left = time.monotonic()
    closed = wait_for(lambda: mock.closed_streams, timeout=5.0)
    assert [c.reason for c in closed] == ["client_disconnected"]
    assert closed[0].time - left < 1.0


def test_upstream_connections_are_pooled(gateway_url: str, mock: MockUpstream) -> None:
    with DRIVERS["openai_chat"](gateway_url) as driver:
        for _ in range(5):
            driver.ask("up-gemini/model-x")
        for _ in range(3):
            driver.ask("up-gemini/model-x", stream=True)
    assert len(mock.requests) == 8
    assert len(mock.connections) == 1
