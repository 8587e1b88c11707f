"""The coding tools' backends, emulated in front of a ``MockUpstream``.

Each preset's backend (``asgi_rotator.presets``) is served under a path prefix named after
it, so one server speaks them all::

    /claude_code/v1/messages                         Anthropic Messages, OAuth bearer
    /codex/responses                                 ChatGPT's Codex backend (Responses)
    /copilot/chat/completions                        GitHub Copilot (Chat Completions)
    /gemini_cli/v1internal:generateContent           Code Assist, Gemini CLI's envelope
    /gemini_cli/v1internal:streamGenerateContent?alt=sse
    /antigravity/v1internal:...                      Code Assist, Antigravity's envelope

A test points a preset's ``base_url`` at ``<server>/<backend>`` (Codex's real base URL ends
in ``/backend-api/codex``; the emulation's in ``/codex``).  Every other path is the
``MockUpstream``'s own: its token endpoints (``TokenAuthority``) among them, so one server is
a backend and its token side.

What each backend validates, it validates here, and refuses the way it refuses: a missing
header, envelope field or required body field, a field it does not take, an API key where
only a bearer token works, a token it does not know (``tokens``).  What passes is handed to
the ``MockUpstream`` as the plain protocol it wraps (envelope removed, path of the public
API), so the answer is the mock's usual deterministic one; a Code Assist answer then goes
back in its ``{"response": ...}`` envelope, every stream event included.

Like the mock itself, this module shares no code with the gateway's shaping or codecs: the
rules are written out here after the open-source clients ``presets.py`` names.
"""

from __future__ import annotations

import re
from collections.abc import Container
from typing import Any

import msgspec

from .._types import Message, Receive, Scope, Send
from . import MockUpstream, _read_body

__all__ = ["BACKENDS", "BackendRequest", "MockBackends"]

BACKENDS = ("claude_code", "codex", "copilot", "gemini_cli", "antigravity")

_json = msgspec.json.Encoder()
_decode = msgspec.json.Decoder()
_JSON = [(b"content-type", b"application/json")]
_CODE_ASSIST = re.compile(r"^/v1internal:(generateContent|streamGenerateContent)$")
_DATA_LINE = re.compile(rb"^data: ?(.*)$", re.MULTILINE)

# Code Assist's request envelopes (JSON mapped onto a proto: an unknown field is a 400).
# google-gemini/gemini-cli, packages/core/src/code_assist/converter.ts
# (CAGenerateContentRequest); NoeFabris/opencode-antigravity-auth, src/plugin/request.ts.
_ENVELOPES = {
    "gemini_cli": (
        frozenset({"model", "project", "request"}),
        frozenset({"model", "project", "request", "user_prompt_id"}),
    ),
    "antigravity": (
        frozenset({"model", "project", "request", "requestType"}),
        frozenset({"model", "project", "request", "requestType", "requestId", "userAgent"}),
    ),
}
# Fields the Codex backend refuses (numman-ali/opencode-openai-codex-auth's request
# transformer removes them); previous_response_id: it stores nothing to continue from.
_CODEX_UNSUPPORTED = ("previous_response_id", "max_output_tokens", "max_completion_tokens")


class BackendRequest(msgspec.Struct, kw_only=True):
    """A request as the backend received it (the ``MockUpstream`` records the unwrapped one)."""

    backend: str
    path: str
    query: str
    headers: dict[str, str]
    body: Any
    status: int  # what the emulation answered before the mock's turn: 200 when it passed


