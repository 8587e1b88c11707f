"""Anthropic Messages requests: a client's body parsed and validated into the unified
``Request`` (errors name the field), and the unified ``Request`` built into the provider's
body."""

from __future__ import annotations

import base64
import binascii
from typing import Any
from urllib.parse import unquote

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
    Role,
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
)
from ..base import bad_request
from ..unknown_fields import marker_key, marks_of, unknown_fields, wire_fields, with_marks

NAME = "anthropic_messages"

MARK = marker_key(NAME)

_encode_json = msgspec.json.Encoder().encode
_decode_json = msgspec.json.Decoder().decode

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

# Block types of the Messages API that the unified model does not name: carried verbatim for
# a same-protocol rebuild, dropped towards other protocols.  Any ``*_tool_use`` /
# ``*_tool_result`` type counts too, so new server tools pass without a release.
_OPAQUE_BLOCKS = frozenset(
    {
        "server_tool_use",
        "search_result",
        "container_upload",
        "tool_reference",
        "browser_state",
        "encrypted_code_execution_result",
    }
)

_CHOICE_FROM_WIRE = {"auto": "auto", "any": "required", "tool": "tool", "none": "none"}
_CHOICE_TO_WIRE = {v: k for k, v in _CHOICE_FROM_WIRE.items()}

# Base64 prefixes of the image formats Anthropic accepts, for images given without a type.
_IMAGE_MAGIC = (
    ("iVBOR", "image/png"),
    ("/9j/", "image/jpeg"),
    ("R0lG", "image/gif"),
    ("UklG", "image/webp"),
)
_THINKING_MIN_BUDGET = 1024
_THINKING_BLOCKS = ("thinking", "redacted_thinking")

# Known-key sets for ``unknown_fields``, made once rather than per call.
_KEYS_ROLE_CONTENT = frozenset({"role", "content"})
_KEYS_TYPE_DATA = frozenset({"type", "data"})
_KEYS_TYPE_ID_NAME_INPUT = frozenset({"type", "id", "name", "input"})
_KEYS_TYPE_SCHEMA = frozenset({"type", "schema"})
_KEYS_TYPE_SOURCE = frozenset({"type", "source"})
_KEYS_TYPE_SOURCE_TITLE = frozenset({"type", "source", "title"})
_KEYS_TYPE_TEXT = frozenset({"type", "text"})
_KEYS_TYPE_THINKING_SIGNATURE = frozenset({"type", "thinking", "signature"})
_KEYS_TYPE_TOOL_USE_ID_CONTENT_IS_ERROR = frozenset({"type", "tool_use_id", "content", "is_error"})
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
            _parse_text(expect_dict(b, f"system[{i}]"), f"system[{i}]")
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
    for key in ("temperature", "top_p", "top_k"):
        value = getattr(request, key)
        if value is not None:
            body[key] = value
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


def _insert_opaque(blocks: list[dict[str, Any]], opaque: Any) -> None:
    for position, raw in opaque or ():
        blocks.insert(min(position, len(blocks)), raw)


def _is_opaque(block_type: str) -> bool:
    return (
        block_type in _OPAQUE_BLOCKS
        or block_type.endswith("_tool_result")
        or block_type.endswith("_tool_use")
    )


def _json_text(value: Any) -> str:
    return _encode_json(value).decode()


def _arguments_object(arguments: str) -> dict[str, Any]:
    """Tool-call arguments as the ``input`` object Anthropic requires; text that is not a JSON
    object (a model's broken output from another provider) becomes ``{}``."""
    try:
        value = _decode_json(arguments) if arguments.strip() else {}
    except msgspec.DecodeError:
        return {}
    return value if isinstance(value, dict) else {}


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def _unb64(data: str) -> str:
    try:
        return base64.b64decode(data).decode("utf-8", "replace")
    except (binascii.Error, ValueError):
        return data


def _split_data_url(url: str) -> tuple[str | None, str] | None:
    """``data:<type>;base64,<data>`` -> (type, data); None for any other URL."""
    if not url.startswith("data:"):
        return None
    head, _, data = url[5:].partition(",")
    media_type = head.split(";", 1)[0] or None
    if ";base64" not in head:
        return media_type, _b64(unquote(data))  # RFC 2397: percent-encoded text
    return media_type, data


def _sniff_image_type(data: str) -> str:
    for prefix, media_type in _IMAGE_MAGIC:
        if data.startswith(prefix):
            return media_type
    return "image/png"


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
                _parse_text(expect_dict(b, f"{path}.content[{j}]"), f"{path}.content[{j}]")
                for j, b in enumerate(blocks)
            ]
            out.append(Message(role="user", content=texts, extra=with_marks(extra, MARK, marks)))
            continue
        runs = _parse_content(blocks, f"{path}.content", tool_names, split=role == "user")
        for g, run in enumerate(runs or [_Run()]):
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


