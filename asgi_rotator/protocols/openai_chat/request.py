"""OpenAI Chat Completions requests: a client's body parsed and validated into the unified
``Request`` (errors name the field), and the unified ``Request`` built into the provider's
body."""

from __future__ import annotations

import mimetypes
import re
from collections.abc import Iterable, Mapping
from typing import Any

import msgspec

from ...errors import GatewayError
from ...unified import (
    File,
    Image,
    Message,
    OutputFormat,
    Part,
    Reasoning,
    ReasoningConfig,
    Request,
    Text,
    Tool,
    ToolCall,
    ToolChoice,
    ToolResult,
)
from .._common import (
    budget_to_effort,
    expect_bool,
    expect_dict,
    expect_int,
    expect_list,
    expect_model,
    expect_number,
    expect_str,
    new_id,
)
from ..base import bad_request
from ..unknown_fields import (
    marker_key,
    marks_of,
    own_marks,
    unknown_fields,
    wire_fields,
    write_back,
)

MARK = marker_key("openai_chat")

_REQUEST_FIELDS = frozenset(
    {
        "model",
        "messages",
        "stream",
        "stream_options",
        "tools",
        "functions",
        "tool_choice",
        "function_call",
        "parallel_tool_calls",
        "max_tokens",
        "max_completion_tokens",
        "temperature",
        "top_p",
        "stop",
        "seed",
        "presence_penalty",
        "frequency_penalty",
        "reasoning_effort",
        "response_format",
        "metadata",
        "user",
    }
)
_NUMBER_FIELDS = ("temperature", "top_p", "presence_penalty", "frequency_penalty")
# What ``_RequestParser._tools`` reads; a body with none of them has no tools to parse.
_TOOLING_FIELDS = frozenset(
    {"tools", "functions", "parallel_tool_calls", "tool_choice", "function_call"}
)
_MESSAGE_FIELDS = frozenset(
    {"role", "content", "name", "tool_calls", "function_call", "tool_call_id"}
    | {"reasoning_content", "reasoning"}
)
_ROLES = frozenset({"system", "developer", "user", "assistant", "tool", "function"})
# Content part types each role accepts (API reference, "Create chat completion" > messages).
_PART_TYPES = {
    "system": frozenset({"text"}),
    "developer": frozenset({"text"}),
    "tool": frozenset({"text"}),
    "function": frozenset({"text"}),
    "user": frozenset({"text", "image_url", "input_audio", "file"}),
    "assistant": frozenset({"text", "refusal"}),
}
_REASONING_FIELDS = ("reasoning_content", "reasoning")  # DeepSeek/vLLM, then OpenRouter

# The fields each shape names, for ``unknown_fields`` (made once, not per call).
_NAMED_MESSAGE_FIELDS = frozenset({"role", "content", "name"})
_ASSISTANT_FIELDS = _MESSAGE_FIELDS - {"tool_call_id"}
_TOOL_MESSAGE_FIELDS = frozenset({"role", "content", "tool_call_id"})
_PART_FIELDS = {
    kind: frozenset({"type", kind}) for kind in frozenset().union(*_PART_TYPES.values())
}
_IMAGE_URL_FIELDS = frozenset({"url", "detail"})
_AUDIO_FIELDS = frozenset({"data", "format"})
_FILE_FIELDS = frozenset({"file_data", "file_id", "filename"})
_TOOL_FIELDS = frozenset({"type", "function"})
_FUNCTION_FIELDS = frozenset({"name", "description", "parameters", "strict"})
_JSON_SCHEMA_FIELDS = frozenset({"name", "schema", "strict", "description"})
_RESPONSE_FORMAT_FIELDS = frozenset({"type", "json_schema"})
_CUSTOM_CALL_FIELDS = frozenset({"id", "type", "custom"})
_CUSTOM_FIELDS = frozenset({"name", "input"})
_CALL_FIELDS = frozenset({"id", "type", "function"})
_CALL_FUNCTION_FIELDS = frozenset({"name", "arguments"})

_DATA_URL = re.compile(r"data:([^;,]+);base64,(.*)", re.DOTALL)
_AUDIO_FORMAT_MEDIA = {"wav": "audio/wav", "mp3": "audio/mpeg"}
_MEDIA_AUDIO_FORMAT = {
    "audio/wav": "wav",
    "audio/x-wav": "wav",
    "audio/wave": "wav",
    "audio/mpeg": "mp3",
    "audio/mp3": "mp3",
}
# Base64 prefixes of image magic numbers, for inline images that arrive without a media type.
_IMAGE_MAGIC = {
    "/9j/": "image/jpeg",
    "iVBOR": "image/png",
    "R0lG": "image/gif",
    "UklG": "image/webp",
}

_encode = msgspec.json.Encoder().encode


def parse_request(
    name: str, body: Any, *, model: str | None = None, stream: bool | None = None
) -> Request:
    return _RequestParser(name).parse(body, model=model, stream=stream)


