"""OpenAI Responses requests: a client's body parsed and validated into the unified ``Request``
(errors name the field), and the unified ``Request`` built into the provider's body."""

from __future__ import annotations

from collections.abc import Iterable
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
    new_id,
)
from ..base import bad_request
from ..unknown_fields import marker_key, marks_of, unknown_fields, wire_fields

NAME = "openai_responses"

MARK = marker_key(NAME)

_ROLES = frozenset({"user", "assistant", "system", "developer"})
_TOOL_CHOICE_MODES = frozenset({"auto", "none", "required"})
_REASONING_SEP = "\n\n"
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
_KEYS_TYPE_CALL_ID_NAME_ARGUMENTS = frozenset({"type", "call_id", "name", "arguments"})
_KEYS_TYPE_CALL_ID_OUTPUT = frozenset({"type", "call_id", "output"})
_KEYS_TYPE_FILE_ID_FILE_URL_FILE_DATA_FILENAME = frozenset(
    {"type", "file_id", "file_url", "file_data", "filename"}
)
_KEYS_TYPE_ID_SUMMARY_ENCRYPTED_CONTENT = frozenset({"type", "id", "summary", "encrypted_content"})
_KEYS_TYPE_IMAGE_URL_DETAIL = frozenset({"type", "image_url", "detail"})


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
    body.update(_build_settings(request, own, mark))
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
            items.extend(_assistant_items(message.content, own, for_response=False))
        else:
            items.extend(_user_items(message, own, msg_mark))
        items.extend(msg_mark.get("after", ()))
    if own:
        items.extend(mark.get("opaque", ()))
        for at, item in _system_items(request.system):
            items.insert(min(at, len(items)), item)
    return items


def _build_settings(request: Request, own: bool, mark: dict[str, Any]) -> dict[str, Any]:
    """Every request field but ``model``/``input``/``stream``: shared with the echo that
    a built response carries."""
    out: dict[str, Any] = {}
    instructions = [t.text for t in request.system if not (own and MARK in t.extra)]
    if instructions:
        out["instructions"] = _REASONING_SEP.join(instructions)
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
                call = _parse_function_call(item, path)
                self.calls[call.id] = call.name
                self._run("assistant").content.append(call)
            elif kind == "function_call_output":
                self._run("tool").content.append(self._function_output(item, path))
            elif kind == "reasoning":
                self._run("assistant").content.append(_parse_reasoning_item(item, path))
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
                _parse_content_part(p, f"{path}.content[{j}]", default_type)
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
                _parse_content_part(p, f"{path}.output[{j}]", "input_text")
                for j, p in enumerate(expect_list(raw, f"{path}.output"))
            ]
        return ToolResult(
            tool_call_id=call_id, name=self.calls.get(call_id), content=content, extra=extra
        )


def _parse_content_part(raw: Any, path: str, default_type: str) -> Text | Image | File:
    part = expect_dict(raw, path)
    kind = part.get("type")
    if kind in ("input_text", "output_text", "refusal"):
        key = "refusal" if kind == "refusal" else "text"
        text = expect_str(part.get(key), f"{path}.{key}")
        extra = unknown_fields(part, frozenset({"type", key}))
        if kind != default_type:
            extra["type"] = kind
        return Text(text=text, extra=extra)
    if kind == "input_image":
        url, file_id = part.get("image_url"), part.get("file_id")
        if url is None and file_id is None:
            raise bad_request(path, "input_image needs image_url or file_id")
        image = Image(extra=unknown_fields(part, _KEYS_TYPE_IMAGE_URL_DETAIL))
        if url is not None:
            image.url = expect_str(url, f"{path}.image_url")
        if part.get("detail") is not None:
            image.detail = expect_str(part["detail"], f"{path}.detail")
        elif "detail" in part:
            image.extra["detail"] = None
        return image
    if kind == "input_file":
        file = File(extra=unknown_fields(part, _KEYS_TYPE_FILE_ID_FILE_URL_FILE_DATA_FILENAME))
        for key, attr in (("file_id", "file_id"), ("file_url", "url"), ("filename", "filename")):
            if part.get(key) is not None:
                setattr(file, attr, expect_str(part[key], f"{path}.{key}"))
            elif key in part:
                file.extra[key] = None
        if part.get("file_data") is not None:
            data = expect_str(part["file_data"], f"{path}.file_data")
            head, sep, b64 = data.partition(";base64,")
            if sep and head.startswith("data:"):
                file.media_type, file.data = head[5:], b64
            else:
                file.data = data
        return file
    if kind is None:
        raise bad_request(f"{path}.type", "required field is missing")
    raise bad_request(f"{path}.type", f"unknown content part type {kind!r}")


