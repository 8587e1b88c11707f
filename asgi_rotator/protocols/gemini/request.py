"""Gemini generateContent requests: a client's body parsed and validated into the unified
``Request`` (errors name the field), and the unified ``Request`` built into the provider's
body."""

from __future__ import annotations

import mimetypes
import re
from collections.abc import Mapping
from functools import cache
from typing import Any

import msgspec

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
    effort_to_budget,
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
from ..unknown_fields import marker_key, marks_of, own_marks, unknown_fields, wire_fields

_NAME = "gemini"
_json = msgspec.json.Encoder()

# This codec's markers (``protocols.unknown_fields``), keys of ``extra[MARK]``.
MARK = marker_key(_NAME)
_SNAKE = "snake"  # camelCase names of this struct's fields that came snake_case
_INNER = "inner"  # unknown fields of the nested object (inlineData, functionCall ...)
_RAW_PARTS = "rawParts"  # [[position, part], ...] parts the model cannot name
_SYNTHETIC_ID = "syntheticId"
_NO_ARGS = "noArgs"
_NO_ROLE = "noRole"
_THOUGHT = "thought"  # an empty ``thought: true`` part (not a signature carrier)
_JSON_SCHEMA = "jsonSchema"  # parametersJsonSchema / responseJsonSchema was used
_GROUP = "group"  # index of the ``tools[]`` entry a tool came from
_SYSTEM = "systemInstruction"  # residual fields of these objects (presence = it existed)
_GENERATION = "generationConfig"
_THINKING = "thinkingConfig"
_TOOL_CONFIG = "toolConfig"
_CALLING = "functionCallingConfig"

_DATA_KEYS = ("text", "inlineData", "fileData", "functionCall", "functionResponse")

_CALLING_IN = {"AUTO": "auto", "NONE": "none", "ANY": "required"}
_CALLING_OUT = {"auto": "AUTO", "none": "NONE", "required": "ANY", "tool": "ANY"}

_BASE64_MAGIC = (
    ("iVBOR", "image/png"),
    ("/9j/", "image/jpeg"),
    ("R0lG", "image/gif"),
    ("UklGR", "image/webp"),
    ("JVBER", "application/pdf"),
)
_DATA_URL = re.compile(r"^data:([^;,]+)?(?:;[^,]*)?;base64,(.*)$", re.DOTALL)
_CAMEL_HUMP = re.compile(r"([A-Z])")
_SNAKE_HUMP = re.compile(r"_([a-z0-9])")


@cache
def _snake(name: str) -> str:
    return _CAMEL_HUMP.sub(lambda m: "_" + m.group(1).lower(), name)


@cache
def _camel(name: str) -> str:
    return _SNAKE_HUMP.sub(lambda m: m.group(1).upper(), name)


def _known(*names: str) -> frozenset[str]:
    return frozenset(names) | frozenset(_snake(n) for n in names)


def _get(obj: Mapping[str, Any], name: str, snake: set[str]) -> Any:
    """``obj[name]`` in either spelling; a snake_case hit is remembered in ``snake``."""
    if name in obj:
        return obj[name]
    alt = _snake(name)
    if alt != name and alt in obj:
        snake.add(name)
        return obj[alt]
    return None


def _key(name: str, snake: set[str] | frozenset[str]) -> str:
    return _snake(name) if name in snake else name


def _snake_names(extra: Mapping[str, Any]) -> frozenset[str]:
    """The fields of this struct that came snake_case, by their camelCase names."""
    return frozenset(marks_of(extra, MARK).get(_SNAKE, ()))


def _with_snake(extra: dict[str, Any], snake: set[str]) -> dict[str, Any]:
    if snake:
        own_marks(extra, MARK)[_SNAKE] = sorted(snake)
    return extra


