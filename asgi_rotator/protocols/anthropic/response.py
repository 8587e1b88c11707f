"""Anthropic Messages responses and errors: parsed into the unified ``Response`` or a
``GatewayError``, and built back in this protocol's shape."""

from __future__ import annotations

import time
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from ...errors import GatewayError, classify
from ...unified import FinishReason, Part, Reasoning, Request, Response, Text, ToolCall, Usage
from .._common import int_or_zero, reported_cost, response_object
from ..unknown_fields import marks_of, unknown_fields, wire_fields, with_marks
from .content import (
    KEYS_TYPE_DATA,
    KEYS_TYPE_ID_NAME_INPUT,
    KEYS_TYPE_TEXT,
    KEYS_TYPE_THINKING_SIGNATURE,
    MARK,
    NAME,
    build_reasoning_block,
    build_tool_use,
    insert_opaque,
    json_text,
    with_extra,
)

_RESPONSE_KEYS = frozenset(
    {"id", "type", "role", "model", "content", "stop_reason", "stop_sequence", "usage"}
)

STOP_FROM_WIRE: dict[str, FinishReason] = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "max_tokens": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
    "pause_turn": "pause",
    "model_context_window_exceeded": "length",
}
# ``error`` (a provider ended the output abnormally) has no Anthropic stop reason.
_STOP_TO_WIRE = {
    "stop": "end_turn",
    "length": "max_tokens",
    "tool_calls": "tool_use",
    "content_filter": "refusal",
    "pause": "pause_turn",
    "error": "end_turn",
}
_KIND_ERROR = {
    "rate_limited": (429, "rate_limit_error"),
    "overloaded": (529, "overloaded_error"),
    "timeout": (504, "timeout_error"),
    "connection": (502, "api_error"),
    "context_window_exceeded": (400, "invalid_request_error"),
    "content_filtered": (400, "invalid_request_error"),
    "not_found": (404, "not_found_error"),
}
_RATELIMIT_RESETS = tuple(
    f"anthropic-ratelimit-{what}-reset"
    for what in ("requests", "tokens", "input-tokens", "output-tokens")
)


def parse_response(body: Any) -> Response:
    body = response_object(body)
    marks: dict[str, Any] = {}
    content, opaque = _parse_response_blocks(body.get("content"))
    if opaque:
        marks["blocks"] = opaque
    raw_stop = body.get("stop_reason")
    stop_sequence = body.get("stop_sequence")
    response = Response(
        id=str(body.get("id") or ""),
        model=str(body.get("model") or ""),
        content=content,
        finish_reason=STOP_FROM_WIRE.get(raw_stop, "stop") if isinstance(raw_stop, str) else "stop",
        stop_sequence=stop_sequence if isinstance(stop_sequence, str) else None,
        usage=parse_usage(body.get("usage")),
        origin=NAME,
    )
    if stop_reason_of(response.finish_reason, response.stop_sequence) != raw_stop:
        marks["stop_reason"] = raw_stop
    if "stop_sequence" not in body:
        marks["no_stop_sequence"] = True
    if isinstance(body.get("usage"), dict):
        marks["usage"] = body["usage"]  # what a same-protocol rebuild restores (_usage_body)
    response.extra = with_marks(unknown_fields(body, _RESPONSE_KEYS), MARK, marks)
    return response


def response_id_and_usage(body: Any) -> tuple[str | None, Usage]:
    body = response_object(body)
    response_id = body.get("id")
    return str(response_id) if response_id else None, parse_usage(body.get("usage"))


