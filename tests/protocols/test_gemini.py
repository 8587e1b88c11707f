from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx2
import msgspec
import pytest
from google.genai import errors as genai_errors
from google.genai import types
from pydantic import TypeAdapter

from asgi_rotator.errors import GatewayError
from asgi_rotator.protocols.gemini import GeminiCodec
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
from tests.sdk import genai_client, replay

codec = GeminiCodec()
FIXTURE_DIR = FIXTURES / "gemini"
REQUESTS = sorted(p.name for p in FIXTURE_DIR.glob("request_*.json"))
RESPONSES = sorted(p.name for p in FIXTURE_DIR.glob("response_*.json"))
STREAMS = sorted(p.name for p in FIXTURE_DIR.glob("stream_*.sse"))
# Fixtures carrying fields on purpose that the SDK types do not know.
UNKNOWN = {"request_unknown_fields.json", "response_unknown_fields.json"}

CONTENTS = TypeAdapter(list[types.Content])
TOOLS = TypeAdapter(list[types.Tool])


def parse(name: str, model: str = "gemini-2.5-flash") -> Request:
    return codec.parse_request(load_fixture("gemini", name), model=model)


def decode(raw: bytes, chunk: int | None = None) -> list[Event]:
    sse = SSEDecoder()
    decoder = codec.stream_decoder()
    events: list[Event] = []
    pieces = [raw] if chunk is None else [raw[i : i + chunk] for i in range(0, len(raw), chunk)]
    for piece in pieces:
        for event in sse.feed(piece):
            events.extend(decoder.feed(event))
    for event in sse.close():
        events.extend(decoder.feed(event))
    events.extend(decoder.close())
    return events


def encode(events: list[Event], request: Request | None = None) -> bytes:
    encoder = codec.stream_encoder(request)
    return b"".join(encoder.encode(e) for e in events)


def chunks(raw: bytes) -> list[dict[str, Any]]:
    return [json.loads(e.data) for e in SSEDecoder().feed(raw)]


def strict(model: type[Any] | TypeAdapter[Any], value: Any) -> Any:
    """Validate in JSON mode and strict: bytes fields (thoughtSignature, inlineData.data) are
    base64 text on the wire, which only JSON-mode validation accepts."""
    data = json.dumps(value)
    if isinstance(model, TypeAdapter):
        return model.validate_json(data, strict=True)
    return model.model_validate_json(data, strict=True)


def validate_request_body(body: dict[str, Any]) -> None:
    """The generateContent body has no single SDK type (the SDK flattens it into
    GenerateContentConfig), so each wire field is validated against its own SDK model;
    extra='forbid' on those models catches unknown fields."""
    known = {
        "contents",
        "systemInstruction",
        "system_instruction",
        "tools",
        "toolConfig",
        "tool_config",
        "generationConfig",
        "generation_config",
        "safetySettings",
        "safety_settings",
        "cachedContent",
        "cached_content",
    }
    assert set(body) <= known, set(body) - known
    strict(CONTENTS, body["contents"])
    for key, model in (
        ("systemInstruction", types.Content),
        ("toolConfig", types.ToolConfig),
        ("generationConfig", types.GenerationConfig),
    ):
        for spelled in (key, "".join("_" + c.lower() if c.isupper() else c for c in key)):
            if spelled in body:
                strict(model, body[spelled])
    if "tools" in body:
        strict(TOOLS, body["tools"])


# --- same-protocol round trips ---------------------------------------------------------------


@pytest.mark.parametrize("name", REQUESTS)
def test_request_round_trip_is_lossless(name: str) -> None:
    body = load_fixture("gemini", name)
    request = codec.parse_request(body, model="gemini-2.5-flash", stream=False)
    assert request.origin == "gemini"
    assert codec.build_request(request) == body
    # ... and survives the unified model's own serialisation (what the state store does).
    again = msgspec.json.decode(msgspec.json.encode(request), type=Request)
    assert codec.build_request(again) == body


@pytest.mark.parametrize("name", RESPONSES)
def test_response_round_trip_is_lossless(name: str) -> None:
    body = load_fixture("gemini", name)
    response = codec.parse_response(body)
    assert response.origin == "gemini"
    assert codec.build_response(response) == body


@pytest.mark.parametrize("name", [n for n in REQUESTS if n not in UNKNOWN])
def test_built_requests_validate_against_sdk_types(name: str) -> None:
    request = parse(name)
    validate_request_body(codec.build_request(request))
    request.origin = "openai_chat"  # the same request built as if it came from elsewhere
    validate_request_body(codec.build_request(request))


@pytest.mark.parametrize("name", RESPONSES)
def test_built_responses_validate_against_sdk_types(name: str) -> None:
    response = codec.parse_response(load_fixture("gemini", name))
    if name not in UNKNOWN:
        strict(types.GenerateContentResponse, codec.build_response(response))
    response.origin = "anthropic_messages"
    response.extra = {}
    strict(types.GenerateContentResponse, codec.build_response(response))


def test_sdk_sent_request_parses_and_round_trips() -> None:
    """The SDK mixes spellings (``inlineData: {mime_type}``, ``thinking_budget``): each field is
    rebuilt as the SDK spelled it."""
    sent: list[dict[str, Any]] = []

    def handler(request: httpx2.Request) -> httpx2.Response:
        sent.append(json.loads(request.content))
        assert request.headers["x-goog-api-key"] == "test-key"
        return httpx2.Response(200, json=load_fixture("gemini", "response_text.json"))

    client = genai_client(handler)
    client.models.generate_content(
        model="gemini-2.5-flash",
        contents=[
            "Describe this",
            types.Part.from_bytes(data=b"\x89PNG\r\n", mime_type="image/png"),
        ],
        config=types.GenerateContentConfig(
            system_instruction="Be brief.",
            temperature=0.5,
            max_output_tokens=100,
            stop_sequences=["END"],
            thinking_config=types.ThinkingConfig(thinking_budget=1024, include_thoughts=True),
            tools=[
                types.Tool(
                    function_declarations=[
                        types.FunctionDeclaration(
                            name="f", description="d", parameters_json_schema={"type": "object"}
                        )
                    ]
                ),
            ],
            tool_config=types.ToolConfig(
                function_calling_config=types.FunctionCallingConfig(
                    mode=types.FunctionCallingConfigMode.ANY, allowed_function_names=["f"]
                )
            ),
            response_mime_type="application/json",
            response_schema={"type": "OBJECT", "properties": {"a": {"type": "STRING"}}},
            safety_settings=[
                types.SafetySetting(
                    category=types.HarmCategory.HARM_CATEGORY_HATE_SPEECH,
                    threshold=types.HarmBlockThreshold.BLOCK_NONE,
                )
            ],
            automatic_function_calling=types.AutomaticFunctionCallingConfig(disable=True),
        ),
    )
    body = sent[0]
    request = codec.parse_request(body, model="gemini-2.5-flash")
    assert codec.build_request(request) == body
    assert request.system == [Text(text="Be brief.")]
    image = request.messages[0].content[1]
    assert isinstance(image, Image) and image.media_type == "image/png"
    assert request.max_tokens == 100 and request.temperature == 0.5 and request.stop == ["END"]
    assert request.reasoning == ReasoningConfig(
        enabled=True, budget_tokens=1024, include_thoughts=True
    )
    assert request.tools is not None and request.tools[0].parameters == {"type": "object"}
    assert request.tool_choice == ToolChoice(mode="tool", name="f")
    assert request.output is not None and request.output.schema is not None


# --- request mapping ---------------------------------------------------------------------------


def test_request_path_and_model_from_url() -> None:
    request = codec.parse_request(
        load_fixture("gemini", "request_simple.json"), model="models/gemini-2.5-flash", stream=True
    )
    assert request.model == "gemini-2.5-flash" and request.stream
    assert (
        codec.request_path(request)
        == "/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse"
    )
    request.stream = False
    assert codec.request_path(request) == "/v1beta/models/gemini-2.5-flash:generateContent"
    request.model = "models/gemini-3-pro-preview"
    assert codec.request_path(request) == "/v1beta/models/gemini-3-pro-preview:generateContent"
    assert "model" not in codec.build_request(request)
    assert codec.auth == "x-goog-api-key"


def test_simple_and_system_requests_map_to_unified() -> None:
    simple = parse("request_simple.json")
    assert [m.role for m in simple.messages] == ["user"]
    assert simple.messages[0].content == [Text(text="Explain how AI works in a few words")]

    system = parse("request_system.json")
    assert [t.text for t in system.system] == ["You are a cat.", "Your name is Neko."]
    assert (system.max_tokens, system.temperature, system.top_p, system.top_k) == (
        800,
        1.0,
        0.8,
        10,
    )
    assert (system.stop, system.seed, system.presence_penalty, system.frequency_penalty) == (
        ["Title"],
        42,
        0.5,
        0.25,
    )


def test_media_parts_map_to_image_and_file() -> None:
    request = parse("request_multiturn_images.json")
    assert [m.role for m in request.messages] == ["user", "assistant", "user"]
    image = request.messages[0].content[1]
    assert isinstance(image, Image) and image.media_type == "image/png" and image.data
    pdf_uri, photo, pdf_inline, _ = request.messages[2].content
    assert isinstance(pdf_uri, File) and pdf_uri.url and pdf_uri.media_type == "application/pdf"
    assert isinstance(photo, Image) and photo.url == "gs://bucket/photo.jpg"
    assert isinstance(pdf_inline, File) and pdf_inline.data == "JVBERi0xLjQK"


def test_parallel_calls_without_ids_are_paired_by_name_and_order() -> None:
    request = parse("request_tools_parallel.json")
    model_turn, results = request.messages[1], request.messages[2]
    signature, paris, london = model_turn.content
    # The thought signature precedes the part that carried it.
    assert (
        isinstance(signature, Reasoning) and signature.text == "" and signature.source == "gemini"
    )
    assert isinstance(paris, ToolCall) and isinstance(london, ToolCall)
    assert paris.id.startswith("call_") and paris.id != london.id
    assert json.loads(paris.arguments) == {"city": "Paris"}
    assert results.role == "tool"
    first, second = results.content
    assert isinstance(first, ToolResult) and isinstance(second, ToolResult)
    assert (first.tool_call_id, first.name) == (paris.id, "get_weather")
    assert second.tool_call_id == london.id
    assert json.loads(first.content[0].text) == {"temperature": 21, "unit": "C"}  # type: ignore[union-attr]
    assert second.content == [Text(text="rainy")] and not second.is_error
    error = request.messages[6].content[0]
    assert (
        isinstance(error, ToolResult)
        and error.is_error
        and error.content == [Text(text="device offline")]
    )
    assert request.tool_choice == ToolChoice(mode="auto")
    assert request.tools is not None and [t.name for t in request.tools] == [
        "get_weather",
        "set_thermostat",
    ]


def test_call_ids_from_gemini_are_kept() -> None:
    request = parse("request_tools_ids.json")
    call = request.messages[1].content[0]
    result = request.messages[2].content[0]
    assert isinstance(call, ToolCall) and call.id == "fc-7f3a"
    assert isinstance(result, ToolResult) and result.tool_call_id == "fc-7f3a"
    built = codec.build_request(request)
    assert built["contents"][1]["parts"][0]["functionCall"]["id"] == "fc-7f3a"


def test_tool_choice_mapping() -> None:
    one = parse("request_tool_choice.json")
    assert one.tool_choice == ToolChoice(mode="tool", name="lights_on")
    assert one.tools is not None
    search = one.tools[-1]
    assert search.type == "googleSearch" and search.extra["googleSearch"] == {}
    several = parse("request_tool_choice_any.json")
    assert several.tool_choice == ToolChoice(mode="required")  # the allowed subset is Gemini-only


