"""Gemini generateContent responses and errors: parsed into the unified ``Response`` or a
``GatewayError``, and built back in this protocol's shape."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ...errors import GatewayError, classify
from ...unified import FinishReason, Part, Reasoning, Request, Response, ToolCall, Usage
from .._common import int_or_zero, new_id, response_object
from ..unknown_fields import marks_of, own_marks, unknown_fields, wire_fields
from .content import (
    MARK,
    NAME,
    PARTS_KNOWN,
    RAW_PARTS,
    SYNTHETIC_ID,
    build_parts,
    get_field,
    known_fields,
    parse_parts,
    snake_names,
    wire_key,
    with_snake,
)

# More markers (see request.py), for responses.
_CANDIDATE = "candidate"
_CONTENT = "content"
_MORE_CANDIDATES = "candidates"
_NO_CANDIDATES = "noCandidates"
_NO_FINISH = "noFinishReason"
_USAGE = "usage"  # {"set": {...}, "drop": [...]} against the canonical usageMetadata
_TOOL_USE_TOKENS = "toolUsePromptTokens"

# FinishReason (google.genai.types.FinishReason / API reference "Candidate.FinishReason").
FINISH_IN: dict[str, FinishReason] = {
    "STOP": "stop",
    "MAX_TOKENS": "length",
    "SAFETY": "content_filter",
    "RECITATION": "content_filter",
    "BLOCKLIST": "content_filter",
    "PROHIBITED_CONTENT": "content_filter",
    "SPII": "content_filter",
    "IMAGE_SAFETY": "content_filter",
    "IMAGE_PROHIBITED_CONTENT": "content_filter",
    "IMAGE_RECITATION": "content_filter",
    "MALFORMED_FUNCTION_CALL": "error",
    "OTHER": "error",  # what an abnormal end is built as (FINISH_OUT), so it reads back
}
FINISH_OUT: dict[str, str] = {
    "stop": "STOP",
    "length": "MAX_TOKENS",
    "tool_calls": "STOP",  # Gemini ends a function-calling turn with STOP
    "content_filter": "SAFETY",
    "pause": "STOP",
    "error": "OTHER",
}

# google.rpc.Code names by HTTP status (API reference "Troubleshooting / error codes").
_STATUS_NAME = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    409: "ABORTED",
    429: "RESOURCE_EXHAUSTED",
    499: "CANCELLED",
    500: "INTERNAL",
    501: "NOT_IMPLEMENTED",
    502: "UNAVAILABLE",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}
_STATUS_CODE = {
    "INVALID_ARGUMENT": 400,
    "FAILED_PRECONDITION": 400,
    "OUT_OF_RANGE": 400,
    "UNAUTHENTICATED": 401,
    "PERMISSION_DENIED": 403,
    "NOT_FOUND": 404,
    "ABORTED": 409,
    "ALREADY_EXISTS": 409,
    "RESOURCE_EXHAUSTED": 429,
    "CANCELLED": 499,
    "INTERNAL": 500,
    "UNKNOWN": 500,
    "DATA_LOSS": 500,
    "NOT_IMPLEMENTED": 501,
    "UNAVAILABLE": 503,
    "DEADLINE_EXCEEDED": 504,
}

_RESPONSE_BODY_KNOWN = known_fields("candidates", "usageMetadata", "responseId", "modelVersion")
_CANDIDATE_KNOWN = known_fields("content", "finishReason")


def wants_thoughts(request: Request | None) -> bool:
    """A Gemini client sees thought text only with includeThoughts; another provider's
    reasoning is shown under the same rule (unknown request: shown)."""
    if request is None:
        return True
    return request.reasoning is not None and request.reasoning.include_thoughts is True


def _retry_delay(seconds: float) -> str:
    return f"{round(seconds, 3):g}s"


def parse_response(body: Any) -> Response:
    body = response_object(body)
    try:
        return _parse_response(body)
    except GatewayError as error:
        # A malformed upstream body is the provider's fault, not the client's.
        raise GatewayError(
            "server_error", f"upstream sent a malformed response: {error.message}", status=502
        ) from None


def response_id_and_usage(body: Any) -> tuple[str | None, Usage]:
    body = response_object(body)
    snake: set[str] = set()
    response_id = get_field(body, "responseId", snake)
    usage = get_field(body, "usageMetadata", snake)
    return (
        response_id if isinstance(response_id, str) and response_id else None,
        parse_usage(usage, snake)[0] if isinstance(usage, dict) else Usage(),
    )


def _parse_response(body: dict[str, Any]) -> Response:
    snake: set[str] = set()
    extra = unknown_fields(body, _RESPONSE_BODY_KNOWN)
    response_id = get_field(body, "responseId", snake)
    if not isinstance(response_id, str) or not response_id:
        response_id = new_id("resp_")
        own_marks(extra, MARK)[SYNTHETIC_ID] = True
    model = get_field(body, "modelVersion", snake)
    response = Response(id=response_id, model=model if isinstance(model, str) else "", origin=NAME)
    candidates = get_field(body, "candidates", snake)
    finish = None
    if isinstance(candidates, list) and candidates:
        candidate = candidates[0] if isinstance(candidates[0], dict) else {}
        if len(candidates) > 1:
            own_marks(extra, MARK)[_MORE_CANDIDATES] = candidates[1:]
        response.content, finish = _parse_candidate(candidate, extra, snake)
    else:
        own_marks(extra, MARK)[_NO_CANDIDATES] = True
        if candidates is not None:
            own_marks(extra, MARK)[_MORE_CANDIDATES] = candidates
    response.finish_reason = _finish_reason(finish, response.content, body)
    if finish is not None and FINISH_OUT[response.finish_reason] != finish:
        own_marks(extra, MARK)[_CANDIDATE][wire_key("finishReason", snake)] = finish
    usage = get_field(body, "usageMetadata", snake)
    if isinstance(usage, dict):
        response.usage, tool_tokens = parse_usage(usage, snake)
        if tool_tokens:
            own_marks(extra, MARK)[_TOOL_USE_TOKENS] = tool_tokens
        canonical = build_usage(response.usage, tool_tokens, frozenset(snake))
        own_marks(extra, MARK)[_USAGE] = {
            "set": {k: v for k, v in usage.items() if canonical.get(k) != v},
            "drop": [k for k in canonical if k not in usage],
        }
    response.extra = with_snake(extra, snake)
    return response


def _parse_candidate(
    candidate: dict[str, Any], extra: dict[str, Any], snake: set[str]
) -> tuple[list[Part], str | None]:
    own_marks(extra, MARK)[_CANDIDATE] = unknown_fields(candidate, _CANDIDATE_KNOWN)
    finish = get_field(candidate, "finishReason", snake)
    content = get_field(candidate, "content", snake)
    if finish is None:
        own_marks(extra, MARK)[_NO_FINISH] = True
    if not isinstance(content, dict):
        own_marks(extra, MARK)[_CONTENT] = None  # e.g. a SAFETY candidate carries no content
        return [], finish if isinstance(finish, str) else None
    own_marks(extra, MARK)[_CONTENT] = unknown_fields(content, PARTS_KNOWN)
    parts = content.get("parts")
    unified, raw = parse_parts(
        parts if isinstance(parts, list) else [], "candidates[0].content.parts", "model", None
    )
    if raw:
        own_marks(extra, MARK)[RAW_PARTS] = raw
    return unified, finish if isinstance(finish, str) else None


def _finish_reason(
    finish: str | None, content: list[Part], body: Mapping[str, Any]
) -> FinishReason:
    if finish is None:
        feedback = body.get("promptFeedback") or body.get("prompt_feedback")
        if isinstance(feedback, dict) and (
            feedback.get("blockReason") or feedback.get("block_reason")
        ):
            return "content_filter"
    reason = FINISH_IN.get(finish or "STOP", "stop")
    if reason == "stop" and any(isinstance(p, ToolCall) for p in content):
        return "tool_calls"
    return reason


def build_response(response: Response, request: Request | None = None) -> dict[str, Any]:
    same = response.origin == NAME
    rx = response.extra if same else {}
    rm = marks_of(rx, MARK)
    snake = snake_names(rx)
    body: dict[str, Any] = {}
    if not rm.get(_NO_CANDIDATES):
        candidate: dict[str, Any] = {}
        if rm.get(_CONTENT, {}) is not None:
            content = response.content
            if not same and not wants_thoughts(request):
                content = [p for p in content if not isinstance(p, Reasoning)]
            parts = _build_response_parts(content, same)
            for position, part in rm.get(RAW_PARTS, ()):
                parts.insert(position, part)
            candidate[wire_key("content", snake)] = {
                "parts": parts,
                **rm.get(_CONTENT, {"role": "model"}),
            }
        if not rm.get(_NO_FINISH):
            candidate[wire_key("finishReason", snake)] = FINISH_OUT[response.finish_reason]
        candidate.update(rm[_CANDIDATE] if _CANDIDATE in rm else {"index": 0})
        body["candidates"] = [candidate, *rm.get(_MORE_CANDIDATES, ())]
    elif _MORE_CANDIDATES in rm:
        body["candidates"] = rm[_MORE_CANDIDATES]
    usage = build_usage(response.usage, rm.get(_TOOL_USE_TOKENS, 0), snake)
    residual = rm.get(_USAGE)
    if residual is not None:
        usage.update(residual["set"])
        for key in residual["drop"]:
            usage.pop(key, None)
    if residual is not None or not same:
        body[wire_key("usageMetadata", snake)] = usage
    if response.model:
        body[wire_key("modelVersion", snake)] = response.model
    if not rm.get(SYNTHETIC_ID):
        body[wire_key("responseId", snake)] = response.id
    body.update(wire_fields(rx, MARK))
    return body


def _build_response_parts(content: list[Part], same: bool) -> list[dict[str, Any]]:
    if same:
        return build_parts(content, True, {}, "content")
    # For a Gemini client the unified id is the one it echoes back: send it along.
    parts = build_parts(content, False, {}, "content", show_foreign_thoughts=True)
    calls = iter(p for p in content if isinstance(p, ToolCall))
    for part in parts:
        if "functionCall" in part:
            part["functionCall"]["id"] = next(calls).id
    return parts


def parse_error(status: int, body: Any, headers: Mapping[str, str]) -> GatewayError:
    if isinstance(body, list) and body:
        body = body[0]  # streamGenerateContent without alt=sse wraps errors in a list
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, dict):
        message = str(error.get("message") or "")
        error_type = error.get("status")
    else:
        raw = body.decode("utf-8", "replace") if isinstance(body, (bytes, bytearray)) else ""
        message, error_type = raw.strip()[:2000], None
    # A bad API key is 400 INVALID_ARGUMENT with ErrorInfo.reason API_KEY_INVALID
    # ("Troubleshooting"): classify it as auth, keeping the provider's status.
    key_invalid = isinstance(error, dict) and any(
        isinstance(d, dict) and d.get("reason") == "API_KEY_INVALID"
        for d in error.get("details") or ()
    )
    classified = classify(
        401 if key_invalid else status,
        message,
        error_type=error_type if isinstance(error_type, str) else None,
        headers=headers,
        body=body,
    )
    classified.upstream_status = status
    return classified


def build_error(error: GatewayError) -> tuple[int, dict[str, Any]]:
    status = error.status
    if status == 529:
        status = 503  # Anthropic's overloaded: Gemini's is UNAVAILABLE / 503
    elif not 400 <= status <= 599:
        status = 500
    name = error.code if error.code in _STATUS_CODE and _STATUS_CODE[error.code] == status else None
    body: dict[str, Any] = {
        "code": status,
        "message": error.message,
        "status": name
        or _STATUS_NAME.get(status, "INTERNAL" if status >= 500 else "INVALID_ARGUMENT"),
    }
    if error.retry_after is not None:
        body["details"] = [
            {
                "@type": "type.googleapis.com/google.rpc.RetryInfo",
                "retryDelay": _retry_delay(error.retry_after),
            }
        ]
    return status, {"error": body}


def parse_usage(usage: Mapping[str, Any], snake: set[str]) -> tuple[Usage, int]:
    def count(name: str) -> int:
        return int_or_zero(get_field(usage, name, snake))

    thoughts = count("thoughtsTokenCount")
    tool_tokens = count("toolUsePromptTokenCount")
    prompt = count("promptTokenCount")
    candidates = count("candidatesTokenCount")
    # usageMetadata: totalTokenCount = prompt + toolUsePrompt + candidates + thoughts, the
    # thoughts being outside candidatesTokenCount.  A total that already balances without
    # them says this backend counted thoughts inside the candidates: not added twice.
    total = count("totalTokenCount")
    output = (
        candidates
        if thoughts and total == prompt + tool_tokens + candidates
        else (candidates + thoughts)
    )
    return (
        Usage(
            input_tokens=prompt + tool_tokens,
            output_tokens=output,
            reasoning_tokens=thoughts,
            cache_read_tokens=count("cachedContentTokenCount"),
        ),
        tool_tokens,
    )


def build_usage(usage: Usage, tool_tokens: int, snake: frozenset[str]) -> dict[str, Any]:
    out = {
        wire_key("promptTokenCount", snake): max(0, usage.input_tokens - tool_tokens),
        wire_key("candidatesTokenCount", snake): max(
            0, usage.output_tokens - usage.reasoning_tokens
        ),
        wire_key("totalTokenCount", snake): usage.input_tokens + usage.output_tokens,
    }
    if usage.reasoning_tokens:
        out[wire_key("thoughtsTokenCount", snake)] = usage.reasoning_tokens
    if usage.cache_read_tokens:
        out[wire_key("cachedContentTokenCount", snake)] = usage.cache_read_tokens
    if tool_tokens:
        out[wire_key("toolUsePromptTokenCount", snake)] = tool_tokens
    return out
