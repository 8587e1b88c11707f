"""OpenAI Chat Completions codec: golden fixtures, lossless same-protocol round trips, the
official ``openai`` SDK as the oracle for everything the codec builds, and validation."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import msgspec
import openai
import pytest
from openai.types.chat import ChatCompletion, ChatCompletionChunk
from openai.types.chat import completion_create_params as params
from openai.types.shared import ErrorObject
from pydantic import TypeAdapter

from asgi_rotator.errors import GatewayError
from asgi_rotator.protocols import get_codec
from asgi_rotator.protocols.openai_chat import MARK, OpenAIChatCodec
from asgi_rotator.sse import SSEDecoder
from asgi_rotator.unified import (
    BlockStop,
    Error,
    Event,
    File,
    Finish,
    Image,
    Message,
    MessageStart,
    OutputFormat,
    Reasoning,
    ReasoningConfig,
    ReasoningDelta,
    Request,
    Response,
    Signature,
    Text,
    TextDelta,
    Tool,
    ToolArgsDelta,
    ToolCall,
    ToolCallStart,
    ToolChoice,
    ToolResult,
    Usage,
    UsageEvent,
)
from tests.conftest import FIXTURES, load_fixture
from tests.sdk import openai_client, replay

codec = OpenAIChatCodec()
P = "openai_chat"
FIXTURE_DIR = FIXTURES / P

REQUESTS = sorted(p.name for p in FIXTURE_DIR.glob("request_*.json"))
RESPONSES = sorted(p.name for p in FIXTURE_DIR.glob("response_*.json"))
STREAMS = sorted(p.name for p in FIXTURE_DIR.glob("stream_*.sse"))
# Fixtures carrying fields outside the SDK's request types on purpose.
NON_STANDARD_REQUESTS = {"request_unknown_fields.json", "request_reasoning.json"}

NON_STREAMING = TypeAdapter(params.CompletionCreateParamsNonStreaming)
STREAMING = TypeAdapter(params.CompletionCreateParamsStreaming)


# --- helpers ---------------------------------------------------------------------------------


def _force(value: Any) -> Any:
    """Pydantic validates ``Iterable[...]`` TypedDict fields lazily: consume them so every
    message and content part really is validated."""
    if isinstance(value, dict):
        return {k: _force(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)) or hasattr(value, "__next__"):
        return [_force(v) for v in value]
    return value


def validate_request(body: dict[str, Any], *, forbid: bool = True) -> None:
    """Strict validation against the SDK's request params; ``forbid`` also refuses any field
    the SDK does not know (what a request built for another protocol must satisfy)."""
    adapter = STREAMING if body.get("stream") else NON_STREAMING
    _force(adapter.validate_python(body, strict=True, extra="forbid" if forbid else None))


def decode_sse(raw: bytes, *, chunk_sizes: list[int] | None = None) -> list[Event]:
    sse = SSEDecoder()
    decoder = codec.stream_decoder()
    events: list[Event] = []
    pieces = [raw]
    if chunk_sizes:
        pieces, at = [], 0
        for size in chunk_sizes:
            pieces.append(raw[at : at + size])
            at += size
        pieces.append(raw[at:])
    for piece in pieces:
        for event in sse.feed(piece):
            events.extend(decoder.feed(event))
    for event in sse.close():
        events.extend(decoder.feed(event))
    events.extend(decoder.close())
    assert decoder.done
    return events


def comparable(events: list[Event]) -> list[Any]:
    """Events with in-band errors reduced to what identifies them (exceptions compare by id)."""
    return [
        (e.error.kind, e.error.message, e.error.status) if isinstance(e, Error) else e
        for e in events
    ]


def encode_all(events: list[Event], request: Request | None = None) -> bytes:
    encoder = codec.stream_encoder(request)
    return b"".join(encoder.encode(e) for e in events)


def sse_payloads(raw: bytes) -> list[str]:
    decoder = SSEDecoder()
    return [e.data for e in [*decoder.feed(raw), *decoder.close()]]


def chat_request(**kw: Any) -> Request:
    return Request(model="gpt-4o", messages=[Message(role="user", content=[Text(text="hi")])], **kw)


# --- requests --------------------------------------------------------------------------------


@pytest.mark.parametrize("name", REQUESTS)
def test_request_round_trip_is_lossless(name: str) -> None:
    body = load_fixture(P, name)
    request = codec.parse_request(body)
    assert request.origin == "openai_chat"
    assert codec.build_request(request) == body


@pytest.mark.parametrize("name", REQUESTS)
def test_request_fixtures_and_rebuilds_match_sdk_types(name: str) -> None:
    body = load_fixture(P, name)
    forbid = name not in NON_STANDARD_REQUESTS
    validate_request(body, forbid=forbid)
    validate_request(codec.build_request(codec.parse_request(body)), forbid=forbid)


def _semantic(value: Any) -> Any:
    """A unified value without ``extra``/``origin``: what another protocol's codec sees."""
    if isinstance(value, dict):
        return {k: _semantic(v) for k, v in value.items() if k not in ("extra", "origin")}
    if isinstance(value, list):
        return [_semantic(v) for v in value]
    return value


@pytest.mark.parametrize("name", REQUESTS)
def test_request_built_for_another_protocols_client_is_valid_and_equivalent(name: str) -> None:
    request = codec.parse_request(load_fixture(P, name))
    request.origin = "anthropic_messages"
    body = codec.build_request(request)
    # Chat-made reasoning history is echoed as ``reasoning_content`` (not an SDK field).
    validate_request(body, forbid=name != "request_reasoning.json")
    again = _semantic(msgspec.to_builtins(codec.parse_request(body)))
    expected = _semantic(msgspec.to_builtins(request))
    if name == "request_tool_choice_required.json":  # the custom tool stays with its protocol
        expected["tools"] = expected["tools"][:1]
    assert again == expected


