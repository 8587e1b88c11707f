"""OpenAI Responses requests: a client's body parsed and validated into the unified ``Request``
(errors name the field), and the unified ``Request`` built into the provider's body."""

from __future__ import annotations

from typing import Any

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
)
from ..base import bad_request
from ..unknown_fields import marks_of, unknown_fields, wire_fields
from .content import (
    MARK,
    NAME,
    REASONING_SEP,
    assistant_items,
    content_parts,
    function_output_item,
    parse_content_part,
    parse_function_call,
    parse_reasoning_item,
    text_part,
)

_ROLES = frozenset({"user", "assistant", "system", "developer"})
_TOOL_CHOICE_MODES = frozenset({"auto", "none", "required"})
# Item types of ``ResponseInputItemParam`` that the unified model cannot express: carried
# opaquely for a same-protocol rebuild, dropped for other protocols.
_OPAQUE_ITEMS = frozenset(
    {
        "item_reference",
        "file_search_call",
        "computer_call",
        "computer_call_output",
        "web_search_call",
        "tool_search_call",
        "tool_search_output",
        "additional_tools",
        "configuration_update",
        "compaction",
        "compaction_trigger",
        "image_generation_call",
        "code_interpreter_call",
        "local_shell_call",
        "local_shell_call_output",
        "shell_call",
        "shell_call_output",
        "apply_patch_call",
        "apply_patch_call_output",
        "mcp_list_tools",
        "mcp_approval_request",
        "mcp_approval_response",
        "mcp_call",
        "custom_tool_call",
        "custom_tool_call_output",
        "program",
        "program_output",
    }
)
# Fields the unified request names; anything else (include, truncation, service_tier,
# prompt_cache_key, ...) is kept in ``extra``.
_REQUEST_FIELDS = frozenset(
    {
        "model",
        "input",
        "instructions",
        "tools",
        "tool_choice",
        "parallel_tool_calls",
        "max_output_tokens",
        "temperature",
        "top_p",
        "reasoning",
        "text",
        "stream",
        "store",
        "previous_response_id",
        "metadata",
        "user",
    }
)
_FUNCTION_TOOL_FIELDS = frozenset({"type", "name", "description", "parameters", "strict"})
_FORMAT_FIELDS = frozenset({"type", "name", "schema", "strict", "description"})

_KEYS_ROLE_CONTENT = frozenset({"role", "content"})
_KEYS_TYPE = frozenset({"type"})
_KEYS_TYPE_CALL_ID_OUTPUT = frozenset({"type", "call_id", "output"})


def as_instructions(text: Text) -> Text:
    """A system text without its place in ``input`` (where a ``developer``/``system``
    message item stood), so a rebuilt request sends it with ``instructions``.  For a layer
    that carries system texts from one request into another (ResponsesState)."""
    if MARK not in text.extra:
        return text
    return Text(text=text.text, extra=wire_fields(text.extra, MARK))


