"""Chat Completions message content, read into the unified model and written back.

Parts, media, tool calls and reasoning, and the small wire helpers every module of this codec
uses; the request and the response both carry messages, so both build on this module."""

from __future__ import annotations

import mimetypes
import re
from collections.abc import Iterable, Mapping
from typing import Any

import msgspec

from ...errors import GatewayError
from ...unified import File, Image, Part, Reasoning, Text, ToolCall
from .._common import expect_dict, expect_list, expect_str, new_id
from ..base import bad_request
from ..unknown_fields import marker_key, marks_of, own_marks, unknown_fields, write_back

MARK = marker_key("openai_chat")

# Content part types each role accepts (API reference, "Create chat completion" > messages).
_PART_TYPES = {
    "system": frozenset({"text"}),
    "developer": frozenset({"text"}),
    "tool": frozenset({"text"}),
    "function": frozenset({"text"}),
    "user": frozenset({"text", "image_url", "input_audio", "file"}),
    "assistant": frozenset({"text", "refusal"}),
}

REASONING_FIELDS = ("reasoning_content", "reasoning")  # DeepSeek/vLLM, then OpenRouter

_PART_FIELDS = {
    kind: frozenset({"type", kind}) for kind in frozenset().union(*_PART_TYPES.values())
}

_IMAGE_URL_FIELDS = frozenset({"url", "detail"})
_AUDIO_FIELDS = frozenset({"data", "format"})
_FILE_FIELDS = frozenset({"file_data", "file_id", "filename"})
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

encode_json = msgspec.json.Encoder().encode


def parse_part(part: Any, path: str, role: str) -> Text | Image | File:
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
        if (detail := body.get("detail")) is not None:
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
    if (file_data := body.get("file_data")) is not None:
        file_data = expect_str(file_data, f"{path}.file.file_data")
        if match := _DATA_URL.fullmatch(file_data):
            file.media_type, file.data = match.group(1), match.group(2)
        else:
            file.data = file_data
            _mark_native(file.extra, "raw_data", True)
    if (file_id := body.get("file_id")) is not None:
        file.file_id = expect_str(file_id, f"{path}.file.file_id")
    if (filename := body.get("filename")) is not None:
        file.filename = expect_str(filename, f"{path}.file.filename")
    if file.data is None and file.file_id is None:
        raise bad_request(f"{path}.file", "needs file_data or file_id")
    _mark_native(
        file.extra, "file", unknown_fields(body, _FILE_FIELDS, keep_null=True, keep_empty=True)
    )
    return file


