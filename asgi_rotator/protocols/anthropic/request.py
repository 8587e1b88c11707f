"""Anthropic Messages requests: a client's body parsed and validated into the unified
``Request`` (errors name the field), and the unified ``Request`` built into the provider's
body."""

from __future__ import annotations

from typing import Any

from ...unified import (
    Message,
    OutputFormat,
    Part,
    ReasoningConfig,
    Request,
    Role,
    Text,
    Tool,
    ToolChoice,
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
)
from ..base import bad_request
from ..unknown_fields import marks_of, unknown_fields, wire_fields, with_marks
from .content import (
    MARK,
    NAME,
    BlockRun,
    build_input_block,
    insert_opaque,
    is_plain_text,
    parse_content,
    parse_text,
    with_extra,
)

_REQUEST_KEYS = frozenset(
    {
        "model",
        "max_tokens",
        "messages",
        "system",
        "tools",
        "tool_choice",
        "thinking",
        "temperature",
        "top_p",
        "top_k",
        "stop_sequences",
        "metadata",
        "stream",
        "output_config",
    }
)
_TOOL_KEYS = frozenset(
    {"name", "description", "input_schema", "strict"}
)  # "type": "custom" stays in extra
_TOOL_CHOICE_KEYS = frozenset({"type", "name", "disable_parallel_tool_use"})
_THINKING_KEYS = frozenset({"type", "budget_tokens", "display"})
_OUTPUT_CONFIG_KEYS = frozenset({"effort", "format"})


_CHOICE_FROM_WIRE = {"auto": "auto", "any": "required", "tool": "tool", "none": "none"}
_CHOICE_TO_WIRE = {v: k for k, v in _CHOICE_FROM_WIRE.items()}

_THINKING_MIN_BUDGET = 1024
_THINKING_BLOCKS = ("thinking", "redacted_thinking")

# Known-key sets for ``unknown_fields``, made once rather than per call.
_KEYS_ROLE_CONTENT = frozenset({"role", "content"})
_KEYS_TYPE_SCHEMA = frozenset({"type", "schema"})
_KEYS_USER_ID = frozenset({"user_id"})


def parse_request(body: Any, *, model: str | None = None, stream: bool | None = None) -> Request:
    body = expect_dict(body, "")
    extra = unknown_fields(body, _REQUEST_KEYS, keep_null=True)
    marks: dict[str, Any] = {}
    if model is None:
        if "model" not in body:
            raise bad_request("model", "is required")
        model = body["model"]
    model = expect_model(model)
    if body.get("max_tokens") is None:
        raise bad_request("max_tokens", "is required")
    if "messages" not in body:
        raise bad_request("messages", "is required")
    request = Request(
        model=model,
        max_tokens=expect_int(body["max_tokens"], "max_tokens", minimum=0),
        messages=_parse_messages(expect_list(body["messages"], "messages", non_empty=True)),
        origin=NAME,
    )
    system = body.get("system")
    if isinstance(system, str):
        request.system = [Text(text=system)]
        marks["system"] = "string"
    elif system is not None:
        request.system = [
            parse_text(expect_dict(b, f"system[{i}]"), f"system[{i}]")
            for i, b in enumerate(expect_list(system, "system"))
        ]
    if body.get("tools") is not None:
        request.tools = [
            _parse_tool(t, f"tools[{i}]") for i, t in enumerate(expect_list(body["tools"], "tools"))
        ]
    if body.get("tool_choice") is not None:
        request.tool_choice, request.parallel_tool_calls = _parse_tool_choice(
            body["tool_choice"], marks
        )
    for key in ("temperature", "top_p"):
        if body.get(key) is not None:
            setattr(request, key, expect_number(body[key], key))
    if body.get("top_k") is not None:
        request.top_k = expect_int(body["top_k"], "top_k")
    if body.get("stop_sequences") is not None:
        request.stop = [
            expect_str(s, f"stop_sequences[{i}]")
            for i, s in enumerate(expect_list(body["stop_sequences"], "stop_sequences"))
        ]
    if body.get("metadata") is not None:
        metadata = expect_dict(body["metadata"], "metadata")
        if metadata.get("user_id") is not None:
            request.user = expect_str(metadata["user_id"], "metadata.user_id")
        marks["metadata"] = unknown_fields(metadata, _KEYS_USER_ID, keep_null=True)
    effort = None
    if body.get("output_config") is not None:
        effort, request.output = _parse_output_config(body["output_config"], marks)
    if body.get("thinking") is not None:
        request.reasoning = _parse_thinking(body["thinking"], marks)
    if effort is not None:
        request.reasoning = request.reasoning or ReasoningConfig()
        request.reasoning.effort = effort
    if body.get("stream") is not None:
        request.stream = expect_bool(body["stream"], "stream")
        if not request.stream:
            extra["stream"] = False
    if stream is not None:
        request.stream = stream
    request.extra = with_marks(extra, MARK, marks)
    return request


