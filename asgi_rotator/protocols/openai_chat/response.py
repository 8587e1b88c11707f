"""OpenAI Chat Completions responses and errors: parsed into the unified ``Response`` or a
``GatewayError``, and built back in this protocol's shape."""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from typing import Any

from ...errors import DEFAULT_STATUS, GatewayError, classify
from ...unified import FinishReason, Part, Request, Response, Text, ToolCall, Usage
from .._common import int_or_zero, new_id, reported_cost, response_object
from ..unknown_fields import marks_of, unknown_fields, write_back
from .content import MARK, REASONING_FIELDS, build_assistant, parse_reasoning, parse_tool_calls

_RESPONSE_MESSAGE_FIELDS = frozenset(
    {"role", "content", "refusal", "tool_calls", "function_call", *REASONING_FIELDS}
)
_CHOICE_FIELDS = frozenset({"message", "finish_reason"})
_RESPONSE_FIELDS = frozenset({"id", "object", "created", "model", "choices", "usage"})

_FINISH_IN: dict[str, FinishReason] = {
    "stop": "stop",
    "length": "length",
    "tool_calls": "tool_calls",
    "content_filter": "content_filter",
    "function_call": "tool_calls",
}
# Chat has no pause or abnormal-end reason: both read as a plain stop.
FINISH_OUT: dict[str, str] = {
    "stop": "stop",
    "length": "length",
    "tool_calls": "tool_calls",
    "content_filter": "content_filter",
    "pause": "stop",
    "error": "stop",
}

# (type, code) of the error body per kind, as OpenAI sends them (API reference, "Error codes").
_ERROR_SHAPE: dict[str, tuple[str, str | None]] = {
    "rate_limited": ("requests", "rate_limit_exceeded"),
    "overloaded": ("server_error", None),
    "server_error": ("server_error", None),
    "timeout": ("server_error", "timeout"),
    "connection": ("server_error", None),
    "context_window_exceeded": ("invalid_request_error", "context_length_exceeded"),
    "content_filtered": ("invalid_request_error", "content_policy_violation"),
    "auth": ("invalid_request_error", "invalid_api_key"),
    "bad_request": ("invalid_request_error", None),
    "not_found": ("invalid_request_error", None),
}


def parse_response(name: str, body: Any) -> Response:
    body = response_object(body)
    marks: dict[str, Any] = {}
    choices = body.get("choices")
    choice: dict[str, Any] = {}
    if isinstance(choices, list) and choices and isinstance(choices[0], dict):
        choice = choices[0]
        if len(choices) > 1:
            marks["choices"] = choices[1:]
    message = choice.get("message")
    message = message if isinstance(message, dict) else {}
    content, reasoning_rest = parse_reasoning(message, name)
    text = message.get("content")
    if isinstance(text, str):
        if text:
            content.append(Text(text=text))
        marks["content"] = "string"
    elif isinstance(text, list):  # some compatible servers answer with parts
        content.extend(_lenient_text_parts(text))
    refusal = message.get("refusal")
    if isinstance(refusal, str) and refusal:
        content.append(Text(text=refusal, extra={MARK: {"refusal": "field"}}))
    if "tool_calls" in message or "function_call" in message:
        content.extend(parse_tool_calls(message, "choices[0].message", strict=False))
    message_extra = unknown_fields(
        message, _RESPONSE_MESSAGE_FIELDS, keep_null=True, keep_empty=True
    )
    if reasoning_rest:
        message_extra.update(reasoning_rest)
    if message_extra:
        marks["message"] = message_extra
    choice_extra = unknown_fields(choice, _CHOICE_FIELDS, keep_null=True, keep_empty=True)
    if choice_extra:
        marks["choice"] = choice_extra
    raw_reason = choice.get("finish_reason")
    reason = finish_reason_of(raw_reason, content)
    if raw_reason != reason:
        marks["finish_reason"] = [raw_reason, reason]  # provider spelling, what it became
    usage = body.get("usage")
    if "usage" in body:
        marks["usage"] = usage
    extra = unknown_fields(body, _RESPONSE_FIELDS)
    if marks:
        extra[MARK] = marks
    created = body.get("created")
    return Response(
        id=str_or(body.get("id"), "") or new_id("chatcmpl-"),
        model=str_or(body.get("model"), ""),
        content=content,
        finish_reason=reason,
        usage=parse_usage(usage),
        created=created if isinstance(created, int) else 0,
        origin=name,
        extra=extra,
    )


def response_id_and_usage(body: Any) -> tuple[str | None, Usage]:
    body = response_object(body)
    return str_or(body.get("id"), "") or None, parse_usage(body.get("usage"))


def build_response(name: str, response: Response, request: Request | None = None) -> dict[str, Any]:
    same = response.origin == name
    marks = marks_of(response.extra, MARK) if same else {}
    message = build_assistant(response.content, name, same, marks, response=True)
    write_back(message, marks.get("message", {}), MARK)
    message.setdefault("content", None)  # required (nullable) in a response
    reason: str | None = FINISH_OUT[response.finish_reason]
    raw_reason, became = marks.get("finish_reason", (None, None))
    if became == response.finish_reason:
        reason = raw_reason  # the provider's own spelling, unless a layer changed it
    choice: dict[str, Any] = {"index": 0, "message": message, "finish_reason": reason}
    if same:
        write_back(choice, marks.get("choice", {}), MARK)
    else:
        choice["logprobs"] = None
    out: dict[str, Any] = {
        "id": response.id,
        "object": "chat.completion",
        "created": response.created or int(time.time()),
        "model": response.model,
        "choices": [choice, *marks.get("choices", ())],
    }
    if not same or marks.get("usage") is not None or response.usage != Usage():
        out["usage"] = build_usage(response.usage, marks.get("usage"))
    elif "usage" in marks:
        out["usage"] = None  # the provider's null; an absent usage stays absent
    if same:
        write_back(out, response.extra, MARK)
    return out