@pytest.mark.parametrize("name", RESPONSES)
def test_response_built_for_another_protocols_client_is_valid_and_equivalent(name: str) -> None:
    response = codec.parse_response(load_fixture(P, name))
    response.origin = "gemini"
    body = codec.build_response(response)
    ChatCompletion.model_validate(body, strict=True)
    again = codec.parse_response(body)
    assert _semantic(msgspec.to_builtins(again)) == _semantic(msgspec.to_builtins(response))


def test_request_simple_maps_to_unified() -> None:
    request = codec.parse_request(load_fixture(P, "request_simple.json"))
    assert request.model == "gpt-4o-mini"
    assert request.messages == [
        Message(role="user", content=[Text(text="Hello!")], extra={MARK: {"content": "string"}})
    ]
    assert request.system == [] and request.stream is False


def test_system_and_developer_become_system_and_a_late_system_turn_stays_in_place() -> None:
    request = codec.parse_request(load_fixture(P, "request_system.json"))
    assert [t.text for t in request.system] == [
        "You are a helpful assistant.",
        "Answer in French.",
        "Be brief.",
    ]
    late = request.messages[2]
    assert late.role == "user" and late.content == [Text(text="From now on, answer in English.")]
    assert late.extra[MARK]["role"] == "system"
    assert request.messages[0].name == "alice"
    # Built for another protocol's request: one system message, the late one as a user turn.
    request.origin = "anthropic_messages"
    body = codec.build_request(request)
    assert body["messages"][0] == {
        "role": "system",
        "content": [
            {"type": "text", "text": "You are a helpful assistant."},
            {"type": "text", "text": "Answer in French."},
            {"type": "text", "text": "Be brief."},
        ],
    }
    assert body["messages"][3] == {"role": "user", "content": "From now on, answer in English."}
    validate_request(body)


def test_multimodal_parts_map_to_image_file_and_audio() -> None:
    request = codec.parse_request(load_fixture(P, "request_multimodal.json"))
    first, _, third, _, fifth = request.messages
    image = first.content[1]
    assert isinstance(image, Image) and image.url and image.url.startswith("https://")
    assert image.detail == "high"
    inline, pdf, by_id = third.content[1:]
    assert isinstance(inline, Image) and inline.url is None
    assert inline.media_type == "image/png" and inline.data and inline.data.startswith("iVBOR")
    assert pdf == File(
        data="JVBERi0xLjQKJcOkw7zDtsOfCg==", media_type="application/pdf", filename="report.pdf"
    )
    assert by_id == File(file_id="file-6F2ksmvXxt4VdoqmHRw6kL")
    audio = fifth.content[1]
    assert isinstance(audio, File) and audio.media_type == "audio/wav"
    assert request.max_tokens == 300


def test_tool_calls_and_results_map_by_id() -> None:
    request = codec.parse_request(load_fixture(P, "request_tools.json"))
    calls = request.messages[1].content
    assert [c.id for c in calls if isinstance(c, ToolCall)] == ["call_abc123", "call_def456"]
    assert calls[1] == ToolCall(
        id="call_def456",
        name="get_current_weather",
        arguments='{"location": "Paris, France", "unit": "celsius"}',
    )
    results = [m.content[0] for m in request.messages[2:4]]
    assert all(isinstance(r, ToolResult) for r in results)
    assert [(r.tool_call_id, r.name) for r in results if isinstance(r, ToolResult)] == [
        ("call_abc123", "get_current_weather"),
        ("call_def456", "get_current_weather"),
    ]
    assert request.tool_choice == ToolChoice(mode="tool", name="book_table")
    assert request.parallel_tool_calls is False
    assert request.tools is not None and request.tools[1].strict is True


def test_tool_choice_modes_and_custom_tools() -> None:
    request = codec.parse_request(load_fixture(P, "request_tool_choice_required.json"))
    assert request.tool_choice == ToolChoice(mode="required")
    assert request.tools is not None
    custom = request.tools[1]
    assert custom.type == "custom" and custom.name == "sql"
    # A custom tool is native to this protocol: not sent to another protocol's request.
    request.origin = "gemini"
    body = codec.build_request(request)
    assert [t["function"]["name"] for t in body["tools"]] == ["lookup_order"]
    for mode in ("auto", "none", "required"):
        body = {"model": "m", "messages": [{"role": "user", "content": "x"}], "tool_choice": mode}
        assert codec.parse_request(body).tool_choice == ToolChoice(mode=mode)  # type: ignore[arg-type]


def test_structured_output_and_sampling() -> None:
    request = codec.parse_request(load_fixture(P, "request_structured_output.json"))
    assert request.output is not None
    assert request.output.type == "json_schema" and request.output.name == "calendar_event"
    assert request.output.strict is True and request.output.schema is not None
    assert request.output.description == "An event in a calendar"
    assert request.stop == ["\n\n"] and request.seed == 42 and request.top_p == 0.9
    assert request.presence_penalty == 0.5 and request.frequency_penalty == -0.5
    json_object = codec.parse_request(load_fixture(P, "request_json_object.json"))
    assert json_object.output == OutputFormat(type="json_object")
    assert json_object.stop == ["END", "STOP"]
    assert [t.text for t in json_object.system] == ["Reply with a JSON object."]


def test_reasoning_effort_and_reasoning_history() -> None:
    request = codec.parse_request(load_fixture(P, "request_reasoning.json"))
    assert request.reasoning == ReasoningConfig(effort="high")
    assert request.max_tokens == 4096
    reasoning = request.messages[1].content[0]
    assert isinstance(reasoning, Reasoning) and reasoning.source == "openai_chat"
    assert reasoning.text == "Compare the decimals: 0.11 < 0.8."
    none = codec.parse_request(
        {"model": "m", "messages": [{"role": "user", "content": "x"}], "reasoning_effort": "none"}
    )
    assert none.reasoning == ReasoningConfig(effort="none", enabled=False)


def test_stream_options_metadata_user_and_extra() -> None:
    request = codec.parse_request(load_fixture(P, "request_stream.json"))
    assert request.stream is True and request.include_usage is True
    assert request.metadata == {"session": "abc"} and request.user == "user-1234"
    assert request.extra["n"] == 1
    assert request.stop == ["\n"]