def _parse_function_call(item: dict[str, Any], path: str) -> ToolCall:
    call_id = expect_str(item.get("call_id"), f"{path}.call_id")
    name = expect_str(item.get("name"), f"{path}.name")
    arguments = expect_str(item.get("arguments"), f"{path}.arguments")
    extra = unknown_fields(item, _KEYS_TYPE_CALL_ID_NAME_ARGUMENTS)
    return ToolCall(id=call_id, name=name, arguments=arguments, extra=extra)


def _parse_reasoning_item(item: dict[str, Any], path: str) -> Reasoning:
    summary = item.get("summary")
    texts: list[str] = []
    canonical = isinstance(summary, list)
    for j, part in enumerate(summary if isinstance(summary, list) else ()):
        part = expect_dict(part, f"{path}.summary[{j}]")
        texts.append(expect_str(part.get("text"), f"{path}.summary[{j}].text"))
        canonical = canonical and part == {"type": "summary_text", "text": texts[-1]}
    canonical = canonical and len(texts) <= 1
    if not texts:
        # Open-weight models put the reasoning itself in ``content`` (reasoning_text).
        content = item.get("content")
        for part in content if isinstance(content, list) else ():
            if isinstance(part, dict) and isinstance(part.get("text"), str):
                texts.append(part["text"])
        canonical = canonical and not texts
    extra = unknown_fields(item, _KEYS_TYPE_ID_SUMMARY_ENCRYPTED_CONTENT)
    if "summary" not in item:
        extra[MARK] = {"no_summary": True}
    elif not canonical:
        extra["summary"] = summary
    reasoning = Reasoning(text=_REASONING_SEP.join(texts), source=NAME, extra=extra)
    if item.get("id") is not None:
        reasoning.id = expect_str(item["id"], f"{path}.id")
    elif "id" in item:
        extra["id"] = None
    if item.get("encrypted_content") is not None:
        reasoning.redacted = expect_str(item["encrypted_content"], f"{path}.encrypted_content")
    elif "encrypted_content" in item:
        extra["encrypted_content"] = None
    return reasoning


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
            item["content"] = [_text_part(t, True, "input_text") for t in texts]
        out.append((at, item))
    return out


def _text_part(text: Text, own: bool, default_type: str) -> dict[str, Any]:
    extra = wire_fields(text.extra, MARK) if own else {}
    kind = extra.pop("type", default_type)
    part = {"type": kind, ("refusal" if kind == "refusal" else "text"): text.text}
    if kind == "output_text" and not own:
        part["annotations"] = []
    part.update(extra)
    return part


def _media_part(part: Image | File, own: bool) -> dict[str, Any] | None:
    extra = wire_fields(part.extra, MARK) if own else {}
    if isinstance(part, Image):
        out: dict[str, Any] = {"type": "input_image"}
        if part.url is not None:
            out["image_url"] = part.url
        elif part.data is not None:
            out["image_url"] = f"data:{part.media_type or 'image/png'};base64,{part.data}"
        elif "file_id" not in extra:
            return None
        if part.detail is not None:
            out["detail"] = part.detail
        elif not own:
            out["detail"] = "auto"  # required by the API reference
        out.update(extra)
        return out
    out = {"type": "input_file"}
    if part.file_id is not None:
        out["file_id"] = part.file_id
    if part.url is not None:
        out["file_url"] = part.url
    if part.data is not None:
        if part.media_type is not None:
            out["file_data"] = f"data:{part.media_type};base64,{part.data}"
        elif own:
            out["file_data"] = part.data
        else:
            out["file_data"] = f"data:application/octet-stream;base64,{part.data}"
    if part.filename is not None:
        out["filename"] = part.filename
    elif part.data is not None and not own:
        out["filename"] = "file"  # the API wants a filename with inline file_data
    if len(out) == 1 and not extra:
        return None
    out.update(extra)
    return out


