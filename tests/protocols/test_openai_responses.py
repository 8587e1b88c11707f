"""OpenAI Responses codec: golden fixtures, lossless round trips, the openai SDK as oracle."""

from __future__ import annotations

import typing
from pathlib import Path
from typing import Any

import msgspec
import openai
import pytest
from openai.types.responses import Response as SDKResponse
from openai.types.responses import ResponseStreamEvent
from openai.types.responses.response_create_params import (
    ResponseCreateParamsNonStreaming,
    ResponseCreateParamsStreaming,
)
from openai.types.responses.tool_param import ToolParam
from pydantic import TypeAdapter

from asgi_rotator.errors import GatewayError
from asgi_rotator.protocols import get_codec
from asgi_rotator.protocols.openai_responses import MARK, OpenAIResponsesCodec
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
from tests.sdk import openai_client, replay

PROTOCOL = "openai_responses"
codec = OpenAIResponsesCodec()

REQUESTS = sorted(p.name for p in (FIXTURES / PROTOCOL).glob("request_*.json"))
RESPONSES = sorted(p.name for p in (FIXTURES / PROTOCOL).glob("response_*.json"))
STREAMS = ["stream_text.sse", "stream_tool_calls.sse", "stream_reasoning.sse"]

_params_non_streaming = TypeAdapter(ResponseCreateParamsNonStreaming)
_params_streaming = TypeAdapter(ResponseCreateParamsStreaming)
_tool_param = TypeAdapter(ToolParam)
# The stream event union's discriminator is SDK metadata pydantic does not read: pick the
# member class by its ``type`` literal and validate strictly against that class.
_EVENT_CLASSES = {
    typing.get_args(cls.model_fields["type"].annotation)[0]: cls
    for cls in typing.get_args(typing.get_args(ResponseStreamEvent)[0])
}


def fixture(name: str) -> Any:
    return load_fixture(PROTOCOL, name)


def decode_sse(raw: bytes) -> list[ServerSentEvent]:
    decoder = SSEDecoder()
    return decoder.feed(raw) + decoder.close()


def decode_stream(raw: bytes) -> tuple[list[Event], bool]:
    decoder = codec.stream_decoder()
    events: list[Event] = []
    for sse in decode_sse(raw):
        events.extend(decoder.feed(sse))
    events.extend(decoder.close())
    return events, decoder.done


def encode_stream(events: list[Event], request: Request | None = None) -> bytes:
    encoder = codec.stream_encoder(request)
    return b"".join(encoder.encode(e) for e in events)


def validate_request(body: dict[str, Any]) -> None:
    adapter = _params_streaming if body.get("stream") else _params_non_streaming
    adapter.validate_python(body, strict=True)
    for tool in body.get("tools", ()):  # ``Iterable`` fields validate lazily: check each
        _tool_param.validate_python(tool, strict=True)


def validate_stream(raw: bytes) -> list[dict[str, Any]]:
    """Every event validates strictly as its SDK class; sequence numbers count from 0."""
    payloads = []
    for n, sse in enumerate(decode_sse(raw)):
        payload = msgspec.json.decode(sse.data)
        assert sse.event == payload["type"]
        assert payload["sequence_number"] == n
        _EVENT_CLASSES[payload["type"]].model_validate(payload, strict=True)
        payloads.append(payload)
    return payloads


def check_event_rules(events: list[Event]) -> None:
    """The stream-event contract of unified.py every decoder follows."""
    assert isinstance(events[0], MessageStart)
    finishes = [e for e in events if isinstance(e, Finish)]
    assert len(finishes) == 1 and events[-1] is finishes[0]
    started: list[int] = []
    stopped: list[int] = []
    for event in events:
        index = getattr(event, "index", None)
        if isinstance(event, BlockStop):
            assert event.index in started and event.index not in stopped
            stopped.append(event.index)
        elif index is not None and index not in started:
            assert index == len(started), "blocks are numbered in the order they start"
            started.append(index)
        elif index is not None:
            assert index not in stopped, "no event for a block after its BlockStop"
    assert sorted(stopped) == started


# --- requests --------------------------------------------------------------------------------


@pytest.mark.parametrize("name", REQUESTS)
def test_request_round_trip_is_lossless(name: str) -> None:
    body = fixture(name)
    request = codec.parse_request(body)
    assert request.origin == PROTOCOL
    assert codec.build_request(request) == body


@pytest.mark.parametrize("name", REQUESTS)
def test_built_request_validates_against_sdk_params(name: str) -> None:
    validate_request(codec.build_request(codec.parse_request(fixture(name))))


def test_registry_and_path() -> None:
    assert get_codec(PROTOCOL).name == PROTOCOL
    assert codec.auth == "bearer"
    assert codec.request_path(codec.parse_request(fixture("request_simple.json"))) == "/responses"


def test_string_input_is_one_user_message() -> None:
    request = codec.parse_request(fixture("request_simple.json"))
    assert request.model == "gpt-4.1"
    assert request.messages == [
        Message(role="user", content=[Text(text=fixture("request_simple.json")["input"])])
    ]
    assert request.stream is False


