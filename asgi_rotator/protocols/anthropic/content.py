"""Messages API content blocks, read into the unified model and written back.

Text, images, documents, tool use and results, thinking and opaque blocks, shared by the
request and the response, with the codec's name, marker key and JSON helpers."""

from __future__ import annotations

import base64
import binascii
from typing import Any
from urllib.parse import unquote

import msgspec

from ...unified import File, Image, Part, Reasoning, Text, ToolCall, ToolResult
from .._common import expect_bool, expect_dict, expect_list, expect_str
from ..base import bad_request
from ..unknown_fields import marker_key, marks_of, unknown_fields, wire_fields, with_marks

NAME = "anthropic_messages"
MARK = marker_key(NAME)
encode_json = msgspec.json.Encoder().encode
_decode_json = msgspec.json.Decoder().decode

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

# Base64 prefixes of the image formats Anthropic accepts, for images given without a type.
_IMAGE_MAGIC = (
    ("iVBOR", "image/png"),
    ("/9j/", "image/jpeg"),
    ("R0lG", "image/gif"),
    ("UklG", "image/webp"),
)

KEYS_TYPE_DATA = frozenset({"type", "data"})
KEYS_TYPE_ID_NAME_INPUT = frozenset({"type", "id", "name", "input"})
_KEYS_TYPE_SOURCE = frozenset({"type", "source"})
_KEYS_TYPE_SOURCE_TITLE = frozenset({"type", "source", "title"})
KEYS_TYPE_TEXT = frozenset({"type", "text"})
KEYS_TYPE_THINKING_SIGNATURE = frozenset({"type", "thinking", "signature"})
_KEYS_TYPE_TOOL_USE_ID_CONTENT_IS_ERROR = frozenset({"type", "tool_use_id", "content", "is_error"})


def insert_opaque(blocks: list[dict[str, Any]], opaque: Any) -> None:
    for position, raw in opaque or ():
        blocks.insert(min(position, len(blocks)), raw)


def _is_opaque(block_type: str) -> bool:
    return (
        block_type in _OPAQUE_BLOCKS
        or block_type.endswith("_tool_result")
        or block_type.endswith("_tool_use")
    )


def json_text(value: Any) -> str:
    return encode_json(value).decode()


def _arguments_object(arguments: str) -> dict[str, Any]:
    """Tool-call arguments as the ``input`` object Anthropic requires; text that is not a JSON
    object (a model's broken output from another provider) becomes ``{}``."""
    try:
        value = _decode_json(arguments) if arguments.strip() else {}
    except (msgspec.DecodeError, RecursionError):
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


class BlockRun:
    """Consecutive blocks of one message that become one unified message."""

    __slots__ = ("is_tool", "opaque", "parts")

    def __init__(self, is_tool: bool = False) -> None:
        self.parts: list[Part] = []
        self.opaque: list[list[Any]] = []  # [position, block] of blocks kept verbatim
        self.is_tool = is_tool


def parse_content(
    blocks: list[Any], path: str, tool_names: dict[str, str], *, split: bool
) -> list[BlockRun]:
    """A message's blocks as runs.  With ``split`` (user messages) ``tool_result`` blocks form
    runs of their own, which become ``tool`` messages; otherwise all blocks make one run."""
    runs: list[BlockRun] = []
    for j, raw in enumerate(blocks):
        bpath = f"{path}[{j}]"
        block = expect_dict(raw, bpath)
        block_type = expect_str(block.get("type"), f"{bpath}.type")
        part = _parse_part(block, block_type, bpath, tool_names)
        if not runs:
            runs.append(BlockRun())
        run = runs[-1]
        if part is None:
            run.opaque.append([len(run.parts) + len(run.opaque), block])
            continue
        is_tool = split and block_type == "tool_result"
        if run.is_tool != is_tool:
            if run.parts:
                run = BlockRun(is_tool)
                runs.append(run)
            else:
                run.is_tool = is_tool  # only verbatim blocks so far: the run takes this kind
        run.parts.append(part)
    return runs


