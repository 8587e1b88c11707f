"""The field cache end to end: official SDKs -> the gateway (real uvicorn) -> the mock, which
checks thinking blocks, thought signatures and encrypted reasoning like the providers do.

Each conversation turns reasoning on with the client's own knob; the mock's request log shows
that reasoning was on in turn 1 and that turn 2 carried what the provider demands.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from asgi_rotator.config import parse_config
from asgi_rotator.mock import MockUpstream, RecordedRequest
from asgi_rotator.stack import build_app
from tests.e2e.fieldcache_clients import CONVERSATIONS, Conversation
from tests.server import serve

CLIENTS = list(CONVERSATIONS)
# One reasoning provider per upstream family, each reached by an alias.
UPSTREAMS = {
    "anthropic": ("think-claude", "anthropic_messages"),
    "gemini": ("think-gemini", "gemini"),
    "responses": ("think-openai", "openai_responses"),
}


def gateway_config(mock_url: str, **field_cache: Any) -> dict[str, Any]:
    return {
        "providers": {
            "fc-anthropic": {
                "protocol": "anthropic_messages",
                "base_url": mock_url,
                "keys": ["key-anthropic"],
            },
            "fc-gemini": {"protocol": "gemini", "base_url": mock_url, "keys": ["key-gemini"]},
            "fc-responses": {
                "protocol": "openai_responses",
                "base_url": f"{mock_url}/v1",
                "keys": ["key-responses"],
            },
        },
        "aliases": {
            "think-claude": "fc-anthropic/claude-sonnet-4-5",
            "think-gemini": "fc-gemini/gemini-3-pro-preview",
        },
        "groups": {
            # OpenAI used statelessly: nothing is stored upstream, so reasoning items must
            # travel with the conversation.
            "think-openai": {
                "targets": [{"target": "fc-responses/o4-mini", "params": {"store": False}}]
            },
            "claude-then-gemini": {
                "targets": ["fc-anthropic/claude-sonnet-4-5", "fc-gemini/gemini-3-pro-preview"]
            },
        },
        "stream": {"heartbeat_interval": None},
        "field_cache": field_cache,
    }


@pytest.fixture(scope="module")
def mock_server() -> Iterator[tuple[MockUpstream, str]]:
    mock = MockUpstream()
    with serve(mock) as url:
        yield mock, url


@pytest.fixture
def mock(mock_server: tuple[MockUpstream, str]) -> Iterator[MockUpstream]:
    upstream = mock_server[0]
    upstream.clear()
    upstream.tool_steps = 1
    yield upstream
    upstream.clear()


@pytest.fixture(scope="module")
def gateway(mock_server: tuple[MockUpstream, str]) -> Iterator[str]:
    config = parse_config(gateway_config(mock_server[1]), {})
    with serve(build_app(config, environ={})) as url:
        yield url


def upstream(mock: MockUpstream, protocol: str) -> list[RecordedRequest]:
    return [r for r in mock.requests if r.protocol == protocol]


def converse(
    base_url: str, client: str, model: str, *, stream: bool, key: str = "client-key", tools: int = 1
) -> Conversation:
    return CONVERSATIONS[client](base_url, model, stream=stream, key=key, tools=tools)


def question() -> str:
    # Unique per test: the mock tells its own calls from others' by the conversation.
    return f"What is the weather in Paris? ({uuid.uuid4().hex[:8]})"


def reasoning_on(protocol: str, body: dict[str, Any]) -> bool:
    if protocol == "anthropic_messages":
        return body.get("thinking", {}).get("type") == "enabled"
    if protocol == "gemini":
        # The google-genai SDK sends some of these snake_case; the gateway, camelCase.
        config = body.get("generationConfig", {}).get("thinkingConfig", {})
        return any(
            config.get(k)
            for k in (
                "includeThoughts",
                "include_thoughts",
                "thinkingLevel",
                "thinkingBudget",
                "thinking_budget",
            )
        )
    return bool(body.get("reasoning", {}).get("effort"))


def carried(protocol: str, body: dict[str, Any], mock: MockUpstream) -> list[Any]:
    """The payloads turn 2 carried that the mock issued (what the provider checks)."""
    if protocol == "anthropic_messages":
        assistant = [m for m in body["messages"] if m["role"] == "assistant"][-1]
        first = assistant["content"][0]
        return [first["signature"]] if first.get("signature") in mock.issued.thinking else []
    if protocol == "gemini":
        model = [c for c in body["contents"] if c.get("role") == "model"][-1]
        calls = [p for p in model["parts"] if "functionCall" in p]
        signature = calls[0].get("thoughtSignature")
        return [signature] if signature in mock.issued.gemini_signatures else []
    items = body["input"]
    reasoning = [i for i in items if i.get("type") == "reasoning"]
    first_call = next(n for n, i in enumerate(items) if i.get("type") == "function_call")
    return [
        i["encrypted_content"]
        for i in reasoning
        if i.get("encrypted_content") in mock.issued.encrypted and items.index(i) < first_call
    ]


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
@pytest.mark.parametrize("family", list(UPSTREAMS))
@pytest.mark.parametrize("client", CLIENTS)
def test_two_turn_tool_conversation_with_reasoning(
    client: str, family: str, stream: bool, gateway: str, mock: MockUpstream
) -> None:
    model, protocol = UPSTREAMS[family]
    with converse(gateway, client, model, stream=stream) as conversation:
        turns = conversation.run(question())
    assert [len(t.calls) for t in turns] == [1, 0]
    assert turns[-1].text == "Tool said: sunny"
    first, second = upstream(mock, protocol)
    assert reasoning_on(protocol, first.body)
    assert reasoning_on(protocol, second.body)
    if protocol == "openai_responses":
        assert "reasoning.encrypted_content" in first.body["include"]
    assert carried(protocol, second.body, mock)


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
@pytest.mark.parametrize("client", CLIENTS)
def test_parallel_calls_to_gemini_carry_one_signature(
    client: str, stream: bool, gateway: str, mock: MockUpstream
) -> None:
    with converse(gateway, client, "think-gemini", stream=stream, tools=2) as conversation:
        turns = conversation.run(question())
    assert [len(t.calls) for t in turns] == [2, 0]
    second = upstream(mock, "gemini")[1].body
    model = [c for c in second["contents"] if c.get("role") == "model"][-1]
    calls = [p for p in model["parts"] if "functionCall" in p]
    # Gemini, "Thought signatures": of parallel calls only the first carries one.
    assert calls[0]["thoughtSignature"] in mock.issued.gemini_signatures
    assert "thoughtSignature" not in calls[1]


@pytest.mark.parametrize("family", list(UPSTREAMS))
@pytest.mark.parametrize("client", CLIENTS)
def test_three_step_sequential_tool_loop(
    client: str, family: str, gateway: str, mock: MockUpstream
) -> None:
    mock.tool_steps = 3
    model, protocol = UPSTREAMS[family]
    with converse(gateway, client, model, stream=True) as conversation:
        turns = conversation.run(question())
    assert [len(t.calls) for t in turns] == [1, 1, 1, 0]
    assert len(upstream(mock, protocol)) == 4
    for request in upstream(mock, protocol)[1:]:
        assert reasoning_on(protocol, request.body)
        assert carried(protocol, request.body, mock)


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
def test_gemini_signature_on_a_text_turn_comes_back(
    stream: bool, gateway: str, mock: MockUpstream
) -> None:
    # Gemini, "Thought signatures": a turn without calls carries its signature on a text
    # part; sending it back is recommended (not enforced), so the rule keeps it too.
    with converse(gateway, "openai_chat", "think-gemini", stream=stream, tools=0) as chat:
        chat.history = [{"role": "user", "content": question()}]
        first = chat._send()
        chat.history += [
            {"role": "assistant", "content": first.text},
            {"role": "user", "content": "And tomorrow?"},
        ]
        chat._send()
    second = upstream(mock, "gemini")[1].body
    model = next(c for c in second["contents"] if c.get("role") == "model")
    text_parts = [p for p in model["parts"] if "text" in p]
    assert text_parts[0]["thoughtSignature"] in mock.issued.gemini_signatures
