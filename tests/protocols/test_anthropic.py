"""Anthropic Messages codec: golden fixtures, lossless same-protocol round trips, the official
``anthropic`` SDK as the oracle for everything the codec builds, and cross-protocol building."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import anthropic
import msgspec
import pydantic
import pytest
from anthropic.types import Message as SDKMessage
from anthropic.types import RawMessageStreamEvent
from anthropic.types.message_create_params import (
    MessageCreateParamsNonStreaming,
    MessageCreateParamsStreaming,
)
from anthropic.types.shared import ErrorResponse

from asgi_rotator.errors import GatewayError
from asgi_rotator.protocols import get_codec
from asgi_rotator.protocols.anthropic import AnthropicCodec
from asgi_rotator.sse import ServerSentEvent, SSEDecoder
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
from tests.sdk import anthropic_client, replay

PROTOCOL = "anthropic_messages"
codec = AnthropicCodec()

REQUESTS = sorted(p.name for p in (FIXTURES / PROTOCOL).glob("request_*.json"))
RESPONSES = sorted(p.name for p in (FIXTURES / PROTOCOL).glob("response_*.json"))
STREAMS = sorted(p.name for p in (FIXTURES / PROTOCOL).glob("stream_*.sse"))
COMPLETE_STREAMS = [s for s in STREAMS if s != "stream_error.sse"]

# TypedDict validation: pydantic validates ``Iterable`` fields lazily, so the result is walked
# to force every nested iterable through its validator.  Strict mode works for these types.
_PARAMS = pydantic.TypeAdapter(MessageCreateParamsNonStreaming)
_STREAM_PARAMS = pydantic.TypeAdapter(MessageCreateParamsStreaming)
_STREAM_EVENT = pydantic.TypeAdapter(RawMessageStreamEvent)


def _materialize(value: Any) -> Any:
    if isinstance(value, Iterator):  # pydantic's ValidatorIterator
        return [_materialize(v) for v in value]
    if isinstance(value, dict):
        return {k: _materialize(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_materialize(v) for v in value]
    return value


def validate_request(body: dict[str, Any]) -> None:
    adapter = _STREAM_PARAMS if body.get("stream") else _PARAMS
    _materialize(adapter.validate_python(body, strict=True))
    assert "_anthropic" not in json.dumps(body)  # private markers never reach the wire


def validate_response(body: dict[str, Any]) -> SDKMessage:
    return SDKMessage.model_validate(body, strict=True)


def decode_stream(name: str) -> list[Event]:
    sse = SSEDecoder()
    raw = load_fixture(PROTOCOL, name)
    decoder = codec.stream_decoder()
    events: list[Event] = []
    for item in [*sse.feed(raw), *sse.close()]:
        events.extend(decoder.feed(item))
    events.extend(decoder.close())
    return events


def encode_events(events: list[Event], request: Request | None = None) -> bytes:
    encoder = codec.stream_encoder(request)
    return b"".join(encoder.encode(e) for e in events)


def sse_events(data: bytes) -> list[ServerSentEvent]:
    sse = SSEDecoder()
    return [*sse.feed(data), *sse.close()]


def validate_stream(data: bytes) -> list[ServerSentEvent]:
    """Every event names itself in ``event:`` (the SDK skips unnamed ones) and validates."""
    events = sse_events(data)
    for event in events:
        payload = json.loads(event.data)
        assert event.event == payload["type"]
        if event.event == "error":
            ErrorResponse.model_validate(payload, strict=True)
        elif event.event != "ping":
            _STREAM_EVENT.validate_python(payload, strict=True)
    return events


def sdk_final_message(data: bytes) -> Any:
    client = anthropic_client(replay(200, data, sse=True))
    with client.messages.stream(
        model="claude-sonnet-4-6", max_tokens=1024, messages=[{"role": "user", "content": "hi"}]
    ) as stream:
        return stream.get_final_message()


def foreign(**fields: Any) -> Request:
    """A unified request as another protocol's codec would have parsed it."""
    fields.setdefault("model", "claude-sonnet-4-6")
    fields.setdefault("origin", "openai_chat")
    return Request(**fields)


# --- registry -------------------------------------------------------------------------------


def test_codec_is_registered_with_its_conventions() -> None:
    registered = get_codec(PROTOCOL)
    assert isinstance(registered, AnthropicCodec)
    assert registered.name == PROTOCOL and registered.auth == "x-api-key"
    assert codec.request_path(foreign()) == "/v1/messages"
    assert AnthropicCodec.default_max_tokens == 4096


# --- requests -------------------------------------------------------------------------------


@pytest.mark.parametrize("name", REQUESTS)
def test_request_round_trip_is_lossless(name: str) -> None:
    body = load_fixture(PROTOCOL, name)
    request = codec.parse_request(body)
    assert request.origin == PROTOCOL
    assert codec.build_request(request) == body
    # The unified value survives the state store's JSON encoding with its markers.
    again = msgspec.json.decode(msgspec.json.encode(request), type=Request)
    assert codec.build_request(again) == body


@pytest.mark.parametrize("name", REQUESTS)
def test_request_fixtures_and_rebuilds_validate_against_sdk(name: str) -> None:
    body = load_fixture(PROTOCOL, name)
    validate_request(body)
    validate_request(codec.build_request(codec.parse_request(body)))


def test_parse_simple_request() -> None:
    request = codec.parse_request(load_fixture(PROTOCOL, "request_simple.json"))
    assert request.model == "claude-sonnet-4-6"
    assert request.max_tokens == 1024
    assert request.messages == [
        Message(role="user", content=[Text(text="Hello, Claude")], extra=request.messages[0].extra)
    ]
    assert request.stream is False


def test_parse_system_sampling_and_metadata() -> None:
    request = codec.parse_request(load_fixture(PROTOCOL, "request_system.json"))
    assert [t.text for t in request.system] == [
        "You are a meticulous legal assistant.",
        "Answer in French.",
    ]
    assert request.system[0].extra == {"cache_control": {"type": "ephemeral"}}
    assert request.system[1].extra == {"cache_control": {"type": "ephemeral", "ttl": "1h"}}
    assert (request.temperature, request.top_p, request.top_k) == (0.7, 0.9, 40)
    assert request.stop == ["\n\nHuman:", "END"]
    assert request.user == "13803d75-b4b5-4c3e-b2a2-6f21399b021b"
    assert request.stream is True