def _parse_part(
    block: dict[str, Any], block_type: str, path: str, tool_names: dict[str, str]
) -> Part | None:
    if block_type == "text":
        return parse_text(block, path)
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
            arguments=json_text(tool_input),
            extra=unknown_fields(block, KEYS_TYPE_ID_NAME_INPUT),
        )
    if block_type == "tool_result":
        return _parse_tool_result(block, path, tool_names)
    if block_type == "thinking":
        return Reasoning(
            text=expect_str(block.get("thinking"), f"{path}.thinking"),
            signature=expect_str(block.get("signature"), f"{path}.signature"),
            source=NAME,
            extra=unknown_fields(block, KEYS_TYPE_THINKING_SIGNATURE),
        )
    if block_type == "redacted_thinking":
        return Reasoning(
            redacted=expect_str(block.get("data"), f"{path}.data"),
            source=NAME,
            extra=unknown_fields(block, KEYS_TYPE_DATA),
        )
    if _is_opaque(block_type):
        return None
    raise bad_request(f"{path}.type", f"unknown content block type {block_type!r}")


def parse_text(block: dict[str, Any], path: str) -> Text:
    if block.get("type") != "text":
        raise bad_request(f"{path}.type", "expected a text block")
    return Text(
        text=expect_str(block.get("text"), f"{path}.text"),
        extra=unknown_fields(block, KEYS_TYPE_TEXT),
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
                part = parse_text(item, cpath)
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


def is_plain_text(parts: list[Any]) -> bool:
    return len(parts) == 1 and isinstance(parts[0], Text) and not parts[0].extra


def build_input_block(part: Part, same: bool, path: str) -> dict[str, Any] | None:
    if isinstance(part, Text):
        if not same and not part.text:
            return None  # Anthropic rejects empty text blocks
        return with_extra({"type": "text", "text": part.text}, part.extra, same)
    if isinstance(part, Image):
        return _build_image(part, same, path)
    if isinstance(part, File):
        return _build_file(part, same, path)
    if isinstance(part, ToolCall):
        return build_tool_use(part, same)
    if isinstance(part, ToolResult):
        return _build_tool_result(part, same, path)
    if isinstance(part, Reasoning):
        # Only Anthropic-signed reasoning goes back; Anthropic verifies the payload.
        if part.source != NAME or not (part.signature or part.redacted):
            return None
        return build_reasoning_block(part, same)
    return None


def with_extra(block: dict[str, Any], extra: dict[str, Any], same: bool) -> dict[str, Any]:
    if same and extra:
        return {**wire_fields(extra, MARK), **block}
    return block


def build_tool_use(part: ToolCall, same: bool) -> dict[str, Any]:
    block = {
        "type": "tool_use",
        "id": part.id,
        "name": part.name,
        "input": _arguments_object(part.arguments),
    }
    return with_extra(block, part.extra, same)


def build_reasoning_block(part: Reasoning, same: bool) -> dict[str, Any]:
    if part.redacted:
        return with_extra({"type": "redacted_thinking", "data": part.redacted}, part.extra, same)
    block = {"type": "thinking", "thinking": part.text, "signature": part.signature or ""}
    return with_extra(block, part.extra, same)


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
    return with_extra({"type": "image", "source": source}, part.extra, same)


def _build_file(part: File, same: bool, path: str) -> dict[str, Any] | None:
    marks = marks_of(part.extra, MARK) if same else {}
    if marks.get("image") and part.file_id is not None:
        block = {"type": "image", "source": {"type": "file", "file_id": part.file_id}}
        return with_extra(block, part.extra, same)
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
    return with_extra(block, part.extra, same)


def _build_tool_result(part: ToolResult, same: bool, path: str) -> dict[str, Any]:
    marks = marks_of(part.extra, MARK) if same else {}
    block: dict[str, Any] = wire_fields(part.extra, MARK) if same else {}
    block.update(type="tool_result", tool_use_id=part.tool_call_id)
    if (marks.get("content") == "string" or not same) and is_plain_text(part.content):
        block["content"] = part.content[0].text  # type: ignore[union-attr]
    elif part.content or marks.get("content") == "list" or marks.get("blocks"):
        items = [
            b
            for k, item in enumerate(part.content)
            if (b := build_input_block(item, same, f"{path}.content[{k}]")) is not None
        ]
        insert_opaque(items, marks.get("blocks"))
        block["content"] = items
    if part.is_error:
        block["is_error"] = True
    return block
