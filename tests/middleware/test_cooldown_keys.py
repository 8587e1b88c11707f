"""CooldownRetry's state keys and what it says when no key may be tried: a key the provider
refused is an auth error, never a rate limit, and no model name can make the layer raise."""

from __future__ import annotations

import json
from typing import Any

import anyio
import msgspec
import pytest

from asgi_rotator.errors import GatewayError
from asgi_rotator.exchange import RECORD, SCOPE_KEY, Exchange
from asgi_rotator.middleware.cooldown_keys import model_in_key
from asgi_rotator.providers import Providers, Target
from asgi_rotator.state import MemoryStore
from asgi_rotator.unified import Request
from tests.middleware.test_cooldown import (
    Clock,
    Result,
    Upstream,
    call,
    layer,
    make_providers,
    rate_limited,
)

pytestmark = pytest.mark.anyio


def refused(status: int = 401) -> GatewayError:
    return GatewayError("auth", "Incorrect API key provided", status=status, upstream_status=status)


# --- every key refused ----------------------------------------------------------------------


@pytest.mark.parametrize("keys", [1, 3])
async def test_a_pool_refused_with_401_is_an_auth_error_not_a_rate_limit(keys: int) -> None:
    upstream = Upstream(lambda t, key, n: refused())
    app = layer(upstream, make_providers({"p": keys}), Clock())
    first = await call(app)
    assert first.status == 401 and len(upstream.calls) == keys  # each key once, then out
    again = await call(app)
    assert len(upstream.calls) == keys  # every key is out: no upstream call
    assert again.status == 401
    assert b"retry-after" not in again.headers
    error = again.json()["error"]
    assert error["code"] != "rate_limit_exceeded"
    assert "refused" in error["message"] and "p" in error["message"]
    assert "cooling down" not in error["message"]
    assert again.exchange is not None and again.exchange.current.error is not None
    assert again.exchange.current.error.kind == "auth"


async def test_a_pool_whose_other_keys_are_rate_limited_is_still_a_rate_limit() -> None:
    # One key refused, the other resting for a minute: the client may come back in a minute.
    upstream = Upstream(lambda t, key, n: refused() if key == "p#0" else rate_limited(60))
    app = layer(upstream, make_providers({"p": 2}), Clock(), max_wait=0)
    await call(app)
    again = await call(app)
    assert again.status == 429 and again.headers[b"retry-after"] == b"60"


@pytest.mark.parametrize("client", ["anthropic_messages", "gemini", "openai_responses"])
async def test_a_refused_pool_is_an_auth_error_in_every_protocol(client: str) -> None:
    upstream = Upstream(lambda t, key, n: refused())
    app = layer(upstream, make_providers({"p": 1}), Clock())
    path, body = {
        "anthropic_messages": (
            "/v1/messages",
            {"model": "p/m", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]},
        ),
        "gemini": (
            "/v1beta/models/p/m:generateContent",
            {"contents": [{"role": "user", "parts": [{"type": "text", "text": "hi"}]}]},
        ),
        "openai_responses": ("/v1/responses", {"model": "p/m", "input": "hi"}),
    }[client]
    await call(app, path=path, body=body)
    again = await call(app, path=path, body=body)
    assert again.status == 401 and len(upstream.calls) == 1
    assert b"retry-after" not in again.headers
    assert "refused" in again.body.decode()


# --- any model name -------------------------------------------------------------------------

ODD_NAMES = {
    "newline": "m\ninjected",
    "tab": "m\tx",
    "nul": "m\x00",
    "del": "m\x7f",
    "line-separator": "m\u2028",
    "lone-surrogate": "m\ud800",
    "long": "m" * 600,  # longer than a state key may be
    "digest-like": "~" + "0" * 64,
}


async def _call_with_target(app: Any, providers: Providers, model: str) -> Result:
    """A request whose exchange (made by a layer above, as a foreign one might) already has
    its target: the layer meets the model name as it is, with no validation before it."""
    target = Target(providers.providers["p"], model)
    scope: dict[str, Any] = {
        "type": "http",
        "method": "POST",
        "path": "/v1/chat/completions",
        "root_path": "",
        "query_string": b"",
        "headers": [(b"content-type", b"application/json")],
        RECORD: True,
    }
    raw = json.dumps({"model": "p/x", "messages": [{"role": "user", "content": "hi"}]}).encode()
    exchange = scope[SCOPE_KEY] = Exchange(scope, raw)
    exchange.protocol = "openai_chat"
    exchange.request = msgspec.convert(
        {
            "model": f"p/{model}",
            "messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}]}],
        },
        Request,
    )
    exchange.current.target = target
    messages: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        await anyio.sleep_forever()
        raise AssertionError

    async def send(message: dict[str, Any]) -> None:
        messages.append(dict(message))

    await app(scope, receive, send)
    return Result(messages, exchange)


@pytest.mark.parametrize("name", list(ODD_NAMES.values()), ids=list(ODD_NAMES))
@pytest.mark.parametrize(
    "failure",
    [
        GatewayError("server_error", "boom", status=500),  # counts, then cools the model
        rate_limited(30),  # cools the key for this model (credential_model)
        refused(403),  # takes the key out for this model
    ],
    ids=["500", "429", "403"],
)
async def test_any_model_name_is_a_working_state_key(name: str, failure: GatewayError) -> None:
    providers = make_providers({"p": 1})
    upstream = Upstream(lambda t, key, n: failure)
    app = layer(
        upstream,
        providers,
        Clock(),
        store=MemoryStore(),
        rate_limit_scope="credential_model",
        failure_threshold=1,
        max_wait=0,
    )
    first = await _call_with_target(app, providers, name)
    assert first.status == failure.status
    # The failure was remembered under that name: the next request is not sent upstream ...
    calls = len(upstream.calls)
    again = await _call_with_target(app, providers, name)
    assert again.status < 500 or failure.kind == "server_error"
    assert len(upstream.calls) == calls
    # ... and not under another odd name's key.
    other = "m\nother" if name != "m\nother" else "m\tother"
    await _call_with_target(app, providers, other)
    assert len(upstream.calls) > calls


def test_a_model_name_in_a_key_is_printable_bounded_and_distinct() -> None:
    encoded = {model_in_key(name) for name in ODD_NAMES.values()}
    assert len(encoded) == len(ODD_NAMES)
    assert all(key.isprintable() and len(key) <= 256 for key in encoded)
    # The names providers use are kept as they are, so stored state stays readable.
    for name in ("gpt-4.1", "claude-sonnet-4-5", "models/gemini-2.5-pro", "a:b@c/d"):
        assert model_in_key(name) == name
