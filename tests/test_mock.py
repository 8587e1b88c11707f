"""The mock upstream against the official SDKs and a plain HTTP client, behind a real uvicorn."""

from __future__ import annotations

import asyncio
import hashlib
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import anthropic
import httpx
import openai
import pytest
from google import genai
from google.genai import errors as genai_errors
from google.genai import types as gt

from asgi_rotator.mock import Fault, MockUpstream, mock_transport
from tests.server import free_port, serve

PROTOCOLS = ["openai_chat", "openai_responses", "anthropic_messages", "gemini"]
USER = "What is up"
REASONING = f"The user said: {USER}. I will answer briefly."
SIGNATURE = "mock-sig-" + hashlib.sha256(REASONING.encode()).hexdigest()[:16]
WEATHER = {"type": "object", "properties": {"location": {"type": "string"}}}
CLOCK = {
    "type": "object",
    "properties": {
        "days": {"type": "integer"},
        "utc": {"type": "boolean"},
        "unit": {"enum": ["c", "f"]},
    },
}
CALLS = [
    ("get_weather", {"location": "Paris"}),
    ("get_clock", {"days": 1, "utc": True, "unit": "c"}),
]


def text_for(protocol: str) -> str:
    return f"Hello from mock {protocol}! You said: {USER}"


@pytest.fixture(scope="module")
def server() -> Iterator[tuple[MockUpstream, str]]:
    mock = MockUpstream()
    with serve(mock) as base:
        yield mock, base


@pytest.fixture
def mock(server: tuple[MockUpstream, str]) -> MockUpstream:
    upstream = server[0]
    # The server is shared: a stream of the test before may still be closing, and its
    # record must not land in this test's after the clear.
    wait_for(lambda: upstream.open_streams == 0)
    upstream.clear()
    return upstream


@pytest.fixture
def base(server: tuple[MockUpstream, str]) -> str:
    return server[1]


@pytest.fixture
def oai(base: str) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(api_key="sk-oai", base_url=f"{base}/v1", max_retries=0) as client:
        yield client


@pytest.fixture
def claude(base: str) -> Iterator[anthropic.Anthropic]:
    with anthropic.Anthropic(api_key="sk-ant", base_url=base, max_retries=0) as client:
        yield client


@pytest.fixture
def gem(base: str) -> Iterator[genai.Client]:
    options = gt.HttpOptions(base_url=base, retry_options=gt.HttpRetryOptions(attempts=1))
    with genai.Client(api_key="sk-gem", http_options=options) as client:
        yield client


def raw_request(protocol: str, *, stream: bool, model: str = "m") -> tuple[str, dict[str, Any]]:
    """Path and body of a minimal request, written out by hand."""
    if protocol == "openai_chat":
        return "/v1/chat/completions", {
            "model": model,
            "messages": [{"role": "user", "content": USER}],
            "stream": stream,
        }
    if protocol == "openai_responses":
        return "/v1/responses", {"model": model, "input": USER, "stream": stream}
    if protocol == "anthropic_messages":
        messages = [{"role": "user", "content": USER}]
        return "/v1/messages", {
            "model": model,
            "max_tokens": 64,
            "messages": messages,
            "stream": stream,
        }
    method = "streamGenerateContent?alt=sse" if stream else "generateContent"
    return f"/v1beta/models/{model}:{method}", {
        "contents": [{"role": "user", "parts": [{"text": USER}]}]
    }


def sse(body: bytes) -> list[tuple[str | None, str]]:
    """(event, data) pairs of a well-formed event stream."""
    events = []
    for block in body.decode().split("\n\n"):
        if not block.strip():
            continue
        fields = dict(line.split(": ", 1) for line in block.split("\n"))
        events.append((fields.get("event"), fields["data"]))
    return events


def is_terminal(protocol: str, event: str | None, data: str) -> bool:
    if protocol == "openai_chat":
        return data == "[DONE]"
    if protocol == "gemini":
        return "finishReason" in data
    return event in ("response.completed", "message_stop")


# --- the official SDKs, plain and streamed ----------------------------------------------------


def test_openai_chat_text_and_usage(oai: openai.OpenAI, mock: MockUpstream) -> None:
    messages: Any = [{"role": "user", "content": USER}]
    reply = oai.chat.completions.create(model="gpt-x", messages=messages)
    assert reply.choices[0].message.content == text_for("openai_chat")
    assert reply.choices[0].finish_reason == "stop"
    assert reply.usage is not None
    assert (reply.usage.prompt_tokens, reply.usage.completion_tokens) == (13, 9)

    with oai.chat.completions.stream(
        model="gpt-x", messages=messages, stream_options={"include_usage": True}
    ) as stream:
        deltas = [e.delta for e in stream if e.type == "content.delta"]
        final = stream.get_final_completion()
    assert deltas[0] == "" and len(deltas) == 10  # the role chunk carries content "", like OpenAI
    assert final.choices[0].message.content == text_for("openai_chat")
    assert final.usage is not None and final.usage.total_tokens == 22
    assert [(r.protocol, r.model, r.key, r.stream) for r in mock.requests] == [
        ("openai_chat", "gpt-x", "sk-oai", False),
        ("openai_chat", "gpt-x", "sk-oai", True),
    ]