def test_legacy_functions_map_onto_tools() -> None:
    request = codec.parse_request(load_fixture(P, "request_legacy_functions.json"))
    assert request.tools is not None and request.tools[0].name == "get_current_weather"
    assert request.tool_choice == ToolChoice(mode="auto")
    call = request.messages[1].content[0]
    result = request.messages[2].content[0]
    assert isinstance(call, ToolCall) and isinstance(result, ToolResult)
    assert result.tool_call_id == call.id and result.name == "get_current_weather"
    # Another protocol's client would use the modern spelling.
    request.origin = "anthropic_messages"
    body = codec.build_request(request)
    assert "functions" not in body and body["tools"][0]["type"] == "function"
    assert body["messages"][1]["tool_calls"][0]["id"] == call.id
    assert body["messages"][2] == {
        "role": "tool",
        "tool_call_id": call.id,
        "content": '{"temperature": "22", "unit": "celsius"}',
    }
    validate_request(body)


def test_unknown_fields_kept_at_every_level() -> None:
    request = codec.parse_request(load_fixture(P, "request_unknown_fields.json"))
    assert request.extra["x_vendor"] == {"nested": [1, 2, 3]}
    assert request.extra["temperature"] is None and request.temperature is None
    user = request.messages[0]
    assert user.extra["x_message_meta"] == {"source": "web"}
    assert user.content[0].extra == {"x_note": "kept"}
    assert request.tools is not None and request.tools[0].extra["x_tool"] == "t"
    call = request.messages[1].content[0]
    assert isinstance(call, ToolCall) and call.extra["x_call"] == "yes"
    # None of it leaks into a request for another protocol's client.
    request.origin = "gemini"
    body = codec.build_request(request)
    assert "x_vendor" not in body and "logit_bias" not in body
    assert "x_message_meta" not in body["messages"][1]
    validate_request(body)


def test_request_from_another_protocol_is_valid_and_documented_losses_apply() -> None:
    request = Request(
        model="claude-sonnet-4",
        system=[Text(text="Be kind.", extra={"cache_control": {"type": "ephemeral"}})],
        messages=[
            Message(
                role="user",
                content=[Text(text="Look:"), Image(data="/9j/4AAQSkZJRg==")],
            ),
            Message(
                role="assistant",
                content=[
                    Reasoning(text="thinking...", signature="sig", source="anthropic_messages"),
                    Text(text="Calling."),
                    ToolCall(id="toolu_1", name="lookup", arguments='{"q": 1}'),
                ],
            ),
            Message(
                role="user",
                content=[
                    ToolResult(
                        tool_call_id="toolu_1",
                        name="lookup",
                        content=[Text(text="found"), Image(url="https://x/y.png")],
                        is_error=True,
                    ),
                    Text(text="Thanks, go on."),
                ],
            ),
        ],
        tools=[
            Tool(name="lookup", parameters={"type": "object"}),
            Tool(
                name="web_search", type="web_search_20250305", extra={"type": "web_search_20250305"}
            ),
        ],
        tool_choice=ToolChoice(mode="tool", name="lookup"),
        max_tokens=1024,
        top_k=40,
        stop=["###"],
        reasoning=ReasoningConfig(enabled=True, budget_tokens=10000),
        output=OutputFormat(schema={"type": "object"}),
        stream=True,
        metadata={"user_id": "u1"},
        store=True,
        origin="anthropic_messages",
        extra={"anthropic_beta": ["x"]},
    )
    body = codec.build_request(request)
    assert body == {
        "model": "claude-sonnet-4",
        "messages": [
            {"role": "system", "content": "Be kind."},
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "Look:"},
                    {
                        "type": "image_url",
                        "image_url": {"url": "data:image/jpeg;base64,/9j/4AAQSkZJRg=="},
                    },
                ],
            },
            {
                "role": "assistant",
                "content": "Calling.",
                "tool_calls": [
                    {
                        "id": "toolu_1",
                        "type": "function",
                        "function": {"name": "lookup", "arguments": '{"q": 1}'},
                    }
                ],
            },
            {"role": "tool", "tool_call_id": "toolu_1", "content": "found"},
            {"role": "user", "content": "Thanks, go on."},
        ],
        "stream": True,
        "stream_options": {"include_usage": True},
        "tools": [
            {"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}
        ],
        "tool_choice": {"type": "function", "function": {"name": "lookup"}},
        "max_completion_tokens": 1024,
        "stop": ["###"],
        "reasoning_effort": "high",
        "response_format": {
            "type": "json_schema",
            "json_schema": {"name": "response", "schema": {"type": "object"}},
        },
        "metadata": {"user_id": "u1"},
    }
    validate_request(body)


def test_request_from_another_protocol_edge_cases() -> None:
    # tool_choice / parallel_tool_calls need tools; a file by URL cannot be sent.
    request = chat_request(
        tool_choice=ToolChoice(mode="auto"), parallel_tool_calls=True, origin="gemini"
    )
    body = codec.build_request(request)
    assert "tool_choice" not in body and "parallel_tool_calls" not in body
    request.messages[0].content.append(File(url="https://x/doc.pdf"))
    with pytest.raises(GatewayError) as info:
        codec.build_request(request)
    assert info.value.kind == "bad_request" and "messages[0].content[1]" in info.value.message
    # Inline documents get a filename (the API wants one); audio becomes input_audio.
    request.messages[0].content[1:] = [
        File(data="JVBE", media_type="application/pdf"),
        File(data="SUQz", media_type="audio/mpeg"),
    ]
    request.reasoning = ReasoningConfig(enabled=False, budget_tokens=0)
    body = codec.build_request(request)
    assert body["messages"][0]["content"][1:] == [
        {
            "type": "file",
            "file": {"file_data": "data:application/pdf;base64,JVBE", "filename": "document.pdf"},
        },
        {"type": "input_audio", "input_audio": {"data": "SUQz", "format": "mp3"}},
    ]
    assert "reasoning_effort" not in body
    validate_request(body)