_CONTENT_KNOWN = frozenset({"role", "parts"})
_PARTS_KNOWN = frozenset({"parts"})
_TEXT_KNOWN = frozenset({"text"})
_PART_KNOWN = _known(*_DATA_KEYS, "thoughtSignature")  # "thought" is handled on its own
_BLOB_KNOWN = _known("mimeType", "data")
_FILE_DATA_KNOWN = _known("mimeType", "fileUri")
_CALL_KNOWN = frozenset({"name", "args", "id"})
_RESPONSE_KNOWN = frozenset({"name", "response", "id"})
# ``model`` belongs in the URL; one found in the body is read, never written back.
_REQUEST_KNOWN = _known(
    "model", "contents", "systemInstruction", "tools", "toolConfig", "generationConfig"
)
_DECL_KNOWN = _known("name", "description", "parameters", "parametersJsonSchema")
_GENERATION_KNOWN = _known(
    "maxOutputTokens",
    "temperature",
    "topP",
    "topK",
    "stopSequences",
    "seed",
    "presencePenalty",
    "frequencyPenalty",
    "thinkingConfig",
)
_THINKING_KNOWN = _known("thinkingBudget", "includeThoughts", "thinkingLevel")


def _args_text(args: Any) -> str:
    return _json.encode(args).decode()


def _args_object(arguments: str) -> dict[str, Any]:
    """Gemini ``args`` must be an object: other JSON, or invalid JSON a model produced elsewhere,
    is wrapped as ``{"arguments": text}`` rather than lost."""
    if not arguments.strip():
        return {}
    try:
        value = msgspec.json.decode(arguments)
    except msgspec.DecodeError:
        return {"arguments": arguments}
    return value if isinstance(value, dict) else {"arguments": arguments}


def _json_object(text: str) -> dict[str, Any] | None:
    stripped = text.strip()
    if not stripped.startswith("{"):
        return None
    try:
        value = msgspec.json.decode(stripped)
    except msgspec.DecodeError:
        return None
    return value if isinstance(value, dict) else None


def _result_text(response: dict[str, Any]) -> tuple[str, bool]:
    """Inverse of ``_result_object``: (text, is_error)."""
    if len(response) == 1:
        ((key, value),) = response.items()
        if key in ("result", "error") and isinstance(value, str) and _json_object(value) is None:
            return value, key == "error"
    return _json.encode(response).decode(), False


def _result_object(text: str, is_error: bool) -> dict[str, Any]:
    obj = _json_object(text)
    if obj is not None:
        return obj
    return {"error": text} if is_error else {"result": text}


def _guess_media_type(data: str | None, url: str | None, default: str | None) -> str | None:
    if data:
        for magic, media_type in _BASE64_MAGIC:
            if data.startswith(magic):
                return media_type
    if url:
        guessed, _ = mimetypes.guess_type(url)
        if guessed:
            return guessed
    return default


def _is_gemini2(model: str) -> bool:
    # Gemini 1.x/2.x take thinkingBudget; Gemini 3+ prefer thinkingLevel ("Thinking" guide).
    return model.startswith(("gemini-1", "gemini-2"))


class _Calls:
    """Function calls seen so far, to give every functionResponse its call's id."""

    __slots__ = ("all", "by_id", "latest")

    def __init__(self) -> None:
        self.by_id: dict[str, str] = {}
        self.latest: list[list[Any]] = []  # [id, name, answered] of the latest model turn
        self.all: list[tuple[str, str]] = []

    def model_turn(self) -> None:
        self.latest = []

    def add(self, call_id: str, name: str) -> None:
        self.by_id[call_id] = name
        self.latest.append([call_id, name, False])
        self.all.append((call_id, name))

    def answer(self, name: str, call_id: str | None) -> str | None:
        if call_id is not None and call_id in self.by_id:
            for entry in self.latest:
                if entry[0] == call_id:
                    entry[2] = True
            return call_id
        for entry in self.latest:
            if entry[1] == name and not entry[2]:
                entry[2] = True
                return entry[0]
        for earlier_id, earlier_name in reversed(self.all):
            if earlier_name == name:
                return earlier_id
        return None