def build_request(default_max_tokens: int, request: Request) -> dict[str, Any]:
    same = request.origin == NAME
    marks = marks_of(request.extra, MARK) if same else {}
    body: dict[str, Any] = wire_fields(request.extra, MARK) if same else {}
    body["model"] = request.model
    body["messages"] = _build_messages(request.messages, same)
    if request.system:
        body["system"] = _build_system(request.system, same, marks)
    if request.tools:
        tools = [_build_tool(t, same) for t in request.tools]
        body["tools"] = [t for t in tools if t is not None]
        if not body["tools"]:
            del body["tools"]
    tool_choice = _build_tool_choice(request, same, marks)
    if tool_choice is not None and (same or "tools" in body):
        body["tool_choice"] = tool_choice
    if request.temperature is not None:
        body["temperature"] = request.temperature
    if request.top_p is not None:
        body["top_p"] = request.top_p
    if request.top_k is not None:
        body["top_k"] = request.top_k
    if request.stop is not None:
        body["stop_sequences"] = list(request.stop)
    if same and "metadata" in marks:
        body["metadata"] = dict(marks["metadata"])
    if request.user is not None:
        body.setdefault("metadata", {})["user_id"] = request.user
    output_config = _build_output_config(request, same, marks)
    if output_config is not None:
        body["output_config"] = output_config
    max_tokens = request.max_tokens if request.max_tokens is not None else default_max_tokens
    thinking = _build_thinking(request.reasoning, same, marks)
    if thinking is not None and not same:
        if tool_choice is not None and tool_choice["type"] in ("any", "tool"):
            thinking = None  # forced tool use and thinking exclude each other; the tool wins
        elif _unsigned_tool_loop(body["messages"]):
            thinking = None
        elif thinking.get("type") == "enabled":
            # budget_tokens must stay below max_tokens ("Extended thinking").
            if max_tokens <= thinking["budget_tokens"]:
                max_tokens = thinking["budget_tokens"] + default_max_tokens
            body.pop("temperature", None)
            body.pop("top_k", None)
            if body.get("top_p", 1.0) < 0.95:
                del body["top_p"]
    if thinking is not None:
        body["thinking"] = thinking
    body["max_tokens"] = max_tokens
    if request.stream:
        body["stream"] = True
    return body


def _parse_messages(messages: list[Any]) -> list[Message]:
    out: list[Message] = []
    tool_names: dict[str, str] = {}  # tool_use id -> name, for tool_result matching
    for i, raw in enumerate(messages):
        path = f"messages[{i}]"
        msg = expect_dict(raw, path)
        if "role" not in msg:
            raise bad_request(f"{path}.role", "is required")
        role = expect_str(msg["role"], f"{path}.role")
        if role not in ("user", "assistant", "system"):
            raise bad_request(f"{path}.role", f"unknown role {role!r}; expected user or assistant")
        if "content" not in msg:
            raise bad_request(f"{path}.content", "is required")
        extra = unknown_fields(msg, _KEYS_ROLE_CONTENT)
        marks: dict[str, Any] = {"role": "system"} if role == "system" else {}
        unified_role: Role = "assistant" if role == "assistant" else "user"
        content = msg["content"]
        if isinstance(content, str):
            marks["content"] = "string"
            out.append(
                Message(
                    role=unified_role,
                    content=[Text(text=content)],
                    extra=with_marks(extra, MARK, marks),
                )
            )
            continue
        blocks = expect_list(content, f"{path}.content")
        if role == "system":
            texts: list[Part] = [
                parse_text(expect_dict(b, f"{path}.content[{j}]"), f"{path}.content[{j}]")
                for j, b in enumerate(blocks)
            ]
            out.append(Message(role="user", content=texts, extra=with_marks(extra, MARK, marks)))
            continue
        runs = parse_content(blocks, f"{path}.content", tool_names, split=role == "user")
        for g, run in enumerate(runs or [BlockRun()]):
            run_marks: dict[str, Any] = marks if g == 0 else {"merge": True}
            if run.opaque:
                run_marks["blocks"] = run.opaque
            out.append(
                Message(
                    role="tool" if run.is_tool else unified_role,
                    content=run.parts,
                    extra=with_marks(extra if g == 0 else {}, MARK, run_marks),
                )
            )
    return out