def test_chat_reasoning_history_goes_back_to_chat_only() -> None:
    request = codec.parse_request(load_fixture(P, "request_reasoning.json"))
    request.origin = "openai_responses"  # e.g. a Responses client replaying chat-made history
    body = codec.build_request(request)
    assert body["messages"][1]["reasoning_content"] == "Compare the decimals: 0.11 < 0.8."
    reasoning = request.messages[1].content[0]
    assert isinstance(reasoning, Reasoning)
    reasoning.source = "gemini"
    assert "reasoning_content" not in codec.build_request(request)["messages"][1]


def test_layer_changes_win_over_kept_spellings() -> None:
    request = codec.parse_request(load_fixture(P, "request_unknown_fields.json"))
    request.temperature = 0.3  # a layer set what the client sent as null
    request.model = "gpt-4o-2024-11-20"
    body = codec.build_request(request)
    assert body["temperature"] == 0.3 and body["model"] == "gpt-4o-2024-11-20"
    request = codec.parse_request(load_fixture(P, "request_system.json"))
    request.system.insert(0, Text(text="Injected policy."))
    body = codec.build_request(request)
    assert body["messages"][0]["role"] == "system"
    assert body["messages"][0]["content"][0] == {"type": "text", "text": "Injected policy."}


def test_request_path_and_registry() -> None:
    assert codec.request_path(chat_request()) == "/chat/completions"
    assert isinstance(get_codec("openai_chat"), OpenAIChatCodec)
    assert codec.name == "openai_chat" and codec.auth == "bearer"


# --- bad input -------------------------------------------------------------------------------


def _msgs(*messages: Any) -> dict[str, Any]:
    return {"model": "gpt-4o", "messages": list(messages)}


BAD_REQUESTS = [
    ([], "", "expected an object"),
    ({"messages": [{"role": "user", "content": "x"}]}, "model", "is required"),
    ({"model": "m"}, "messages", "is required"),
    ({"model": 3, "messages": []}, "model", "expected a string"),
    ({"model": "m", "messages": {"role": "user"}}, "messages", "expected an array"),
    (_msgs("hello"), "messages[0]", "expected an object"),
    (_msgs({"content": "x"}), "messages[0].role", "expected a string"),
    (_msgs({"role": "robot", "content": "x"}), "messages[0].role", "unknown role 'robot'"),
    (_msgs({"role": "user"}), "messages[0].content", "is required"),
    (_msgs({"role": "user", "content": 5}), "messages[0].content", "expected an array"),
    (
        _msgs({"role": "user", "content": [{"type": "video", "video": {}}]}),
        "messages[0].content[0].type",
        "unknown content part type 'video'",
    ),
    (
        _msgs({"role": "system", "content": [{"type": "image_url", "image_url": {"url": "u"}}]}),
        "messages[0].content[0].type",
        "not allowed",
    ),
    (
        _msgs({"role": "user", "content": [{"type": "image_url", "image_url": {}}]}),
        "messages[0].content[0].image_url.url",
        "expected a string",
    ),
    (
        _msgs({"role": "user", "content": [{"type": "text"}]}),
        "messages[0].content[0].text",
        "expected a string",
    ),
    (
        _msgs(
            {"role": "user", "content": "x"},
            {"role": "tool", "tool_call_id": "call_nope", "content": "r"},
        ),
        "messages[1].tool_call_id",
        "no matching tool call",
    ),
    (
        _msgs({"role": "function", "name": "f", "content": "r"}),
        "messages[0].name",
        "no matching function call",
    ),
    (
        _msgs(
            {
                "role": "assistant",
                "tool_calls": [{"id": "c", "type": "function", "function": {"name": "f"}}],
            }
        ),
        "messages[0].tool_calls[0].function.arguments",
        "expected a string",
    ),
    (
        _msgs(
            {
                "role": "assistant",
                "tool_calls": [{"type": "function", "function": {"name": "f", "arguments": "{}"}}],
            }
        ),
        "messages[0].tool_calls[0].id",
        "expected a string",
    ),
    (
        {**_msgs({"role": "user", "content": "x"}), "temperature": "hot"},
        "temperature",
        "expected a number",
    ),
    ({**_msgs({"role": "user", "content": "x"}), "max_tokens": 0}, "max_tokens", "must be >= 1"),
    ({**_msgs({"role": "user", "content": "x"}), "stop": ["a", 1]}, "stop[1]", "expected a string"),
    ({**_msgs({"role": "user", "content": "x"}), "stream": "yes"}, "stream", "expected a boolean"),
    (
        {**_msgs({"role": "user", "content": "x"}), "tools": [{"type": "function"}]},
        "tools[0].function",
        "expected an object",
    ),
    (
        {**_msgs({"role": "user", "content": "x"}), "tool_choice": "sometimes"},
        "tool_choice",
        "unsupported value",
    ),
    (
        {**_msgs({"role": "user", "content": "x"}), "response_format": {"type": "yaml"}},
        "response_format.type",
        "unknown response format",
    ),
    (
        {
            **_msgs({"role": "user", "content": "x"}),
            "response_format": {"type": "json_schema", "json_schema": {}},
        },
        "response_format.json_schema.name",
        "expected a string",
    ),
    (
        {**_msgs({"role": "user", "content": "x"}), "stream_options": {"include_usage": 1}},
        "stream_options.include_usage",
        "expected a boolean",
    ),
]


@pytest.mark.parametrize(("body", "path", "problem"), BAD_REQUESTS)
def test_bad_requests_name_the_field(body: Any, path: str, problem: str) -> None:
    with pytest.raises(GatewayError) as info:
        codec.parse_request(body)
    err = info.value
    assert err.kind == "bad_request" and err.status == 400
    assert problem in err.message
    if path:
        assert err.message.startswith(f"{path}: ") and err.param == path


