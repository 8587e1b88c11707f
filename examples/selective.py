"""Only the parts you need: the stream guard and the protocol layer around your own ASGI app.

Every middleware works alone around any ASGI app.  Here a hand-written upstream app stands
in for a provider-facing app of yours; StreamGuard gives it a TTFB timeout and heartbeats,
ProtocolNegotiation validates requests and renders its errors in the client's protocol.

    pip install -e '.[serve]' && uvicorn examples.selective:app --port 8001
    curl -s localhost:8001/v1/chat/completions -d '{"model": "x", "messages": []}'
    # -> 400 in OpenAI's error shape, naming `messages`
"""

from __future__ import annotations

from typing import Any

from asgi_rotator.middleware import ProtocolNegotiation, StreamGuard


async def my_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"application/json")],
        }
    )
    await send({"type": "http.response.body", "body": b'{"note": "your app answered"}'})


app = ProtocolNegotiation(StreamGuard(my_app, ttfb_timeout=10.0, heartbeat_interval=15.0))