def test_structured_output_and_reasoning_mapping() -> None:
    schema = parse("request_structured.json").output
    assert schema is not None and schema.type == "json_schema" and schema.schema["type"] == "ARRAY"  # type: ignore[index]
    json_schema = parse("request_structured_json_schema.json").output
    assert json_schema is not None and json_schema.schema["additionalProperties"] is False  # type: ignore[index]
    assert parse("request_snake_case.json").output == OutputFormat(type="text")

    reasoning = parse("request_reasoning.json")
    assert reasoning.reasoning == ReasoningConfig(
        enabled=True, budget_tokens=2048, include_thoughts=True
    )
    thought, signature, answer = reasoning.messages[1].content
    assert isinstance(thought, Reasoning) and thought.text.startswith("**Multiplying**")
    assert isinstance(signature, Reasoning) and signature.signature and not signature.text
    assert isinstance(answer, Text)
    assert parse("request_reasoning_level.json").reasoning == ReasoningConfig(effort="high")
    assert parse("request_reasoning_dynamic.json").reasoning == ReasoningConfig(enabled=True)
    assert parse("request_snake_case.json").reasoning == ReasoningConfig(
        enabled=False, include_thoughts=False
    )


def test_snake_case_request_is_read_and_rebuilt_snake_case() -> None:
    request = parse("request_snake_case.json")
    assert request.system == [Text(text="Be brief.")]
    assert request.max_tokens == 64 and request.stop == ["END"]
    assert request.tool_choice == ToolChoice(mode="tool", name="zoom")
    image = request.messages[0].content[1]
    assert isinstance(image, Image) and image.media_type == "image/jpeg"
    _, call = request.messages[1].content
    result = request.messages[2].content[0]
    assert (
        isinstance(call, ToolCall)
        and isinstance(result, ToolResult)
        and result.tool_call_id == call.id
    )
    # Cross-protocol builds are camelCase.
    request.origin = "anthropic_messages"
    body = codec.build_request(request)
    assert "generationConfig" in body and "systemInstruction" in body and "toolConfig" in body


def test_unknown_fields_are_kept_for_gemini_only() -> None:
    request = parse("request_unknown_fields.json")
    assert request.extra["futureTopLevel"] == {"nested": [1, 2, 3]}
    assert request.messages[0].extra["futureContentField"] == {"a": 1}
    assert request.messages[0].content[0].extra == {"partMetadata": {"tag": "x"}}
    request.origin = "openai_chat"
    body = codec.build_request(request)
    # toolConfig's VALIDATED mode has no unified equivalent: Gemini-only, like the rest.
    assert set(body) == {"contents", "systemInstruction", "tools", "generationConfig"}
    assert body["tools"] == [{"functionDeclarations": [{"name": "save", "description": "Save"}]}]
    # Thinking switched on by another protocol asks for visible thoughts.
    assert body["generationConfig"] == {
        "temperature": 0.2,
        "thinkingConfig": {"thinkingBudget": 512, "includeThoughts": True},
    }
    model_parts = body["contents"][1]["parts"]
    assert {"executableCode", "codeExecutionResult"}.isdisjoint(k for p in model_parts for k in p)
    validate_request_body(body)


# --- building from other protocols -------------------------------------------------------------


def foreign_request(**changes: Any) -> Request:
    request = Request(
        model="gemini-2.5-flash",
        origin="openai_chat",
        system=[Text(text="sys")],
        messages=[
            Message(
                role="user",
                content=[
                    Text(text="look"),
                    Image(url="data:image/png;base64,iVBORw0KGgo="),
                    Image(url="https://example.com/cat.jpg"),
                ],
            ),
            Message(
                role="assistant",
                content=[
                    Reasoning(
                        text="thinking", signature="anthropic-sig", source="anthropic_messages"
                    ),
                    Text(text="Calling tools."),
                    ToolCall(id="toolu_1", name="get_weather", arguments='{"city":"Paris"}'),
                    ToolCall(id="toolu_2", name="get_time", arguments=""),
                ],
            ),
            Message(
                role="tool",
                content=[ToolResult(tool_call_id="toolu_1", content=[Text(text="sunny")])],
            ),
            Message(
                role="tool",
                content=[
                    ToolResult(
                        tool_call_id="toolu_2",
                        content=[Text(text='{"time": "12:00"}')],
                        is_error=False,
                    )
                ],
            ),
            Message(role="user", content=[Text(text="thanks")]),
        ],
        tools=[
            Tool(
                name="get_weather",
                parameters={"type": "object", "additionalProperties": False},
                strict=True,
            ),
            Tool(name="get_time"),
            Tool(
                name="web_search", type="web_search_preview", extra={"type": "web_search_preview"}
            ),
        ],
        tool_choice=ToolChoice(mode="required"),
        parallel_tool_calls=False,
        reasoning=ReasoningConfig(effort="low"),
        output=OutputFormat(
            name="x", schema={"type": "object", "additionalProperties": False}, strict=True
        ),
        metadata={"user": "u"},
        extra={"logit_bias": {}},
    )
    for key, value in changes.items():
        setattr(request, key, value)
    return request


def test_build_from_another_protocol() -> None:
    body = codec.build_request(foreign_request())
    validate_request_body(body)
    assert set(body) == {"contents", "systemInstruction", "tools", "toolConfig", "generationConfig"}
    user, model, results = body["contents"][:3]
    assert user["parts"][1] == {"inlineData": {"mimeType": "image/png", "data": "iVBORw0KGgo="}}
    assert user["parts"][2] == {
        "fileData": {"mimeType": "image/jpeg", "fileUri": "https://example.com/cat.jpg"}
    }
    # Anthropic's thinking is dropped; call ids not issued by Gemini are not sent.
    assert model == {
        "role": "model",
        "parts": [
            {"text": "Calling tools."},
            {"functionCall": {"name": "get_weather", "args": {"city": "Paris"}}},
            {"functionCall": {"name": "get_time", "args": {}}},
        ],
    }
    # Both tool messages become one user turn; names come from the matching calls.
    assert results["role"] == "user" and len(body["contents"]) == 3
    assert results["parts"][:2] == [
        {"functionResponse": {"name": "get_weather", "response": {"result": "sunny"}}},
        {"functionResponse": {"name": "get_time", "response": {"time": "12:00"}}},
    ]
    assert results["parts"][2] == {"text": "thanks"}
    assert body["tools"] == [
        {
            "functionDeclarations": [
                {
                    "name": "get_weather",
                    "parametersJsonSchema": {"type": "object", "additionalProperties": False},
                },
                {"name": "get_time"},
            ]
        }
    ]
    assert body["toolConfig"] == {"functionCallingConfig": {"mode": "ANY"}}
    assert body["generationConfig"] == {
        "responseMimeType": "application/json",
        "responseJsonSchema": {"type": "object", "additionalProperties": False},
        "thinkingConfig": {"thinkingBudget": 2048},
    }


