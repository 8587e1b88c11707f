"""The stack's own Python cost, without sockets: ``python -m benchmarks.inprocess``.

The stack from ``build_app`` is called directly with hand-made ASGI messages, and every
provider's upstream client is replaced by one that answers from the benchmark upstream's
fixed bytes at once.  What is left is what our layers, codecs and the event loop spend per
request and per event: no server, no HTTP client, no kernel, hence a figure that a busy
machine disturbs far less than the served arms, and that attributes cost to layers
(``--without``) reliably.  It is not a throughput: nothing here waits on I/O.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from collections.abc import AsyncGenerator, Mapping
from typing import Any

from benchmarks.apps import stack_config
from benchmarks.upstream import EVENTS, Canned, harvest

_STREAM_MARKER = b'"stream":true'


class _Response:
    __slots__ = ("_body", "_events", "headers", "status")

    def __init__(self, canned: Canned, stream: bool) -> None:
        self.status = 200
        self.headers: Mapping[str, str] = {
            "content-type": "text/event-stream" if stream else "application/json"
        }
        self._body = b"" if stream else canned.body
        self._events = canned.events if stream else []

    async def aiter_bytes(self) -> AsyncGenerator[bytes, None]:
        for event in self._events:
            yield event

    async def aread(self) -> bytes:
        return self._body

    async def aclose(self) -> None:
        pass


class CannedClient:
    """An ``UpstreamClient`` that answers from fixed bytes, without I/O."""

    def __init__(self, canned: dict[str, Canned]) -> None:
        self.canned = canned

    async def send(
        self, method: str, url: str, headers: list[tuple[str, str]], body: bytes
    ) -> _Response:
        protocol = "anthropic_messages" if url.endswith("/messages") else "openai_chat"
        return _Response(self.canned[protocol], _STREAM_MARKER in body)

    async def aclose(self) -> None:
        pass


def _body(model: str, stream: bool) -> bytes:
    tail = ',"stream":true' if stream else ""
    return (
        f'{{"model":"{model}","messages":[{{"role":"user","content":"Say hello"}}],'
        f'"max_tokens":16{tail}}}'
    ).encode()


def chat_scope(body: bytes, client_port: int = 40000) -> dict[str, Any]:
    """The ASGI scope of an OpenAI Chat request with ``body``, the bench key sent."""
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/v1/chat/completions",
        "raw_path": b"/v1/chat/completions",
        "query_string": b"",
        "root_path": "",
        "headers": [
            (b"host", b"gateway"),
            (b"authorization", b"Bearer bench-key"),
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
        ],
        "client": ("127.0.0.1", client_port),
        "server": ("127.0.0.1", 8080),
    }


async def _call(app: Any, body: bytes) -> None:
    scope = chat_scope(body)
    delivered = False
    never = asyncio.Event()

    async def receive() -> dict[str, Any]:
        nonlocal delivered
        if not delivered:
            delivered = True
            return {"type": "http.request", "body": body, "more_body": False}
        await never.wait()  # the client stays connected
        return {"type": "http.disconnect"}

    async def send(message: Any) -> None:
        pass

    await app(scope, receive, send)


async def measure(
    without: frozenset[str],
    requests: int,
    canned: dict[str, Canned],
    extra: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
) -> dict[str, float]:
    """CPU µs per plain request and per text event (same protocol, translated).  ``extra``:
    configuration sections added to the stack's (``{"tracing": {...}}``)."""
    from asgi_rotator.config import parse_config
    from asgi_rotator.stack import build_app

    config = parse_config({**stack_config("http://upstream.invalid"), **(extra or {})}, {})
    gateway = build_app(
        config, environ=dict(environ or {}), **({"without": set(without)} if without else {})
    )
    client = CannedClient(canned)
    for provider in gateway.providers:
        provider.client = client
    out = {}
    for name, model, stream, count in (
        ("plain_us_per_request", "chat/bench", False, requests),
        ("same_us_per_event", "chat/bench", True, max(1, requests // 4)),
        ("translated_us_per_event", "messages/bench", True, max(1, requests // 4)),
    ):
        body = _body(model, stream)
        for _ in range(min(200, count)):
            await _call(gateway, body)
        started = time.process_time()
        for _ in range(count):
            await _call(gateway, body)
        per_call = (time.process_time() - started) / count * 1e6
        out[name] = per_call / EVENTS if stream else per_call
    await gateway.aclose()
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.inprocess")
    parser.add_argument("--without", default="", help="comma-separated layers to leave out")
    parser.add_argument("--requests", type=int, default=3000)
    args = parser.parse_args(argv)
    try:
        import uvloop

        run: Any = uvloop.run
    except ImportError:
        run = asyncio.run
    without = frozenset(filter(None, args.without.split(",")))
    canned = harvest()
    print(json.dumps(run(measure(without, args.requests, canned))))


if __name__ == "__main__":
    main()
