"""Requests in each client protocol's raw wire shape, for the hostile-input tests.

Raw HTTP (httpx), not the SDKs: an SDK refuses or rewrites some of what a hostile client
sends, and the gateway must hold up against what reaches the socket, not against what an
SDK lets through.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import httpx

CLIENT_PROTOCOLS = ("openai_chat", "openai_responses", "anthropic_messages", "gemini")

# What a provider of each protocol must receive: the request line is exactly the template.
UPSTREAM_PATHS = {
    "openai_chat": "/v1/chat/completions",
    "openai_responses": "/v1/responses",
    "anthropic_messages": "/v1/messages",
}


def upstream_path(protocol: str, model: str, *, stream: bool = False) -> tuple[str, str]:
    """The (decoded) path and the query a provider of ``protocol`` must see for ``model``."""
    if protocol == "gemini":
        method = "streamGenerateContent" if stream else "generateContent"
        return f"/v1beta/models/{model}:{method}", "alt=sse" if stream else ""
    return UPSTREAM_PATHS[protocol], ""


def raw_segments(raw_path: bytes) -> list[bytes]:
    """The segments of a path as sent: a name that stayed inside its segment adds none,
    and leaves no ``?``, ``#`` or second ``:`` (RFC 3986 lets a client leave ``&``, ``=``,
    ``@`` ... unescaped in a path, so those bytes may come either way)."""
    return raw_path.split(b"/")


def base_body(protocol: str, model: str | None = None) -> dict[str, Any]:
    """The smallest valid body of ``protocol`` (Gemini's model goes in the path)."""
    turn = [{"role": "user", "content": "hi"}]
    if protocol == "openai_chat":
        return {"model": model, "messages": turn}
    if protocol == "openai_responses":
        return {"model": model, "input": "hi"}
    if protocol == "anthropic_messages":
        return {"model": model, "max_tokens": 16, "messages": turn}
    return {"contents": [{"role": "user", "parts": [{"text": "hi"}]}]}


def request_for(
    protocol: str, model: str, body: dict[str, Any] | None = None, *, stream: bool = False
) -> tuple[str, Any]:
    """(path, JSON body) of a generation request in ``protocol`` for ``model``."""
    if body is None:
        body = base_body(protocol, model)
    if protocol == "gemini":
        method = "streamGenerateContent?alt=sse" if stream else "generateContent"
        # The client escapes the name, as any HTTP client must; the server decodes it.
        return f"/v1beta/models/{quote(model, safe='')}:{method}", body
    paths = {
        "openai_chat": "/v1/chat/completions",
        "openai_responses": "/v1/responses",
        "anthropic_messages": "/v1/messages",
    }
    if stream and isinstance(body, dict):
        body = {**body, "stream": True}
    return paths[protocol], body


def error_message(protocol: str, response: httpx.Response) -> str:
    """The error message in the client protocol's error shape."""
    data = response.json()
    if protocol == "gemini":
        return str(data["error"]["message"])
    return str(data["error"]["message"])


def error_param(protocol: str, response: httpx.Response) -> str | None:
    """The field an OpenAI-shaped error names (the other protocols name it in the message)."""
    if protocol in ("openai_chat", "openai_responses"):
        param = response.json()["error"].get("param")
        return str(param) if param is not None else None
    return None