def test_model_and_stream_from_arguments() -> None:
    request = codec.parse_request(
        {"messages": [{"role": "user", "content": "x"}]}, model="gpt-4o", stream=True
    )
    assert request.model == "gpt-4o" and request.stream is True


# --- responses -------------------------------------------------------------------------------


@pytest.mark.parametrize("name", RESPONSES)
def test_response_round_trip_is_lossless_and_sdk_valid(name: str) -> None:
    body = load_fixture(P, name)
    response = codec.parse_response(body)
    assert response.origin == "openai_chat"
    rebuilt = codec.build_response(response)
    assert rebuilt == body
    ChatCompletion.model_validate(rebuilt, strict=True)


def test_response_text_and_usage() -> None:
    response = codec.parse_response(load_fixture(P, "response_text.json"))
    assert response.content == [
        Text(text="The image shows a wooden boardwalk extending through a lush green marshland.")
    ]
    assert response.finish_reason == "stop" and response.created == 1741570283
    # prompt_tokens already includes cached tokens: the unified rule, unchanged.
    assert response.usage == Usage(input_tokens=1117, output_tokens=46, cache_read_tokens=1024)


def test_response_tool_calls_reasoning_refusal_and_legacy() -> None:
    tools = codec.parse_response(load_fixture(P, "response_tool_calls.json"))
    assert tools.finish_reason == "tool_calls"
    assert [(c.id, c.arguments) for c in tools.content if isinstance(c, ToolCall)] == [
        ("call_abc123", '{\n"location": "Boston, MA"\n}'),
        ("call_def456", '{"location": "Paris, France"}'),
    ]
    deepseek = codec.parse_response(load_fixture(P, "response_reasoning.json"))
    reasoning, text = deepseek.content
    assert isinstance(reasoning, Reasoning) and reasoning.source == "openai_chat"
    assert reasoning.text.startswith("The user asks")
    assert text == Text(text="There are three Rs in 'strawberry'.")
    assert deepseek.usage == Usage(
        input_tokens=64, output_tokens=212, reasoning_tokens=180, cache_read_tokens=32
    )
    router = codec.parse_response(load_fixture(P, "response_openrouter_reasoning.json"))
    assert isinstance(router.content[0], Reasoning)
    assert router.content[0].text == "The user wants the capital of France."
    assert router.finish_reason == "length"
    assert router.usage.cache_write_tokens == 12 and router.usage.reasoning_tokens == 10
    refusal = codec.parse_response(load_fixture(P, "response_refusal.json"))
    assert [p.text for p in refusal.content if isinstance(p, Text)] == [
        "I'm sorry, I cannot assist with that request."
    ]
    legacy = codec.parse_response(load_fixture(P, "response_legacy_function_call.json"))
    assert legacy.finish_reason == "tool_calls"
    assert (
        isinstance(legacy.content[0], ToolCall) and legacy.content[0].name == "get_current_weather"
    )


def test_response_from_another_protocol_through_the_sdk() -> None:
    response = Response(
        id="msg_01",
        model="claude-sonnet-4",
        content=[
            Reasoning(text="Let me think.", signature="EqQB", source="anthropic_messages"),
            Text(text="Hello "),
            Text(text="world."),
            ToolCall(id="toolu_1", name="lookup", arguments='{"q": "x"}'),
        ],
        finish_reason="pause",
        usage=Usage(
            input_tokens=100,
            output_tokens=50,
            cache_read_tokens=60,
            cache_write_tokens=20,
            reasoning_tokens=30,
        ),
        created=1700000000,
        origin="anthropic_messages",
        extra={"stop_details": None},
    )
    body = codec.build_response(response)
    ChatCompletion.model_validate(body, strict=True)
    assert "stop_details" not in body
    client = openai_client(replay(200, body))
    completion = client.chat.completions.create(model="claude-sonnet-4", messages=[])
    message = completion.choices[0].message
    assert message.content == "Hello world."
    # The SDK has no field for it but keeps it as an extra attribute.
    assert message.model_extra == {"reasoning_content": "Let me think."}
    assert message.tool_calls is not None and message.tool_calls[0].id == "toolu_1"
    assert completion.choices[0].finish_reason == "stop"
    usage = completion.usage
    assert usage is not None and (usage.prompt_tokens, usage.completion_tokens) == (100, 50)
    assert usage.prompt_tokens_details is not None
    assert usage.prompt_tokens_details.cached_tokens == 60
    assert usage.prompt_tokens_details.cache_write_tokens == 20
    assert usage.completion_tokens_details is not None
    assert usage.completion_tokens_details.reasoning_tokens == 30
    client.close()


def test_response_with_a_layer_changed_finish_reason_and_lenient_input() -> None:
    response = codec.parse_response(load_fixture(P, "response_legacy_function_call.json"))
    response.finish_reason = "length"
    assert codec.build_response(response)["choices"][0]["finish_reason"] == "length"
    odd = codec.parse_response(
        {
            "id": "x",
            "model": "m",
            "choices": [
                {
                    "message": {
                        "content": "ok",
                        "tool_calls": [{"function": {"name": "f", "arguments": {"a": 1}}}],
                    },
                    "finish_reason": "stop",
                }
            ],
        }
    )
    call = odd.content[1]
    assert (
        isinstance(call, ToolCall) and call.arguments == '{"a":1}' and call.id.startswith("call_")
    )
    assert odd.finish_reason == "tool_calls"  # "stop" after tool calls reads as tool_calls
    empty = codec.parse_response({"choices": []})
    assert empty.content == [] and empty.finish_reason == "stop"


# --- streams ---------------------------------------------------------------------------------


def test_stream_text_decodes() -> None:
    events = decode_sse(load_fixture(P, "stream_text.sse"))
    assert events == [
        MessageStart(id="chatcmpl-7xyz", model="gpt-4o-mini", created=1694268190),
        TextDelta(index=0, text="Why did the"),
        TextDelta(index=0, text=" scarecrow win an award? Because he was"),
        TextDelta(index=0, text=" outstanding in his field."),
        BlockStop(index=0),
        Finish(
            reason="stop",
            usage=Usage(input_tokens=2048, output_tokens=17, cache_read_tokens=1920),
        ),
    ]


