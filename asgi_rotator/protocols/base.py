"""The codec interface: one class per wire protocol, every method overridable on its own.

A codec is stateless; streams get a per-stream decoder or encoder object from it.

Requests, responses and errors travel as JSON-compatible Python values (``dict``/``list``):
the transport layers decode bytes once with msgspec and encode once, and a codec only maps
shapes.  Parsing validates: a malformed request raises ``GatewayError("bad_request", ...)``
whose message and ``param`` name the offending field by its path (``messages[2].role``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, ClassVar

import msgspec

from .._types import Send
from ..errors import GatewayError
from ..sse import ServerSentEvent
from ..unified import Event, MessageStart, Request, Response, Usage

__all__ = ["Codec", "JsonStreamDecoder", "StreamDecoder", "StreamEncoder", "bad_request"]

_decode_json = msgspec.json.Decoder().decode


def bad_request(path: str, problem: str) -> GatewayError:
    """A validation error naming the field: ``messages[0].role: unknown role 'robot'``."""
    return GatewayError(
        "bad_request", f"{path}: {problem}" if path else problem, param=path or None
    )


class StreamDecoder:
    """Provider SSE events in, unified events out, for one stream.

    ``done`` turns true when the protocol's terminal event was seen; a stream that reaches
    EOF with ``done`` still false was cut short (premature close).
    """

    done: bool = False

    def feed(self, event: ServerSentEvent) -> list[Event]:
        raise NotImplementedError

    def close(self) -> list[Event]:
        """End of the upstream body: flush what is pending (never invents a ``Finish``)."""
        return []


class JsonStreamDecoder(StreamDecoder):
    """A decoder for protocols whose stream events each carry one JSON object.

    ``feed`` owns what every such protocol does first: nothing more after the terminal event,
    an empty event is nothing, the protocol's sentinel (OpenAI's ``[DONE]``) goes to
    ``on_sentinel``, malformed JSON is an upstream ``server_error``, and a value that is not
    an object goes to ``object_of`` (skipped, unless the protocol finds an object in it).  A
    protocol decodes the object in ``feed_object``.
    """

    # The data of an event that is not JSON and ends the stream, where the protocol has one.
    sentinel: ClassVar[str | None] = None

    def feed(self, event: ServerSentEvent) -> list[Event]:
        data = event.data.strip()
        if self.done or not data:
            return []
        if data == self.sentinel:
            return self.on_sentinel()
        try:
            value = _decode_json(data)
        except msgspec.DecodeError:
            raise GatewayError(
                "server_error", "upstream sent malformed JSON in a stream event"
            ) from None
        except RecursionError:
            raise GatewayError(
                "server_error", "upstream sent a stream event nested too deeply"
            ) from None
        if type(value) is not dict:  # msgspec decodes a JSON object as a plain dict
            value = self.object_of(value)
            if value is None:
                return []
        return self.feed_object(value, event)

    def object_of(self, value: Any) -> dict[str, Any] | None:
        """The object that an event's JSON value other than an object carries, or ``None``
        to skip the event."""
        return None

    def on_sentinel(self) -> list[Event]:
        return []

    def feed_object(self, data: dict[str, Any], event: ServerSentEvent) -> list[Event]:
        raise NotImplementedError


class StreamEncoder:
    """Unified events in, client SSE bytes out, for one stream.

    ``encode`` returns the bytes for one event, ending on an SSE event boundary, or ``b""``
    when the event has no representation in this protocol.  ``Finish`` makes the protocol's
    terminal events (``[DONE]``, ``message_stop``, ``response.completed``, the last Gemini
    chunk); ``Error`` makes its in-band error event.
    """

    def encode(self, event: Event) -> bytes:
        raise NotImplementedError

    def resume(self, start: MessageStart, last_sequence: int | None = None) -> None:
        """Continue a stream whose opening the client already has from elsewhere (the
        upstream's own bytes in a passthrough, another layer's encoder): what ``encode(start)``
        writes counts as sent, so an ``Error`` encoded next does not open a second stream.
        ``last_sequence`` is the last event number the client saw, for protocols that number
        their events.  An encoder that has already encoded (the producer's own) keeps its
        state and takes only what the protocol repeats, the response id, from ``start``."""
        self.encode(start)


class Codec:
    name: ClassVar[str]
    # Default inbound/outbound auth header style for this protocol.
    auth: ClassVar[str] = "bearer"
    # Whether this protocol numbers its stream events or repeats the response id in them,
    # so that continuing a stream needs ``stream_resume_point`` on what was sent.
    numbers_stream_events: ClassVar[bool] = False
    # What a heartbeat writes between two events of this protocol's stream: an SSE comment,
    # unless the protocol's clients would read one as data.
    heartbeat: ClassVar[bytes] = b": keepalive\n\n"
    # The client's request headers (lower case) that go on to a provider of this protocol
    # when the client speaks it too: what a client of it may send that changes the answer
    # and has no place in the unified request (Anthropic's ``anthropic-beta``).
    forwarded_headers: ClassVar[tuple[str, ...]] = ()

    # --- requests ---------------------------------------------------------------------------

    def parse_request(
        self, body: Any, *, model: str | None = None, stream: bool | None = None
    ) -> Request:
        """Validate and map a client body.  ``model``/``stream`` come from the URL for
        protocols that put them there (Gemini)."""
        raise NotImplementedError

    def build_request(self, request: Request) -> dict[str, Any]:
        raise NotImplementedError

    def request_path(self, request: Request) -> str:
        """Path of the endpoint for this request, relative to the provider's base URL."""
        raise NotImplementedError

    # --- responses --------------------------------------------------------------------------

    def parse_response(self, body: Any) -> Response:
        raise NotImplementedError

    def build_response(self, response: Response, request: Request | None = None) -> dict[str, Any]:
        raise NotImplementedError

    def response_id_and_usage(self, body: Any) -> tuple[str | None, Usage]:
        """The id and usage of a plain response, for when its bytes go to a client of this
        protocol as they came and no layer reads its twin.  Raises on a body that is not a
        response at all, as ``parse_response`` does; the rest of it is not looked at.  The
        default parses the whole response."""
        response = self.parse_response(body)
        return response.id, response.usage

    # --- errors -----------------------------------------------------------------------------

    def parse_error(self, status: int, body: Any, headers: Mapping[str, str]) -> GatewayError:
        """Classify a provider error response.  ``body`` is decoded JSON, or the raw
        ``bytes`` when it was not JSON."""
        raise NotImplementedError

    def build_error(self, error: GatewayError) -> tuple[int, dict[str, Any]]:
        """Status and body of the error in this protocol's shape."""
        raise NotImplementedError

    # --- streams ----------------------------------------------------------------------------

    def stream_decoder(self) -> StreamDecoder:
        raise NotImplementedError

    def stream_encoder(self, request: Request | None = None) -> StreamEncoder:
        raise NotImplementedError

    def stream_resume_point(
        self, body: bytes, *, find_id: bool = True
    ) -> tuple[str | None, int | None]:
        """The response id announced in ``body`` (whole SSE events sent to a client; looked
        for only with ``find_id``) and the last event number in it, each None when ``body``
        has none: what ``StreamEncoder.resume`` needs to continue the stream.  Only
        protocols that set ``numbers_stream_events`` are asked."""
        return None, None

    def stream_framing(self, scope: Mapping[str, Any]) -> Callable[[Send], Send] | None:
        """How the client of a streamed request asked for the stream to be framed, when
        not as SSE: a send wrapper that reframes the stack's SSE (``protocols.framing``).
        ``None``, the default, is SSE."""
        return None

    def streams_sse(self, scope: Mapping[str, Any]) -> bool:
        """Whether a streamed request on this route is answered as SSE (before the stack's
        SSE is reframed for the client, ``stream_framing``)."""
        return self.stream_framing(scope) is None

    def rewrite_stream_ids(
        self, body: bytes, response_id: str, previous_id: str | None
    ) -> tuple[bytes, dict[str, Any] | None]:
        """``body`` (whole SSE events) with ``response_id`` as the id of the response its
        events carry, and ``previous_id`` as the response it continues, for protocols whose
        stream events repeat the response; with the last terminal response object in it, or
        ``None``.  The default: protocols whose events carry no response object."""
        return body, None

    # --- listings ---------------------------------------------------------------------------

    def models_listing(self, model_ids: list[str]) -> dict[str, Any]:
        """The body of the models endpoint in the shape this protocol's SDKs read
        (OpenAI's ``GET /v1/models`` list, the default)."""
        return {
            "object": "list",
            "data": [
                {"id": m, "object": "model", "created": 0, "owned_by": _owner(m)} for m in model_ids
            ],
        }

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name}>"


def _owner(model_id: str) -> str:
    """``owned_by`` of a listed model: the provider prefix of a routed name."""
    return model_id.partition("/")[0] if "/" in model_id else "asgi-rotator"
