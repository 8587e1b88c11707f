"""The gateway mounted under a prefix in each host framework: ``/llm``, ``/llm/`` (the form
Django's URL patterns use, which once gave 404 on every route) and a mount inside a mount.
Each host runs under a real uvicorn and is driven by the official SDKs."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Mount, Route

from asgi_rotator.config import parse_config
from asgi_rotator.mock import MockUpstream
from asgi_rotator.stack import build_app
from tests.e2e.clients import DRIVERS
from tests.e2e.conftest import provider_config
from tests.server import free_port, serve

# uvicorn serving the example's ASGI app, and afterwards a word on whether the example's
# lifespan closed the gateway (its upstream clients and stores) at shutdown.
DJANGO_UNDER_UVICORN = """
import signal, sys, uvicorn
from examples.django_mount import asgi
closed = []
providers = asgi.gateway.providers  # Gateway.aclose closes them
aclose = providers.aclose
async def recording_aclose():
    closed.append(True)
    await aclose()
providers.aclose = recording_aclose
signal.signal(signal.SIGTERM, lambda *_: None)  # uvicorn re-raises it once it has stopped
uvicorn.run(asgi.application, port=int(sys.argv[1]), lifespan="on", log_level="info")
print("gateway closed:", bool(closed), flush=True)
"""

KEY_VARIABLES = ("OPENAI_API_KEY", "ANTHROPIC_API_KEY", "GEMINI_API_KEY", "GOOGLE_API_KEY")


def _host(framework: str, prefix: str, nested: bool, gateway: Any) -> tuple[Any, str]:
    """A host app of ``framework`` with the gateway at ``prefix`` (inside ``/api`` when
    ``nested``), and the base URL path clients use.  The outermost host's lifespan closes
    the gateway, as README's embedding section says to."""

    @asynccontextmanager
    async def lifespan(app: Any) -> AsyncIterator[None]:
        yield
        await gateway.aclose()

    if framework == "fastapi":
        inner = FastAPI(lifespan=None if nested else lifespan)
        inner.mount(prefix, gateway)
        if not nested:
            return inner, "/llm"
        outer = FastAPI(lifespan=lifespan)
        outer.mount("/api", inner)
        return outer, "/api/llm"
    home = Route("/", lambda request: PlainTextResponse("host app"))
    routes = [Mount(prefix, app=gateway)]
    if nested:
        routes = [Mount("/api", routes=routes)]
    return Starlette(routes=[home, *routes], lifespan=lifespan), "/api/llm" if nested else "/llm"


@pytest.mark.parametrize("nested", [False, True], ids=["flat", "nested"])
@pytest.mark.parametrize("prefix", ["/llm", "/llm/"])
@pytest.mark.parametrize("framework", ["fastapi", "starlette"])
def test_mount_prefixes_route_every_sdk(
    mock_server: tuple[MockUpstream, str], framework: str, prefix: str, nested: bool
) -> None:
    gateway = build_app(
        parse_config({"providers": provider_config(mock_server[1])}, {}), environ={}
    )
    app, base = _host(framework, prefix, nested, gateway)
    with serve(app) as url:
        for client in DRIVERS:
            with DRIVERS[client](f"{url}{base}") as driver:
                assert "You said: Hello there" in driver.ask("up-anthropic/model-x").text
                assert "You said: Hello there" in driver.ask("up-gemini/model-x", stream=True).text


@pytest.fixture(params=["/llm/", "/llm"])
def django_site(request: pytest.FixtureRequest) -> Iterator[tuple[str, subprocess.Popen[str]]]:
    """examples/django_mount under uvicorn, in its own process as it would be deployed (its
    settings and the gateway's configuration come from the environment)."""
    port = free_port()
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in KEY_VARIABLES and not k.startswith("ASGI_ROTATOR__")
    }
    env["GATEWAY_PREFIX"] = request.param
    process = subprocess.Popen(
        [sys.executable, "-c", DJANGO_UNDER_UVICORN, str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env=env,
        text=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                httpx.get(f"{url}/", timeout=1)
                break
            except httpx.TransportError:
                assert process.poll() is None, "uvicorn exited"
                assert time.monotonic() < deadline, "the Django site did not start"
                time.sleep(0.05)
        yield url, process
    finally:
        if process.poll() is None:
            process.terminate()
        process.wait(15)
        if process.stdout is not None:
            process.stdout.close()


def test_django_serves_itself_and_the_gateway_to_every_sdk(
    django_site: tuple[str, subprocess.Popen[str]],
) -> None:
    url, process = django_site
    home = httpx.get(f"{url}/")
    assert home.json() == {"hello": "this is Django; the gateway lives under /llm/"}
    for client in DRIVERS:
        with DRIVERS[client](f"{url}/llm") as driver:
            assert "You said: Hello there" in driver.ask("claude-mock").text
            assert "You said: Hello there" in driver.ask("gemini-mock", stream=True).text
    # Django still answers its own 404 outside the prefix, and the gateway inside it.
    assert httpx.get(f"{url}/llmx").status_code == 404
    assert httpx.get(f"{url}/llm/healthz").status_code == 200
    # At shutdown the host's lifespan closed the gateway's clients: a clean exit, and no
    # unclosed-session warning from the upstream client.
    process.terminate()
    output, _ = process.communicate(timeout=15)
    assert "Application shutdown complete" in output
    assert "gateway closed: True" in output, output
    assert "Traceback" not in output, output


def test_django_under_a_proxy_prefix_nests_the_mount(tmp_path: Any) -> None:
    """``uvicorn --root-path /site`` (a proxy that strips /site): the gateway is then at
    /site/llm/, a mount inside a mount."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k not in KEY_VARIABLES}
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "uvicorn",
            "examples.django_mount.asgi:application",
            "--port",
            str(port),
            "--root-path",
            "/site",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                httpx.get(f"{url}/", timeout=1)
                break
            except httpx.TransportError:
                assert process.poll() is None and time.monotonic() < deadline
                time.sleep(0.05)
        with DRIVERS["openai_chat"](f"{url}/llm") as driver:
            assert "You said: Hello there" in driver.ask("claude-mock", stream=True).text
    finally:
        process.terminate()
        process.wait(15)
