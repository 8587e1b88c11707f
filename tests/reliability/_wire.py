"""What the reliability tests share: the gateway's whole stack over a mock upstream, each
behind a real uvicorn on loopback, and raw HTTP/1.1 clients that can read slowly, stop
reading, or hang up at a chosen moment (which no SDK lets a test do)."""

from __future__ import annotations

import json
import os
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from asgi_rotator.config import parse_config
from asgi_rotator.stack import build_app
from tests.e2e.conftest import UPSTREAMS, provider_config
from tests.server import serve

# The send buffer of the gateway's accepted sockets in ``gateway(small_buffers=True)``: a
# client that stops reading then holds up the gateway's sends after a few tens of KB, not
# after the megabytes Linux's autotuning would let the kernel buffer on loopback.
SMALL_SNDBUF = 32 * 1024

PROTOCOLS = tuple(UPSTREAMS)


@contextmanager
def gateway(
    mock_url: str,
    *,
    small_buffers: bool = False,
    providers_override: dict[str, Any] | None = None,
    **sections: Any,
) -> Iterator[str]:
    """The default stack (every layer) over the mock, with config ``sections`` merged in
    (``providers_override``: the providers, instead of one per upstream protocol)."""
    providers = providers_override or provider_config(mock_url)
    config = parse_config({"providers": providers, **sections}, {})
    app = build_app(config, environ={})
    if not small_buffers:
        with serve(app) as url:
            yield url
        return
    with _serve_small(app) as url:
        yield url


@contextmanager
def _serve_small(app: Any) -> Iterator[str]:
    """``tests.server.serve`` on a listening socket whose accepted sockets inherit a small
    fixed send buffer."""
    import uvicorn

    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SMALL_SNDBUF)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(
        app,
        log_level="critical",  # "ASGI callable returned without completing response" is expected
        access_log=False,
        timeout_graceful_shutdown=2,
        timeout_keep_alive=120,
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()


def model_of(upstream: str) -> str:
    return f"{UPSTREAMS[upstream]}/model-x"


def request_of(
    client: str, model: str, *, stream: bool, text: str = "Hello there"
) -> tuple[str, dict[str, Any], dict[str, str]]:
    """Path, JSON body and headers of a minimal request in ``client``'s protocol."""
    messages = [{"role": "user", "content": text}]
    if client == "openai_chat":
        return "/v1/chat/completions", {"model": model, "messages": messages, "stream": stream}, {}
    if client == "openai_responses":
        return "/v1/responses", {"model": model, "input": text, "stream": stream}, {}
    if client == "anthropic_messages":
        body = {"model": model, "max_tokens": 64, "messages": messages, "stream": stream}
        return "/v1/messages", body, {"anthropic-version": "2023-06-01"}
    body = {"contents": [{"role": "user", "parts": [{"text": text}]}]}
    method = "streamGenerateContent?alt=sse" if stream else "generateContent"
    return f"/v1beta/models/{model}:{method}", body, {}


class RawClient:
    """One HTTP/1.1 request on a plain socket with a small receive buffer, so a client that
    stops reading fills the server's buffers quickly, as a slow phone would."""

    def __init__(self, base_url: str, *, rcvbuf: int = 8192) -> None:
        host, port = base_url.removeprefix("http://").split(":")
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.connect((host, int(port)))
        self.received = b""

    def send_request(self, path: str, body: dict[str, Any], headers: dict[str, str]) -> None:
        payload = json.dumps(body).encode()
        head = f"POST {path} HTTP/1.1\r\nhost: gateway\r\ncontent-type: application/json\r\n"
        head += f"content-length: {len(payload)}\r\n"
        head += "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        self.sock.sendall(head.encode() + b"\r\n" + payload)

    def read_head(self, timeout: float = 10.0) -> bytes:
        self.sock.settimeout(timeout)
        while b"\r\n\r\n" not in self.received:
            chunk = self.sock.recv(4096)
            if not chunk:
                break
            self.received += chunk
        head, _, self.received = self.received.partition(b"\r\n\r\n")
        return head

    def read_slowly(self, rate: float, until: float) -> bool:
        """Read at about ``rate`` bytes a second until the server closes or the chunked
        body ends (True), or the monotonic time ``until`` (False)."""
        step = 0.05
        self.sock.settimeout(step)
        while time.monotonic() < until:
            started = time.monotonic()
            try:
                chunk = self.sock.recv(max(1, int(rate * step)))
            except TimeoutError:
                continue
            except ConnectionResetError:
                return True
            if not chunk:
                return True
            self.received += chunk
            if self.received.endswith(b"\r\n0\r\n\r\n"):
                return True
            time.sleep(max(0.0, step - (time.monotonic() - started)))
        return False

    def read_to_end(self, timeout: float = 10.0) -> bool:
        """Read as fast as possible until the server closes (True) or ``timeout`` (False)."""
        until = time.monotonic() + timeout
        self.sock.settimeout(0.2)
        while time.monotonic() < until:
            try:
                chunk = self.sock.recv(1 << 16)
            except TimeoutError:
                continue
            except ConnectionResetError:
                return True
            if not chunk:
                return True
            self.received += chunk
        return False

    def read_to_end_of_body(self, timeout: float = 10.0) -> bool:
        """Read as fast as possible until the chunked body ends or the server closes (True),
        or ``timeout`` (False)."""
        until = time.monotonic() + timeout
        self.sock.settimeout(0.2)
        while time.monotonic() < until:
            try:
                chunk = self.sock.recv(1 << 16)
            except TimeoutError:
                continue
            except ConnectionResetError:
                return True
            if not chunk:
                return True
            self.received += chunk
            if self.received.endswith(b"\r\n0\r\n\r\n"):
                return True
        return False

    def close(self) -> None:
        self.sock.close()


def open_descriptors() -> int:
    return len(os.listdir("/proc/self/fd"))