def build_request(name: str, max_tokens_field: str, request: Request) -> dict[str, Any]:
    same = request.origin == name
    marks = marks_of(request.extra, MARK) if same else {}
    out: dict[str, Any] = {
        "model": request.model,
        "messages": _RequestBuilder(name, same).messages(request, marks),
    }
    if request.stream:
        out["stream"] = True
    elif marks.get("stream") is False:
        out["stream"] = False
    include_usage = request.include_usage
    if include_usage is None and request.stream and (not same or request.include_cost):
        # The gateway needs usage for a client of another protocol, or to price it
        include_usage = True
    if include_usage is not None or "stream_options" in marks:
        stream_options = dict(marks.get("stream_options", {}))
        if include_usage is not None:
            stream_options["include_usage"] = include_usage
        out["stream_options"] = stream_options
    _build_tools(request, same, marks, out)
    if request.max_tokens is not None:
        out[marks.get("max_tokens_field", max_tokens_field)] = request.max_tokens
    for key in _NUMBER_FIELDS:
        value = getattr(request, key)
        if value is not None:
            out[key] = value
    if request.seed is not None:
        out["seed"] = request.seed
    if request.stop is not None:
        stop = request.stop
        out["stop"] = stop[0] if marks.get("stop_string") and len(stop) == 1 else stop
    effort = _effort(request.reasoning)
    if effort is not None:
        out["reasoning_effort"] = effort
    if request.output is not None:
        out["response_format"] = _build_response_format(request.output, marks)
    # Chat metadata values must be strings (API reference, "Metadata").
    if request.metadata is not None and (
        same or all(isinstance(v, str) for v in request.metadata.values())
    ):
        out["metadata"] = request.metadata
    if request.user is not None:
        out["user"] = request.user
    if same:
        write_back(out, request.extra, MARK)
    return out


def _build_tools(request: Request, same: bool, marks: dict[str, Any], out: dict[str, Any]) -> None:
    tools: list[dict[str, Any]] = []
    functions: list[dict[str, Any]] = []
    for tool in request.tools or ():
        if tool.type != "function":
            # A built-in or custom tool only goes back to the protocol it came from.
            if same:
                tools.append(wire_fields(tool.extra, MARK))
            continue
        tool_marks = marks_of(tool.extra, MARK) if same else {}
        fn: dict[str, Any] = {"name": tool.name}
        if tool.description is not None:
            fn["description"] = tool.description
        if tool.parameters is not None:
            fn["parameters"] = tool.parameters
        if tool.strict is not None:
            fn["strict"] = tool.strict
        if tool_marks.get("legacy"):
            functions.append(_with_extra(fn, tool.extra))
            continue
        write_back(fn, tool_marks.get("function", {}), MARK)
        tools.append(_with_extra({"type": "function", "function": fn}, tool.extra, same))
    if tools:
        out["tools"] = tools
    if functions:
        out["functions"] = functions
    if not same and not tools:
        return  # OpenAI refuses tool_choice / parallel_tool_calls without tools
    if request.parallel_tool_calls is not None:
        out["parallel_tool_calls"] = request.parallel_tool_calls
    choice = request.tool_choice
    if choice is None:
        return
    raw = marks.get("tool_choice")
    if raw is not None and _tool_choice_of(raw) == choice:
        out["function_call" if marks.get("legacy_choice") else "tool_choice"] = raw
    elif marks.get("legacy_choice"):
        out["function_call"] = {"name": choice.name} if choice.mode == "tool" else choice.mode
    elif choice.mode == "tool":
        out["tool_choice"] = {"type": "function", "function": {"name": choice.name or ""}}
    else:
        out["tool_choice"] = choice.mode