def test_reasoning_config_from_another_protocol_depends_on_model_generation() -> None:
    def thinking(model: str, config: ReasoningConfig) -> Any:
        body = codec.build_request(foreign_request(model=model, reasoning=config))
        return body["generationConfig"].get("thinkingConfig")

    assert thinking("gemini-3-pro-preview", ReasoningConfig(effort="high")) == {
        "thinkingLevel": "HIGH"
    }
    assert thinking("gemini-2.5-pro", ReasoningConfig(effort="high")) == {"thinkingBudget": 24576}
    assert thinking("gemini-3-pro-preview", ReasoningConfig(enabled=True, budget_tokens=4096)) == {
        "thinkingBudget": 4096,
        "includeThoughts": True,
    }
    assert thinking("gemini-2.5-flash", ReasoningConfig(enabled=False)) == {"thinkingBudget": 0}
    assert thinking("gemini-2.5-flash", ReasoningConfig(effort="medium", summary="auto")) == {
        "thinkingBudget": 8192,
        "includeThoughts": True,
    }


def test_gemini_signatures_reach_gemini_from_any_origin() -> None:
    request = foreign_request(
        messages=[
            Message(role="user", content=[Text(text="hi")]),
            Message(
                role="assistant",
                content=[
                    Reasoning(signature="c2ln", source="gemini"),
                    ToolCall(id="call_1", name="f", arguments="{}"),
                ],
            ),
            Message(
                role="tool",
                content=[ToolResult(tool_call_id="call_1", name="f", content=[Text(text="ok")])],
            ),
        ]
    )
    body = codec.build_request(request)
    assert body["contents"][1]["parts"] == [
        {"functionCall": {"name": "f", "args": {}}, "thoughtSignature": "c2ln"}
    ]


def test_foreign_tool_results_with_images_and_bad_arguments() -> None:
    request = foreign_request(
        messages=[
            Message(role="user", content=[Text(text="hi")]),
            Message(
                role="assistant", content=[ToolCall(id="c1", name="shot", arguments="not json")]
            ),
            Message(
                role="tool",
                content=[
                    ToolResult(
                        tool_call_id="c1",
                        content=[Text(text="failed"), Image(data="iVBORw0KGgo=")],
                        is_error=True,
                    )
                ],
            ),
        ]
    )
    body = codec.build_request(request)
    assert body["contents"][1]["parts"][0]["functionCall"]["args"] == {"arguments": "not json"}
    assert body["contents"][2]["parts"] == [
        {"functionResponse": {"name": "shot", "response": {"error": "failed"}}},
        {"inlineData": {"mimeType": "image/png", "data": "iVBORw0KGgo="}},
    ]


def test_foreign_tool_json_nested_too_deeply_is_kept_as_text() -> None:
    deep = '{"a": ' + "[" * 10_000 + "]" * 10_000 + "}"
    request = foreign_request(
        messages=[
            Message(role="user", content=[Text(text="hi")]),
            Message(role="assistant", content=[ToolCall(id="c1", name="f", arguments=deep)]),
            Message(
                role="tool", content=[ToolResult(tool_call_id="c1", content=[Text(text=deep)])]
            ),
        ]
    )
    body = codec.build_request(request)
    assert body["contents"][1]["parts"][0]["functionCall"]["args"] == {"arguments": deep}
    assert body["contents"][2]["parts"] == [
        {"functionResponse": {"name": "f", "response": {"result": deep}}}
    ]


def test_foreign_requests_that_cannot_be_sent_are_refused() -> None:
    orphan = foreign_request(
        messages=[
            Message(
                role="tool", content=[ToolResult(tool_call_id="nope", content=[Text(text="x")])]
            )
        ]
    )
    with pytest.raises(GatewayError) as caught:
        codec.build_request(orphan)
    assert caught.value.kind == "bad_request" and caught.value.param == "messages[0].content[0]"
    file_id = foreign_request(messages=[Message(role="user", content=[File(file_id="file-abc")])])
    with pytest.raises(GatewayError) as caught:
        codec.build_request(file_id)
    assert caught.value.param == "messages[0].content[0]"


