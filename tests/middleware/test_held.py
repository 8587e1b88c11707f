from __future__ import annotations

from typing import Any

import pytest

from asgi_rotator.errors import GatewayError
from asgi_rotator.exchange import ERROR, EVENT
from asgi_rotator.middleware._held import run_held
from asgi_rotator.unified import Error, Finish, MessageStart, TextDelta, Usage, UsageEvent

pytestmark = pytest.mark.anyio


def app_sending(*messages: dict[str, Any], after: list[str] | None = None) -> Any:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        for message in messages:
            await send(message)
        if after is not None:
            after.append("finished")

    return app


def start(status: int = 200, **extra: Any) -> dict[str, Any]:
    return {"type": "http.response.start", "status": status, "headers": [], **extra}


def body(data: bytes, events: list[Any] | None = None, more: bool = True) -> dict[str, Any]:
    message: dict[str, Any] = {"type": "http.response.body", "body": data, "more_body": more}
    if events is not None:
        message[EVENT] = events
    return message


async def run(app: Any) -> tuple[Any, list[dict[str, Any]]]:
    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    return await run_held(app, {}, None, send), sent


async def test_stream_commits_at_first_content_event() -> None:
    prelude = body(b"start", [MessageStart(id="m", model="x")])
    content = body(b"delta", [TextDelta(index=0, text="hi")])
    held, sent = await run(app_sending(start(), prelude, content, body(b"", more=False)))
    assert held.committed and held.error is None
    assert [m.get("body") for m in sent] == [None, b"start", b"delta", b""]


async def test_error_event_before_content_fails_without_sending_anything() -> None:
    error = GatewayError("overloaded", "busy", status=529)
    after: list[str] = []
    app = app_sending(
        start(),
        body(b"start", [MessageStart(id="m", model="x"), UsageEvent(usage=Usage(input_tokens=3))]),
        body(b"err", [Error(error=error)]),
        body(b"never"),
        after=after,
    )
    held, sent = await run(app)
    assert sent == [] and not held.committed
    assert held.error is error and held.messages == []
    assert after == []  # the inner app was stopped, not run to its end


async def test_an_error_read_with_the_first_content_fails_the_attempt() -> None:
    # Content and an error in one upstream read reach the hold as one body message: nothing
    # has gone out yet, so it is a failure before commit and the routing layers may retry.
    error = GatewayError("overloaded", "busy", status=503)
    message = body(b"delta+err", [TextDelta(index=0, text="Hello "), Error(error=error)])
    held, sent = await run(app_sending(start(), message, body(b"", more=False)))
    assert not held.committed and held.error is error
    assert sent == []


async def test_error_response_is_held_for_release() -> None:
    error = GatewayError("rate_limited", "slow down", retry_after=3)
    held, sent = await run(
        app_sending(start(429, **{ERROR: error}), body(b'{"error":1}', more=False))
    )
    assert sent == [] and held.error is error and held.status == 429
    released: list[dict[str, Any]] = []

    async def collect(message: dict[str, Any]) -> None:
        released.append(message)

    await held.release(collect)
    assert [m["type"] for m in released] == ["http.response.start", "http.response.body"]


async def test_foreign_error_response_is_classified_by_status() -> None:
    held, _ = await run(app_sending(start(503), body(b"Service Unavailable", more=False)))
    assert held.error is not None and held.error.kind == "overloaded"


async def test_foreign_stream_without_twins_commits_at_once() -> None:
    held, sent = await run(app_sending(start(), body(b"data: x\n\n"), body(b"", more=False)))
    assert held.committed and len(sent) == 3


async def test_error_after_commit_is_passed_through() -> None:
    error = GatewayError("server_error", "late")
    app = app_sending(
        start(),
        body(b"delta", [TextDelta(index=0, text="hi")]),
        body(b"err", [Error(error=error)]),
        body(b"", [Finish()], more=False),
    )
    held, sent = await run(app)
    assert held.committed and held.error is None
    assert [m.get("body") for m in sent] == [None, b"delta", b"err", b""]


async def test_nested_holds_pass_a_committed_stream_on_in_order() -> None:
    prelude = body(b"start", [MessageStart(id="m", model="x")])
    content = [body(f"d{i}".encode(), [TextDelta(index=0, text="x")]) for i in range(3)]
    inner_app = app_sending(start(), prelude, *content, body(b"", more=False))
    sends: list[Any] = []

    async def middle(scope: Any, receive: Any, send: Any) -> None:
        inner = await run_held(inner_app, scope, receive, send)
        sends.append(inner)

    sent: list[dict[str, Any]] = []

    async def client(message: dict[str, Any]) -> None:
        sent.append(message)

    def count(message: dict[str, Any]) -> dict[str, Any]:
        return {**message, "headers": [*message["headers"], (b"x-count", b"1")]}

    outer = await run_held(middle, {}, None, client, on_start=count)
    (inner,) = sends
    assert outer.committed and inner.committed
    assert [m.get("body") for m in sent] == [None, b"start", b"d0", b"d1", b"d2", b""]
    assert sent[0]["headers"] == [(b"x-count", b"1")]  # applied once, at commit


async def test_on_start_applies_to_a_released_error_response() -> None:
    error = GatewayError("rate_limited", "slow down")
    held, sent = await run(app_sending(start(429, **{ERROR: error}), body(b"{}", more=False)))
    assert sent == []
    released: list[dict[str, Any]] = []

    async def collect(message: dict[str, Any]) -> None:
        released.append(message)

    held.on_start = lambda message: {**message, "status": 499}
    await held.release(collect)
    assert [m.get("status") for m in released] == [499, None]


async def test_the_repr_of_a_hold_never_shows_the_held_response() -> None:
    # A provider's error body may echo part of the key it refused.
    error_body = b'{"error": {"message": "Incorrect API key provided: sk-live-abc123"}}'
    held, _ = await run(app_sending(start(401), body(error_body, more=False)))
    assert held.error is not None and held.messages
    assert "sk-live" not in repr(held) and "401" in repr(held)