def parse_request(body: Any, *, model: str | None = None, stream: bool | None = None) -> Request:
    body = expect_dict(body, "")
    snake: set[str] = set()
    name = model if model is not None else body.get("model")
    if name is None:
        raise bad_request("model", "required (the model is part of the URL path)")
    name = expect_model(expect_str(name, "model").removeprefix("models/"))

    contents = _get(body, "contents", snake)
    if contents is None:
        raise bad_request("contents", "required")
    expect_list(contents, "contents", non_empty=True)
    calls = _Calls()
    messages = [_parse_content(c, f"contents[{i}]", calls) for i, c in enumerate(contents)]

    extra = unknown_fields(body, _REQUEST_KNOWN)
    request = Request(model=name, messages=messages, stream=bool(stream), origin=_NAME)

    system = _get(body, "systemInstruction", snake)
    if system is not None:
        system = expect_dict(system, "systemInstruction")
        parts = expect_list(system.get("parts", []), "systemInstruction.parts")
        for j, part in enumerate(parts):
            path = f"systemInstruction.parts[{j}]"
            part = expect_dict(part, path)
            if "text" not in part:
                raise bad_request(path, "only text parts are supported in a system instruction")
            request.system.append(
                Text(
                    text=expect_str(part["text"], f"{path}.text"),
                    extra=unknown_fields(part, _TEXT_KNOWN),
                )
            )
        own_marks(extra, MARK)[_SYSTEM] = unknown_fields(system, _PARTS_KNOWN)

    tools = _get(body, "tools", snake)
    if tools is not None:
        request.tools = _parse_tools(expect_list(tools, "tools"))

    tool_config = _get(body, "toolConfig", snake)
    if tool_config is not None:
        _parse_tool_config(expect_dict(tool_config, "toolConfig"), request, extra, snake)

    generation = _get(body, "generationConfig", snake)
    if generation is not None:
        _parse_generation(expect_dict(generation, "generationConfig"), request, extra, snake)

    request.extra = _with_snake(extra, snake)
    return request


def _parse_content(content: Any, path: str, calls: _Calls) -> Message:
    content = expect_dict(content, path)
    extra = unknown_fields(content, _CONTENT_KNOWN)
    role = content.get("role")
    if role is None:
        # The REST quickstart omits the role of a single user turn.
        own_marks(extra, MARK)[_NO_ROLE] = True
        role = "user"
    elif role not in ("user", "model"):
        raise bad_request(f"{path}.role", f"unknown role {role!r} (expected 'user' or 'model')")
    if "parts" not in content:
        raise bad_request(f"{path}.parts", "required")
    parts = expect_list(content["parts"], f"{path}.parts")
    if role == "model":
        calls.model_turn()
    unified, raw = _parse_parts(parts, f"{path}.parts", role, calls)
    if raw:
        own_marks(extra, MARK)[_RAW_PARTS] = raw
    if role == "model":
        unified_role = "assistant"
    elif unified and all(isinstance(p, ToolResult) for p in unified):
        unified_role = "tool"
    else:
        unified_role = "user"
    return Message(role=unified_role, content=unified, extra=extra)  # type: ignore[arg-type]


def _parse_parts(
    parts: list[Any], path: str, role: str, calls: _Calls | None
) -> tuple[list[Part], list[list[Any]]]:
    """Wire parts -> unified parts, plus the parts kept verbatim with their positions."""
    out: list[Part] = []
    raw: list[list[Any]] = []
    for j, part in enumerate(parts):
        p = f"{path}[{j}]"
        part = expect_dict(part, p)
        snake: set[str] = set()
        kinds = [k for k in _DATA_KEYS if _get(part, k, snake) is not None]
        signature = _get(part, "thoughtSignature", snake)
        if signature is not None:
            expect_str(signature, f"{p}.thoughtSignature")
        if len(kinds) > 1:
            raise bad_request(p, f"a part holds exactly one of {', '.join(_DATA_KEYS)}")
        extra = unknown_fields(part, _PART_KNOWN)
        if not kinds:
            if not extra:
                raise bad_request(p, "part has no data")
            raw.append([j, part])  # executableCode, codeExecutionResult, toolCall, ...
            continue
        kind = kinds[0]
        value = _get(part, kind, snake)
        thought = part.get("thought") is True
        if thought and kind == "text":
            extra.pop("thought")
            text = expect_str(value, f"{p}.text")
            if not text:
                own_marks(extra, MARK)[_THOUGHT] = True
            out.append(
                Reasoning(
                    text=text, signature=signature, source=_NAME, extra=_with_snake(extra, snake)
                )
            )
            continue
        if signature is not None:
            sig_snake = {"thoughtSignature"} & snake
            snake -= sig_snake
            out.append(
                Reasoning(signature=signature, source=_NAME, extra=_with_snake({}, sig_snake))
            )
        out.append(_parse_data(kind, value, p, role, calls, extra, snake))
    return out, raw


