"""Gemini's ``streamGenerateContent`` without ``alt=sse`` answers one streamed JSON array,
as the real API does; with ``alt=sse`` (what the SDKs send), SSE."""

from __future__ import annotations

import json

import httpx
import pytest

from asgi_rotator.mock import Fault, MockUpstream
from tests.e2e.conftest import UPSTREAMS

BODY = {"contents": [{"role": "user", "parts": [{"text": "Hello there"}]}]}


def _text(chunks: list[dict]) -> str:  # type: ignore[type-arg]
    return "".join(
        part.get("text", "")
        for chunk in chunks
        for candidate in chunk.get("candidates", [])
        for part in candidate.get("content", {}).get("parts", [])
    )


@pytest.mark.parametrize("upstream", list(UPSTREAMS))
def test_without_alt_sse_the_stream_is_one_json_array(
    gateway_url: str, mock: MockUpstream, upstream: str
) -> None:
    path = f"/v1beta/models/{UPSTREAMS[upstream]}/model-x:streamGenerateContent"
    with httpx.Client(base_url=gateway_url, timeout=30) as client:
        array = client.post(path, json=BODY)
        sse = client.post(path, params={"alt": "sse"}, json=BODY)
    assert array.status_code == 200
    assert array.headers["content-type"].startswith("application/json")
    chunks = json.loads(array.content)
    assert isinstance(chunks, list) and len(chunks) > 1
    assert "You said: Hello there" in _text(chunks)
    # The same answer as the SSE stream's events.
    assert sse.headers["content-type"].startswith("text/event-stream")
    events = [json.loads(line[6:]) for line in sse.text.splitlines() if line.startswith("data: ")]
    assert _text(chunks) == _text(events)
    assert (
        chunks[-1]["candidates"][0]["finishReason"] == events[-1]["candidates"][0]["finishReason"]
    )


def test_an_in_band_error_is_the_arrays_last_element(gateway_url: str, mock: MockUpstream) -> None:
    # The error comes well after the first event has gone out: read together with it, it
    # would be a failure before commit, retried (tests/middleware/test_held.py).
    mock.add_fault(Fault(status=503, error_event_after=1, event_delay=0.3, times=None))
    path = f"/v1beta/models/{UPSTREAMS['gemini']}/model-x:streamGenerateContent"
    response = httpx.post(f"{gateway_url}{path}", json=BODY, timeout=30)
    assert response.status_code == 200
    chunks = json.loads(response.content)
    assert "error" in chunks[-1]
    assert all("error" not in chunk for chunk in chunks[:-1])


def test_an_error_before_the_stream_is_a_plain_json_error(
    gateway_url: str, mock: MockUpstream
) -> None:
    mock.add_fault(Fault(status=429, times=None))
    path = f"/v1beta/models/{UPSTREAMS['gemini']}/model-x:streamGenerateContent"
    response = httpx.post(f"{gateway_url}{path}", json=BODY, timeout=30)
    assert response.status_code == 429
    assert response.json()["error"]["status"] == "RESOURCE_EXHAUSTED"