def parse_error(status: int, body: Any, headers: Mapping[str, str]) -> GatewayError:
    message, error_type, param = error_fields(body)
    err = classify(status, message, error_type=error_type, headers=headers, body=body)
    err.param = param
    return err


def build_error(error: GatewayError) -> tuple[int, dict[str, Any]]:
    status = error.status
    if error.kind == "overloaded":
        status = 503  # the OpenAI SDK has no 529; 503 is its "try again later"
    elif not 400 <= status <= 599:
        status = DEFAULT_STATUS[error.kind]
    return status, {"error": error_body(error)}


def _lenient_text_parts(parts: list[Any]) -> list[Part]:
    return [
        Text(text=p["text"])
        for p in parts
        if isinstance(p, dict) and p.get("type") == "text" and isinstance(p.get("text"), str)
    ]


def finish_reason_of(raw: Any, content: Iterable[Part] = ()) -> FinishReason:
    reason = _FINISH_IN.get(raw, "stop") if isinstance(raw, str) else "stop"
    # Some compatible servers say "stop" after calling tools; what follows needs tool_calls.
    if reason == "stop":
        for part in content:
            if isinstance(part, ToolCall):
                return "tool_calls"
    return reason


def parse_usage(raw: Any) -> Usage:
    if not isinstance(raw, dict):
        return Usage()
    prompt = raw.get("prompt_tokens_details")
    completion = raw.get("completion_tokens_details")
    prompt = prompt if isinstance(prompt, dict) else {}
    completion = completion if isinstance(completion, dict) else {}
    return Usage(
        input_tokens=int_or_zero(raw.get("prompt_tokens")),
        output_tokens=int_or_zero(raw.get("completion_tokens")),
        cache_read_tokens=int_or_zero(prompt.get("cached_tokens")),
        cache_write_tokens=int_or_zero(prompt.get("cache_write_tokens")),
        reasoning_tokens=int_or_zero(completion.get("reasoning_tokens")),
        cost=reported_cost(raw),
    )


def build_usage(usage: Usage, raw: Any = None) -> dict[str, Any]:
    built: dict[str, Any] = {
        "prompt_tokens": usage.input_tokens,
        "completion_tokens": usage.output_tokens,
        "total_tokens": usage.total_tokens,
        "prompt_tokens_details": {"cached_tokens": usage.cache_read_tokens},
        "completion_tokens_details": {"reasoning_tokens": usage.reasoning_tokens},
    }
    if usage.cache_write_tokens:
        built["prompt_tokens_details"]["cache_write_tokens"] = usage.cache_write_tokens
    if usage.cost is not None and usage.cost != reported_cost(raw):
        # USD, where OpenRouter puts it; the provider's own figure (BYOK fee and upstream
        # cost apart) stays as it sent it.
        built["cost"] = usage.cost
    if not isinstance(raw, dict) or not raw:
        return built
    # Same protocol: the provider's own object, with the counts a layer may have changed.
    return _overlay(raw, built)


def _overlay(raw: dict[str, Any], built: dict[str, Any]) -> dict[str, Any]:
    out = dict(raw)
    for key, value in built.items():
        if isinstance(value, dict):
            inner = out.get(key)
            if isinstance(inner, dict):
                out[key] = _overlay(inner, value)
            elif any(value.values()):
                out[key] = value
        elif key in out or value:
            out[key] = value
    return out


def error_fields(body: Any) -> tuple[str, str | None, str | None]:
    """Message, type-or-code and param of an error body in OpenAI's shape or a compatible
    server's variant (a list around it, a bare string, vLLM's top-level fields)."""
    if isinstance(body, list) and body:
        body = body[0]
    if isinstance(body, (bytes, bytearray)):
        return body.decode("utf-8", "replace").strip()[:2000], None, None
    if not isinstance(body, dict):
        return "", None, None
    error = body.get("error", body)
    if isinstance(error, str):
        return error, None, None
    if not isinstance(error, dict):
        return "", None, None
    code, kind = error.get("code"), error.get("type")
    # The code is the more specific word (context_length_exceeded, insufficient_quota).
    error_type = code if isinstance(code, str) and code else kind if isinstance(kind, str) else None
    param = error.get("param")
    return str_or(error.get("message"), ""), error_type, param if isinstance(param, str) else None


def error_body(error: GatewayError) -> dict[str, Any]:
    kind, code = _ERROR_SHAPE[error.kind]
    if error.kind == "rate_limited" and error.quota:
        kind = code = "insufficient_quota"
    elif error.kind == "auth" and error.status == 403:
        kind, code = "permission_error", None
    return {"message": error.message, "type": kind, "param": error.param, "code": code}


def str_or(value: Any, default: str) -> str:
    return value if isinstance(value, str) else default