def test_openai_chat_usage_chunk_only_when_asked(base: str) -> None:
    path, body = raw_request("openai_chat", stream=True)
    with httpx.Client(base_url=base) as client:
        events = sse(client.post(path, json=body).content)
        assert not any('"usage"' in data for _, data in events)
        body["stream_options"] = {"include_usage": True}
        events = sse(client.post(path, json=body).content)
    assert json.loads(events[-2][1])["usage"]["prompt_tokens"] == 13
    assert events[-1] == (None, "[DONE]")


def test_openai_chat_parallel_tool_calls_then_tool_result(oai: openai.OpenAI) -> None:
    tools: Any = [
        {"type": "function", "function": {"name": "get_weather", "parameters": WEATHER}},
        {"type": "function", "function": {"name": "get_clock", "parameters": CLOCK}},
    ]
    messages: Any = [{"role": "user", "content": USER}]
    reply = oai.chat.completions.create(model="m", messages=messages, tools=tools)
    assert reply.choices[0].finish_reason == "tool_calls"
    calls = reply.choices[0].message.tool_calls or []
    assert [(c.function.name, json.loads(c.function.arguments)) for c in calls] == CALLS  # type: ignore[union-attr]

    with oai.chat.completions.stream(model="m", messages=messages, tools=tools) as stream:
        arg_deltas = [e for e in stream if e.type == "tool_calls.function.arguments.delta"]
        final = stream.get_final_completion()
    assert len(arg_deltas) >= 4  # arguments arrive in pieces
    streamed = final.choices[0].message.tool_calls or []
    assert [(c.function.name, json.loads(c.function.arguments)) for c in streamed] == CALLS
    assert len({c.id for c in streamed}) == 2

    messages += [
        {"role": "assistant", "tool_calls": [c.model_dump() for c in calls]},
        {"role": "tool", "tool_call_id": calls[0].id, "content": "sunny"},
        {"role": "tool", "tool_call_id": calls[1].id, "content": "noon"},
    ]
    reply = oai.chat.completions.create(model="m", messages=messages, tools=tools)
    assert reply.choices[0].message.content == "Tool said: sunny; noon"


def test_openai_chat_reasoning(oai: openai.OpenAI) -> None:
    messages: Any = [{"role": "user", "content": USER}]
    reply = oai.chat.completions.create(model="m", messages=messages, reasoning_effort="low")
    message = reply.choices[0].message
    assert message.model_extra is not None and message.model_extra["reasoning_content"] == REASONING
    assert reply.usage is not None
    assert reply.usage.completion_tokens_details is not None
    assert reply.usage.completion_tokens_details.reasoning_tokens == 10
    assert reply.usage.prompt_tokens_details is not None
    assert reply.usage.prompt_tokens_details.cached_tokens == 10
    assert reply.usage.completion_tokens == 19

    stream = oai.chat.completions.create(
        model="m", messages=messages, reasoning_effort="low", stream=True
    )
    with stream:
        chunks = list(stream)
    reasoning = "".join(
        (c.choices[0].delta.model_extra or {}).get("reasoning_content", "")
        for c in chunks
        if c.choices
    )
    assert reasoning == REASONING


def test_openai_responses_text_reasoning_and_usage(oai: openai.OpenAI) -> None:
    reply = oai.responses.create(model="m", input=USER)
    assert reply.output_text == text_for("openai_responses")
    assert reply.usage is not None and (reply.usage.input_tokens, reply.usage.output_tokens) == (
        13,
        9,
    )

    # OpenAI hands out encrypted reasoning only when asked ("Reasoning": include).
    bare = oai.responses.create(model="m", input=USER, reasoning={"effort": "low"})
    assert bare.output[0].type == "reasoning" and bare.output[0].encrypted_content is None
    with oai.responses.stream(
        model="m",
        input=USER,
        reasoning={"effort": "low"},
        include=["reasoning.encrypted_content"],
    ) as stream:
        kinds = [e.type for e in stream]
        final = stream.get_final_response()
    assert kinds[:2] == ["response.created", "response.in_progress"]
    assert kinds[-1] == "response.completed"
    assert kinds.count("response.output_text.delta") == 9
    assert "response.reasoning_summary_text.delta" in kinds
    assert final.output_text == text_for("openai_responses")
    item = final.output[0]
    assert item.type == "reasoning"
    assert item.encrypted_content == SIGNATURE
    assert item.summary[0].text == REASONING
    assert final.usage is not None
    assert final.usage.output_tokens_details.reasoning_tokens == 10
    assert final.usage.input_tokens_details.cached_tokens == 10