class _RequestParser:
    """One request's parse: remembers tool-call ids so a tool result can be matched."""

    def __init__(self, origin: str) -> None:
        self.origin = origin
        self.call_names: dict[str, str] = {}  # tool_call id -> function name
        self.legacy_calls: dict[str, str] = {}  # function name -> id of its latest call

    def parse(self, body: Any, *, model: str | None, stream: bool | None) -> Request:
        body = expect_dict(body, "")
        marks: dict[str, Any] = {}
        model_name = _get(body, "model")
        if model_name is None:
            if model is None:
                raise bad_request("model", "is required")
            model_name = model
        model_name = expect_model(model_name)
        if body.get("messages") is None:
            raise bad_request("messages", "is required")
        raw_messages = expect_list(body["messages"], "messages", non_empty=True)
        system, messages, system_marks = self._messages(raw_messages)
        if system_marks:
            marks["system"] = system_marks
        request = Request(model=model_name, messages=messages, system=system, origin=self.origin)
        if stream is not None:
            request.stream = stream
        elif "stream" in body and (value := _get(body, "stream")) is not None:
            request.stream = expect_bool(value, "stream")
            if value is False:
                marks["stream"] = False
        if "stream_options" in body and (options := _get(body, "stream_options")) is not None:
            options = dict(expect_dict(options, "stream_options"))
            if (include := options.pop("include_usage", None)) is not None:
                request.include_usage = expect_bool(include, "stream_options.include_usage")
            marks["stream_options"] = options
        if not body.keys().isdisjoint(_TOOLING_FIELDS):
            self._tools(body, request, marks)
        self._sampling(body, request, marks)
        if "reasoning_effort" in body and (effort := _get(body, "reasoning_effort")) is not None:
            effort = expect_str(effort, "reasoning_effort")
            request.reasoning = ReasoningConfig(
                effort=effort, enabled=False if effort == "none" else None
            )
        if "response_format" in body and (fmt := _get(body, "response_format")) is not None:
            request.output = _parse_response_format(fmt, marks)
        if "metadata" in body and (metadata := _get(body, "metadata")) is not None:
            request.metadata = expect_dict(metadata, "metadata")
        if "user" in body and (user := _get(body, "user")) is not None:
            request.user = expect_str(user, "user")
        extra = unknown_fields(body, _REQUEST_FIELDS, keep_null=True, keep_empty=True)
        # OpenRouter's opt-in for the cost in the usage object.  Answered by the gateway and
        # not sent on: OpenAI refuses parameters it does not know.
        usage_option = extra.get("usage")
        if isinstance(usage_option, dict) and set(usage_option) == {"include"}:
            request.include_cost = expect_bool(usage_option["include"], "usage.include")
            del extra["usage"]
        if "function_call" in body and _get(body, "tool_choice") is not None:
            extra["function_call"] = body["function_call"]  # both given: tool_choice rules
        if "max_tokens" in body and "max_completion_tokens" in body:
            extra["max_tokens"] = body["max_tokens"]  # both given: the newer one is the value
        if marks:
            extra[MARK] = marks
        request.extra = extra
        return request

    def _sampling(self, body: dict[str, Any], request: Request, marks: dict[str, Any]) -> None:
        for key in ("max_completion_tokens", "max_tokens"):
            if key in body and (value := _get(body, key)) is not None:
                request.max_tokens = expect_int(value, key, minimum=1)
                marks["max_tokens_field"] = key
                break
        for key in _NUMBER_FIELDS:
            if key in body and (value := _get(body, key)) is not None:
                setattr(request, key, expect_number(value, key))
        if "seed" in body and (seed := _get(body, "seed")) is not None:
            request.seed = expect_int(seed, "seed")
        stop = _get(body, "stop") if "stop" in body else None
        if isinstance(stop, str):
            request.stop = [stop]
            marks["stop_string"] = True
        elif stop is not None:
            request.stop = [
                expect_str(s, f"stop[{i}]") for i, s in enumerate(expect_list(stop, "stop"))
            ]

    def _tools(self, body: dict[str, Any], request: Request, marks: dict[str, Any]) -> None:
        tools: list[Tool] = []
        for i, raw in enumerate(_list_or_none(body, "tools")):
            tools.append(_parse_tool(raw, f"tools[{i}]"))
        for i, raw in enumerate(_list_or_none(body, "functions")):
            tool = _parse_function(raw, f"functions[{i}]")
            tool.extra[MARK] = {"legacy": True}
            tools.append(tool)
        if tools:
            request.tools = tools
        if (parallel := _get(body, "parallel_tool_calls")) is not None:
            request.parallel_tool_calls = expect_bool(parallel, "parallel_tool_calls")
        key = "tool_choice"
        raw_choice = _get(body, key)
        if raw_choice is None and _get(body, "function_call") is not None:
            key = "function_call"
            raw_choice = body[key]
            marks["legacy_choice"] = True
        if raw_choice is None:
            return
        choice = _tool_choice_of(raw_choice)
        if choice is None:
            raise bad_request(key, f"unsupported value {_short(raw_choice)}")
        request.tool_choice = choice
        if not isinstance(raw_choice, str):
            marks["tool_choice"] = raw_choice

    def _messages(
        self, raw_messages: list[Any]
    ) -> tuple[list[Text], list[Message], list[dict[str, Any]]]:
        system: list[Text] = []
        system_marks: list[dict[str, Any]] = []
        messages: list[Message] = []
        for i, raw in enumerate(raw_messages):
            path = f"messages[{i}]"
            raw = expect_dict(raw, path)
            role = raw.get("role")
            if not isinstance(role, str) or role not in _ROLES:
                role = expect_str(role, f"{path}.role")
                raise bad_request(f"{path}.role", f"unknown role {role!r}")
            if role in ("system", "developer") and not messages:
                texts, form = self._content(raw, role, path)
                desc: dict[str, Any] = {"role": role, "n": len(texts), **form}
                if "name" in raw and (name := _get(raw, "name")) is not None:
                    desc["name"] = expect_str(name, f"{path}.name")
                if extra := unknown_fields(
                    raw, _NAMED_MESSAGE_FIELDS, keep_null=True, keep_empty=True
                ):
                    desc["extra"] = extra
                system.extend(t for t in texts if isinstance(t, Text))
                system_marks.append(desc)
            elif role == "assistant":
                messages.append(self._assistant(raw, path))
            elif role in ("tool", "function"):
                messages.append(self._tool_result(raw, role, path))
            else:
                parts, form = self._content(raw, role, path)
                if role != "user":
                    form["role"] = role  # a system turn inside the conversation, kept in place
                messages.append(self._message("user", raw, parts, form, path))
        return system, messages, system_marks

    def _message(
        self,
        role: Any,
        raw: dict[str, Any],
        parts: list[Part],
        marks: dict[str, Any],
        path: str,
        known: frozenset[str] = _NAMED_MESSAGE_FIELDS,
    ) -> Message:
        message = Message(
            role=role,
            content=parts,
            extra=unknown_fields(raw, known, keep_null=True, keep_empty=True),
        )
        if "name" in raw and (name := _get(raw, "name")) is not None:
            message.name = expect_str(name, f"{path}.name")
        if marks:
            message.extra[MARK] = marks
        return message

    def _content(
        self, raw: dict[str, Any], role: str, path: str
    ) -> tuple[list[Part], dict[str, Any]]:
        """Parts of ``content`` and the marker for its spelling (string or array)."""
        content = raw.get("content")
        if content is None:
            if role not in ("assistant", "function"):  # both may be null
                raise bad_request(f"{path}.content", "is required")
            return [], {}
        if content == []:
            return [], {}  # kept verbatim in extra
        if isinstance(content, str):
            return ([Text(text=content)] if content else []), {"content": "string"}
        parts = expect_list(content, f"{path}.content")
        return [_parse_part(part, f"{path}.content[{j}]", role) for j, part in enumerate(parts)], {}

    def _assistant(self, raw: dict[str, Any], path: str) -> Message:
        parts, marks = self._content(raw, "assistant", path)
        reasoning, reasoning_rest = _parse_reasoning(raw, self.origin)
        parts[:0] = reasoning
        calls = _parse_tool_calls(raw, path, strict=True)
        for call in calls:
            self.call_names[call.id] = call.name
            if marks_of(call.extra, MARK).get("legacy"):
                self.legacy_calls[call.name] = call.id
        parts.extend(calls)
        message = self._message("assistant", raw, parts, marks, path, _ASSISTANT_FIELDS)
        message.extra.update(reasoning_rest)
        return message

    def _tool_result(self, raw: dict[str, Any], role: str, path: str) -> Message:
        parts, marks = self._content(raw, role, path)
        texts: list[Text | Image | File] = [p for p in parts if isinstance(p, Text)]
        if role == "function":
            name = expect_str(raw.get("name"), f"{path}.name")
            call_id = self.legacy_calls.get(name)
            if call_id is None:
                raise bad_request(f"{path}.name", f"no matching function call named {name!r}")
            marks["role"] = "function"
            result = ToolResult(tool_call_id=call_id, name=name, content=texts)
            known = _NAMED_MESSAGE_FIELDS
        else:
            call_id = expect_str(raw.get("tool_call_id"), f"{path}.tool_call_id")
            if call_id not in self.call_names:
                raise bad_request(f"{path}.tool_call_id", f"no matching tool call {call_id!r}")
            result = ToolResult(tool_call_id=call_id, name=self.call_names[call_id], content=texts)
            known = _TOOL_MESSAGE_FIELDS
        message = Message(
            role="tool",
            content=[result],
            extra=unknown_fields(raw, known, keep_null=True, keep_empty=True),
        )
        if marks:
            message.extra[MARK] = marks
        return message


