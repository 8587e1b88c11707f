"""A group never waits on a failing target while another can answer now (issue 14 item 3),
end to end: the official SDKs against the default stack (``build_app``) behind a real
uvicorn server, the mock upstream failing the group's first target.

* 429 with ``retry-after: 2`` on a target with one key: that target is called once, then the
  next one answers; the gateway does not sleep through the retry-after.
* Headers after 6 s with ``ttfb_timeout = 2``: the slow target is called once, and the next
  target's request reaches the mock within the TTFB timeout plus a margin (measured on the
  mock's own clock).

Every case has its own provider for the failing target, so no case finds another's
cooldown; the mock is this module's own, so a slow answer still sleeping cannot land in
another module's record.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest

from asgi_rotator.config import parse_config
from asgi_rotator.mock import Fault, MockUpstream
from asgi_rotator.stack import build_app
from tests.e2e.clients import DRIVERS
from tests.e2e.conftest import UPSTREAMS, provider_config
from tests.server import serve

TTFB = 2.0
# Generous: the machine running the suite may be busy.  Waiting on the failing target once
# more would cost another TTFB_TIMEOUT (or the 6 s the headers take), well past it.
MARGIN = 1.5
SLOW_HEADERS = 6.0
# Who answers when the client's own upstream protocol fails: another protocol (translation).
OTHER = {
    "openai_chat": "up-anthropic",
    "openai_responses": "up-gemini",
    "anthropic_messages": "up-chat",
    "gemini": "up-responses",
}
CASES = ("rate-limited", "slow")
MODES = {"plain": False, "stream": True}


def _name(case: str, client: str, mode: str) -> str:
    return f"{case}-{client.replace('_', '-')}-{mode}"


def failover_config(mock_url: str) -> dict[str, Any]:
    providers = provider_config(mock_url)
    groups: dict[str, Any] = {}
    for client in DRIVERS:
        own = providers[UPSTREAMS[client]]  # the client's own protocol: passthrough
        for case in CASES:
            for mode in MODES:
                name = _name(case, client, mode)
                providers[name] = {**own, "keys": [f"key-{name}"]}  # one key
                groups[name] = {"targets": [f"{name}/{case}", f"{OTHER[client]}/good"]}
    return {"providers": providers, "groups": groups, "stream": {"ttfb_timeout": TTFB}}


@pytest.fixture(scope="module")
def upstream() -> Iterator[tuple[MockUpstream, str]]:
    mock = MockUpstream()
    with serve(mock) as url:
        yield mock, url


@pytest.fixture(scope="module")
def url(upstream: tuple[MockUpstream, str]) -> Iterator[str]:
    config = parse_config(failover_config(upstream[1]), {})
    with serve(build_app(config, environ={})) as gateway:
        yield gateway


@pytest.fixture
def mock(upstream: tuple[MockUpstream, str]) -> Iterator[MockUpstream]:
    upstream[0].clear()
    yield upstream[0]
    upstream[0].clear()


@pytest.mark.parametrize("mode", list(MODES))
@pytest.mark.parametrize("client", list(DRIVERS))
def test_a_rate_limited_target_is_called_once_then_the_next_answers(
    url: str, mock: MockUpstream, client: str, mode: str
) -> None:
    mock.add_fault(Fault(status=429, retry_after=2, model="rate-limited", times=None))
    with DRIVERS[client](url) as driver:
        result = driver.ask(_name("rate-limited", client, mode), "next one", stream=MODES[mode])
    assert "You said: next one" in result.text
    # Once: neither waited for (which would end in a second call on the same key) nor
    # retried at once.
    assert [r.model for r in mock.requests] == ["rate-limited", "good"]


@pytest.mark.parametrize("mode", list(MODES))
@pytest.mark.parametrize("client", list(DRIVERS))
def test_a_ttfb_timeout_reaches_the_next_target_within_the_timeout_plus_a_margin(
    url: str, mock: MockUpstream, client: str, mode: str
) -> None:
    mock.add_fault(Fault(header_delay=SLOW_HEADERS, model="slow", times=None))
    started = time.monotonic()
    with DRIVERS[client](url) as driver:
        result = driver.ask(_name("slow", client, mode), "too slow", stream=MODES[mode])
    elapsed = time.monotonic() - started
    assert "You said: too slow" in result.text
    assert [r.model for r in mock.requests] == ["slow", "good"]
    slow, good = mock.requests
    # On the mock's clock (this process's monotonic clock, as the test's): the next target
    # was asked once the TTFB timeout had run, and soon after the slow one was.
    assert good.time - started >= TTFB
    assert good.time - slow.time < TTFB + MARGIN
    assert elapsed < TTFB + 2 * MARGIN
