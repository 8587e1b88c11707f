"""The upstream-client contract, held to every installed implementation at once.

Each test runs over ``available_clients()`` against the mock provider behind a real uvicorn
on loopback: status and headers, plain and streamed bodies, early close, cancellation,
timeouts, refused and reset connections, pooling, and what must never leave the gateway
(cookies) or reach it compressed.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import pytest
import uvicorn

from asgi_rotator import upstream
from asgi_rotator.config import ConfigError, parse_config
from asgi_rotator.errors import GatewayError
from asgi_rotator.mock import Fault, MockUpstream
from asgi_rotator.providers import Providers
from asgi_rotator.upstream import (
    AiohttpUpstream,
    Httpx2Upstream,
    HttpxUpstream,
    UpstreamClient,
    available_clients,
    make_client,
)
from tests.e2e.conftest import wait_for
from tests.server import free_port, serve

pytestmark = pytest.mark.anyio

IMPLEMENTATIONS = available_clients()
HEADERS = [("content-type", "application/json"), ("authorization", "Bearer key-one")]


def chat(stream: bool = False) -> bytes:
    return json.dumps(
        {"model": "mock-gpt", "messages": [{"role": "user", "content": "hi"}], "stream": stream}
    ).encode()


@pytest.fixture(scope="module")
def server() -> Iterator[tuple[MockUpstream, str]]:
    mock = MockUpstream()
    with serve(mock) as base:
        yield mock, base


@pytest.fixture
def mock(server: tuple[MockUpstream, str]) -> Iterator[MockUpstream]:
    server[0].clear()
    yield server[0]
    server[0].clear()


@pytest.fixture
def url(server: tuple[MockUpstream, str]) -> str:
    return f"{server[1]}/v1/chat/completions"


@pytest.fixture(scope="module")
def tls_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """The mock over HTTPS with a self-signed certificate: (base URL, certificate file)."""
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("needs the openssl command to make a certificate")
    directory = tmp_path_factory.mktemp("tls")
    key, cert = directory / "key.pem", directory / "cert.pem"
    command = [openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1"]
    command += ["-keyout", str(key), "-out", str(cert), "-subj", "/CN=127.0.0.1"]
    command += ["-addext", "subjectAltName=IP:127.0.0.1"]
    subprocess.run(command, check=True, capture_output=True)
    port = free_port()
    config = uvicorn.Config(
        MockUpstream(),
        host="127.0.0.1",
        port=port,
        log_level="warning",
        ssl_keyfile=str(key),
        ssl_certfile=str(cert),
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.01)
    try:
        yield f"https://127.0.0.1:{port}", cert
    finally:
        server.should_exit = True
        thread.join(10)


@pytest.fixture(params=IMPLEMENTATIONS)
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@asynccontextmanager
async def client_of(kind: str, **options: Any) -> AsyncIterator[UpstreamClient]:
    client = make_client(kind, **options)
    try:
        yield client
    finally:
        await client.aclose()


async def test_status_headers_and_plain_body(kind: str, mock: MockUpstream, url: str) -> None:
    async with client_of(kind) as client:
        response = await client.send("POST", url, HEADERS, chat())
        try:
            assert response.status == 200
            assert response.headers["content-type"] == "application/json"
            assert response.headers["Content-Type"] == "application/json"  # case-insensitive
            body = json.loads(await response.aread())
        finally:
            await response.aclose()
    assert body["object"] == "chat.completion"
    (recorded,) = mock.requests
    assert recorded.key == "key-one"
    assert recorded.body["model"] == "mock-gpt"
    # Plain bytes on the wire: SSE is never held back by a decompressor.
    assert recorded.headers["accept-encoding"] == "identity"


async def test_error_status_keeps_headers_and_body(kind: str, mock: MockUpstream, url: str) -> None:
    mock.add_fault(Fault(status=429, message="slow down", retry_after=7))
    async with client_of(kind) as client:
        response = await client.send("POST", url, HEADERS, chat())
        try:
            assert response.status == 429
            assert response.headers.get("retry-after") == "7"
            assert b"slow down" in await response.aread()
        finally:
            await response.aclose()


async def test_stream_chunks_arrive_as_sent(kind: str, mock: MockUpstream, url: str) -> None:
    # The upstream stalls after two events: they must reach us without the end of the body.
    mock.add_fault(Fault(stall_after=2))
    async with client_of(kind) as client:
        response = await client.send("POST", url, HEADERS, chat(stream=True))
        received = b""
        chunks = response.aiter_bytes()
        try:
            with anyio.fail_after(10):
                while received.count(b"\n\n") < 2:
                    received += await chunks.__anext__()
        finally:
            await chunks.aclose()
            await response.aclose()
    assert response.headers["content-type"].startswith("text/event-stream")
    assert received.startswith(b"data: {")
    wait_for(lambda: mock.closed_streams)
    assert mock.closed_streams[0].reason == "client_disconnected"


async def test_whole_stream_then_connection_is_reused(
    kind: str, mock: MockUpstream, url: str
) -> None:
    async with client_of(kind) as client:
        for _ in range(3):
            response = await client.send("POST", url, HEADERS, chat(stream=True))
            try:
                body = b"".join([chunk async for chunk in response.aiter_bytes()])
            finally:
                await response.aclose()
            assert body.endswith(b"data: [DONE]\n\n")
        for _ in range(3):
            response = await client.send("POST", url, HEADERS, chat())
            try:
                await response.aread()
            finally:
                await response.aclose()
    assert len(mock.requests) == 6
    assert len(mock.connections) == 1


async def test_early_close_discards_the_connection(kind: str, mock: MockUpstream, url: str) -> None:
    mock.add_fault(Fault(stall_after=1, times=3))
    async with client_of(kind, max_connections=1) as client:
        for _ in range(3):
            response = await client.send("POST", url, HEADERS, chat(stream=True))
            chunks = response.aiter_bytes()
            with anyio.fail_after(10):
                await chunks.__anext__()
            await chunks.aclose()
            await response.aclose()
        # With a pool of one, a leaked checkout would block this request for good.
        with anyio.fail_after(10):
            response = await client.send("POST", url, HEADERS, chat())
            try:
                assert response.status == 200
                await response.aread()
            finally:
                await response.aclose()
    assert wait_for(lambda: len(mock.closed_streams) == 3, timeout=10)
    assert {s.reason for s in mock.closed_streams} == {"client_disconnected"}
    assert len(mock.connections) == 4  # none of the abandoned ones was reused


async def test_unread_plain_body_is_not_reused(kind: str, mock: MockUpstream, url: str) -> None:
    async with client_of(kind, max_connections=1) as client:
        response = await client.send("POST", url, HEADERS, chat())
        await response.aclose()  # closed without reading the body
        with anyio.fail_after(10):
            response = await client.send("POST", url, HEADERS, chat())
            try:
                assert json.loads(await response.aread())["object"] == "chat.completion"
            finally:
                await response.aclose()


async def test_cancelled_send_releases_its_connection(
    kind: str, mock: MockUpstream, url: str
) -> None:
    mock.add_fault(Fault(header_delay=5))
    async with client_of(kind, max_connections=1) as client:
        with anyio.move_on_after(0.3) as scope:
            await client.send("POST", url, HEADERS, chat())
        assert scope.cancelled_caught
        with anyio.fail_after(10):
            response = await client.send("POST", url, HEADERS, chat())
            try:
                assert response.status == 200
                await response.aread()
            finally:
                await response.aclose()


async def test_cancelled_read_releases_its_connection(
    kind: str, mock: MockUpstream, url: str
) -> None:
    mock.add_fault(Fault(stall_after=1))
    async with client_of(kind, max_connections=1) as client:
        response = await client.send("POST", url, HEADERS, chat(stream=True))
        chunks = response.aiter_bytes()
        try:
            with anyio.move_on_after(0.5) as scope:
                async for _ in chunks:
                    pass
            assert scope.cancelled_caught
        finally:
            await chunks.aclose()
            await response.aclose()
        with anyio.fail_after(10):
            response = await client.send("POST", url, HEADERS, chat())
            try:
                assert response.status == 200
            finally:
                await response.aclose()


async def test_waiting_for_headers_times_out(kind: str, mock: MockUpstream, url: str) -> None:
    mock.add_fault(Fault(header_delay=5))
    async with client_of(kind, timeout=0.3) as client:
        with anyio.fail_after(4), pytest.raises(GatewayError) as caught:
            await client.send("POST", url, HEADERS, chat())
    assert caught.value.kind == "timeout"
    assert caught.value.retryable


async def test_stalled_stream_times_out(kind: str, mock: MockUpstream, url: str) -> None:
    mock.add_fault(Fault(stall_after=1))
    async with client_of(kind, timeout=0.3) as client:
        response = await client.send("POST", url, HEADERS, chat(stream=True))
        try:
            with anyio.fail_after(4), pytest.raises(GatewayError) as caught:
                async for _ in response.aiter_bytes():
                    pass
        finally:
            await response.aclose()
    assert caught.value.kind == "timeout"


async def test_refused_connection(kind: str) -> None:
    url = f"http://127.0.0.1:{free_port()}/v1/chat/completions"
    async with client_of(kind) as client:
        with pytest.raises(GatewayError) as caught:
            await client.send("POST", url, HEADERS, chat())
    assert caught.value.kind == "connection"
    assert caught.value.retryable


async def test_a_refused_connection_names_the_host_and_the_reason_never_the_query(
    kind: str,
) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}/v1beta/models/m:generateContent?key=SECRET-IN-QUERY"
    async with client_of(kind) as client:
        with pytest.raises(GatewayError) as caught:
            await client.send("POST", url, HEADERS, chat())
    message = caught.value.message
    assert f"127.0.0.1:{port}" in message
    assert os.strerror(errno.ECONNREFUSED) in message
    assert "SECRET-IN-QUERY" not in message and "?" not in message


async def test_a_name_that_does_not_resolve_says_so(kind: str) -> None:
    # .invalid never resolves (RFC 2606); the resolver's own words name the failure.
    try:
        socket.getaddrinfo("asgi-rotator-test.invalid", 443)
    except socket.gaierror as expected:
        reason = expected.strerror
    else:  # pragma: no cover - a resolver that answers for .invalid
        pytest.skip("this resolver answers for .invalid")
    async with client_of(kind, connect_timeout=5) as client:
        with pytest.raises(GatewayError) as caught:
            await client.send(
                "POST",
                "https://asgi-rotator-test.invalid/v1/chat/completions?key=K",
                HEADERS,
                b"{}",
            )
    assert caught.value.kind == "connection"
    message = caught.value.message
    assert "asgi-rotator-test.invalid" in message and reason in message
    assert "key=K" not in message


async def test_reset_mid_body_is_a_connection_error(
    kind: str, mock: MockUpstream, url: str
) -> None:
    mock.add_fault(Fault(reset=True))
    async with client_of(kind) as client:
        with pytest.raises(GatewayError) as caught:
            response = await client.send("POST", url, HEADERS, chat())
            try:
                await response.aread()
            finally:
                await response.aclose()
    assert caught.value.kind == "connection"


async def test_reset_mid_stream_is_a_connection_error(
    kind: str, mock: MockUpstream, url: str
) -> None:
    mock.add_fault(Fault(reset=True, eof_after=2))
    async with client_of(kind) as client:
        response = await client.send("POST", url, HEADERS, chat(stream=True))
        received = b""
        try:
            with pytest.raises(GatewayError) as caught:
                async for chunk in response.aiter_bytes():
                    received += chunk
        finally:
            await response.aclose()
    assert caught.value.kind == "connection"
    assert received.count(b"\n\n") == 2


async def test_untrusted_certificate_is_a_connection_error(
    kind: str, tls_server: tuple[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    monkeypatch.delenv("SSL_CERT_DIR", raising=False)
    async with client_of(kind) as client:
        with pytest.raises(GatewayError) as caught:
            await client.send("POST", f"{tls_server[0]}/v1/chat/completions", HEADERS, chat())
    assert caught.value.kind == "connection"


async def test_every_client_trusts_what_httpx_trusts(
    kind: str, tls_server: tuple[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    # SSL_CERT_FILE is how a deployment adds its own CA; switching clients must not undo it.
    monkeypatch.setenv("SSL_CERT_FILE", str(tls_server[1]))
    async with client_of(kind) as client:
        response = await client.send(
            "POST", f"{tls_server[0]}/v1/chat/completions", HEADERS, chat()
        )
        try:
            assert response.status == 200
            assert json.loads(await response.aread())["object"] == "chat.completion"
        finally:
            await response.aclose()


async def test_provider_cookies_are_not_kept(kind: str, mock: MockUpstream, url: str) -> None:
    mock.add_fault(Fault(headers={"set-cookie": "affinity=node-7; Path=/"}))
    async with client_of(kind) as client:
        for _ in range(2):
            response = await client.send("POST", url, HEADERS, chat())
            try:
                await response.aread()
            finally:
                await response.aclose()
    assert "cookie" not in mock.requests[1].headers


async def test_client_is_made_lazily_and_closes_idempotently(kind: str) -> None:
    client = make_client(kind)  # no connection, no session: nothing to leak
    await client.aclose()
    await client.aclose()


def test_client_needs_no_running_loop_to_be_built() -> None:
    for kind in IMPLEMENTATIONS:
        make_client(kind)  # would raise (or warn, failing -W error) if it touched a loop


def test_make_client_picks_by_name() -> None:
    assert isinstance(make_client("httpx"), HttpxUpstream)
    if "httpx2" in IMPLEMENTATIONS:
        assert isinstance(make_client("httpx2"), Httpx2Upstream)
    if "aiohttp" in IMPLEMENTATIONS:
        assert isinstance(make_client("aiohttp"), AiohttpUpstream)
    auto = make_client("auto")
    assert type(auto) is type(make_client(IMPLEMENTATIONS[0]))
    with pytest.raises(ValueError, match="unknown upstream client 'curl'"):
        make_client("curl")


def test_missing_library_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(upstream, "_installed", lambda module: module == "httpx")
    assert available_clients() == ("httpx",)
    assert isinstance(make_client("auto"), HttpxUpstream)
    with pytest.raises(ValueError, match=r"asgi-rotator\[aiohttp\]"):
        make_client("aiohttp")


def test_providers_build_the_chosen_client() -> None:
    config = parse_config(
        {
            "providers": {
                "up": {"protocol": "openai_chat", "base_url": "http://127.0.0.1:1/v1"},
                "mock": {"preset": "mock"},
            }
        },
        {},
    )
    for kind in IMPLEMENTATIONS:
        providers = Providers(config, {}, client=kind)
        assert type(providers.providers["up"].client) is type(make_client(kind))
        # The in-process mock provider rides on an httpx transport, whatever the choice.
        assert isinstance(providers.providers["mock"].client, HttpxUpstream)
    with pytest.raises(ConfigError, match=r"providers\.up: unknown upstream client"):
        Providers(config, {}, client="curl")