def test_stream_tool_calls_decode() -> None:
    events = decode_sse(load_fixture(P, "stream_tool_calls.sse"))
    assert events == [
        MessageStart(id="chatcmpl-tools1", model="gpt-4.1", created=1712345678),
        TextDelta(index=0, text="Checking both cities."),
        BlockStop(index=0),
        ToolCallStart(index=1, id="call_boston", name="get_current_weather"),
        ToolArgsDelta(index=1, delta='{"loc'),
        ToolArgsDelta(index=1, delta='ation": "Boston, MA"}'),
        BlockStop(index=1),
        ToolCallStart(index=2, id="call_paris", name="get_current_weather"),
        ToolArgsDelta(index=2, delta='{"location": '),
        ToolArgsDelta(index=2, delta='"Paris, France"}'),
        BlockStop(index=2),
        Finish(reason="tool_calls", usage=Usage(input_tokens=120, output_tokens=48)),
    ]


def test_stream_reasoning_decodes() -> None:
    events = decode_sse(load_fixture(P, "stream_reasoning.sse"))
    assert events[1:] == [
        ReasoningDelta(index=0, text="Count the r's: "),
        ReasoningDelta(index=0, text="st-r-awbe-r-r-y gives three."),
        BlockStop(index=0),
        TextDelta(index=1, text="There are three"),
        TextDelta(index=1, text=" Rs."),
        BlockStop(index=1),
        Finish(
            reason="length",
            usage=Usage(input_tokens=16, output_tokens=60, reasoning_tokens=52),
        ),
    ]


def test_stream_in_band_error_decodes() -> None:
    events = decode_sse(load_fixture(P, "stream_error.sse"))
    assert isinstance(events[0], MessageStart)
    assert events[1:3] == [TextDelta(index=0, text="Partial"), BlockStop(index=0)]
    error = events[3]
    assert isinstance(error, Error) and len(events) == 4
    assert error.error.kind == "server_error" and error.error.retryable
    assert error.error.message.startswith("The server had an error")