def build_response(response: Response, request: Request | None = None) -> dict[str, Any]:
    same = response.origin == NAME
    marks = marks_of(response.extra, MARK) if same else {}
    content: list[dict[str, Any]] = []
    for part in response.content:
        block = _build_output_block(part, same)
        if block is not None:
            content.append(block)
    if same:
        insert_opaque(content, marks.get("blocks"))
    body: dict[str, Any] = wire_fields(response.extra, MARK) if same else {}
    body.update(
        id=response.id,
        type="message",
        role="assistant",
        model=response.model,
        content=content,
        stop_reason=marks["stop_reason"]
        if "stop_reason" in marks
        else stop_reason_of(response.finish_reason, response.stop_sequence),
        stop_sequence=response.stop_sequence,
        usage=_usage_body(response.usage, marks.get("usage")),
    )
    if marks.get("no_stop_sequence") and body["stop_sequence"] is None:
        del body["stop_sequence"]
    return body


def parse_error(status: int, body: Any, headers: Mapping[str, str]) -> GatewayError:
    error_type, message = error_fields(body)
    err = classify(status, message, error_type=error_type, headers=headers, body=body)
    if err.retry_after is None:
        err.retry_after = _ratelimit_reset(headers)
    return err


def build_error(error: GatewayError) -> tuple[int, dict[str, Any]]:
    status, error_type = _error_status(error)
    message = error.message
    if error.kind == "context_window_exceeded" and "prompt is too long" not in message.lower():
        message = f"prompt is too long: {message}"
    return status, {"type": "error", "error": {"type": error_type, "message": message}}


def _usage_body(usage: Usage, raw: Any) -> dict[str, Any]:
    """``usage`` in this protocol's shape.  Given the provider's own usage object (a
    same-protocol rebuild), what it sent beyond what the counts build is restored: fields
    the unified model has no place for, values it normalised, keys it would not have sent.
    The difference is taken here, not when parsing, since most responses are never rebuilt
    in their own protocol."""
    built = build_usage(usage)
    if not isinstance(raw, dict):
        return built
    as_parsed = build_usage(parse_usage(raw))
    built.update({k: v for k, v in raw.items() if k not in as_parsed or as_parsed[k] != v})
    for key in as_parsed.keys() - raw.keys():
        built.pop(key, None)
    return built


def _parse_response_blocks(raw: Any) -> tuple[list[Part], list[list[Any]]]:
    parts: list[Part] = []
    opaque: list[list[Any]] = []
    for block in raw if isinstance(raw, list) else ():
        if not isinstance(block, dict):
            continue
        part = _parse_output_block(block)
        if part is None:
            opaque.append([len(parts) + len(opaque), block])
        else:
            parts.append(part)
    return parts, opaque


def _parse_output_block(block: dict[str, Any]) -> Part | None:
    kind = block.get("type")
    if kind == "text":
        return Text(text=str(block.get("text") or ""), extra=unknown_fields(block, KEYS_TYPE_TEXT))
    if kind == "thinking":
        return Reasoning(
            text=str(block.get("thinking") or ""),
            signature=block.get("signature") if isinstance(block.get("signature"), str) else None,
            source=NAME,
            extra=unknown_fields(block, KEYS_TYPE_THINKING_SIGNATURE),
        )
    if kind == "redacted_thinking":
        return Reasoning(
            redacted=str(block.get("data") or ""),
            source=NAME,
            extra=unknown_fields(block, KEYS_TYPE_DATA),
        )
    if kind == "tool_use":
        tool_input = block.get("input")
        return ToolCall(
            id=str(block.get("id") or ""),
            name=str(block.get("name") or ""),
            arguments=json_text(tool_input if isinstance(tool_input, dict) else {}),
            extra=unknown_fields(block, KEYS_TYPE_ID_NAME_INPUT),
        )
    return None


def _build_output_block(part: Part, same: bool) -> dict[str, Any] | None:
    if isinstance(part, Text):
        return with_extra({"type": "text", "text": part.text}, part.extra, same)
    if isinstance(part, ToolCall):
        return build_tool_use(part, same)
    if isinstance(part, Reasoning):
        if part.source == NAME and (part.signature is not None or part.redacted):
            return build_reasoning_block(part, same)
        if part.text:
            # Another provider's reasoning: visible text, no Anthropic signature.
            return {"type": "thinking", "thinking": part.text, "signature": ""}
    return None


