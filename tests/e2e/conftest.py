"""End-to-end fixtures: the mock upstream and the gateway, each behind a real uvicorn server
on loopback; the official SDKs talk to the gateway exactly as users' code would."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from asgi_rotator.config import parse_config
from asgi_rotator.mock import MockUpstream
from asgi_rotator.stack import build_app
from tests.server import serve

# One provider per upstream protocol, all served by the same mock.
UPSTREAMS = {
    "openai_chat": "up-chat",
    "openai_responses": "up-responses",
    "anthropic_messages": "up-anthropic",
    "gemini": "up-gemini",
}


def provider_config(mock_url: str) -> dict[str, Any]:
    base = {
        "openai_chat": f"{mock_url}/v1",
        "openai_responses": f"{mock_url}/v1",
        "anthropic_messages": mock_url,
        "gemini": mock_url,
    }
    return {
        name: {"protocol": protocol, "base_url": base[protocol], "keys": [f"key-{name}"]}
        for protocol, name in UPSTREAMS.items()
    }


@pytest.fixture(scope="session")
def mock_server() -> Iterator[tuple[MockUpstream, str]]:
    mock = MockUpstream()
    with serve(mock) as url:
        yield mock, url


@pytest.fixture
def mock(mock_server: tuple[MockUpstream, str]) -> Iterator[MockUpstream]:
    upstream = mock_server[0]
    upstream.clear()
    yield upstream
    upstream.clear()


@pytest.fixture(scope="session")
def gateway_url(mock_server: tuple[MockUpstream, str]) -> Iterator[str]:
    config = parse_config({"providers": provider_config(mock_server[1])}, {})
    with serve(build_app(config, environ={})) as url:
        yield url


def wait_for(predicate: Callable[[], Any], timeout: float = 2.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(0.01)