# --- bad input ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "model", "param"),
    [
        ([], "m", None),
        ({"contents": [{"parts": [{"text": "x"}]}]}, None, "model"),
        ({}, "m", "contents"),
        ({"contents": []}, "m", "contents"),
        ({"contents": "hi"}, "m", "contents"),
        ({"contents": [{"role": "system", "parts": [{"text": "x"}]}]}, "m", "contents[0].role"),
        ({"contents": [{"role": "user"}]}, "m", "contents[0].parts"),
        ({"contents": [{"parts": [{"text": 3}]}]}, "m", "contents[0].parts[0].text"),
        ({"contents": [{"parts": [{}]}]}, "m", "contents[0].parts[0]"),
        (
            {"contents": [{"parts": [{"text": "a", "functionCall": {"name": "f"}}]}]},
            "m",
            "contents[0].parts[0]",
        ),
        (
            {"contents": [{"parts": [{"inlineData": {"data": "x"}}]}]},
            "m",
            "contents[0].parts[0].inlineData.mimeType",
        ),
        (
            {
                "contents": [
                    {"role": "user", "parts": [{"functionResponse": {"name": "f", "response": {}}}]}
                ]
            },
            "m",
            "contents[0].parts[0].functionResponse",
        ),
        (
            {
                "contents": [
                    {"role": "model", "parts": [{"functionCall": {"name": "f", "args": {}}}]},
                    {
                        "role": "user",
                        "parts": [{"functionResponse": {"name": "g", "response": {}}}],
                    },
                ]
            },
            "m",
            "contents[1].parts[0].functionResponse",
        ),
        (
            {"contents": [{"role": "model", "parts": [{"functionCall": {"args": {}}}]}]},
            "m",
            "contents[0].parts[0].functionCall.name",
        ),
        ({"contents": [{"parts": [{"text": "x"}]}], "tools": {}}, "m", "tools"),
        (
            {
                "contents": [{"parts": [{"text": "x"}]}],
                "tools": [{"functionDeclarations": [{"description": "d"}]}],
            },
            "m",
            "tools[0].functionDeclarations[0].name",
        ),
        (
            {
                "contents": [{"parts": [{"text": "x"}]}],
                "generationConfig": {"maxOutputTokens": "9"},
            },
            "m",
            "generationConfig.maxOutputTokens",
        ),
        (
            {"contents": [{"parts": [{"text": "x"}]}], "generationConfig": {"temperature": "hot"}},
            "m",
            "generationConfig.temperature",
        ),
        (
            {
                "contents": [{"parts": [{"text": "x"}]}],
                "generation_config": {"stop_sequences": [1]},
            },
            "m",
            "generationConfig.stopSequences[0]",
        ),
        (
            {
                "contents": [{"parts": [{"text": "x"}]}],
                "generationConfig": {"thinkingConfig": {"thinkingBudget": 1.5}},
            },
            "m",
            "generationConfig.thinkingConfig.thinkingBudget",
        ),
        (
            {"contents": [{"parts": [{"text": "x"}]}], "systemInstruction": "be nice"},
            "m",
            "systemInstruction",
        ),
        (
            {
                "contents": [{"parts": [{"text": "x"}]}],
                "toolConfig": {
                    "functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": "f"}
                },
            },
            "m",
            "toolConfig.functionCallingConfig.allowedFunctionNames",
        ),
    ],
)
def test_bad_requests_name_the_field(body: Any, model: str | None, param: str | None) -> None:
    with pytest.raises(GatewayError) as caught:
        codec.parse_request(body, model=model)
    error = caught.value
    assert error.kind == "bad_request" and error.status == 400
    assert error.param == param
    if param:
        assert error.message.startswith(f"{param}: ")


# --- responses ---------------------------------------------------------------------------------


def test_response_mapping() -> None:
    text = codec.parse_response(load_fixture("gemini", "response_text.json"))
    assert (text.id, text.model, text.finish_reason) == (
        "mAitaOfnC5CZ1dkPmZ2YgQg",
        "gemini-2.5-flash",
        "stop",
    )
    assert text.content == [Text(text="AI learns patterns from data to make predictions.")]

    tools = codec.parse_response(load_fixture("gemini", "response_tool_calls.json"))
    assert tools.finish_reason == "tool_calls"
    assert [type(p) for p in tools.content] == [Reasoning, ToolCall, ToolCall]
    assert tools.usage == Usage(input_tokens=60, output_tokens=92, reasoning_tokens=62)

    thinking = codec.parse_response(load_fixture("gemini", "response_reasoning.json"))
    # promptTokenCount already includes the cached tokens; output = candidates + thoughts.
    assert thinking.usage == Usage(
        input_tokens=1200, output_tokens=112, reasoning_tokens=100, cache_read_tokens=1024
    )
    assert thinking.usage.total_tokens == 1312

    assert (
        codec.parse_response(load_fixture("gemini", "response_max_tokens.json")).finish_reason
        == "length"
    )
    assert (
        codec.parse_response(load_fixture("gemini", "response_blocked.json")).finish_reason
        == "content_filter"
    )
    assert (
        codec.parse_response(load_fixture("gemini", "response_safety.json")).finish_reason
        == "content_filter"
    )
    odd = codec.parse_response(load_fixture("gemini", "response_unknown_fields.json"))
    assert odd.finish_reason == "error" and odd.id.startswith("resp_")
    assert odd.usage == Usage(input_tokens=30, output_tokens=10, reasoning_tokens=3)
    assert odd.content == [Text(text="The answer is 2.", extra={"futurePartField": 1})]


def test_foreign_response_builds_for_the_sdk() -> None:
    response = Response(
        id="chatcmpl-1",
        model="gpt-5",
        origin="openai_chat",
        content=[
            Reasoning(text="pondering", source="openai_responses", redacted="enc"),
            Text(text="Let me check."),
            ToolCall(id="call_abc", name="get_weather", arguments='{"city":"Paris"}'),
        ],
        finish_reason="tool_calls",
        usage=Usage(input_tokens=100, output_tokens=50, reasoning_tokens=20, cache_read_tokens=40),
        extra={"system_fingerprint": "fp"},
    )
    body = codec.build_response(response)
    assert body == {
        "candidates": [
            {
                "content": {
                    "parts": [
                        # Shown as a thought (no request says otherwise); its payload is not.
                        {"text": "pondering", "thought": True},
                        {"text": "Let me check."},
                        {
                            "functionCall": {
                                "name": "get_weather",
                                "args": {"city": "Paris"},
                                "id": "call_abc",
                            }
                        },
                    ],
                    "role": "model",
                },
                "finishReason": "STOP",
                "index": 0,
            }
        ],
        "usageMetadata": {
            "promptTokenCount": 100,
            "candidatesTokenCount": 30,
            "thoughtsTokenCount": 20,
            "cachedContentTokenCount": 40,
            "totalTokenCount": 150,
        },
        "modelVersion": "gpt-5",
        "responseId": "chatcmpl-1",
    }
    result = genai_client(replay(200, body)).models.generate_content(model="gpt-5", contents="hi")
    assert result.text == "Let me check."
    assert result.function_calls is not None and result.function_calls[0].args == {"city": "Paris"}
    assert result.function_calls[0].id == "call_abc"
    assert result.usage_metadata is not None and result.usage_metadata.total_token_count == 150


def test_sdk_reads_a_rebuilt_gemini_response() -> None:
    body = codec.build_response(
        codec.parse_response(load_fixture("gemini", "response_reasoning.json"))
    )
    result = genai_client(replay(200, body)).models.generate_content(
        model="gemini-2.5-pro", contents="hi"
    )
    assert result.text == "17 * 23 = 391."
    assert result.usage_metadata is not None and result.usage_metadata.thoughts_token_count == 100


# --- streams: decoding -------------------------------------------------------------------------


