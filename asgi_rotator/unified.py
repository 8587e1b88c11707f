"""The protocol-neutral model every codec parses into and builds from.

Conventions that hold across the package:

* ``extra`` on a struct holds the fields of the *origin* protocol that this model does not
  name (``Request.origin`` / ``Response.origin``).  A codec writes ``extra`` back only when it
  builds for the same protocol the value came from, which is what makes a same-protocol round
  trip lossless without leaking one provider's fields into another's request.
* Tool-call ``arguments`` are JSON text, exactly as the model produced them; they are never
  re-serialised, so key order and whitespace survive.
* Provider-bound opaque payloads (Anthropic thinking ``signature``, ``redacted_thinking`` data,
  OpenAI ``encrypted_content``, Gemini ``thoughtSignature``) are kept on ``Reasoning`` parts
  together with ``source``, the protocol that issued them.  A codec only sends such a payload
  to the protocol named in ``source``; a provider rejects a signature it did not sign.

Usage counting rule (one rule, so nothing is counted twice):
``input_tokens`` is *every* input token, including cache reads and cache writes;
``output_tokens`` is *every* output token, including reasoning.  ``cache_read_tokens``,
``cache_write_tokens`` and ``reasoning_tokens`` are breakdowns already inside those totals, and
``cache_write_1h_tokens`` is the part of ``cache_write_tokens`` written with Anthropic's one-hour
TTL (priced higher).  Anthropic reports ``input_tokens`` without cache tokens and Gemini reports
candidates without thoughts (and tool-use prompt tokens beside the prompt); their codecs add
them in when parsing and take them out again when building.  ``cost`` is what the provider
itself reported charging (OpenRouter ``usage.cost``, xAI ``cost_in_usd_ticks``), in USD, or
``None``; it is not a token count and is never derived from the counts here.
"""

from __future__ import annotations

from typing import Any, Literal

import msgspec
from msgspec import Struct, field

__all__ = [
    "Block",
    "BlockStop",
    "Error",
    "Event",
    "File",
    "Finish",
    "FinishReason",
    "Image",
    "Message",
    "MessageStart",
    "OutputFormat",
    "Part",
    "Reasoning",
    "ReasoningConfig",
    "ReasoningDelta",
    "Request",
    "Response",
    "Role",
    "Signature",
    "Text",
    "TextDelta",
    "Tool",
    "ToolArgsDelta",
    "ToolCall",
    "ToolCallStart",
    "ToolChoice",
    "ToolResult",
    "Usage",
    "UsageEvent",
]

Role = Literal["user", "assistant", "tool"]
# ``stop``: natural end or a stop sequence; ``length``: max tokens; ``tool_calls``: the model
# wants tool results; ``content_filter``: refused or filtered; ``pause``: Anthropic
# ``pause_turn`` (server tool loop); ``error``: the provider ended the output abnormally.
FinishReason = Literal["stop", "length", "tool_calls", "content_filter", "pause", "error"]


class Usage(Struct, kw_only=True, omit_defaults=True, gc=False):
    input_tokens: int = 0
    output_tokens: int = 0
    reasoning_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    cache_write_1h_tokens: int = 0  # inside cache_write_tokens
    cost: float | None = None  # USD, as the provider reported it

    @property
    def total_tokens(self) -> int:
        return self.input_tokens + self.output_tokens

    def merge(self, other: Usage) -> Usage:
        """Field-wise maximum: providers repeat cumulative counts across stream events."""
        cost = self.cost if other.cost is None else max(self.cost or 0.0, other.cost)
        return Usage(
            input_tokens=max(self.input_tokens, other.input_tokens),
            output_tokens=max(self.output_tokens, other.output_tokens),
            reasoning_tokens=max(self.reasoning_tokens, other.reasoning_tokens),
            cache_read_tokens=max(self.cache_read_tokens, other.cache_read_tokens),
            cache_write_tokens=max(self.cache_write_tokens, other.cache_write_tokens),
            cache_write_1h_tokens=max(self.cache_write_1h_tokens, other.cache_write_1h_tokens),
            cost=cost,
        )