def _parse_part(part: Any, path: str, role: str) -> Text | Image | File:
    part = expect_dict(part, path)
    kind = expect_str(part.get("type"), f"{path}.type")
    if kind not in _PART_TYPES[role]:
        if kind in _PART_TYPES["user"] | _PART_TYPES["assistant"]:
            raise bad_request(f"{path}.type", f"{kind!r} is not allowed in a {role} message")
        raise bad_request(f"{path}.type", f"unknown content part type {kind!r}")
    extra = unknown_fields(part, _PART_FIELDS[kind], keep_null=True, keep_empty=True)
    if kind in ("text", "refusal"):
        text = Text(text=expect_str(part.get(kind), f"{path}.{kind}"), extra=extra)
        if kind == "refusal":
            text.extra[MARK] = {"refusal": "part"}
        return text
    body = expect_dict(part.get(kind), f"{path}.{kind}")
    if kind == "image_url":
        url = expect_str(body.get("url"), f"{path}.image_url.url")
        image = Image(extra=extra)
        if match := _DATA_URL.fullmatch(url):
            image.media_type, image.data = match.group(1), match.group(2)
        else:
            image.url = url
        if (detail := _get(body, "detail")) is not None:
            image.detail = expect_str(detail, f"{path}.image_url.detail")
        _mark_native(
            image.extra,
            "image_url",
            unknown_fields(body, _IMAGE_URL_FIELDS, keep_null=True, keep_empty=True),
        )
        return image
    if kind == "input_audio":
        data = expect_str(body.get("data"), f"{path}.input_audio.data")
        fmt = expect_str(body.get("format"), f"{path}.input_audio.format")
        media = _AUDIO_FORMAT_MEDIA.get(fmt, f"audio/{fmt}")
        extra[MARK] = {
            "input_audio": unknown_fields(body, _AUDIO_FIELDS, keep_null=True, keep_empty=True)
        }
        return File(data=data, media_type=media, extra=extra)
    # "file": inline ``file_data`` (a data URL) or an uploaded ``file_id``.
    file = File(extra=extra)
    if (data := _get(body, "file_data")) is not None:
        data = expect_str(data, f"{path}.file.file_data")
        if match := _DATA_URL.fullmatch(data):
            file.media_type, file.data = match.group(1), match.group(2)
        else:
            file.data = data
            _mark_native(file.extra, "raw_data", True)
    if (file_id := _get(body, "file_id")) is not None:
        file.file_id = expect_str(file_id, f"{path}.file.file_id")
    if (filename := _get(body, "filename")) is not None:
        file.filename = expect_str(filename, f"{path}.file.filename")
    if file.data is None and file.file_id is None:
        raise bad_request(f"{path}.file", "needs file_data or file_id")
    _mark_native(
        file.extra, "file", unknown_fields(body, _FILE_FIELDS, keep_null=True, keep_empty=True)
    )
    return file