def _parse_tool(raw: Any, path: str) -> Tool:
    tool = expect_dict(raw, path)
    tool_type = tool.get("type")
    if tool_type is None or tool_type == "custom":
        description = tool.get("description")
        strict = tool.get("strict")
        return Tool(
            name=expect_str(tool.get("name"), f"{path}.name"),
            description=expect_str(description, f"{path}.description")
            if description is not None
            else None,
            parameters=expect_dict(tool.get("input_schema"), f"{path}.input_schema"),
            strict=expect_bool(strict, f"{path}.strict") if strict is not None else None,
            extra=unknown_fields(tool, _TOOL_KEYS, keep_null=True),
        )
    # A server tool (web_search_*, code_execution_*, ...): its body stays native.
    tool_type = expect_str(tool_type, f"{path}.type")
    name = tool.get("name")
    extra = {k: v for k, v in tool.items() if k not in ("type", "name")}
    if not isinstance(name, str):
        return Tool(
            name=tool_type, type=tool_type, extra=with_marks(extra, MARK, {"no_name": True})
        )
    return Tool(name=name, type=tool_type, extra=extra)


def _parse_tool_choice(raw: Any, marks: dict[str, Any]) -> tuple[ToolChoice, bool | None]:
    choice = expect_dict(raw, "tool_choice")
    kind = expect_str(choice.get("type"), "tool_choice.type")
    mode = _CHOICE_FROM_WIRE.get(kind)
    if mode is None:
        raise bad_request("tool_choice.type", f"unknown tool_choice type {kind!r}")
    result = ToolChoice(mode=mode)  # type: ignore[arg-type]
    if kind == "tool":
        result.name = expect_str(choice.get("name"), "tool_choice.name")
    parallel = None
    if choice.get("disable_parallel_tool_use") is not None:
        parallel = not expect_bool(
            choice["disable_parallel_tool_use"], "tool_choice.disable_parallel_tool_use"
        )
    leftover = unknown_fields(choice, _TOOL_CHOICE_KEYS, keep_null=True)
    if leftover:
        marks["tool_choice"] = leftover
    return result, parallel


def _parse_thinking(raw: Any, marks: dict[str, Any]) -> ReasoningConfig:
    thinking = expect_dict(raw, "thinking")
    kind = expect_str(thinking.get("type"), "thinking.type")
    config = ReasoningConfig()
    if kind == "enabled":
        config.enabled = True
        config.budget_tokens = expect_int(thinking.get("budget_tokens"), "thinking.budget_tokens")
    elif kind == "adaptive":
        config.enabled = True
    elif kind in ("disabled", "between_tools"):
        config.enabled = False
    display = thinking.get("display")
    if display == "summarized":
        config.include_thoughts = True
    elif display == "omitted":
        config.include_thoughts = False
    marks["thinking"] = kind
    consumed = _THINKING_KEYS if kind == "enabled" else _THINKING_KEYS - {"budget_tokens"}
    leftover = unknown_fields(thinking, consumed, keep_null=True)
    if display is not None and display not in ("summarized", "omitted"):
        leftover["display"] = display
    if leftover:
        marks["thinking_extra"] = leftover
    return config


def _parse_output_config(raw: Any, marks: dict[str, Any]) -> tuple[str | None, OutputFormat | None]:
    config = expect_dict(raw, "output_config")
    marks["output_config"] = unknown_fields(config, _OUTPUT_CONFIG_KEYS, keep_null=True)
    effort = (
        expect_str(config["effort"], "output_config.effort")
        if config.get("effort") is not None
        else None
    )
    output = None
    if config.get("format") is not None:
        fmt = expect_dict(config["format"], "output_config.format")
        kind = expect_str(fmt.get("type"), "output_config.format.type")
        if kind != "json_schema":
            raise bad_request("output_config.format.type", f"unknown format type {kind!r}")
        output = OutputFormat(schema=expect_dict(fmt.get("schema"), "output_config.format.schema"))
        leftover = unknown_fields(fmt, _KEYS_TYPE_SCHEMA, keep_null=True)
        if leftover:
            marks["format"] = leftover
    return effort, output


def _build_messages(messages: list[Message], same: bool) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for i, message in enumerate(messages):
        marks = marks_of(message.extra, MARK) if same else {}
        role = marks.get("role") or ("user" if message.role == "tool" else message.role)
        blocks = [
            b
            for j, part in enumerate(message.content)
            if (b := build_input_block(part, same, f"messages[{i}].content[{j}]")) is not None
        ]
        insert_opaque(blocks, marks.get("blocks"))
        if same:
            merge = bool(marks.get("merge"))
        elif not blocks:
            continue  # Anthropic rejects empty turns; nothing of this message survived
        else:
            merge = bool(out) and out[-1]["role"] == role  # turns must alternate
        if merge and out:
            previous = out[-1]
            if isinstance(previous["content"], str):
                previous["content"] = [{"type": "text", "text": previous["content"]}]
            previous["content"].extend(blocks)
            continue
        wire: dict[str, Any] = wire_fields(message.extra, MARK) if same else {}
        wire["role"] = role
        if marks.get("content") == "string" and is_plain_text(message.content):
            wire["content"] = message.content[0].text  # type: ignore[union-attr]
        else:
            wire["content"] = blocks
        out.append(wire)
    if not same:
        for wire in out:
            if wire["role"] == "user" and len(wire["content"]) > 1:
                # tool_result blocks come first in their user message ("Tool use").
                wire["content"].sort(key=lambda b: b["type"] != "tool_result")
    return out


