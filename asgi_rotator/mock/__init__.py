"""A mock provider upstream: one raw ASGI app speaking OpenAI Chat Completions, OpenAI
Responses, Anthropic Messages and Gemini generateContent, with fault injection.

It is the independent oracle of the test suite and the upstream of the benchmarks, so:

- It shares no code with ``asgi_rotator.protocols`` or ``asgi_rotator.sse``: every wire shape
  is written out here by hand after the providers' API references, and the tests hold it to
  the official SDKs.  A codec bug cannot hide behind the same bug in the mock.
- It is cheap.  No framework; header lists, the model list and the non-request-dependent
  bytes are built once at import; bodies are plain dicts encoded by one module-level msgspec
  encoder; a request without delays is answered without spawning anything.
- It is deterministic.  The reply is derived from the request alone (ids come from a
  per-instance counter), so a test can predict the text, the tool calls, the signatures and
  the usage.  Usage: input = words of all conversation text + 10 (10 of them cached when
  reasoning is on); output = words of the reply text + words of the reasoning + 10 per call.
- One ASGI body message per stream event, each a whole SSE event, like the real APIs.
- While a response is pending or streaming, a second task watches ``receive()`` for
  ``http.disconnect`` and cancels the responder, so the mock notices a client going away
  at once (uvicorn's ``send`` silently drops writes to a closed connection, so watching
  ``send`` alone would only notice at the end).  Both tasks live in one task group inside
  the request: nothing outlives it.

Faults are matched in the order they were added, first match wins, and each is used up
after ``times`` matching requests.  The model listings (``models.py``) are faulted only by a
fault whose ``path`` names them; unknown routes never are.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import itertools
import re
import time
from collections.abc import Awaitable
from http import HTTPStatus
from typing import Any
from urllib.parse import parse_qs

import anyio
import httpx
import msgspec

from .._types import Receive, Scope, Send
from .models import LISTING_PATHS, listing, listing_error, listing_shape
from .reasoning import Issued, check_anthropic, check_gemini, check_responses, gemini_step
from .tokens import TokenAuthority

__all__ = [
    "MODELS",
    "PROTOCOLS",
    "ClosedStream",
    "Fault",
    "MockUpstream",
    "RecordedRequest",
    "TokenAuthority",
    "main",
    "mock_transport",
]


PROTOCOLS = ("openai_chat", "openai_responses", "anthropic_messages", "gemini")
MODELS = ("mock-gpt", "mock-claude", "mock-gemini")

_json = msgspec.json.Encoder()
_decode = msgspec.json.Decoder()

_JSON_HEADERS = [(b"content-type", b"application/json")]
_SSE_HEADERS = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-cache"),
]
# What a broken proxy in front of a provider sends instead of an event stream.
_GARBAGE = b"<html><body><h1>502 Bad Gateway</h1></body></html>\r\n\r\n"
_BROKEN_JSON = b'{"id": "broken", "choices": [{"index": 0, "delta": {"content": "x"'
# Valid JSON nested far deeper than any decoder's limit (msgspec's and the standard
# library's are about 1000 levels).
_DEEP_JSON = b'{"id": "deep", "choices": ' + b"[" * 10_000 + b"]" * 10_000 + b"}"
_DONE = b"data: [DONE]\n\n"

# Strings under these keys are conversation text: they feed the word count (input tokens),
# the last user text and the tool-result text.  Roles, types, ids and names are not text.
_TEXT_KEYS = frozenset(
    {"text", "content", "input", "output", "instructions", "system", "result", "thinking"}
)
_SNAKE = re.compile(r"(?<=[a-z])([A-Z])")
_GEMINI_PATH = re.compile(r"^/v1(?:beta|alpha)?/(.+):(generateContent|streamGenerateContent)$")

# status -> (OpenAI type, OpenAI code, Anthropic type, Gemini status)
_ERROR_KINDS: dict[int, tuple[str, str | None, str, str]] = {
    400: ("invalid_request_error", None, "invalid_request_error", "INVALID_ARGUMENT"),
    401: ("invalid_request_error", "invalid_api_key", "authentication_error", "UNAUTHENTICATED"),
    403: ("permission_error", None, "permission_error", "PERMISSION_DENIED"),
    404: ("invalid_request_error", "model_not_found", "not_found_error", "NOT_FOUND"),
    408: ("timeout", None, "timeout_error", "DEADLINE_EXCEEDED"),
    413: ("invalid_request_error", None, "request_too_large", "INVALID_ARGUMENT"),
    429: ("requests", "rate_limit_exceeded", "rate_limit_error", "RESOURCE_EXHAUSTED"),
    500: ("server_error", None, "api_error", "INTERNAL"),
    502: ("server_error", None, "api_error", "UNAVAILABLE"),
    503: ("server_error", None, "api_error", "UNAVAILABLE"),
    504: ("timeout", None, "timeout_error", "DEADLINE_EXCEEDED"),
    529: ("server_error", None, "overloaded_error", "UNAVAILABLE"),
}
_CLIENT_ERROR = ("invalid_request_error", None, "invalid_request_error", "INVALID_ARGUMENT")
_SERVER_ERROR = ("server_error", None, "api_error", "INTERNAL")


class Fault(msgspec.Struct, kw_only=True):
    """What to do to the requests it matches (all given criteria must match).

    ``status`` answers with an HTTP error in the protocol's shape, unless
    ``error_event_after`` is set: then the stream starts with 200 and ``status``,
    ``message`` and ``error_type`` describe the in-band error event.  The stream-shaped
    faults (delays after headers, stall, eof, error event, malformed SSE) are ignored on
    non-streamed requests.  ``event_delay`` is a pause before every event after the first
    (an injected error or ending included), so each arrives in a read of its own.
    ``reset``, ``malformed_json``, ``deep_json``, ``malformed_sse`` and ``oversized_event``
    on a stream happen after ``eof_after`` events (default 1) and end the stream there.
    ``deep_json`` is valid JSON nested 10,000 levels deep: the plain body (the error body with
    ``status``) or, on a stream, the last event.  ``oversized_event`` is the size in bytes of a ``data:`` line that
    never ends, sent in 64 KiB pieces.  ``invalid_utf8`` puts bytes that are not UTF-8 in
    the reply text (every event of a stream, or the plain body).  ``not_an_object`` is valid
    JSON that is not an object (``[]``): the plain body or, on a stream, the last event.
    """

    status: int | None = None
    message: str | None = None
    error_type: str | None = None
    retry_after: float | None = None
    headers: dict[str, str] = {}
    body_retry_delay: str | None = None
    header_delay: float = 0
    first_event_delay: float = 0
    event_delay: float = 0
    stall_after: int | None = None
    eof_after: int | None = None
    error_event_after: int | None = None
    malformed_json: bool = False
    deep_json: bool = False
    not_an_object: bool = False
    malformed_sse: bool = False
    oversized_event: int | None = None
    invalid_utf8: bool = False
    reset: bool = False
    model: str | None = None
    key: str | None = None
    protocol: str | None = None
    path: str | None = None  # the request's path; a model listing's faults must name it
    times: int | None = 1


class RecordedRequest(msgspec.Struct, kw_only=True):
    protocol: str | None  # None for /v1/models and unknown routes
    method: str
    path: str
    query: str
    headers: dict[str, str]
    body: Any  # the decoded JSON body, None when absent or invalid
    raw: bytes
    key: str | None
    model: str | None
    stream: bool
    time: float  # time.monotonic() when the body had been read
    # The path as it was on the request line, percent-escapes and all (``path`` is decoded).
    raw_path: bytes = b""


class ClosedStream(msgspec.Struct, kw_only=True):
    """One per streamed request that was not answered with an HTTP error.

    ``reason``: ``completed``, ``client_disconnected`` (seen on ``receive()`` or as a
    failing ``send``; a stalled stream ends this way too), ``faulted`` (eof, error event,
    malformed data) or ``reset``.  ``events`` counts the regular events sent, not the
    injected error or garbage.
    """

    protocol: str
    model: str | None
    key: str | None
    reason: str
    events: int
    time: float  # time.monotonic() when the end was observed


class _Call(msgspec.Struct):
    id: str
    name: str
    args: dict[str, Any]
    arguments: str  # args as JSON text, the way OpenAI and Anthropic stream it


class _Usage(msgspec.Struct):
    input: int  # including cached
    cached: int
    output: int  # including reasoning
    reasoning: int
    cost: float | None = None  # OpenRouter-style usage.cost (USD), when the mock reports one


class _Reply(msgspec.Struct):
    """What to answer, protocol-neutral; each protocol renders it as a body or events."""

    id: str
    n: int  # the request number, for item ids
    model: str
    created: int
    reasoning: str | None
    signature: str | None
    text: str | None
    calls: list[_Call]
    usage: _Usage
    text_pieces: list[str]
    reasoning_pieces: list[str]
    include_usage: bool
    encrypted: bool = False  # Responses: encrypted_content asked for


class _Request(msgspec.Struct):
    """What the reply is derived from, read from any of the four request shapes."""

    user_text: str = ""
    tool_result: str | None = None
    tools: list[tuple[str, dict[str, Any]]] = []
    reasoning: bool = False
    words: int = 0
    include_usage: bool = False
    tool_rounds: int = 0  # tool results already in the conversation (one per step)
    sign: bool = False  # a thought signature even without reasoning asked for (Gemini 3)
    encrypted: bool = False  # Responses include: reasoning.encrypted_content
    stateless: bool = False  # Responses store: false


class _Armed(msgspec.Struct):
    fault: Fault
    remaining: int | None  # uses left; None: every matching request


class _Failure(msgspec.Struct):
    status: int
    message: str
    error_type: str | None
    body_retry_delay: str | None


class _ConnectionReset(Exception):
    """Raised mid-body so the server drops the connection (uvicorn logs it and closes)."""


class MockUpstream:
    """The mock provider, an ASGI app.  ``latency`` sleeps before every answer,
    ``chunk_delay`` between stream events; ``stream_events`` splits the reply text into
    exactly that many content events (otherwise one per word); ``text`` replaces the plain
    reply text; ``tool_steps`` is how many rounds of tool calls a conversation gets before
    the mock answers in text (a sequential tool loop); ``reported_cost`` (USD) makes the
    OpenAI-shaped usage objects carry ``cost``, as OpenRouter's do (Chat Completions and
    Responses).

    Reasoning payloads are checked like the real services check them (``reasoning.py``):
    Anthropic thinking blocks when thinking is on, Gemini thought signatures for Gemini 3
    models (a model name containing ``gemini-3``), Responses encrypted reasoning items with
    ``store: false``.  A violation is the provider's 400.  ``models`` is what the model
    listings list.

    ``authority`` (a ``TokenAuthority``) serves the token endpoints and makes every model
    request and model listing carry one of its valid access tokens: anything else is the
    protocol's 401.  A fault armed with a token endpoint's ``path`` and ``malformed_json``
    or ``deep_json`` makes that endpoint answer 200 with such a body instead."""

    def __init__(
        self,
        *,
        latency: float = 0.0,
        chunk_delay: float = 0.0,
        stream_events: int | None = None,
        text: str | None = None,
        tool_steps: int = 1,
        reported_cost: float | None = None,
        authority: TokenAuthority | None = None,
        models: tuple[str, ...] = MODELS,
    ) -> None:
        if stream_events is not None and stream_events < 1:
            raise ValueError("stream_events must be at least 1")
        if tool_steps < 1:
            raise ValueError("tool_steps must be at least 1")
        self.latency = latency
        self.chunk_delay = chunk_delay
        self.stream_events = stream_events
        self.text = text
        self.tool_steps = tool_steps
        self.issued = Issued()
        self.reported_cost = reported_cost
        self.authority = authority
        self.models = tuple(models)
        self.requests: list[RecordedRequest] = []
        self.connections: set[tuple[str, int]] = set()
        self.closed_streams: list[ClosedStream] = []
        self.open_streams = 0
        self._faults: list[_Armed] = []
        self._counter = itertools.count(1)

    def add_fault(self, fault: Fault) -> None:
        if fault.protocol is not None and fault.protocol not in PROTOCOLS:
            raise ValueError(f"unknown protocol {fault.protocol!r}; expected one of {PROTOCOLS}")
        self._faults.append(_Armed(fault, fault.times))

    def clear(self) -> None:
        self._faults.clear()
        self.issued.clear()
        self.requests.clear()
        self.connections.clear()
        self.closed_streams.clear()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await _lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        client = scope.get("client")
        if client:
            self.connections.add((client[0], client[1]))

        raw = await _read_body(receive)
        method, path = scope["method"], scope["path"]
        query = scope["query_string"].decode("latin-1")
        headers: dict[str, str] = {}
        for name, value in scope["headers"]:
            k, v = name.decode("latin-1").lower(), value.decode("latin-1")
            headers[k] = f"{headers[k]}, {v}" if k in headers else v
        key = _api_key(headers, query)
        protocol, model, stream = _route(method, path, query)
        try:
            body = _decode.decode(raw) if raw else None
        except (msgspec.DecodeError, RecursionError):
            body = None
        if protocol in ("openai_chat", "openai_responses", "anthropic_messages") and isinstance(
            body, dict
        ):
            model = body.get("model") if isinstance(body.get("model"), str) else None
            stream = body.get("stream") is True
        self.requests.append(
            RecordedRequest(
                protocol=protocol,
                method=method,
                path=path,
                query=query,
                headers=headers,
                body=body,
                raw=raw,
                key=key,
                model=model,
                stream=stream,
                time=time.monotonic(),
                # Some servers (httpx's ASGI transport) put the query in raw_path too.
                raw_path=(scope.get("raw_path") or path.encode()).partition(b"?")[0],
            )
        )

        authority = self.authority
        if authority is not None and authority.handles(method, path):
            if authority.latency:
                await anyio.sleep(authority.latency)
            # A token endpoint is faulted only by name, and only with a body that is not
            # the JSON it should be (the endpoint does nothing else then).
            fault = self._match(None, None, None, path)
            if fault is not None and fault.malformed_json:
                status, answer = 200, _BROKEN_JSON
            elif fault is not None and fault.deep_json:
                status, answer = 200, _DEEP_JSON
            else:
                status, answer = authority.answer(method, path, headers, raw)
            await _send_bytes(send, status, _JSON_HEADERS, answer)
            return
        if protocol is None:
            if method == "GET" and path in LISTING_PATHS:
                await self._listing(path, query, headers, key, send)
            else:
                await _send_bytes(send, 404, _JSON_HEADERS, _not_found(path))
            return
        codec = _CODECS[protocol]
        if authority is not None and not authority.valid(key):
            failure = _Failure(401, "Invalid or expired access token.", None, None)
            await _send_bytes(send, 401, _JSON_HEADERS, codec.error_body(failure))
            return
        try:
            if not isinstance(body, dict):
                raise TypeError("the request body is not a JSON object")
            request = codec.parse(body)
        except (AttributeError, KeyError, TypeError, ValueError) as exc:
            failure = _Failure(400, f"Invalid request: {exc}", None, None)
            await _send_bytes(send, 400, _JSON_HEADERS, codec.error_body(failure))
            return

        complaint = self._check(protocol, body, model, key, request)
        if complaint is not None:
            code, _, message = complaint.rpartition("|")
            failure = _Failure(400, message, code or None, None)
            await _send_bytes(send, 400, _JSON_HEADERS, codec.error_body(failure))
            return
        fault = self._match(protocol, model, key, path)
        reply = self._reply(codec, request, model or "mock-model")
        self._remember(protocol, reply, request, key)
        if not stream or (fault and fault.status is not None and fault.error_event_after is None):
            if self.latency or (fault and fault.header_delay):
                if await _guarded(receive, self._answer(codec, reply, fault, send)):
                    # A plain request abandoned while the mock was still answering.
                    self.closed_streams.append(
                        ClosedStream(
                            protocol=protocol,
                            model=model,
                            key=key,
                            reason="client_disconnected",
                            events=0,
                            time=time.monotonic(),
                        )
                    )
            else:
                await self._answer(codec, reply, fault, send)
            return
        if protocol == "gemini" and "sse" not in parse_qs(query).get("alt", ()):
            # Without alt=sse Gemini streams one JSON array; the SDKs always ask for SSE.
            await _send_bytes(send, 200, _JSON_HEADERS, codec.json_array(reply))
            return
        await self._stream(codec, reply, fault, receive, send, protocol, model, key)

    def _check(
        self,
        protocol: str,
        body: dict[str, Any],
        model: str | None,
        key: str | None,
        request: _Request,
    ) -> str | None:
        """The provider's complaint about reasoning payloads sent back, if any."""
        if protocol == "anthropic_messages":
            return check_anthropic(body, self.issued)
        if protocol == "gemini" and _gemini_3(model):
            request.sign = True
            return check_gemini(body, self.issued)
        if protocol == "openai_responses" and request.stateless:
            return check_responses(body, key, self.issued)
        return None

    def _remember(self, protocol: str, reply: _Reply, request: _Request, key: str | None) -> None:
        signature = reply.signature
        if signature is None:
            return
        issued = self.issued
        if protocol == "anthropic_messages" and reply.reasoning is not None:
            issued.thinking[signature] = reply.reasoning
        elif protocol == "gemini":
            issued.gemini_signatures.add(_gemini_signature(signature))
            if reply.calls:
                calls = [(c.name, c.args) for c in reply.calls]
                issued.gemini_steps.add(gemini_step(request.user_text, calls))
        elif protocol == "openai_responses" and request.encrypted:
            issued.encrypted[signature] = key
            if request.stateless:
                for call in reply.calls:
                    issued.responses_calls[call.id] = (f"rs_mock{reply.n}", signature, key)

    async def _listing(
        self, path: str, query: str, headers: dict[str, str], key: str | None, send: Send
    ) -> None:
        shape = listing_shape(path, headers, query)
        fault = self._match(None, None, key, path)
        if fault is not None and fault.header_delay:
            await anyio.sleep(fault.header_delay)
        if fault is not None and fault.status is not None:
            status, body = listing_error(shape, fault.status, fault.message or "mock fault")
        elif self.authority is not None and not self.authority.valid(key):
            status, body = listing_error(shape, 401, "Invalid or expired access token.")
        else:
            status, body = listing(self.models, shape, query)
        if fault is not None and fault.malformed_json:
            raw = _BROKEN_JSON
        elif fault is not None and fault.deep_json:
            raw = _DEEP_JSON
        else:
            raw = _json.encode(body)
        await _send_bytes(send, status, _JSON_HEADERS, raw)

    def _match(
        self, protocol: str | None, model: str | None, key: str | None, path: str
    ) -> Fault | None:
        for armed in self._faults:
            fault = armed.fault
            if (
                (fault.protocol is None or fault.protocol == protocol)
                and (fault.model is None or fault.model == model)
                and (fault.key is None or fault.key == key)
                # A listing is faulted only by name: a fault armed for generation requests
                # must not be used up by a models fetch.
                and (fault.path == path if protocol is None else fault.path in (None, path))
            ):
                if armed.remaining is not None:
                    armed.remaining -= 1
                    if armed.remaining <= 0:
                        self._faults.remove(armed)
                return fault
        return None

    def _reply(self, codec: _Codec, request: _Request, model: str) -> _Reply:
        n = next(self._counter)
        reasoning = text = signature = None
        calls: list[_Call] = []
        if request.reasoning:
            reasoning = f"The user said: {request.user_text}. I will answer briefly."
            signature = "mock-sig-" + hashlib.sha256(reasoning.encode()).hexdigest()[:16]
        elif request.sign:
            signed = f"signed: {request.user_text}"
            signature = "mock-sig-" + hashlib.sha256(signed.encode()).hexdigest()[:16]
        if request.tool_result is not None and (
            request.tool_rounds >= self.tool_steps or not request.tools
        ):
            text = f"Tool said: {request.tool_result}"
        elif request.tools:
            for i, (name, schema) in enumerate(request.tools[:2]):
                args = _arguments(schema)
                calls.append(_Call(codec.call_id(n, i), name, args, _json.encode(args).decode()))
        else:
            text = (
                self.text
                if self.text is not None
                else f"Hello from mock {codec.name}! You said: {request.user_text}"
            )
        reasoning_words = len(reasoning.split()) if reasoning else 0
        cached = 10 if request.reasoning else 0
        usage = _Usage(
            input=request.words + 10,
            cached=cached,
            output=(len(text.split()) if text else 0) + reasoning_words + 10 * len(calls),
            reasoning=reasoning_words,
            cost=self.reported_cost,
        )
        return _Reply(
            id=codec.response_id(n),
            n=n,
            model=model,
            created=int(time.time()),
            reasoning=reasoning,
            signature=signature,
            text=text,
            calls=calls,
            usage=usage,
            text_pieces=_pieces(text, self.stream_events) if text is not None else [],
            reasoning_pieces=_pieces(reasoning, None) if reasoning else [],
            include_usage=request.include_usage,
            encrypted=request.encrypted,
        )

    async def _answer(self, codec: _Codec, reply: _Reply, fault: Fault | None, send: Send) -> None:
        if self.latency:
            await anyio.sleep(self.latency)
        if fault is None:
            await _send_bytes(send, 200, _JSON_HEADERS, codec.body(reply))
            return
        if fault.header_delay:
            await anyio.sleep(fault.header_delay)
        extra = _fault_headers(fault)
        if fault.status is not None:
            body = _DEEP_JSON if fault.deep_json else codec.error_body(_failure(fault))
            await _send_bytes(send, fault.status, _JSON_HEADERS + extra, body)
        elif fault.reset:
            body = codec.body(reply)
            headers = [*_JSON_HEADERS, *extra, (b"content-length", str(len(body)).encode())]
            await send({"type": "http.response.start", "status": 200, "headers": headers})
            await send(
                {"type": "http.response.body", "body": body[: len(body) // 2], "more_body": True}
            )
            raise _ConnectionReset("mock fault: connection reset mid-body")
        else:
            if fault.malformed_json:
                body = _BROKEN_JSON
            elif fault.deep_json:
                body = _DEEP_JSON
            elif fault.not_an_object:
                body = b"[]"
            else:
                body = codec.body(reply)
            if fault.invalid_utf8:
                body = _break_utf8(body)
            await _send_bytes(send, 200, _JSON_HEADERS + extra, body)

    async def _stream(
        self,
        codec: _Codec,
        reply: _Reply,
        fault: Fault | None,
        receive: Receive,
        send: Send,
        protocol: str,
        model: str | None,
        key: str | None,
    ) -> None:
        events = codec.events(reply)
        if fault and fault.invalid_utf8:
            events = [_break_utf8(event) for event in events]
        reason, sent = "client_disconnected", 0
        end_at = fault.eof_after if fault and fault.eof_after is not None else 1

        async def respond() -> None:
            nonlocal reason, sent
            if self.latency:
                await anyio.sleep(self.latency)
            if fault and fault.header_delay:
                await anyio.sleep(fault.header_delay)
            headers = _SSE_HEADERS + _fault_headers(fault) if fault else _SSE_HEADERS
            await send({"type": "http.response.start", "status": 200, "headers": headers})
            for i, event in enumerate(events):
                if i == 0:
                    if fault and fault.first_event_delay:
                        await anyio.sleep(fault.first_event_delay)
                elif fault and fault.event_delay:
                    await anyio.sleep(fault.event_delay)
                elif self.chunk_delay:
                    await anyio.sleep(self.chunk_delay)
                if fault:
                    if fault.stall_after == i:
                        await anyio.sleep_forever()
                    ending = _stream_fault_at(fault, i, end_at)
                    if ending is not None:
                        if ending == "reset":
                            reason = "reset"
                            return
                        if ending == "oversized":
                            assert fault.oversized_event is not None
                            await _send_oversized(send, fault.oversized_event)
                            ending = b""
                        if ending:
                            chunk = (
                                codec.error_event(_failure(fault), reply, i)
                                if ending == "error"
                                else ending
                            )
                            await send(
                                {"type": "http.response.body", "body": chunk, "more_body": True}
                            )
                        reason = "faulted"
                        await send({"type": "http.response.body", "body": b"", "more_body": False})
                        return
                await send({"type": "http.response.body", "body": event, "more_body": True})
                sent += 1
            # Decided before the last send: a disconnect noticed after it changes nothing.
            reason = "completed"
            await send({"type": "http.response.body", "body": b"", "more_body": False})

        self.open_streams += 1
        try:
            try:
                await _guarded(receive, respond())
            except OSError:
                reason = "client_disconnected"
        finally:
            self.open_streams -= 1
            self.closed_streams.append(
                ClosedStream(
                    protocol=protocol,
                    model=model,
                    key=key,
                    reason=reason,
                    events=sent,
                    time=time.monotonic(),
                )
            )
        if reason == "reset":
            raise _ConnectionReset("mock fault: connection reset mid-stream")


def _gemini_3(model: str | None) -> bool:
    return model is not None and "gemini-3" in model


def _gemini_signature(signature: str) -> str:
    # thoughtSignature is bytes in Gemini's proto: base64 on the JSON wire.
    return base64.b64encode(signature.encode()).decode()


def _rounds(flags: list[bool]) -> int:
    """How many runs of consecutive true values: tool-result turns in a conversation."""
    return sum(1 for i, flag in enumerate(flags) if flag and (i == 0 or not flags[i - 1]))


def _stream_fault_at(fault: Fault, i: int, end_at: int) -> bytes | str | None:
    """How the stream ends before event ``i``: None (it goes on), "reset", "error" or the
    bytes to send last (b"" for a clean premature EOF)."""
    if fault.error_event_after == i:
        return "error"
    if i != end_at:
        return None
    if fault.reset:
        return "reset"
    if fault.oversized_event is not None:
        return "oversized"
    if fault.malformed_json:
        return b"data: " + _BROKEN_JSON + b"\n\n"
    if fault.deep_json:
        return b"data: " + _DEEP_JSON + b"\n\n"
    if fault.not_an_object:
        return b"data: []\n\n"
    if fault.malformed_sse:
        return _GARBAGE
    if fault.eof_after is not None:
        return b""
    return None


def _break_utf8(body: bytes) -> bytes:
    # \xff never occurs in UTF-8; the reply text always holds "mock".
    return body.replace(b"mock", b"mo\xff\xfeck")


async def _send_oversized(send: Send, size: int) -> None:
    """A ``data:`` line of ``size`` bytes with no line end (the way a broken proxy or a
    runaway upstream sends one), in 64 KiB pieces."""
    piece = b"x" * 65536
    await send({"type": "http.response.body", "body": b"data: ", "more_body": True})
    left = size
    while left > 0:
        await send({"type": "http.response.body", "body": piece[:left], "more_body": True})
        left -= len(piece)


async def _guarded(receive: Receive, responder: Awaitable[None]) -> bool:
    """Run ``responder`` while watching for the client going away; cancel it when it does.
    True when the client went away first."""
    error: Exception | None = None
    gone = False
    async with anyio.create_task_group() as tg:

        async def watch() -> None:
            nonlocal gone
            while (await receive())["type"] != "http.disconnect":
                pass
            gone = True
            tg.cancel_scope.cancel()

        tg.start_soon(watch)
        try:
            await responder
        except Exception as exc:
            error = exc  # re-raised as itself below, not wrapped in an ExceptionGroup
        tg.cancel_scope.cancel()
    if error is not None:
        raise error
    return gone


async def _lifespan(receive: Receive, send: Send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


async def _read_body(receive: Receive) -> bytes:
    chunks = []
    while True:
        message = await receive()
        if message["type"] != "http.request":
            break
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            break
    return b"".join(chunks)


async def _send_bytes(
    send: Send, status: int, headers: list[tuple[bytes, bytes]], body: bytes
) -> None:
    headers = [*headers, (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def _route(method: str, path: str, query: str) -> tuple[str | None, str | None, bool]:
    """(protocol, model, stream) from the request line; OpenAI and Anthropic name the
    model and ask for a stream in the body."""
    if method == "POST":
        if path == "/v1/chat/completions":
            return "openai_chat", None, False
        if path == "/v1/responses":
            return "openai_responses", None, False
        if path == "/v1/messages":
            return "anthropic_messages", None, False
        if match := _GEMINI_PATH.match(path):
            resource = match.group(1)
            model = resource.removeprefix("models/")
            return "gemini", model, match.group(2) == "streamGenerateContent"
    return None, None, False


def _api_key(headers: dict[str, str], query: str) -> str | None:
    auth = headers.get("authorization", "")
    if auth[:7].lower() == "bearer ":
        return auth[7:].strip()
    for name in ("x-api-key", "x-goog-api-key"):
        if name in headers:
            return headers[name]
    if "key=" in query:
        keys = parse_qs(query).get("key")
        if keys:
            return keys[0]
    return None


def _not_found(path: str) -> bytes:
    message = f"No route for {path}"
    return _json.encode({"error": {"message": message, "type": "not_found", "code": 404}})


def _fault_headers(fault: Fault) -> list[tuple[bytes, bytes]]:
    headers = [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in fault.headers.items()]
    if fault.retry_after is not None:
        value = fault.retry_after
        text = str(int(value)) if value == int(value) else str(value)
        headers.append((b"retry-after", text.encode()))
    return headers


def _failure(fault: Fault) -> _Failure:
    status = fault.status or 500
    if fault.message is not None:
        message = fault.message
    elif status == 529:
        message = "Overloaded"
    else:
        try:
            message = HTTPStatus(status).phrase
        except ValueError:
            message = "Error"
    return _Failure(status, message, fault.error_type, fault.body_retry_delay)


def _kinds(status: int) -> tuple[str, str | None, str, str]:
    return _ERROR_KINDS.get(status) or (_CLIENT_ERROR if status < 500 else _SERVER_ERROR)


def _strings(node: Any, key: str | None, out: list[str]) -> list[str]:
    """Collect the conversation text under ``node`` (strings under ``_TEXT_KEYS``)."""
    if isinstance(node, str):
        if key in _TEXT_KEYS:
            out.append(node)
    elif isinstance(node, list):
        for item in node:
            _strings(item, key, out)
    elif isinstance(node, dict):
        for k, v in node.items():
            _strings(v, k, out)
    return out


def _text_of(node: Any, key: str = "content") -> str:
    return " ".join(_strings(node, key, []))


def _words(*nodes: tuple[str, Any]) -> int:
    return sum(len(s.split()) for key, node in nodes for s in _strings(node, key, []))


def _arguments(schema: dict[str, Any]) -> dict[str, Any]:
    """Deterministic arguments for a JSON schema's top-level properties."""
    args: dict[str, Any] = {}
    properties = schema.get("properties") if isinstance(schema, dict) else None
    for name, prop in (properties or {}).items():
        prop = prop if isinstance(prop, dict) else {}
        kind = str(prop.get("type", "string")).lower()
        if prop.get("enum"):
            args[name] = prop["enum"][0]
        elif kind == "integer":
            args[name] = 1
        elif kind == "number":
            args[name] = 1.5
        elif kind == "boolean":
            args[name] = True
        elif kind == "array":
            args[name] = []
        elif kind == "object":
            args[name] = {}
        else:
            args[name] = "Paris"
    return args


def _pieces(text: str, count: int | None) -> list[str]:
    """Stream deltas: ``count`` nearly equal slices, or one per word (spaces kept)."""
    if count is not None:
        size = len(text)
        return [text[i * size // count : (i + 1) * size // count] for i in range(count)]
    words = text.split(" ")
    pieces = [w + " " for w in words[:-1]]
    if words[-1]:
        pieces.append(words[-1])
    return pieces or [""]


def _split3(text: str) -> list[str]:
    """Tool-call argument JSON in three pieces, as providers stream it."""
    size = len(text)
    return [
        p for p in (text[: size // 3], text[size // 3 : 2 * size // 3], text[2 * size // 3 :]) if p
    ]


def _sse(data: Any, event: str | None = None) -> bytes:
    payload = b"data: " + _json.encode(data) + b"\n\n"
    return b"event: " + event.encode() + b"\n" + payload if event else payload


class _Codec:
    """One wire protocol: read a request, write a reply as a body, as events, as an error."""

    name: str
    error_event_name: str | None = None  # the SSE `event:` of the in-band error

    def parse(self, body: dict[str, Any]) -> _Request:
        raise NotImplementedError

    def response_id(self, n: int) -> str:
        raise NotImplementedError

    def call_id(self, n: int, i: int) -> str:
        return f"call_mock{n}_{i}"

    def body(self, reply: _Reply) -> bytes:
        raise NotImplementedError

    def events(self, reply: _Reply) -> list[bytes]:
        raise NotImplementedError

    def error(self, failure: _Failure) -> dict[str, Any]:
        raise NotImplementedError

    def error_body(self, failure: _Failure) -> bytes:
        return _json.encode(self.error(failure))

    def error_event(self, failure: _Failure, reply: _Reply, sequence: int) -> bytes:
        return _sse(self.error(failure), self.error_event_name)

    def json_array(self, reply: _Reply) -> bytes:
        raise NotImplementedError


def _tools_of(
    body: dict[str, Any], kind: str | None, *, nested: str | None, schema: str
) -> list[tuple[str, dict[str, Any]]]:
    """(name, parameter schema) of the declared function tools; built-in tools are skipped."""
    tools = []
    for tool in body.get("tools") or []:
        if not isinstance(tool, dict) or tool.get("type", kind) != kind:
            continue
        spec = tool.get(nested) if nested else tool
        if isinstance(spec, dict) and isinstance(spec.get("name"), str):
            tools.append((spec["name"], spec.get(schema) or {}))
    return tools


class _OpenAIError(_Codec):
    def error(self, failure: _Failure) -> dict[str, Any]:
        type_, code, _, _ = _kinds(failure.status)
        message = failure.message
        if failure.body_retry_delay:
            message = f"{message} Please try again in {failure.body_retry_delay}."
        # error_type overrides the code, which is what OpenAI clients classify on.
        code = failure.error_type or code
        return {"error": {"message": message, "type": type_, "param": None, "code": code}}


class _OpenAIChat(_OpenAIError):
    name = "openai_chat"

    def parse(self, body: dict[str, Any]) -> _Request:
        messages = [m for m in body.get("messages") or [] if isinstance(m, dict)]
        results: list[str] = []
        for message in reversed(messages):
            if message.get("role") != "tool":
                break
            results.insert(0, _text_of(message.get("content")))
        user = next((m for m in reversed(messages) if m.get("role") == "user"), {})
        options = body.get("stream_options")
        return _Request(
            user_text=_text_of(user.get("content")),
            tool_result="; ".join(results) if results else None,
            tools=_tools_of(body, "function", nested="function", schema="parameters"),
            reasoning=body.get("reasoning_effort") not in (None, "none"),
            words=_words(("messages", messages)),
            tool_rounds=_rounds([m.get("role") == "tool" for m in messages]),
            include_usage=isinstance(options, dict) and options.get("include_usage") is True,
        )

    def response_id(self, n: int) -> str:
        return f"chatcmpl-mock{n}"

    def _usage(self, usage: _Usage) -> dict[str, Any]:
        out: dict[str, Any] = {
            "prompt_tokens": usage.input,
            "completion_tokens": usage.output,
            "total_tokens": usage.input + usage.output,
            "prompt_tokens_details": {"cached_tokens": usage.cached, "audio_tokens": 0},
            "completion_tokens_details": {"reasoning_tokens": usage.reasoning, "audio_tokens": 0},
        }
        if usage.cost is not None:
            out["cost"] = usage.cost
        return out

    def body(self, reply: _Reply) -> bytes:
        message: dict[str, Any] = {"role": "assistant", "content": reply.text, "refusal": None}
        if reply.reasoning:
            message["reasoning_content"] = reply.reasoning
        if reply.calls:
            message["tool_calls"] = [
                {
                    "id": c.id,
                    "type": "function",
                    "function": {"name": c.name, "arguments": c.arguments},
                }
                for c in reply.calls
            ]
        return _json.encode(
            {
                "id": reply.id,
                "object": "chat.completion",
                "created": reply.created,
                "model": reply.model,
                "choices": [
                    {
                        "index": 0,
                        "message": message,
                        "logprobs": None,
                        "finish_reason": "tool_calls" if reply.calls else "stop",
                    }
                ],
                "usage": self._usage(reply.usage),
            }
        )

    def events(self, reply: _Reply) -> list[bytes]:
        head = {
            "id": reply.id,
            "object": "chat.completion.chunk",
            "created": reply.created,
            "model": reply.model,
        }

        def chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
            choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
            return _sse({**head, "choices": [choice]})

        events = [chunk({"role": "assistant", "content": "", "refusal": None})]
        events += [chunk({"reasoning_content": p}) for p in reply.reasoning_pieces]
        events += [chunk({"content": p}) for p in reply.text_pieces]
        for i, call in enumerate(reply.calls):
            start = {
                "index": i,
                "id": call.id,
                "type": "function",
                "function": {"name": call.name, "arguments": ""},
            }
            events.append(chunk({"tool_calls": [start]}))
            events += [
                chunk({"tool_calls": [{"index": i, "function": {"arguments": p}}]})
                for p in _split3(call.arguments)
            ]
        events.append(chunk({}, "tool_calls" if reply.calls else "stop"))
        if reply.include_usage:
            events.append(_sse({**head, "choices": [], "usage": self._usage(reply.usage)}))
        events.append(_DONE)
        return events


class _OpenAIResponses(_OpenAIError):
    name = "openai_responses"

    def parse(self, body: dict[str, Any]) -> _Request:
        items = body.get("input")
        if isinstance(items, str):
            items = [{"role": "user", "content": items}]
        items = [i for i in items or [] if isinstance(i, dict)]
        results: list[str] = []
        for item in reversed(items):
            if item.get("type") != "function_call_output":
                break
            results.insert(0, _text_of(item.get("output"), "output"))
        user: dict[str, Any] = next(
            (
                i
                for i in reversed(items)
                if i.get("role") == "user" and i.get("type", "message") == "message"
            ),
            {},
        )
        reasoning = body.get("reasoning")
        return _Request(
            user_text=_text_of(user.get("content")),
            tool_result="; ".join(results) if results else None,
            tools=_tools_of(body, "function", nested=None, schema="parameters"),
            reasoning=isinstance(reasoning, dict) and reasoning.get("effort") not in (None, "none"),
            words=_words(("input", items), ("instructions", body.get("instructions"))),
            tool_rounds=_rounds([i.get("type") == "function_call_output" for i in items]),
            encrypted="reasoning.encrypted_content" in (body.get("include") or ()),
            stateless=body.get("store") is False,
        )

    def response_id(self, n: int) -> str:
        return f"resp_mock{n}"

    def _items(self, reply: _Reply) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = []
        if reply.reasoning:
            items.append(
                {
                    "id": f"rs_mock{reply.n}",
                    "type": "reasoning",
                    "summary": [{"type": "summary_text", "text": reply.reasoning}],
                    # Only when asked for (include: reasoning.encrypted_content).
                    "encrypted_content": reply.signature if reply.encrypted else None,
                }
            )
        if reply.text is not None:
            items.append(
                {
                    "id": f"msg_mock{reply.n}",
                    "type": "message",
                    "status": "completed",
                    "role": "assistant",
                    "content": [self._part(reply.text)],
                }
            )
        for i, call in enumerate(reply.calls):
            items.append(
                {
                    "id": f"fc_mock{reply.n}_{i}",
                    "type": "function_call",
                    "status": "completed",
                    "call_id": call.id,
                    "name": call.name,
                    "arguments": call.arguments,
                }
            )
        return items

    @staticmethod
    def _part(text: str) -> dict[str, Any]:
        return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}

    def _response(
        self, reply: _Reply, status: str, output: list[dict[str, Any]] | None = None
    ) -> dict[str, Any]:
        done = status == "completed"
        usage = reply.usage
        return {
            "id": reply.id,
            "object": "response",
            "created_at": reply.created,
            "status": status,
            "error": None,
            "incomplete_details": None,
            "instructions": None,
            "model": reply.model,
            "output": output or [],
            "parallel_tool_calls": True,
            "tool_choice": "auto",
            "tools": [],
            "temperature": 1.0,
            "top_p": 1.0,
            "metadata": {},
            "text": {"format": {"type": "text"}},
            "usage": {
                "input_tokens": usage.input,
                "input_tokens_details": {"cached_tokens": usage.cached},
                "output_tokens": usage.output,
                "output_tokens_details": {"reasoning_tokens": usage.reasoning},
                "total_tokens": usage.input + usage.output,
                **({} if usage.cost is None else {"cost": usage.cost}),
            }
            if done
            else None,
        }

    def body(self, reply: _Reply) -> bytes:
        return _json.encode(self._response(reply, "completed", self._items(reply)))

    def events(self, reply: _Reply) -> list[bytes]:
        events: list[dict[str, Any]] = []

        def event(kind: str, **fields: Any) -> None:
            events.append({"type": f"response.{kind}", **fields})

        event("created", response=self._response(reply, "in_progress"))
        event("in_progress", response=self._response(reply, "in_progress"))
        items = self._items(reply)
        for index, item in enumerate(items):
            at = {"item_id": item["id"], "output_index": index}
            if item["type"] == "reasoning":
                event("output_item.added", output_index=index, item={**item, "summary": []})
                at["summary_index"] = 0
                event(
                    "reasoning_summary_part.added", **at, part={"type": "summary_text", "text": ""}
                )
                for piece in reply.reasoning_pieces:
                    event("reasoning_summary_text.delta", **at, delta=piece)
                event("reasoning_summary_text.done", **at, text=reply.reasoning)
                event("reasoning_summary_part.done", **at, part=item["summary"][0])
            elif item["type"] == "message":
                added = {**item, "status": "in_progress", "content": []}
                event("output_item.added", output_index=index, item=added)
                at["content_index"] = 0
                event("content_part.added", **at, part=self._part(""))
                for piece in reply.text_pieces:
                    event("output_text.delta", **at, delta=piece, logprobs=[])
                event("output_text.done", **at, text=reply.text, logprobs=[])
                event("content_part.done", **at, part=item["content"][0])
            else:
                added = {**item, "status": "in_progress", "arguments": ""}
                event("output_item.added", output_index=index, item=added)
                for piece in _split3(item["arguments"]):
                    event("function_call_arguments.delta", **at, delta=piece)
                arguments = item["arguments"]
                event("function_call_arguments.done", **at, name=item["name"], arguments=arguments)
            event("output_item.done", output_index=index, item=item)
        event("completed", response=self._response(reply, "completed", items))
        return [_sse({**e, "sequence_number": seq}, e["type"]) for seq, e in enumerate(events)]

    def error_event(self, failure: _Failure, reply: _Reply, sequence: int) -> bytes:
        # A failure after response.created is reported as response.failed, not a bare `error`.
        response = self._response(reply, "failed")
        error = self.error(failure)["error"]
        response["error"] = {"code": error["code"] or error["type"], "message": error["message"]}
        return _sse(
            {"type": "response.failed", "response": response, "sequence_number": sequence},
            "response.failed",
        )


class _Anthropic(_Codec):
    name = "anthropic_messages"
    error_event_name = "error"

    def parse(self, body: dict[str, Any]) -> _Request:
        messages = [m for m in body.get("messages") or [] if isinstance(m, dict)]
        last = messages[-1] if messages else {}
        content = last.get("content")
        blocks = content if isinstance(content, list) else []
        results = [
            _text_of(b.get("content"))
            for b in blocks
            if isinstance(b, dict) and b.get("type") == "tool_result"
        ]
        user_text = ""
        for message in reversed(messages):
            if message.get("role") == "user":
                content = message.get("content")
                if isinstance(content, list):
                    content = [
                        b for b in content if isinstance(b, dict) and b.get("type") == "text"
                    ]
                user_text = _text_of(content)
                if user_text:
                    break
        thinking = body.get("thinking")
        return _Request(
            user_text=user_text,
            tool_result="; ".join(results) if results else None,
            tools=_tools_of(body, "custom", nested=None, schema="input_schema"),
            reasoning=isinstance(thinking, dict)
            and thinking.get("type") in ("enabled", "adaptive"),
            words=_words(("messages", messages), ("system", body.get("system"))),
            tool_rounds=_rounds(
                [
                    m.get("role") == "user"
                    and isinstance(m.get("content"), list)
                    and any(
                        isinstance(b, dict) and b.get("type") == "tool_result" for b in m["content"]
                    )
                    for m in messages
                ]
            ),
        )

    def response_id(self, n: int) -> str:
        return f"msg_mock{n}"

    def call_id(self, n: int, i: int) -> str:
        return f"toolu_mock{n}_{i}"

    def _usage(self, usage: _Usage) -> dict[str, Any]:
        # Anthropic's input_tokens excludes the tokens read from the cache.
        return {
            "input_tokens": usage.input - usage.cached,
            "output_tokens": usage.output,
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": usage.cached,
        }

    def _blocks(self, reply: _Reply) -> list[dict[str, Any]]:
        blocks: list[dict[str, Any]] = []
        if reply.reasoning:
            blocks.append(
                {"type": "thinking", "thinking": reply.reasoning, "signature": reply.signature}
            )
        if reply.text is not None:
            blocks.append({"type": "text", "text": reply.text})
        blocks += [
            {"type": "tool_use", "id": c.id, "name": c.name, "input": c.args} for c in reply.calls
        ]
        return blocks

    def _message(
        self, reply: _Reply, content: list[dict[str, Any]], stop: str | None, usage: dict[str, Any]
    ) -> dict[str, Any]:
        return {
            "id": reply.id,
            "type": "message",
            "role": "assistant",
            "model": reply.model,
            "content": content,
            "stop_reason": stop,
            "stop_sequence": None,
            "usage": usage,
        }

    def body(self, reply: _Reply) -> bytes:
        stop = "tool_use" if reply.calls else "end_turn"
        return _json.encode(
            self._message(reply, self._blocks(reply), stop, self._usage(reply.usage))
        )

    def events(self, reply: _Reply) -> list[bytes]:
        events: list[bytes] = []

        def event(kind: str, **fields: Any) -> None:
            events.append(_sse({"type": kind, **fields}, kind))

        usage = self._usage(reply.usage)
        event(
            "message_start", message=self._message(reply, [], None, {**usage, "output_tokens": 1})
        )
        event("ping")
        for index, block in enumerate(self._blocks(reply)):
            if block["type"] == "thinking":
                start: dict[str, Any] = {"type": "thinking", "thinking": "", "signature": ""}
                deltas = [{"type": "thinking_delta", "thinking": p} for p in reply.reasoning_pieces]
                deltas.append({"type": "signature_delta", "signature": block["signature"]})
            elif block["type"] == "text":
                start = {"type": "text", "text": ""}
                deltas = [{"type": "text_delta", "text": p} for p in reply.text_pieces]
            else:
                start = {**block, "input": {}}
                arguments = _json.encode(block["input"]).decode()
                deltas = [
                    {"type": "input_json_delta", "partial_json": p} for p in _split3(arguments)
                ]
            event("content_block_start", index=index, content_block=start)
            for delta in deltas:
                event("content_block_delta", index=index, delta=delta)
            event("content_block_stop", index=index)
        stop = "tool_use" if reply.calls else "end_turn"
        event("message_delta", delta={"stop_reason": stop, "stop_sequence": None}, usage=usage)
        event("message_stop")
        return events

    def error(self, failure: _Failure) -> dict[str, Any]:
        type_ = failure.error_type or _kinds(failure.status)[2]
        return {"type": "error", "error": {"type": type_, "message": failure.message}}


def _field(node: dict[str, Any], name: str) -> Any:
    """A Gemini request field: Google's JSON mapping accepts the lowerCamelCase name and the
    proto's snake_case one, and google-genai sends some fields (include_thoughts,
    parameters_json_schema) in snake_case."""
    value = node.get(name)
    return node.get(_SNAKE.sub(r"_\1", name).lower()) if value is None else value


class _Gemini(_Codec):
    name = "gemini"

    def parse(self, body: dict[str, Any]) -> _Request:
        contents = [c for c in body.get("contents") or [] if isinstance(c, dict)]
        last_parts = (
            [p for p in (contents[-1].get("parts") or []) if isinstance(p, dict)]
            if contents
            else []
        )
        results: list[str] = []
        for part in last_parts:
            if isinstance(response := _field(part, "functionResponse"), dict):
                payload = response.get("response")
                results.append(_text_of(payload, "result") or _json.encode(payload).decode())
        user_text = ""
        for content in reversed(contents):
            if content.get("role", "user") == "user":
                user_text = _text_of(content.get("parts"))
                if user_text:
                    break
        tools = []
        for tool in body.get("tools") or []:
            for decl in _field(tool, "functionDeclarations") or []:
                schema = decl.get("parameters") or _field(decl, "parametersJsonSchema") or {}
                tools.append((decl["name"], schema))
        config = _field(_field(body, "generationConfig") or {}, "thinkingConfig") or {}
        include = _field(config, "includeThoughts")
        budget = _field(config, "thinkingBudget") or 0
        level = _field(config, "thinkingLevel")
        return _Request(
            user_text=user_text,
            tool_result="; ".join(results) if results else None,
            tools=tools,
            reasoning=include is True or budget > 0 or level not in (None, "minimal"),
            tool_rounds=_rounds(
                [
                    any(
                        isinstance(p, dict) and _field(p, "functionResponse") is not None
                        for p in c.get("parts") or []
                    )
                    for c in contents
                ]
            ),
            words=_words(("contents", contents), ("system", _field(body, "systemInstruction"))),
        )

    def response_id(self, n: int) -> str:
        return f"mock-gemini-{n}"

    def _usage(self, usage: _Usage) -> dict[str, Any]:
        # Gemini counts thoughts apart from the candidates; the total includes both.
        metadata = {
            "promptTokenCount": usage.input,
            "candidatesTokenCount": usage.output - usage.reasoning,
            "totalTokenCount": usage.input + usage.output,
        }
        if usage.cached:
            metadata["cachedContentTokenCount"] = usage.cached
        if usage.reasoning:
            metadata["thoughtsTokenCount"] = usage.reasoning
        return metadata

    def _chunk(self, reply: _Reply, parts: list[dict[str, Any]], last: bool) -> dict[str, Any]:
        candidate: dict[str, Any] = {"content": {"parts": parts, "role": "model"}, "index": 0}
        chunk: dict[str, Any] = {"candidates": [candidate]}
        if last:
            candidate["finishReason"] = "STOP"
            chunk["usageMetadata"] = self._usage(reply.usage)
        chunk["modelVersion"] = reply.model
        chunk["responseId"] = reply.id
        return chunk

    def _answer_parts(self, reply: _Reply, text_pieces: list[str]) -> list[list[dict[str, Any]]]:
        """The non-thought parts, one list per chunk; the signature rides on the first."""
        if reply.calls:
            chunks: list[list[dict[str, Any]]] = [
                [{"functionCall": {"name": c.name, "args": c.args}} for c in reply.calls]
            ]
        else:
            chunks = [[{"text": p}] for p in text_pieces]
        if reply.signature:
            chunks[0][0]["thoughtSignature"] = _gemini_signature(reply.signature)
        return chunks

    def body(self, reply: _Reply) -> bytes:
        parts = [{"text": reply.reasoning, "thought": True}] if reply.reasoning else []
        parts += self._answer_parts(reply, [reply.text or ""])[0]
        return _json.encode(self._chunk(reply, parts, True))

    def _chunks(self, reply: _Reply) -> list[dict[str, Any]]:
        groups = [[{"text": p, "thought": True}] for p in reply.reasoning_pieces]
        groups += self._answer_parts(reply, reply.text_pieces)
        return [self._chunk(reply, parts, i == len(groups) - 1) for i, parts in enumerate(groups)]

    def events(self, reply: _Reply) -> list[bytes]:
        return [_sse(chunk) for chunk in self._chunks(reply)]

    def json_array(self, reply: _Reply) -> bytes:
        return _json.encode(self._chunks(reply))

    def error(self, failure: _Failure) -> dict[str, Any]:
        details = []
        if failure.body_retry_delay:
            details.append(
                {
                    "@type": "type.googleapis.com/google.rpc.RetryInfo",
                    "retryDelay": failure.body_retry_delay,
                }
            )
        status = failure.error_type or _kinds(failure.status)[3]
        return {
            "error": {
                "code": failure.status,
                "message": failure.message,
                "status": status,
                "details": details,
            }
        }


_CODECS: dict[str, _Codec] = {
    codec.name: codec for codec in (_OpenAIChat(), _OpenAIResponses(), _Anthropic(), _Gemini())
}


class _InProcessTransport(httpx.ASGITransport):
    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        try:
            return await super().handle_async_request(request)
        except _ConnectionReset as exc:
            raise httpx.RemoteProtocolError(str(exc), request=request) from exc


def mock_transport(app: MockUpstream | None = None) -> httpx.AsyncBaseTransport:
    """An httpx transport that calls the mock in-process (the ``mock://`` provider preset).

    httpx's ASGI transport hands over a response only once the app has finished, so streams
    arrive whole and stalls never end; use a served mock to test timing.  ``reset`` surfaces
    as ``httpx.RemoteProtocolError``, as it would over a socket.
    """
    return _InProcessTransport(app=app or MockUpstream())


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m asgi_rotator.mock",
        description="Serve the mock provider upstream (OpenAI, Anthropic, Gemini) with uvicorn.",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9999)
    parser.add_argument("--latency", type=float, default=0.0, help="seconds before every answer")
    parser.add_argument(
        "--chunk-delay", type=float, default=0.0, help="seconds between stream events"
    )
    parser.add_argument("--stream-events", type=int, default=None, help="content events per stream")
    parser.add_argument("--text", default=None, help="the plain reply text")
    parser.add_argument(
        "--tool-steps", type=int, default=1, help="rounds of tool calls before a text answer"
    )
    parser.add_argument(
        "--backends",
        action="store_true",
        help="also emulate the presets' backends under /claude_code, /codex, /copilot, "
        "/gemini_cli and /antigravity (docs/providers.md)",
    )
    args = parser.parse_args(argv)

    import uvicorn

    app: Any = MockUpstream(
        latency=args.latency,
        chunk_delay=args.chunk_delay,
        stream_events=args.stream_events,
        text=args.text,
        tool_steps=args.tool_steps,
    )
    if args.backends:
        from .backends import MockBackends

        app = MockBackends(app)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning", access_log=False)


if __name__ == "__main__":
    main()
