"""OpenAI Responses responses and errors: parsed into the unified ``Response`` or a
``GatewayError``, and built back in this protocol's shape."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from ...errors import DEFAULT_STATUS, GatewayError, classify
from ...unified import FinishReason, Part, Request, Response, Text, ToolCall, Usage
from .._common import int_or_zero, reported_cost, response_object
from ..unknown_fields import marks_of, unknown_fields, wire_fields
from .content import (
    MARK,
    NAME,
    assistant_items,
    parse_content_part,
    parse_function_call,
    parse_reasoning_item,
)
from .request import build_settings

INCOMPLETE_FINISH: dict[str, FinishReason] = {
    "max_output_tokens": "length",
    "content_filter": "content_filter",
}
_FINISH_INCOMPLETE = {"length": "max_output_tokens", "content_filter": "content_filter"}

# kind -> (error.type, error.code) of the HTTP error body (API reference "Error codes").
_ERROR_SHAPE: dict[str, tuple[str, str | None]] = {
    "rate_limited": ("rate_limit_error", "rate_limit_exceeded"),
    "overloaded": ("server_error", "server_overloaded"),
    "server_error": ("server_error", None),
    "timeout": ("server_error", "timeout"),
    "connection": ("server_error", "upstream_connection_error"),
    "context_window_exceeded": ("invalid_request_error", "context_length_exceeded"),
    "content_filtered": ("invalid_request_error", "content_policy_violation"),
    "auth": ("authentication_error", "invalid_api_key"),
    "bad_request": ("invalid_request_error", None),
    "not_found": ("invalid_request_error", "not_found"),
}

# Known-key sets for ``unknown_fields``, made once rather than per call.
_KEYS_CONTENT = frozenset({"content"})


def parse_response(body: Any) -> Response:
    body = response_object(body)
    output = body.get("output")
    output = output if isinstance(output, list) else []
    content, opaque = _parse_output(output)
    status = body.get("status")
    finish: FinishReason = "stop"
    if status == "completed":
        if any(isinstance(p, ToolCall) for p in content):
            finish = "tool_calls"
    elif status == "incomplete":
        details = body.get("incomplete_details")
        reason = details.get("reason") if isinstance(details, dict) else None
        finish = INCOMPLETE_FINISH.get(str(reason), "length")
    elif status == "failed":
        finish = "error"
    created = body.get("created_at")
    response = Response(
        id=str(body.get("id") or ""),
        model=str(body.get("model") or ""),
        content=content,
        finish_reason=finish,
        usage=parse_usage(body.get("usage")),
        created=int(created) if isinstance(created, (int, float)) else 0,
        origin=NAME,
    )
    # Keep upstream values the unified fields cannot reproduce exactly.
    derived = _derived_response_fields(response)
    consumed = {"id", "model", "output"} | {
        k for k, v in derived.items() if k in body and body[k] == v
    }
    extra = {k: v for k, v in body.items() if k not in consumed}
    mark: dict[str, Any] = {}
    absent = [k for k in derived if k not in body]
    if absent:
        mark["absent"] = absent
    if opaque:
        mark["opaque"] = opaque
    if mark:
        extra[MARK] = mark
    response.extra = extra
    return response


def response_id_and_usage(body: Any) -> tuple[str | None, Usage]:
    body = response_object(body)
    response_id = body.get("id")
    return str(response_id) if response_id else None, parse_usage(body.get("usage"))


def build_response(response: Response, request: Request | None = None) -> dict[str, Any]:
    own = response.origin == NAME
    output = assistant_items(response.content, own, for_response=True)
    mark = marks_of(response.extra, MARK) if own else {}
    for at, item in mark.get("opaque", ()):
        output.insert(min(at, len(output)), item)
    extra = wire_fields(response.extra, MARK) if own else {}
    if own:
        # The upstream's own echo fields are in extra: nothing is invented.
        body: dict[str, Any] = {"id": response.id, **extra, "model": response.model}
    else:
        body = response_envelope(
            response.id, response.model, response.created, "completed", request
        )
    body["output"] = output
    for key, value in _derived_response_fields(response).items():
        if key not in extra:
            body[key] = value
    for key in mark.get("absent", ()):
        body.pop(key, None)
    return body


def parse_error(status: int, body: Any, headers: Mapping[str, str]) -> GatewayError:
    message, error_type, param = "", None, None
    if isinstance(body, dict):
        error = body.get("error")
        if isinstance(error, dict):
            message = str(error.get("message") or "")
            error_type = error.get("code") or error.get("type")
            param = error.get("param")
        elif isinstance(error, str):
            message = error
    elif isinstance(body, (bytes, bytearray)):
        message = bytes(body[:2000]).decode("utf-8", "replace").strip()
    err = classify(
        status,
        message,
        error_type=str(error_type) if error_type else None,
        headers=headers,
        body=body,
        provider=NAME,
    )
    if isinstance(param, str):
        err.param = param
    return err


def build_error(error: GatewayError) -> tuple[int, dict[str, Any]]:
    error_type, code = _ERROR_SHAPE[error.kind]
    if error.kind == "rate_limited" and error.quota:
        error_type = code = "insufficient_quota"
    elif error.kind == "auth" and error.status == 403:
        error_type, code = "permission_error", None
    status = error.status
    if error.kind == "overloaded" or status < 400 or status > 599 or status == 529:
        status = DEFAULT_STATUS[error.kind]
    body = {
        "error": {
            "message": error.message,
            "type": error_type,
            "param": error.param,
            "code": error.code or code,
        }
    }
    return status, body


def _parse_output(output: list[Any]) -> tuple[list[Part], list[list[Any]]]:
    content: list[Part] = []
    opaque: list[list[Any]] = []
    for i, item in enumerate(output):
        kind = item.get("type") if isinstance(item, dict) else None
        try:
            if kind == "message":
                fields = unknown_fields(item, _KEYS_CONTENT)
                parts = item.get("content")
                texts = [
                    parse_content_part(p, f"output[{i}].content[{j}]", "output_text")
                    for j, p in enumerate(parts if isinstance(parts, list) else ())
                ]
                if texts and all(isinstance(t, Text) for t in texts):
                    texts[0].extra[MARK] = {"item": fields}
                    content.extend(texts)
                    continue
            elif kind == "function_call":
                content.append(parse_function_call(item, f"output[{i}]"))
                continue
            elif kind == "reasoning":
                content.append(parse_reasoning_item(item, f"output[{i}]"))
                continue
        except GatewayError:
            pass  # an odd item the unified model cannot hold: carried as it is
        opaque.append([i, item])
    return content, opaque


def parse_usage(raw: Any) -> Usage:
    if not isinstance(raw, dict):
        return Usage()
    inp = raw.get("input_tokens_details")
    out = raw.get("output_tokens_details")
    inp = inp if isinstance(inp, dict) else {}
    out = out if isinstance(out, dict) else {}
    return Usage(
        input_tokens=int_or_zero(raw.get("input_tokens")),
        output_tokens=int_or_zero(raw.get("output_tokens")),
        reasoning_tokens=int_or_zero(out.get("reasoning_tokens")),
        cache_read_tokens=int_or_zero(inp.get("cached_tokens")),
        cache_write_tokens=int_or_zero(inp.get("cache_write_tokens")),
        cost=reported_cost(raw),  # xAI and OpenRouter report it here too
    )


def usage_body(usage: Usage) -> dict[str, Any]:
    # OpenAI counts like the unified rule: input includes cached, output includes reasoning.
    return {
        "input_tokens": usage.input_tokens,
        "input_tokens_details": {
            "cached_tokens": usage.cache_read_tokens,
            "cache_write_tokens": usage.cache_write_tokens,
        },
        "output_tokens": usage.output_tokens,
        "output_tokens_details": {"reasoning_tokens": usage.reasoning_tokens},
        "total_tokens": usage.total_tokens,
    }


def status_fields(finish: FinishReason, message: str | None = None) -> dict[str, Any]:
    if finish in _FINISH_INCOMPLETE:
        return {
            "status": "incomplete",
            "incomplete_details": {"reason": _FINISH_INCOMPLETE[finish]},
            "error": None,
        }
    if finish == "error":
        return {
            "status": "failed",
            "incomplete_details": None,
            "error": {
                "code": "server_error",
                "message": message or "The model ended the response abnormally.",
            },
        }
    return {"status": "completed", "incomplete_details": None, "error": None}


def _derived_response_fields(response: Response) -> dict[str, Any]:
    out: dict[str, Any] = {"object": "response", "created_at": response.created or int(time.time())}
    out.update(status_fields(response.finish_reason))
    out["usage"] = usage_body(response.usage)
    return out


def response_envelope(
    response_id: str,
    model: str,
    created: int,
    status: str,
    request: Request | None,
) -> dict[str, Any]:
    """A response object in the field order of the API reference, with the request echo
    (``tools``, ``tool_choice`` ... are required by the SDK's ``Response`` type)."""
    body: dict[str, Any] = {
        "id": response_id,
        "object": "response",
        "created_at": created or int(time.time()),
        "status": status,
        "background": False,
        "error": None,
        "incomplete_details": None,
        "instructions": None,
        "max_output_tokens": None,
        "model": model,
        "output": [],
        "parallel_tool_calls": True,
        "previous_response_id": None,
        "reasoning": {"effort": None, "summary": None},
        "store": True,
        "temperature": 1.0,
        "text": {"format": {"type": "text"}},
        "tool_choice": "auto",
        "tools": [],
        "top_p": 1.0,
        "truncation": "disabled",
        "usage": None,
        "user": None,
        "metadata": {},
    }
    if request is not None:
        own = request.origin == NAME
        echo = build_settings(request, own, marks_of(request.extra, MARK) if own else {})
        if "reasoning" in echo:
            echo["reasoning"] = {"effort": None, "summary": None, **echo["reasoning"]}
        body.update(echo)
    return body