def _parse_data(
    kind: str,
    value: Any,
    path: str,
    role: str,
    calls: _Calls | None,
    extra: dict[str, Any],
    snake: set[str],
) -> Part:
    p = f"{path}.{kind}"
    if kind == "text":
        return Text(text=expect_str(value, p), extra=_with_snake(extra, snake))
    value = expect_dict(value, p)
    if kind == "inlineData":
        media_type = expect_str(_get(value, "mimeType", snake), f"{p}.mimeType")
        data = expect_str(value.get("data"), f"{p}.data")
        inner = unknown_fields(value, _BLOB_KNOWN)
        if inner:
            own_marks(extra, MARK)[_INNER] = inner
        if media_type.startswith("image/"):
            return Image(data=data, media_type=media_type, extra=_with_snake(extra, snake))
        return File(data=data, media_type=media_type, extra=_with_snake(extra, snake))
    if kind == "fileData":
        uri = expect_str(_get(value, "fileUri", snake), f"{p}.fileUri")
        media_type = _get(value, "mimeType", snake)
        if media_type is not None:
            expect_str(media_type, f"{p}.mimeType")
        inner = unknown_fields(value, _FILE_DATA_KNOWN)
        if inner:
            own_marks(extra, MARK)[_INNER] = inner
        if media_type is not None and media_type.startswith("image/"):
            return Image(url=uri, media_type=media_type, extra=_with_snake(extra, snake))
        return File(url=uri, media_type=media_type, extra=_with_snake(extra, snake))
    name = expect_str(value.get("name"), f"{p}.name")
    call_id = value.get("id")
    if call_id is not None:
        expect_str(call_id, f"{p}.id")
    if kind == "functionCall":
        if role != "model":
            raise bad_request(p, "a functionCall belongs in a model turn")
        args = value.get("args")
        if args is None:
            own_marks(extra, MARK)[_NO_ARGS] = True
            args = {}
        expect_dict(args, f"{p}.args")
        inner = unknown_fields(value, _CALL_KNOWN)
        if inner:
            own_marks(extra, MARK)[_INNER] = inner
        if call_id is None:
            call_id = new_id("call_")
            own_marks(extra, MARK)[_SYNTHETIC_ID] = True
        if calls is not None:
            calls.add(call_id, name)
        return ToolCall(
            id=call_id, name=name, arguments=_args_text(args), extra=_with_snake(extra, snake)
        )
    # functionResponse
    if role == "model":
        raise bad_request(p, "a functionResponse belongs in a user turn")
    response = expect_dict(value.get("response", {}), f"{p}.response")
    inner = unknown_fields(value, _RESPONSE_KNOWN)
    matched = calls.answer(name, call_id) if calls is not None else call_id
    if matched is None:
        raise bad_request(p, f"functionResponse {name!r} has no matching tool call")
    if call_id is None:
        own_marks(extra, MARK)[_SYNTHETIC_ID] = True
    elif call_id != matched:
        inner["id"] = call_id  # an id we could not match: pair by name, send it back as is
    if inner:
        own_marks(extra, MARK)[_INNER] = inner
    text, is_error = _result_text(response)
    return ToolResult(
        tool_call_id=matched,
        name=name,
        content=[Text(text=text)],
        is_error=is_error,
        extra=_with_snake(extra, snake),
    )


def _parse_tools(tools: list[Any]) -> list[Tool]:
    out: list[Tool] = []
    for i, entry in enumerate(tools):
        entry = expect_dict(entry, f"tools[{i}]")
        for key, value in entry.items():
            camel = _camel(key)
            if camel != "functionDeclarations":
                # googleSearch, codeExecution, urlContext ...: native body, Gemini only.
                out.append(Tool(name=camel, type=camel, extra={MARK: {_GROUP: i}, key: value}))
                continue
            group_snake = {camel} if key != camel else set()
            path = f"tools[{i}].functionDeclarations"
            for k, decl in enumerate(expect_list(value, path)):
                out.append(_parse_declaration(decl, f"{path}[{k}]", i, set(group_snake)))
    return out


def _parse_declaration(decl: Any, path: str, group: int, snake: set[str]) -> Tool:
    decl = expect_dict(decl, path)
    name = expect_str(decl.get("name"), f"{path}.name")
    description = decl.get("description")
    if description is not None:
        expect_str(description, f"{path}.description")
    extra = unknown_fields(decl, _DECL_KNOWN)
    own_marks(extra, MARK)[_GROUP] = group
    parameters = decl.get("parameters")
    schema = _get(decl, "parametersJsonSchema", snake)
    if schema is not None:
        own_marks(extra, MARK)[_JSON_SCHEMA] = True
        parameters = schema
    if parameters is not None:
        expect_dict(parameters, f"{path}.parameters")
    return Tool(
        name=name, description=description, parameters=parameters, extra=_with_snake(extra, snake)
    )


