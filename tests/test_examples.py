"""The examples run: each is imported and called, so they cannot rot."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from asgi_rotator.config import load_config

pytestmark = pytest.mark.anyio


def test_example_config_is_valid() -> None:
    config = load_config("examples/gateway.toml", {})
    assert set(config.groups) == {"smart"}


async def test_selective_composition_validates_and_passes_through() -> None:
    from examples.selective import app

    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://example") as client:
        bad = await client.post("/v1/chat/completions", json={"model": "x", "messages": []})
        good = await client.post(
            "/v1/chat/completions",
            json={"model": "x", "messages": [{"role": "user", "content": "hi"}]},
        )
    assert bad.status_code == 400
    assert "messages" in bad.json()["error"]["message"]
    assert good.json() == {"note": "your app answered"}


def test_fastapi_mount_serves_the_mock(monkeypatch: pytest.MonkeyPatch) -> None:
    from starlette.testclient import TestClient

    from examples.fastapi_mount import app

    with TestClient(app) as client:
        body: dict[str, Any] = {
            "model": "claude-mock",
            "messages": [{"role": "user", "content": "Hi"}],
        }
        response = client.post("/llm/v1/chat/completions", content=json.dumps(body))
        assert "You said: Hi" in response.json()["choices"][0]["message"]["content"]