def test_instructions_and_developer_messages_become_system() -> None:
    request = codec.parse_request(fixture("request_system.json"))
    assert [t.text for t in request.system] == [
        "You are a coding assistant that talks like a pirate.",
        "Answer in at most two sentences.",
    ]
    assert [m.role for m in request.messages] == ["user"]
    assert request.temperature == 0.2 and request.top_p == 0.9
    assert request.max_tokens == 400
    assert request.user == "user-1234" and request.metadata == {"session": "abc"}


def test_images_and_files_are_mapped() -> None:
    request = codec.parse_request(fixture("request_multiturn_images.json"))
    assert [m.role for m in request.messages] == ["user", "assistant", "user"]
    first, _, last = request.messages
    assert isinstance(first.content[1], Image) and first.content[1].detail == "high"
    by_file, inline, pdf, remote = last.content[1:]
    assert isinstance(by_file, Image) and by_file.extra == {
        "file_id": "file-6F2ksmvXxt4VdoqmHRw6kL"
    }
    assert (
        isinstance(inline, Image) and inline.url and inline.url.startswith("data:image/png;base64,")
    )
    assert isinstance(pdf, File)
    assert (pdf.media_type, pdf.filename) == ("application/pdf", "report.pdf")
    assert pdf.data == "JVBERi0xLjQKJcfsj6IKNSAwIG9iago="
    assert (
        isinstance(remote, File)
        and remote.url == "https://www.berkshirehathaway.com/letters/2024ltr.pdf"
    )


def test_tool_call_items_group_into_messages() -> None:
    request = codec.parse_request(fixture("request_tools_parallel.json"))
    user, assistant, tool = request.messages
    assert (user.role, assistant.role, tool.role) == ("user", "assistant", "tool")
    reasoning, call_a, call_b = assistant.content
    assert isinstance(reasoning, Reasoning)
    assert reasoning.id == "rs_6820f383d7c08191846711c5df8233bc0ac5ba57aafcbac7"
    assert reasoning.redacted and reasoning.source == PROTOCOL
    assert reasoning.text.startswith("**Checking two cities**")
    assert isinstance(call_a, ToolCall) and isinstance(call_b, ToolCall)
    assert (call_a.id, call_a.name, call_a.arguments) == (
        "call_12345xyz",
        "get_weather",
        '{"location":"Paris, France"}',
    )
    assert call_a.extra == {"id": "fc_12345xyz", "status": "completed"}
    results = tool.content
    assert all(isinstance(r, ToolResult) for r in results)
    assert [(r.tool_call_id, r.name) for r in results] == [  # type: ignore[union-attr]
        ("call_12345xyz", "get_weather"),
        ("call_67890abc", "get_weather"),
    ]
    assert results[1].content == [Text(text="18 degrees and sunny")]  # type: ignore[union-attr]
    function, builtin = request.tools or []
    assert function.type == "function" and function.strict is True
    assert builtin.type == "web_search" and builtin.extra == {"search_context_size": "low"}
    assert request.tool_choice == ToolChoice(mode="auto")
    assert request.parallel_tool_calls is True and request.store is False
    assert request.extra["include"] == ["reasoning.encrypted_content"]


def test_tool_choice_structured_output_and_reasoning_config() -> None:
    forced = codec.parse_request(fixture("request_tool_choice.json"))
    assert forced.tool_choice == ToolChoice(mode="tool", name="get_weather")
    structured = codec.parse_request(fixture("request_structured.json"))
    assert structured.output is not None
    assert (structured.output.type, structured.output.name, structured.output.strict) == (
        "json_schema",
        "calendar_event",
        True,
    )
    assert structured.system[0].text == "Extract the event information."
    reasoning = codec.parse_request(fixture("request_reasoning.json"))
    assert reasoning.reasoning == ReasoningConfig(enabled=True, effort="high", summary="auto")
    assert reasoning.stream is True and reasoning.max_tokens == 16000


def test_unknown_fields_survive_at_every_level() -> None:
    request = codec.parse_request(fixture("request_unknown_fields.json"))
    for key in ("truncation", "service_tier", "prompt_cache_key", "x_future_flag", "temperature"):
        assert key in request.extra
    assert request.temperature is None  # sent as null: kept verbatim, not consumed
    user = request.messages[0]
    assert user.extra["x_client_tag"] == "u1"
    assert user.content[0].extra == {"prompt_cache_breakpoint": {"mode": "explicit"}}  # type: ignore[union-attr]
    assert request.tools is not None and request.tools[0].extra == {
        "strict": None,
        "defer_loading": True,
    }
    assert request.tools[1].type == "mcp" and request.tools[1].name == "deepwiki"
    # allowed_tools has no unified form: approximated, raw value kept for the rebuild
    assert request.tool_choice == ToolChoice(mode="auto")
    # the developer message keeps its two parts and its place
    assert [t.text for t in request.system] == ["Be brief.", "Cite sources."]