class _Run:
    """Consecutive blocks of one message that become one unified message."""

    __slots__ = ("is_tool", "opaque", "parts")

    def __init__(self, is_tool: bool = False) -> None:
        self.parts: list[Part] = []
        self.opaque: list[list[Any]] = []  # [position, block] of blocks kept verbatim
        self.is_tool = is_tool


def _parse_content(
    blocks: list[Any], path: str, tool_names: dict[str, str], *, split: bool
) -> list[_Run]:
    """A message's blocks as runs.  With ``split`` (user messages) ``tool_result`` blocks form
    runs of their own, which become ``tool`` messages; otherwise all blocks make one run."""
    runs: list[_Run] = []
    for j, raw in enumerate(blocks):
        bpath = f"{path}[{j}]"
        block = expect_dict(raw, bpath)
        block_type = expect_str(block.get("type"), f"{bpath}.type")
        part = _parse_part(block, block_type, bpath, tool_names)
        if not runs:
            runs.append(_Run())
        run = runs[-1]
        if part is None:
            run.opaque.append([len(run.parts) + len(run.opaque), block])
            continue
        is_tool = split and block_type == "tool_result"
        if run.is_tool != is_tool:
            if run.parts:
                run = _Run(is_tool)
                runs.append(run)
            else:
                run.is_tool = is_tool  # only verbatim blocks so far: the run takes this kind
        run.parts.append(part)
    return runs


def _parse_part(
    block: dict[str, Any], block_type: str, path: str, tool_names: dict[str, str]
) -> Part | None:
    if block_type == "text":
        return _parse_text(block, path)
    if block_type == "image":
        return _parse_image(block, path)
    if block_type == "document":
        return _parse_document(block, path)
    if block_type == "tool_use":
        call_id = expect_str(block.get("id"), f"{path}.id")
        name = expect_str(block.get("name"), f"{path}.name")
        tool_input = expect_dict(block.get("input"), f"{path}.input")
        tool_names[call_id] = name
        return ToolCall(
            id=call_id,
            name=name,
            arguments=_json_text(tool_input),
            extra=unknown_fields(block, _KEYS_TYPE_ID_NAME_INPUT),
        )
    if block_type == "tool_result":
        return _parse_tool_result(block, path, tool_names)
    if block_type == "thinking":
        return Reasoning(
            text=expect_str(block.get("thinking"), f"{path}.thinking"),
            signature=expect_str(block.get("signature"), f"{path}.signature"),
            source=NAME,
            extra=unknown_fields(block, _KEYS_TYPE_THINKING_SIGNATURE),
        )
    if block_type == "redacted_thinking":
        return Reasoning(
            redacted=expect_str(block.get("data"), f"{path}.data"),
            source=NAME,
            extra=unknown_fields(block, _KEYS_TYPE_DATA),
        )
    if _is_opaque(block_type):
        return None
    raise bad_request(f"{path}.type", f"unknown content block type {block_type!r}")


def _parse_text(block: dict[str, Any], path: str) -> Text:
    if block.get("type") != "text":
        raise bad_request(f"{path}.type", "expected a text block")
    return Text(
        text=expect_str(block.get("text"), f"{path}.text"),
        extra=unknown_fields(block, _KEYS_TYPE_TEXT),
    )


def _parse_image(block: dict[str, Any], path: str) -> Image | File | None:
    source = expect_dict(block.get("source"), f"{path}.source")
    kind = source.get("type")
    extra = unknown_fields(block, _KEYS_TYPE_SOURCE)
    if kind == "base64":
        return Image(
            data=expect_str(source.get("data"), f"{path}.source.data"),
            media_type=expect_str(source.get("media_type"), f"{path}.source.media_type"),
            extra=extra,
        )
    if kind == "url":
        return Image(url=expect_str(source.get("url"), f"{path}.source.url"), extra=extra)
    if kind == "file":
        # An uploaded image is a provider file id to every protocol; marked to come back as image.
        return File(
            file_id=expect_str(source.get("file_id"), f"{path}.source.file_id"),
            extra=with_marks(extra, MARK, {"image": True}),
        )
    return None  # a source type this codec does not know: kept verbatim