def test_openai_responses_tool_calls_then_tool_result(oai: openai.OpenAI) -> None:
    tools: Any = [
        {"type": "web_search"},  # a built-in tool is not a function to call
        {"type": "function", "name": "get_weather", "parameters": WEATHER},
        {"type": "function", "name": "get_clock", "parameters": CLOCK},
    ]
    with oai.responses.stream(model="m", input=USER, tools=tools) as stream:
        deltas = [e for e in stream if e.type == "response.function_call_arguments.delta"]
        final = stream.get_final_response()
    calls = [o for o in final.output if o.type == "function_call"]
    assert [(c.name, json.loads(c.arguments)) for c in calls] == CALLS
    assert len(deltas) >= 4
    assert (
        oai.responses.create(model="m", input=USER, tools=tools).output[1].type == "function_call"
    )

    follow_up: Any = [
        {"role": "user", "content": USER},
        *[
            {
                "type": "function_call",
                "call_id": c.call_id,
                "name": c.name,
                "arguments": c.arguments,
            }
            for c in calls
        ],
        {"type": "function_call_output", "call_id": calls[0].call_id, "output": "sunny"},
    ]
    assert (
        oai.responses.create(model="m", input=follow_up, tools=tools).output_text
        == "Tool said: sunny"
    )


def test_anthropic_text_thinking_and_usage(claude: anthropic.Anthropic) -> None:
    messages: Any = [{"role": "user", "content": USER}]
    reply = claude.messages.create(model="c", max_tokens=64, messages=messages)
    assert reply.content[0].type == "text" and reply.content[0].text == text_for(
        "anthropic_messages"
    )
    assert reply.stop_reason == "end_turn"
    assert (reply.usage.input_tokens, reply.usage.output_tokens) == (13, 9)

    thinking: Any = {"type": "enabled", "budget_tokens": 1024}
    with claude.messages.stream(
        model="c", max_tokens=64, messages=messages, thinking=thinking
    ) as stream:
        kinds = [e.type for e in stream]
        final = stream.get_final_message()
    assert kinds[0] == "message_start" and kinds[-1] == "message_stop"
    block = final.content[0]
    assert block.type == "thinking" and block.thinking == REASONING and block.signature == SIGNATURE
    assert final.content[1].type == "text" and final.content[1].text == text_for(
        "anthropic_messages"
    )
    # Anthropic reports cache reads apart from input_tokens.
    assert (
        final.usage.input_tokens,
        final.usage.cache_read_input_tokens,
        final.usage.output_tokens,
    ) == (3, 10, 19)


def test_anthropic_tool_use_then_tool_result(claude: anthropic.Anthropic) -> None:
    tools: Any = [
        {"name": "get_weather", "input_schema": WEATHER},
        {"name": "get_clock", "input_schema": CLOCK},
    ]
    messages: Any = [{"role": "user", "content": USER}]
    with claude.messages.stream(model="c", max_tokens=64, messages=messages, tools=tools) as stream:
        json_deltas = [e for e in stream if e.type == "input_json"]
        final = stream.get_final_message()
    assert final.stop_reason == "tool_use"
    uses = [b for b in final.content if b.type == "tool_use"]
    assert [(u.name, u.input) for u in uses] == CALLS
    assert len(json_deltas) >= 4

    messages += [
        {"role": "assistant", "content": [u.model_dump() for u in uses]},
        {
            "role": "user",
            "content": [{"type": "tool_result", "tool_use_id": uses[0].id, "content": "sunny"}],
        },
    ]
    reply = claude.messages.create(model="c", max_tokens=64, messages=messages, tools=tools)
    assert reply.content[0].type == "text" and reply.content[0].text == "Tool said: sunny"


def test_gemini_text_thoughts_and_usage(gem: genai.Client, mock: MockUpstream) -> None:
    reply = gem.models.generate_content(model="gemini-x", contents=USER)
    assert reply.text == text_for("gemini")
    assert reply.usage_metadata is not None
    assert (
        reply.usage_metadata.prompt_token_count,
        reply.usage_metadata.candidates_token_count,
    ) == (13, 9)

    config = gt.GenerateContentConfig(thinking_config=gt.ThinkingConfig(include_thoughts=True))
    chunks = list(
        gem.models.generate_content_stream(model="gemini-x", contents=USER, config=config)
    )
    parts = [p for c in chunks for p in c.candidates[0].content.parts]  # type: ignore[index,union-attr]
    assert "".join(p.text for p in parts if p.thought) == REASONING  # type: ignore[misc]
    answer = [p for p in parts if not p.thought]
    assert "".join(p.text for p in answer) == text_for("gemini")  # type: ignore[misc]
    assert answer[0].thought_signature == SIGNATURE.encode()
    last = chunks[-1]
    assert last.candidates[0].finish_reason == gt.FinishReason.STOP  # type: ignore[index]
    usage = last.usage_metadata
    assert usage is not None
    assert (
        usage.thoughts_token_count,
        usage.cached_content_token_count,
        usage.total_token_count,
    ) == (10, 10, 32)
    assert [r.model for r in mock.requests] == ["gemini-x", "gemini-x"]