def _parse_tool_config(
    config: dict[str, Any], request: Request, extra: dict[str, Any], snake: set[str]
) -> None:
    own_marks(extra, MARK)[_TOOL_CONFIG] = unknown_fields(config, _known("functionCallingConfig"))
    calling = _get(config, "functionCallingConfig", snake)
    if calling is None:
        return
    path = "toolConfig.functionCallingConfig"
    calling = expect_dict(calling, path)
    residual = dict(calling)
    mode = residual.pop("mode", None)
    allowed_key = "allowedFunctionNames"
    allowed = _get(calling, allowed_key, snake)
    if allowed is not None:
        allowed_key = _key(allowed_key, snake)
        del residual[allowed_key]
        for k, item in enumerate(expect_list(allowed, f"{path}.allowedFunctionNames")):
            expect_str(item, f"{path}.allowedFunctionNames[{k}]")
    unified = _CALLING_IN.get(mode) if isinstance(mode, str) else None
    if unified is None:
        # MODE_UNSPECIFIED, VALIDATED, or no mode: kept for Gemini only.
        if mode is not None:
            residual["mode"] = mode
        if allowed is not None:
            residual[allowed_key] = allowed
    elif unified == "required" and allowed is not None and len(allowed) == 1:
        request.tool_choice = ToolChoice(mode="tool", name=allowed[0])
    else:
        request.tool_choice = ToolChoice(mode=unified)  # type: ignore[arg-type]
        if allowed is not None:
            residual[allowed_key] = allowed
    own_marks(extra, MARK)[_CALLING] = residual


def _parse_generation(
    config: dict[str, Any], request: Request, extra: dict[str, Any], snake: set[str]
) -> None:
    path = "generationConfig"
    residual = unknown_fields(config, _GENERATION_KNOWN)

    def number(name: str, integer: bool = False) -> Any:
        value = _get(config, name, snake)
        if value is None:
            return None
        return (
            expect_int(value, f"{path}.{name}")
            if integer
            else expect_number(value, f"{path}.{name}")
        )

    request.max_tokens = number("maxOutputTokens", True)
    request.temperature = number("temperature")
    request.top_p = number("topP")
    request.top_k = number("topK", True)
    request.seed = number("seed", True)
    request.presence_penalty = number("presencePenalty")
    request.frequency_penalty = number("frequencyPenalty")
    stop = _get(config, "stopSequences", snake)
    if stop is not None:
        request.stop = [
            expect_str(s, f"{path}.stopSequences[{k}]")
            for k, s in enumerate(expect_list(stop, f"{path}.stopSequences"))
        ]
    _parse_output(config, request, extra, residual, snake)
    thinking = _get(config, "thinkingConfig", snake)
    if thinking is not None:
        _parse_thinking(expect_dict(thinking, f"{path}.thinkingConfig"), request, extra, snake)
    own_marks(extra, MARK)[_GENERATION] = residual


def _parse_output(
    config: dict[str, Any],
    request: Request,
    extra: dict[str, Any],
    residual: dict[str, Any],
    snake: set[str],
) -> None:
    present = {
        name: _key(name, snake)
        for name in ("responseMimeType", "responseSchema", "responseJsonSchema")
        if _get(config, name, snake) is not None
    }
    mime = _get(config, "responseMimeType", snake)
    schema_name = "responseJsonSchema" if "responseJsonSchema" in present else "responseSchema"
    schema = _get(config, schema_name, snake)
    if mime == "application/json" and len(present) < 3:
        if schema is None:
            request.output = OutputFormat(type="json_object")
        else:
            request.output = OutputFormat(
                schema=expect_dict(schema, f"generationConfig.{schema_name}")
            )
            if schema_name == "responseJsonSchema":
                own_marks(extra, MARK)[_JSON_SCHEMA] = True
        return
    if mime == "text/plain" and schema is None:
        request.output = OutputFormat(type="text")
        return
    # text/x.enum, a schema without a JSON mime type ...: kept for Gemini only.
    for key in present.values():
        residual[key] = config[key]