def check_stream_rules(events: list[Event]) -> None:
    assert isinstance(events[0], MessageStart)
    started: list[int] = []
    stopped: list[int] = []
    for event in events[1:]:
        index = getattr(event, "index", None)
        if isinstance(event, BlockStop):
            assert event.index in started and event.index not in stopped
            stopped.append(event.index)
        elif index is not None and index not in started:
            assert index == len(started), "blocks are numbered in the order they start"
            started.append(index)
    assert sorted(stopped) == started
    terminal = [e for e in events if isinstance(e, (Finish, Error))]
    assert len(terminal) == 1 and events[-1] is terminal[0]


@pytest.mark.parametrize("name", STREAMS)
def test_decoded_streams_follow_the_event_rules(name: str) -> None:
    check_stream_rules(decode(load_fixture("gemini", name)))


@pytest.mark.parametrize("name", STREAMS)
def test_decoder_is_chunking_independent(name: str) -> None:
    raw = load_fixture("gemini", name)

    def normal(events: list[Event]) -> list[Any]:
        # Synthesized ids are random; GatewayErrors compare by identity.
        return [
            msgspec.structs.replace(e, id="x")
            if isinstance(e, ToolCallStart)
            else (e.error.kind, e.error.message, e.error.status)
            if isinstance(e, Error)
            else e
            for e in events
        ]

    whole = normal(decode(raw))
    for size in (1, 7, 64):
        assert normal(decode(raw, size)) == whole
    assert normal(decode(raw.replace(b"\n", b"\r\n"), 5)) == whole


def test_decode_text_stream() -> None:
    events = decode(load_fixture("gemini", "stream_text.sse"))
    assert events == [
        MessageStart(id="stream-text-1", model="gemini-2.5-flash"),
        TextDelta(index=0, text="The"),
        TextDelta(index=0, text=" quick brown fox"),
        TextDelta(index=0, text=" jumps."),
        BlockStop(index=0),
        Finish(reason="stop", usage=Usage(input_tokens=9, output_tokens=6)),
    ]


def test_decode_tool_call_stream() -> None:
    decoder = codec.stream_decoder()
    events: list[Event] = []
    for event in SSEDecoder().feed(load_fixture("gemini", "stream_tool_calls.sse")):
        events.extend(decoder.feed(event))
    assert decoder.done
    starts = [e for e in events if isinstance(e, ToolCallStart)]
    assert [s.index for s in starts] == [2, 3] and all(s.id.startswith("call_") for s in starts)
    assert [e for e in events if isinstance(e, ToolArgsDelta)] == [
        ToolArgsDelta(index=2, delta='{"city":"Paris"}'),
        ToolArgsDelta(index=3, delta='{"city":"London","days":2}'),
    ]
    signature = next(e for e in events if isinstance(e, Signature))
    assert signature.index == 1 and signature.source == "gemini"
    assert events[-1] == Finish(
        reason="tool_calls", usage=Usage(input_tokens=40, output_tokens=74, reasoning_tokens=50)
    )


def test_decode_reasoning_stream() -> None:
    events = decode(load_fixture("gemini", "stream_reasoning.sse"))
    sig = next(e for e in events if isinstance(e, Signature)).signature
    assert events[1:] == [
        ReasoningDelta(index=0, text="**Planning**\nLet me think"),
        ReasoningDelta(index=0, text=" about primes."),
        BlockStop(index=0),
        Signature(index=1, signature=sig, source="gemini"),
        BlockStop(index=1),
        TextDelta(index=2, text="There are infinitely"),
        TextDelta(index=2, text=" many primes."),
        BlockStop(index=2),
        Finish(
            reason="stop",
            usage=Usage(
                input_tokens=2000, output_tokens=208, reasoning_tokens=200, cache_read_tokens=1500
            ),
        ),
    ]


def test_decode_in_band_error_and_late_usage() -> None:
    events = decode(load_fixture("gemini", "stream_error.sse"))
    error = events[-1]
    assert isinstance(error, Error) and isinstance(error.error, GatewayError)
    assert error.error.kind == "overloaded" and error.error.status == 503
    assert error.error.message == "The model is overloaded. Please try again later."
    assert isinstance(events[-2], BlockStop)

    decoder = codec.stream_decoder()
    late = SSEDecoder().feed(load_fixture("gemini", "stream_late_usage.sse"))
    first = decoder.feed(late[0])
    assert decoder.done and first[-1] == Finish(reason="stop")
    assert decoder.feed(late[1]) == []  # Finish was last; usage after it is dropped


def test_decoder_premature_close_and_malformed_json() -> None:
    decoder = codec.stream_decoder()
    raw = load_fixture("gemini", "stream_text.sse").split(b"\n\n")[0] + b"\n\n"
    events = [e for sse in SSEDecoder().feed(raw) for e in decoder.feed(sse)]
    assert not decoder.done and decoder.close() == [BlockStop(index=0)]
    assert len(events) == 2
    with pytest.raises(GatewayError) as caught:
        codec.stream_decoder().feed(SSEDecoder().feed(b"data: {not json\n\n")[0])
    assert caught.value.kind == "server_error"


def test_decoder_takes_a_chunk_sent_as_an_array_element_and_skips_other_values() -> None:
    chunk = load_fixture("gemini", "stream_text.sse").split(b"\n\n")[0][len(b"data: ") :]
    as_element = codec.stream_decoder().feed(SSEDecoder().feed(b"data: [" + chunk + b"]\n\n")[0])
    plain = codec.stream_decoder().feed(SSEDecoder().feed(b"data: " + chunk + b"\n\n")[0])
    assert as_element == plain and len(plain) == 2
    decoder = codec.stream_decoder()
    for value in (b"[]", b"[1]", b"5", b'"text"', b"null"):
        assert decoder.feed(SSEDecoder().feed(b"data: " + value + b"\n\n")[0]) == []
    assert not decoder.done


def test_decoder_blocked_prompt_ends_the_stream() -> None:
    decoder = codec.stream_decoder()
    sse = SSEDecoder().feed(
        b'data: {"promptFeedback": {"blockReason": "SAFETY"}, "usageMetadata": {"promptTokenCount": 4}}\n\n'
    )
    events = decoder.feed(sse[0])
    assert decoder.done and events[-1] == Finish(
        reason="content_filter", usage=Usage(input_tokens=4)
    )