def test_unmarked_input_string_does_not_leak_markers() -> None:
    body = codec.build_request(codec.parse_request(fixture("request_unknown_fields.json")))
    assert MARK not in msgspec.json.encode(body).decode()


# --- requests from other protocols -----------------------------------------------------------


def foreign_request(**changes: Any) -> Request:
    request = Request(
        model="gpt-5",
        origin="anthropic_messages",
        system=[
            Text(text="Be terse.", extra={"cache_control": {"type": "ephemeral"}}),
            Text(text="No emojis."),
        ],
        messages=[
            Message(
                role="user",
                content=[
                    Text(text="What is in this picture, and the weather?"),
                    Image(data="iVBORw0KGgo=", media_type="image/png"),
                    File(data="JVBERi0=", media_type="application/pdf", filename="a.pdf"),
                ],
            ),
            Message(
                role="assistant",
                content=[
                    Reasoning(
                        text="Look at it.", signature="sig-anthropic", source="anthropic_messages"
                    ),
                    Text(text="A cat."),
                    Text(text="Checking the weather."),
                    ToolCall(id="toolu_01", name="get_weather", arguments='{"city":"Paris"}'),
                ],
            ),
            Message(
                role="user",
                content=[
                    ToolResult(
                        tool_call_id="toolu_01", name="get_weather", content=[Text(text="14C")]
                    ),
                    Text(text="Thanks"),
                ],
            ),
        ],
        tools=[
            Tool(
                name="get_weather",
                parameters={"type": "object", "properties": {"city": {"type": "string"}}},
            ),
            Tool(name="web_search", type="web_search_20250305", extra={"max_uses": 3}),
        ],
        tool_choice=ToolChoice(mode="tool", name="get_weather"),
        reasoning=ReasoningConfig(enabled=True, budget_tokens=10000),
        output=OutputFormat(type="json_schema", schema={"type": "object"}),
        max_tokens=1024,
        stop=["END"],
        top_k=5,
        stream=True,
        extra={"anthropic_only": True},
    )
    for key, value in changes.items():
        setattr(request, key, value)
    return request


def test_foreign_request_builds_a_valid_responses_body() -> None:
    body = codec.build_request(foreign_request())
    validate_request(body)
    assert body["instructions"] == "Be terse.\n\nNo emojis."
    assert "anthropic_only" not in body and "stop" not in body and "top_k" not in body
    assert body["stream"] is True and body["max_output_tokens"] == 1024
    assert body["reasoning"] == {"effort": "high"}  # budget 10000 -> effort via the shared table
    assert body["tool_choice"] == {"type": "function", "name": "get_weather"}
    assert body["text"] == {
        "format": {"type": "json_schema", "name": "response", "schema": {"type": "object"}}
    }
    # function tool gets strict false and no Anthropic built-in tool leaks through
    assert body["tools"] == [
        {
            "type": "function",
            "name": "get_weather",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
            "strict": False,
        }
    ]
    user, text_a, text_b, call, output, thanks = body["input"]
    assert user["content"][1] == {
        "type": "input_image",
        "image_url": "data:image/png;base64,iVBORw0KGgo=",
        "detail": "auto",
    }
    assert user["content"][2] == {
        "type": "input_file",
        "file_data": "data:application/pdf;base64,JVBERi0=",
        "filename": "a.pdf",
    }
    # Anthropic thinking (signature from another protocol) is not sent to OpenAI
    assert text_a == {"role": "assistant", "content": "A cat."}
    assert text_b == {"role": "assistant", "content": "Checking the weather."}
    assert call == {
        "type": "function_call",
        "call_id": "toolu_01",
        "name": "get_weather",
        "arguments": '{"city":"Paris"}',
    }
    assert output == {"type": "function_call_output", "call_id": "toolu_01", "output": "14C"}
    assert thanks == {"role": "user", "content": "Thanks"}


def test_foreign_reasoning_from_this_protocol_goes_back_with_its_payload() -> None:
    reasoning = Reasoning(text="sum", redacted="enc", id="rs_1", source=PROTOCOL)
    request = foreign_request(
        messages=[
            Message(role="user", content=[Text(text="hi")]),
            Message(role="assistant", content=[reasoning, Text(text="hello")]),
        ]
    )
    body = codec.build_request(request)
    validate_request(body)
    assert body["input"][1] == {
        "type": "reasoning",
        "id": "rs_1",
        "summary": [{"type": "summary_text", "text": "sum"}],
        "encrypted_content": "enc",
    }


def test_foreign_reasoning_off_is_omitted() -> None:
    body = codec.build_request(foreign_request(reasoning=ReasoningConfig(enabled=False)))
    assert "reasoning" not in body


