"""Responses API content, read into the unified model and written back.

Content parts, function calls and reasoning items, shared by the request (input items) and the
response (output items), with the codec's name and marker key."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from ...unified import File, Image, Part, Reasoning, Text, ToolCall, ToolResult
from .._common import expect_dict, expect_str, new_id
from ..base import bad_request
from ..unknown_fields import marker_key, marks_of, unknown_fields, wire_fields

NAME = "openai_responses"
MARK = marker_key(NAME)
REASONING_SEP = "\n\n"
_KEYS_TYPE_CALL_ID_NAME_ARGUMENTS = frozenset({"type", "call_id", "name", "arguments"})

_KEYS_TYPE_FILE_ID_FILE_URL_FILE_DATA_FILENAME = frozenset(
    {"type", "file_id", "file_url", "file_data", "filename"}
)

_KEYS_TYPE_ID_SUMMARY_ENCRYPTED_CONTENT = frozenset({"type", "id", "summary", "encrypted_content"})
_KEYS_TYPE_IMAGE_URL_DETAIL = frozenset({"type", "image_url", "detail"})


def parse_content_part(raw: Any, path: str, default_type: str) -> Text | Image | File:
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


def parse_function_call(item: dict[str, Any], path: str) -> ToolCall:
    call_id = expect_str(item.get("call_id"), f"{path}.call_id")
    name = expect_str(item.get("name"), f"{path}.name")
    arguments = expect_str(item.get("arguments"), f"{path}.arguments")
    extra = unknown_fields(item, _KEYS_TYPE_CALL_ID_NAME_ARGUMENTS)
    return ToolCall(id=call_id, name=name, arguments=arguments, extra=extra)


def parse_reasoning_item(item: dict[str, Any], path: str) -> Reasoning:
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
    reasoning = Reasoning(text=REASONING_SEP.join(texts), source=NAME, extra=extra)
    if item.get("id") is not None:
        reasoning.id = expect_str(item["id"], f"{path}.id")
    elif "id" in item:
        extra["id"] = None
    if item.get("encrypted_content") is not None:
        reasoning.redacted = expect_str(item["encrypted_content"], f"{path}.encrypted_content")
    elif "encrypted_content" in item:
        extra["encrypted_content"] = None
    return reasoning


def text_part(text: Text, own: bool, default_type: str) -> dict[str, Any]:
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


def content_parts(parts: Iterable[Part], own: bool) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for part in parts:
        if isinstance(part, Text):
            out.append(text_part(part, own, "input_text"))
        elif isinstance(part, (Image, File)):
            built = _media_part(part, own)
            if built is not None:
                out.append(built)
    return out


def function_output_item(result: ToolResult, own: bool) -> dict[str, Any]:
    texts = [p for p in result.content if isinstance(p, Text)]
    if own:
        string = bool(marks_of(result.extra, MARK).get("string"))
    else:
        string = len(result.content) <= 1 and len(texts) == len(result.content)
    output: Any
    if string:
        output = texts[0].text if texts else ""
    else:
        output = content_parts(result.content, own)
    item: dict[str, Any] = {"type": "function_call_output", "call_id": result.tool_call_id}
    item["output"] = output
    if own:
        item.update(wire_fields(result.extra, MARK))
    return item


def assistant_items(
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
            built = text_part(part, own, "output_text")
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
                    text_part(Text(text=message["content"]), own, "output_text"),
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