class _Refusal(Exception):
    def __init__(self, status: int, message: str, kind: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.kind = kind


class MockBackends:
    """The backends, an ASGI app around ``upstream``.  ``tokens``: the bearer tokens the
    backends accept (None: any); ``projects``: the Code Assist projects that exist (None:
    any); ``account_ids``: the ChatGPT accounts the Codex backend knows (None: any)."""

    def __init__(
        self,
        upstream: MockUpstream | None = None,
        *,
        tokens: Container[str] | None = None,
        projects: Container[str] | None = None,
        account_ids: Container[str] | None = None,
    ) -> None:
        self.upstream = upstream if upstream is not None else MockUpstream()
        self.tokens = tokens
        self.projects = projects
        self.account_ids = account_ids
        self.requests: list[BackendRequest] = []

    def clear(self) -> None:
        self.requests.clear()
        self.upstream.clear()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        backend, _, rest = scope.get("path", "").lstrip("/").partition("/")
        if scope["type"] != "http" or backend not in BACKENDS:
            # The mock's own routes: its token endpoints (TokenAuthority), /v1/models, ...
            await self.upstream(scope, receive, send)
            return
        rest = "/" + rest
        raw = await _read_body(receive)
        headers: dict[str, str] = {}
        for name, value in scope["headers"]:
            k, v = name.decode("latin-1").lower(), value.decode("latin-1")
            headers[k] = f"{headers[k]}, {v}" if k in headers else v
        try:
            body = _decode.decode(raw) if raw else None
        except (msgspec.DecodeError, RecursionError):
            body = None
        query = scope["query_string"].decode("latin-1")
        record = BackendRequest(
            backend=backend, path=rest, query=query, headers=headers, body=body, status=200
        )
        self.requests.append(record)
        try:
            if scope["method"] != "POST":
                raise _Refusal(404, f"No route for {scope['path']}", "not_found")
            if not isinstance(body, dict):
                raise _Refusal(
                    400, "the request body is not a JSON object", "invalid_request_error"
                )
            self._authorized(backend, headers)
            inner_path, inner_query, inner_body = self._unwrapped(
                backend, rest, query, headers, body
            )
        except _Refusal as refusal:
            record.status = refusal.status
            await _send_json(send, refusal.status, _refusal_body(backend, refusal))
            return
        inner = dict(scope)
        inner["path"] = inner_path
        inner["raw_path"] = inner_path.encode()
        inner["query_string"] = inner_query.encode()
        encoded = _json.encode(inner_body)
        if backend in _ENVELOPES:
            send = _Enveloping(send).send
        await self.upstream(inner, _replay(encoded, receive), send)

    def _authorized(self, backend: str, headers: dict[str, str]) -> None:
        auth = headers.get("authorization", "")
        if backend == "claude_code" and "x-api-key" in headers:
            # An OAuth token is a bearer token; in x-api-key it is an invalid API key.
            raise _Refusal(401, "invalid x-api-key", "authentication_error")
        if auth[:7].lower() != "bearer " or not auth[7:].strip():
            raise _Refusal(401, "missing bearer token", "authentication_error")
        if self.tokens is not None and auth[7:].strip() not in self.tokens:
            raise _Refusal(401, "invalid or expired token", "authentication_error")

    def _unwrapped(
        self, backend: str, path: str, query: str, headers: dict[str, str], body: dict[str, Any]
    ) -> tuple[str, str, dict[str, Any]]:
        """The plain protocol request inside the backend's, once its rules are met."""
        if backend == "claude_code":
            # sst/opencode-anthropic-auth: OAuth tokens need this beta, else the API answers
            # that OAuth is not supported.
            betas = [b.strip() for b in headers.get("anthropic-beta", "").split(",")]
            if "oauth-2025-04-20" not in betas:
                raise _Refusal(
                    401, "OAuth authentication is currently not supported.", "authentication_error"
                )
            if path != "/v1/messages":
                raise _Refusal(404, f"No route for {path}", "not_found")
            return path, query, body
        if backend == "codex":
            if path != "/responses":
                raise _Refusal(404, f"No route for {path}", "not_found")
            account = headers.get("chatgpt-account-id")
            if not account:
                raise _Refusal(400, "Missing chatgpt-account-id header", "invalid_request_error")
            if self.account_ids is not None and account not in self.account_ids:
                raise _Refusal(403, "Account not found", "permission_error")
            for name in _CODEX_UNSUPPORTED:
                if name in body:
                    raise _Refusal(400, f"Unsupported parameter: {name}", "invalid_request_error")
            if body.get("stream") is not True:
                raise _Refusal(400, "Stream must be set to true", "invalid_request_error")
            if body.get("store") is not False:
                raise _Refusal(400, "Store must be set to false", "invalid_request_error")
            if not isinstance(body.get("instructions"), str):
                raise _Refusal(400, "Instructions are required", "invalid_request_error")
            return "/v1/responses", query, body
        if backend == "copilot":
            # ericc-ch/copilot-api, src/lib/api-config.ts: the API wants to know the
            # integration and the editor.
            for name in ("copilot-integration-id", "editor-version"):
                if not headers.get(name):
                    raise _Refusal(400, f"missing {name} header", "invalid_request_error")
            if path != "/chat/completions":
                raise _Refusal(404, f"No route for {path}", "not_found")
            return "/v1/chat/completions", query, body
        match = _CODE_ASSIST.match(path)
        if match is None:
            raise _Refusal(404, f"No route for {path}", "NOT_FOUND")
        required, allowed = _ENVELOPES[backend]
        for name in body:
            if name not in allowed:
                raise _Refusal(
                    400,
                    f'Invalid JSON payload received. Unknown name "{name}": Cannot find field.',
                    "INVALID_ARGUMENT",
                )
        for name in sorted(required):
            if not body.get(name):
                raise _Refusal(400, f"Missing required field: {name}", "INVALID_ARGUMENT")
        if self.projects is not None and body["project"] not in self.projects:
            raise _Refusal(
                403,
                f"Permission denied on resource project {body['project']}.",
                "PERMISSION_DENIED",
            )
        request = body["request"]
        if not isinstance(request, dict) or "contents" not in request:
            raise _Refusal(400, "request: contents is required", "INVALID_ARGUMENT")
        if "session_id" in request:
            # Code Assist's own field of the inner request (gemini-cli, code_assist/converter.ts),
            # not the public API's: taken out here, and kept in this record for tests.
            request = dict(request)
            if not isinstance(request.pop("session_id"), str):
                raise _Refusal(400, "request.session_id: expected a string", "INVALID_ARGUMENT")
        model = body["model"]
        if not isinstance(model, str) or "/" in model:
            raise _Refusal(400, f"model: invalid {model!r}", "INVALID_ARGUMENT")
        if match.group(1) == "streamGenerateContent" and "alt=sse" not in query:
            # Code Assist's clients always stream SSE; the emulation takes nothing else.
            raise _Refusal(400, "streamGenerateContent needs alt=sse", "INVALID_ARGUMENT")
        return f"/v1beta/models/{model}:{match.group(1)}", query, request


class _Enveloping:
    """The mock's Gemini answer in Code Assist's envelope: a plain body, or each stream
    event's data, as ``{"response": ..., "traceId": ...}``; errors as they are."""

    __slots__ = ("_send", "body", "start", "stream")

    def __init__(self, send: Send) -> None:
        self._send = send
        self.start: Message | None = None
        self.body: list[bytes] = []
        self.stream = False

    async def send(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            content_type = dict(message.get("headers", [])).get(b"content-type", b"")
            if message["status"] == 200 and content_type.startswith(b"text/event-stream"):
                self.stream = True
                await self._send(message)
            elif message["status"] == 200:
                self.start = message  # held until the whole body is in: its length changes
            else:
                await self._send(message)
            return
        if message["type"] != "http.response.body":
            await self._send(message)
            return
        if self.stream:
            chunk = _DATA_LINE.sub(_wrap_line, message.get("body", b""))
            await self._send({**message, "body": chunk})
            return
        if self.start is None:
            await self._send(message)
            return
        self.body.append(message.get("body", b""))
        if message.get("more_body", False):
            return
        wrapped = _wrap(b"".join(self.body))
        start = self.start
        headers = [(k, v) for k, v in start.get("headers", []) if k != b"content-length"]
        headers.append((b"content-length", str(len(wrapped)).encode()))
        await self._send({**start, "headers": headers})
        await self._send({"type": "http.response.body", "body": wrapped})


def _wrap(data: bytes) -> bytes:
    try:
        inner = _decode.decode(data)
    except (msgspec.DecodeError, RecursionError):
        return data
    return _json.encode({"response": inner, "traceId": "mock-trace"})


def _wrap_line(match: re.Match[bytes]) -> bytes:
    return b"data: " + _wrap(match.group(1))


# status -> (Anthropic error type, Google status), for the refusals made here.
_KINDS = {
    400: ("invalid_request_error", "INVALID_ARGUMENT"),
    401: ("authentication_error", "UNAUTHENTICATED"),
    403: ("permission_error", "PERMISSION_DENIED"),
    404: ("not_found_error", "NOT_FOUND"),
}


def _refusal_body(backend: str, refusal: _Refusal) -> dict[str, Any]:
    anthropic, google = _KINDS[refusal.status]
    if backend == "claude_code":
        return {"type": "error", "error": {"type": anthropic, "message": refusal.message}}
    if backend in _ENVELOPES:
        return {"error": {"code": refusal.status, "message": refusal.message, "status": google}}
    return {"error": {"message": refusal.message, "type": refusal.kind, "code": None}}


async def _send_json(send: Send, status: int, body: dict[str, Any]) -> None:
    data = _json.encode(body)
    headers = [*_JSON, (b"content-length", str(len(data)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": data})


def _replay(body: bytes, receive: Receive) -> Receive:
    """The body once, then the client's own ``receive`` (so a disconnect still reaches the
    mock's watcher)."""
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay
