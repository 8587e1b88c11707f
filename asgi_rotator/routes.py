"""Which endpoint a request is for, from its method and path (after the mount prefix).

Shared by the dispatch app (when it runs alone) and the protocol middleware, so both agree.
OpenAI-style paths are accepted with and without ``/v1`` because SDK users set ``base_url``
either way; Gemini model names may contain ``/`` (``/v1/models/openai/gpt-4.1:generateContent``).
"""

from __future__ import annotations

from typing import Any, NamedTuple
from urllib.parse import parse_qsl

__all__ = ["Route", "detect_protocol", "match_route", "route_path"]


class Route(NamedTuple):
    endpoint: str  # "generate" | "models" | "gemini_models" | "health" | "responses_item"
    protocol: str | None = None
    model: str | None = None  # from the path (Gemini)
    stream: bool | None = None  # from the path (Gemini)
    allowed: tuple[str, ...] = ("POST",)
    item: str | None = None  # /v1/responses/{id}[/input_items]


_GENERATE = {
    "/v1/chat/completions": "openai_chat",
    "/chat/completions": "openai_chat",
    "/v1/responses": "openai_responses",
    "/responses": "openai_responses",
    "/v1/messages": "anthropic_messages",
}
# The routes of fixed paths, made once (a Route is immutable, so one instance serves all).
_FIXED = {
    **{path: Route("generate", protocol) for path, protocol in _GENERATE.items()},
    "/v1/models": Route("models", allowed=("GET",)),
    "/models": Route("models", allowed=("GET",)),
    "/v1beta/models": Route("gemini_models", allowed=("GET",)),
    "/healthz": Route("health", allowed=("GET",)),
    "/health": Route("health", allowed=("GET",)),
}
_GEMINI_PREFIXES = ("/v1beta/models/", "/v1/models/", "/models/")
_GEMINI_METHODS = {"generateContent": False, "streamGenerateContent": True}


def route_path(scope: dict[str, Any] | Any) -> str:
    """The path inside the app: ``scope["path"]`` less the ``root_path`` it is mounted at.

    A host may write the prefix with its trailing slash (``/llm/``, as Django's URL
    patterns do) and a server may give a ``path`` that already lacks the prefix (older
    Starlette mounts): the prefix is stripped only on a segment boundary, once."""
    path: str = scope["path"]
    root: str = scope.get("root_path", "")
    if root:
        root = root.rstrip("/")
        if root and path.startswith(root) and path[len(root) : len(root) + 1] in ("/", ""):
            path = path[len(root) :] or "/"
    return path


def match_route(path: str) -> Route | None:
    route = _FIXED.get(path)
    if route is not None:
        return route
    for prefix in _GEMINI_PREFIXES:
        if path.startswith(prefix):
            model, colon, method = path[len(prefix) :].rpartition(":")
            if colon and model and method in _GEMINI_METHODS:
                return Route("generate", "gemini", model=model, stream=_GEMINI_METHODS[method])
    for prefix in ("/v1/responses/", "/responses/"):
        if path.startswith(prefix):
            return Route(
                "responses_item",
                "openai_responses",
                allowed=("GET", "DELETE"),
                item=path[len(prefix) :],
            )
    return None


def detect_protocol(scope: dict[str, Any] | Any, route: Route | None) -> str:
    """The protocol the client speaks, for parsing its body and shaping every answer.

    The route decides when it names a protocol (every generation endpoint does).  Where it
    does not (``/v1/models``, an unknown path), the headers each official SDK sends do:
    ``anthropic-version`` (or ``x-api-key``) for Anthropic, ``x-goog-api-key``, ``?key=`` or
    a ``/v1beta`` path for Gemini, and OpenAI (``Authorization: Bearer``) otherwise.
    """
    if route is not None:
        if route.protocol is not None:
            return route.protocol
        if route.endpoint == "gemini_models":
            return "gemini"
    names = {name for name, _ in scope["headers"]}
    if b"anthropic-version" in names or b"x-api-key" in names:
        return "anthropic_messages"
    if b"x-goog-api-key" in names or route_path(scope).startswith("/v1beta/"):
        return "gemini"
    query = scope.get("query_string", b"")
    if b"key=" in query and any(k == "key" for k, _ in parse_qsl(query.decode("latin-1"))):
        return "gemini"
    return "openai_chat"