# --- bad input -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "path"),
    [
        ([], ""),
        ({"input": "hi"}, "model"),
        ({"model": "m"}, "input"),
        ({"model": 3, "input": "hi"}, "model"),
        ({"model": "m", "input": 3}, "input"),
        ({"model": "m", "input": [{"role": "robot", "content": "x"}]}, "input[0].role"),
        ({"model": "m", "input": [{"role": "user"}]}, "input[0].content"),
        ({"model": "m", "input": ["hi"]}, "input[0]"),
        (
            {"model": "m", "input": [{"role": "user", "content": "a"}, {"type": "teleport"}]},
            "input[1].type",
        ),
        ({"model": "m", "input": [{"content": "x"}]}, "input[0].type"),
        (
            {"model": "m", "input": [{"role": "user", "content": [{"type": "input_audio"}]}]},
            "input[0].content[0].type",
        ),
        (
            {"model": "m", "input": [{"role": "user", "content": [{"type": "input_text"}]}]},
            "input[0].content[0].text",
        ),
        (
            {"model": "m", "input": [{"role": "user", "content": [{"type": "input_image"}]}]},
            "input[0].content[0]",
        ),
        (
            {
                "model": "m",
                "input": [{"type": "function_call", "call_id": "c", "name": "f", "arguments": {}}],
            },
            "input[0].arguments",
        ),
        (
            {
                "model": "m",
                "input": [{"type": "function_call_output", "call_id": "nope", "output": "x"}],
            },
            "input[0].call_id",
        ),
        ({"model": "m", "input": "hi", "tools": {}}, "tools"),
        ({"model": "m", "input": "hi", "tools": [{"type": "function"}]}, "tools[0].name"),
        ({"model": "m", "input": "hi", "tool_choice": "sometimes"}, "tool_choice"),
        ({"model": "m", "input": "hi", "temperature": "hot"}, "temperature"),
        ({"model": "m", "input": "hi", "max_output_tokens": 0}, "max_output_tokens"),
        ({"model": "m", "input": "hi", "text": {"format": {"type": "yaml"}}}, "text.format.type"),
        ({"model": "m", "input": "hi", "stream": "yes"}, "stream"),
    ],
)
def test_bad_input_names_the_field(body: Any, path: str) -> None:
    with pytest.raises(GatewayError) as info:
        codec.parse_request(body)
    assert info.value.kind == "bad_request" and info.value.status == 400
    assert info.value.param == (path or None)
    if path:
        assert info.value.message.startswith(f"{path}: ")


def test_unmatched_tool_result_message() -> None:
    body = {
        "model": "m",
        "input": [{"type": "function_call_output", "call_id": "nope", "output": "x"}],
    }
    with pytest.raises(GatewayError, match="no matching tool call"):
        codec.parse_request(body)


def test_tool_result_for_a_stored_call_is_accepted_with_previous_response_id() -> None:
    request = codec.parse_request(fixture("request_previous_response.json"))
    assert request.previous_response_id == "resp_68af4030592c81938ec0a5fbab4a3e9f05438e46b5f69a3b"
    result = request.messages[0].content[0]
    assert isinstance(result, ToolResult) and result.name is None


def test_url_model_and_stream_arguments() -> None:
    request = codec.parse_request({"input": "hi"}, model="gpt-4.1", stream=True)
    assert request.model == "gpt-4.1" and request.stream is True


# --- responses -------------------------------------------------------------------------------


@pytest.mark.parametrize("name", RESPONSES)
def test_response_round_trip_is_lossless(name: str) -> None:
    body = fixture(name)
    response = codec.parse_response(body)
    assert response.origin == PROTOCOL
    assert codec.build_response(response) == body


@pytest.mark.parametrize("name", RESPONSES)
def test_built_response_validates_strictly(name: str) -> None:
    SDKResponse.model_validate(
        codec.build_response(codec.parse_response(fixture(name))), strict=True
    )


def test_parse_text_response_keeps_annotations() -> None:
    response = codec.parse_response(fixture("response_text.json"))
    (text,) = response.content
    assert isinstance(text, Text) and text.text.startswith("In a peaceful grove")
    assert text.extra["annotations"][0]["type"] == "url_citation"
    assert response.finish_reason == "stop"
    assert response.usage == Usage(input_tokens=36, output_tokens=87)
    assert response.created == 1741476542


def test_parse_tool_call_response() -> None:
    response = codec.parse_response(fixture("response_tool_calls.json"))
    assert response.finish_reason == "tool_calls"
    assert [(c.id, c.name) for c in response.content] == [  # type: ignore[union-attr]
        ("call_unLAR8MvFNptuiZK6K6HCy5k", "get_weather"),
        ("call_x2Hc0FWn4h9aBy7EFE1HrVkp", "get_weather"),
    ]


def test_parse_reasoning_response_and_usage_breakdown() -> None:
    response = codec.parse_response(fixture("response_reasoning.json"))
    reasoning, text = response.content
    assert isinstance(reasoning, Reasoning)
    assert reasoning.text == (
        "**Transposing the matrix**\n\nParse the rows, then print columns.\n\n"
        "**Writing the script**\n\nUse awk for the heavy lifting."
    )
    assert reasoning.redacted == "gAAAAABoIPOJ2n8Zq1R4x3Ua0PT5Wf0dQm8Hn3mLkd9vYbC1w=="
    assert reasoning.id == "rs_6820f383d7c08191846711c5df8233bc0ac5ba57aafcbac7"
    assert reasoning.source == PROTOCOL
    assert isinstance(text, Text)
    # OpenAI already counts like the unified rule: cached inside input, reasoning inside output
    assert response.usage == Usage(
        input_tokens=75, output_tokens=1186, reasoning_tokens=1024, cache_read_tokens=64
    )