def test_gemini_function_calls_then_response(gem: genai.Client) -> None:
    tools: Any = [
        gt.Tool(
            function_declarations=[
                gt.FunctionDeclaration(name="get_weather", parameters_json_schema=WEATHER),
                gt.FunctionDeclaration(name="get_clock", parameters_json_schema=CLOCK),
            ]
        )
    ]
    config = gt.GenerateContentConfig(
        tools=tools, automatic_function_calling=gt.AutomaticFunctionCallingConfig(disable=True)
    )
    chunks = list(
        gem.models.generate_content_stream(model="gemini-x", contents=USER, config=config)
    )
    calls = [c for chunk in chunks for c in chunk.function_calls or []]
    assert [(c.name, c.args) for c in calls] == CALLS

    contents: Any = [
        gt.Content(role="user", parts=[gt.Part(text=USER)]),
        gt.Content(role="model", parts=[gt.Part(function_call=calls[0])]),
        gt.Content(
            role="user",
            parts=[
                gt.Part.from_function_response(name="get_weather", response={"result": "sunny"})
            ],
        ),
    ]
    assert (
        gem.models.generate_content(model="gemini-x", contents=contents, config=config).text
        == "Tool said: sunny"
    )


def test_gemini_model_path_with_slashes_and_query_key(base: str, mock: MockUpstream) -> None:
    with httpx.Client(base_url=base) as client:
        body = raw_request("gemini", stream=False)[1]
        response = client.post("/v1/models/tunedModels/my-model:generateContent?key=qk", json=body)
    assert response.status_code == 200
    assert (mock.requests[-1].model, mock.requests[-1].key) == ("tunedModels/my-model", "qk")


def test_models_list_and_unknown_route(oai: openai.OpenAI, base: str) -> None:
    assert [m.id for m in oai.models.list()] == ["mock-gpt", "mock-claude", "mock-gemini"]
    with httpx.Client(base_url=base) as client:
        response = client.post("/v2/nothing", json={})
    assert response.status_code == 404 and "error" in response.json()


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_exactly_n_content_events(protocol: str) -> None:
    mock = MockUpstream(stream_events=5, text="one two three")
    with serve(mock) as base, httpx.Client(base_url=base) as client:
        path, body = raw_request(protocol, stream=True)
        events = sse(client.post(path, json=body).content)
    content = {
        "openai_chat": lambda e, d: '"content":"' in d and '"role"' not in d,
        "openai_responses": lambda e, d: e == "response.output_text.delta",
        "anthropic_messages": lambda e, d: '"text_delta"' in d,
        "gemini": lambda e, d: '"text"' in d,
    }[protocol]
    assert sum(1 for e, d in events if content(e, d)) == 5
    assert is_terminal(protocol, *events[-1])


# --- faults reaching the SDKs as their own exceptions -----------------------------------------


def sdk_call(protocol: str, base: str, *, stream: bool = False) -> str:
    """One request through the protocol's official SDK; the reply text."""
    if protocol in ("openai_chat", "openai_responses"):
        with openai.OpenAI(api_key="sk-oai", base_url=f"{base}/v1", max_retries=0) as oai:
            if protocol == "openai_responses":
                if stream:
                    with oai.responses.stream(model="m", input=USER) as rs:
                        return rs.get_final_response().output_text
                return oai.responses.create(model="m", input=USER).output_text
            messages: Any = [{"role": "user", "content": USER}]
            if stream:
                with oai.chat.completions.stream(model="m", messages=messages) as cs:
                    return cs.get_final_completion().choices[0].message.content or ""
            return (
                oai.chat.completions.create(model="m", messages=messages).choices[0].message.content
                or ""
            )
    if protocol == "anthropic_messages":
        with anthropic.Anthropic(api_key="sk-ant", base_url=base, max_retries=0) as claude:
            messages = [{"role": "user", "content": USER}]
            if stream:
                with claude.messages.stream(model="c", max_tokens=64, messages=messages) as ms:
                    return ms.get_final_text()
            block = claude.messages.create(model="c", max_tokens=64, messages=messages).content[0]
            return block.text if block.type == "text" else ""
    options = gt.HttpOptions(base_url=base, retry_options=gt.HttpRetryOptions(attempts=1))
    with genai.Client(api_key="sk-gem", http_options=options) as gem:
        if stream:
            return "".join(
                c.text or "" for c in gem.models.generate_content_stream(model="g", contents=USER)
            )
        return gem.models.generate_content(model="g", contents=USER).text or ""


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize("stream", [False, True])
def test_sdk_round_trip(protocol: str, stream: bool, base: str, mock: MockUpstream) -> None:
    assert sdk_call(protocol, base, stream=stream) == text_for(protocol)
    assert mock.requests[-1].protocol == protocol