# --- content parts ---------------------------------------------------------------------------


class Text(Struct, kw_only=True, omit_defaults=True, tag="text", gc=False):
    text: str
    extra: dict[str, Any] = field(default_factory=dict)


class Image(Struct, kw_only=True, omit_defaults=True, tag="image", gc=False):
    """An image by ``url`` (http(s) or ``data:`` URL) or by inline base64 ``data``."""

    url: str | None = None
    data: str | None = None
    media_type: str | None = None
    detail: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


class File(Struct, kw_only=True, omit_defaults=True, tag="file", gc=False):
    """A document (PDF, text ...) inline (``data``, base64), by ``url`` or by provider ``file_id``."""

    data: str | None = None
    url: str | None = None
    file_id: str | None = None
    media_type: str | None = None
    filename: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


class ToolCall(Struct, kw_only=True, omit_defaults=True, tag="tool_call", gc=False):
    id: str
    name: str
    arguments: str = "{}"
    extra: dict[str, Any] = field(default_factory=dict)


class ToolResult(Struct, kw_only=True, omit_defaults=True, tag="tool_result", gc=False):
    tool_call_id: str
    # Gemini's functionResponse is matched by name, not id: codecs fill it from the call.
    name: str | None = None
    content: list[Text | Image | File] = field(default_factory=list)
    is_error: bool = False
    extra: dict[str, Any] = field(default_factory=dict)


class Reasoning(Struct, kw_only=True, omit_defaults=True, tag="reasoning", gc=False):
    """Model reasoning: visible ``text`` (thinking or summary) and/or opaque payloads.

    ``signature``: Anthropic thinking signature or Gemini ``thoughtSignature``.
    ``redacted``: Anthropic ``redacted_thinking`` data or OpenAI ``encrypted_content``.
    ``source``: the protocol that issued the payloads; they go back only to it.
    """

    text: str = ""
    signature: str | None = None
    redacted: str | None = None
    id: str | None = None
    source: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


Part = Text | Image | File | ToolCall | ToolResult | Reasoning


class Message(Struct, kw_only=True, omit_defaults=True, gc=False):
    role: Role
    content: list[Part] = field(default_factory=list)
    name: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


# --- request ---------------------------------------------------------------------------------


class Tool(Struct, kw_only=True, omit_defaults=True, gc=False):
    """A function tool; a provider built-in tool keeps its native body in ``extra``
    (``type`` other than ``function``) and only goes to its own protocol."""

    name: str
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None
    type: str = "function"
    extra: dict[str, Any] = field(default_factory=dict)


class ToolChoice(Struct, kw_only=True, omit_defaults=True, gc=False):
    mode: Literal["auto", "none", "required", "tool"] = "auto"
    name: str | None = None  # with mode == "tool"


class ReasoningConfig(Struct, kw_only=True, omit_defaults=True, gc=False):
    """``effort`` (OpenAI) and ``budget_tokens`` (Anthropic, Gemini) are both kept when given;
    a codec that needs the other one derives it (see docs/protocols.md)."""

    enabled: bool | None = None
    effort: str | None = None  # minimal | low | medium | high (provider values pass through)
    budget_tokens: int | None = None
    summary: str | None = None  # OpenAI Responses reasoning.summary
    include_thoughts: bool | None = None  # Gemini thinkingConfig.includeThoughts


class OutputFormat(Struct, kw_only=True, omit_defaults=True, gc=False):
    type: Literal["text", "json_object", "json_schema"] = "json_schema"
    name: str | None = None
    schema: dict[str, Any] | None = None
    strict: bool | None = None
    description: str | None = None