def _parse_thinking(
    thinking: dict[str, Any], request: Request, extra: dict[str, Any], snake: set[str]
) -> None:
    path = "generationConfig.thinkingConfig"
    residual = unknown_fields(thinking, _THINKING_KNOWN)
    config = ReasoningConfig()
    budget = _get(thinking, "thinkingBudget", snake)
    if budget is not None:
        budget = expect_int(budget, f"{path}.thinkingBudget")
        if budget == 0:
            config.enabled = False
        elif budget < 0:
            # -1 is "dynamic": thinking on, the model picks the budget.
            config.enabled = True
            residual[_key("thinkingBudget", snake)] = budget
        else:
            config.enabled = True
            config.budget_tokens = budget
    include = _get(thinking, "includeThoughts", snake)
    if include is not None:
        config.include_thoughts = expect_bool(include, f"{path}.includeThoughts")
    level = _get(thinking, "thinkingLevel", snake)
    if level is not None:
        expect_str(level, f"{path}.thinkingLevel")
        if level.isupper() and level != "THINKING_LEVEL_UNSPECIFIED":
            config.effort = level.lower()
        else:
            residual[_key("thinkingLevel", snake)] = level
    request.reasoning = config
    own_marks(extra, MARK)[_THINKING] = residual


def build_request(request: Request) -> dict[str, Any]:
    same = request.origin == _NAME
    rx = request.extra if same else {}
    rm = marks_of(rx, MARK)
    snake = _snake_names(rx)
    body: dict[str, Any] = {
        _key("contents", snake): _build_contents(request.messages, same),
    }
    if request.system or _SYSTEM in rm:
        parts = [
            {"text": t.text, **(wire_fields(t.extra, MARK) if same else {})} for t in request.system
        ]
        body[_key("systemInstruction", snake)] = {"parts": parts, **rm.get(_SYSTEM, {})}
    if request.tools is not None:
        tools = _build_tools(request.tools, same)
        if tools or same:
            body["tools"] = tools
    tool_config = _build_tool_config(request, rx, snake)
    if tool_config is not None:
        body[_key("toolConfig", snake)] = tool_config
    generation = _build_generation(request, rx, snake, same)
    if generation is not None:
        body[_key("generationConfig", snake)] = generation
    body.update(wire_fields(rx, MARK))
    return body


def _build_contents(messages: list[Message], same: bool) -> list[dict[str, Any]]:
    names: dict[str, str] = {}  # tool-call id -> function name, for functionResponse.name
    contents: list[dict[str, Any]] = []
    for i, message in enumerate(messages):
        mx = message.extra if same else {}
        mm = marks_of(mx, MARK)
        role = "model" if message.role == "assistant" else "user"
        parts = _build_parts(message.content, same, names, f"messages[{i}].content")
        for position, part in mm.get(_RAW_PARTS, ()):
            parts.insert(position, part)
        if not same:
            if not parts:
                continue  # e.g. only another provider's reasoning
            if contents and contents[-1]["role"] == role:
                # One Gemini turn per speaker: parallel function responses share one content.
                contents[-1]["parts"].extend(parts)
                continue
        content: dict[str, Any] = (
            {"parts": parts} if mm.get(_NO_ROLE) else {"role": role, "parts": parts}
        )
        content.update(wire_fields(mx, MARK))
        contents.append(content)
    return contents


def _build_parts(
    parts: list[Part],
    same: bool,
    names: dict[str, str],
    path: str,
    show_foreign_thoughts: bool = False,
) -> list[dict[str, Any]]:
    """``show_foreign_thoughts``: for a client, another provider's reasoning text is shown
    as thought parts (its payloads never); a request to Gemini drops it."""
    out: list[dict[str, Any]] = []
    pending: tuple[str, str] | None = None  # (wire key, signature) for the next part
    for j, part in enumerate(parts):
        px = part.extra if same else {}
        pm = marks_of(px, MARK)
        snake = _snake_names(px)
        if isinstance(part, Reasoning):
            if part.source != _NAME:
                if show_foreign_thoughts and part.text:
                    out.append({"text": part.text, "thought": True})
                continue
            sig_key = _key("thoughtSignature", snake)
            if part.text or pm.get(_THOUGHT):
                wire: dict[str, Any] = {"text": part.text, "thought": True}
                if part.signature is not None:
                    wire[sig_key] = part.signature
                wire.update(wire_fields(px, MARK))
                out.append(wire)
            elif part.signature is not None:
                pending = (sig_key, part.signature)
            continue
        built = _build_part(part, same, px, snake, names, f"{path}[{j}]")
        if pending is not None and built:
            built[0][pending[0]] = pending[1]
            pending = None
        out.extend(built)
    if pending is not None:
        out.append({"text": "", pending[0]: pending[1]})
    return out


