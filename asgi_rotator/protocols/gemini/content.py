"""Gemini contents and parts, read into the unified model and written back.

Parts (text, inline and file data, function calls and responses, thoughts), the camelCase /
snake_case field helpers and this codec's marker keys; the request and the response both
carry contents, so both build on this module."""

from __future__ import annotations

import mimetypes
import re
from collections.abc import Mapping
from functools import cache
from typing import Any

import msgspec

from ...unified import File, Image, Message, Part, Reasoning, Text, ToolCall, ToolResult
from .._common import expect_dict, expect_list, expect_str, new_id
from ..base import bad_request
from ..unknown_fields import marker_key, marks_of, own_marks, unknown_fields, wire_fields

NAME = "gemini"
json_encoder = msgspec.json.Encoder()

# This codec's markers (``protocols.unknown_fields``), keys of ``extra[MARK]``.
MARK = marker_key(NAME)
_SNAKE = "snake"  # camelCase names of this struct's fields that came snake_case
_INNER = "inner"  # unknown fields of the nested object (inlineData, functionCall ...)
RAW_PARTS = "rawParts"  # [[position, part], ...] parts the model cannot name
SYNTHETIC_ID = "syntheticId"
_NO_ARGS = "noArgs"
_NO_ROLE = "noRole"
_THOUGHT = "thought"  # an empty ``thought: true`` part (not a signature carrier)
_DATA_KEYS = ("text", "inlineData", "fileData", "functionCall", "functionResponse")

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
def camel_case(name: str) -> str:
    return _SNAKE_HUMP.sub(lambda m: m.group(1).upper(), name)


def known_fields(*names: str) -> frozenset[str]:
    return frozenset(names) | frozenset(_snake(n) for n in names)


def get_field(obj: Mapping[str, Any], name: str, snake: set[str]) -> Any:
    """``obj[name]`` in either spelling; a snake_case hit is remembered in ``snake``."""
    if name in obj:
        return obj[name]
    alt = _snake(name)
    if alt != name and alt in obj:
        snake.add(name)
        return obj[alt]
    return None


def wire_key(name: str, snake: set[str] | frozenset[str]) -> str:
    return _snake(name) if name in snake else name


def snake_names(extra: Mapping[str, Any]) -> frozenset[str]:
    """The fields of this struct that came snake_case, by their camelCase names."""
    return frozenset(marks_of(extra, MARK).get(_SNAKE, ()))


def with_snake(extra: dict[str, Any], snake: set[str]) -> dict[str, Any]:
    if snake:
        own_marks(extra, MARK)[_SNAKE] = sorted(snake)
    return extra


_CONTENT_KNOWN = frozenset({"role", "parts"})


PARTS_KNOWN = frozenset({"parts"})


TEXT_KNOWN = frozenset({"text"})


_PART_KNOWN = known_fields(*_DATA_KEYS, "thoughtSignature")  # "thought" is handled on its own


_BLOB_KNOWN = known_fields("mimeType", "data")


_FILE_DATA_KNOWN = known_fields("mimeType", "fileUri")


_CALL_KNOWN = frozenset({"name", "args", "id"})


_RESPONSE_KNOWN = frozenset({"name", "response", "id"})


def args_text(args: Any) -> str:
    return json_encoder.encode(args).decode()


def args_object(arguments: str) -> dict[str, Any]:
    """Gemini ``args`` must be an object: other JSON, or invalid JSON a model produced elsewhere,
    is wrapped as ``{"arguments": text}`` rather than lost."""
    if not arguments.strip():
        return {}
    try:
        value = msgspec.json.decode(arguments)
    except (msgspec.DecodeError, RecursionError):
        return {"arguments": arguments}
    return value if isinstance(value, dict) else {"arguments": arguments}


def _json_object(text: str) -> dict[str, Any] | None:
    stripped = text.strip()
    if not stripped.startswith("{"):
        return None
    try:
        value = msgspec.json.decode(stripped)
    except (msgspec.DecodeError, RecursionError):
        return None
    return value if isinstance(value, dict) else None


def _result_text(response: dict[str, Any]) -> tuple[str, bool]:
    """Inverse of ``_result_object``: (text, is_error)."""
    if len(response) == 1:
        ((key, value),) = response.items()
        if key in ("result", "error") and isinstance(value, str) and _json_object(value) is None:
            return value, key == "error"
    return json_encoder.encode(response).decode(), False


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


class CallsSeen:
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


def parse_content(content: Any, path: str, calls: CallsSeen) -> Message:
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
    unified, raw = parse_parts(parts, f"{path}.parts", role, calls)
    if raw:
        own_marks(extra, MARK)[RAW_PARTS] = raw
    if role == "model":
        unified_role = "assistant"
    elif unified and all(isinstance(p, ToolResult) for p in unified):
        unified_role = "tool"
    else:
        unified_role = "user"
    return Message(role=unified_role, content=unified, extra=extra)  # type: ignore[arg-type]