class Request(Struct, kw_only=True, omit_defaults=True, gc=False):
    model: str
    messages: list[Message] = field(default_factory=list)
    system: list[Text] = field(default_factory=list)
    tools: list[Tool] | None = None
    tool_choice: ToolChoice | None = None
    parallel_tool_calls: bool | None = None
    max_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    stop: list[str] | None = None
    seed: int | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    reasoning: ReasoningConfig | None = None
    output: OutputFormat | None = None
    stream: bool = False
    include_usage: bool | None = None  # OpenAI chat stream_options.include_usage
    # The client asked for the request's cost in its usage object (OpenRouter's
    # ``usage: {"include": true}``): the gateway writes it there (docs/usage.md).
    include_cost: bool | None = None
    metadata: dict[str, Any] | None = None
    user: str | None = None
    # OpenAI Responses state; the ResponsesState middleware consumes these.
    store: bool | None = None
    previous_response_id: str | None = None
    origin: str | None = None  # protocol name the request was parsed from
    extra: dict[str, Any] = field(default_factory=dict)


# --- response --------------------------------------------------------------------------------


class Response(Struct, kw_only=True, omit_defaults=True, gc=False):
    id: str
    model: str
    content: list[Part] = field(default_factory=list)
    finish_reason: FinishReason = "stop"
    stop_sequence: str | None = None
    usage: Usage = field(default_factory=Usage)
    created: int = 0
    origin: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


# --- stream events ---------------------------------------------------------------------------
# ``index`` is the position of the content block in the response's ``content``: a decoder
# numbers blocks 0, 1, 2 ... in the order they start, whatever the wire protocol numbers.
# A block starts implicitly with its first delta (or explicitly with ToolCallStart) and ends
# with BlockStop. ``Finish`` is the last event of a completed stream and carries final usage.


class MessageStart(Struct, kw_only=True, omit_defaults=True, tag="message_start", gc=False):
    id: str
    model: str
    usage: Usage | None = None
    created: int = 0


class TextDelta(Struct, kw_only=True, omit_defaults=True, tag="text_delta", gc=False):
    index: int
    text: str


class ReasoningDelta(Struct, kw_only=True, omit_defaults=True, tag="reasoning_delta", gc=False):
    index: int
    text: str
    id: str | None = None


class Signature(Struct, kw_only=True, omit_defaults=True, tag="signature", gc=False):
    """Opaque reasoning payloads for block ``index`` (a reasoning block)."""

    index: int
    signature: str | None = None
    redacted: str | None = None
    source: str | None = None
    id: str | None = None


class ToolCallStart(Struct, kw_only=True, omit_defaults=True, tag="tool_call_start", gc=False):
    index: int
    id: str
    name: str


class ToolArgsDelta(Struct, kw_only=True, omit_defaults=True, tag="tool_args_delta", gc=False):
    index: int
    delta: str


class BlockStop(Struct, kw_only=True, omit_defaults=True, tag="block_stop", gc=False):
    index: int


class UsageEvent(Struct, kw_only=True, omit_defaults=True, tag="usage", gc=False):
    usage: Usage


class Finish(Struct, kw_only=True, omit_defaults=True, tag="finish", gc=False):
    reason: FinishReason = "stop"
    usage: Usage | None = None
    stop_sequence: str | None = None


class Error(Struct, kw_only=True, tag="error"):
    """An in-band error; ``error`` is an ``asgi_rotator.errors.GatewayError``."""

    error: Any


Event = (
    MessageStart
    | TextDelta
    | ReasoningDelta
    | Signature
    | ToolCallStart
    | ToolArgsDelta
    | BlockStop
    | UsageEvent
    | Finish
    | Error
)
Block = Text | Reasoning | ToolCall

# Built once: used by tests and the state store to serialise unified values.
encoder = msgspec.json.Encoder()
request_decoder = msgspec.json.Decoder(Request)
response_decoder = msgspec.json.Decoder(Response)