def _build_part(
    part: Part,
    same: bool,
    px: Mapping[str, Any],
    snake: frozenset[str],
    names: dict[str, str],
    path: str,
) -> list[dict[str, Any]]:
    pm = marks_of(px, MARK)
    inner = dict(pm.get(_INNER, {}))
    wire: dict[str, Any]
    if isinstance(part, Text):
        wire = {"text": part.text}
    elif isinstance(part, (Image, File)):
        wire = _build_media(part, snake, inner, path)
    elif isinstance(part, ToolCall):
        names[part.id] = part.name
        call: dict[str, Any] = {"name": part.name}
        if not pm.get(_NO_ARGS):
            call["args"] = _args_object(part.arguments)
        if same and not pm.get(_SYNTHETIC_ID):
            call["id"] = part.id
        call.update(inner)
        wire = {_key("functionCall", snake): call}
    elif isinstance(part, ToolResult):
        return _build_result(part, same, px, snake, names, inner, path)
    else:
        return []  # Reasoning is handled by the caller
    wire.update(wire_fields(px, MARK))
    return [wire]


def _build_media(
    part: Image | File, snake: frozenset[str], inner: dict[str, Any], path: str
) -> dict[str, Any]:
    data, url, media_type = part.data, part.url, part.media_type
    if url is not None and data is None:
        match = _DATA_URL.match(url)
        if match:
            media_type, data, url = match.group(1) or media_type, match.group(2), None
    if data is not None:
        default = "image/jpeg" if isinstance(part, Image) else "application/octet-stream"
        media_type = media_type or _guess_media_type(data, None, default)
        blob = {_key("mimeType", snake): media_type, "data": data, **inner}
        return {_key("inlineData", snake): blob}
    if url is not None:
        file_data: dict[str, Any] = {}
        media_type = media_type or _guess_media_type(None, url, None)
        if media_type is not None:
            file_data[_key("mimeType", snake)] = media_type
        file_data[_key("fileUri", snake)] = url
        file_data.update(inner)
        return {_key("fileData", snake): file_data}
    # A provider file id (OpenAI / Anthropic Files API) means nothing to Gemini.
    raise bad_request(path, "a file id cannot be sent to Gemini; send the file inline or by URL")


def _build_result(
    part: ToolResult,
    same: bool,
    px: Mapping[str, Any],
    snake: frozenset[str],
    names: dict[str, str],
    inner: dict[str, Any],
    path: str,
) -> list[dict[str, Any]]:
    pm = marks_of(px, MARK)
    name = part.name or names.get(part.tool_call_id)
    if name is None:
        raise bad_request(path, f"tool result {part.tool_call_id!r} has no matching tool call")
    text = "".join(c.text for c in part.content if isinstance(c, Text))
    response: dict[str, Any] = {"name": name, "response": _result_object(text, part.is_error)}
    if same and not pm.get(_SYNTHETIC_ID):
        response["id"] = part.tool_call_id
    response.update(inner)
    wire = {_key("functionResponse", snake): response, **wire_fields(px, MARK)}
    media = [
        _build_media(c, frozenset(), {}, f"{path}.content[{k}]")
        for k, c in enumerate(part.content)
        if not isinstance(c, Text)
    ]
    return [wire, *media]


