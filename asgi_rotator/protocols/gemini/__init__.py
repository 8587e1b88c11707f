"""Gemini ``generateContent`` / ``streamGenerateContent?alt=sse`` (Gemini Developer API, v1beta).

Deliberate choices:

* **Spelling.**  The REST API accepts both ``camelCase`` and ``snake_case`` field names, and the
  google-genai SDK really sends a mix (``inlineData: {mime_type}``, ``thinkingConfig:
  {thinking_budget}``, ``parameters_json_schema``): it converts the fields it knows and passes
  nested dicts through.  Parsing reads either spelling; every unified struct remembers which of
  *its* fields came snake_case (marker ``snake`` in its ``extra``), so a same-protocol
  rebuild spells each field as received.  Anything else is built camelCase.
* **Markers.**  Bookkeeping a same-protocol rebuild needs lives in the struct's markers
  (``protocols.unknown_fields``: ``extra["__gemini"]``), never written to the wire.  Parts
  this model cannot name (executableCode, codeExecutionResult, toolCall, ...) are kept
  verbatim with their position (marker ``rawParts``) and only reach a Gemini peer.
* **Model and stream** live in the URL, not the body: ``parse_request`` takes them as keyword
  arguments (a body ``model`` is read as a fallback) and ``build_request`` never writes them.
* **Built from another protocol**: consecutive turns of one speaker are merged (parallel
  function responses share one user turn); tool schemas go out as ``parametersJsonSchema`` and
  response schemas as ``responseJsonSchema`` (full JSON Schema, which the OpenAPI-subset fields
  reject); reasoning effort becomes ``thinkingLevel`` for Gemini 3+ and ``thinkingBudget``
  (shared effort table) for 1.x/2.x models; thinking switched on elsewhere asks for
  ``includeThoughts``; thinking off is ``thinkingBudget: 0`` (2.5 Pro / 3 refuse it: provider
  400); built-in tools of other protocols are dropped; a provider file id is refused (400).
* **Reasoning shown to a Gemini client**: another provider's reasoning text becomes thought
  parts only when the client asked for ``includeThoughts`` (or no request is known); its
  payloads never.
* **Tool-call ids** are optional in Gemini.  A call without one gets ``new_id("call_")``; a
  ``functionResponse`` without one is paired with the earliest unanswered call of that name in
  the latest model turn (then any earlier call of that name).  Synthesized ids are marked
  (``syntheticId``) and left out again on a same-protocol rebuild; ids of calls parsed
  from other protocols are not sent to Gemini either (Gemini pairs by name and order).  Built
  responses and streams for a Gemini client do carry the unified id, since that is the id the
  client echoes back.
* **Tool results.**  ``functionResponse.response`` must be an object: JSON-object text is sent as
  that object, anything else as ``{"result": text}`` (``{"error": text}`` for an error result).
  Parsing undoes exactly that, so ``{"result": "sunny"}`` becomes the text ``sunny``.  Images or
  files inside a foreign tool result become sibling ``inlineData``/``fileData`` parts.
* **Thought signatures** (Gemini 2.5/3) ride on any part.  Unified form: a
  ``Reasoning(text="", signature=sig, source="gemini")`` right before the part that carried it;
  a ``thought: true`` text part is a ``Reasoning`` with its text (and its own signature).  When
  building, a signature-only Reasoning is put back on the following part, and reasoning from
  other sources is dropped (Gemini cannot verify other providers' payloads, and ignores
  unsigned thought text).
* **Errors.**  A bad API key is 400 INVALID_ARGUMENT with ``reason: API_KEY_INVALID``: it is
  classified ``auth``.  ``build_error`` writes the google.rpc status name for the HTTP status
  (keeping a Gemini one that agrees with it) and a ``RetryInfo`` detail for ``retry_after``.
* **Usage.**  ``promptTokenCount`` already includes ``cachedContentTokenCount``;
  ``candidatesTokenCount`` excludes ``thoughtsTokenCount``; ``toolUsePromptTokenCount`` (results
  of server-side tools) is counted as input.  Unified ``output_tokens`` = candidates + thoughts.
* **Streams.**  Gemini has no start or stop event: the decoder synthesizes ``MessageStart`` from
  the first chunk and ends (``done``) at the chunk carrying ``finishReason`` (or a prompt
  ``blockReason``), with the usage known then; a later chunk is ignored.  ``functionCall`` parts
  arrive whole.  The encoder emits one chunk per text/thought delta, one per function call
  (arguments buffered until ``BlockStop``) and a final chunk with ``finishReason`` and
  ``usageMetadata`` (omitted when no usage is known).  An in-band error is a chunk ``{"error": {code, message, status}}``, on
  which google-genai's stream iterator raises ``ClientError``/``ServerError`` (it checks that
  the chunk's JSON starts with ``{"error":``, so ``error`` must be the first key).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import parse_qs

from ..._types import Send
from ...errors import GatewayError
from ...model_names import path_segment
from ...unified import Request, Response, Usage
from ..base import Codec, StreamDecoder, StreamEncoder
from ..framing import JsonArrayStream
from .content import NAME
from .request import build_request, parse_request
from .response import (
    build_error,
    build_response,
    parse_error,
    parse_response,
    response_id_and_usage,
)
from .stream import GeminiStreamDecoder, GeminiStreamEncoder

__all__ = ["GeminiCodec"]


class GeminiCodec(Codec):
    name = NAME
    auth = "x-goog-api-key"
    # google-genai reads every line that is not ``data:`` as raw JSON, so an SSE comment
    # would break it; a blank line is what it skips.
    heartbeat = b"\n"

    # --- requests ---------------------------------------------------------------------------

    def request_path(self, request: Request) -> str:
        # The model is one path segment: a name that would change the template is refused
        # and the rest percent-encoded, so no client can choose another URL.
        model = path_segment(request.model.removeprefix("models/"))
        if request.stream:
            return f"/v1beta/models/{model}:streamGenerateContent?alt=sse"
        return f"/v1beta/models/{model}:generateContent"

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
        return GeminiStreamDecoder(self)

    def stream_encoder(self, request: Request | None = None) -> StreamEncoder:
        return GeminiStreamEncoder(self, request)

    def stream_framing(self, scope: Mapping[str, Any]) -> Callable[[Send], Send] | None:
        # streamGenerateContent is SSE only with ?alt=sse; without it, one JSON array.
        query = scope.get("query_string", b"")
        if b"alt=" in query and "sse" in parse_qs(query.decode("latin-1")).get("alt", ()):
            return None
        return JsonArrayStream

    # --- listings ---------------------------------------------------------------------------

    def models_listing(self, model_ids: list[str]) -> dict[str, Any]:
        return {
            "models": [
                {
                    "name": f"models/{model}",
                    "displayName": model,
                    "supportedGenerationMethods": ["generateContent", "streamGenerateContent"],
                }
                for model in model_ids
            ]
        }
