"""The README's promise: `asgi-rotator serve` works out of the box, and the app embeds."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager

import httpx
import pytest
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Mount, Route

from asgi_rotator.config import parse_config
from asgi_rotator.mock import MockUpstream
from asgi_rotator.stack import build_app
from tests.e2e.clients import DRIVERS
from tests.e2e.conftest import provider_config
from tests.server import free_port, serve

KEY_VARIABLES = ("OPENAI_API_KEY", "ANTHROPIC_API_KEY", "GEMINI_API_KEY", "GOOGLE_API_KEY")


@pytest.fixture(scope="module")
def served_cli() -> Iterator[str]:
    port = free_port()
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in KEY_VARIABLES and not k.startswith("ASGI_ROTATOR__")
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "asgi_rotator.cli", "serve", "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env=env,
        text=True,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        assert f"listening on http://127.0.0.1:{port}" in line
        assert "built-in mock provider" in line
        url = f"http://127.0.0.1:{port}"
        for _ in range(200):
            try:
                httpx.get(f"{url}/healthz", timeout=1)
                break
            except httpx.TransportError:
                import time

                time.sleep(0.05)
        yield url
    finally:
        process.terminate()
        process.wait(10)
        if process.stdout is not None:
            process.stdout.close()


def test_serve_without_keys_answers_with_the_mock(served_cli: str) -> None:
    response = httpx.post(
        f"{served_cli}/v1/chat/completions",
        json={"model": "claude-mock", "messages": [{"role": "user", "content": "Hi from curl"}]},
    )
    assert response.status_code == 200
    assert "You said: Hi from curl" in response.json()["choices"][0]["message"]["content"]
    models = httpx.get(f"{served_cli}/v1/models").json()
    assert {"gpt-mock", "claude-mock", "gemini-mock"} <= {m["id"] for m in models["data"]}


@pytest.mark.parametrize("client", list(DRIVERS))
def test_serve_translates_for_every_sdk(served_cli: str, client: str) -> None:
    with DRIVERS[client](served_cli) as driver:
        assert "You said: Hello there" in driver.ask("gemini-mock", stream=True).text


@pytest.fixture(scope="module")
def mounted(mock_server: tuple[MockUpstream, str]) -> Iterator[str]:
    """The gateway mounted at /llm inside a host Starlette app, whose lifespan does not run
    the gateway's: the upstream client must come up lazily."""
    gateway = build_app(
        parse_config({"providers": provider_config(mock_server[1])}, {}), environ={}
    )

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        yield
        await gateway.aclose()  # the host closes what the gateway opened lazily

    host = Starlette(
        routes=[
            Route("/", lambda request: PlainTextResponse("host app")),
            Mount("/llm", app=gateway),
        ],
        lifespan=lifespan,
    )
    with serve(host) as url:
        yield url


@pytest.mark.parametrize("client", list(DRIVERS))
def test_mounted_under_a_prefix_serves_every_sdk(mounted: str, client: str) -> None:
    assert httpx.get(f"{mounted}/").text == "host app"
    with DRIVERS[client](f"{mounted}/llm") as driver:
        assert "You said: Hello there" in driver.ask("up-anthropic/model-x").text
        assert "You said: Hello there" in driver.ask("up-chat/model-x", stream=True).text


def test_serve_sets_the_collector_up_for_a_server() -> None:
    """``serve`` freezes what startup made and raises the young generation's threshold
    (``tune_gc``): with the default 700, requests in flight kept the collector running
    every few requests for nothing."""
    code = (
        "import gc; from asgi_rotator.cli import GC_THRESHOLD, tune_gc; "
        "before = gc.get_threshold(); tune_gc(); after = gc.get_threshold(); "
        "print(before[0], after[0] == GC_THRESHOLD, after[1:] == before[1:], "
        "gc.get_freeze_count() > 1000)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.split()
    assert out == ["700", "True", "True", "True"]