# --- streams: encoding -------------------------------------------------------------------------


def sdk_stream(raw: bytes) -> list[types.GenerateContentResponse]:
    client = genai_client(replay(200, raw, sse=True))
    return list(client.models.generate_content_stream(model="gemini-2.5-flash", contents="hi"))


@pytest.mark.parametrize("name", [n for n in STREAMS if n != "stream_error.sse"])
def test_encoded_chunks_validate_and_the_sdk_assembles_them(name: str) -> None:
    events = decode(load_fixture("gemini", name))
    raw = encode(events)
    for chunk in chunks(raw):
        strict(types.GenerateContentResponse, chunk)
    received = sdk_stream(raw)
    text = "".join(c.text or "" for c in received)
    assert text == "".join(e.text for e in events if isinstance(e, TextDelta))
    calls = [fc for c in received for fc in c.function_calls or ()]
    starts = [e for e in events if isinstance(e, ToolCallStart)]
    assert [(fc.id, fc.name) for fc in calls] == [(s.id, s.name) for s in starts]
    finish = events[-1]
    assert isinstance(finish, Finish)
    last = received[-1]
    assert (
        last.candidates is not None and last.candidates[0].finish_reason == types.FinishReason.STOP
    )
    usage = last.usage_metadata
    if finish.usage is None:
        assert usage is None  # no usage known: none invented
        return
    assert usage is not None
    assert usage.prompt_token_count == finish.usage.input_tokens
    assert (usage.candidates_token_count or 0) + (
        usage.thoughts_token_count or 0
    ) == finish.usage.output_tokens


def test_encoder_puts_signatures_and_thoughts_back() -> None:
    raw = encode(decode(load_fixture("gemini", "stream_reasoning.sse")))
    parts = [p for c in chunks(raw) for p in c["candidates"][0]["content"]["parts"]]
    assert parts[0] == {"text": "**Planning**\nLet me think", "thought": True}
    signed = parts[2]
    assert signed["text"] == "There are infinitely" and signed["thoughtSignature"].startswith(
        "CiQB"
    )
    received = sdk_stream(raw)
    assert "".join(c.text or "" for c in received) == "There are infinitely many primes."

    tools = encode(decode(load_fixture("gemini", "stream_tool_calls.sse")))
    tool_parts = [p for c in chunks(tools) for p in c["candidates"][0]["content"]["parts"]]
    assert (
        "thoughtSignature" in tool_parts[1]
        and tool_parts[1]["functionCall"]["name"] == "get_weather"
    )


def test_encoder_accepts_foreign_event_streams() -> None:
    """No MessageStart, blocks without explicit start, arguments in pieces, another
    provider's signature, usage arriving separately."""
    events: list[Event] = [
        ReasoningDelta(index=0, text="hmm"),
        Signature(index=0, signature="anthropic-signature", source="anthropic_messages"),
        BlockStop(index=0),
        TextDelta(index=1, text="Hello"),
        TextDelta(index=1, text=" world"),
        BlockStop(index=1),
        ToolCallStart(index=2, id="toolu_9", name="lookup"),
        ToolArgsDelta(index=2, delta='{"q": '),
        ToolArgsDelta(index=2, delta='"x"}'),
        ToolCallStart(index=3, id="toolu_10", name="other"),
        ToolArgsDelta(index=3, delta=""),
        UsageEvent(usage=Usage(input_tokens=12)),
        Finish(reason="tool_calls", usage=Usage(output_tokens=7)),
    ]
    raw = encode(events, Request(model="claude-x"))
    for chunk in chunks(raw):
        strict(types.GenerateContentResponse, chunk)
        assert chunk["modelVersion"] == "claude-x"
    assert b"anthropic-signature" not in raw
    received = sdk_stream(raw)
    assert "".join(c.text or "" for c in received) == "Hello world"
    calls = [fc for c in received for fc in c.function_calls or ()]
    assert [(fc.id, fc.name, fc.args) for fc in calls] == [
        ("toolu_9", "lookup", {"q": "x"}),
        ("toolu_10", "other", {}),
    ]
    usage = received[-1].usage_metadata
    assert usage is not None and (usage.prompt_token_count, usage.candidates_token_count) == (12, 7)
    assert usage.total_token_count == 19
    # Nothing follows Finish.
    encoder = codec.stream_encoder()
    for event in events:
        encoder.encode(event)
    assert encoder.encode(TextDelta(index=4, text="late")) == b""


@pytest.mark.parametrize(
    ("error", "exception", "code"),
    [
        (GatewayError("overloaded", "busy upstream", status=529), genai_errors.ServerError, 503),
        (GatewayError("server_error", "boom"), genai_errors.ServerError, 500),
        (GatewayError("rate_limited", "slow down", retry_after=3), genai_errors.ClientError, 429),
        (GatewayError("connection", "upstream went away"), genai_errors.ServerError, 502),
    ],
)
def test_encoded_in_band_error_makes_the_sdk_raise(
    error: GatewayError, exception: type[genai_errors.APIError], code: int
) -> None:
    raw = encode(
        [MessageStart(id="r", model="m"), TextDelta(index=0, text="partial"), Error(error=error)]
    )
    last = chunks(raw)[-1]
    assert list(last) == ["error"]
    client = genai_client(replay(200, raw, sse=True))
    stream = client.models.generate_content_stream(model="m", contents="hi")
    first = next(stream)
    assert first.text == "partial"
    with pytest.raises(exception) as caught:
        next(stream)
    assert caught.value.code == code and caught.value.message == error.message


# --- errors --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "status", "kind"),
    [
        ("error_429.json", 429, "rate_limited"),
        ("error_400_context.json", 400, "context_window_exceeded"),
        ("error_400_api_key.json", 400, "auth"),
        ("error_403.json", 403, "auth"),
        ("error_404.json", 404, "not_found"),
        ("error_500.json", 500, "server_error"),
        ("error_503.json", 503, "overloaded"),
        ("error_504.json", 504, "timeout"),
    ],
)
def test_parse_error(name: str, status: int, kind: str) -> None:
    body = load_fixture("gemini", name)
    error = codec.parse_error(status, body, {})
    assert error.kind == kind and error.upstream_status == status
    assert error.message == body["error"]["message"]
    assert error.code == body["error"]["status"]
    if name == "error_429.json":
        assert error.retry_after == 17.0 and error.quota