def parse_request(body: Any, *, model: str | None = None, stream: bool | None = None) -> Request:
    if not isinstance(body, dict):
        raise bad_request("", "request body must be a JSON object")
    present = {k: v for k, v in body.items() if v is not None}
    model = present.get("model", model)
    if model is None:
        raise bad_request("model", "required field is missing")
    model = expect_model(model)
    if "input" not in present:
        raise bad_request("input", "required field is missing")
    mark: dict[str, Any] = {}
    extra = {k: v for k, v in body.items() if k not in _REQUEST_FIELDS or v is None}
    request = Request(model=model, origin=NAME, extra=extra)

    prev = present.get("previous_response_id")
    if prev is not None:
        request.previous_response_id = expect_str(prev, "previous_response_id")
    raw_input = present["input"]
    if isinstance(raw_input, str):
        mark["input_string"] = True
        request.messages = [Message(role="user", content=[Text(text=raw_input)])]
    else:
        parser = _InputParser(allow_unmatched=prev is not None)
        parser.parse(expect_list(raw_input, "input", non_empty=True))
        request.messages = parser.messages
        request.system = parser.system
        if parser.pending:
            mark["opaque"] = parser.pending
    if "instructions" in present:
        request.system.insert(0, Text(text=expect_str(present["instructions"], "instructions")))

    if "tools" in present:
        request.tools = [
            _parse_tool(t, f"tools[{i}]")
            for i, t in enumerate(expect_list(present["tools"], "tools"))
        ]
    if "tool_choice" in present:
        request.tool_choice, raw_choice = _parse_tool_choice(present["tool_choice"])
        if raw_choice is not None:
            mark["tool_choice"] = raw_choice
    if "parallel_tool_calls" in present:
        request.parallel_tool_calls = expect_bool(
            present["parallel_tool_calls"], "parallel_tool_calls"
        )
    if "max_output_tokens" in present:
        request.max_tokens = expect_int(
            present["max_output_tokens"], "max_output_tokens", minimum=1
        )
    if "temperature" in present:
        request.temperature = expect_number(present["temperature"], "temperature")
    if "top_p" in present:
        request.top_p = expect_number(present["top_p"], "top_p")
    if "reasoning" in present:
        request.reasoning, rest = _parse_reasoning_config(present["reasoning"])
        if rest:
            mark["reasoning"] = rest
    if "text" in present:
        text = expect_dict(present["text"], "text")
        fmt = text.get("format")
        if fmt is not None:
            request.output, rest = _parse_format(fmt)
            if rest:
                mark["format"] = rest
        rest = {k: v for k, v in text.items() if k != "format" or v is None}
        if rest or fmt is None:
            mark["text"] = rest
    if present.get("stream") is not None:
        # ``stream: false`` stays in extra (not consumed) so it round-trips.
        if expect_bool(present["stream"], "stream"):
            request.stream = True
        else:
            extra["stream"] = False
    if stream is not None:
        request.stream = stream
    if "store" in present:
        request.store = expect_bool(present["store"], "store")
    if "metadata" in present:
        request.metadata = expect_dict(present["metadata"], "metadata")
    if "user" in present:
        request.user = expect_str(present["user"], "user")
    if mark:
        extra[MARK] = mark
    return request


def build_request(request: Request) -> dict[str, Any]:
    own = request.origin == NAME
    mark = marks_of(request.extra, MARK) if own else {}
    body: dict[str, Any] = wire_fields(request.extra, MARK) if own else {}
    body["model"] = request.model
    body["input"] = _build_input(request, own, mark)
    body.update(build_settings(request, own, mark))
    if request.stream:
        body["stream"] = True
    return body


def _build_input(request: Request, own: bool, mark: dict[str, Any]) -> Any:
    if own and mark.get("input_string") and len(request.messages) == 1:
        only = request.messages[0]
        if only.role == "user" and not only.extra and len(only.content) == 1:
            if isinstance(only.content[0], Text):
                return only.content[0].text
    items: list[dict[str, Any]] = []
    for message in request.messages:
        msg_mark = marks_of(message.extra, MARK) if own else {}
        items.extend(msg_mark.get("before", ()))
        if message.role == "assistant":
            items.extend(assistant_items(message.content, own, for_response=False))
        else:
            items.extend(_user_items(message, own, msg_mark))
        items.extend(msg_mark.get("after", ()))
    if own:
        items.extend(mark.get("opaque", ()))
        for at, item in _system_items(request.system):
            items.insert(min(at, len(items)), item)
    return items


def build_settings(request: Request, own: bool, mark: dict[str, Any]) -> dict[str, Any]:
    """Every request field but ``model``/``input``/``stream``: shared with the echo that
    a built response carries."""
    out: dict[str, Any] = {}
    instructions = [t.text for t in request.system if not (own and MARK in t.extra)]
    if instructions:
        out["instructions"] = REASONING_SEP.join(instructions)
    if request.tools is not None:
        tools = [_build_tool(t, own) for t in request.tools]
        out["tools"] = [t for t in tools if t is not None]
    if own and "tool_choice" in mark:
        out["tool_choice"] = mark["tool_choice"]
    elif request.tool_choice is not None:
        choice = request.tool_choice
        if choice.mode == "tool":
            out["tool_choice"] = {"type": "function", "name": choice.name or ""}
        else:
            out["tool_choice"] = choice.mode
    if request.parallel_tool_calls is not None:
        out["parallel_tool_calls"] = request.parallel_tool_calls
    if request.max_tokens is not None:
        out["max_output_tokens"] = request.max_tokens
    if request.temperature is not None:
        out["temperature"] = request.temperature
    if request.top_p is not None:
        out["top_p"] = request.top_p
    reasoning = _build_reasoning_config(request.reasoning, own, mark)
    if reasoning is not None:
        out["reasoning"] = reasoning
    text: dict[str, Any] | None = dict(mark["text"]) if "text" in mark else None
    if request.output is not None:
        text = text or {}
        text["format"] = _build_format(request.output, own, mark)
    if text is not None:
        out["text"] = text
    if request.store is not None:
        out["store"] = request.store
    if request.previous_response_id is not None:
        out["previous_response_id"] = request.previous_response_id
    if request.metadata is not None:
        out["metadata"] = request.metadata
    if request.user is not None:
        out["user"] = request.user
    return out