def test_parse_incomplete_response() -> None:
    response = codec.parse_response(fixture("response_incomplete.json"))
    assert response.finish_reason == "length"


def test_foreign_response_builds_a_strictly_valid_response() -> None:
    request = foreign_request(temperature=0.3, parallel_tool_calls=False)
    response = Response(
        id="msg_01abc",
        model="claude-sonnet-4",
        origin="anthropic_messages",
        created=1700000000,
        content=[
            Reasoning(text="Thinking it over.", signature="sig", source="anthropic_messages"),
            Reasoning(signature="only-a-signature", source="gemini"),
            Text(text="Hello", extra={"citations": []}),
            Text(text=" world"),
            ToolCall(id="toolu_1", name="get_weather", arguments="{}"),
        ],
        finish_reason="length",
        usage=Usage(input_tokens=120, output_tokens=30, cache_read_tokens=100, reasoning_tokens=10),
        extra={"stop_reason": "max_tokens"},
    )
    body = codec.build_response(response, request)
    parsed = SDKResponse.model_validate(body, strict=True)
    assert parsed.output_text == "Hello world"
    assert parsed.status == "incomplete"
    assert parsed.incomplete_details is not None
    assert parsed.incomplete_details.reason == "max_output_tokens"
    assert parsed.temperature == 0.3 and parsed.parallel_tool_calls is False
    assert parsed.max_output_tokens == 1024
    assert [t.type for t in parsed.tools] == ["function"]
    assert parsed.usage is not None and parsed.usage.total_tokens == 150
    assert parsed.usage.input_tokens_details.cached_tokens == 100
    kinds = [item.type for item in parsed.output]
    assert kinds == ["reasoning", "message", "function_call"]
    reasoning = parsed.output[0]
    assert reasoning.type == "reasoning" and reasoning.encrypted_content is None
    assert "stop_reason" not in body and "sig" not in str(body)


def test_response_without_request_gets_defaults() -> None:
    body = codec.build_response(Response(id="resp_1", model="m", content=[Text(text="hi")]))
    parsed = SDKResponse.model_validate(body, strict=True)
    assert parsed.tools == [] and parsed.tool_choice == "auto" and parsed.output_text == "hi"


def test_sdk_parses_a_built_response() -> None:
    body = codec.build_response(codec.parse_response(fixture("response_reasoning.json")))
    client = openai_client(replay(200, body))
    with client:
        result = client.responses.create(model="o4-mini", input="transpose")
    assert result.output_text == "Here is a bash script that transposes the matrix."
    assert result.usage is not None and result.usage.output_tokens_details.reasoning_tokens == 1024


# --- streams: decoding -----------------------------------------------------------------------


@pytest.mark.parametrize("name", STREAMS)
def test_decoded_stream_follows_the_event_rules(name: str) -> None:
    events, done = decode_stream(fixture(name))
    assert done
    check_event_rules(events)


def test_decode_text_stream() -> None:
    events, _ = decode_stream(fixture("stream_text.sse"))
    start = events[0]
    assert isinstance(start, MessageStart)
    assert start.id == "resp_67c9fdcecf488190bdd9a0409de3a1ec07b8b0ad4e5eb654"
    assert start.model == "gpt-4.1-2025-04-14" and start.created == 1741476542
    assert (
        "".join(e.text for e in events if isinstance(e, TextDelta)) == "Hi there! How can I help?"
    )
    assert events[-1] == Finish(reason="stop", usage=Usage(input_tokens=37, output_tokens=11))


def test_decode_parallel_tool_call_stream() -> None:
    events, _ = decode_stream(fixture("stream_tool_calls.sse"))
    starts = [e for e in events if isinstance(e, ToolCallStart)]
    assert [(s.index, s.id, s.name) for s in starts] == [
        (0, "call_AaBb1", "get_weather"),
        (1, "call_CcDd2", "get_weather"),
    ]
    expected_args = ['{"location":"Paris, France"}', '{"location":"Bogotá, Colombia"}']
    for start, expected in zip(starts, expected_args, strict=True):
        args = "".join(
            e.delta for e in events if isinstance(e, ToolArgsDelta) and e.index == start.index
        )
        assert args == expected
    finish = events[-1]
    assert isinstance(finish, Finish) and finish.reason == "tool_calls"
    assert finish.usage == Usage(input_tokens=291, output_tokens=46, cache_read_tokens=128)


