"""The benchmark's upstream: a raw ASGI provider that answers from fixed bytes.

It must never be the bottleneck, so it does nothing per request but route on the path, look
for two markers in the body and send bytes prepared at startup.  The bytes themselves are
harvested once from ``asgi_rotator.mock.MockUpstream`` (the test suite's independent oracle),
so every arm is served realistic provider shapes for all four protocols without this file
writing any of them out again.  ``MockUpstream`` itself parses, records and renders every
request, which costs more per request than the fastest gateway arm it would serve.

Per request, from the body: ``"stream": true`` asks for the event stream (Gemini: the
``streamGenerateContent`` path), and a model named ``bench-hold`` gets the events up to the
first text and then a stream held open until the client goes away (the open-streams memory
figure; a gateway may hold back a text-less prelude, so the first text is what proves the
stream is open end to end).
``latency`` sleeps before the headers; ``pace`` between two events.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from asgi_rotator.mock import MockUpstream

from .load import has_text

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

EVENTS = 40  # content events per stream
HOLD_MODEL = "bench-hold"
TEXT = " ".join(f"word{i}" for i in range(EVENTS))

# protocol -> (path, request body); Gemini's path carries the model and the stream flag.
_REQUESTS: dict[str, tuple[str, dict[str, Any]]] = {
    "openai_chat": (
        "/v1/chat/completions",
        {"model": "bench", "messages": [{"role": "user", "content": "Say hello"}]},
    ),
    "openai_responses": ("/v1/responses", {"model": "bench", "input": "Say hello"}),
    "anthropic_messages": (
        "/v1/messages",
        {
            "model": "bench",
            "max_tokens": 64,
            "messages": [{"role": "user", "content": "Say hello"}],
        },
    ),
    "gemini": (
        "/v1beta/models/bench:generateContent",
        {"contents": [{"role": "user", "parts": [{"text": "Say hello"}]}]},
    ),
}
_STREAM_MARKERS = (b'"stream":true', b'"stream": true')


class Canned:
    """One protocol's fixed answers: a plain body and a list of SSE events; ``prelude`` is
    the events up to the first one with text (a held stream sends those, then waits)."""

    __slots__ = ("body", "body_headers", "events", "prelude", "stream_headers")

    def __init__(
        self,
        body: bytes,
        body_headers: list[tuple[bytes, bytes]],
        events: list[bytes],
        stream_headers: list[tuple[bytes, bytes]],
    ) -> None:
        self.body = body
        self.body_headers = body_headers
        self.events = events
        self.stream_headers = stream_headers
        text_at = next(i for i, event in enumerate(events) if has_text(event))
        self.prelude = events[: text_at + 1]


class BenchUpstream:
    """The raw ASGI upstream.  ``canned`` comes from ``harvest()``."""

    def __init__(
        self, canned: dict[str, Canned], *, latency: float = 0.0, pace: float = 0.0
    ) -> None:
        self.canned = canned
        self.latency = latency
        self.pace = pace

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope["type"] != "http":
            return
        message = await receive()
        body = message.get("body", b"")
        while message.get("more_body"):
            message = await receive()
            body += message.get("body", b"")
        path: str = scope["path"]
        if path.endswith("/chat/completions"):
            canned = self.canned["openai_chat"]
        elif path.endswith("/messages"):
            canned = self.canned["anthropic_messages"]
        elif path.endswith("/responses"):
            canned = self.canned["openai_responses"]
        elif path.endswith("Content"):
            canned = self.canned["gemini"]
        else:
            await send({"type": "http.response.start", "status": 404, "headers": []})
            await send({"type": "http.response.body", "body": b""})
            return
        if self.latency:
            await asyncio.sleep(self.latency)
        stream = path.endswith(":streamGenerateContent") or any(
            marker in body for marker in _STREAM_MARKERS
        )
        if not stream:
            await send(
                {"type": "http.response.start", "status": 200, "headers": canned.body_headers}
            )
            await send({"type": "http.response.body", "body": canned.body})
            return
        await send({"type": "http.response.start", "status": 200, "headers": canned.stream_headers})
        if HOLD_MODEL.encode() in body:
            for event in canned.prelude:
                await send({"type": "http.response.body", "body": event, "more_body": True})
            while (await receive())["type"] != "http.disconnect":
                pass
            return
        pace = self.pace
        for i, event in enumerate(canned.events):
            if pace and i:
                await asyncio.sleep(pace)
            await send({"type": "http.response.body", "body": event, "more_body": True})
        await send({"type": "http.response.body", "body": b""})


def harvest(events: int = EVENTS) -> dict[str, Canned]:
    """Each protocol's plain and streamed answer, as ``MockUpstream`` sends it."""
    mock = MockUpstream(stream_events=events, text=" ".join(f"word{i}" for i in range(events)))
    return asyncio.run(_harvest_all(mock))


async def _harvest_all(mock: MockUpstream) -> dict[str, Canned]:
    canned = {}
    for protocol, (path, request) in _REQUESTS.items():
        status, headers, chunks = await _call(mock, path, request)
        assert status == 200, (protocol, status)
        body = b"".join(chunks)
        if protocol == "gemini":
            path = path.replace(":generateContent", ":streamGenerateContent")
            s_status, s_headers, s_chunks = await _call(mock, path, request, query=b"alt=sse")
        else:
            s_status, s_headers, s_chunks = await _call(mock, path, {**request, "stream": True})
        assert s_status == 200, (protocol, s_status)
        canned[protocol] = Canned(
            body,
            [(k, v) for k, v in headers if k != b"content-length"]
            + [(b"content-length", str(len(body)).encode())],
            [chunk for chunk in s_chunks if chunk],
            s_headers,
        )
    return canned


async def _call(
    app: MockUpstream, path: str, request: dict[str, Any], query: bytes = b""
) -> tuple[int, list[tuple[bytes, bytes]], list[bytes]]:
    body = json.dumps(request).encode()
    sent: list[Message] = []
    delivered = False

    async def receive() -> Message:
        nonlocal delivered
        if delivered:
            await asyncio.Event().wait()  # the mock's disconnect watcher; cancelled at the end
        delivered = True
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: Message) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "method": "POST",
        "path": path,
        "query_string": query,
        "headers": [(b"content-type", b"application/json"), (b"authorization", b"Bearer k")],
        "client": ("127.0.0.1", 1),
    }
    await app(scope, receive, send)
    start = sent[0]
    return start["status"], list(start["headers"]), [m.get("body", b"") for m in sent[1:]]