def test_parse_error_odd_bodies() -> None:
    listed = codec.parse_error(
        429, [load_fixture("gemini", "error_429.json")], {"retry-after": "5"}
    )
    assert listed.kind == "rate_limited" and listed.retry_after == 5.0
    html = codec.parse_error(502, b"<html>Bad Gateway</html>", {})
    assert html.kind == "server_error" and "Bad Gateway" in html.message


@pytest.mark.parametrize(
    ("error", "status", "google_status", "exception"),
    [
        (
            GatewayError("rate_limited", "quota", retry_after=17),
            429,
            "RESOURCE_EXHAUSTED",
            genai_errors.ClientError,
        ),
        (
            GatewayError("bad_request", "bad field", param="x"),
            400,
            "INVALID_ARGUMENT",
            genai_errors.ClientError,
        ),
        (
            GatewayError("context_window_exceeded", "too long"),
            400,
            "INVALID_ARGUMENT",
            genai_errors.ClientError,
        ),
        (GatewayError("auth", "no key"), 401, "UNAUTHENTICATED", genai_errors.ClientError),
        (
            GatewayError("auth", "forbidden", status=403),
            403,
            "PERMISSION_DENIED",
            genai_errors.ClientError,
        ),
        (GatewayError("not_found", "no such model"), 404, "NOT_FOUND", genai_errors.ClientError),
        (
            GatewayError("overloaded", "overloaded", status=529),
            503,
            "UNAVAILABLE",
            genai_errors.ServerError,
        ),
        (GatewayError("server_error", "oops"), 500, "INTERNAL", genai_errors.ServerError),
        (
            GatewayError("timeout", "ttfb timeout"),
            504,
            "DEADLINE_EXCEEDED",
            genai_errors.ServerError,
        ),
        (
            GatewayError("bad_request", "precondition", code="FAILED_PRECONDITION"),
            400,
            "FAILED_PRECONDITION",
            genai_errors.ClientError,
        ),
    ],
)
def test_build_error_makes_the_sdk_raise(
    error: GatewayError, status: int, google_status: str, exception: type[genai_errors.APIError]
) -> None:
    got_status, body = codec.build_error(error)
    assert got_status == status
    assert body["error"]["status"] == google_status and body["error"]["code"] == status
    client = genai_client(replay(status, body))
    with pytest.raises(exception) as caught:
        client.models.generate_content(model="m", contents="hi")
    assert caught.value.code == status
    assert caught.value.message == error.message
    assert caught.value.status == google_status
    if error.retry_after is not None:
        assert body["error"]["details"] == [
            {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "17s"}
        ]
        assert codec.parse_error(status, body, {}).retry_after == 17.0


def test_error_round_trip_keeps_kind() -> None:
    for name in (
        "error_429.json",
        "error_400_context.json",
        "error_403.json",
        "error_503.json",
        "error_504.json",
    ):
        body = load_fixture("gemini", name)
        status = body["error"]["code"]
        error = codec.parse_error(status, body, {})
        again = codec.parse_error(*codec.build_error(error), {})
        assert (again.kind, again.status, again.message) == (
            error.kind,
            error.status,
            error.message,
        )


def test_fixture_directory_is_complete() -> None:
    assert Path(FIXTURE_DIR).is_dir()
    assert len(REQUESTS) >= 10 and len(RESPONSES) >= 6 and len(STREAMS) >= 4


def test_foreign_reasoning_text_is_shown_only_with_include_thoughts() -> None:
    events: list[Event] = [
        ReasoningDelta(index=0, text="thinking hard"),
        BlockStop(index=0),
        TextDelta(index=1, text="answer"),
        Finish(),
    ]
    hidden = encode(events, Request(model="m"))
    assert b"thinking hard" not in hidden
    wanted = Request(model="m", reasoning=ReasoningConfig(include_thoughts=True))
    shown = chunks(encode(events, wanted))
    assert shown[0]["candidates"][0]["content"]["parts"] == [
        {"text": "thinking hard", "thought": True}
    ]
    response = Response(
        id="r", model="m", content=[Reasoning(text="thinking hard"), Text(text="answer")]
    )
    assert codec.build_response(response, Request(model="m"))["candidates"][0]["content"][
        "parts"
    ] == [{"text": "answer"}]
    assert len(codec.build_response(response, wanted)["candidates"][0]["content"]["parts"]) == 2


def test_model_in_the_body_is_read_but_never_written() -> None:
    request = codec.parse_request(
        {"model": "models/gemini-2.5-flash", "contents": [{"parts": [{"text": "x"}]}]}
    )
    assert request.model == "gemini-2.5-flash"
    assert "model" not in codec.build_request(request)


def test_malformed_upstream_response_is_a_server_error() -> None:
    with pytest.raises(GatewayError) as caught:
        codec.parse_response({"candidates": [{"content": {"parts": ["oops"]}}]})
    assert (
        caught.value.kind == "server_error"
        and "candidates[0].content.parts[0]" in caught.value.message
    )


@pytest.mark.parametrize(
    "data",
    [
        "{}",
        "[]",
        '"text"',
        '{"candidates": null}',
        '{"candidates": [null]}',
        '{"candidates": [{"content": null}]}',
        '{"candidates": [{"content": {"parts": [1, null, {"functionCall": {"args": [1]}}]}}]}',
        '{"candidates": [{"content": {"parts": [{"thought": true}]}, "finishReason": 7}]}',
        '{"usageMetadata": {"promptTokenCount": "x", "thoughtsTokenCount": true}}',
        '{"error": "plain string"}',
    ],
)
def test_decoder_tolerates_odd_chunks(data: str) -> None:
    decoder = codec.stream_decoder()
    events = decoder.feed(SSEDecoder().feed(f"data: {data}\n\n".encode())[0]) + decoder.close()
    assert all(not isinstance(e, Finish) for e in events)