def test_parse_images_and_documents() -> None:
    request = codec.parse_request(load_fixture(PROTOCOL, "request_multiturn_images.json"))
    image, url_image, _ = request.messages[0].content
    assert isinstance(image, Image) and image.media_type == "image/png" and image.data
    assert isinstance(url_image, Image) and url_image.url and url_image.url.startswith("https://")
    pdf, text_doc, url_doc, _ = request.messages[2].content
    assert isinstance(pdf, File) and pdf.media_type == "application/pdf"
    assert pdf.filename == "Quarterly report"
    assert pdf.extra == {"cache_control": {"type": "ephemeral"}}
    assert isinstance(text_doc, File) and text_doc.media_type == "text/plain"
    assert base64.b64decode(text_doc.data or "").decode() == "The grass is green. The sky is blue."
    assert isinstance(url_doc, File) and url_doc.url
    assert [m.role for m in request.messages] == ["user", "assistant", "user", "assistant", "user"]


def test_tool_results_split_into_a_tool_message_and_a_user_message() -> None:
    request = codec.parse_request(load_fixture(PROTOCOL, "request_tools.json"))
    assert [m.role for m in request.messages] == ["user", "assistant", "tool", "user"]
    tool_message, user_message = request.messages[2:]
    first, second = tool_message.content
    assert isinstance(first, ToolResult) and isinstance(second, ToolResult)
    assert first.tool_call_id == "toolu_01A09q90qw90lq917835lq9"
    assert first.name == "get_weather"  # resolved from the earlier tool_use
    assert first.content == [Text(text="15 degrees, foggy")]
    assert second.is_error and second.name == "get_time"
    assert user_message.content == [Text(text="Please retry the time if it failed.")]
    calls = request.messages[1].content[1:]
    assert calls == [
        ToolCall(
            id="toolu_01A09q90qw90lq917835lq9",
            name="get_weather",
            arguments='{"location":"San Francisco, CA","unit":"celsius"}',
        ),
        ToolCall(
            id="toolu_01B2Xx9kLw3mZ7yTq4Rf8sPd",
            name="get_time",
            arguments='{"timezone":"America/Los_Angeles"}',
        ),
    ]
    assert request.tool_choice == ToolChoice(mode="auto")
    assert request.parallel_tool_calls is True
    assert request.tools is not None and request.tools[1].strict is True


def test_parse_tool_choice_and_structured_output() -> None:
    request = codec.parse_request(load_fixture(PROTOCOL, "request_tool_choice.json"))
    assert request.tool_choice == ToolChoice(mode="tool", name="record_summary")
    assert request.parallel_tool_calls is False
    assert request.tools is not None
    assert request.tools[0].extra == {"cache_control": {"type": "ephemeral"}}
    structured = codec.parse_request(load_fixture(PROTOCOL, "request_structured.json"))
    assert structured.output is not None and structured.output.type == "json_schema"
    assert structured.output.schema is not None
    assert structured.output.schema["required"] == [
        "name",
        "email",
        "plan_interest",
        "demo_requested",
    ]


def test_parse_thinking_request() -> None:
    request = codec.parse_request(load_fixture(PROTOCOL, "request_thinking.json"))
    assert request.reasoning == ReasoningConfig(enabled=True, budget_tokens=10000)
    thinking, redacted, call = request.messages[1].content
    assert isinstance(thinking, Reasoning) and thinking.source == PROTOCOL
    assert thinking.signature and thinking.text.startswith("The user wants")
    assert isinstance(redacted, Reasoning) and redacted.redacted and redacted.source == PROTOCOL
    assert isinstance(call, ToolCall)
    adaptive = codec.parse_request(load_fixture(PROTOCOL, "request_adaptive.json"))
    assert adaptive.reasoning == ReasoningConfig(enabled=True, effort="high", include_thoughts=True)


def test_parse_unknown_fields_land_in_extra() -> None:
    request = codec.parse_request(load_fixture(PROTOCOL, "request_unknown_fields.json"))
    assert request.extra["x_future_option"] == {"nested": [1, 2, 3]}
    assert request.extra["service_tier"] == "auto"
    assert request.reasoning == ReasoningConfig(enabled=False, effort="low")
    assert request.user == "u-42"
    assert request.tool_choice == ToolChoice(mode="required")
    assert request.system[0].extra == {"x_system_block_field": 1}
    assert request.tools is not None
    web_search, lookup = request.tools
    assert (web_search.name, web_search.type) == ("web_search", "web_search_20250305")
    assert web_search.extra == {"max_uses": 3, "allowed_domains": ["example.com"]}
    assert lookup.type == "function" and lookup.extra["input_examples"] == [{"q": "tides"}]
    system_message, user, assistant, tool, user_after = request.messages
    assert system_message.role == "user"  # role "system" has no unified role: marked user
    assert user.extra["x_message_field"] == {"a": 1}
    assert user.content[0].extra == {"x_block_field": "kept"}  # type: ignore[union-attr]
    # server tool blocks are carried verbatim; the text keeps its citations
    assert [type(p).__name__ for p in assistant.content] == ["Text", "ToolCall"]
    assert assistant.content[0].extra["citations"][0]["type"] == "web_search_result_location"  # type: ignore[union-attr]
    result = tool.content[0]
    assert isinstance(result, ToolResult) and result.content == [Text(text="Waxing gibbous")]
    assert result.extra["x_result_field"] == 7
    document, image, text = user_after.content
    assert isinstance(document, File) and base64.b64decode(document.data or "").decode() == (
        "Moon phases repeat every 29.5 days."
    )
    assert isinstance(image, File) and image.file_id == "file_011CNha8iCJcU1wXNR6q4V8w"
    assert text == Text(text="Thanks, and what about tomorrow?")


def test_model_and_stream_arguments_override_the_body() -> None:
    body = load_fixture(PROTOCOL, "request_simple.json")
    request = codec.parse_request(body, model="claude-opus-4-1", stream=True)
    assert request.model == "claude-opus-4-1" and request.stream is True


# --- bad input ------------------------------------------------------------------------------


def _bad(body: Any) -> GatewayError:
    with pytest.raises(GatewayError) as info:
        codec.parse_request(body)
    assert info.value.kind == "bad_request" and info.value.status == 400
    return info.value


def _with(**changes: Any) -> dict[str, Any]:
    body = load_fixture(PROTOCOL, "request_simple.json")
    body.update(changes)
    return body