ERRORS: list[tuple[str, int, type[Exception]]] = [
    ("openai_chat", 429, openai.RateLimitError),
    ("openai_chat", 401, openai.AuthenticationError),
    ("openai_chat", 500, openai.InternalServerError),
    ("openai_responses", 429, openai.RateLimitError),
    ("openai_responses", 503, openai.InternalServerError),
    ("anthropic_messages", 429, anthropic.RateLimitError),
    ("anthropic_messages", 529, anthropic.OverloadedError),
    ("anthropic_messages", 500, anthropic.InternalServerError),
    ("anthropic_messages", 401, anthropic.AuthenticationError),
    ("gemini", 429, genai_errors.ClientError),
    ("gemini", 400, genai_errors.ClientError),
    ("gemini", 503, genai_errors.ServerError),
]


@pytest.mark.parametrize(("protocol", "status", "exception"), ERRORS)
@pytest.mark.parametrize("stream", [False, True])
def test_fault_status_reaches_the_sdk(
    protocol: str,
    status: int,
    exception: type[Exception],
    stream: bool,
    base: str,
    mock: MockUpstream,
) -> None:
    mock.add_fault(Fault(status=status, retry_after=2, body_retry_delay="2s", protocol=protocol))
    with pytest.raises(exception) as info:
        sdk_call(protocol, base, stream=stream)
    error: Any = info.value
    if isinstance(error, genai_errors.APIError):
        assert error.code == status
        if status == 429:
            assert error.status == "RESOURCE_EXHAUSTED"
            assert error.details["error"]["details"][0]["retryDelay"] == "2s"
    else:
        assert error.status_code == status
        assert error.response.headers["retry-after"] == "2"
    if protocol.startswith("openai"):
        assert "try again in 2s" in error.message
    assert sdk_call(protocol, base, stream=stream) == text_for(protocol)  # times=1: used up


def test_context_window_error_shapes(base: str, mock: MockUpstream) -> None:
    for protocol in ("openai_chat", "anthropic_messages", "gemini"):
        mock.add_fault(Fault(status=400, message="prompt is too long", protocol=protocol))
    with pytest.raises(openai.BadRequestError) as oai_error:
        sdk_call("openai_chat", base)
    assert oai_error.value.body == {
        "message": "prompt is too long",
        "type": "invalid_request_error",
        "param": None,
        "code": None,
    }
    with pytest.raises(anthropic.BadRequestError) as ant_error:
        sdk_call("anthropic_messages", base)
    assert ant_error.value.body == {
        "type": "error",
        "error": {"type": "invalid_request_error", "message": "prompt is too long"},
    }
    with pytest.raises(genai_errors.ClientError) as gem_error:
        sdk_call("gemini", base)
    assert (gem_error.value.status, gem_error.value.message) == (
        "INVALID_ARGUMENT",
        "prompt is too long",
    )
    mock.add_fault(
        Fault(status=400, error_type="context_length_exceeded", protocol="openai_responses")
    )
    with pytest.raises(openai.BadRequestError) as code_error:
        sdk_call("openai_responses", base)
    assert code_error.value.code == "context_length_exceeded"


@pytest.mark.parametrize(
    ("protocol", "exception"),
    [
        ("openai_chat", openai.APIError),
        ("anthropic_messages", anthropic.APIStatusError),
        ("gemini", genai_errors.ServerError),
    ],
)
def test_in_band_error_event_reaches_the_sdk(
    protocol: str, exception: type[Exception], base: str, mock: MockUpstream
) -> None:
    mock.add_fault(Fault(error_event_after=3, status=500, message="boom"))
    with pytest.raises(exception, match="boom"):
        sdk_call(protocol, base, stream=True)
    wait_for(lambda: mock.closed_streams)
    assert mock.closed_streams[-1].reason == "faulted" and mock.closed_streams[-1].events == 3


def test_in_band_error_is_response_failed_for_responses(
    oai: openai.OpenAI, mock: MockUpstream
) -> None:
    mock.add_fault(Fault(error_event_after=3, status=429))
    with oai.responses.stream(model="m", input=USER) as stream:
        events = list(stream)
    assert events[-1].type == "response.failed"
    assert events[-1].response.error is not None
    assert events[-1].response.error.code == "rate_limit_exceeded"


