"""The mock's model listings, each in its provider's shape, written after the API references
(OpenAI ``GET /v1/models``, Anthropic ``GET /v1/models`` with ``anthropic-version``, Gemini
``GET /v1beta/models``, or ``/v1/models`` with a Gemini key), as independent of
``asgi_rotator.discovery`` as the rest of the mock.

Like the real services: Anthropic pages by ``limit`` (default 20, at most 1000) and
``after_id``, Gemini by ``pageSize`` (default 50) and an opaque ``pageToken``, and a Gemini
embedding model lists ``embedContent`` instead of ``generateContent``.  Unlike them, and like
the mock's other endpoints, a request without a key is answered (the keyless demo).
"""

from __future__ import annotations

import base64
from typing import Any
from urllib.parse import parse_qs

__all__ = ["LISTING_PATHS", "listing", "listing_error", "listing_shape"]

LISTING_PATHS = frozenset({"/v1/models", "/v1beta/models"})
_CREATED = "2025-01-01T00:00:00Z"


def listing_shape(path: str, headers: dict[str, str], query: str) -> str:
    """Which provider a listing request is for: ``openai``, ``anthropic`` or ``gemini``."""
    if path == "/v1beta/models" or "x-goog-api-key" in headers or "key" in parse_qs(query):
        return "gemini"
    return "anthropic" if "anthropic-version" in headers else "openai"


def listing(models: tuple[str, ...], shape: str, query: str) -> tuple[int, dict[str, Any]]:
    """(status, body) for one listing request."""
    params = {name: values[-1] for name, values in parse_qs(query).items()}
    if shape == "openai":
        return 200, {
            "object": "list",
            "data": [
                {"id": m, "object": "model", "created": 0, "owned_by": "mock"} for m in models
            ],
        }
    if shape == "anthropic":
        limit = _int(params.get("limit"), 20)
        if not 1 <= limit <= 1000:
            return listing_error(shape, 400, "limit: must be between 1 and 1000")
        after = params.get("after_id")
        start = models.index(after) + 1 if after in models else 0
        page = models[start : start + limit]
        return 200, {
            "data": [
                {"type": "model", "id": m, "display_name": m, "created_at": _CREATED} for m in page
            ],
            "has_more": start + limit < len(models),
            "first_id": page[0] if page else None,
            "last_id": page[-1] if page else None,
        }
    size = min(_int(params.get("pageSize"), 50), 1000)
    token = params.get("pageToken")
    try:
        start = int(base64.urlsafe_b64decode(token)) if token else 0
    except ValueError:
        return listing_error(shape, 400, "pageToken: invalid page token")
    page = models[start : start + size]
    body: dict[str, Any] = {
        "models": [
            {
                "name": f"models/{m}",
                "version": "001",
                "displayName": m,
                "inputTokenLimit": 1048576,
                "outputTokenLimit": 65536,
                "supportedGenerationMethods": (
                    ["embedContent"] if "embedding" in m else ["generateContent", "countTokens"]
                ),
            }
            for m in page
        ]
    }
    if start + size < len(models):
        body["nextPageToken"] = base64.urlsafe_b64encode(str(start + size).encode()).decode()
    return 200, body


def listing_error(shape: str, status: int, message: str) -> tuple[int, dict[str, Any]]:
    if shape == "anthropic":
        kind = {401: "authentication_error", 400: "invalid_request_error"}.get(status, "api_error")
        return status, {"type": "error", "error": {"type": kind, "message": message}}
    if shape == "gemini":
        kind = {403: "PERMISSION_DENIED", 400: "INVALID_ARGUMENT"}.get(status, "INTERNAL")
        return status, {"error": {"code": status, "message": message, "status": kind}}
    kind = "invalid_request_error" if status < 500 else "server_error"
    return status, {"error": {"message": message, "type": kind, "param": None, "code": None}}


def _int(text: str | None, default: int) -> int:
    try:
        return int(text) if text is not None else default
    except ValueError:
        return -1