def stop_reason_of(finish: str, stop_sequence: str | None) -> str:
    if finish == "stop" and stop_sequence is not None:
        return "stop_sequence"
    return _STOP_TO_WIRE.get(finish, "end_turn")


def parse_usage(raw: Any) -> Usage:
    if not isinstance(raw, dict):
        return Usage()
    cache_write = int_or_zero(raw.get("cache_creation_input_tokens"))
    cache_read = int_or_zero(raw.get("cache_read_input_tokens"))
    details = raw.get("output_tokens_details")
    # ``cache_creation`` breaks cache_creation_input_tokens down by TTL (5 min, 1 hour): a
    # breakdown, never added; the one-hour part is kept because it is priced higher.
    by_ttl = raw.get("cache_creation")
    one_hour = (
        int_or_zero(by_ttl.get("ephemeral_1h_input_tokens")) if isinstance(by_ttl, dict) else 0
    )
    return Usage(
        input_tokens=int_or_zero(raw.get("input_tokens")) + cache_write + cache_read,
        output_tokens=int_or_zero(raw.get("output_tokens")),
        reasoning_tokens=int_or_zero(details.get("thinking_tokens"))
        if isinstance(details, dict)
        else 0,
        cache_read_tokens=cache_read,
        cache_write_tokens=cache_write,
        cache_write_1h_tokens=min(one_hour, cache_write),
        cost=reported_cost(raw),  # OpenRouter's Anthropic endpoint
    )


def build_usage(usage: Usage) -> dict[str, Any]:
    out: dict[str, Any] = {
        "input_tokens": max(
            0, usage.input_tokens - usage.cache_read_tokens - usage.cache_write_tokens
        ),
        "output_tokens": usage.output_tokens,
        "cache_creation_input_tokens": usage.cache_write_tokens,
        "cache_read_input_tokens": usage.cache_read_tokens,
    }
    if usage.cache_write_1h_tokens:
        out["cache_creation"] = {
            "ephemeral_5m_input_tokens": usage.cache_write_tokens - usage.cache_write_1h_tokens,
            "ephemeral_1h_input_tokens": usage.cache_write_1h_tokens,
        }
    if usage.reasoning_tokens:
        out["output_tokens_details"] = {"thinking_tokens": usage.reasoning_tokens}
    return out


def error_fields(body: Any) -> tuple[str | None, str]:
    if isinstance(body, dict):
        error = body.get("error")
        if isinstance(error, dict):
            error_type = error.get("type")
            message = error.get("message")
            return (
                error_type if isinstance(error_type, str) else None,
                message if isinstance(message, str) else "",
            )
        return None, ""
    if isinstance(body, (bytes, bytearray)):
        return None, bytes(body).decode("utf-8", "replace").strip()[:1000]
    return None, ""


def _error_status(error: GatewayError) -> tuple[int, str]:
    fixed = _KIND_ERROR.get(error.kind)
    if fixed is not None:
        return fixed
    status = error.status
    if error.kind == "auth":
        return (403, "permission_error") if status == 403 else (401, "authentication_error")
    if error.kind == "server_error":
        return (
            status if 500 <= status < 600 and status not in (503, 504, 529) else 500
        ), "api_error"
    # bad_request: keep a 4xx status the client should see (413, 415 ...).
    if not 400 <= status < 500 or status in (401, 403, 404, 429):
        status = 400
    if status == 413:
        return status, "request_too_large"
    if status == 402:
        return status, "billing_error"
    return status, "invalid_request_error"


def _ratelimit_reset(headers: Mapping[str, str]) -> float | None:
    """Anthropic's ``anthropic-ratelimit-*-reset`` (RFC 3339) when no ``retry-after`` came."""
    now = time.time()
    waits = []
    for name in _RATELIMIT_RESETS:
        value = headers.get(name)
        if not value:
            continue
        try:
            when = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            continue
        waits.append(max(0.0, when.timestamp() - now))
    return max(waits) if waits else None