def test_fault_matching_by_model_key_protocol_and_times(base: str, mock: MockUpstream) -> None:
    mock.add_fault(Fault(status=429, model="hot", times=2))
    mock.add_fault(Fault(status=401, key="bad"))
    mock.add_fault(Fault(status=503, protocol="gemini", times=None))
    with httpx.Client(base_url=base) as client:

        def status(protocol: str, *, model: str = "m", key: str = "good") -> int:
            path, body = raw_request(protocol, stream=False, model=model)
            return client.post(
                path, json=body, headers={"authorization": f"Bearer {key}"}
            ).status_code

        assert status("openai_chat", model="hot") == 429
        assert status("openai_chat") == 200
        assert status("anthropic_messages", model="hot") == 429
        assert status("anthropic_messages", model="hot") == 200  # used up
        assert status("openai_responses", key="bad") == 401
        assert status("openai_responses", key="bad") == 200
        assert [status("gemini") for _ in range(3)] == [503, 503, 503]
        mock.clear()
        assert status("gemini") == 200


def test_keys_as_each_sdk_sends_them(base: str, mock: MockUpstream) -> None:
    for protocol in PROTOCOLS:
        sdk_call(protocol, base)
    assert [r.key for r in mock.requests] == ["sk-oai", "sk-oai", "sk-ant", "sk-gem"]
    assert mock.requests[3].headers["x-goog-api-key"] == "sk-gem"
    with httpx.Client(base_url=base) as client:
        client.post("/v1/messages", json={}, headers={"x-api-key": "raw-ant"})
    assert mock.requests[-1].key == "raw-ant"
    assert mock.requests[0].body["messages"][0]["content"] == USER


# --- faults as a plain HTTP client sees them ---------------------------------------------------


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_error_status_and_headers(protocol: str, base: str, mock: MockUpstream) -> None:
    mock.add_fault(Fault(status=429, retry_after=1.5, headers={"retry-after-ms": "1500"}))
    path, body = raw_request(protocol, stream=True)
    with httpx.Client(base_url=base) as client:
        response = client.post(path, json=body)
    assert response.status_code == 429
    assert response.headers["retry-after"] == "1.5"
    assert response.headers["retry-after-ms"] == "1500"
    assert response.headers["content-type"] == "application/json"
    assert "rate" in json.dumps(response.json()).lower() or "RESOURCE_EXHAUSTED" in response.text
    assert mock.closed_streams == []  # an error answer is not a stream


@pytest.mark.parametrize("stream", [False, True])
def test_slow_headers_and_slow_first_event(stream: bool, base: str, mock: MockUpstream) -> None:
    mock.add_fault(Fault(header_delay=0.3, first_event_delay=0.3))
    path, body = raw_request("openai_chat", stream=stream)
    with httpx.Client(base_url=base) as client:
        started = time.monotonic()
        with client.stream("POST", path, json=body) as response:
            headers_at = time.monotonic() - started
            response.read()
            body_at = time.monotonic() - started
    assert response.status_code == 200
    # Lower bounds from the request's start only (a busy client may see headers late).
    assert headers_at >= 0.3 * 0.9
    if stream:
        assert body_at >= (0.3 + 0.3) * 0.9  # headers first, then the slow first event


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_stall_hangs_until_the_client_goes_away(
    protocol: str, base: str, mock: MockUpstream
) -> None:
    mock.add_fault(Fault(stall_after=2))
    path, body = raw_request(protocol, stream=True)
    received = []
    with httpx.Client(base_url=base, timeout=httpx.Timeout(5, read=0.3)) as client:
        with pytest.raises(httpx.ReadTimeout), client.stream("POST", path, json=body) as response:
            for chunk in response.iter_raw():
                received.append(chunk)
    # Count events, not reads: two events may arrive in one TCP read on a busy machine.
    assert len([e for e in b"".join(received).split(b"\n\n") if e.strip()]) == 2
    wait_for(lambda: mock.closed_streams)
    assert (mock.closed_streams[0].reason, mock.closed_streams[0].events) == (
        "client_disconnected",
        2,
    )


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_premature_eof_without_terminal_event(protocol: str, base: str, mock: MockUpstream) -> None:
    mock.add_fault(Fault(eof_after=3))
    path, body = raw_request(protocol, stream=True)
    with httpx.Client(base_url=base) as client:
        response = client.post(path, json=body)
    events = sse(response.content)
    assert response.status_code == 200 and len(events) == 3
    assert not any(is_terminal(protocol, *e) for e in events)
    wait_for(lambda: mock.closed_streams)
    assert (mock.closed_streams[0].reason, mock.closed_streams[0].events) == ("faulted", 3)


@pytest.mark.parametrize(
    ("protocol", "expected"),
    [
        ("openai_chat", (None, '"error"')),
        ("openai_responses", ("response.failed", '"status":"failed"')),
        ("anthropic_messages", ("error", '"overloaded_error"')),
        ("gemini", (None, '"status":"UNAVAILABLE"')),
    ],
)
def test_in_band_error_event_shape(
    protocol: str, expected: tuple[str | None, str], base: str, mock: MockUpstream
) -> None:
    mock.add_fault(Fault(error_event_after=0, status=529))
    path, body = raw_request(protocol, stream=True)
    with httpx.Client(base_url=base) as client:
        response = client.post(path, json=body)
    assert response.status_code == 200
    [(event, data)] = sse(response.content)
    assert event == expected[0] and expected[1] in data
    json.loads(data)