@pytest.mark.parametrize("name", STREAMS)
def test_stream_decoding_is_chunking_independent(name: str) -> None:
    raw = load_fixture(P, name)
    whole = decode_sse(raw)
    rng = random.Random(name)
    for _ in range(5):
        sizes = [rng.randint(1, 40) for _ in range(len(raw) // 10)]
        assert comparable(decode_sse(raw, chunk_sizes=sizes)) == comparable(whole)


def test_stream_decoder_edge_cases() -> None:
    decoder = codec.stream_decoder()
    sse = SSEDecoder()
    with pytest.raises(GatewayError) as info:
        for event in sse.feed(b"data: {not json\n\n"):
            decoder.feed(event)
    assert info.value.kind == "server_error"
    assert info.value.message == "upstream sent malformed JSON in a stream event"

    # A JSON value that is not an object says nothing, and does not end the stream.
    decoder = codec.stream_decoder()
    for value in (b"[]", b'[{"choices":[]}]', b"5", b'"text"', b"null"):
        assert decoder.feed(SSEDecoder().feed(b"data: " + value + b"\n\n")[0]) == []
    assert not decoder.done

    # EOF without [DONE]: blocks are closed, no Finish is invented, done stays False.
    decoder = codec.stream_decoder()
    chunk = b'data: {"id":"c","model":"m","created":1,"choices":[{"index":0,"delta":{"content":"hi"}}]}\n\n'
    events = [e for ev in SSEDecoder().feed(chunk) for e in decoder.feed(ev)]
    events += decoder.close()
    assert [type(e) for e in events] == [MessageStart, TextDelta, BlockStop]
    assert not decoder.done

    # No index on tool calls (some compatible servers), usage on the finish chunk, OpenRouter
    # ``reasoning``, an unknown other choice, and a bare [DONE].
    raw = (
        b"".join(
            b"data: " + json.dumps(c).encode() + b"\n\n"
            for c in [
                {"choices": [{"delta": {"reasoning": "hmm"}}]},
                {
                    "choices": [
                        {
                            "delta": {
                                "tool_calls": [
                                    {"id": "a", "function": {"name": "f", "arguments": "{"}}
                                ]
                            }
                        }
                    ]
                },
                {"choices": [{"delta": {"tool_calls": [{"function": {"arguments": "}"}}]}}]},
                {"choices": [{"index": 1, "delta": {"content": "other choice"}}]},
                {"choices": [{"delta": {"tool_calls": [{"id": "b", "function": {"name": "g"}}]}}]},
                {
                    "choices": [{"delta": {}, "finish_reason": "function_call"}],
                    "usage": {"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7},
                },
            ]
        )
        + b"data: [DONE]\n\n"
    )
    events = decode_sse(raw)
    assert isinstance(events[0], MessageStart) and events[0].id.startswith("chatcmpl-")
    assert events[1:] == [
        ReasoningDelta(index=0, text="hmm"),
        BlockStop(index=0),
        ToolCallStart(index=1, id="a", name="f"),
        ToolArgsDelta(index=1, delta="{"),
        ToolArgsDelta(index=1, delta="}"),
        BlockStop(index=1),
        ToolCallStart(index=2, id="b", name="g"),
        BlockStop(index=2),
        Finish(reason="tool_calls", usage=Usage(input_tokens=3, output_tokens=4)),
    ]
    assert decode_sse(b"data: [DONE]\n\n")[1:] == [Finish(reason="stop")]


@pytest.mark.parametrize(
    ("error", "kind"),
    [
        (
            {"message": "Rate limit reached", "type": "requests", "code": "rate_limit_exceeded"},
            "rate_limited",
        ),
        (
            {
                "message": "too long",
                "type": "invalid_request_error",
                "code": "context_length_exceeded",
            },
            "context_window_exceeded",
        ),
        (
            {"object": "error", "message": "bad", "type": "BadRequestError", "code": 400},
            "bad_request",
        ),
        ({"message": "overloaded", "type": "overloaded_error"}, "overloaded"),
        ("plain text failure", "server_error"),
    ],
)
def test_in_band_error_chunks_are_classified(error: Any, kind: str) -> None:
    events = decode_sse(b"data: " + json.dumps({"error": error}).encode() + b"\n\n")
    assert isinstance(events[0], MessageStart) and isinstance(events[1], Error)
    assert events[1].error.kind == kind


@pytest.mark.parametrize("name", STREAMS)
def test_encoded_chunks_validate_against_sdk_types(name: str) -> None:
    events = decode_sse(load_fixture(P, name))
    raw = encode_all(events, chat_request(stream=True, include_usage=True))
    payloads = sse_payloads(raw)
    error = isinstance(events[-1], Error)
    assert payloads[-1] != "[DONE]" if error else payloads[-1] == "[DONE]"
    for data in payloads:
        if data == "[DONE]":
            continue
        chunk = json.loads(data)
        if "error" in chunk:
            ErrorObject.model_validate(chunk["error"], strict=True)
        else:
            ChatCompletionChunk.model_validate(chunk, strict=True)
    # Re-decoding what the encoder made gives the same events back.
    assert comparable(decode_sse(raw)) == comparable(events)


def test_sdk_accumulates_an_encoded_tool_call_stream() -> None:
    events = decode_sse(load_fixture(P, "stream_tool_calls.sse"))
    raw = encode_all(events, chat_request(stream=True, include_usage=True))
    client = openai_client(replay(200, raw, sse=True))
    with client.chat.completions.stream(model="gpt-4.1", messages=[]) as stream:
        for _ in stream:
            pass
        final = stream.get_final_completion()
    message = final.choices[0].message
    assert message.content == "Checking both cities."
    assert message.tool_calls is not None
    assert [(c.id, c.function.name, c.function.arguments) for c in message.tool_calls] == [
        ("call_boston", "get_current_weather", '{"location": "Boston, MA"}'),
        ("call_paris", "get_current_weather", '{"location": "Paris, France"}'),
    ]
    assert final.choices[0].finish_reason == "tool_calls"
    assert final.usage is not None
    assert (final.usage.prompt_tokens, final.usage.completion_tokens) == (120, 48)
    client.close()


def test_sdk_accumulates_text_and_reasoning_and_usage_only_when_asked() -> None:
    events = decode_sse(load_fixture(P, "stream_reasoning.sse"))
    for include_usage in (True, None):
        raw = encode_all(events, chat_request(stream=True, include_usage=include_usage))
        client = openai_client(replay(200, raw, sse=True))
        with client.chat.completions.stream(model="deepseek-reasoner", messages=[]) as stream:
            for _ in stream:
                pass
            # get_final_completion() raises LengthFinishReasonError on "length" by design.
            final = stream.current_completion_snapshot
        message = final.choices[0].message
        assert message.content == "There are three Rs."
        assert message.model_extra is not None
        assert (
            message.model_extra["reasoning_content"]
            == "Count the r's: st-r-awbe-r-r-y gives three."
        )
        assert final.choices[0].finish_reason == "length"
        if include_usage:
            assert final.usage is not None and final.usage.completion_tokens_details is not None
            assert final.usage.completion_tokens_details.reasoning_tokens == 52
        else:
            assert final.usage is None
        client.close()


def test_encoder_accepts_another_protocols_event_shapes() -> None:
    # No MessageStart, a tool block with no explicit start, a signature, usage in pieces.
    events: list[Event] = [
        ReasoningDelta(index=0, text="thinking"),
        Signature(index=0, signature="sig", source="anthropic_messages"),
        BlockStop(index=0),
        TextDelta(index=1, text="Answer."),
        ToolArgsDelta(index=2, delta='{"a": 1}'),
        UsageEvent(usage=Usage(input_tokens=10)),
        Finish(reason="tool_calls", usage=Usage(input_tokens=10, output_tokens=5)),
        TextDelta(index=3, text="after the end"),
    ]
    raw = encode_all(events, chat_request(stream=True, include_usage=True))
    payloads = sse_payloads(raw)
    assert payloads[-1] == "[DONE]"
    chunks = [ChatCompletionChunk.model_validate(json.loads(d), strict=True) for d in payloads[:-1]]
    assert chunks[0].choices[0].delta.role == "assistant" and chunks[0].model == "gpt-4o"
    assert len({c.id for c in chunks}) == 1
    usage = chunks[-1].usage
    assert chunks[-1].choices == [] and usage is not None
    assert (usage.prompt_tokens, usage.completion_tokens, usage.total_tokens) == (10, 5, 15)
    client = openai_client(replay(200, raw, sse=True))
    with client.chat.completions.stream(model="m", messages=[]) as stream:
        final = stream.get_final_completion()
    message = final.choices[0].message
    assert message.content == "Answer."
    assert message.tool_calls is not None and message.tool_calls[0].function.arguments == '{"a": 1}'
    assert "after the end" not in raw.decode()
    client.close()


def test_sdk_raises_on_an_encoded_in_band_error() -> None:
    err = GatewayError("rate_limited", "Rate limit reached, try again in 2s", status=429)
    raw = encode_all(
        [MessageStart(id="c1", model="gpt-4o"), TextDelta(index=0, text="Hi"), Error(error=err)],
        chat_request(stream=True),
    )
    assert not raw.decode().rstrip().endswith("[DONE]")
    client = openai_client(replay(200, raw, sse=True))
    stream = client.chat.completions.create(model="gpt-4o", messages=[], stream=True)
    with pytest.raises(openai.APIError) as info:
        for _ in stream:
            pass
    assert info.value.message == "Rate limit reached, try again in 2s"
    assert info.value.code == "rate_limit_exceeded"
    client.close()


# --- errors ----------------------------------------------------------------------------------

PARSED_ERRORS = [
    ("error_429_rate_limit.json", 429, {}, "rate_limited", 2.4, False),
    ("error_429_rate_limit.json", 429, {"retry-after-ms": "1500"}, "rate_limited", 1.5, False),
    ("error_429_quota.json", 429, {}, "rate_limited", None, True),
    ("error_400_context.json", 400, {}, "context_window_exceeded", None, False),
    ("error_401.json", 401, {}, "auth", None, False),
    ("error_500.json", 500, {}, "server_error", None, False),
    ("error_503.json", 503, {"retry-after": "7"}, "overloaded", 7.0, False),
]


@pytest.mark.parametrize(
    ("name", "status", "headers", "kind", "retry_after", "quota"), PARSED_ERRORS
)
def test_parse_error_fixtures(
    name: str,
    status: int,
    headers: dict[str, str],
    kind: str,
    retry_after: float | None,
    quota: bool,
) -> None:
    body = load_fixture(P, name)
    err = codec.parse_error(status, body, headers)
    assert err.kind == kind and err.status == status and err.quota is quota
    assert err.retry_after == retry_after
    assert err.message == body["error"]["message"]
    if name == "error_400_context.json":
        assert err.param == "messages" and err.code == "context_length_exceeded"


def test_parse_error_variants_of_compatible_servers() -> None:
    vllm = codec.parse_error(
        400,
        {
            "object": "error",
            "message": "maximum context length is 4096 tokens",
            "type": "BadRequestError",
            "code": 400,
        },
        {},
    )
    assert vllm.kind == "context_window_exceeded"
    listed = codec.parse_error(429, [{"error": {"message": "slow down", "code": 429}}], {})
    assert listed.kind == "rate_limited" and listed.message == "slow down"
    raw = codec.parse_error(502, b"<html>Bad gateway</html>", {})
    assert raw.kind == "server_error" and "Bad gateway" in raw.message
    assert codec.parse_error(500, {"error": "boom"}, {}).message == "boom"


BUILT_ERRORS = [
    (
        GatewayError("rate_limited", "Too many requests"),
        429,
        openai.RateLimitError,
        "rate_limit_exceeded",
    ),
    (
        GatewayError("rate_limited", "Quota gone", quota=True),
        429,
        openai.RateLimitError,
        "insufficient_quota",
    ),
    (GatewayError("overloaded", "Overloaded", status=529), 503, openai.InternalServerError, None),
    (GatewayError("server_error", "Oops"), 500, openai.InternalServerError, None),
    (GatewayError("timeout", "Upstream timed out"), 504, openai.InternalServerError, "timeout"),
    (GatewayError("connection", "Connection reset"), 502, openai.InternalServerError, None),
    (
        GatewayError("context_window_exceeded", "Prompt is too long", param="messages"),
        400,
        openai.BadRequestError,
        "context_length_exceeded",
    ),
    (
        GatewayError("content_filtered", "Flagged"),
        400,
        openai.BadRequestError,
        "content_policy_violation",
    ),
    (GatewayError("auth", "Bad key"), 401, openai.AuthenticationError, "invalid_api_key"),
    (GatewayError("auth", "Forbidden", status=403), 403, openai.PermissionDeniedError, None),
    (
        GatewayError(
            "bad_request", "messages[0].role: unknown role 'robot'", param="messages[0].role"
        ),
        400,
        openai.BadRequestError,
        None,
    ),
    (GatewayError("not_found", "Unknown model"), 404, openai.NotFoundError, None),
]


@pytest.mark.parametrize(("err", "status", "exc", "code"), BUILT_ERRORS)
def test_sdk_raises_its_own_class_for_built_errors(
    err: GatewayError, status: int, exc: type[openai.APIStatusError], code: str | None
) -> None:
    got_status, body = codec.build_error(err)
    assert got_status == status
    ErrorObject.model_validate(body["error"], strict=True)
    client = openai_client(replay(got_status, body))
    with pytest.raises(exc) as info:
        client.chat.completions.create(model="gpt-4o", messages=[])
    assert info.value.status_code == status
    assert info.value.message == f"Error code: {status} - {err.message}"
    assert info.value.code == code and info.value.param == err.param
    client.close()


def test_error_round_trip_through_parse() -> None:
    for name, status, _, kind, _, _ in PARSED_ERRORS:
        err = codec.parse_error(status, load_fixture(P, name), {})
        got_status, body = codec.build_error(err)
        again = codec.parse_error(got_status, body, {})
        assert (again.kind, again.message) == (kind, err.message)


def test_fixture_directory_is_complete() -> None:
    names = {p.name for p in Path(FIXTURE_DIR).iterdir()}
    for needed in (
        "request_simple.json",
        "request_system.json",
        "request_multimodal.json",
        "request_tools.json",
        "request_structured_output.json",
        "request_reasoning.json",
        "request_unknown_fields.json",
        "response_text.json",
        "response_tool_calls.json",
        "response_reasoning.json",
        "stream_text.sse",
        "stream_tool_calls.sse",
        "stream_reasoning.sse",
        "error_429_rate_limit.json",
        "error_400_context.json",
        "error_401.json",
        "error_503.json",
    ):
        assert needed in names


@pytest.mark.parametrize("name", STREAMS)
def test_encoded_chunks_are_one_compact_event_each_with_the_head_first(name: str) -> None:
    events = decode_sse(load_fixture(P, name))
    encoder = codec.stream_encoder(chat_request(stream=True, include_usage=True))
    for event in events:
        raw = encoder.encode(event)
        for part in raw.split(b"\n\n")[:-1]:
            assert part.startswith(b"data: ") and b"\n" not in part
            data = part[len(b"data: ") :]
            if data == b"[DONE]":
                continue
            chunk = json.loads(data)
            # What msgspec writes for the same dict: nothing is spelled differently.
            assert msgspec.json.encode(chunk) == data
            if "error" not in chunk:
                assert list(chunk)[:5] == ["id", "object", "created", "model", "choices"]
                for choice in chunk["choices"]:
                    assert list(choice) == ["index", "delta", "finish_reason"]
