"""All 16 client/provider pairs through a real gateway, driven by the official SDKs."""

from __future__ import annotations

import itertools
import json

import pytest

from asgi_rotator.mock import MockUpstream
from tests.e2e.clients import DRIVERS, QUESTION, TOOL_OUTPUT
from tests.e2e.conftest import UPSTREAMS

PAIRS = [
    pytest.param(client, upstream, id=f"{client}->{upstream}")
    for client, upstream in itertools.product(DRIVERS, UPSTREAMS)
]
STREAM = [pytest.param(False, id="plain"), pytest.param(True, id="stream")]


@pytest.mark.parametrize("stream", STREAM)
@pytest.mark.parametrize(("client", "upstream"), PAIRS)
def test_text(
    gateway_url: str, mock: MockUpstream, client: str, upstream: str, stream: bool
) -> None:
    with DRIVERS[client](gateway_url) as driver:
        result = driver.ask(f"{UPSTREAMS[upstream]}/model-x", "Hello there", stream=stream)
    assert "You said: Hello there" in result.text
    (request,) = mock.requests
    assert request.protocol == upstream
    assert request.model == "model-x"
    assert request.stream == stream
    # The client's own key never reaches the provider; the provider's key does.
    assert request.key == f"key-{UPSTREAMS[upstream]}"
    assert "client-key" not in json.dumps(request.headers)
    expected_input = len("Hello there".split()) + 10
    assert result.input_tokens == expected_input
    assert result.output_tokens == len(result.text.split())


@pytest.mark.parametrize("stream", STREAM)
@pytest.mark.parametrize(("client", "upstream"), PAIRS)
def test_two_turn_tool_call(
    gateway_url: str, mock: MockUpstream, client: str, upstream: str, stream: bool
) -> None:
    with DRIVERS[client](gateway_url) as driver:
        first, second = driver.tool_round_trip(f"{UPSTREAMS[upstream]}/model-x", stream=stream)
    assert [(c.name, c.arguments) for c in first.calls] == [("get_weather", {"location": "Paris"})]
    assert first.calls[0].id or client == "gemini"
    assert f"Tool said: {TOOL_OUTPUT}" in second.text
    # The provider received the whole conversation, the result paired with its call.
    assert len(mock.requests) == 2
    assert QUESTION in json.dumps(mock.requests[1].body)
    assert TOOL_OUTPUT in json.dumps(mock.requests[1].body)


def test_stream_headers_and_one_event_per_message(gateway_url: str, mock: MockUpstream) -> None:
    import httpx

    body = {
        "model": "up-anthropic/model-x",
        "messages": [{"role": "user", "content": "one two three"}],
        "stream": True,
    }
    with (
        httpx.Client(base_url=gateway_url) as client,
        client.stream("POST", "/v1/chat/completions", json=body) as response,
    ):
        assert response.headers["content-type"].startswith("text/event-stream")
        assert response.headers["cache-control"] == "no-cache, no-transform"
        assert response.headers["x-accel-buffering"] == "no"
        raw = response.read()
    # Every event is whole and the stream ends with the protocol's terminal event.
    assert raw.endswith(b"data: [DONE]\n\n")
    assert all(chunk.startswith(b"data: ") for chunk in raw.split(b"\n\n") if chunk)


@pytest.mark.parametrize(
    ("model", "forwarded"), [("up-anthropic/model-x", True), ("up-chat/model-x", False)]
)
def test_an_anthropic_clients_beta_header_goes_on_only_to_an_anthropic_provider(
    gateway_url: str, mock: MockUpstream, model: str, forwarded: bool
) -> None:
    import anthropic

    client = anthropic.Anthropic(base_url=gateway_url, api_key="unused", max_retries=0)
    client.messages.create(
        model=model,
        max_tokens=16,
        messages=[{"role": "user", "content": "hi"}],
        extra_headers={"anthropic-beta": "extended-cache-ttl-2025-04-11"},
    )
    (sent,) = mock.requests
    # A beta flag turns on what only Anthropic's API knows; another protocol's provider
    # would take it for an unknown header at best.
    assert (sent.headers.get("anthropic-beta") == "extended-cache-ttl-2025-04-11") is forwarded
    client.close()