@pytest.mark.parametrize(
    "fault",
    [Fault(malformed_json=True, times=2), Fault(deep_json=True, times=2)],
    ids=["malformed", "deep"],
)
@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_malformed_and_deep_json(
    protocol: str, fault: Fault, base: str, mock: MockUpstream
) -> None:
    mock.add_fault(fault)
    with httpx.Client(base_url=base) as client:
        path, body = raw_request(protocol, stream=False)
        plain = client.post(path, json=body)
        path, body = raw_request(protocol, stream=True)
        streamed = client.post(path, json=body)
    assert plain.status_code == 200
    first, broken = sse(streamed.content)
    json.loads(first[1])
    for text in (plain.text, broken[1]):
        if fault.malformed_json:
            with pytest.raises(json.JSONDecodeError):
                json.loads(text)
        else:  # valid JSON, only deeper than a decoder goes
            assert text.count("[") == 10_000
            with pytest.raises(RecursionError):
                json.loads(text)


def test_malformed_sse(base: str, mock: MockUpstream) -> None:
    mock.add_fault(Fault(malformed_sse=True, eof_after=2))
    path, body = raw_request("anthropic_messages", stream=True)
    with httpx.Client(base_url=base) as client:
        content = client.post(path, json=body).content
    *events, garbage = content.split(b"\n\n", 2)
    assert len(events) == 2 and all(e.startswith(b"event: ") for e in events)
    assert b"data:" not in garbage and garbage.startswith(b"<html>")


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize("stream", [False, True])
def test_reset_drops_the_connection(
    protocol: str, stream: bool, base: str, mock: MockUpstream
) -> None:
    mock.add_fault(Fault(reset=True))
    path, body = raw_request(protocol, stream=stream)
    with httpx.Client(base_url=base) as client:
        with pytest.raises((httpx.RemoteProtocolError, httpx.ReadError)):
            client.post(path, json=body)
        assert client.post(path, json=body).status_code == 200  # the server itself is fine
    if stream:
        wait_for(lambda: len(mock.closed_streams) == 2)
        assert [c.reason for c in mock.closed_streams] == ["reset", "completed"]


# --- connections, disconnects, lifespan --------------------------------------------------------


def wait_for(condition: Any, timeout: float = 1.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.01)


def test_client_disconnect_is_noticed_promptly() -> None:
    mock = MockUpstream(chunk_delay=0.5)
    with serve(mock) as base, httpx.Client(base_url=base) as client:
        path, body = raw_request("anthropic_messages", stream=True)
        with client.stream("POST", path, json=body) as response:
            chunks = response.iter_raw()
            next(chunks), next(chunks)
            assert mock.open_streams == 1
            closed_at = time.monotonic()
        wait_for(lambda: mock.closed_streams, timeout=1.0)
        [closed] = mock.closed_streams
        assert closed.reason == "client_disconnected" and closed.events == 2
        assert closed_at <= closed.time < closed_at + 1
        assert mock.open_streams == 0


def test_keep_alive_client_uses_one_connection(base: str, mock: MockUpstream) -> None:
    path, body = raw_request("openai_chat", stream=False)
    with httpx.Client(base_url=base) as client:
        for _ in range(5):
            assert client.post(path, json=body).status_code == 200
    assert len(mock.requests) == 5
    assert len(mock.connections) == 1
    with httpx.Client(base_url=base) as other:
        other.post(path, json=body)
    assert len(mock.connections) == 2


def test_latency_and_chunk_delay() -> None:
    mock = MockUpstream(latency=0.2, chunk_delay=0.05, stream_events=4)
    with serve(mock) as base, httpx.Client(base_url=base) as client:
        path, body = raw_request("gemini", stream=True)
        started = time.monotonic()
        with client.stream("POST", path, json=body) as response:
            first_at = time.monotonic() - started
            raw = response.read()
            done_at = time.monotonic() - started
    # Lower bounds only, from the request's start: the mock slept at least this long.
    # (Gaps between client reads are not asserted: reads may coalesce events.)
    assert first_at >= 0.2 * 0.9
    assert done_at >= (0.2 + 3 * 0.05) * 0.9  # latency, then 3 gaps between 4 text events
    assert raw.count(b"data: ") >= 4


