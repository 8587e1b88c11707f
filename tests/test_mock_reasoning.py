"""The mock checks reasoning payloads coming back the way the providers do (and only where
they do: Anthropic with thinking on, Gemini 3, Responses with store: false)."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from asgi_rotator.mock import MockUpstream, mock_transport

pytestmark = pytest.mark.anyio

WEATHER = {"type": "object", "properties": {"location": {"type": "string"}}}
THINKING = {"type": "enabled", "budget_tokens": 1024}


async def post(
    mock: MockUpstream, path: str, body: dict[str, Any], key: str = "k1"
) -> httpx.Response:
    async with httpx.AsyncClient(transport=mock_transport(mock), base_url="http://mock") as client:
        return await client.post(
            path,
            json=body,
            headers={"x-api-key": key, "authorization": f"Bearer {key}", "x-goog-api-key": key},
        )


# --- Anthropic -------------------------------------------------------------------------------


async def anthropic_turn_one(mock: MockUpstream, thinking: bool = True) -> dict[str, Any]:
    body: dict[str, Any] = {
        "model": "claude",
        "max_tokens": 2048,
        "messages": [{"role": "user", "content": "weather?"}],
        "tools": [{"name": "get_weather", "input_schema": WEATHER}],
    }
    if thinking:
        body["thinking"] = THINKING
    reply = (await post(mock, "/v1/messages", body)).json()
    body["messages"] += [
        {"role": "assistant", "content": reply["content"]},
        {
            "role": "user",
            "content": [
                {
                    "type": "tool_result",
                    "tool_use_id": reply["content"][-1]["id"],
                    "content": "sunny",
                }
            ],
        },
    ]
    return body


async def test_anthropic_tool_turn_must_start_with_its_thinking_block() -> None:
    mock = MockUpstream()
    body = await anthropic_turn_one(mock)
    assert (await post(mock, "/v1/messages", body)).status_code == 200
    without = [b for b in body["messages"][1]["content"] if b["type"] != "thinking"]
    body["messages"][1]["content"] = without
    refused = await post(mock, "/v1/messages", body)
    assert refused.status_code == 400
    assert "Expected `thinking` or `redacted_thinking`" in refused.json()["error"]["message"]
    # With thinking off the same history is fine.
    del body["thinking"]
    assert (await post(mock, "/v1/messages", body)).status_code == 200


async def test_anthropic_thinking_block_cannot_be_modified_or_forged() -> None:
    mock = MockUpstream()
    body = await anthropic_turn_one(mock)
    body["messages"][1]["content"][0]["thinking"] += " (edited)"
    assert (await post(mock, "/v1/messages", body)).status_code == 400
    body["messages"][1]["content"][0]["signature"] = "forged"
    refused = await post(mock, "/v1/messages", body)
    assert refused.status_code == 400 and "signature" in refused.json()["error"]["message"]


# --- Gemini ----------------------------------------------------------------------------------


async def gemini_turn_one(
    mock: MockUpstream, model: str = "gemini-3-pro"
) -> tuple[str, dict[str, Any]]:
    path = f"/v1beta/models/{model}:generateContent"
    body: dict[str, Any] = {
        "contents": [{"role": "user", "parts": [{"text": "weather?"}]}],
        "tools": [{"functionDeclarations": [{"name": "get_weather", "parameters": WEATHER}]}],
    }
    reply = (await post(mock, path, body)).json()
    parts = reply["candidates"][0]["content"]["parts"]
    body["contents"] += [
        {"role": "model", "parts": parts},
        {
            "role": "user",
            "parts": [
                {"functionResponse": {"name": "get_weather", "response": {"result": "sunny"}}}
            ],
        },
    ]
    return path, body


async def test_gemini_3_signs_function_calls_and_wants_the_signature_back() -> None:
    mock = MockUpstream()
    path, body = await gemini_turn_one(mock)
    call = body["contents"][1]["parts"][0]
    assert "thoughtSignature" in call  # Gemini 3 signs even without thinking asked for
    assert (await post(mock, path, body)).status_code == 200
    signature = call.pop("thoughtSignature")
    refused = await post(mock, path, body)
    assert refused.status_code == 400
    assert "missing a thought_signature" in refused.json()["error"]["message"]
    # The placeholder is for history from elsewhere, not for the mock's own calls.
    call["thoughtSignature"] = "skip_thought_signature_validator"
    assert (await post(mock, path, body)).status_code == 400
    call["thoughtSignature"] = signature + "x"
    assert "Corrupted" in (await post(mock, path, body)).json()["error"]["message"]


async def test_gemini_placeholder_accepted_for_calls_from_elsewhere() -> None:
    mock = MockUpstream()
    path = "/v1beta/models/gemini-3-pro:generateContent"
    body = {
        "contents": [
            {"role": "user", "parts": [{"text": "weather?"}]},
            {
                "role": "model",
                "parts": [
                    {
                        "functionCall": {"name": "get_weather", "args": {"location": "Rome"}},
                        "thoughtSignature": "skip_thought_signature_validator",
                    }
                ],
            },
            {
                "role": "user",
                "parts": [
                    {"functionResponse": {"name": "get_weather", "response": {"result": "sunny"}}}
                ],
            },
        ]
    }
    assert (await post(mock, path, body)).status_code == 200


async def test_gemini_2_is_not_checked() -> None:
    mock = MockUpstream()
    path, body = await gemini_turn_one(mock, "gemini-2.5-flash")
    body["contents"][1]["parts"][0].pop("thoughtSignature", None)
    assert (await post(mock, path, body)).status_code == 200


# --- OpenAI Responses ------------------------------------------------------------------------


async def responses_turn_one(mock: MockUpstream, include: bool = True) -> dict[str, Any]:
    body: dict[str, Any] = {
        "model": "o4-mini",
        "input": [{"role": "user", "content": "weather?"}],
        "tools": [{"type": "function", "name": "get_weather", "parameters": WEATHER}],
        "reasoning": {"effort": "low"},
        "store": False,
    }
    if include:
        body["include"] = ["reasoning.encrypted_content"]
    reply = (await post(mock, "/v1/responses", body)).json()
    call = next(i for i in reply["output"] if i["type"] == "function_call")
    body["input"] += [
        {
            "type": "function_call",
            "call_id": call["call_id"],
            "name": call["name"],
            "arguments": call["arguments"],
        },
        {"type": "function_call_output", "call_id": call["call_id"], "output": "sunny"},
    ]
    body["reasoning_item"] = next(i for i in reply["output"] if i["type"] == "reasoning")
    return body


async def test_stateless_responses_turn_needs_its_encrypted_reasoning_item() -> None:
    mock = MockUpstream()
    body = await responses_turn_one(mock)
    item = body.pop("reasoning_item")
    assert item["encrypted_content"]
    refused = await post(mock, "/v1/responses", body)
    assert refused.status_code == 400
    assert "without its required 'reasoning' item" in refused.json()["error"]["message"]
    body["input"].insert(1, item)
    assert (await post(mock, "/v1/responses", body)).status_code == 200
    # Issued to k1: another key's request carrying it is invalid_encrypted_content.
    other = await post(mock, "/v1/responses", body, key="k2")
    assert other.status_code == 400 and other.json()["error"]["code"] == "invalid_encrypted_content"


async def test_responses_hands_out_encrypted_content_only_when_included() -> None:
    mock = MockUpstream()
    body = await responses_turn_one(mock, include=False)
    assert body["reasoning_item"].get("encrypted_content") is None
