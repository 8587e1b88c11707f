"""Gemini generateContent requests: a client's body parsed and validated into the unified
``Request`` (errors name the field), and the unified ``Request`` built into the provider's
body."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ...unified import OutputFormat, ReasoningConfig, Request, Text, Tool, ToolChoice
from .._common import (
    effort_to_budget,
    expect_bool,
    expect_dict,
    expect_int,
    expect_list,
    expect_model,
    expect_number,
    expect_str,
)
from ..base import bad_request
from ..unknown_fields import marks_of, own_marks, unknown_fields, wire_fields
from .content import (
    MARK,
    NAME,
    PARTS_KNOWN,
    TEXT_KNOWN,
    CallsSeen,
    build_contents,
    camel_case,
    get_field,
    known_fields,
    parse_content,
    snake_names,
    wire_key,
    with_snake,
)

# The request's own markers, keys of ``extra[MARK]`` (the content's are in ``content``).
_JSON_SCHEMA = "jsonSchema"  # parametersJsonSchema / responseJsonSchema was used
_GROUP = "group"  # index of the ``tools[]`` entry a tool came from
_SYSTEM = "systemInstruction"  # residual fields of these objects (presence = it existed)
_GENERATION = "generationConfig"
_THINKING = "thinkingConfig"
_TOOL_CONFIG = "toolConfig"
_CALLING = "functionCallingConfig"

_CALLING_IN = {"AUTO": "auto", "NONE": "none", "ANY": "required"}
_CALLING_OUT = {"auto": "AUTO", "none": "NONE", "required": "ANY", "tool": "ANY"}

# ``model`` belongs in the URL; one found in the body is read, never written back.
_REQUEST_KNOWN = known_fields(
    "model", "contents", "systemInstruction", "tools", "toolConfig", "generationConfig"
)
_DECL_KNOWN = known_fields("name", "description", "parameters", "parametersJsonSchema")
_GENERATION_KNOWN = known_fields(
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
_THINKING_KNOWN = known_fields("thinkingBudget", "includeThoughts", "thinkingLevel")


def _is_gemini2(model: str) -> bool:
    # Gemini 1.x/2.x take thinkingBudget; Gemini 3+ prefer thinkingLevel ("Thinking" guide).
    return model.startswith(("gemini-1", "gemini-2"))


def parse_request(body: Any, *, model: str | None = None, stream: bool | None = None) -> Request:
    body = expect_dict(body, "")
    snake: set[str] = set()
    name = model if model is not None else body.get("model")
    if name is None:
        raise bad_request("model", "required (the model is part of the URL path)")
    name = expect_model(expect_str(name, "model").removeprefix("models/"))

    contents = get_field(body, "contents", snake)
    if contents is None:
        raise bad_request("contents", "required")
    expect_list(contents, "contents", non_empty=True)
    calls = CallsSeen()
    messages = [parse_content(c, f"contents[{i}]", calls) for i, c in enumerate(contents)]

    extra = unknown_fields(body, _REQUEST_KNOWN)
    request = Request(model=name, messages=messages, stream=bool(stream), origin=NAME)

    system = get_field(body, "systemInstruction", snake)
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
                    extra=unknown_fields(part, TEXT_KNOWN),
                )
            )
        own_marks(extra, MARK)[_SYSTEM] = unknown_fields(system, PARTS_KNOWN)

    tools = get_field(body, "tools", snake)
    if tools is not None:
        request.tools = _parse_tools(expect_list(tools, "tools"))

    tool_config = get_field(body, "toolConfig", snake)
    if tool_config is not None:
        _parse_tool_config(expect_dict(tool_config, "toolConfig"), request, extra, snake)

    generation = get_field(body, "generationConfig", snake)
    if generation is not None:
        _parse_generation(expect_dict(generation, "generationConfig"), request, extra, snake)

    request.extra = with_snake(extra, snake)
    return request


def _parse_tools(tools: list[Any]) -> list[Tool]:
    out: list[Tool] = []
    for i, entry in enumerate(tools):
        entry = expect_dict(entry, f"tools[{i}]")
        for key, value in entry.items():
            camel = camel_case(key)
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
    schema = get_field(decl, "parametersJsonSchema", snake)
    if schema is not None:
        own_marks(extra, MARK)[_JSON_SCHEMA] = True
        parameters = schema
    if parameters is not None:
        expect_dict(parameters, f"{path}.parameters")
    return Tool(
        name=name, description=description, parameters=parameters, extra=with_snake(extra, snake)
    )


def _parse_tool_config(
    config: dict[str, Any], request: Request, extra: dict[str, Any], snake: set[str]
) -> None:
    own_marks(extra, MARK)[_TOOL_CONFIG] = unknown_fields(
        config, known_fields("functionCallingConfig")
    )
    calling = get_field(config, "functionCallingConfig", snake)
    if calling is None:
        return
    path = "toolConfig.functionCallingConfig"
    calling = expect_dict(calling, path)
    residual = dict(calling)
    mode = residual.pop("mode", None)
    allowed_key = "allowedFunctionNames"
    allowed = get_field(calling, allowed_key, snake)
    if allowed is not None:
        allowed_key = wire_key(allowed_key, snake)
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
        value = get_field(config, name, snake)
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
    stop = get_field(config, "stopSequences", snake)
    if stop is not None:
        request.stop = [
            expect_str(s, f"{path}.stopSequences[{k}]")
            for k, s in enumerate(expect_list(stop, f"{path}.stopSequences"))
        ]
    _parse_output(config, request, extra, residual, snake)
    thinking = get_field(config, "thinkingConfig", snake)
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
        name: wire_key(name, snake)
        for name in ("responseMimeType", "responseSchema", "responseJsonSchema")
        if get_field(config, name, snake) is not None
    }
    mime = get_field(config, "responseMimeType", snake)
    schema_name = "responseJsonSchema" if "responseJsonSchema" in present else "responseSchema"
    schema = get_field(config, schema_name, snake)
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
    budget = get_field(thinking, "thinkingBudget", snake)
    if budget is not None:
        budget = expect_int(budget, f"{path}.thinkingBudget")
        if budget == 0:
            config.enabled = False
        elif budget < 0:
            # -1 is "dynamic": thinking on, the model picks the budget.
            config.enabled = True
            residual[wire_key("thinkingBudget", snake)] = budget
        else:
            config.enabled = True
            config.budget_tokens = budget
    include = get_field(thinking, "includeThoughts", snake)
    if include is not None:
        config.include_thoughts = expect_bool(include, f"{path}.includeThoughts")
    level = get_field(thinking, "thinkingLevel", snake)
    if level is not None:
        expect_str(level, f"{path}.thinkingLevel")
        if level.isupper() and level != "THINKING_LEVEL_UNSPECIFIED":
            config.effort = level.lower()
        else:
            residual[wire_key("thinkingLevel", snake)] = level
    request.reasoning = config
    own_marks(extra, MARK)[_THINKING] = residual


def build_request(request: Request) -> dict[str, Any]:
    same = request.origin == NAME
    rx = request.extra if same else {}
    rm = marks_of(rx, MARK)
    snake = snake_names(rx)
    body: dict[str, Any] = {
        wire_key("contents", snake): build_contents(request.messages, same),
    }
    if request.system or _SYSTEM in rm:
        parts = [
            {"text": t.text, **(wire_fields(t.extra, MARK) if same else {})} for t in request.system
        ]
        body[wire_key("systemInstruction", snake)] = {"parts": parts, **rm.get(_SYSTEM, {})}
    if request.tools is not None:
        tools = _build_tools(request.tools, same)
        if tools or same:
            body["tools"] = tools
    tool_config = _build_tool_config(request, rx, snake)
    if tool_config is not None:
        body[wire_key("toolConfig", snake)] = tool_config
    generation = _build_generation(request, rx, snake, same)
    if generation is not None:
        body[wire_key("generationConfig", snake)] = generation
    body.update(wire_fields(rx, MARK))
    return body


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
        snake = snake_names(tx)
        decl: dict[str, Any] = {"name": tool.name}
        if tool.description is not None:
            decl["description"] = tool.description
        if tool.parameters is not None:
            # Foreign schemas are full JSON Schema (additionalProperties, $ref ...), which
            # only parametersJsonSchema accepts; Gemini's own keep their field.
            schema_key = (
                "parametersJsonSchema" if (not same or tm.get(_JSON_SCHEMA)) else "parameters"
            )
            decl[wire_key(schema_key, snake)] = tool.parameters
        decl.update(wire_fields(tx, MARK))
        group.setdefault(wire_key("functionDeclarations", snake), []).append(decl)
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
            calling[wire_key("allowedFunctionNames", snake)] = [choice.name]
    if calling is not None:
        config[wire_key("functionCallingConfig", snake)] = calling
    return config


def _build_generation(
    request: Request, rx: Mapping[str, Any], snake: frozenset[str], same: bool
) -> dict[str, Any] | None:
    rm = marks_of(rx, MARK)
    config: dict[str, Any] = {}

    def put(name: str, value: Any) -> None:
        if value is not None:
            config[wire_key(name, snake)] = value

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
        config[wire_key("thinkingBudget", snake)] = 0
    elif reasoning.budget_tokens is not None:
        config[wire_key("thinkingBudget", snake)] = reasoning.budget_tokens
    elif reasoning.effort is not None:
        if same or not _is_gemini2(request.model):
            config[wire_key("thinkingLevel", snake)] = reasoning.effort.upper()
        else:
            config[wire_key("thinkingBudget", snake)] = effort_to_budget(reasoning.effort)
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
        config[wire_key("includeThoughts", snake)] = include
    if same:
        if _THINKING not in rm and not config:
            return None
        config.update(rm.get(_THINKING, {}))
    return config or None