class _InputParser:
    """Folds the ``input`` item list into unified messages (see the module docstring)."""

    def __init__(self, *, allow_unmatched: bool) -> None:
        self.allow_unmatched = allow_unmatched
        self.messages: list[Message] = []
        self.system: list[Text] = []
        self.pending: list[dict[str, Any]] = []  # opaque items before the first message
        self.current: Message | None = None  # open assistant or tool run
        self.calls: dict[str, str] = {}  # call_id -> function name

    def parse(self, items: list[Any]) -> None:
        for i, raw in enumerate(items):
            path = f"input[{i}]"
            item = expect_dict(raw, path)
            kind = item.get("type")
            if kind is None:
                if "role" in item:
                    kind = "message"
                elif "id" in item:
                    kind = "item_reference"
                else:
                    raise bad_request(f"{path}.type", "required field is missing")
            kind = expect_str(kind, f"{path}.type")
            if kind == "message":
                self._message(item, path, i)
            elif kind == "function_call":
                call = parse_function_call(item, path)
                self.calls[call.id] = call.name
                self._run("assistant").content.append(call)
            elif kind == "function_call_output":
                self._run("tool").content.append(self._function_output(item, path))
            elif kind == "reasoning":
                self._run("assistant").content.append(parse_reasoning_item(item, path))
            elif kind in _OPAQUE_ITEMS:
                self._opaque(item)
            else:
                raise bad_request(f"{path}.type", f"unknown input item type {kind!r}")

    def _run(self, role: str) -> Message:
        if self.current is None or self.current.role != role:
            self.current = Message(role=role)  # type: ignore[arg-type]
            self._add(self.current)
        return self.current

    def _add(self, message: Message) -> None:
        if self.pending:
            message.extra.setdefault(MARK, {})["before"] = self.pending
            self.pending = []
        self.messages.append(message)

    def _opaque(self, item: dict[str, Any]) -> None:
        # The item keeps its place: it ends the current run and rides on the message before.
        self.current = None
        if self.messages:
            self.messages[-1].extra.setdefault(MARK, {}).setdefault("after", []).append(item)
        else:
            self.pending.append(item)

    def _message(self, item: dict[str, Any], path: str, index: int) -> None:
        role = item.get("role")
        if role is None:
            raise bad_request(f"{path}.role", "required field is missing")
        role = expect_str(role, f"{path}.role")
        if role not in _ROLES:
            raise bad_request(f"{path}.role", f"unknown role {role!r}")
        if "content" not in item:
            raise bad_request(f"{path}.content", "required field is missing")
        raw = item["content"]
        is_string = isinstance(raw, str)
        default_type = "output_text" if role == "assistant" else "input_text"
        if is_string:
            parts: list[Text | Image | File] = [Text(text=raw)]
        else:
            parts = [
                parse_content_part(p, f"{path}.content[{j}]", default_type)
                for j, p in enumerate(expect_list(raw, f"{path}.content"))
            ]
        fields = unknown_fields(item, _KEYS_ROLE_CONTENT)
        if role in ("system", "developer"):
            for j, part in enumerate(parts):
                if not isinstance(part, Text):
                    raise bad_request(
                        f"{path}.content[{j}].type", f"only text is supported in {role} messages"
                    )
                marker: dict[str, Any] = {"at": index}
                if j == 0:
                    marker.update(role=role, item=fields, string=is_string)
                part.extra[MARK] = marker
                self.system.append(part)
            return
        if role == "assistant":
            texts = [p for p in parts if isinstance(p, Text)]
            if len(texts) != len(parts):
                raise bad_request(f"{path}.content", "assistant messages carry text only")
            if not texts:
                self._opaque(item)  # an empty message item has no unified form
                return
            texts[0].extra[MARK] = {"item": fields, "string": is_string}
            self._run("assistant").content.extend(texts)
            return
        self.current = None
        message = Message(role="user", content=list(parts), extra=fields)
        if is_string:
            message.extra[MARK] = {"string": True}
        self._add(message)

    def _function_output(self, item: dict[str, Any], path: str) -> ToolResult:
        call_id = expect_str(item.get("call_id"), f"{path}.call_id")
        if call_id not in self.calls and not self.allow_unmatched:
            raise bad_request(f"{path}.call_id", f"no matching tool call for call_id {call_id!r}")
        if "output" not in item:
            raise bad_request(f"{path}.output", "required field is missing")
        raw = item["output"]
        extra = unknown_fields(item, _KEYS_TYPE_CALL_ID_OUTPUT)
        if isinstance(raw, str):
            content: list[Text | Image | File] = [Text(text=raw)]
            extra[MARK] = {"string": True}
        else:
            content = [
                parse_content_part(p, f"{path}.output[{j}]", "input_text")
                for j, p in enumerate(expect_list(raw, f"{path}.output"))
            ]
        return ToolResult(
            tool_call_id=call_id, name=self.calls.get(call_id), content=content, extra=extra
        )


