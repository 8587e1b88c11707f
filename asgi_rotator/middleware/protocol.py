"""``ProtocolNegotiation``: which protocol the client speaks, its body parsed and validated
once, and every answer (errors included) in that protocol.

Where it sits: the outermost of the request-shaping layers, under Tracing and anything that
must see every request first (``InboundKeys``, CORS), above ``ResponsesState``, the routing
layers and dispatch.  It must wrap them all, because it is what turns their failures (and
anything a foreign app below answers) into errors the client's SDK understands.  Alone
around a foreign ASGI app it works the same: it makes the exchange, and the foreign app gets
the body from ``exchange.replay()``.

Deliberate choices:

* Detection is ``routes.detect_protocol``, shared with dispatch so both agree: the route
  decides for every generation endpoint; headers decide only where the route does not
  (``/v1/models``, unknown paths): ``anthropic-version`` or ``x-api-key`` for Anthropic,
  ``x-goog-api-key``, ``?key=`` or ``/v1beta`` for Gemini, OpenAI otherwise.  Paths are
  matched below the mount point (``root_path``), so the gateway may be mounted at any prefix.
* Refusals come before reading: unknown route (404), method (405, with ``Allow``), content
  type (415), a ``content-length`` over ``max_body`` (413); a body that turns out larger
  while it is read is refused too (413).  The route table is ``routes.match_route``: mount
  this layer where the gateway is mounted, not around a host app with routes of its own.
* JSON (``application/json``, ``*+json``) is accepted, and so are a missing content type
  and ``application/x-www-form-urlencoded``, because that is what ``curl -d`` sends unless
  told otherwise: the body is still read as JSON.  Anything else (``text/plain``,
  ``multipart/*``) is refused with 415.
* One parse: ``answer.parse_request_body`` with the client's codec (msgspec decode, then
  the codec's validation, which names the field: ``messages[2].role: unknown role``).  The
  unified request goes on the exchange and inner layers never read the body again.  A
  request refused here reaches no inner layer and no provider.
* Upstream negotiation is not done here, on purpose: the provider is only known per attempt
  (the fallback layer below picks it), so the policy, ``Provider.protocol_for`` (the
  client's own protocol when the provider speaks it, else the provider's first), is applied
  by dispatch on each attempt and recorded there (``exchange.current.upstream_protocol``,
  ``Attempt.protocol``, the ``dispatch.request`` pass).  One place, and dispatch alone
  behaves the same.  What this layer contributes is an authoritative ``exchange.protocol``.
* Model listings are served by dispatch, which holds the providers; it shapes them by the
  protocol this layer detected (or by the same detection when it runs alone).
* Errors from below: a response whose start carries the ``ERROR`` twin was rendered by one
  of our layers in the client's protocol and passes untouched.  Any other error response
  (a foreign app's bare 500 text, FastAPI's ``{"detail": ...}``) is held, classified by its
  status and re-rendered in the client's protocol: its message is kept when the body is
  JSON, and replaced by the status phrase when it is not (that is where stack traces live).
  An exception before commit becomes the protocol's error response (500, with the request
  id; the traceback goes to the log only).  After commit, on an SSE response, it becomes
  the protocol's in-band error event and a clean end, rendered by the client's stream
  (``exchange.stream``, noted by the innermost layer that saw the stream begin, or here
  around a foreign app), so a Responses client gets ``response.failed`` with the id it
  already has and numbering that continues its own.  A plain body cut mid-way has no clean end: the exception goes on
  to the server, which aborts the connection so the client cannot mistake it for whole.
"""

from __future__ import annotations

from collections.abc import Awaitable
from http import HTTPStatus
from typing import Any

import msgspec

from .._types import App, Message, Receive, Scope, Send
from ..answer import ClientStream, is_event_stream, parse_request_body, send_error
from ..errors import GatewayError, classify
from ..exchange import DEFAULT_MAX_BODY, ERROR, EVENT, SCOPE_KEY, Exchange
from ..protocols import get_codec
from ..redaction import redacting_logger
from ..routes import Route, detect_protocol, match_route, route_path

__all__ = ["ProtocolNegotiation"]


logger = redacting_logger("asgi_rotator.protocol")

