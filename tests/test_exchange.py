from __future__ import annotations

import gc
from typing import Any

import pytest

from asgi_rotator.errors import GatewayError
from asgi_rotator.exchange import RECORD, SCOPE_KEY, Exchange
from asgi_rotator.middleware.protocol import ProtocolNegotiation
from asgi_rotator.routes import match_route, route_path

pytestmark = pytest.mark.anyio


def receiver(*chunks: bytes) -> Any:
    messages = [
        {"type": "http.request", "body": c, "more_body": i < len(chunks) - 1}
        for i, c in enumerate(chunks)
    ]

    async def receive() -> dict[str, Any]:
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    return receive


async def test_exchange_is_made_once_and_replays_the_body() -> None:
    scope: dict[str, Any] = {"type": "http"}
    exchange = await Exchange.of(scope, receiver(b'{"a":', b"1}"))
    assert exchange.body == b'{"a":1}'
    assert scope[SCOPE_KEY] is exchange
    assert await Exchange.of(scope, receiver(b"other")) is exchange
    for _ in range(2):  # every replay gives the body again, then passes disconnects through
        replay = exchange.replay()
        assert await replay() == {"type": "http.request", "body": b'{"a":1}', "more_body": False}
        assert (await replay())["type"] == "http.disconnect"


async def test_body_over_the_limit_is_413() -> None:
    with pytest.raises(GatewayError) as info:
        await Exchange.of({"type": "http"}, receiver(b"x" * 10, b"y" * 10), max_body=15)
    assert info.value.status == 413


async def test_record_keeps_passes_in_order_when_the_scope_asks() -> None:
    exchange = Exchange({"type": "http", RECORD: True})
    exchange.record("a.parse", size=3)
    exchange.record("b.translate")
    assert [p.name for p in exchange.passes] == ["a.parse", "b.translate"]
    assert exchange.passes[0].data == {"size": 3}


async def test_record_keeps_nothing_unless_asked() -> None:
    """Nobody reads the passes by default: a request does not carry them for nothing."""
    exchange = Exchange({"type": "http"})
    exchange.record("a.parse", size=3)
    assert exchange.passes == []
    exchange.recording = True  # a layer that finds the exchange made may still ask
    exchange.record("b.translate")
    assert [p.name for p in exchange.passes] == ["b.translate"]


@pytest.mark.parametrize(
    ("path", "endpoint", "protocol", "model", "stream"),
    [
        ("/v1/chat/completions", "generate", "openai_chat", None, None),
        ("/chat/completions", "generate", "openai_chat", None, None),
        ("/v1/responses", "generate", "openai_responses", None, None),
        ("/v1/messages", "generate", "anthropic_messages", None, None),
        (
            "/v1beta/models/gemini-2.5-pro:generateContent",
            "generate",
            "gemini",
            "gemini-2.5-pro",
            False,
        ),
        (
            "/v1/models/openai/gpt-4.1:streamGenerateContent",
            "generate",
            "gemini",
            "openai/gpt-4.1",
            True,
        ),
        ("/v1/models", "models", None, None, None),
        ("/v1beta/models", "gemini_models", None, None, None),
        ("/healthz", "health", None, None, None),
        ("/v1/responses/resp_1/input_items", "responses_item", "openai_responses", None, None),
    ],
)
def test_routes(
    path: str, endpoint: str, protocol: str | None, model: str | None, stream: bool | None
) -> None:
    route = match_route(path)
    assert route is not None
    assert (route.endpoint, route.protocol, route.model, route.stream) == (
        endpoint,
        protocol,
        model,
        stream,
    )


def test_unknown_paths_do_not_match() -> None:
    for path in ("/", "/v1/models/gpt-4.1", "/v1beta/models/x:explode", "/v2/messages"):
        assert match_route(path) is None


def test_route_path_strips_the_mount_prefix() -> None:
    assert route_path({"path": "/llm/v1/messages", "root_path": "/llm"}) == "/v1/messages"
    assert route_path({"path": "/v1/messages", "root_path": ""}) == "/v1/messages"


def test_request_ids_are_distinct_and_shaped_like_before() -> None:
    ids = {Exchange({"type": "http"}).request_id for _ in range(1000)}
    assert len(ids) == 1000
    for request_id in ids:
        assert request_id.startswith("req_") and len(request_id) == 20
        int(request_id[4:], 16)


async def test_a_finished_request_is_freed_by_reference_counting() -> None:
    """The scope holds the exchange; once the request is answered the exchange no longer
    holds the scope (nor the server's receive), so no request is left to the garbage
    collector, which under load cost more than all the layers together."""

    async def inner(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"{}"})

    async def send(message: Any) -> None:
        pass

    app = ProtocolNegotiation(inner)
    body = b'{"model":"m","messages":[{"role":"user","content":"hi"}]}'
    gc.collect()
    gc.disable()
    try:
        for _ in range(20):
            scope: dict[str, Any] = {
                "type": "http",
                "method": "POST",
                "path": "/v1/chat/completions",
                "query_string": b"",
                "headers": [(b"content-type", b"application/json")],
            }
            await app(scope, receiver(body), send)
            exchange = scope[SCOPE_KEY]
            assert exchange.request is not None and exchange.request.model == "m"
            assert SCOPE_KEY not in exchange.scope  # a copy, without the exchange
            assert exchange.scope["path"] == "/v1/chat/completions"
        del scope, exchange
        # Each request used to leave a cycle of a few dozen objects.  Only the request's own
        # are looked for: garbage made meanwhile by anything else does not count.
        gc.set_debug(gc.DEBUG_SAVEALL)  # what the collector finds stays in gc.garbage
        gc.collect()
        assert [o for o in gc.garbage if isinstance(o, Exchange)] == []
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
        gc.enable()