def _parse_tool(raw: Any, path: str) -> Tool:
    tool = expect_dict(raw, path)
    kind = expect_str(tool.get("type"), f"{path}.type")
    if kind != "function":
        # Built-in tools (web_search, file_search, mcp, custom ...) keep their native body.
        label = tool.get("name") or tool.get("server_label") or kind
        return Tool(name=str(label), type=kind, extra=unknown_fields(tool, _KEYS_TYPE))
    name = expect_str(tool.get("name"), f"{path}.name")
    extra = {k: v for k, v in tool.items() if k not in _FUNCTION_TOOL_FIELDS or v is None}
    result = Tool(name=name, extra=extra)
    if tool.get("description") is not None:
        result.description = expect_str(tool["description"], f"{path}.description")
    if tool.get("parameters") is not None:
        result.parameters = expect_dict(tool["parameters"], f"{path}.parameters")
    if tool.get("strict") is not None:
        result.strict = expect_bool(tool["strict"], f"{path}.strict")
    return result


def _parse_tool_choice(raw: Any) -> tuple[ToolChoice, Any]:
    """The unified choice, and the raw value when the unified one only approximates it."""
    if isinstance(raw, str):
        if raw not in _TOOL_CHOICE_MODES:
            raise bad_request("tool_choice", f"unknown tool_choice {raw!r}")
        return ToolChoice(mode=raw), None  # type: ignore[arg-type]
    choice = expect_dict(raw, "tool_choice")
    kind = expect_str(choice.get("type"), "tool_choice.type")
    if kind == "function":
        name = expect_str(choice.get("name"), "tool_choice.name")
        exact = choice == {"type": "function", "name": name}
        return ToolChoice(mode="tool", name=name), None if exact else choice
    if kind == "allowed_tools":
        mode = choice.get("mode")
        return ToolChoice(mode="required" if mode == "required" else "auto"), choice
    if kind == "custom" and isinstance(choice.get("name"), str):
        return ToolChoice(mode="tool", name=choice["name"]), choice
    # A hosted tool (web_search_preview, file_search, mcp ...): some tool must be used.
    return ToolChoice(mode="required"), choice


def _parse_reasoning_config(raw: Any) -> tuple[ReasoningConfig, dict[str, Any]]:
    body = expect_dict(raw, "reasoning")
    config = ReasoningConfig()
    rest = {k: v for k, v in body.items() if k not in ("effort", "summary") or v is None}
    if body.get("effort") is not None:
        config.effort = expect_str(body["effort"], "reasoning.effort")
        config.enabled = config.effort != "none"
    if body.get("summary") is not None:
        config.summary = expect_str(body["summary"], "reasoning.summary")
    return config, rest


def _parse_format(raw: Any) -> tuple[OutputFormat, dict[str, Any]]:
    fmt = expect_dict(raw, "text.format")
    kind = expect_str(fmt.get("type"), "text.format.type")
    if kind not in ("text", "json_object", "json_schema"):
        raise bad_request("text.format.type", f"unknown format type {kind!r}")
    out = OutputFormat(type=kind)  # type: ignore[arg-type]
    rest = {k: v for k, v in fmt.items() if k not in _FORMAT_FIELDS or v is None}
    if kind == "json_schema":
        out.name = expect_str(fmt.get("name"), "text.format.name")
        out.schema = expect_dict(fmt.get("schema"), "text.format.schema")
        if fmt.get("strict") is not None:
            out.strict = expect_bool(fmt["strict"], "text.format.strict")
        if fmt.get("description") is not None:
            out.description = expect_str(fmt["description"], "text.format.description")
    return out, rest