async def call_app(
    app: MockUpstream,
    path: str,
    body: dict[str, Any],
    disconnect_after: float,
    *,
    fail_after: int | None = None,
) -> list[dict[str, Any]]:
    """Drive the ASGI app by hand: the client goes away after ``disconnect_after`` seconds
    (seen on ``receive``), or ``send`` fails after ``fail_after`` messages."""
    sent: list[dict[str, Any]] = []
    messages = [{"type": "http.request", "body": json.dumps(body).encode(), "more_body": False}]

    async def receive() -> dict[str, Any]:
        if messages:
            return messages.pop()
        await asyncio.sleep(disconnect_after)
        return {"type": "http.disconnect"}

    async def send(message: Any) -> None:
        if len(sent) == fail_after:
            raise OSError("connection lost")
        sent.append(message)

    scope = {
        "type": "http",
        "method": "POST",
        "path": path.partition("?")[0],
        "query_string": path.partition("?")[2].encode(),
        "headers": [(b"content-type", b"application/json")],
        "client": ("10.0.0.1", 5000),
    }
    await app(scope, receive, send)
    return sent


@pytest.mark.anyio
async def test_no_task_outlives_a_stalled_request() -> None:
    app = MockUpstream()
    app.add_fault(Fault(stall_after=1))
    before = asyncio.all_tasks()
    sent = await call_app(app, *raw_request("openai_chat", stream=True), disconnect_after=0.05)
    assert asyncio.all_tasks() == before
    assert [m["type"] for m in sent] == ["http.response.start", "http.response.body"]
    assert app.closed_streams[0].reason == "client_disconnected"
    assert app.connections == {("10.0.0.1", 5000)}


@pytest.mark.anyio
async def test_completed_stream_does_not_wait_for_the_client() -> None:
    app = MockUpstream(chunk_delay=0.001)
    started = time.monotonic()
    sent = await call_app(app, *raw_request("openai_responses", stream=True), disconnect_after=10)
    assert time.monotonic() - started < 1  # the disconnect watcher was cancelled, not awaited
    assert sent[-1] == {"type": "http.response.body", "body": b"", "more_body": False}
    assert (app.closed_streams[0].reason, app.closed_streams[0].events) == (
        "completed",
        len(sent) - 2,
    )
    assert app.open_streams == 0


@pytest.mark.anyio
async def test_failing_send_counts_as_disconnect() -> None:
    app = MockUpstream()
    sent = await call_app(
        app, *raw_request("gemini", stream=True), disconnect_after=10, fail_after=3
    )
    assert len(sent) == 3
    assert (app.closed_streams[0].reason, app.closed_streams[0].events) == (
        "client_disconnected",
        2,
    )
    assert app.open_streams == 0


@pytest.mark.anyio
async def test_reset_raises_itself_in_process() -> None:
    app = MockUpstream(latency=0.01)  # the guarded path: the error must not come out as a group
    app.add_fault(Fault(reset=True))
    with pytest.raises(Exception, match="connection reset") as info:
        await call_app(app, *raw_request("openai_chat", stream=False), disconnect_after=10)
    assert not isinstance(info.value, BaseExceptionGroup)


def test_invalid_request_body_is_a_protocol_error(base: str) -> None:
    with httpx.Client(base_url=base) as client:
        not_object = client.post("/v1/messages", json=[1, 2])
        nameless = client.post(
            "/v1beta/models/g:generateContent",
            json={"contents": [], "tools": [{"functionDeclarations": [{"description": "x"}]}]},
        )
    assert not_object.status_code == 400
    assert not_object.json()["error"]["type"] == "invalid_request_error"
    assert nameless.status_code == 400 and nameless.json()["error"]["status"] == "INVALID_ARGUMENT"


@pytest.mark.anyio
async def test_in_process_transport() -> None:
    app = MockUpstream()
    app.add_fault(Fault(reset=True, protocol="gemini"))
    async with httpx.AsyncClient(transport=mock_transport(app), base_url="http://mock") as client:

        async def post(protocol: str, *, stream: bool) -> httpx.Response:
            path, body = raw_request(protocol, stream=stream)
            return await client.post(path, json=body)

        plain = await post("anthropic_messages", stream=False)
        streamed = await post("openai_chat", stream=True)
        with pytest.raises(httpx.RemoteProtocolError):
            await post("gemini", stream=False)
    assert plain.json()["content"][0]["text"] == text_for("anthropic_messages")
    assert sse(streamed.content)[-1] == (None, "[DONE]")
    assert app.closed_streams[0].reason == "completed"


@pytest.mark.anyio
async def test_lifespan_passes_through() -> None:
    from asgi_lifespan import LifespanManager

    async with LifespanManager(MockUpstream()):  # type: ignore[arg-type]
        pass


def test_command_line_entry() -> None:
    port = free_port()
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "asgi_rotator.mock",
            "--port",
            str(port),
            "--latency",
            "0",
            "--chunk-delay",
            "0",
        ]
    )
    try:
        path, body = raw_request("openai_chat", stream=False)
        deadline = time.monotonic() + 10
        while True:
            try:
                response = httpx.post(f"http://127.0.0.1:{port}{path}", json=body)
                break
            except httpx.ConnectError:
                assert time.monotonic() < deadline
                time.sleep(0.05)
        assert response.json()["choices"][0]["message"]["content"] == text_for("openai_chat")
    finally:
        process.terminate()
        process.wait(10)
