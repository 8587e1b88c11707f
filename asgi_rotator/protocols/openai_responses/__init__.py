"""OpenAI Responses API (``POST /v1/responses``) codec.

Deliberate choices, so the other codecs and the docs can rely on them:

* **Items to messages.**  ``input`` is a flat item list; the unified model is a message list.
  A run of consecutive assistant-side items (``reasoning``, assistant ``message``,
  ``function_call``) becomes one assistant ``Message``; a run of ``function_call_output``
  items becomes one ``tool`` message; each user ``message`` item is one user message.
  ``system``/``developer`` message items go to ``Request.system`` (with ``instructions``)
  because the unified model has no system role inside the conversation.
* **Markers.**  What a same-protocol rebuild needs and the unified model cannot say (where a
  developer message stood in ``input``, message-item ids/status/phase, string-vs-list
  content, items with no unified form such as ``web_search_call`` or ``item_reference``) is
  kept in ``extra[MARK]`` of the nearest struct.  ``MARK`` is never written to the wire and is
  only read when ``origin`` is this protocol.
* **Absent versus null.**  A known field sent as ``null`` (or ``stream: false``) is not
  consumed: it stays in ``extra`` and comes back verbatim.  Response fields that are derived
  from the unified values (``status``, ``incomplete_details``, ``error``, ``usage`` ...) are
  consumed only when the derivation gives the same value back; otherwise the upstream value
  is kept.
* **Defaults only for foreign origins.**  A request parsed from this protocol is rebuilt with
  exactly its own fields; a request from another protocol gets what the Responses API needs:
  ``strict: false`` on function tools (Responses defaults ``strict`` to true, which rejects
  most schemas written for other APIs), ``detail: "auto"`` on images, a ``name`` on
  ``json_schema`` formats, assistant history as ``{"role": "assistant", "content": "..."}``.
* **Reasoning.**  A ``reasoning`` item's summary parts become ``Reasoning.text`` joined by a
  blank line; ``encrypted_content`` is ``Reasoning.redacted`` and ``id`` the ``rs_`` id.  A
  reasoning part from another protocol is not sent upstream (a ``rs_`` id OpenAI did not
  issue is rejected); in a response built for a client it becomes a summary-only item.
* **Stream errors.**  The openai SDK raises ``APIError`` on a stream event only when its data
  has a top-level ``error`` key (``openai/_streaming.py``), and the documented ``error``
  event (``ResponseErrorEvent``) has flat ``code``/``message``/``param``.  OpenAI's servers
  send both shapes in practice.  The encoder therefore ends an errored stream with
  ``response.failed`` (status ``failed``, ``error {code, message}``) followed by an ``error``
  event carrying the flat fields *and* a nested ``error`` object: it validates as
  ``ResponseErrorEvent`` and makes the SDK raise.  The decoder reads either shape.
* **Streams are rebuilt, not replayed.**  The encoder works from unified events, so each
  text block becomes its own ``message`` item, a reasoning block one summary part (the
  decoder joins summary parts with a blank line), and what has no unified event (annotations,
  logprobs, built-in tool items such as ``web_search_call``) is not streamed.  A length or
  content-filter stop ends with ``response.incomplete``, as OpenAI does; ids are kept as
  the upstream gave them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ...errors import GatewayError
from ...unified import Request, Response, Usage
from ..base import Codec, StreamDecoder, StreamEncoder
from .content import MARK, NAME
from .request import as_instructions, build_request, parse_request
from .response import (
    build_error,
    build_response,
    parse_error,
    parse_response,
    response_id_and_usage,
)
from .stream import ResponsesStreamDecoder, ResponsesStreamEncoder, resume_point, rewrite_ids

__all__ = ["MARK", "OpenAIResponsesCodec", "as_instructions"]


class OpenAIResponsesCodec(Codec):
    name = NAME
    auth = "bearer"
    # Every stream event has a ``sequence_number``, and an error event repeats the response.
    numbers_stream_events = True

    # --- requests ---------------------------------------------------------------------------

    def request_path(self, request: Request) -> str:
        return "/responses"

    def parse_request(
        self, body: Any, *, model: str | None = None, stream: bool | None = None
    ) -> Request:
        return parse_request(body, model=model, stream=stream)

    def build_request(self, request: Request) -> dict[str, Any]:
        return build_request(request)

    # --- responses --------------------------------------------------------------------------

    def parse_response(self, body: Any) -> Response:
        return parse_response(body)

    def response_id_and_usage(self, body: Any) -> tuple[str | None, Usage]:
        return response_id_and_usage(body)

    def build_response(self, response: Response, request: Request | None = None) -> dict[str, Any]:
        return build_response(response, request)

    # --- errors -----------------------------------------------------------------------------

    def parse_error(self, status: int, body: Any, headers: Mapping[str, str]) -> GatewayError:
        return parse_error(status, body, headers)

    def build_error(self, error: GatewayError) -> tuple[int, dict[str, Any]]:
        return build_error(error)

    # --- streams ----------------------------------------------------------------------------

    def stream_decoder(self) -> StreamDecoder:
        return ResponsesStreamDecoder()

    def stream_encoder(self, request: Request | None = None) -> StreamEncoder:
        return ResponsesStreamEncoder(self, request)

    def stream_resume_point(
        self, body: bytes, *, find_id: bool = True
    ) -> tuple[str | None, int | None]:
        return resume_point(body, find_id=find_id)

    def rewrite_stream_ids(
        self, body: bytes, response_id: str, previous_id: str | None
    ) -> tuple[bytes, dict[str, Any] | None]:
        # Every lifecycle event (response.created ... response.completed) repeats the
        # whole response object, id and previous_response_id included.
        if b'"response"' not in body:
            return body, None
        return rewrite_ids(body, response_id, previous_id)