def _unsigned_tool_loop(messages: list[dict[str, Any]]) -> bool:
    """True when the request continues a tool loop whose assistant turn has no thinking block
    first.  With thinking on Anthropic rejects that ("Extended thinking", tool use: the last
    assistant turn must start with its thinking), and another protocol's history never has
    Anthropic-signed thinking, so such a request goes without thinking."""
    if len(messages) < 2 or messages[-1]["role"] != "user":
        return False
    last, previous = messages[-1]["content"], messages[-2]
    if isinstance(last, str) or not any(b["type"] == "tool_result" for b in last):
        return False
    blocks = previous["content"] if previous["role"] == "assistant" else "x"
    return isinstance(blocks, str) or not blocks or blocks[0]["type"] not in _THINKING_BLOCKS


def _build_system(
    system: list[Text], same: bool, marks: dict[str, Any]
) -> str | list[dict[str, Any]]:
    if same:
        if marks.get("system") == "string" and is_plain_text(system):
            return system[0].text
        return [with_extra({"type": "text", "text": t.text}, t.extra, True) for t in system]
    texts = [t.text for t in system if t.text]
    if len(texts) == 1:
        return texts[0]
    return [{"type": "text", "text": t} for t in texts]


def _build_tool(tool: Tool, same: bool) -> dict[str, Any] | None:
    if tool.type != "function":
        if not same:
            return None  # another protocol's built-in tool means nothing to Anthropic
        body = {"type": tool.type, **wire_fields(tool.extra, MARK)}
        if not marks_of(tool.extra, MARK).get("no_name"):
            body["name"] = tool.name
        return body
    body = wire_fields(tool.extra, MARK) if same else {}
    schema = tool.parameters
    if not same:
        # input_schema is required and must be an object schema.
        schema = {"type": "object", **(schema or {"properties": {}})}
    body["name"] = tool.name
    body["input_schema"] = schema if schema is not None else {"type": "object", "properties": {}}
    if tool.description is not None:
        body["description"] = tool.description
    if tool.strict is not None:
        body["strict"] = tool.strict
    return body


def _build_tool_choice(
    request: Request, same: bool, marks: dict[str, Any]
) -> dict[str, Any] | None:
    choice: dict[str, Any] | None = None
    if request.tool_choice is not None:
        choice = dict(marks.get("tool_choice", {})) if same else {}
        choice["type"] = _CHOICE_TO_WIRE[request.tool_choice.mode]
        if request.tool_choice.mode == "tool":
            choice["name"] = request.tool_choice.name
    parallel = request.parallel_tool_calls
    if parallel is not None:
        if choice is None and not parallel:
            choice = {"type": "auto"}
        if choice is not None and (same or choice["type"] != "none"):
            choice["disable_parallel_tool_use"] = not parallel
    return choice


def _build_thinking(
    config: ReasoningConfig | None, same: bool, marks: dict[str, Any]
) -> dict[str, Any] | None:
    if config is None:
        return None
    kind = marks.get("thinking")
    if kind is None:
        if same:
            return None
        if config.enabled is False or config.effort == "none" or config.budget_tokens == 0:
            return None  # see the module docstring: "off" is no thinking field
        if not (config.enabled or config.budget_tokens is not None or config.effort is not None):
            return None
        kind = "enabled"
    thinking: dict[str, Any] = dict(marks.get("thinking_extra", {})) if same else {}
    thinking["type"] = kind
    if kind == "enabled":
        budget = config.budget_tokens
        if budget is None or (budget < 0 and not same):  # Gemini's -1: "dynamic"
            budget = effort_to_budget(config.effort or "medium")
        thinking["budget_tokens"] = budget if same else max(budget, _THINKING_MIN_BUDGET)
    if config.include_thoughts is not None:
        thinking["display"] = "summarized" if config.include_thoughts else "omitted"
    return thinking


def _build_output_config(
    request: Request, same: bool, marks: dict[str, Any]
) -> dict[str, Any] | None:
    config: dict[str, Any] = dict(marks.get("output_config", {})) if same else {}
    if same and request.reasoning is not None and request.reasoning.effort is not None:
        config["effort"] = request.reasoning.effort
    output = request.output
    if output is not None and output.type == "json_schema" and output.schema is not None:
        fmt = dict(marks.get("format", {})) if same else {}
        fmt.update(type="json_schema", schema=output.schema)
        config["format"] = fmt
    if config or (same and "output_config" in marks):
        return config
    return None
