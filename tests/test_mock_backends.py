"""The mock's emulation of the coding tools' backends refuses what each backend refuses, and
answers in the backend's own shape (Code Assist's envelope included)."""

from __future__ import annotations

from typing import Any

import httpx
import msgspec
import pytest

from asgi_rotator.mock import MockUpstream
from asgi_rotator.mock.backends import MockBackends

pytestmark = pytest.mark.anyio

BEARER = {"authorization": "Bearer tok"}
CODEX_BODY = {
    "model": "gpt-5-codex",
    "input": "hi",
    "instructions": "",
    "store": False,
    "stream": True,
}
CODEX_HEADERS = {**BEARER, "chatgpt-account-id": "acct"}
COPILOT_HEADERS = {**BEARER, "copilot-integration-id": "vscode-chat", "editor-version": "x/1"}
CHAT_BODY = {"model": "gpt-4.1", "messages": [{"role": "user", "content": "hi"}]}
CLAUDE_BODY = {"model": "c", "max_tokens": 8, "messages": [{"role": "user", "content": "hi"}]}
CLAUDE_HEADERS = {**BEARER, "anthropic-version": "2023-06-01", "anthropic-beta": "oauth-2025-04-20"}
GEMINI_REQUEST = {"contents": [{"role": "user", "parts": [{"text": "hi"}]}]}
CLI_BODY = {
    "model": "gemini-2.5-pro",
    "project": "p1",
    "user_prompt_id": "u",
    "request": GEMINI_REQUEST,
}
AGY_BODY = {
    "model": "gemini-2.5-pro",
    "project": "p1",
    "userAgent": "antigravity",
    "requestType": "agent",
    "requestId": "agent-1",
    "request": GEMINI_REQUEST,
}


async def post(app: MockBackends, path: str, body: Any, headers: dict[str, str]) -> httpx.Response:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://mock") as client:
        return await client.post(path, content=msgspec.json.encode(body), headers=headers)


@pytest.fixture
def app() -> MockBackends:
    return MockBackends(MockUpstream(), tokens={"tok"}, projects={"p1"}, account_ids={"acct"})


async def test_each_backend_answers_what_it_accepts(app: MockBackends) -> None:
    ok = [
        ("/claude_code/v1/messages", CLAUDE_BODY, CLAUDE_HEADERS),
        ("/codex/responses", CODEX_BODY, CODEX_HEADERS),
        ("/copilot/chat/completions", CHAT_BODY, COPILOT_HEADERS),
        ("/gemini_cli/v1internal:generateContent", CLI_BODY, BEARER),
        ("/antigravity/v1internal:generateContent", AGY_BODY, BEARER),
    ]
    for path, body, headers in ok:
        response = await post(app, path, body, headers)
        assert response.status_code == 200, (path, response.text)


@pytest.mark.parametrize(
    ("path", "body", "headers", "status", "says"),
    [
        # Claude Code's OAuth token: a bearer with the OAuth beta, never x-api-key.
        (
            "/claude_code/v1/messages",
            CLAUDE_BODY,
            {**CLAUDE_HEADERS, "anthropic-beta": ""},
            401,
            "OAuth",
        ),
        (
            "/claude_code/v1/messages",
            CLAUDE_BODY,
            {**CLAUDE_HEADERS, "x-api-key": "tok"},
            401,
            "x-api-key",
        ),
        (
            "/claude_code/v1/messages",
            CLAUDE_BODY,
            {**CLAUDE_HEADERS, "authorization": "Bearer old"},
            401,
            "token",
        ),
        # Codex: the account header, a stream, nothing stored, instructions, no refused field.
        ("/codex/responses", CODEX_BODY, BEARER, 400, "chatgpt-account-id"),
        ("/codex/responses", CODEX_BODY, {**BEARER, "chatgpt-account-id": "other"}, 403, "Account"),
        ("/codex/responses", {**CODEX_BODY, "stream": False}, CODEX_HEADERS, 400, "Stream"),
        ("/codex/responses", {**CODEX_BODY, "store": True}, CODEX_HEADERS, 400, "Store"),
        (
            "/codex/responses",
            {k: v for k, v in CODEX_BODY.items() if k != "instructions"},
            CODEX_HEADERS,
            400,
            "Instructions",
        ),
        (
            "/codex/responses",
            {**CODEX_BODY, "previous_response_id": "resp_1"},
            CODEX_HEADERS,
            400,
            "previous_response_id",
        ),
        (
            "/codex/responses",
            {**CODEX_BODY, "max_output_tokens": 5},
            CODEX_HEADERS,
            400,
            "max_output_tokens",
        ),
        # Copilot: the integration and editor headers.
        (
            "/copilot/chat/completions",
            CHAT_BODY,
            {**COPILOT_HEADERS, "copilot-integration-id": ""},
            400,
            "copilot-integration-id",
        ),
        (
            "/copilot/chat/completions",
            CHAT_BODY,
            {**COPILOT_HEADERS, "editor-version": ""},
            400,
            "editor-version",
        ),
        # Code Assist: each variant's own envelope, a known project, SSE streams only.
        ("/gemini_cli/v1internal:generateContent", AGY_BODY, BEARER, 400, "userAgent"),
        ("/antigravity/v1internal:generateContent", CLI_BODY, BEARER, 400, "user_prompt_id"),
        (
            "/gemini_cli/v1internal:generateContent",
            {**CLI_BODY, "project": ""},
            BEARER,
            400,
            "project",
        ),
        (
            "/gemini_cli/v1internal:generateContent",
            {**CLI_BODY, "project": "p2"},
            BEARER,
            403,
            "p2",
        ),
        ("/gemini_cli/v1internal:generateContent", GEMINI_REQUEST, BEARER, 400, "contents"),
        ("/gemini_cli/v1internal:streamGenerateContent", CLI_BODY, BEARER, 400, "alt=sse"),
        ("/gemini_cli/v1internal:generateContent", CLI_BODY, {}, 401, "bearer"),
        ("/codex/v1/responses", CODEX_BODY, CODEX_HEADERS, 404, "No route"),
    ],
)
async def test_each_backend_refuses_what_it_refuses(
    app: MockBackends, path: str, body: Any, headers: dict[str, str], status: int, says: str
) -> None:
    response = await post(app, path, body, headers)
    assert response.status_code == status
    assert says in response.text
    assert app.upstream.requests == []  # nothing reached the model


async def test_code_assist_answers_in_its_envelope(app: MockBackends) -> None:
    plain = await post(app, "/gemini_cli/v1internal:generateContent", CLI_BODY, BEARER)
    data = plain.json()
    assert set(data) == {"response", "traceId"}
    assert data["response"]["candidates"][0]["content"]["parts"][0]["text"].endswith("hi")
    assert int(plain.headers["content-length"]) == len(plain.content)
    (inner,) = app.upstream.requests
    assert inner.path == "/v1beta/models/gemini-2.5-pro:generateContent"
    assert inner.body == GEMINI_REQUEST

    streamed = await post(
        app, "/antigravity/v1internal:streamGenerateContent?alt=sse", AGY_BODY, BEARER
    )
    events = [line[6:] for line in streamed.text.splitlines() if line.startswith("data: ")]
    assert len(events) > 1
    for event in events:
        assert "candidates" in msgspec.json.decode(event)["response"]


async def test_code_assist_errors_are_not_wrapped(app: MockBackends) -> None:
    response = await post(
        app, "/gemini_cli/v1internal:generateContent", {**CLI_BODY, "bogus": 1}, BEARER
    )
    assert response.status_code == 400
    assert response.json()["error"]["status"] == "INVALID_ARGUMENT"