def _content_parts(parts: Iterable[Part], own: bool) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for part in parts:
        if isinstance(part, Text):
            out.append(_text_part(part, own, "input_text"))
        elif isinstance(part, (Image, File)):
            built = _media_part(part, own)
            if built is not None:
                out.append(built)
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
            content = _content_parts(pending, own)
        item = wire_fields(message.extra, MARK) if own else {}
        item.update(role="user", content=content)
        items.append(item)
        pending.clear()

    for part in message.content:
        if isinstance(part, ToolResult):
            flush()
            items.append(_function_output_item(part, own))
        elif not isinstance(part, (ToolCall, Reasoning)):
            pending.append(part)
    flush()
    if not items and message.role == "user" and own:
        item = wire_fields(message.extra, MARK)
        item.update(role="user", content=[])
        items.append(item)
    return items


def _function_output_item(result: ToolResult, own: bool) -> dict[str, Any]:
    texts = [p for p in result.content if isinstance(p, Text)]
    if own:
        string = bool(marks_of(result.extra, MARK).get("string"))
    else:
        string = len(result.content) <= 1 and len(texts) == len(result.content)
    output: Any
    if string:
        output = texts[0].text if texts else ""
    else:
        output = _content_parts(result.content, own)
    item: dict[str, Any] = {"type": "function_call_output", "call_id": result.tool_call_id}
    item["output"] = output
    if own:
        item.update(wire_fields(result.extra, MARK))
    return item


def _assistant_items(
    parts: Iterable[Part], own: bool, *, for_response: bool
) -> list[dict[str, Any]]:
    """Assistant parts -> ``reasoning`` / ``message`` / ``function_call`` items, for a
    request's history or a response's ``output``."""
    items: list[dict[str, Any]] = []
    message: dict[str, Any] | None = None  # the message item consecutive texts go into
    string = False
    for part in parts:
        if not isinstance(part, Text):
            message = None
        if isinstance(part, Text):
            marker = marks_of(part.extra, MARK) if own else {}
            built = _text_part(part, own, "output_text")
            if for_response and built["type"] == "output_text":
                built.setdefault("annotations", [])
                if not own:
                    built["logprobs"] = []
            if "item" in marker or message is None:
                string = bool(marker.get("string"))
                if "item" in marker:
                    message = dict(marker["item"])
                elif for_response:
                    message = {"id": new_id("msg_"), "type": "message", "status": "completed"}
                else:
                    message = {}
                    string = True  # foreign history: the plain ``{"role", "content"}`` shape
                message["role"] = "assistant"
                message["content"] = part.text if string else [built]
                items.append(message)
                if not own and not for_response:
                    message = None  # one plain message per foreign text, nothing glued
            elif string:
                # A second text in a string-content message: becomes list content.
                message["content"] = [
                    _text_part(Text(text=message["content"]), own, "output_text"),
                    built,
                ]
                string = False
            else:
                message["content"].append(built)
        elif isinstance(part, ToolCall):
            item = {
                "type": "function_call",
                "call_id": part.id,
                "name": part.name,
                "arguments": part.arguments,
            }
            if own:
                item.update(wire_fields(part.extra, MARK))
            elif for_response:
                item.update(id=new_id("fc_"), status="completed")
            items.append(item)
        elif isinstance(part, Reasoning):
            built_reasoning = _reasoning_item(part, own, for_response)
            if built_reasoning is not None:
                items.append(built_reasoning)
    return items


def _reasoning_item(part: Reasoning, own: bool, for_response: bool) -> dict[str, Any] | None:
    ours = part.source == NAME
    if not ours and not (for_response and part.text):
        # A rs_ id or encrypted_content OpenAI did not issue is rejected upstream.
        return None
    if ours and part.id is None and not for_response and not own:
        return None
    item: dict[str, Any] = {"type": "reasoning"}
    if ours and part.id is not None:
        item["id"] = part.id
    elif for_response:
        item["id"] = new_id("rs_")
    item["summary"] = [{"type": "summary_text", "text": part.text}] if part.text else []
    if ours and part.redacted is not None:
        item["encrypted_content"] = part.redacted
    if own and ours:
        item.update(wire_fields(part.extra, MARK))
        if marks_of(part.extra, MARK).get("no_summary"):
            del item["summary"]
    return item


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