def _parse_tool(raw: Any, path: str) -> Tool:
    raw = expect_dict(raw, path)
    kind = expect_str(raw.get("type"), f"{path}.type")
    if kind != "function":
        # Custom and future tool types keep their native body and go only to this protocol.
        native = raw.get(kind)
        name = native.get("name") if isinstance(native, dict) else None
        return Tool(name=name if isinstance(name, str) else kind, type=kind, extra=dict(raw))
    tool = _parse_function(raw.get("function"), f"{path}.function")
    fn_extra, tool.extra = (
        tool.extra,
        unknown_fields(raw, _TOOL_FIELDS, keep_null=True, keep_empty=True),
    )
    if fn_extra:
        tool.extra[MARK] = {"function": fn_extra}
    return tool


def _parse_function(raw: Any, path: str) -> Tool:
    raw = expect_dict(raw, path)
    tool = Tool(
        name=expect_str(raw.get("name"), f"{path}.name"),
        extra=unknown_fields(raw, _FUNCTION_FIELDS, keep_null=True, keep_empty=True),
    )
    if (description := _get(raw, "description")) is not None:
        tool.description = expect_str(description, f"{path}.description")
    if (parameters := _get(raw, "parameters")) is not None:
        tool.parameters = expect_dict(parameters, f"{path}.parameters")
    if (strict := _get(raw, "strict")) is not None:
        tool.strict = expect_bool(strict, f"{path}.strict")
    return tool


def _tool_choice_of(raw: Any) -> ToolChoice | None:
    """The unified choice for a ``tool_choice`` (or legacy ``function_call``) value."""
    if raw in ("auto", "none", "required"):
        return ToolChoice(mode=raw)
    if not isinstance(raw, dict):
        return None
    kind = raw.get("type")
    if kind is None and isinstance(raw.get("name"), str):  # legacy {"name": ...}
        return ToolChoice(mode="tool", name=raw["name"])
    named = raw.get(kind) if isinstance(kind, str) else None
    if isinstance(named, dict) and isinstance(named.get("name"), str):  # function / custom
        return ToolChoice(mode="tool", name=named["name"])
    if kind == "allowed_tools" and isinstance(named, dict):
        # Approximated by its mode; the tool subset only survives a same-protocol rebuild.
        mode = named.get("mode")
        return ToolChoice(mode=mode if mode in ("auto", "required") else "auto")
    return None


def _parse_response_format(raw: Any, marks: dict[str, Any]) -> OutputFormat:
    raw = expect_dict(raw, "response_format")
    kind = expect_str(raw.get("type"), "response_format.type")
    if kind == "text":
        return OutputFormat(type="text")
    if kind == "json_object":
        return OutputFormat(type="json_object")
    if kind != "json_schema":
        raise bad_request("response_format.type", f"unknown response format {kind!r}")
    spec = expect_dict(raw.get("json_schema"), "response_format.json_schema")
    output = OutputFormat(name=expect_str(spec.get("name"), "response_format.json_schema.name"))
    if (schema := _get(spec, "schema")) is not None:
        output.schema = expect_dict(schema, "response_format.json_schema.schema")
    if (strict := _get(spec, "strict")) is not None:
        output.strict = expect_bool(strict, "response_format.json_schema.strict")
    if (description := _get(spec, "description")) is not None:
        output.description = expect_str(description, "response_format.json_schema.description")
    if extra := unknown_fields(spec, _JSON_SCHEMA_FIELDS, keep_null=True, keep_empty=True):
        marks["json_schema"] = extra
    if extra := unknown_fields(raw, _RESPONSE_FORMAT_FIELDS, keep_null=True, keep_empty=True):
        marks["response_format"] = extra
    return output


def _build_response_format(output: OutputFormat, marks: dict[str, Any]) -> dict[str, Any]:
    if output.type != "json_schema":
        return {"type": output.type}
    # ``name`` is required by the API reference; a nameless schema from elsewhere gets one.
    spec: dict[str, Any] = {"name": output.name or "response"}
    for key in ("description", "schema", "strict"):
        if (value := getattr(output, key)) is not None:
            spec[key] = value
    write_back(spec, marks.get("json_schema", {}), MARK)
    return _with_extra(
        {"type": "json_schema", "json_schema": spec}, marks.get("response_format", {})
    )