def _parse_document(block: dict[str, Any], path: str) -> File | None:
    source = expect_dict(block.get("source"), f"{path}.source")
    kind = source.get("type")
    extra = unknown_fields(block, _KEYS_TYPE_SOURCE_TITLE)
    title = block.get("title")
    if title is None and "title" in block:
        extra["title"] = None
    filename = expect_str(title, f"{path}.title") if title is not None else None
    spath = f"{path}.source"
    if kind == "base64":
        return File(
            data=expect_str(source.get("data"), f"{spath}.data"),
            media_type=expect_str(source.get("media_type"), f"{spath}.media_type"),
            filename=filename,
            extra=extra,
        )
    if kind == "text":
        # Plain text travels base64 in the unified File; the rebuild decodes it again.
        return File(
            data=_b64(expect_str(source.get("data"), f"{spath}.data")),
            media_type=source["media_type"] if isinstance(source.get("media_type"), str) else None,
            filename=filename,
            extra=with_marks(extra, MARK, {"source": "text"}),
        )
    if kind == "url":
        return File(
            url=expect_str(source.get("url"), f"{spath}.url"), filename=filename, extra=extra
        )
    if kind == "file":
        return File(
            file_id=expect_str(source.get("file_id"), f"{spath}.file_id"),
            filename=filename,
            extra=extra,
        )
    if kind == "content":
        # Custom-content documents: other protocols get their text; Anthropic the original.
        content = source.get("content")
        if isinstance(content, str):
            text = content
        else:
            text = "\n".join(
                b["text"]
                for b in expect_list(content, f"{spath}.content")
                if isinstance(b, dict) and isinstance(b.get("text"), str)
            )
        return File(
            data=_b64(text),
            media_type="text/plain",
            filename=filename,
            extra=with_marks(extra, MARK, {"source": source}),
        )
    return None


def _parse_tool_result(block: dict[str, Any], path: str, tool_names: dict[str, str]) -> ToolResult:
    call_id = expect_str(block.get("tool_use_id"), f"{path}.tool_use_id")
    if call_id not in tool_names:
        raise bad_request(f"{path}.tool_use_id", f"{call_id!r} has no matching tool call")
    extra = unknown_fields(block, _KEYS_TYPE_TOOL_USE_ID_CONTENT_IS_ERROR, keep_null=True)
    marks: dict[str, Any] = {}
    result = ToolResult(tool_call_id=call_id, name=tool_names[call_id])
    content = block.get("content")
    if isinstance(content, str):
        result.content = [Text(text=content)]
        marks["content"] = "string"
    elif content is not None:
        marks["content"] = "list"
        opaque: list[list[Any]] = []
        for k, raw in enumerate(expect_list(content, f"{path}.content")):
            cpath = f"{path}.content[{k}]"
            item = expect_dict(raw, cpath)
            item_type = expect_str(item.get("type"), f"{cpath}.type")
            part: Part | None
            if item_type == "text":
                part = _parse_text(item, cpath)
            elif item_type == "image":
                part = _parse_image(item, cpath)
            elif item_type == "document":
                part = _parse_document(item, cpath)
            else:
                part = None
            if part is None:
                opaque.append([len(result.content) + len(opaque), item])
            else:
                result.content.append(part)  # type: ignore[arg-type]
        if opaque:
            marks["blocks"] = opaque
    if block.get("is_error") is not None:
        result.is_error = expect_bool(block["is_error"], f"{path}.is_error")
        if not result.is_error:
            extra["is_error"] = False
    result.extra = with_marks(extra, MARK, marks)
    return result


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
            if (b := _build_input_block(part, same, f"messages[{i}].content[{j}]")) is not None
        ]
        _insert_opaque(blocks, marks.get("blocks"))
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
        if marks.get("content") == "string" and _is_plain_text(message.content):
            wire["content"] = message.content[0].text  # type: ignore[union-attr]
        else:
            wire["content"] = blocks
        out.append(wire)
    if not same:
        for wire in out:
            if wire["role"] == "user":
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


def _is_plain_text(parts: list[Any]) -> bool:
    return len(parts) == 1 and isinstance(parts[0], Text) and not parts[0].extra


def _build_input_block(part: Part, same: bool, path: str) -> dict[str, Any] | None:
    if isinstance(part, Text):
        if not same and not part.text:
            return None  # Anthropic rejects empty text blocks
        return _with_extra({"type": "text", "text": part.text}, part.extra, same)
    if isinstance(part, Image):
        return _build_image(part, same, path)
    if isinstance(part, File):
        return _build_file(part, same, path)
    if isinstance(part, ToolCall):
        return _build_tool_use(part, same)
    if isinstance(part, ToolResult):
        return _build_tool_result(part, same, path)
    if isinstance(part, Reasoning):
        # Only Anthropic-signed reasoning goes back; Anthropic verifies the payload.
        if part.source != NAME or not (part.signature or part.redacted):
            return None
        return _build_reasoning_block(part, same)
    return None


