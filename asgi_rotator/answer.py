"""Answering the client in its protocol, and reading its request: what every layer uses.

Any layer may have to answer (a refusal, an error before commit, a listing) or to read the
request (fallback needs the model name, ResponsesState the history), and every layer must
work alone around a foreign app.  So none of this lives in a layer, nor in the terminal app:

* ``send_error``: an error response in the client's protocol, before commit;
* ``send_json`` and ``SSE_HEADERS``: a plain JSON answer, the start of an event stream;
* ``ensure_request`` and ``parse_request_body``: the unified request, parsed once;
* ``ClientStream``: the client's stream once committed (``exchange.stream``).

Deliberate choices about ``ClientStream``:

* After commit a failure is an in-band error event that *continues* the client's stream:
  the response id the client already has, event numbers that go on from its last one
  (Responses numbers every event), nothing after the terminal event.  ``error_message`` is
  the one renderer of that event; dispatch, StreamGuard and the protocol layer all call it.
* One layer writes the record: the innermost that sees the stream begin (dispatch, which
  opens it as it sends the start; else StreamGuard or the protocol layer, around a foreign
  app).  It notes each body message before passing it on (``sent``), so a layer further out
  that renders an error finds the numbering as its inner layers left it, even while a
  routing layer still holds the prelude.  Numbers are read from the bytes through the
  codec (``Codec.stream_resume_point``): a same-protocol stream carries the provider's own
  numbering, which no unified event holds.  Only the last body is kept for that, and read
  only when a continuation is rendered, so a stream that ends well never parses one.
* A layer that changes the response id the client sees (ResponsesState) says so with
  ``rename``; the producer's live encoder, when there is one, takes the new id too.
* The renderer continues the producer's own encoder when there is one (a translated
  stream), so a ``response.failed`` still lists the output items already finished; else a
  fresh encoder is resumed from what was noted.
"""

from __future__ import annotations

import math
import re
from typing import Any

import msgspec

from ._types import Message, Receive, Scope, Send
from .errors import GatewayError
from .exchange import DEFAULT_MAX_BODY, ERROR, EVENT, Exchange
from .protocols import Codec, StreamEncoder, get_codec
from .routes import Route, match_route, route_path
from .unified import Error, Event, Finish, MessageStart, Request

__all__ = [
    "JSON_HEADER",
    "SSE_HEADERS",
    "ClientStream",
    "ensure_request",
    "is_event_stream",
    "parse_request_body",
    "send_error",
    "send_json",
]

JSON_HEADER = (b"content-type", b"application/json")
SSE_HEADERS = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-cache, no-transform"),
    (b"x-accel-buffering", b"no"),
]

_json_decode = msgspec.json.decode
_json_encode = msgspec.json.Encoder().encode
# The events that change what a continuation must say, matched by exact type: the unified
# event classes are not subclassed, and this runs for every event of every stream.
_NOTED = frozenset({Finish, MessageStart, Error})


# --- answering before commit ---------------------------------------------------------------


async def send_error(
    send: Send,
    protocol: str | None,
    error: GatewayError,
    headers: list[tuple[bytes, bytes]] | None = None,
) -> None:
    """An error response in the client's protocol (before commit), with the ERROR twin."""
    codec = get_codec(protocol or "openai_chat")
    status, body = codec.build_error(error)
    raw = _json_encode(body)
    out = [JSON_HEADER, (b"content-length", str(len(raw)).encode())]
    if error.retry_after is not None:
        out.append((b"retry-after", str(math.ceil(error.retry_after)).encode()))
    out.extend(headers or ())
    await send({"type": "http.response.start", "status": status, "headers": out, ERROR: error})
    await send({"type": "http.response.body", "body": raw, ERROR: error})