def test_decode_reasoning_stream() -> None:
    events, _ = decode_stream(fixture("stream_reasoning.sse"))
    reasoning = "".join(e.text for e in events if isinstance(e, ReasoningDelta))
    assert reasoning == (
        "**Answering a simple question**\n\nThe user asks 2+2.\n\n**Double-checking**\n\nIt is 4."
    )
    assert all(
        e.id == "rs_6876cf02e0bc8192b74af0fb64b715ff06fa2fcced15a5ac"
        for e in events
        if isinstance(e, ReasoningDelta)
    )
    (signature,) = [e for e in events if isinstance(e, Signature)]
    # the complete encrypted_content comes with output_item.done, not the partial one of added
    assert signature == Signature(
        index=0,
        redacted="gAAAAABodt8ENC_encrypted_blob==",
        source=PROTOCOL,
        id="rs_6876cf02e0bc8192b74af0fb64b715ff06fa2fcced15a5ac",
    )
    assert (
        "".join(e.text for e in events if isinstance(e, TextDelta) and e.index == 1) == "2 + 2 = 4."
    )
    assert events[-1] == Finish(
        reason="stop",
        usage=Usage(input_tokens=64, output_tokens=152, reasoning_tokens=128, cache_read_tokens=32),
    )


@pytest.mark.parametrize("name", STREAMS)
@pytest.mark.parametrize("size", [1, 7, 64])
def test_decoding_does_not_depend_on_chunking(name: str, size: int) -> None:
    raw = fixture(name)
    whole, _ = decode_stream(raw)
    sse = SSEDecoder()
    decoder = codec.stream_decoder()
    events: list[Event] = []
    for i in range(0, len(raw), size):
        for event in sse.feed(raw[i : i + size]):
            events.extend(decoder.feed(event))
    for event in sse.close():
        events.extend(decoder.feed(event))
    assert events == whole


def test_decode_in_band_error_event_nested_shape() -> None:
    events, done = decode_stream(fixture("stream_error.sse"))
    assert done and isinstance(events[0], MessageStart)
    error = events[-1]
    assert isinstance(error, Error)
    assert error.error.kind == "rate_limited"
    assert error.error.retry_after == pytest.approx(6.57)


def test_decode_flat_error_event_and_failed_response() -> None:
    decoder = codec.stream_decoder()
    flat = ServerSentEvent(
        event="error",
        data='{"type":"error","code":"context_length_exceeded","message":"Your input exceeds the context window of this model.","param":"input","sequence_number":3}',
    )
    events = decoder.feed(flat)
    assert isinstance(events[-1], Error)
    assert events[-1].error.kind == "context_window_exceeded" and events[-1].error.param == "input"
    assert decoder.done and decoder.feed(flat) == []
    events, done = decode_stream(fixture("stream_failed.sse"))
    assert done and isinstance(events[-1], Error)
    assert events[-1].error.kind == "server_error"
    assert events[-1].error.message == "The model produced invalid content."


def test_decoder_rejects_malformed_json_and_ignores_unknown_events() -> None:
    decoder = codec.stream_decoder()
    unknown = ServerSentEvent(event="response.future", data='{"type":"response.future"}')
    (start,) = decoder.feed(unknown)  # the first event is always a (synthesized) MessageStart
    assert isinstance(start, MessageStart) and start.id.startswith("resp_")
    assert decoder.feed(unknown) == []
    assert decoder.feed(ServerSentEvent(data="[DONE]")) == []
    with pytest.raises(GatewayError) as info:
        codec.stream_decoder().feed(ServerSentEvent(data="{not json"))
    assert info.value.kind == "server_error"
    assert info.value.message == "upstream sent malformed JSON in a stream event"


def test_stream_id_rewrite_leaves_events_it_cannot_read_as_they_are() -> None:
    deep = '{"response": ' + "[" * 10_000 + "]" * 10_000 + "}"
    body = f"event: response.created\ndata: {deep}\n\n".encode()
    assert codec.rewrite_stream_ids(body, "resp_new", None) == (body, None)
    # A status that is not a string is no terminal status (and no crash hashing it).
    for status in ('["completed"]', '{"a": 1}'):
        odd = f'data: {{"type":"response.completed","response":{{"id":"r","status":{status}}}}}\n\n'
        rewritten, final = codec.rewrite_stream_ids(odd.encode(), "resp_new", "resp_old")
        assert final is None and b'"id":"resp_new"' in rewritten


def test_premature_close_is_not_done() -> None:
    raw = fixture("stream_text.sse")
    cut = raw[: raw.index(b"event: response.completed")]
    events, done = decode_stream(cut)
    assert not done and not any(isinstance(e, Finish) for e in events)


# --- streams: encoding -----------------------------------------------------------------------


@pytest.mark.parametrize("name", STREAMS)
def test_encoded_stream_events_validate_strictly(name: str) -> None:
    events, _ = decode_stream(fixture(name))
    payloads = validate_stream(encode_stream(events))
    assert payloads[0]["type"] == "response.created"
    assert payloads[-1]["type"] == "response.completed"


def run_sdk_stream(raw: bytes) -> Any:
    client = openai_client(replay(200, raw, sse=True))
    with client, client.responses.stream(model="m", input="hi") as stream:
        for _ in stream:
            pass
        return stream.get_final_response()


