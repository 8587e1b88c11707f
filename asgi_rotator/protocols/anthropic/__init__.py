"""Anthropic Messages API (``POST /v1/messages``, base URL ``https://api.anthropic.com``).

Deliberate choices, in the order a request meets them:

* **Same-protocol markers.**  Where the wire has two spellings for one unified value (string
  vs block ``content``, a user message split into a ``tool`` and a ``user`` message, a
  server-tool block the unified model does not name), the struct's ``extra`` carries private
  markers (``protocols.unknown_fields``).  Like the rest of ``extra`` they are only read when
  building for this protocol again, and they are never written to the wire.  Known fields sent as ``null`` (and
  ``stream: false`` / ``is_error: false``) stay in ``extra`` too: a rebuild starts from
  ``extra`` and writes the unified fields over it, so they survive unless a layer changed them.
* **Tool results.**  Anthropic puts ``tool_result`` blocks in ``user`` messages; the unified
  model has ``tool`` messages.  A user message ``[tool_result, tool_result, text]`` becomes a
  ``tool`` message and a ``user`` message marked as its continuation; the rebuild merges them
  back.  Towards Anthropic from other protocols consecutive messages of the same wire role are
  merged (the API wants alternating turns) and ``tool_result`` blocks move to the front of
  their user message (Messages API, "Tool use": results must come first).
* **Messages with role ``system``** (``SystemMessageParam`` in SDK 2.x) have no unified role:
  they become ``user`` messages marked ``system``, so other protocols see their text as user
  text.
* **Server tools and their blocks** (``web_search_*``, ``server_tool_use``,
  ``*_tool_result``, ``search_result``, ``container_upload`` ...) are kept verbatim at their
  position for a same-protocol rebuild and dropped towards other protocols, as are tools of
  other protocols' built-in types towards Anthropic.
* **Reasoning.**  ``thinking`` (text + ``signature``) and ``redacted_thinking`` (``data``)
  become ``Reasoning`` with ``source="anthropic_messages"``.  A request only carries reasoning
  of that source with a signature or redacted data: Anthropic verifies signatures, so any other
  reasoning part is dropped.  A *response* to an Anthropic client does show other providers'
  reasoning text, as a thinking block with an empty signature (which the next request then
  drops again).
* **Thinking configuration** (Messages API, "Extended thinking"): ``enabled`` +
  ``budget_tokens``, ``disabled``, ``adaptive`` and ``between_tools`` map to
  ``ReasoningConfig.enabled`` / ``budget_tokens``; ``display`` summarized/omitted maps to
  ``include_thoughts`` true/false; ``output_config.effort`` is ``effort``.  From another
  protocol reasoning is sent as ``{"type": "enabled", "budget_tokens": ...}`` with the budget
  from ``effort_to_budget`` when only an effort is known (minimum 1024); ``max_tokens`` is
  raised to ``budget + default_max_tokens`` when it would not exceed the budget; temperature
  and top_k are dropped and top_p below 0.95 is dropped (thinking is incompatible with them);
  reasoning turned off is expressed by sending no ``thinking`` at all (some models reject
  ``disabled``); a forced tool choice (``any`` / ``tool``), which thinking does not allow,
  wins over reasoning; and so does a tool loop whose last assistant turn has no signed
  thinking block to start with (Anthropic would reject the request).  ``output_config.effort`` is only written back to Anthropic clients'
  own requests: which models accept it cannot be known here.
* **max_tokens** is required by Anthropic: a request without one (from another protocol) gets
  ``default_max_tokens``.
* **Structured output** uses the native ``output_config.format`` (``json_schema``; SDK 2.x);
  schema name, description and strictness have no Anthropic field and are dropped.  OpenAI's
  ``json_object`` mode has no equivalent and is dropped (a schema-less format is rejected).
* **Sampling.**  ``temperature``, ``top_p`` and ``top_k`` are read and written although SDK
  2.11 no longer types them on ``MessageCreateParams``; the API reference documents them.
* **Usage**: unified ``input_tokens`` = Anthropic ``input_tokens`` + cache writes + cache
  reads (Anthropic's ``input_tokens`` counts only the tokens after the last cache
  breakpoint); ``cache_creation.ephemeral_1h_input_tokens`` is ``cache_write_1h_tokens``, a
  part of the cache writes (the rest is the 5-minute TTL), never added;
  ``output_tokens_details.thinking_tokens`` is ``reasoning_tokens``.  Building subtracts the
  cache counts again.
* **Streams.**  ``ping`` is ignored; ``citations_delta`` has no unified event and is dropped;
  blocks of server tools are skipped (their wire indices get no unified index).  The encoder
  follows Anthropic's sequence (``message_start``, ``ping``, blocks, ``message_delta``,
  ``message_stop``), opens a block on its first delta, waits with a reasoning block until it
  knows whether it is ``thinking`` or ``redacted_thinking``, and renders an ``Error`` as
  ``event: error`` (the SDK raises ``APIStatusError`` on it).
* **Errors** use ``{"type": "error", "error": {"type", "message"}}`` with the statuses of the
  "Errors" page; ``overloaded`` is 529.  A context-window error whose text lacks Anthropic's
  ``prompt is too long`` gets that prefix, because Anthropic clients detect it by those words.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from ...errors import GatewayError
from ...unified import Request, Response, Usage
from ..base import Codec, StreamDecoder, StreamEncoder
from .content import NAME
from .request import build_request, parse_request
from .response import (
    build_error,
    build_response,
    parse_error,
    parse_response,
    response_id_and_usage,
)
from .stream import MessagesStreamDecoder, MessagesStreamEncoder

__all__ = ["AnthropicCodec"]


class AnthropicCodec(Codec):
    name: ClassVar[str] = NAME
    auth: ClassVar[str] = "x-api-key"
    # Beta features a client turns on for its request (1-hour cache TTL, extended outputs).
    forwarded_headers: ClassVar[tuple[str, ...]] = ("anthropic-beta",)
    # Anthropic requires max_tokens; requests from protocols where it is optional get this.
    default_max_tokens: ClassVar[int] = 4096

    # --- requests ---------------------------------------------------------------------------

    def parse_request(
        self, body: Any, *, model: str | None = None, stream: bool | None = None
    ) -> Request:
        return parse_request(body, model=model, stream=stream)

    def build_request(self, request: Request) -> dict[str, Any]:
        return build_request(self.default_max_tokens, request)

    def request_path(self, request: Request) -> str:
        return "/v1/messages"

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
        return MessagesStreamDecoder()

    def stream_encoder(self, request: Request | None = None) -> StreamEncoder:
        return MessagesStreamEncoder(self, request.model if request is not None else None)

    # --- listings ---------------------------------------------------------------------------

    def models_listing(self, model_ids: list[str]) -> dict[str, Any]:
        data = [
            {"type": "model", "id": m, "display_name": m, "created_at": "1970-01-01T00:00:00Z"}
            for m in model_ids
        ]
        return {
            "data": data,
            "has_more": False,
            "first_id": model_ids[0] if model_ids else None,
            "last_id": model_ids[-1] if model_ids else None,
        }