def _effort(config: ReasoningConfig | None) -> str | None:
    """``reasoning_effort`` for a unified config: the effort, else derived from a budget.
    Disabled thinking from another protocol sends nothing: ``none`` is not accepted by
    every reasoning model, and the model default is the closest safe reading."""
    if config is None:
        return None
    if config.enabled is False:
        # An effort beside disabled thinking (Anthropic ``output_config.effort``) is not a
        # reasoning level; only this protocol's own ``none`` goes back.
        return "none" if config.effort == "none" else None
    if config.effort is not None:
        return config.effort
    if config.budget_tokens is not None:
        return budget_to_effort(config.budget_tokens)
    return None


class _RequestBuilder:
    def __init__(self, origin: str, same: bool) -> None:
        self.origin = origin
        self.same = same

    def messages(self, request: Request, marks: dict[str, Any]) -> list[dict[str, Any]]:
        out = self._system(request.system, marks.get("system"))
        for i, message in enumerate(request.messages):
            if message.role != "assistant":
                out.extend(self._user_or_tool(message, f"messages[{i}]"))
                continue
            marks = marks_of(message.extra, MARK) if self.same else {}
            wire = _build_assistant(message.content, self.origin, self.same, marks)
            if message.name is not None:
                wire["name"] = message.name
            out.append(_with_extra(wire, message.extra, self.same))
        return out

    def _system(
        self, system: list[Text], descs: list[dict[str, Any]] | None
    ) -> list[dict[str, Any]]:
        if not system and not descs:
            return []
        if descs is None or sum(d["n"] for d in descs) != len(system):
            # Another protocol's (or a changed) system prompt: one system message.
            descs = [{"role": "system", "n": len(system)}]
            if len(system) == 1:
                descs[0]["content"] = "string"
        out: list[dict[str, Any]] = []
        start = 0
        for desc in descs:
            texts = system[start : start + desc["n"]]
            start += desc["n"]
            message: dict[str, Any] = {
                "role": desc["role"],
                "content": _build_content(texts, desc.get("content") == "string", self.same),
            }
            if "name" in desc:
                message["name"] = desc["name"]
            out.append(_with_extra(message, desc.get("extra", {}), self.same))
        return out

    def _user_or_tool(self, message: Message, path: str) -> list[dict[str, Any]]:
        """Each tool result is its own ``tool`` message; the other parts make a user message
        after them (an Anthropic user turn can hold both)."""
        marks = marks_of(message.extra, MARK) if self.same else {}
        results: list[ToolResult] = []
        rest: list[Text | Image | File] = []
        for p in message.content:
            if isinstance(p, ToolResult):
                results.append(p)
            elif isinstance(p, (Text, Image, File)):
                rest.append(p)
        out: list[dict[str, Any]] = []
        for result in results:
            # Chat tool messages carry text only: images and files in a result are dropped.
            texts = [p for p in result.content if isinstance(p, Text)]
            content = _build_content(texts, marks.get("content") == "string", self.same)
            if marks.get("role") == "function":
                out.append({"role": "function", "name": result.name, "content": content})
            else:
                out.append(
                    {"role": "tool", "tool_call_id": result.tool_call_id, "content": content}
                )
        if rest or not results:
            user: dict[str, Any] = {"role": marks.get("role", "user")}
            string = marks.get("content") == "string"
            if rest or string or not self.same:
                texts_only = all(isinstance(p, Text) for p in rest)
                if texts_only and (string or (not self.same and len(rest) <= 1)):
                    # A string, as sent (or as is usual): the parts need no building.
                    user["content"] = "".join([p.text for p in rest])  # type: ignore[union-attr]
                else:
                    user["content"] = [
                        self._part(p, f"{path}.content[{j}]") for j, p in enumerate(rest)
                    ]
            if message.name is not None:
                user["name"] = message.name
            out.append(user)
        if self.same and len(out) == 1:  # a chat message is one unified message
            write_back(out[0], message.extra, MARK)
        return out

    def _part(self, part: Text | Image | File, path: str) -> dict[str, Any]:
        marks = marks_of(part.extra, MARK) if self.same else {}
        if isinstance(part, Text):
            wire: dict[str, Any] = {"type": "text", "text": part.text}
        elif isinstance(part, Image):
            url = part.url
            if url is None and part.data is None:
                # Only another provider's file id (OpenAI Responses input_image) gets here.
                raise bad_request(
                    path, "OpenAI Chat Completions takes images inline or by URL, not by file id"
                )
            if url is None:
                media = part.media_type or _sniff_image(part.data or "")
                url = f"data:{media};base64,{part.data or ''}"
            image_url: dict[str, Any] = {"url": url}
            if part.detail is not None:
                image_url["detail"] = part.detail
            wire = {
                "type": "image_url",
                "image_url": _with_extra(image_url, marks.get("image_url", {})),
            }
        else:
            wire = _build_file(part, marks, path, self.same)
        return _with_extra(wire, part.extra, self.same)