_JSON_TYPES = frozenset({b"", b"application/json", b"application/x-www-form-urlencoded"})
# A foreign error body is read up to this size to find its message; the rest is dropped.
_ERROR_BODY_LIMIT = 64 * 1024
_MESSAGE_LIMIT = 1000
# Headers that describe the body being replaced (retry-after is re-derived from the error).
_BODY_HEADERS = frozenset(
    {b"content-type", b"content-length", b"content-encoding", b"transfer-encoding", b"retry-after"}
)
_json_decode = msgspec.json.decode


class ProtocolNegotiation:
    """``max_body``: the largest request body accepted, in bytes (413 above it)."""

    def __init__(self, app: App, *, max_body: int = DEFAULT_MAX_BODY) -> None:
        if isinstance(max_body, bool) or not isinstance(max_body, int) or max_body < 1:
            raise ValueError(f"max_body must be a positive number of bytes, got {max_body!r}")
        self.app = app
        self.max_body = max_body

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        made = SCOPE_KEY not in scope
        try:
            route = match_route(route_path(scope))
            protocol = detect_protocol(scope, route)
            if route is None:
                error = GatewayError("not_found", f"no endpoint {scope['method']} {scope['path']}")
                await _reject(send, _bare_exchange(scope, receive), protocol, error)
                return
            refusal = self._refusal(scope, route)
            if refusal is not None:
                error, headers = refusal
                await _reject(send, _bare_exchange(scope, receive), protocol, error, headers)
                return
            try:
                exchange = await Exchange.of(scope, receive, max_body=self.max_body)
            except GatewayError as too_large:  # over the limit, found while reading
                await _reject(send, _bare_exchange(scope, receive), protocol, too_large)
                return
            exchange.protocol = protocol
            if exchange.recording:
                exchange.record("protocol.detect", protocol=protocol, endpoint=route.endpoint)
            if len(exchange.body) > self.max_body:  # read by an outer layer with a larger limit
                await _reject(send, exchange, protocol, _too_large(self.max_body))
                return
            if route.endpoint == "generate" and exchange.request is None:
                invalid = _parse(exchange, protocol, route)
                if invalid is not None:
                    await _reject(send, exchange, protocol, invalid)
                    return
            request = exchange.request
            if request is not None and request.stream:
                # A framing other than SSE, when the client asked for one (Gemini without
                # alt=sse): its codec says so, and everything below still speaks SSE.
                framing = get_codec(protocol).stream_framing(scope)
                if framing is not None:
                    send = framing(send)
            responder = _Responder(exchange, protocol, send)
            try:
                await self.app(scope, exchange.replay(), responder.send)
            except Exception as exc:
                if not await responder.fail(exc):
                    raise
                return
            await responder.finish()
        finally:
            if made:
                # The exchange was made here: on the way out it lets go of the scope, so
                # the request is freed by reference counting (Exchange.detach).
                made_here = scope.get(SCOPE_KEY)
                if made_here is not None:
                    made_here.detach()

    def _refusal(
        self, scope: Scope, route: Route
    ) -> tuple[GatewayError, list[tuple[bytes, bytes]]] | None:
        """What is refused before the body is read: method, content type, announced size."""
        method = scope["method"]
        if method not in route.allowed:
            allowed = ", ".join(route.allowed)
            error = GatewayError(
                "bad_request",
                f"method {method} is not allowed on {scope['path']} (allowed: {allowed})",
                status=405,
            )
            return error, [(b"allow", allowed.encode())]
        if route.endpoint != "generate":
            return None
        content_type = length = None
        for name, value in scope["headers"]:
            if name == b"content-type":
                content_type = value
            elif name == b"content-length":
                length = value
        if content_type is not None and content_type not in _JSON_TYPES:  # else plain JSON
            media = content_type.split(b";", 1)[0].strip().lower()
            if media not in _JSON_TYPES and not media.endswith(b"+json"):
                shown = content_type.decode("latin-1")[:100]
                error = GatewayError(
                    "bad_request",
                    f"unsupported content type {shown!r}; send the body as application/json",
                    status=415,
                )
                return error, []
        if length is not None and length.isdigit() and int(length) > self.max_body:
            return _too_large(self.max_body), []
        return None


