"""Stream framings other than SSE, for clients that ask for one (``Codec.stream_framing``).

Every layer speaks SSE to the next: one body message per event, heartbeats between events,
in-band errors as one more event.  A protocol whose clients may ask for another framing
says so through its codec, and the protocol layer puts the framing's send wrapper between
the stack and the client, so no generic layer needs to know.

``JsonArrayStream``: Gemini's ``streamGenerateContent`` without ``alt=sse`` answers one
JSON array whose elements arrive as they are made (``application/json``; ``[{...}`` then
``,\\r\\n{...}`` ... then ``]``).  The official SDKs always ask for ``alt=sse``; curl users
and older REST clients do not.  A heartbeat (whitespace between elements) stays valid JSON.
"""

from __future__ import annotations

from .._types import Message, Send
from ..sse import SSEDecoder

__all__ = ["JsonArrayStream"]

_SSE = b"text/event-stream"


class JsonArrayStream:
    """A send wrapper: an SSE response becomes a streamed JSON array of its events' data.
    Anything else (an error answered before the stream began) passes untouched."""

    __slots__ = ("active", "decoder", "opened", "send")

    def __init__(self, send: Send) -> None:
        self.send = send
        self.active = False
        self.opened = False
        self.decoder = SSEDecoder()

    async def __call__(self, message: Message) -> None:
        kind = message["type"]
        if kind == "http.response.start":
            headers = message.get("headers", ())
            if any(n == b"content-type" and v.startswith(_SSE) for n, v in headers):
                self.active = True
                message = dict(message)
                message["headers"] = [
                    (n, b"application/json; charset=utf-8" if n == b"content-type" else v)
                    for n, v in headers
                ]
        elif kind == "http.response.body" and self.active:
            body: bytes = message.get("body", b"")
            more = message.get("more_body", False)
            events = self.decoder.feed(body) if body else []
            if not more:
                events += self.decoder.close()
            parts = []
            for event in events:
                if event.data:
                    parts.append((b",\r\n" if self.opened else b"[") + event.data.encode())
                    self.opened = True
            if not more:
                parts.append(b"]" if self.opened else b"[]")
            elif not parts and body:
                parts.append(b"\n")  # a heartbeat: whitespace keeps the connection alive
            message = dict(message)
            message["body"] = b"".join(parts)
        await self.send(message)