def test_sdk_accumulates_encoded_text_stream() -> None:
    events, _ = decode_stream(fixture("stream_text.sse"))
    final = run_sdk_stream(encode_stream(events))
    assert final.output_text == "Hi there! How can I help?"
    assert final.status == "completed"
    assert final.usage is not None and (final.usage.input_tokens, final.usage.output_tokens) == (
        37,
        11,
    )


def test_sdk_accumulates_encoded_tool_call_stream() -> None:
    events, _ = decode_stream(fixture("stream_tool_calls.sse"))
    final = run_sdk_stream(encode_stream(events))
    calls = [(o.call_id, o.name, o.arguments) for o in final.output if o.type == "function_call"]
    assert calls == [
        ("call_AaBb1", "get_weather", '{"location":"Paris, France"}'),
        ("call_CcDd2", "get_weather", '{"location":"Bogotá, Colombia"}'),
    ]
    assert final.usage is not None and final.usage.input_tokens_details.cached_tokens == 128


def test_sdk_accumulates_encoded_reasoning_stream() -> None:
    events, _ = decode_stream(fixture("stream_reasoning.sse"))
    final = run_sdk_stream(encode_stream(events))
    reasoning, _ = final.output
    assert reasoning.type == "reasoning"
    assert reasoning.id == "rs_6876cf02e0bc8192b74af0fb64b715ff06fa2fcced15a5ac"
    assert reasoning.encrypted_content == "gAAAAABodt8ENC_encrypted_blob=="
    assert reasoning.summary[0].text.startswith("**Answering a simple question**")
    assert final.output_text == "2 + 2 = 4."
    assert final.usage is not None and final.usage.output_tokens_details.reasoning_tokens == 128


def test_encoder_echoes_the_request() -> None:
    request = codec.parse_request(fixture("request_tools_parallel.json"))
    events, _ = decode_stream(fixture("stream_tool_calls.sse"))
    payloads = validate_stream(encode_stream(events, request))
    completed = payloads[-1]["response"]
    assert completed["tools"] == fixture("request_tools_parallel.json")["tools"]
    assert completed["store"] is False and completed["parallel_tool_calls"] is True


def test_encoder_accepts_events_from_another_protocol() -> None:
    # No MessageStart, no explicit block start, a foreign signature, usage in a separate
    # event, and a finish for max tokens: what an Anthropic or Gemini decoder may produce.
    events: list[Event] = [
        ReasoningDelta(index=0, text="Let me think."),
        Signature(index=0, signature="anthropic-sig", source="anthropic_messages"),
        Signature(index=1, redacted="redacted-thinking", source="anthropic_messages"),
        BlockStop(index=1),
        BlockStop(index=0),
        TextDelta(index=2, text="Partial"),
        ToolArgsDelta(index=3, delta='{"a":1}'),
        UsageEvent(usage=Usage(input_tokens=10, output_tokens=5)),
        Finish(reason="length", usage=Usage(output_tokens=7)),
    ]
    raw = encode_stream(events, foreign_request())
    payloads = validate_stream(raw)
    assert payloads[-1]["type"] == "response.incomplete"
    final = payloads[-1]["response"]
    assert final["usage"]["input_tokens"] == 10 and final["usage"]["output_tokens"] == 7
    assert [item["type"] for item in final["output"]] == ["reasoning", "message", "function_call"]
    assert "encrypted_content" not in final["output"][0]
    assert "anthropic-sig" not in raw.decode() and "redacted-thinking" not in raw.decode()


def test_encoder_ignores_events_after_finish() -> None:
    encoder = codec.stream_encoder()
    encoder.encode(MessageStart(id="resp_1", model="m"))
    encoder.encode(Finish())
    assert encoder.encode(TextDelta(index=0, text="late")) == b""


def test_same_protocol_stream_round_trip_keeps_the_content() -> None:
    for name in STREAMS:
        events, _ = decode_stream(fixture(name))
        again, done = decode_stream(encode_stream(events))
        assert done
        assert [e for e in again if not isinstance(e, MessageStart)] == [
            e for e in events if not isinstance(e, MessageStart)
        ]


# --- errors ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "status", "headers", "kind", "retry_after"),
    [
        ("error_429.json", 429, {"x-request-id": "req_1"}, "rate_limited", 6.57),
        ("error_429.json", 429, {"retry-after-ms": "1500"}, "rate_limited", 1.5),
        ("error_429_quota.json", 429, {}, "rate_limited", None),
        ("error_400_context.json", 400, {}, "context_window_exceeded", None),
        ("error_401.json", 401, {}, "auth", None),
        ("error_500.json", 500, {}, "server_error", None),
        ("error_503.json", 503, {"retry-after": "2"}, "overloaded", 2.0),
    ],
)
def test_parse_error(
    name: str, status: int, headers: dict[str, str], kind: str, retry_after: float | None
) -> None:
    body = fixture(name)
    err = codec.parse_error(status, body, headers)
    assert err.kind == kind and err.status == status
    assert err.message == body["error"]["message"]
    assert err.retry_after == (pytest.approx(retry_after) if retry_after is not None else None)
    if name == "error_429_quota.json":
        assert err.quota
    if name == "error_400_context.json":
        assert err.param == "input"