@pytest.mark.parametrize(
    ("body", "param", "words"),
    [
        ([], "", "expected an object"),
        ({"model": "m", "messages": []}, "max_tokens", "required"),
        ({"max_tokens": 5, "messages": []}, "model", "required"),
        ({"model": "m", "max_tokens": 5}, "messages", "required"),
        (_with(max_tokens="many"), "max_tokens", "integer"),
        (_with(max_tokens=-1), "max_tokens", ">= 0"),
        (_with(model=7), "model", "string"),
        (_with(messages={}), "messages", "array"),
        (_with(messages=["hi"]), "messages[0]", "object"),
        (_with(messages=[{"role": "robot", "content": "x"}]), "messages[0].role", "unknown role"),
        (_with(messages=[{"content": "x"}]), "messages[0].role", "required"),
        (_with(messages=[{"role": "user"}]), "messages[0].content", "required"),
        (_with(messages=[{"role": "user", "content": 5}]), "messages[0].content", "array"),
        (
            _with(messages=[{"role": "user", "content": [{"type": "hologram"}]}]),
            "messages[0].content[0].type",
            "unknown content block type",
        ),
        (
            _with(messages=[{"role": "user", "content": [{"text": "x"}]}]),
            "messages[0].content[0].type",
            "string",
        ),
        (
            _with(messages=[{"role": "user", "content": [{"type": "text", "text": 3}]}]),
            "messages[0].content[0].text",
            "string",
        ),
        (
            _with(messages=[{"role": "user", "content": [{"type": "image", "source": "x"}]}]),
            "messages[0].content[0].source",
            "object",
        ),
        (
            _with(
                messages=[
                    {
                        "role": "assistant",
                        "content": [{"type": "tool_use", "id": "t1", "name": "f", "input": "{}"}],
                    }
                ]
            ),
            "messages[0].content[0].input",
            "object",
        ),
        (
            _with(
                messages=[
                    {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_x"}]}
                ]
            ),
            "messages[0].content[0].tool_use_id",
            "no matching tool call",
        ),
        (_with(system=5), "system", "array"),
        (_with(system=[{"type": "image"}]), "system[0].type", "text block"),
        (_with(tools=[{"name": "f"}]), "tools[0].input_schema", "object"),
        (_with(tools=[{"input_schema": {}}]), "tools[0].name", "string"),
        (_with(tool_choice={"type": "sometimes"}), "tool_choice.type", "unknown tool_choice"),
        (_with(tool_choice={"type": "tool"}), "tool_choice.name", "string"),
        (_with(thinking={"type": "enabled"}), "thinking.budget_tokens", "integer"),
        (_with(temperature="hot"), "temperature", "number"),
        (_with(top_k=0.5), "top_k", "integer"),
        (_with(stop_sequences="END"), "stop_sequences", "array"),
        (_with(stream="yes"), "stream", "boolean"),
        (_with(metadata={"user_id": 5}), "metadata.user_id", "string"),
        (
            _with(output_config={"format": {"type": "regex", "schema": {}}}),
            "output_config.format.type",
            "unknown format",
        ),
    ],
)
def test_bad_requests_name_the_field(body: Any, param: str, words: str) -> None:
    err = _bad(body)
    assert err.param == (param or None)
    assert words in err.message
    if param:
        assert err.message.startswith(f"{param}: ")


def test_tool_result_must_follow_its_tool_use() -> None:
    # The result comes before the call that it answers: there is no *earlier* matching call.
    messages = [
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1"}]},
        {
            "role": "assistant",
            "content": [{"type": "tool_use", "id": "toolu_1", "name": "f", "input": {}}],
        },
    ]
    assert "no matching tool call" in _bad(_with(messages=messages)).message


# --- building requests from other protocols ---------------------------------------------------


def test_build_from_other_protocol_merges_turns_and_moves_tool_results_first() -> None:
    request = foreign(
        system=[Text(text="Be terse.")],
        messages=[
            Message(role="user", content=[Text(text="Weather in Paris and Rome?")]),
            Message(
                role="assistant",
                content=[
                    Text(text=""),
                    ToolCall(id="call_1", name="get_weather", arguments='{"city": "Paris"}'),
                    ToolCall(id="call_2", name="get_weather", arguments=""),
                ],
            ),
            Message(
                role="tool",
                content=[ToolResult(tool_call_id="call_1", content=[Text(text="21C")])],
            ),
            Message(
                role="tool",
                content=[
                    ToolResult(
                        tool_call_id="call_2",
                        content=[Text(text="boom"), Text(text="again")],
                        is_error=True,
                    )
                ],
            ),
            Message(role="user", content=[Text(text="And tomorrow?")]),
            Message(role="user", content=[Text(text="Also Oslo.")]),
        ],
        tools=[
            Tool(name="get_weather", parameters={"properties": {"city": {"type": "string"}}}),
            Tool(name="web_search_preview", type="web_search_preview", extra={"size": "low"}),
        ],
        extra={"x_openai_only": True},
    )
    body = codec.build_request(request)
    validate_request(body)
    assert body["max_tokens"] == AnthropicCodec.default_max_tokens
    assert body["system"] == "Be terse."
    assert "x_openai_only" not in body
    assert [m["role"] for m in body["messages"]] == ["user", "assistant", "user"]
    assert body["messages"][1]["content"] == [
        {"type": "tool_use", "id": "call_1", "name": "get_weather", "input": {"city": "Paris"}},
        {"type": "tool_use", "id": "call_2", "name": "get_weather", "input": {}},
    ]
    assert body["messages"][2]["content"] == [
        {"type": "tool_result", "tool_use_id": "call_1", "content": "21C"},
        {
            "type": "tool_result",
            "tool_use_id": "call_2",
            "content": [{"type": "text", "text": "boom"}, {"type": "text", "text": "again"}],
            "is_error": True,
        },
        {"type": "text", "text": "And tomorrow?"},
        {"type": "text", "text": "Also Oslo."},
    ]
    # the built-in tool of another protocol is dropped; function schemas become object schemas
    assert body["tools"] == [
        {
            "name": "get_weather",
            "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}},
        }
    ]


def test_build_from_other_protocol_keeps_only_anthropic_signed_reasoning() -> None:
    request = foreign(
        messages=[
            Message(role="user", content=[Text(text="hi")]),
            Message(
                role="assistant",
                content=[
                    Reasoning(text="openai summary", redacted="gAAAA", source="openai_responses"),
                    Reasoning(text="gemini thought", signature="CiQB", source="gemini"),
                    Reasoning(text="unsigned", source=PROTOCOL),
                    Reasoning(text="signed", signature="EqQB", source=PROTOCOL),
                    Reasoning(redacted="EmwK", source=PROTOCOL),
                    Text(text="hello"),
                ],
            ),
        ]
    )
    body = codec.build_request(request)
    validate_request(body)
    assert body["messages"][1]["content"] == [
        {"type": "thinking", "thinking": "signed", "signature": "EqQB"},
        {"type": "redacted_thinking", "data": "EmwK"},
        {"type": "text", "text": "hello"},
    ]


def test_build_reasoning_from_effort_keeps_max_tokens_above_budget() -> None:
    request = foreign(
        messages=[Message(role="user", content=[Text(text="think")])],
        reasoning=ReasoningConfig(effort="high"),
        max_tokens=1000,
        temperature=0.2,
        top_k=5,
        top_p=0.5,
    )
    body = codec.build_request(request)
    validate_request(body)
    assert body["thinking"] == {"type": "enabled", "budget_tokens": 24576}
    assert body["max_tokens"] == 24576 + AnthropicCodec.default_max_tokens
    # sampling settings thinking does not allow are dropped
    assert not {"temperature", "top_k", "top_p"} & body.keys()
    assert "output_config" not in body  # effort itself is not sent to an unknown model


def test_build_reasoning_variants_from_other_protocols() -> None:
    def thinking(config: ReasoningConfig, **fields: Any) -> Any:
        body = codec.build_request(
            foreign(
                messages=[Message(role="user", content=[Text(text="x")])],
                reasoning=config,
                **fields,
            )
        )
        validate_request(body)
        return body.get("thinking"), body

    assert thinking(ReasoningConfig(enabled=True))[0] == {"type": "enabled", "budget_tokens": 8192}
    assert thinking(ReasoningConfig(budget_tokens=300))[0] == {
        "type": "enabled",
        "budget_tokens": 1024,
    }
    assert thinking(ReasoningConfig(budget_tokens=-1, effort="low"))[0]["budget_tokens"] == 2048
    assert (
        thinking(ReasoningConfig(enabled=True, include_thoughts=True))[0]["display"] == "summarized"
    )
    # off: no thinking field at all
    assert thinking(ReasoningConfig(enabled=False))[0] is None
    assert thinking(ReasoningConfig(effort="none"))[0] is None
    assert thinking(ReasoningConfig(budget_tokens=0))[0] is None
    assert thinking(ReasoningConfig(summary="auto"))[0] is None
    # keep a large enough max_tokens as it is; temperature survives without thinking
    value, body = thinking(ReasoningConfig(budget_tokens=2000), max_tokens=5000)
    assert body["max_tokens"] == 5000
    value, body = thinking(ReasoningConfig(enabled=False), temperature=0.3, top_p=0.5)
    assert (body["temperature"], body["top_p"]) == (0.3, 0.5)
    # forced tool use and thinking exclude each other: the tool wins
    value, body = thinking(
        ReasoningConfig(effort="high"),
        tools=[Tool(name="f", parameters={"type": "object"})],
        tool_choice=ToolChoice(mode="required"),
    )
    assert value is None and body["tool_choice"] == {"type": "any"}


def test_build_drops_thinking_for_a_tool_loop_without_signed_thinking() -> None:
    def loop(*assistant: Any) -> Request:
        return foreign(
            messages=[
                Message(role="user", content=[Text(text="weather?")]),
                Message(role="assistant", content=[*assistant, ToolCall(id="c1", name="f")]),
                Message(
                    role="tool", content=[ToolResult(tool_call_id="c1", content=[Text(text="ok")])]
                ),
            ],
            reasoning=ReasoningConfig(effort="low"),
        )

    body = codec.build_request(loop(Reasoning(text="hmm", redacted="x", source="openai_responses")))
    validate_request(body)
    assert "thinking" not in body
    signed = codec.build_request(loop(Reasoning(text="hmm", signature="EqQB", source=PROTOCOL)))
    assert signed["thinking"] == {"type": "enabled", "budget_tokens": 2048}
    # a conversation that moved on past the tool loop keeps thinking
    moved_on = loop()
    moved_on.messages.append(Message(role="assistant", content=[Text(text="It is ok.")]))
    moved_on.messages.append(Message(role="user", content=[Text(text="thanks")]))
    assert codec.build_request(moved_on)["thinking"]["type"] == "enabled"


def test_build_tool_choice_and_output_from_other_protocols() -> None:
    tools = [Tool(name="f", description="d", parameters={"type": "object"}, strict=True)]
    cases: list[tuple[dict[str, Any], dict[str, Any] | None]] = [
        (dict(tool_choice=ToolChoice(mode="auto")), {"type": "auto"}),
        (dict(tool_choice=ToolChoice(mode="none")), {"type": "none"}),
        (dict(tool_choice=ToolChoice(mode="tool", name="f")), {"type": "tool", "name": "f"}),
        (dict(parallel_tool_calls=False), {"type": "auto", "disable_parallel_tool_use": True}),
        (
            dict(tool_choice=ToolChoice(mode="required"), parallel_tool_calls=True),
            {"type": "any", "disable_parallel_tool_use": False},
        ),
        (dict(parallel_tool_calls=True), None),
    ]
    for fields, expected in cases:
        body = codec.build_request(foreign(tools=tools, **fields))
        validate_request(body)
        assert body.get("tool_choice") == expected
        assert body["tools"][0]["strict"] is True
    # a tool choice without tools is dropped
    assert "tool_choice" not in codec.build_request(foreign(tool_choice=ToolChoice(mode="none")))
    schema = {"type": "object", "properties": {"a": {"type": "string"}}}
    body = codec.build_request(
        foreign(
            output=OutputFormat(name="thing", schema=schema, strict=True), stop=["x"], user="u1"
        )
    )
    validate_request(body)
    assert body["output_config"] == {"format": {"type": "json_schema", "schema": schema}}
    assert body["stop_sequences"] == ["x"] and body["metadata"] == {"user_id": "u1"}
    body = codec.build_request(
        foreign(output=OutputFormat(type="json_object"), metadata={"k": "v"})
    )
    assert "output_config" not in body and "metadata" not in body


def test_build_media_from_other_protocols() -> None:
    png = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg=="
    jpeg = "/9j/4AAQSkZJRgABAQAAAQABAAD"
    text = base64.b64encode(b"plain words").decode()
    request = foreign(
        messages=[
            Message(
                role="user",
                content=[
                    Image(url=f"data:image/png;base64,{png}", detail="high"),
                    Image(data=jpeg),
                    Image(url="https://example.com/cat.jpg"),
                    File(data="JVBERi0x", media_type="application/pdf", filename="a.pdf"),
                    File(url="data:text/plain;base64," + text),
                    File(file_id="file_abc"),
                    File(url="https://example.com/b.pdf"),
                    File(data=png, media_type="image/png"),
                ],
            )
        ],
        stream=True,
    )
    body = codec.build_request(request)
    validate_request(body)
    assert body["stream"] is True
    assert body["messages"][0]["content"] == [
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": png}},
        {"type": "image", "source": {"type": "base64", "media_type": "image/jpeg", "data": jpeg}},
        {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.jpg"}},
        {
            "type": "document",
            "source": {"type": "base64", "media_type": "application/pdf", "data": "JVBERi0x"},
            "title": "a.pdf",
        },
        {
            "type": "document",
            "source": {"type": "text", "media_type": "text/plain", "data": "plain words"},
        },
        {"type": "document", "source": {"type": "file", "file_id": "file_abc"}},
        {"type": "document", "source": {"type": "url", "url": "https://example.com/b.pdf"}},
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": png}},
    ]


def test_build_refuses_documents_anthropic_cannot_read() -> None:
    request = foreign(
        messages=[
            Message(
                role="user",
                content=[Text(text="x"), File(data="UEsDBA", media_type="application/zip")],
            )
        ]
    )
    with pytest.raises(GatewayError) as info:
        codec.build_request(request)
    assert info.value.kind == "bad_request"
    assert info.value.param == "messages[0].content[1]"
    assert "application/zip" in info.value.message


def test_same_protocol_rebuild_follows_layer_changes() -> None:
    request = codec.parse_request(load_fixture(PROTOCOL, "request_system.json"))
    request.model = "claude-opus-4-1"
    request.stream = False
    request.user = "someone-else"
    body = codec.build_request(request)
    assert body["model"] == "claude-opus-4-1"
    assert "stream" not in body
    assert body["metadata"] == {"user_id": "someone-else"}
    request = codec.parse_request(load_fixture(PROTOCOL, "request_unknown_fields.json"))
    request.stream = True
    assert codec.build_request(request)["stream"] is True


# --- responses ------------------------------------------------------------------------------


@pytest.mark.parametrize("name", RESPONSES)
def test_response_round_trip_is_lossless_and_valid(name: str) -> None:
    body = load_fixture(PROTOCOL, name)
    validate_response(body)
    response = codec.parse_response(body)
    assert response.origin == PROTOCOL
    built = codec.build_response(response)
    assert built == body
    validate_response(built)


def test_parse_response_usage_follows_the_unified_rule() -> None:
    cached = codec.parse_response(load_fixture(PROTOCOL, "response_cached_usage.json"))
    assert cached.usage == Usage(
        input_tokens=21 + 188086 + 4212,
        output_tokens=393,
        cache_read_tokens=4212,
        cache_write_tokens=188086,
    )
    assert cached.finish_reason == "stop" and cached.stop_sequence == "END"
    thinking = codec.parse_response(load_fixture(PROTOCOL, "response_thinking.json"))
    assert thinking.usage.reasoning_tokens == 1150 and thinking.usage.output_tokens == 1203
    reasoning, redacted, text = thinking.content
    assert isinstance(reasoning, Reasoning) and reasoning.signature and reasoning.source == PROTOCOL
    assert isinstance(redacted, Reasoning) and redacted.redacted
    assert text == Text(text="27 * 453 = 12,231", extra={"citations": None})


@pytest.mark.parametrize(
    ("name", "finish"),
    [
        ("response_text.json", "stop"),
        ("response_tool_use.json", "tool_calls"),
        ("response_server_tools.json", "pause"),
    ],
)
def test_parse_response_finish_reasons(name: str, finish: str) -> None:
    response = codec.parse_response(load_fixture(PROTOCOL, name))
    assert response.finish_reason == finish


@pytest.mark.parametrize(
    ("stop_reason", "finish"),
    [
        ("refusal", "content_filter"),
        ("max_tokens", "length"),
        ("model_context_window_exceeded", "length"),
    ],
)
def test_stop_reasons_map_and_round_trip(stop_reason: str, finish: str) -> None:
    body = load_fixture(PROTOCOL, "response_text.json")
    body["stop_reason"] = stop_reason
    response = codec.parse_response(body)
    assert response.finish_reason == finish
    assert codec.build_response(response) == body


def test_build_response_from_other_protocol() -> None:
    response = Response(
        id="chatcmpl-123",
        model="gpt-5",
        content=[
            Reasoning(text="thinking it over", redacted="gAAAA", source="openai_responses"),
            Reasoning(redacted="only-encrypted", source="openai_responses"),
            Text(text="Calling the tool.", extra={"annotations": []}),
            ToolCall(id="call_9", name="lookup", arguments='{"q": "tides"}'),
        ],
        finish_reason="tool_calls",
        usage=Usage(input_tokens=100, output_tokens=40, reasoning_tokens=30, cache_read_tokens=60),
        origin="openai_chat",
        extra={"system_fingerprint": "fp_1"},
    )
    body = codec.build_response(response)
    message = validate_response(body)
    assert body["content"] == [
        {"type": "thinking", "thinking": "thinking it over", "signature": ""},
        {"type": "text", "text": "Calling the tool."},
        {"type": "tool_use", "id": "call_9", "name": "lookup", "input": {"q": "tides"}},
    ]
    assert "system_fingerprint" not in body
    assert message.stop_reason == "tool_use"
    assert body["usage"] == {
        "input_tokens": 40,
        "output_tokens": 40,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 60,
        "output_tokens_details": {"thinking_tokens": 30},
    }
    # the SDK's own client parses it
    client = anthropic_client(replay(200, body))
    parsed = client.messages.create(
        model="m", max_tokens=10, messages=[{"role": "user", "content": "x"}]
    )
    assert parsed.content[2].type == "tool_use" and parsed.content[2].input == {"q": "tides"}


@pytest.mark.parametrize(
    ("finish", "stop_sequence", "stop_reason"),
    [
        ("stop", None, "end_turn"),
        ("stop", "END", "stop_sequence"),
        ("length", None, "max_tokens"),
        ("content_filter", None, "refusal"),
        ("pause", None, "pause_turn"),
        ("error", None, "end_turn"),
    ],
)
def test_build_response_stop_reasons(
    finish: Any, stop_sequence: str | None, stop_reason: str
) -> None:
    response = Response(id="r", model="m", finish_reason=finish, stop_sequence=stop_sequence)
    body = codec.build_response(response)
    validate_response(body)
    assert (body["stop_reason"], body["stop_sequence"]) == (stop_reason, stop_sequence)


def test_parse_response_tolerates_odd_bodies() -> None:
    response = codec.parse_response({"content": [{"type": "tool_use"}, "junk"], "usage": None})
    assert response.content == [ToolCall(id="", name="", arguments="{}")]
    with pytest.raises(GatewayError) as info:
        codec.parse_response([1, 2])
    assert info.value.kind == "server_error"


# --- stream decoding ------------------------------------------------------------------------


def _check_event_rules(events: list[Event], *, complete: bool = True) -> None:
    assert isinstance(events[0], MessageStart)
    started: list[int] = []
    stopped: list[int] = []
    for event in events[1:]:
        index = getattr(event, "index", None)
        if index is not None and index not in started:
            assert index == len(started)  # numbered 0, 1, 2 ... in the order blocks start
            started.append(index)
        if isinstance(event, BlockStop):
            assert event.index not in stopped
            stopped.append(event.index)
        elif index is not None:
            assert index not in stopped
    if complete:
        assert isinstance(events[-1], Finish)
        assert sum(isinstance(e, Finish) for e in events) == 1
        assert sorted(stopped) == started


@pytest.mark.parametrize("name", COMPLETE_STREAMS)
def test_decoded_streams_follow_the_event_rules(name: str) -> None:
    _check_event_rules(decode_stream(name))


def test_decode_text_stream() -> None:
    events = decode_stream("stream_text.sse")
    assert events == [
        MessageStart(
            id="msg_1nZdL29xx5MUA1yADyHTEsnR8uuvGzszyY",
            model="claude-sonnet-4-6",
            usage=Usage(input_tokens=25, output_tokens=1),
        ),
        TextDelta(index=0, text=""),
        TextDelta(index=0, text="Hello"),
        TextDelta(index=0, text="! How can I help — today?"),
        BlockStop(index=0),
        Finish(reason="stop", usage=Usage(input_tokens=25, output_tokens=15)),
    ]


def test_decode_tool_use_stream() -> None:
    events = decode_stream("stream_tool_use.sse")
    starts = [e for e in events if isinstance(e, ToolCallStart)]
    assert starts == [
        ToolCallStart(index=1, id="toolu_01T1x1fJ34qAmk2tNTrN7Up6", name="get_weather"),
        ToolCallStart(index=2, id="toolu_01B2Xx9kLw3mZ7yTq4Rf8sPd", name="get_time"),
    ]
    args = "".join(e.delta for e in events if isinstance(e, ToolArgsDelta) and e.index == 1)
    assert json.loads(args) == {"location": "San Francisco, CA", "unit": "fahrenheit"}
    assert events[-1] == Finish(
        reason="tool_calls", usage=Usage(input_tokens=472, output_tokens=89)
    )


def test_decode_thinking_stream_with_signature_and_cached_usage() -> None:
    events = decode_stream("stream_thinking.sse")
    signatures = [e for e in events if isinstance(e, Signature)]
    assert signatures[0].index == 0 and signatures[0].signature and signatures[0].source == PROTOCOL
    assert signatures[1].index == 1 and signatures[1].redacted and signatures[1].source == PROTOCOL
    thought = "".join(e.text for e in events if isinstance(e, ReasoningDelta))
    assert thought.startswith("Let me solve this step by step")
    start = events[0]
    assert isinstance(start, MessageStart) and start.usage is not None
    assert start.usage.input_tokens == 21 + 1200 + 3000
    assert events[-1] == Finish(
        reason="stop",
        usage=Usage(
            input_tokens=4221,
            output_tokens=1203,
            reasoning_tokens=1150,
            cache_read_tokens=3000,
            cache_write_tokens=1200,
        ),
    )


def test_decode_skips_server_tool_blocks_and_citations() -> None:
    events = decode_stream("stream_server_tool.sse")
    assert [type(e).__name__ for e in events] == [
        "MessageStart",
        "TextDelta",
        "TextDelta",
        "BlockStop",
        "Finish",
    ]
    assert events[1] == TextDelta(index=0, text="")


def test_decode_max_tokens_stream() -> None:
    events = decode_stream("stream_max_tokens.sse")
    assert isinstance(events[-1], Finish) and events[-1].reason == "length"


def test_decode_in_band_error() -> None:
    decoder = codec.stream_decoder()
    sse = SSEDecoder()
    events: list[Event] = []
    for item in sse.feed(load_fixture(PROTOCOL, "stream_error.sse")):
        events.extend(decoder.feed(item))
    assert decoder.done
    _check_event_rules(events, complete=False)
    error = events[-1]
    assert isinstance(error, Error) and isinstance(error.error, GatewayError)
    assert error.error.kind == "overloaded" and error.error.status == 529
    assert error.error.message == "Overloaded"


def test_decoder_done_only_at_message_stop_and_tolerates_odd_events() -> None:
    decoder = codec.stream_decoder()
    assert decoder.feed(ServerSentEvent(event="ping", data='{"type": "ping"}')) == []
    assert decoder.feed(ServerSentEvent(event="ping")) == []
    assert decoder.feed(ServerSentEvent(event="future", data='{"type": "future_event"}')) == []
    assert decoder.feed(ServerSentEvent(data="[1, 2]")) == []
    # a delta without a start opens its block; odd shapes do not raise
    events = decoder.feed(
        ServerSentEvent(
            data='{"type":"content_block_delta","index":4,"delta":{"type":"text_delta","text":"x"}}'
        )
    )
    assert isinstance(events[0], MessageStart) and events[1] == TextDelta(index=0, text="x")
    assert decoder.feed(ServerSentEvent(data='{"type":"content_block_delta","index":"a"}')) == []
    assert decoder.feed(ServerSentEvent(data='{"type":"content_block_start","index":5}')) == []
    assert decoder.feed(ServerSentEvent(data='{"type":"message_delta","delta":null}')) == []
    assert not decoder.done
    assert decoder.close() == []  # premature close invents nothing
    events = decoder.feed(ServerSentEvent(data='{"type":"message_stop"}'))
    assert events == [BlockStop(index=0), Finish(reason="stop", usage=Usage())]
    assert decoder.done


def test_decoder_rejects_malformed_json() -> None:
    decoder = codec.stream_decoder()
    with pytest.raises(GatewayError) as info:
        decoder.feed(ServerSentEvent(event="message_start", data="{not json"))
    assert info.value.kind == "server_error"
    assert info.value.message == "upstream sent malformed JSON in a stream event"


# Valid JSON nested deeper than the decoder goes (about 1000 levels).
DEEP = '{"a": ' + "[" * 10_000 + "]" * 10_000 + "}"


@pytest.mark.parametrize(
    "protocol", ["anthropic_messages", "openai_chat", "openai_responses", "gemini"]
)
def test_decoder_rejects_an_event_nested_too_deeply_as_the_upstreams_error(protocol: str) -> None:
    decoder = get_codec(protocol).stream_decoder()
    with pytest.raises(GatewayError) as info:
        decoder.feed(ServerSentEvent(data=DEEP))
    assert info.value.kind == "server_error"
    assert info.value.message == "upstream sent a stream event nested too deeply"


def test_decoder_skips_a_delta_whose_type_is_not_a_string() -> None:
    decoder = codec.stream_decoder()
    events = []
    for kind in ('["text_delta"]', '{"a": 1}'):
        data = f'{{"type":"content_block_delta","index":3,"delta":{{"type":{kind},"text":"x"}}}}'
        events += decoder.feed(ServerSentEvent(data=data))
    # Only the message start the first event always brings: no block was opened.
    assert [type(e) for e in events] == [MessageStart]
    assert not decoder.done


def test_tool_arguments_nested_too_deeply_are_dropped_like_invalid_ones() -> None:
    request = foreign(
        messages=[
            Message(role="user", content=[Text(text="hi")]),
            Message(role="assistant", content=[ToolCall(id="c1", name="f", arguments=DEEP)]),
            Message(
                role="tool", content=[ToolResult(tool_call_id="c1", content=[Text(text="ok")])]
            ),
        ],
    )
    body = codec.build_request(request)
    validate_request(body)
    assert body["messages"][1]["content"] == [
        {"type": "tool_use", "id": "c1", "name": "f", "input": {}}
    ]


# --- stream encoding ------------------------------------------------------------------------


@pytest.mark.parametrize("name", COMPLETE_STREAMS)
def test_reencoded_streams_validate_and_decode_to_the_same_events(name: str) -> None:
    events = decode_stream(name)
    data = encode_events(events)
    wire = validate_stream(data)
    assert [e.event for e in wire[:2]] == ["message_start", "ping"]
    assert [e.event for e in wire[-2:]] == ["message_delta", "message_stop"]
    redecoded = codec.stream_decoder()
    again = [out for e in wire for out in redecoded.feed(e)]
    assert again == events


def test_sdk_accumulates_reencoded_text_stream() -> None:
    message = sdk_final_message(encode_events(decode_stream("stream_text.sse")))
    assert message.id == "msg_1nZdL29xx5MUA1yADyHTEsnR8uuvGzszyY"
    assert [b.type for b in message.content] == ["text"]
    assert message.content[0].text == "Hello! How can I help — today?"
    assert message.stop_reason == "end_turn"
    assert (message.usage.input_tokens, message.usage.output_tokens) == (25, 15)


def test_sdk_accumulates_reencoded_tool_stream() -> None:
    message = sdk_final_message(encode_events(decode_stream("stream_tool_use.sse")))
    assert [b.type for b in message.content] == ["text", "tool_use", "tool_use"]
    assert message.content[0].text == "Okay, let's check the weather and time."
    weather, clock = message.content[1:]
    assert (weather.id, weather.name) == ("toolu_01T1x1fJ34qAmk2tNTrN7Up6", "get_weather")
    assert weather.input == {"location": "San Francisco, CA", "unit": "fahrenheit"}
    assert clock.input == {"timezone": "America/Los_Angeles"}
    assert message.stop_reason == "tool_use" and message.usage.output_tokens == 89


def test_sdk_accumulates_reencoded_thinking_stream() -> None:
    message = sdk_final_message(encode_events(decode_stream("stream_thinking.sse")))
    thinking, redacted, text = message.content
    assert thinking.type == "thinking" and thinking.thinking.startswith("Let me solve")
    assert thinking.signature.startswith("EqQBCgIYAhIM")
    assert redacted.type == "redacted_thinking" and redacted.data.startswith("EmwK")
    assert text.type == "text" and text.text == "27 * 453 = 12,231"
    usage = message.usage
    assert (
        usage.input_tokens,
        usage.cache_creation_input_tokens,
        usage.cache_read_input_tokens,
    ) == (
        21,
        1200,
        3000,
    )
    assert usage.output_tokens == 1203
    assert usage.output_tokens_details is not None
    assert usage.output_tokens_details.thinking_tokens == 1150


def test_sdk_accumulates_stream_from_a_foreign_decoder() -> None:
    """Events shaped like another protocol's decoder: no MessageStart, implicit block starts,
    interleaved tool calls, usage only at the end, other providers' payloads."""
    events: list[Event] = [
        ReasoningDelta(index=0, text="pondering"),
        Signature(index=0, redacted="gAAAA", source="openai_responses"),
        TextDelta(index=1, text="Let me "),
        TextDelta(index=1, text="look."),
        ToolCallStart(index=2, id="call_a", name="lookup"),
        ToolArgsDelta(index=2, delta='{"q": '),
        ToolCallStart(index=3, id="call_b", name="lookup"),
        ToolArgsDelta(index=3, delta='{"q": "b"}'),
        ToolArgsDelta(index=2, delta='"a"}'),
        Signature(index=3, signature="CiQB", source="gemini"),
        UsageEvent(usage=Usage(input_tokens=50, output_tokens=20, cache_read_tokens=10)),
        Finish(reason="tool_calls", usage=Usage(input_tokens=50, output_tokens=22)),
    ]
    data = encode_events(events, foreign())
    validate_stream(data)
    message = sdk_final_message(data)
    assert message.model == "claude-sonnet-4-6"  # synthesized from the request
    assert [b.type for b in message.content] == ["thinking", "text", "tool_use", "tool_use"]
    assert message.content[0].thinking == "pondering" and message.content[0].signature == ""
    assert message.content[1].text == "Let me look."
    assert message.content[2].input == {"q": "a"} and message.content[3].input == {"q": "b"}
    assert message.stop_reason == "tool_use"
    assert (message.usage.input_tokens, message.usage.cache_read_input_tokens) == (40, 10)
    assert message.usage.output_tokens == 22


def test_encoder_reasoning_blocks_wait_for_their_kind() -> None:
    events: list[Event] = [
        MessageStart(id="msg_1", model="claude"),
        ReasoningDelta(index=0, text=""),
        Signature(index=0, redacted="EmwK", source=PROTOCOL),
        BlockStop(index=0),
        ReasoningDelta(index=1, text=""),
        Signature(index=1, signature="EqQB", source=PROTOCOL),
        BlockStop(index=1),
        ReasoningDelta(index=2, text="seen"),
        Signature(index=2, redacted="late", source=PROTOCOL),
        BlockStop(index=2),
        ReasoningDelta(index=3, text=""),  # never anything: no block
        BlockStop(index=3),
        TextDelta(index=4, text=""),  # an empty text block still exists
        BlockStop(index=4),
        Finish(),
    ]
    data = encode_events(events)
    validate_stream(data)
    message = sdk_final_message(data)
    assert [
        (b.type, getattr(b, "data", None) or getattr(b, "signature", None)) for b in message.content
    ] == [
        ("redacted_thinking", "EmwK"),
        ("thinking", "EqQB"),
        ("thinking", ""),
        ("redacted_thinking", "late"),
        ("text", None),
    ]


def test_encoder_ignores_events_after_the_end_and_repeated_starts() -> None:
    encoder = codec.stream_encoder()
    first = encoder.encode(MessageStart(id="msg_1", model="m"))
    assert encoder.encode(MessageStart(id="msg_2", model="m")) == b""
    assert encoder.encode(BlockStop(index=7)) == b""
    end = encoder.encode(Finish(reason="length"))
    assert encoder.encode(TextDelta(index=0, text="late")) == b""
    events = validate_stream(first + end)
    assert [e.event for e in events] == ["message_start", "ping", "message_delta", "message_stop"]
    assert json.loads(events[2].data)["delta"]["stop_reason"] == "max_tokens"


def test_encoder_renders_errors_as_anthropic_error_events_the_sdk_raises() -> None:
    events = decode_stream("stream_error.sse")
    data = encode_events(events)
    wire = validate_stream(data)
    assert wire[-1].event == "error"
    assert json.loads(wire[-1].data) == {
        "type": "error",
        "error": {"type": "overloaded_error", "message": "Overloaded"},
    }
    with pytest.raises(anthropic.APIStatusError) as info:
        sdk_final_message(data)
    assert info.value.type == "overloaded_error"
    assert info.value.api_message == "Overloaded"
    # an error before anything else is the whole stream
    only = codec.stream_encoder().encode(Error(error=GatewayError("rate_limited", "slow down")))
    assert [e.event for e in validate_stream(only)] == ["error"]


# --- errors ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "status", "kind"),
    [
        ("error_429.json", 429, "rate_limited"),
        ("error_400_context.json", 400, "context_window_exceeded"),
        ("error_401.json", 401, "auth"),
        ("error_500.json", 500, "server_error"),
        ("error_529.json", 529, "overloaded"),
    ],
)
def test_parse_error_fixtures(name: str, status: int, kind: str) -> None:
    body = load_fixture(PROTOCOL, name)
    ErrorResponse.model_validate(body, strict=True)
    err = codec.parse_error(status, body, {})
    assert err.kind == kind and err.status == status
    assert err.message == body["error"]["message"]
    assert err.code == body["error"]["type"]


def test_parse_error_retry_hints() -> None:
    body = load_fixture(PROTOCOL, "error_429.json")
    assert codec.parse_error(429, body, {"retry-after": "17"}).retry_after == 17.0
    reset = (datetime.now(UTC) + timedelta(seconds=30)).isoformat().replace("+00:00", "Z")
    hinted = codec.parse_error(429, body, {"anthropic-ratelimit-input-tokens-reset": reset})
    assert hinted.retry_after is not None and 25 < hinted.retry_after <= 30
    assert (
        codec.parse_error(429, body, {"anthropic-ratelimit-tokens-reset": "soon"}).retry_after
        is None
    )


def test_parse_error_tolerates_non_json_bodies() -> None:
    err = codec.parse_error(502, b"<html>Bad gateway</html>", {})
    assert err.kind == "server_error" and err.message == "<html>Bad gateway</html>"
    assert codec.parse_error(503, {"detail": 1}, {}).kind == "overloaded"


@pytest.mark.parametrize(
    ("error", "status", "error_type", "exception"),
    [
        (
            GatewayError("rate_limited", "slow down"),
            429,
            "rate_limit_error",
            anthropic.RateLimitError,
        ),
        (GatewayError("overloaded", "busy"), 529, "overloaded_error", anthropic.OverloadedError),
        (
            GatewayError("overloaded", "busy", status=503),
            529,
            "overloaded_error",
            anthropic.OverloadedError,
        ),
        (GatewayError("server_error", "oops"), 500, "api_error", anthropic.InternalServerError),
        (
            GatewayError("server_error", "bad gw", status=502),
            502,
            "api_error",
            anthropic.InternalServerError,
        ),
        (GatewayError("timeout", "too slow"), 504, "timeout_error", anthropic.GatewayTimeoutError),
        (GatewayError("connection", "reset"), 502, "api_error", anthropic.InternalServerError),
        (
            GatewayError("auth", "invalid x-api-key"),
            401,
            "authentication_error",
            anthropic.AuthenticationError,
        ),
        (
            GatewayError("auth", "no", status=403),
            403,
            "permission_error",
            anthropic.PermissionDeniedError,
        ),
        (
            GatewayError("bad_request", "messages: bad"),
            400,
            "invalid_request_error",
            anthropic.BadRequestError,
        ),
        (
            GatewayError("bad_request", "too big", status=413),
            413,
            "request_too_large",
            anthropic.ContentTooLargeError,
        ),
        (
            GatewayError("bad_request", "odd", status=500),
            400,
            "invalid_request_error",
            anthropic.BadRequestError,
        ),
        (
            GatewayError("content_filtered", "flagged"),
            400,
            "invalid_request_error",
            anthropic.BadRequestError,
        ),
        (GatewayError("not_found", "no model"), 404, "not_found_error", anthropic.NotFoundError),
    ],
)
def test_build_error_makes_the_sdk_raise_its_own_class(
    error: GatewayError, status: int, error_type: str, exception: type[Exception]
) -> None:
    built_status, body = codec.build_error(error)
    assert (built_status, body["error"]["type"]) == (status, error_type)
    assert body == {"type": "error", "error": {"type": error_type, "message": error.message}}
    if error_type != "request_too_large":  # documented, but not in the SDK's error union
        ErrorResponse.model_validate(body, strict=True)
    client = anthropic_client(replay(built_status, body))
    with pytest.raises(exception) as info:
        client.messages.create(
            model="m", max_tokens=10, messages=[{"role": "user", "content": "x"}]
        )
    assert info.value.status_code == status  # type: ignore[attr-defined]
    assert info.value.api_message == error.message  # type: ignore[attr-defined]


def test_build_context_window_error_speaks_anthropics_words() -> None:
    upstream = codec.parse_error(400, load_fixture(PROTOCOL, "error_400_context.json"), {})
    assert codec.build_error(upstream)[1]["error"]["message"] == upstream.message
    foreign_error = GatewayError(
        "context_window_exceeded", "This model's maximum context length is 8192 tokens."
    )
    status, body = codec.build_error(foreign_error)
    assert status == 400
    assert body["error"]["message"] == (
        "prompt is too long: This model's maximum context length is 8192 tokens."
    )
    client = anthropic_client(replay(status, body))
    with pytest.raises(anthropic.BadRequestError):
        client.messages.create(
            model="m", max_tokens=10, messages=[{"role": "user", "content": "x"}]
        )


def test_fixture_directory_is_complete() -> None:
    names = {p.name for p in (FIXTURES / PROTOCOL).iterdir()}
    assert {
        "request_simple.json",
        "response_text.json",
        "stream_text.sse",
        "error_429.json",
    } <= names
    assert all(Path(FIXTURES / PROTOCOL / n).stat().st_size > 0 for n in names)