class _Responder:
    """The client's side of one call: passes the inner app's response on, and makes sure
    what reaches the client is a well-formed answer in its protocol."""

    __slots__ = (
        "client_gone",
        "ended",
        "exchange",
        "held",
        "held_body",
        "held_size",
        "own_stream",
        "protocol",
        "send_client",
        "sse",
        "started",
        "stream_before",
    )

    def __init__(self, exchange: Exchange, protocol: str, send: Send) -> None:
        self.exchange = exchange
        self.protocol = protocol
        self.send_client = send
        self.started = False  # http.response.start went to the client
        self.ended = False  # the final body message went to the client
        self.sse = False
        self.client_gone = False
        self.held: Message | None = None  # a foreign error response's start, to be replaced
        self.held_body: list[bytes] | None = None  # a held error response's body
        self.held_size = 0
        # The client's stream is opened by the innermost layer that sees it begin; when no
        # layer below does (a foreign app), this one opens it and notes what goes out.
        self.stream_before = exchange.stream
        self.own_stream: ClientStream | None = None

    def send(self, message: Message) -> Awaitable[None]:
        """The inner app's ``send``.  Not a coroutine: a body message of a response that
        is not held (every event of a stream) only goes on, so the awaitable that sends it
        is handed back; anything else is ``_other``'s."""
        if message["type"] == "http.response.body" and self.held is None:
            if self.own_stream is not None:
                self.own_stream.sent(message.get("body", b""), message.get(EVENT))
            if not message.get("more_body", False):
                self.ended = True
            return self._out(message)
        return self._other(message)

    async def _other(self, message: Message) -> None:
        """The start (held when it is a foreign error response), a held error response's
        body, and any other message."""
        kind = message["type"]
        if kind == "http.response.start":
            if message["status"] >= 400 and ERROR not in message and not self.started:
                self.held = message
                return
            self.sse = is_event_stream(message)
            if self.sse and self.exchange.stream is self.stream_before:
                self.own_stream = ClientStream.open(self.exchange)
            await self._out(message)
            self.started = True
        elif kind == "http.response.body":  # of a held error response
            if self.held_size < _ERROR_BODY_LIMIT:
                chunk = message.get("body", b"")
                if self.held_body is None:
                    self.held_body = []
                self.held_body.append(chunk)
                self.held_size += len(chunk)
            if not message.get("more_body", False):
                await self._replace_held()
        else:
            await self._out(message)

    async def fail(self, exc: Exception) -> bool:
        """Answer for an exception from the inner app; False when it cannot be answered (the
        client is gone, or a plain body was cut mid-way) and must go on to the server."""
        if self.client_gone or self.exchange.client_dropped:
            return False
        error = _as_gateway_error(exc)
        if error is None:
            logger.exception("inner app failed for %s", self.exchange.request_id)
            error = GatewayError(
                "server_error", f"internal gateway error (request {self.exchange.request_id})"
            )
        if self.ended:
            return True  # the client has its whole answer; the failure is only logged
        if not self.started:
            self.held = None
            await self._error_response(error, "exception")
            return True
        if not self.sse:
            return False
        await self._in_band(error)
        return True

    async def finish(self) -> None:
        """The inner app returned: complete what it left unfinished."""
        if self.client_gone or self.ended or self.exchange.client_dropped:
            return
        if self.held is not None:
            await self._replace_held()
        elif not self.started:
            error = GatewayError(
                "server_error",
                f"the gateway sent no response (request {self.exchange.request_id})",
            )
            await self._error_response(error, "no_response")
        else:
            await self._out({"type": "http.response.body", "body": b"", "more_body": False})
            self.ended = True

    # --- rendering --------------------------------------------------------------------------

    async def _replace_held(self) -> None:
        held = self.held
        assert held is not None
        self.held = None
        headers = [(k.lower(), v) for k, v in held.get("headers", ())]
        error = _foreign_error(held["status"], headers, b"".join(self.held_body or ()))
        kept = [(k, v) for k, v in headers if k not in _BODY_HEADERS]
        await self._error_response(error, "response", kept)

    async def _error_response(
        self, error: GatewayError, source: str, headers: list[tuple[bytes, bytes]] | None = None
    ) -> None:
        exchange = self.exchange
        exchange.current.error = error
        exchange.record(
            "protocol.error", source=source, committed=False, kind=error.kind, status=error.status
        )
        await send_error(self._out, self.protocol, error, headers)
        self.started = self.ended = True

    async def _in_band(self, error: GatewayError) -> None:
        exchange = self.exchange
        exchange.current.error = error
        exchange.record(
            "protocol.error", source="exception", committed=True, kind=error.kind, status=None
        )
        stream = exchange.stream
        if stream is None or stream is self.stream_before:
            stream = self.own_stream = ClientStream.open(exchange)
        message = stream.error_message(error)
        if message["body"]:  # else the client has the terminal event: nothing may follow it
            await self._out(message)
        await self._out({"type": "http.response.body", "body": b"", "more_body": False})
        self.ended = True

    async def _out(self, message: Message) -> None:
        try:
            await self.send_client(message)
        except Exception:
            self.client_gone = True
            raise


