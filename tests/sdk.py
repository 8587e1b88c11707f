"""The official SDKs as test oracles, driven from canned HTTP responses.

``openai_client(handler)``, ``anthropic_client(handler)`` and ``genai_client(handler)`` give a
sync SDK client whose transport calls ``handler(request) -> httpx2.Response`` instead of the
network, so a test can feed bytes a codec produced to the SDK's own parser, stream
accumulator and exception mapping.  ``replay(status, body, headers)`` builds such a handler.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import anthropic
import httpx2
import msgspec
import openai
from google import genai
from google.genai import types as genai_types

Handler = Callable[[httpx2.Request], httpx2.Response]


def replay(
    status: int = 200,
    body: bytes | dict[str, Any] | list[Any] = b"",
    headers: dict[str, str] | None = None,
    *,
    sse: bool = False,
) -> Handler:
    content = body if isinstance(body, bytes) else msgspec.json.encode(body)
    hdrs = {"content-type": "text/event-stream" if sse else "application/json"}
    hdrs.update(headers or {})

    def handler(request: httpx2.Request) -> httpx2.Response:
        return httpx2.Response(status, content=content, headers=hdrs)

    return handler


def openai_client(handler: Handler) -> openai.OpenAI:
    return openai.OpenAI(
        api_key="test-key",
        base_url="http://gateway.test/v1",
        max_retries=0,
        http_client=httpx2.Client(transport=httpx2.MockTransport(handler)),
    )


def anthropic_client(handler: Handler) -> anthropic.Anthropic:
    return anthropic.Anthropic(
        api_key="test-key",
        base_url="http://gateway.test",
        max_retries=0,
        http_client=httpx2.Client(transport=httpx2.MockTransport(handler)),
    )


def genai_client(handler: Handler) -> genai.Client:
    return genai.Client(
        api_key="test-key",
        http_options=genai_types.HttpOptions(
            base_url="http://gateway.test",
            httpx_client=httpx2.Client(transport=httpx2.MockTransport(handler)),
            retry_options=genai_types.HttpRetryOptions(attempts=1),
        ),
    )