def _with_extra(block: dict[str, Any], extra: dict[str, Any], same: bool) -> dict[str, Any]:
    if same and extra:
        return {**wire_fields(extra, MARK), **block}
    return block


def _build_tool_use(part: ToolCall, same: bool) -> dict[str, Any]:
    block = {
        "type": "tool_use",
        "id": part.id,
        "name": part.name,
        "input": _arguments_object(part.arguments),
    }
    return _with_extra(block, part.extra, same)


def _build_reasoning_block(part: Reasoning, same: bool) -> dict[str, Any]:
    if part.redacted:
        return _with_extra({"type": "redacted_thinking", "data": part.redacted}, part.extra, same)
    block = {"type": "thinking", "thinking": part.text, "signature": part.signature or ""}
    return _with_extra(block, part.extra, same)


def _build_image(part: Image, same: bool, path: str) -> dict[str, Any]:
    source: dict[str, Any]
    if part.data is not None:
        source = {
            "type": "base64",
            "media_type": part.media_type or _sniff_image_type(part.data),
            "data": part.data,
        }
    elif part.url is not None:
        inline = _split_data_url(part.url)
        if inline is not None:
            media_type, data = inline
            source = {
                "type": "base64",
                "media_type": media_type or _sniff_image_type(data),
                "data": data,
            }
        else:
            source = {"type": "url", "url": part.url}
    else:
        # Only another provider's file id (OpenAI Responses input_image) gets here.
        raise bad_request(
            path, "an image by file id cannot be sent to Anthropic; send it inline or by URL"
        )
    return _with_extra({"type": "image", "source": source}, part.extra, same)


def _build_file(part: File, same: bool, path: str) -> dict[str, Any] | None:
    marks = marks_of(part.extra, MARK) if same else {}
    if marks.get("image") and part.file_id is not None:
        block = {"type": "image", "source": {"type": "file", "file_id": part.file_id}}
        return _with_extra(block, part.extra, same)
    raw_source = marks.get("source")
    media_type, data = part.media_type, part.data
    if isinstance(raw_source, dict):
        source = raw_source
    elif part.file_id is not None:
        source = {"type": "file", "file_id": part.file_id}
    elif data is None and part.url is not None and not part.url.startswith("data:"):
        source = {"type": "url", "url": part.url}
    else:
        if data is None and part.url is not None:
            inline = _split_data_url(part.url)
            if inline is not None:
                media_type, data = inline[0] or media_type, inline[1]
        if data is None:
            return None
        if raw_source == "text" or (media_type or "").startswith("text/"):
            source = {"type": "text", "data": _unb64(data)}
            if media_type is not None or not same:
                source["media_type"] = media_type if same else "text/plain"
        elif media_type in (None, "application/pdf"):
            source = {"type": "base64", "media_type": "application/pdf", "data": data}
        elif media_type.startswith("image/") and not same:
            return {
                "type": "image",
                "source": {"type": "base64", "media_type": media_type, "data": data},
            }
        else:
            raise bad_request(
                path, f"Anthropic documents are PDF or plain text, not {media_type!r}"
            )
    block = {"type": "document", "source": source}
    if part.filename is not None:
        block["title"] = part.filename
    return _with_extra(block, part.extra, same)


def _build_tool_result(part: ToolResult, same: bool, path: str) -> dict[str, Any]:
    marks = marks_of(part.extra, MARK) if same else {}
    block: dict[str, Any] = wire_fields(part.extra, MARK) if same else {}
    block.update(type="tool_result", tool_use_id=part.tool_call_id)
    if (marks.get("content") == "string" or not same) and _is_plain_text(part.content):
        block["content"] = part.content[0].text  # type: ignore[union-attr]
    elif part.content or marks.get("content") == "list" or marks.get("blocks"):
        items = [
            b
            for k, item in enumerate(part.content)
            if (b := _build_input_block(item, same, f"{path}.content[{k}]")) is not None
        ]
        _insert_opaque(items, marks.get("blocks"))
        block["content"] = items
    if part.is_error:
        block["is_error"] = True
    return block


def _build_system(
    system: list[Text], same: bool, marks: dict[str, Any]
) -> str | list[dict[str, Any]]:
    if same:
        if marks.get("system") == "string" and _is_plain_text(system):
            return system[0].text
        return [_with_extra({"type": "text", "text": t.text}, t.extra, True) for t in system]
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