def build_file(part: File, marks: dict[str, Any], path: str, same: bool) -> dict[str, Any]:
    fmt = _MEDIA_AUDIO_FORMAT.get(part.media_type or "")
    if part.data is not None and ("input_audio" in marks or fmt is not None):
        audio = {"data": part.data, "format": fmt or (part.media_type or "").rpartition("/")[2]}
        return {
            "type": "input_audio",
            "input_audio": with_extra(audio, marks.get("input_audio", {})),
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
    return {"type": "file", "file": with_extra(file, marks.get("file", {}))}


def build_assistant(
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
    tool_calls: list[dict[str, Any]] = []
    legacy: list[ToolCall] = []  # legacy function calls, of which the wire holds one
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
            if same and marks_of(part.extra, MARK).get("legacy"):
                legacy.append(part)
            else:
                tool_calls.append(_build_tool_call(part, same))
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
    if tool_calls:
        message["tool_calls"] = tool_calls
    if legacy:
        function_call = {"name": legacy[0].name, "arguments": legacy[0].arguments}
        message["function_call"] = with_extra(function_call, legacy[0].extra)
    return message


def _build_tool_call(call: ToolCall, same: bool) -> dict[str, Any]:
    marks = marks_of(call.extra, MARK) if same else {}
    if "custom" in marks:
        custom = with_extra({"name": call.name, "input": call.arguments}, marks["custom"])
        return with_extra({"id": call.id, "type": "custom", "custom": custom}, call.extra)
    fn = with_extra({"name": call.name, "arguments": call.arguments}, marks.get("function", {}))
    wire: dict[str, Any] = {"id": call.id, "type": "function", "function": fn}
    if marks.get("no_type"):
        del wire["type"]
    return with_extra(wire, call.extra, same)


def _text_part(text: Text) -> dict[str, Any]:
    if marks_of(text.extra, MARK).get("refusal") == "part":
        return with_extra({"type": "refusal", "refusal": text.text}, text.extra)
    return with_extra({"type": "text", "text": text.text}, text.extra)


def build_content(texts: list[Text], as_string: bool, same: bool) -> str | list[dict[str, Any]]:
    if not same:
        as_string = as_string or len(texts) <= 1
    if as_string:
        return "".join([t.text for t in texts])
    return [with_extra({"type": "text", "text": t.text}, t.extra, same) for t in texts]


def sniff_image(data: str) -> str:
    for prefix, media in _IMAGE_MAGIC.items():
        if data.startswith(prefix):
            return media
    return "image/png"


def parse_reasoning(message: Mapping[str, Any], origin: str) -> tuple[list[Part], dict[str, Any]]:
    """The reasoning part of a message, and the reasoning fields it did not consume."""
    if "reasoning_content" not in message and "reasoning" not in message:
        return [], {}  # the common case: no reasoning at all
    texts = {
        k: message[k] for k in REASONING_FIELDS if isinstance(message.get(k), str) and message[k]
    }
    rest = {k: message[k] for k in REASONING_FIELDS if k in message}
    if not texts:
        return [], rest
    field = next(iter(texts))
    marks: dict[str, Any] = {"field": field}
    del rest[field]
    if len(texts) == 2 and texts["reasoning"] == texts["reasoning_content"]:
        marks["both"] = True  # vLLM sends both spellings with the same text
        del rest["reasoning"]
    return [Reasoning(text=texts[field], source=origin, extra={MARK: marks})], rest


def parse_tool_calls(message: Mapping[str, Any], path: str, *, strict: bool) -> list[ToolCall]:
    """``tool_calls`` and the legacy ``function_call`` of an assistant message.  ``strict``
    (a client request) refuses a malformed call; a provider's response is read leniently."""
    calls: list[ToolCall] = []
    raw_calls = get_field(message, "tool_calls") or []
    if strict:
        expect_list(raw_calls, f"{path}.tool_calls")
    for j, raw in enumerate(raw_calls if isinstance(raw_calls, list) else ()):
        call_path = f"{path}.tool_calls[{j}]"
        try:
            calls.append(_parse_tool_call(raw, call_path, strict))
        except GatewayError:
            if strict:
                raise
    legacy = message.get("function_call")
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
        raise bad_request(f"{path}.type", f"unknown tool call type {short_repr(kind)}")
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
        arguments = encode_json(arguments).decode()  # some compatible servers send an object
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


def get_field(body: Mapping[str, Any], key: str) -> Any:
    """A field's value, or None when it is absent, null, or an array field's empty array
    (kept in extra).  Only an array field needs it: any other is read with ``get``."""
    value = body.get(key)
    if key in _ARRAY_FIELDS and isinstance(value, list) and not value:
        return None
    return value


def list_or_none(body: Mapping[str, Any], key: str) -> list[Any]:
    """An array field's items; absent, null and [] are no items, anything else is refused."""
    value = get_field(body, key)
    return [] if value is None else expect_list(value, key)


def _mark_native(extra: dict[str, Any], key: str, value: Any) -> None:
    if value:
        own_marks(extra, MARK)[key] = value


def with_extra(out: dict[str, Any], extra: Mapping[str, Any], same: bool = True) -> dict[str, Any]:
    if same:
        write_back(out, extra, MARK)
    return out


def short_repr(value: Any) -> str:
    text = encode_json(value).decode() if not isinstance(value, str) else repr(value)
    return text if len(text) <= 80 else text[:77] + "..."
