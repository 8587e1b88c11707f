"""The routing helper module both routing layers share (``middleware/routing.py``)."""

from __future__ import annotations

import gc
from typing import Any

import pytest

from asgi_rotator.exchange import SCOPE_KEY
from asgi_rotator.middleware.cooldown import CooldownRetry
from asgi_rotator.middleware.fallback import FallbackRouter
from asgi_rotator.state import MemoryStore
from tests.middleware.test_cooldown import Clock, call, make_providers

# Where a request's objects come from: the routing layers, their helpers and the exchange.
_REQUEST_MODULES = frozenset(
    {
        "asgi_rotator.exchange",
        "asgi_rotator.middleware.routing",
        "asgi_rotator.middleware._held",
        "asgi_rotator.middleware.fallback",
        "asgi_rotator.middleware.cooldown",
    }
)

pytestmark = pytest.mark.anyio


async def _answer(scope: Any, receive: Any, send: Any) -> None:
    await receive()
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"{}"})


@pytest.mark.parametrize("groups", [{}, {"g": {"targets": ["p/a", "q/b"]}}], ids=["one", "group"])
async def test_a_routed_request_leaves_no_reference_cycle(groups: dict[str, Any]) -> None:
    # A cycle per request is freed only by the garbage collector, whose runs under load cost
    # more than the layers themselves (Exchange.detach says how much).
    providers = make_providers({"p": 2, "q": 1}, groups=groups)
    clock = Clock()
    app = FallbackRouter(
        CooldownRetry(
            _answer, providers=providers, store=MemoryStore(), clock=clock, sleep=clock.sleep
        ),
        providers=providers,
    )
    model = "g" if groups else "p/a"
    await call(app, model)  # the first request fills the layers' caches
    gc.collect()
    gc.disable()
    try:
        for _ in range(20):
            result = await call(app, model)
            assert result.status == 200 and result.attempts == 1
            exchange = result.exchange
            assert exchange is not None
            exchange.detach()  # what the outermost layer of a stack does
        del result, exchange
        # Only the request's own objects are looked for: garbage made meanwhile by anything
        # else (the test runner) does not count.
        gc.set_debug(gc.DEBUG_SAVEALL)  # what the collector finds stays in gc.garbage
        gc.collect()
        left = [o for o in gc.garbage if type(o).__module__ in _REQUEST_MODULES]
        assert left == []
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
        gc.enable()


async def test_a_committed_stream_lets_go_of_the_request_body() -> None:
    # A stream may wait for minutes with the request's bytes (a whole conversation) in them;
    # only an attempt's inner app reads them, and none starts after commit.  Before commit,
    # the retry still gets them.
    providers = make_providers({"p": 2})
    clock = Clock()
    received: list[bytes] = []
    after_commit: list[bytes] = []

    async def inner(scope: Any, receive: Any, send: Any) -> None:
        received.append((await receive())["body"])
        if len(received) == 1:
            await send({"type": "http.response.start", "status": 503, "headers": []})
            await send({"type": "http.response.body", "body": b"busy"})
            return
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"hello", "more_body": True})
        after_commit.append(scope[SCOPE_KEY].body)
        await send({"type": "http.response.body", "body": b""})

    app = FallbackRouter(
        CooldownRetry(
            inner, providers=providers, store=MemoryStore(), clock=clock, sleep=clock.sleep
        ),
        providers=providers,
    )
    result = await call(app, "p/m", stream=True)
    assert result.status == 200 and result.body == b"hello"
    assert len(received) == 2 and received[0] == received[1] and b'"hi"' in received[0]
    assert after_commit == [b""]