async def send_json(send: Send, body: Any, status: int = 200) -> None:
    """A plain JSON answer (``body`` may be ``msgspec.Raw``: its bytes go out as they are)."""
    raw = _json_encode(body)
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [JSON_HEADER, (b"content-length", str(len(raw)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": raw})


def is_event_stream(start: Message) -> bool:
    """Whether a response start announces an SSE stream."""
    for name, value in start.get("headers", ()):
        if name.lower() == b"content-type":
            return value.lower().startswith(b"text/event-stream")
    return False


# --- reading the request -------------------------------------------------------------------


async def ensure_request(
    scope: Scope, receive: Receive, *, max_body: int = DEFAULT_MAX_BODY
) -> Exchange:
    """The exchange with its unified request, parsing the body if no layer did yet.

    For any layer that needs the request (fallback needs the model name, for instance) and
    may run without the protocol middleware.  Raises ``GatewayError`` for bad input; the
    client's protocol is on ``exchange.protocol`` by then, when the route names one.
    """
    exchange = await Exchange.of(scope, receive, max_body=max_body)
    if exchange.request is not None:
        return exchange
    route = match_route(route_path(scope))
    if route is None or route.endpoint != "generate":
        return exchange
    if exchange.protocol is None:
        exchange.protocol = route.protocol
    codec = get_codec(exchange.protocol or "openai_chat")
    exchange.request = parse_request_body(codec, exchange.body, route)
    exchange.model = exchange.request.model
    exchange.record("parse", protocol=exchange.protocol)
    return exchange


def parse_request_body(codec: Codec, body: bytes, route: Route) -> Request:
    """Decode and validate a client body into the unified request."""
    if not body:
        raise GatewayError("bad_request", "request body is empty; expected a JSON object")
    try:
        data = _json_decode(body)
    except (msgspec.DecodeError, UnicodeDecodeError) as exc:
        # The words are ours: msgspec's change between releases (and, for invalid UTF-8,
        # even its exception type), so only the byte offset is taken from it.
        raise GatewayError("bad_request", _decode_problem(body, exc)) from None
    except RecursionError:
        raise GatewayError("bad_request", "request body is nested too deeply") from None
    return codec.parse_request(data, model=route.model, stream=route.stream)


_AT_BYTE = re.compile(r"\(byte (\d+)\)")


def _decode_problem(body: bytes, exc: Exception) -> str:
    """Why a request body did not decode, in the gateway's own words."""
    try:
        body.decode("utf-8")
    except UnicodeDecodeError as bad:
        # JSON is UTF-8 (RFC 8259 section 8.1)
        return f"request body is not valid JSON: not valid UTF-8 at byte {bad.start}"
    # The offset, where the decoder gives one; its wording is not passed on.
    found = _AT_BYTE.search(str(exc))
    return "request body is not valid JSON" + (f" (byte {found.group(1)})" if found else "")


# --- the client's stream, after commit -----------------------------------------------------


class ClientStream:
    """What the client has been sent of one streamed response, and how to continue it.

    ``codec`` is the client's codec (None when the protocol is unknown: a foreign app's
    stream then gets no in-band error, only its end); ``encoder`` the producer's live
    encoder when it translates.  ``response_id`` and ``last_sequence`` are what a
    continuation must repeat and go on from; ``terminal_sent`` is set by the protocol's
    terminal event (``Finish`` or ``Error``), after which nothing more may go out;
    ``events`` and ``bytes`` count what was noted.
    """

    __slots__ = (
        "_numbered",
        "_tail",
        "bytes",
        "codec",
        "encoder",
        "error_sent",
        "events",
        "model",
        "request",
        "response_id",
        "terminal_sent",
    )

    def __init__(
        self, codec: Codec | None, request: Request | None, encoder: StreamEncoder | None = None
    ) -> None:
        self.codec = codec
        self.request = request
        self.model = request.model if request is not None else ""
        self.encoder = encoder
        self._numbered = codec is not None and codec.numbers_stream_events
        self.response_id: str | None = None
        self._tail: bytes | None = None  # the last body noted, when the protocol numbers them
        self.terminal_sent = False
        self.error_sent = False
        self.events = 0
        self.bytes = 0

    @classmethod
    def open(cls, exchange: Exchange, encoder: StreamEncoder | None = None) -> ClientStream:
        """A new stream on ``exchange`` (each attempt's response starts its own), in the
        client's protocol as the exchange knows it."""
        protocol = exchange.protocol
        codec = get_codec(protocol) if protocol is not None else None
        stream = exchange.stream = cls(codec, exchange.request, encoder)
        if not stream.model and exchange.model:
            stream.model = exchange.model
        return stream

    def sent(self, body: bytes, events: list[Event] | None) -> None:
        """Note a body message on its way to the client: ``events`` is its EVENT twin, or
        None for a foreign app's bytes (one message, one event as far as anyone knows)."""
        if events is None:
            if body:
                self.events += 1
        elif events:
            self.events += len(events)
            for event in events:
                if type(event) in _NOTED:  # the rest (content) changes nothing here
                    self._note(event)
        if body:
            self.bytes += len(body)
            if self._numbered:
                # The last number is read from the last body when a continuation needs it,
                # not from every event as it goes; the id is announced once, at the start.
                self._tail = body
                if self.response_id is None:
                    assert self.codec is not None
                    self.response_id = self.codec.stream_resume_point(body)[0]

    @property
    def last_sequence(self) -> int | None:
        """The number of the last event noted, for a protocol that numbers its events."""
        if self._tail is None:
            return None
        assert self.codec is not None
        return self.codec.stream_resume_point(self._tail, find_id=False)[1]

    def _note(self, event: Event) -> None:
        if isinstance(event, Finish):
            self.terminal_sent = True
        elif isinstance(event, Error):
            self.terminal_sent = self.error_sent = True
        elif isinstance(event, MessageStart) and self.response_id is None:
            self.response_id = event.id or None

    def rename(self, response_id: str) -> None:
        """The client sees ``response_id`` (a layer above the producer gave its own)."""
        self.response_id = response_id
        if self.encoder is not None and self.bytes:
            self.encoder.resume(self._start(), self.last_sequence)

    def error_message(self, error: GatewayError) -> Message:
        """The in-band error event that continues this stream, as a body message with its
        EVENT and ERROR twins, noted as sent.  Its body is empty when there is nothing to
        say: the terminal event already went out, or the protocol is unknown."""
        event = Error(error=error)
        body = b""
        if self.codec is not None and not self.terminal_sent:
            encoder = self.encoder
            if encoder is None:
                encoder = self.encoder = self.codec.stream_encoder(self.request)
                if self.bytes:
                    # The client has the opening already: a second one (response.created
                    # with another id, a second role chunk) would break its SDK.
                    encoder.resume(self._start(), self.last_sequence)
            body = encoder.encode(event)
            self.sent(body, [event])
        return {
            "type": "http.response.body",
            "body": body,
            "more_body": True,
            EVENT: [event],
            ERROR: error,
        }

    def _start(self) -> MessageStart:
        return MessageStart(id=self.response_id or "", model=self.model)
