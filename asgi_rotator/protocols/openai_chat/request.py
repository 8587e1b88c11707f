"""OpenAI Chat Completions requests: a client's body parsed and validated into the unified
``Request`` (errors name the field), and the unified ``Request`` built into the provider's
body."""

from __future__ import annotations

from typing import Any

from ...unified import (
    File,
    Image,
    Message,
    OutputFormat,
    Part,
    ReasoningConfig,
    Request,
    Text,
    Tool,
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
from ..unknown_fields import marks_of, unknown_fields, wire_fields, write_back
from .content import (
    MARK,
    build_assistant,
    build_content,
    build_file,
    get_field,
    list_or_none,
    parse_part,
    parse_reasoning,
    parse_tool_calls,
    short_repr,
    sniff_image,
    with_extra,
)

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

# The fields each shape names, for ``unknown_fields`` (made once, not per call).
_NAMED_MESSAGE_FIELDS = frozenset({"role", "content", "name"})
_ASSISTANT_FIELDS = _MESSAGE_FIELDS - {"tool_call_id"}
_TOOL_MESSAGE_FIELDS = frozenset({"role", "content", "tool_call_id"})
_TOOL_FIELDS = frozenset({"type", "function"})
_FUNCTION_FIELDS = frozenset({"name", "description", "parameters", "strict"})
_JSON_SCHEMA_FIELDS = frozenset({"name", "schema", "strict", "description"})
_RESPONSE_FORMAT_FIELDS = frozenset({"type", "json_schema"})


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
    if request.tools or request.tool_choice is not None or request.parallel_tool_calls is not None:
        _build_tools(request, same, marks, out)  # what it reads; most requests have none
    if request.max_tokens is not None:
        out[marks.get("max_tokens_field", max_tokens_field)] = request.max_tokens
    if request.temperature is not None:
        out["temperature"] = request.temperature
    if request.top_p is not None:
        out["top_p"] = request.top_p
    if request.presence_penalty is not None:
        out["presence_penalty"] = request.presence_penalty
    if request.frequency_penalty is not None:
        out["frequency_penalty"] = request.frequency_penalty
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
            functions.append(with_extra(fn, tool.extra))
            continue
        write_back(fn, tool_marks.get("function", {}), MARK)
        tools.append(with_extra({"type": "function", "function": fn}, tool.extra, same))
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
        model_name = body.get("model")
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
        elif "stream" in body and (value := body["stream"]) is not None:
            request.stream = expect_bool(value, "stream")
            if value is False:
                marks["stream"] = False
        if "stream_options" in body and (options := body["stream_options"]) is not None:
            options = dict(expect_dict(options, "stream_options"))
            if (include := options.pop("include_usage", None)) is not None:
                request.include_usage = expect_bool(include, "stream_options.include_usage")
            marks["stream_options"] = options
        if not body.keys().isdisjoint(_TOOLING_FIELDS):
            self._tools(body, request, marks)
        self._sampling(body, request, marks)
        if "reasoning_effort" in body and (effort := body["reasoning_effort"]) is not None:
            effort = expect_str(effort, "reasoning_effort")
            request.reasoning = ReasoningConfig(
                effort=effort, enabled=False if effort == "none" else None
            )
        if "response_format" in body and (fmt := body["response_format"]) is not None:
            request.output = _parse_response_format(fmt, marks)
        if "metadata" in body and (metadata := body["metadata"]) is not None:
            request.metadata = expect_dict(metadata, "metadata")
        if "user" in body and (user := body["user"]) is not None:
            request.user = expect_str(user, "user")
        extra = unknown_fields(body, _REQUEST_FIELDS, keep_null=True, keep_empty=True)
        # OpenRouter's opt-in for the cost in the usage object.  Answered by the gateway and
        # not sent on: OpenAI refuses parameters it does not know.
        usage_option = extra.get("usage")
        if isinstance(usage_option, dict) and set(usage_option) == {"include"}:
            request.include_cost = expect_bool(usage_option["include"], "usage.include")
            del extra["usage"]
        if "function_call" in body and body.get("tool_choice") is not None:
            extra["function_call"] = body["function_call"]  # both given: tool_choice rules
        if "max_tokens" in body and "max_completion_tokens" in body:
            extra["max_tokens"] = body["max_tokens"]  # both given: the newer one is the value
        if marks:
            extra[MARK] = marks
        request.extra = extra
        return request

    def _sampling(self, body: dict[str, Any], request: Request, marks: dict[str, Any]) -> None:
        for key in ("max_completion_tokens", "max_tokens"):
            if key in body and (value := body[key]) is not None:
                request.max_tokens = expect_int(value, key, minimum=1)
                marks["max_tokens_field"] = key
                break
        if not body.keys().isdisjoint(_NUMBER_FIELDS):  # most requests set none of them
            for key in _NUMBER_FIELDS:
                if key in body and (value := body[key]) is not None:
                    setattr(request, key, expect_number(value, key))
        if "seed" in body and (seed := body["seed"]) is not None:
            request.seed = expect_int(seed, "seed")
        stop = get_field(body, "stop") if "stop" in body else None
        if isinstance(stop, str):
            request.stop = [stop]
            marks["stop_string"] = True
        elif stop is not None:
            request.stop = [
                expect_str(s, f"stop[{i}]") for i, s in enumerate(expect_list(stop, "stop"))
            ]

    def _tools(self, body: dict[str, Any], request: Request, marks: dict[str, Any]) -> None:
        tools: list[Tool] = []
        for i, raw in enumerate(list_or_none(body, "tools")):
            tools.append(_parse_tool(raw, f"tools[{i}]"))
        for i, raw in enumerate(list_or_none(body, "functions")):
            tool = _parse_function(raw, f"functions[{i}]")
            tool.extra[MARK] = {"legacy": True}
            tools.append(tool)
        if tools:
            request.tools = tools
        if (parallel := body.get("parallel_tool_calls")) is not None:
            request.parallel_tool_calls = expect_bool(parallel, "parallel_tool_calls")
        key = "tool_choice"
        raw_choice = body.get(key)
        if raw_choice is None and body.get("function_call") is not None:
            key = "function_call"
            raw_choice = body[key]
            marks["legacy_choice"] = True
        if raw_choice is None:
            return
        choice = _tool_choice_of(raw_choice)
        if choice is None:
            raise bad_request(key, f"unsupported value {short_repr(raw_choice)}")
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
                if "name" in raw and (name := raw["name"]) is not None:
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
        if "name" in raw and (name := raw["name"]) is not None:
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
        return [parse_part(part, f"{path}.content[{j}]", role) for j, part in enumerate(parts)], {}

    def _assistant(self, raw: dict[str, Any], path: str) -> Message:
        parts, marks = self._content(raw, "assistant", path)
        reasoning, reasoning_rest = parse_reasoning(raw, self.origin)
        parts[:0] = reasoning
        calls = parse_tool_calls(raw, path, strict=True)
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
    if (description := raw.get("description")) is not None:
        tool.description = expect_str(description, f"{path}.description")
    if (parameters := raw.get("parameters")) is not None:
        tool.parameters = expect_dict(parameters, f"{path}.parameters")
    if (strict := raw.get("strict")) is not None:
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
    if (schema := spec.get("schema")) is not None:
        output.schema = expect_dict(schema, "response_format.json_schema.schema")
    if (strict := spec.get("strict")) is not None:
        output.strict = expect_bool(strict, "response_format.json_schema.strict")
    if (description := spec.get("description")) is not None:
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
    return with_extra(
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
                out.extend(self._user_or_tool(message, i))
                continue
            marks = marks_of(message.extra, MARK) if self.same else {}
            wire = build_assistant(message.content, self.origin, self.same, marks)
            if message.name is not None:
                wire["name"] = message.name
            out.append(with_extra(wire, message.extra, self.same))
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
                "content": build_content(texts, desc.get("content") == "string", self.same),
            }
            if "name" in desc:
                message["name"] = desc["name"]
            out.append(with_extra(message, desc.get("extra", {}), self.same))
        return out

    def _user_or_tool(self, message: Message, index: int) -> list[dict[str, Any]]:
        """Each tool result is its own ``tool`` message; the other parts make a user message
        after them (an Anthropic user turn can hold both).  ``index``: the message's place in
        ``request.messages``, for an error naming a part."""
        marks = marks_of(message.extra, MARK) if self.same else {}
        results: list[ToolResult] = []
        rest: list[Text | Image | File] = []
        texts_only = True
        for p in message.content:
            if isinstance(p, Text):
                rest.append(p)
            elif isinstance(p, ToolResult):
                results.append(p)
            elif isinstance(p, (Image, File)):
                rest.append(p)
                texts_only = False
        out: list[dict[str, Any]] = []
        for result in results:
            # Chat tool messages carry text only: images and files in a result are dropped.
            texts = [p for p in result.content if isinstance(p, Text)]
            content = build_content(texts, marks.get("content") == "string", self.same)
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
                if texts_only and (string or (not self.same and len(rest) <= 1)):
                    # A string, as sent (or as is usual): the parts need no building.
                    user["content"] = "".join([p.text for p in rest])  # type: ignore[union-attr]
                else:
                    user["content"] = [
                        self._part(p, f"messages[{index}].content[{j}]") for j, p in enumerate(rest)
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
                media = part.media_type or sniff_image(part.data or "")
                url = f"data:{media};base64,{part.data or ''}"
            image_url: dict[str, Any] = {"url": url}
            if part.detail is not None:
                image_url["detail"] = part.detail
            wire = {
                "type": "image_url",
                "image_url": with_extra(image_url, marks.get("image_url", {})),
            }
        else:
            wire = build_file(part, marks, path, self.same)
        return with_extra(wire, part.extra, self.same)