# --- helpers ---------------------------------------------------------------------------------


def _bare_exchange(scope: Scope, receive: Receive) -> Exchange:
    """The exchange for a request refused before its body was read (so the refusal is
    still recorded where tracing looks)."""
    exchange: Exchange | None = scope.get(SCOPE_KEY)
    if exchange is None:
        exchange = scope[SCOPE_KEY] = Exchange(scope, b"", receive)
    return exchange


async def _reject(
    send: Send,
    exchange: Exchange,
    protocol: str,
    error: GatewayError,
    headers: list[tuple[bytes, bytes]] | None = None,
) -> None:
    exchange.protocol = protocol
    exchange.current.error = error
    exchange.record("protocol.reject", status=error.status, kind=error.kind, param=error.param)
    await send_error(send, protocol, error, headers)


def _parse(exchange: Exchange, protocol: str, route: Route) -> GatewayError | None:
    try:
        request = parse_request_body(get_codec(protocol), exchange.body, route)
    except GatewayError as error:
        return error
    except Exception:
        # A codec that crashes on some input is a bug to fix there; the client still gets
        # an answer in its protocol, and nothing reaches a provider.
        logger.exception("parsing failed for %s", exchange.request_id)
        return GatewayError(
            "server_error", f"internal gateway error (request {exchange.request_id})"
        )
    exchange.request = request
    exchange.model = request.model
    if exchange.recording:
        exchange.record(
            "protocol.parse",
            protocol=protocol,
            model=request.model,
            stream=request.stream,
            bytes=len(exchange.body),
        )
    return None


def _too_large(limit: int) -> GatewayError:
    return GatewayError(
        "bad_request", f"request body exceeds the limit of {limit} bytes", status=413
    )


def _as_gateway_error(exc: BaseException) -> GatewayError | None:
    # anyio task groups wrap what a layer raised; one exception inside is that exception.
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    return exc if isinstance(exc, GatewayError) else None


def _foreign_error(status: int, headers: list[tuple[bytes, bytes]], raw: bytes) -> GatewayError:
    """A GatewayError for an error response that none of our layers rendered."""
    try:
        data: Any = _json_decode(raw)
    except (msgspec.DecodeError, UnicodeDecodeError, RecursionError):
        data = None
    message = _message_in(data)
    if message is None:
        try:
            message = f"{HTTPStatus(status).phrase} (HTTP {status})"
        except ValueError:
            message = f"HTTP {status}"
    text_headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in headers}
    error = classify(status, message[:_MESSAGE_LIMIT], headers=text_headers, body=data)
    error.upstream_status = None  # no provider said this
    return error


def _message_in(data: Any) -> str | None:
    """The message of a JSON error body in any of the usual shapes: ``error.message`` (all
    four protocols), ``error`` as a string, ``message``, or ``detail`` (FastAPI)."""
    if not isinstance(data, dict):
        return None
    error = data.get("error")
    if isinstance(error, dict):
        error = error.get("message")
    for value in (error, data.get("message"), data.get("detail")):
        if isinstance(value, str) and value.strip():
            return value.strip()
    return None