def _build_file(part: File, marks: dict[str, Any], path: str, same: bool) -> dict[str, Any]:
    fmt = _MEDIA_AUDIO_FORMAT.get(part.media_type or "")
    if part.data is not None and ("input_audio" in marks or fmt is not None):
        audio = {"data": part.data, "format": fmt or (part.media_type or "").rpartition("/")[2]}
        return {
            "type": "input_audio",
            "input_audio": _with_extra(audio, marks.get("input_audio", {})),
        }
    if part.data is None and part.file_id is None:
        raise bad_request(
            path, "OpenAI Chat Completions takes files inline or by file_id, not by URL"
        )
    file: dict[str, Any] = {}
    if part.data is not None:
        media = part.media_type or "application/pdf"
        file["file_data"] = (
            part.data if marks.get("raw_data") else f"data:{media};base64,{part.data}"
        )
        if part.filename is None and not same:
            # OpenAI wants a filename with file_data; a document from elsewhere may have none.
            file["filename"] = f"document{mimetypes.guess_extension(media) or ''}"
    if part.filename is not None:
        file["filename"] = part.filename
    if part.file_id is not None:
        file["file_id"] = part.file_id
    return {"type": "file", "file": _with_extra(file, marks.get("file", {}))}


def _build_assistant(
    content: Iterable[Part],
    origin: str,
    same: bool,
    marks: dict[str, Any],
    *,
    response: bool = False,
) -> dict[str, Any]:
    """An assistant message, for a request's history or a response's choice."""
    message: dict[str, Any] = {"role": "assistant"}
    texts: list[Text] = []
    refusals: list[str] = []
    reasoning: list[Reasoning] = []
    calls: list[ToolCall] = []
    for part in content:
        if isinstance(part, Text):
            if same and marks_of(part.extra, MARK).get("refusal") == "field":
                refusals.append(part.text)
            else:
                texts.append(part)
        elif isinstance(part, Reasoning):
            # A response shows any reasoning; a request echoes only this protocol's own.
            if part.text and (response or part.source == origin):
                reasoning.append(part)
        elif isinstance(part, ToolCall):
            calls.append(part)
    if not same:
        # Consecutive text blocks join as a stream would; no text is a null content.
        message["content"] = "".join(t.text for t in texts) if texts else None
    elif marks.get("content") == "string":
        message["content"] = "".join(t.text for t in texts)
    elif texts:
        message["content"] = [_text_part(t) for t in texts]
    # else: the client's null, [] or absent content comes back from extra
    if refusals:
        message["refusal"] = "".join(refusals)
    if reasoning:
        field = (
            marks_of(reasoning[0].extra, MARK).get("field", "reasoning_content")
            if same
            else "reasoning_content"
        )
        message[field] = "".join(r.text for r in reasoning)
        if same and marks_of(reasoning[0].extra, MARK).get("both"):
            message["reasoning"] = message["reasoning_content"]
    legacy = [c for c in calls if same and marks_of(c.extra, MARK).get("legacy")]
    tool_calls = [_build_tool_call(c, same) for c in calls if not any(c is x for x in legacy)]
    if tool_calls:
        message["tool_calls"] = tool_calls
    if legacy:
        function_call = {"name": legacy[0].name, "arguments": legacy[0].arguments}
        message["function_call"] = _with_extra(function_call, legacy[0].extra)
    return message


def _build_tool_call(call: ToolCall, same: bool) -> dict[str, Any]:
    marks = marks_of(call.extra, MARK) if same else {}
    if "custom" in marks:
        custom = _with_extra({"name": call.name, "input": call.arguments}, marks["custom"])
        return _with_extra({"id": call.id, "type": "custom", "custom": custom}, call.extra)
    fn = _with_extra({"name": call.name, "arguments": call.arguments}, marks.get("function", {}))
    wire: dict[str, Any] = {"id": call.id, "type": "function", "function": fn}
    if marks.get("no_type"):
        del wire["type"]
    return _with_extra(wire, call.extra, same)


def _text_part(text: Text) -> dict[str, Any]:
    if marks_of(text.extra, MARK).get("refusal") == "part":
        return _with_extra({"type": "refusal", "refusal": text.text}, text.extra)
    return _with_extra({"type": "text", "text": text.text}, text.extra)


def _build_content(texts: list[Text], as_string: bool, same: bool) -> str | list[dict[str, Any]]:
    if not same:
        as_string = as_string or len(texts) <= 1
    if as_string:
        return "".join([t.text for t in texts])
    return [_with_extra({"type": "text", "text": t.text}, t.extra, same) for t in texts]


def _sniff_image(data: str) -> str:
    for prefix, media in _IMAGE_MAGIC.items():
        if data.startswith(prefix):
            return media
    return "image/png"