def parse_parts(
    parts: list[Any], path: str, role: str, calls: CallsSeen | None
) -> tuple[list[Part], list[list[Any]]]:
    """Wire parts -> unified parts, plus the parts kept verbatim with their positions."""
    out: list[Part] = []
    raw: list[list[Any]] = []
    for j, part in enumerate(parts):
        p = f"{path}[{j}]"
        part = expect_dict(part, p)
        snake: set[str] = set()
        kinds = [k for k in _DATA_KEYS if get_field(part, k, snake) is not None]
        signature = get_field(part, "thoughtSignature", snake)
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
        value = get_field(part, kind, snake)
        thought = part.get("thought") is True
        if thought and kind == "text":
            extra.pop("thought")
            text = expect_str(value, f"{p}.text")
            if not text:
                own_marks(extra, MARK)[_THOUGHT] = True
            out.append(
                Reasoning(
                    text=text, signature=signature, source=NAME, extra=with_snake(extra, snake)
                )
            )
            continue
        if signature is not None:
            sig_snake = {"thoughtSignature"} & snake
            snake -= sig_snake
            out.append(Reasoning(signature=signature, source=NAME, extra=with_snake({}, sig_snake)))
        out.append(_parse_data(kind, value, p, role, calls, extra, snake))
    return out, raw


def _parse_data(
    kind: str,
    value: Any,
    path: str,
    role: str,
    calls: CallsSeen | None,
    extra: dict[str, Any],
    snake: set[str],
) -> Part:
    p = f"{path}.{kind}"
    if kind == "text":
        return Text(text=expect_str(value, p), extra=with_snake(extra, snake))
    value = expect_dict(value, p)
    if kind == "inlineData":
        media_type = expect_str(get_field(value, "mimeType", snake), f"{p}.mimeType")
        data = expect_str(value.get("data"), f"{p}.data")
        inner = unknown_fields(value, _BLOB_KNOWN)
        if inner:
            own_marks(extra, MARK)[_INNER] = inner
        if media_type.startswith("image/"):
            return Image(data=data, media_type=media_type, extra=with_snake(extra, snake))
        return File(data=data, media_type=media_type, extra=with_snake(extra, snake))
    if kind == "fileData":
        uri = expect_str(get_field(value, "fileUri", snake), f"{p}.fileUri")
        media_type = get_field(value, "mimeType", snake)
        if media_type is not None:
            expect_str(media_type, f"{p}.mimeType")
        inner = unknown_fields(value, _FILE_DATA_KNOWN)
        if inner:
            own_marks(extra, MARK)[_INNER] = inner
        if media_type is not None and media_type.startswith("image/"):
            return Image(url=uri, media_type=media_type, extra=with_snake(extra, snake))
        return File(url=uri, media_type=media_type, extra=with_snake(extra, snake))
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
            own_marks(extra, MARK)[SYNTHETIC_ID] = True
        if calls is not None:
            calls.add(call_id, name)
        return ToolCall(
            id=call_id, name=name, arguments=args_text(args), extra=with_snake(extra, snake)
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
        own_marks(extra, MARK)[SYNTHETIC_ID] = True
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
        extra=with_snake(extra, snake),
    )


def build_contents(messages: list[Message], same: bool) -> list[dict[str, Any]]:
    names: dict[str, str] = {}  # tool-call id -> function name, for functionResponse.name
    contents: list[dict[str, Any]] = []
    for i, message in enumerate(messages):
        mx = message.extra if same else {}
        mm = marks_of(mx, MARK)
        role = "model" if message.role == "assistant" else "user"
        parts = build_parts(message.content, same, names, f"messages[{i}].content")
        for position, part in mm.get(RAW_PARTS, ()):
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


def build_parts(
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
        snake = snake_names(px)
        if isinstance(part, Reasoning):
            if part.source != NAME:
                if show_foreign_thoughts and part.text:
                    out.append({"text": part.text, "thought": True})
                continue
            sig_key = wire_key("thoughtSignature", snake)
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
            call["args"] = args_object(part.arguments)
        if same and not pm.get(SYNTHETIC_ID):
            call["id"] = part.id
        call.update(inner)
        wire = {wire_key("functionCall", snake): call}
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
        blob = {wire_key("mimeType", snake): media_type, "data": data, **inner}
        return {wire_key("inlineData", snake): blob}
    if url is not None:
        file_data: dict[str, Any] = {}
        media_type = media_type or _guess_media_type(None, url, None)
        if media_type is not None:
            file_data[wire_key("mimeType", snake)] = media_type
        file_data[wire_key("fileUri", snake)] = url
        file_data.update(inner)
        return {wire_key("fileData", snake): file_data}
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
    if same and not pm.get(SYNTHETIC_ID):
        response["id"] = part.tool_call_id
    response.update(inner)
    wire = {wire_key("functionResponse", snake): response, **wire_fields(px, MARK)}
    media = [
        _build_media(c, frozenset(), {}, f"{path}.content[{k}]")
        for k, c in enumerate(part.content)
        if not isinstance(c, Text)
    ]
    return [wire, *media]
