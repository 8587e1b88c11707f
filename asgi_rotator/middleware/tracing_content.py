"""Content capture for the Tracing layer: the messages in the GenAI conventions' JSON shape
(``gen_ai.input.messages``, ``gen_ai.output.messages``, ``gen_ai.system_instructions``,
``gen_ai.tool.definitions``), redacted and size-capped.

Only used when capture is on.  Redaction: every secret the gateway holds (provider keys,
inbound keys: ``asgi_rotator.redaction``'s registry) and anything shaped like a bearer token
or a well-known API key becomes ``[redacted]``; thinking signatures and encrypted reasoning become their length and a short
hash, enough to tell two apart and nothing to replay.  Inline images and files are never
captured, only their media type and size.
"""

from __future__ import annotations

import hashlib
import re
from typing import Any

import msgspec

from ..redaction import REDACTED
from ..redaction import redact as redact_held
from ..unified import (
    File,
    Finish,
    Image,
    Reasoning,
    ReasoningDelta,
    Request,
    Response,
    Signature,
    Text,
    TextDelta,
    ToolArgsDelta,
    ToolCall,
    ToolCallStart,
    ToolResult,
)

__all__ = ["OutputCollector", "capture_request", "capture_response", "opaque", "redact"]

# Bearer tokens and the key shapes of the well-known providers, wherever they appear.
_TOKEN = re.compile(
    r"(?i)\bbearer\s+[A-Za-z0-9._~+/=-]{8,}"
    r"|\bsk-[A-Za-z0-9_-]{16,}"
    r"|\bsk-ant-[A-Za-z0-9_-]{16,}"
    r"|\bAIza[0-9A-Za-z_-]{30,}"
    r"|\bgsk_[A-Za-z0-9]{20,}"
)
_PART_CHARS = 4096  # one text part is cut here before the whole attribute is capped

_encode = msgspec.json.Encoder().encode


def redact(text: str) -> str:
    """``text`` without any secret the gateway holds (``asgi_rotator.redaction``) and without
    token-shaped strings, which may be a client's own keys."""
    return _TOKEN.sub(REDACTED, redact_held(text))


def opaque(value: str) -> str:
    """A signature or encrypted payload as its length and a short hash."""
    digest = hashlib.sha256(value.encode()).hexdigest()[:12]
    return f"[{len(value)} chars sha256:{digest}]"


def _text(value: str) -> str:
    if len(value) > _PART_CHARS:
        value = f"{value[:_PART_CHARS]}…[{len(value) - _PART_CHARS} more chars]"
    return redact(value)


def _part(part: Any) -> dict[str, Any]:
    kind = type(part)
    if kind is Text:
        return {"type": "text", "content": _text(part.text)}
    if kind is Reasoning:
        out: dict[str, Any] = {"type": "reasoning", "content": _text(part.text)}
        if part.signature:
            out["signature"] = opaque(part.signature)
        if part.redacted:
            out["encrypted_content"] = opaque(part.redacted)
        return out
    if kind is ToolCall:
        return {
            "type": "tool_call",
            "id": part.id,
            "name": part.name,
            "arguments": _text(part.arguments),
        }
    if kind is ToolResult:
        texts = [c.text for c in part.content if type(c) is Text]
        return {
            "type": "tool_call_response",
            "id": part.tool_call_id,
            "response": _text("\n".join(texts)),
        }
    if kind is Image or kind is File:
        size = len(part.data) if part.data else 0
        out = {
            "type": "blob" if part.data else "uri",
            "modality": "image" if kind is Image else "file",
        }
        if part.media_type:
            out["mime_type"] = part.media_type
        if size:
            out["size"] = size  # the bytes themselves are never captured
        return out
    return {"type": getattr(part, "tag", kind.__name__.lower())}


def _capped(items: list[Any], max_bytes: int) -> str:
    """The JSON of ``items``, dropping the oldest until it fits (the newest matter most)."""
    raw = _encode(items)
    dropped = 0
    while len(raw) > max_bytes and items:
        items = items[1:]
        dropped += 1
        raw = _encode(
            [
                {
                    "role": "system",
                    "parts": [
                        {"type": "text", "content": f"[{dropped} earlier items not captured]"}
                    ],
                },
                *items,
            ]
        )
    if len(raw) > max_bytes:
        raw = _encode([{"type": "text", "content": "[too large to capture]"}])
    return raw.decode()


def capture_request(attributes: dict[str, Any], request: Request, max_bytes: int) -> None:
    messages = [{"role": m.role, "parts": [_part(p) for p in m.content]} for m in request.messages]
    attributes["gen_ai.input.messages"] = _capped(messages, max_bytes)
    if request.system:
        system = [{"type": "text", "content": _text(t.text)} for t in request.system]
        attributes["gen_ai.system_instructions"] = _capped(system, max_bytes)
    if request.tools:
        tools = [
            {
                "type": tool.type,
                "name": tool.name,
                **({"description": _text(tool.description)} if tool.description else {}),
                **({"parameters": tool.parameters} if tool.parameters else {}),
            }
            for tool in request.tools
        ]
        attributes["gen_ai.tool.definitions"] = _capped(tools, max_bytes)


def capture_response(span: Any, response: Response, max_bytes: int) -> None:
    message = {
        "role": "assistant",
        "parts": [_part(p) for p in response.content],
        "finish_reason": response.finish_reason,
    }
    span.set_attribute("gen_ai.output.messages", _capped([message], max_bytes))


class OutputCollector:
    """A streamed answer, gathered from its unified events (only when capture is on)."""

    __slots__ = ("blocks",)

    def __init__(self) -> None:
        self.blocks: dict[int, dict[str, Any]] = {}

    def add(self, events: list[Any]) -> None:
        blocks = self.blocks
        for event in events:
            kind = type(event)
            if kind is TextDelta:
                block = blocks.setdefault(event.index, {"type": "text", "content": []})
                block["content"].append(event.text)
            elif kind is ReasoningDelta:
                block = blocks.setdefault(event.index, {"type": "reasoning", "content": []})
                block["content"].append(event.text)
            elif kind is Signature:
                block = blocks.setdefault(event.index, {"type": "reasoning", "content": []})
                if event.signature:
                    block["signature"] = event.signature
                if event.redacted:
                    block["encrypted_content"] = event.redacted
            elif kind is ToolCallStart:
                blocks[event.index] = {
                    "type": "tool_call",
                    "id": event.id,
                    "name": event.name,
                    "content": [],
                }
            elif kind is ToolArgsDelta:
                block = blocks.setdefault(event.index, {"type": "tool_call", "content": []})
                block["content"].append(event.delta)
            elif kind is Finish:
                pass

    def attribute(self, span: Any, reason: str | None, max_bytes: int) -> None:
        parts = []
        for index in sorted(self.blocks):
            block = dict(self.blocks[index])
            text = "".join(block.pop("content"))
            if block["type"] == "tool_call":
                block["arguments"] = _text(text)
            else:
                block["content"] = _text(text)
            for key in ("signature", "encrypted_content"):
                if key in block:
                    block[key] = opaque(block[key])
            parts.append(block)
        message: dict[str, Any] = {"role": "assistant", "parts": parts}
        if reason is not None:
            message["finish_reason"] = reason
        span.set_attribute("gen_ai.output.messages", _capped([message], max_bytes))