def _system_items(system: list[Text]) -> list[tuple[int, dict[str, Any]]]:
    """system/developer message items back at their place in ``input``."""
    grouped: dict[int, tuple[dict[str, Any], list[Text]]] = {}
    for text in system:
        marker = marks_of(text.extra, MARK)
        if "at" not in marker:
            continue
        at = marker["at"]
        if at not in grouped or "role" in marker:
            grouped[at] = (marker, grouped[at][1] if at in grouped else [])
        grouped[at][1].append(text)
    out = []
    for at in sorted(grouped):
        marker, texts = grouped[at]
        item = dict(marker.get("item", {}))
        item["role"] = marker.get("role", "developer")
        if marker.get("string") and len(texts) == 1:
            item["content"] = texts[0].text
        else:
            item["content"] = [text_part(t, True, "input_text") for t in texts]
        out.append((at, item))
    return out


def _user_items(message: Message, own: bool, mark: dict[str, Any]) -> list[dict[str, Any]]:
    """A user or tool message: ``function_call_output`` items for its tool results, one user
    ``message`` item for the rest (Anthropic puts both in one user turn)."""
    items: list[dict[str, Any]] = []
    pending: list[Part] = []

    def flush() -> None:
        if not pending:
            return
        if own and mark.get("string") and len(pending) == 1 and isinstance(pending[0], Text):
            content: Any = pending[0].text
        elif not own and len(pending) == 1 and isinstance(pending[0], Text):
            content = pending[0].text
        else:
            content = content_parts(pending, own)
        item = wire_fields(message.extra, MARK) if own else {}
        item.update(role="user", content=content)
        items.append(item)
        pending.clear()

    for part in message.content:
        if isinstance(part, ToolResult):
            flush()
            items.append(function_output_item(part, own))
        elif not isinstance(part, (ToolCall, Reasoning)):
            pending.append(part)
    flush()
    if not items and message.role == "user" and own:
        item = wire_fields(message.extra, MARK)
        item.update(role="user", content=[])
        items.append(item)
    return items


def _build_tool(tool: Tool, own: bool) -> dict[str, Any] | None:
    if tool.type != "function":
        # Built-in tools only go back to the protocol they were written for.
        return {"type": tool.type, **wire_fields(tool.extra, MARK)} if own else None
    out: dict[str, Any] = {"type": "function", "name": tool.name}
    if tool.description is not None:
        out["description"] = tool.description
    if tool.parameters is not None:
        out["parameters"] = tool.parameters
    elif not own:
        out["parameters"] = {"type": "object", "properties": {}}
    if tool.strict is not None:
        out["strict"] = tool.strict
    elif not own:
        out["strict"] = False  # Responses defaults to strict; foreign schemas rarely comply
    if own:
        out.update(wire_fields(tool.extra, MARK))
    return out


def _build_reasoning_config(
    config: ReasoningConfig | None, own: bool, mark: dict[str, Any]
) -> dict[str, Any] | None:
    if config is None:
        return None
    out: dict[str, Any] = {}
    if own:
        out.update(mark.get("reasoning", {}))
    elif config.enabled is False:
        return None  # no portable "off" switch: leave the model's default
    effort = config.effort
    if effort is None and config.budget_tokens is not None:
        effort = budget_to_effort(config.budget_tokens)
    if effort is not None:
        out["effort"] = effort
    summary = config.summary
    if summary is None and not own and config.include_thoughts:
        summary = "auto"
    if summary is not None:
        out["summary"] = summary
    return out


def _build_format(output: OutputFormat, own: bool, mark: dict[str, Any]) -> dict[str, Any]:
    fmt: dict[str, Any] = {"type": output.type}
    if output.type == "json_schema":
        fmt["name"] = output.name or "response"
        if output.description is not None:
            fmt["description"] = output.description
        fmt["schema"] = output.schema or {"type": "object"}
        if output.strict is not None:
            fmt["strict"] = output.strict
    if own:
        fmt.update(mark.get("format", {}))
    return fmt
