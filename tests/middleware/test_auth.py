from __future__ import annotations

import json
from typing import Any

import pytest

from asgi_rotator.middleware.auth import PRINCIPAL, InboundKeys, fingerprint

pytestmark = pytest.mark.anyio


async def inner(scope: dict[str, Any], receive: Any, send: Any) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": scope.get(PRINCIPAL, "").encode()})


async def call(
    path: str, headers: list[tuple[bytes, bytes]], query: bytes = b""
) -> tuple[int, bytes]:
    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    scope = {
        "type": "http",
        "method": "POST",
        "path": path,
        "root_path": "",
        "headers": headers,
        "query_string": query,
    }
    await InboundKeys(inner, keys=["sk-good", "sk-other"])(scope, receive, send)
    return sent[0]["status"], b"".join(m.get("body", b"") for m in sent[1:])


@pytest.mark.parametrize(
    ("headers", "query"),
    [
        ([(b"authorization", b"Bearer sk-good")], b""),
        ([(b"x-api-key", b"sk-good")], b""),
        ([(b"x-goog-api-key", b"sk-good")], b""),
        ([], b"alt=sse&key=sk-good"),
    ],
    ids=["bearer", "x-api-key", "x-goog-api-key", "query"],
)
async def test_a_configured_key_gets_through_with_its_fingerprint(
    headers: Any, query: bytes
) -> None:
    status, body = await call("/v1/chat/completions", headers, query)
    assert status == 200
    assert body.decode() == fingerprint("sk-good")
    assert b"sk-good" not in body


@pytest.mark.parametrize(
    ("path", "headers", "check"),
    [
        (
            "/v1/chat/completions",
            [(b"authorization", b"Bearer wrong")],
            lambda b: b["error"]["message"] == "invalid API key",
        ),
        (
            "/v1/messages",
            [],
            lambda b: b["type"] == "error" and b["error"]["type"] == "authentication_error",
        ),
        (
            "/v1beta/models/m:generateContent",
            [(b"x-goog-api-key", b"nope")],
            lambda b: b["error"]["code"] == 401,
        ),
        ("/v1/models", [(b"anthropic-version", b"2023-06-01")], lambda b: b["type"] == "error"),
    ],
    ids=["openai", "anthropic", "gemini", "anthropic-listing"],
)
async def test_refusal_is_a_401_in_the_client_protocol(path: str, headers: Any, check: Any) -> None:
    status, body = await call(path, headers)
    assert status == 401
    assert check(json.loads(body))
    assert b"wrong" not in body and b"nope" not in body


async def test_health_stays_open() -> None:
    status, _ = await call("/healthz", [])
    assert status == 200


def test_keys_are_required() -> None:
    with pytest.raises(ValueError):
        InboundKeys(inner, keys=[])


async def test_every_configured_key_gets_through_with_its_own_fingerprint() -> None:
    for key in ("sk-good", "sk-other"):
        status, body = await call("/v1/messages", [(b"x-api-key", key.encode())])
        assert status == 200
        assert body.decode() == fingerprint(key)


@pytest.mark.parametrize("keys", [[""], [" "], ["sk-good", "\t"]])
def test_an_empty_or_blank_key_is_refused_at_construction(keys: list[str]) -> None:
    # A template with an unset variable gives "": accepted, it would let an empty header in.
    with pytest.raises(ValueError, match="empty or blank"):
        InboundKeys(inner, keys=keys)


@pytest.mark.parametrize(
    ("headers", "query"),
    [
        ([(b"x-api-key", b"")], b""),
        ([(b"x-goog-api-key", b"  ")], b""),
        ([(b"authorization", b"Bearer  ")], b""),
        ([], b"key="),
    ],
    ids=["x-api-key", "x-goog-api-key", "bearer", "query"],
)
async def test_an_empty_presented_key_is_no_key(headers: Any, query: bytes) -> None:
    status, _ = await call("/v1/chat/completions", headers, query)
    assert status == 401


async def test_an_empty_header_does_not_hide_a_real_key_after_it() -> None:
    status, body = await call(
        "/v1/messages", [(b"x-api-key", b""), (b"authorization", b"Bearer sk-good")]
    )
    assert status == 200 and body.decode() == fingerprint("sk-good")
