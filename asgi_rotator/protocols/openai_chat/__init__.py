"""OpenAI Chat Completions (``POST {base_url}/chat/completions``, base URL ending in ``/v1``).

Deliberate choices, so the next reader does not have to rediscover them:

* **Round-trip markers.**  Where the wire has two spellings of one unified value (string or
  array ``content``, ``system`` or ``developer`` role, ``max_tokens`` or
  ``max_completion_tokens``, ``stop`` as a string or a list, legacy ``function_call``), the
  spelling used is kept under the reserved key ``MARK`` inside the struct's ``extra``.  Like
  every other ``extra`` value it is read back only when building for this same protocol, and
  it is never written to the wire.
* **Null and empty values.**  A known field sent as ``null`` (or ``[]``) carries nothing, so it
  stays in ``extra`` verbatim instead of becoming a unified value; a same-protocol rebuild
  writes it back unless a layer set a real value in its place.
* **System messages.**  Leading ``system``/``developer`` messages become ``Request.system``.
  One that comes *after* the conversation started is kept in place as a ``user`` message
  marked with its original role: hoisting it would change what the model sees at that point,
  and the other protocols have no mid-conversation system turn.  Another protocol therefore
  receives it as a user turn.
* **Reasoning.**  OpenAI returns none in Chat Completions, but OpenAI-compatible providers
  (DeepSeek, vLLM, OpenRouter) send ``reasoning_content`` or ``reasoning`` on the message and
  on stream deltas; both become ``Reasoning``.  Responses and streams built here carry
  unified reasoning as ``reasoning_content``: the official SDK has no such field but keeps
  it as an extra attribute (``message.reasoning_content``), and compatible clients read it.
  In a *request*, reasoning history is sent back only when it came from this protocol
  (DeepSeek wants it echoed in tool-call turns); Anthropic thinking and Gemini thoughts are
  dropped, signatures included, since no chat provider can verify them.
* **Legacy functions.**  ``functions`` / ``function_call`` / ``role: "function"`` map onto the
  tool model (ids synthesised, name-matched) with markers, so they translate to other
  protocols and still round-trip; ``finish_reason: "function_call"`` becomes ``tool_calls``.
* **Usage.**  ``prompt_tokens`` already includes ``prompt_tokens_details.cached_tokens`` and
  ``cache_write_tokens`` (OpenRouter's name for cache writes); ``completion_tokens`` already
  includes ``reasoning_tokens``, which is exactly the unified rule, so counts map one to one.
  A provider-reported cost (OpenRouter ``cost``, xAI ``cost_in_usd_ticks``) is read into
  ``Usage.cost`` (``_common.reported_cost``).
* **Streams.**  Only choice 0 is decoded (``n > 1`` is not translated).  The encoder writes
  the ``choices: []`` usage chunk only when the request asked for it
  (``stream_options.include_usage``), as OpenAI does; a request built here for another
  protocol's client asks for it, so the gateway always learns the usage.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from ...errors import GatewayError
from ...unified import Request, Response, Usage
from ..base import Codec, StreamDecoder, StreamEncoder
from .content import MARK
from .request import build_request, parse_request
from .response import (
    build_error,
    build_response,
    parse_error,
    parse_response,
    response_id_and_usage,
)
from .stream import ChatStreamDecoder, ChatStreamEncoder

__all__ = ["MARK", "OpenAIChatCodec"]


class OpenAIChatCodec(Codec):
    name: ClassVar[str] = "openai_chat"
    auth: ClassVar[str] = "bearer"
    # Which spelling a request from another protocol uses.  ``max_tokens`` is deprecated and
    # refused by OpenAI's reasoning models; a subclass can switch it for an older server.
    max_tokens_field: ClassVar[str] = "max_completion_tokens"

    # --- requests ---------------------------------------------------------------------------

    def parse_request(
        self, body: Any, *, model: str | None = None, stream: bool | None = None
    ) -> Request:
        return parse_request(self.name, body, model=model, stream=stream)

    def build_request(self, request: Request) -> dict[str, Any]:
        return build_request(self.name, self.max_tokens_field, request)

    def request_path(self, request: Request) -> str:
        return "/chat/completions"

    # --- responses --------------------------------------------------------------------------

    def parse_response(self, body: Any) -> Response:
        return parse_response(self.name, body)

    def response_id_and_usage(self, body: Any) -> tuple[str | None, Usage]:
        return response_id_and_usage(body)

    def build_response(self, response: Response, request: Request | None = None) -> dict[str, Any]:
        return build_response(self.name, response, request)

    # --- errors -----------------------------------------------------------------------------

    def parse_error(self, status: int, body: Any, headers: Mapping[str, str]) -> GatewayError:
        return parse_error(status, body, headers)

    def build_error(self, error: GatewayError) -> tuple[int, dict[str, Any]]:
        return build_error(error)

    # --- streams ----------------------------------------------------------------------------

    def stream_decoder(self) -> StreamDecoder:
        return ChatStreamDecoder()

    def stream_encoder(self, request: Request | None = None) -> StreamEncoder:
        include_usage = bool(
            request is not None and (request.include_usage or request.include_cost)
        )
        return ChatStreamEncoder(include_usage, request.model if request is not None else "")