def _build_tools(tools: list[Tool], same: bool) -> list[dict[str, Any]]:
    groups: dict[int, dict[str, Any]] = {}
    for tool in tools:
        tx = tool.extra if same else {}
        tm = marks_of(tx, MARK)
        group = groups.setdefault(tm.get(_GROUP, 0), {})
        if tool.type != "function":
            if same:
                group.update(wire_fields(tx, MARK))
            continue  # another protocol's built-in tool: Gemini has no equivalent
        snake = _snake_names(tx)
        decl: dict[str, Any] = {"name": tool.name}
        if tool.description is not None:
            decl["description"] = tool.description
        if tool.parameters is not None:
            # Foreign schemas are full JSON Schema (additionalProperties, $ref ...), which
            # only parametersJsonSchema accepts; Gemini's own keep their field.
            schema_key = (
                "parametersJsonSchema" if (not same or tm.get(_JSON_SCHEMA)) else "parameters"
            )
            decl[_key(schema_key, snake)] = tool.parameters
        decl.update(wire_fields(tx, MARK))
        group.setdefault(_key("functionDeclarations", snake), []).append(decl)
    return [groups[k] for k in sorted(groups) if groups[k]]


def _build_tool_config(
    request: Request, rx: Mapping[str, Any], snake: frozenset[str]
) -> dict[str, Any] | None:
    rm = marks_of(rx, MARK)
    choice = request.tool_choice
    if choice is None and _TOOL_CONFIG not in rm:
        return None
    config = dict(rm.get(_TOOL_CONFIG, {}))
    calling: dict[str, Any] | None = dict(rm[_CALLING]) if _CALLING in rm else None
    if choice is not None:
        calling = calling or {}
        calling["mode"] = _CALLING_OUT[choice.mode]
        if choice.mode == "tool" and choice.name:
            calling[_key("allowedFunctionNames", snake)] = [choice.name]
    if calling is not None:
        config[_key("functionCallingConfig", snake)] = calling
    return config


def _build_generation(
    request: Request, rx: Mapping[str, Any], snake: frozenset[str], same: bool
) -> dict[str, Any] | None:
    rm = marks_of(rx, MARK)
    config: dict[str, Any] = {}

    def put(name: str, value: Any) -> None:
        if value is not None:
            config[_key(name, snake)] = value

    put("maxOutputTokens", request.max_tokens)
    put("temperature", request.temperature)
    put("topP", request.top_p)
    put("topK", request.top_k)
    put("stopSequences", request.stop)
    put("seed", request.seed)
    put("presencePenalty", request.presence_penalty)
    put("frequencyPenalty", request.frequency_penalty)
    output = request.output
    if output is not None:
        if output.type == "text":
            put("responseMimeType", "text/plain")
        else:
            put("responseMimeType", "application/json")
            if output.type == "json_schema" and output.schema is not None:
                # Foreign schemas are full JSON Schema: responseJsonSchema, not the
                # OpenAPI-subset responseSchema.
                field = (
                    "responseJsonSchema" if (not same or rm.get(_JSON_SCHEMA)) else "responseSchema"
                )
                put(field, output.schema)
    thinking = _build_thinking(request, rx, snake, same)
    if thinking is not None:
        put("thinkingConfig", thinking)
    if not config and _GENERATION not in rm:
        return None
    config.update(rm.get(_GENERATION, {}))
    return config


def _build_thinking(
    request: Request, rx: Mapping[str, Any], snake: frozenset[str], same: bool
) -> dict[str, Any] | None:
    rm = marks_of(rx, MARK)
    reasoning = request.reasoning
    if reasoning is None:
        return None
    config: dict[str, Any] = {}
    if reasoning.effort == "none" or (
        reasoning.enabled is False and reasoning.budget_tokens is None
    ):
        # Thinking off.  Gemini 2.5 Pro / 3 cannot turn it off and answer 400 (documented).
        config[_key("thinkingBudget", snake)] = 0
    elif reasoning.budget_tokens is not None:
        config[_key("thinkingBudget", snake)] = reasoning.budget_tokens
    elif reasoning.effort is not None:
        if same or not _is_gemini2(request.model):
            config[_key("thinkingLevel", snake)] = reasoning.effort.upper()
        else:
            config[_key("thinkingBudget", snake)] = effort_to_budget(reasoning.effort)
    include = reasoning.include_thoughts
    if (
        include is None
        and not same
        and (reasoning.enabled or reasoning.summary not in (None, "none"))
    ):
        # Another protocol asked for visible reasoning (Anthropic thinking, Responses
        # summaries): Gemini only returns thought summaries with includeThoughts.
        include = True
    if include is not None:
        config[_key("includeThoughts", snake)] = include
    if same:
        if _THINKING not in rm and not config:
            return None
        config.update(rm.get(_THINKING, {}))
    return config or None