def _parse_reasoning(message: Mapping[str, Any], origin: str) -> tuple[list[Part], dict[str, Any]]:
    """The reasoning part of a message, and the reasoning fields it did not consume."""
    if "reasoning_content" not in message and "reasoning" not in message:
        return [], {}  # the common case: no reasoning at all
    texts = {
        k: message[k] for k in _REASONING_FIELDS if isinstance(message.get(k), str) and message[k]
    }
    rest = {k: message[k] for k in _REASONING_FIELDS if k in message}
    if not texts:
        return [], rest
    field = next(iter(texts))
    marks: dict[str, Any] = {"field": field}
    del rest[field]
    if len(texts) == 2 and texts["reasoning"] == texts["reasoning_content"]:
        marks["both"] = True  # vLLM sends both spellings with the same text
        del rest["reasoning"]
    return [Reasoning(text=texts[field], source=origin, extra={MARK: marks})], rest


def _parse_tool_calls(message: Mapping[str, Any], path: str, *, strict: bool) -> list[ToolCall]:
    """``tool_calls`` and the legacy ``function_call`` of an assistant message.  ``strict``
    (a client request) refuses a malformed call; a provider's response is read leniently."""
    calls: list[ToolCall] = []
    raw_calls = _get(message, "tool_calls") or []
    if strict:
        expect_list(raw_calls, f"{path}.tool_calls")
    for j, raw in enumerate(raw_calls if isinstance(raw_calls, list) else ()):
        call_path = f"{path}.tool_calls[{j}]"
        try:
            calls.append(_parse_tool_call(raw, call_path, strict))
        except GatewayError:
            if strict:
                raise
    legacy = _get(message, "function_call")
    if legacy is not None:
        try:
            call = _parse_function_body(legacy, f"{path}.function_call", new_id("call_"), strict)
        except GatewayError:
            if strict:
                raise
        else:
            call.extra[MARK] = {"legacy": True}
            calls.append(call)
    return calls


def _parse_tool_call(raw: Any, path: str, strict: bool) -> ToolCall:
    raw = expect_dict(raw, path)
    kind = raw.get("type", "function")
    call_id = raw.get("id")
    if strict or call_id is not None:
        call_id = expect_str(call_id, f"{path}.id")
    else:
        call_id = new_id("call_")  # a compatible server that sent no id
    if kind == "custom":
        body = expect_dict(raw.get("custom"), f"{path}.custom")
        call = ToolCall(
            id=call_id,
            name=expect_str(body.get("name"), f"{path}.custom.name"),
            arguments=expect_str(body.get("input"), f"{path}.custom.input"),
            extra=unknown_fields(raw, _CUSTOM_CALL_FIELDS, keep_null=True, keep_empty=True),
        )
        call.extra[MARK] = {
            "custom": unknown_fields(body, _CUSTOM_FIELDS, keep_null=True, keep_empty=True)
        }
        return call
    if kind != "function":
        raise bad_request(f"{path}.type", f"unknown tool call type {_short(kind)}")
    call = _parse_function_body(raw.get("function"), f"{path}.function", call_id, strict)
    fn_extra, call.extra = (
        call.extra,
        unknown_fields(raw, _CALL_FIELDS, keep_null=True, keep_empty=True),
    )
    if "type" not in raw:
        call.extra[MARK] = {"no_type": True}
    if fn_extra:
        call.extra.setdefault(MARK, {})["function"] = fn_extra
    return call


def _parse_function_body(raw: Any, path: str, call_id: str, strict: bool) -> ToolCall:
    raw = expect_dict(raw, path)
    arguments = raw.get("arguments", None if strict else "")
    if isinstance(arguments, (dict, list)):
        arguments = _encode(arguments).decode()  # some compatible servers send an object
    return ToolCall(
        id=call_id,
        name=expect_str(raw.get("name"), f"{path}.name"),
        arguments=expect_str(arguments, f"{path}.arguments"),
        extra=unknown_fields(raw, _CALL_FUNCTION_FIELDS, keep_null=True, keep_empty=True),
    )


# The fields whose value is an array: an empty one carries nothing, so it reads as absent and
# goes back verbatim (clients send "tools": [] and "tool_calls": []).  For any other field an
# array is the wrong type, and that field's own check refuses it.
_ARRAY_FIELDS = frozenset({"tools", "functions", "stop", "tool_calls"})


def _get(body: Mapping[str, Any], key: str) -> Any:
    """A field's value, or None when it is absent, null, or an array field's empty array
    (kept in extra)."""
    value = body.get(key)
    if key in _ARRAY_FIELDS and isinstance(value, list) and not value:
        return None
    return value


def _list_or_none(body: Mapping[str, Any], key: str) -> list[Any]:
    """An array field's items; absent, null and [] are no items, anything else is refused."""
    value = _get(body, key)
    return [] if value is None else expect_list(value, key)


def _mark_native(extra: dict[str, Any], key: str, value: Any) -> None:
    if value:
        own_marks(extra, MARK)[key] = value


def _with_extra(out: dict[str, Any], extra: Mapping[str, Any], same: bool = True) -> dict[str, Any]:
    if same:
        write_back(out, extra, MARK)
    return out


def _short(value: Any) -> str:
    text = _encode(value).decode() if not isinstance(value, str) else repr(value)
    return text if len(text) <= 80 else text[:77] + "..."