def test_parse_error_with_a_non_json_body() -> None:
    err = codec.parse_error(502, b"<html>Bad Gateway</html>", {})
    assert err.kind == "server_error" and err.message == "<html>Bad Gateway</html>"


@pytest.mark.parametrize(
    ("error", "status", "exception"),
    [
        (GatewayError("rate_limited", "slow down", retry_after=3), 429, openai.RateLimitError),
        (GatewayError("rate_limited", "no credit", quota=True), 429, openai.RateLimitError),
        (GatewayError("overloaded", "busy"), 503, openai.InternalServerError),
        (GatewayError("overloaded", "Overloaded", status=529), 503, openai.InternalServerError),
        (GatewayError("server_error", "boom"), 500, openai.InternalServerError),
        (GatewayError("timeout", "too slow"), 504, openai.InternalServerError),
        (GatewayError("connection", "reset"), 502, openai.InternalServerError),
        (GatewayError("context_window_exceeded", "too long"), 400, openai.BadRequestError),
        (GatewayError("content_filtered", "flagged"), 400, openai.BadRequestError),
        (
            GatewayError("bad_request", "input[0].role: unknown role", param="input[0].role"),
            400,
            openai.BadRequestError,
        ),
        (GatewayError("auth", "bad key"), 401, openai.AuthenticationError),
        (GatewayError("auth", "forbidden", status=403), 403, openai.PermissionDeniedError),
        (GatewayError("not_found", "no such model"), 404, openai.NotFoundError),
    ],
)
def test_built_errors_raise_the_sdk_exception(
    error: GatewayError, status: int, exception: type[openai.APIStatusError]
) -> None:
    code, body = codec.build_error(error)
    assert code == status
    client = openai_client(replay(code, body))
    with client, pytest.raises(exception) as info:
        client.responses.create(model="m", input="hi")
    assert info.value.status_code == status
    assert isinstance(info.value.body, dict) and info.value.body["message"] == error.message
    assert info.value.body["param"] == error.param
    again = codec.parse_error(code, body, {})
    assert again.message == error.message and again.retryable == error.retryable
    if error.kind != "connection":  # a 502 reads back as server_error: both retryable
        assert again.kind == error.kind


def test_in_band_error_raises_in_the_sdk() -> None:
    events, _ = decode_stream(fixture("stream_text.sse"))
    cut = [e for e in events if not isinstance(e, Finish)][:4]
    error = GatewayError("rate_limited", "Rate limit reached. Please try again in 2s.")
    raw = encode_stream([*cut, Error(error=error)])
    payloads = validate_stream(raw)
    failed, last = payloads[-2:]
    assert failed["type"] == "response.failed"
    assert failed["response"]["status"] == "failed"
    assert failed["response"]["error"] == {"code": "rate_limit_exceeded", "message": error.message}
    assert last["type"] == "error" and last["message"] == error.message
    client = openai_client(replay(200, raw, sse=True))
    with client, pytest.raises(openai.APIError) as info:
        with client.responses.stream(model="m", input="hi") as stream:
            for _ in stream:
                pass
    assert info.value.message == error.message
    # and our own decoder reads it back as one error
    decoded, done = decode_stream(raw)
    assert done and [type(e) for e in decoded].count(Error) == 1
    assert isinstance(decoded[-1], Error) and decoded[-1].error.kind == "rate_limited"
    assert decoded[-1].error.retry_after == 2.0


def test_stream_encoder_error_first_event() -> None:
    raw = encode_stream([Error(error=GatewayError("server_error", "upstream died"))])
    payloads = validate_stream(raw)
    assert [p["type"] for p in payloads] == [
        "response.created",
        "response.in_progress",
        "response.failed",
        "error",
    ]


def test_fixture_directory_is_complete() -> None:
    names = {p.name for p in Path(FIXTURES / PROTOCOL).iterdir()}
    assert {"stream_error.sse", "stream_failed.sse", "error_503.json"} <= names


def test_sdk_sees_an_incomplete_stream_as_response_incomplete() -> None:
    # Like OpenAI itself, a max-tokens stop ends with ``response.incomplete``; the SDK yields
    # it (with the accumulated output) and ``get_final_response()`` would raise, by design.
    events: list[Event] = [
        MessageStart(id="resp_x", model="m"),
        TextDelta(index=0, text="cut sh"),
        Finish(reason="length", usage=Usage(input_tokens=3, output_tokens=2)),
    ]
    client = openai_client(replay(200, encode_stream(events), sse=True))
    with client, client.responses.stream(model="m", input="hi") as stream:
        last = list(stream)[-1]
    assert last.type == "response.incomplete"
    assert last.response.output_text == "cut sh"
    assert last.response.incomplete_details is not None
    assert last.response.incomplete_details.reason == "max_output_tokens"
