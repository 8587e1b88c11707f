"""Gemini ``generateContent`` / ``streamGenerateContent?alt=sse`` (Gemini Developer API, v1beta).

Deliberate choices:

* **Spelling.**  The REST API accepts both ``camelCase`` and ``snake_case`` field names, and the
  google-genai SDK really sends a mix (``inlineData: {mime_type}``, ``thinkingConfig:
  {thinking_budget}``, ``parameters_json_schema``): it converts the fields it knows and passes
  nested dicts through.  Parsing reads either spelling; every unified struct remembers which of
  *its* fields came snake_case (marker ``gemini.snake`` in its ``extra``), so a same-protocol
  rebuild spells each field as received.  Anything else is built camelCase.
* **Markers.**  Bookkeeping a same-protocol rebuild needs lives in ``extra`` under keys starting
  with ``gemini.``; a dot never occurs in a proto JSON field name, so they cannot clash with a
  wire field and are never written to the wire.  Parts this model cannot name (executableCode,
  codeExecutionResult, toolCall, ...) are kept verbatim with their position
  (``gemini.rawParts``) and only reach a Gemini peer.
* **Model and stream** live in the URL, not the body: ``parse_request`` takes them as keyword
  arguments (a body ``model`` is read as a fallback) and ``build_request`` never writes them.
* **Built from another protocol**: consecutive turns of one speaker are merged (parallel
  function responses share one user turn); tool schemas go out as ``parametersJsonSchema`` and
  response schemas as ``responseJsonSchema`` (full JSON Schema, which the OpenAPI-subset fields
  reject); reasoning effort becomes ``thinkingLevel`` for Gemini 3+ and ``thinkingBudget``
  (shared effort table) for 1.x/2.x models; thinking switched on elsewhere asks for
  ``includeThoughts``; thinking off is ``thinkingBudget: 0`` (2.5 Pro / 3 refuse it: provider
  400); built-in tools of other protocols are dropped; a provider file id is refused (400).
* **Reasoning shown to a Gemini client**: another provider's reasoning text becomes thought
  parts only when the client asked for ``includeThoughts`` (or no request is known); its
  payloads never.
* **Tool-call ids** are optional in Gemini.  A call without one gets ``new_id("call_")``; a
  ``functionResponse`` without one is paired with the earliest unanswered call of that name in
  the latest model turn (then any earlier call of that name).  Synthesized ids are marked
  (``gemini.syntheticId``) and left out again on a same-protocol rebuild; ids of calls parsed
  from other protocols are not sent to Gemini either (Gemini pairs by name and order).  Built
  responses and streams for a Gemini client do carry the unified id, since that is the id the
  client echoes back.
* **Tool results.**  ``functionResponse.response`` must be an object: JSON-object text is sent as
  that object, anything else as ``{"result": text}`` (``{"error": text}`` for an error result).
  Parsing undoes exactly that, so ``{"result": "sunny"}`` becomes the text ``sunny``.  Images or
  files inside a foreign tool result become sibling ``inlineData``/``fileData`` parts.
* **Thought signatures** (Gemini 2.5/3) ride on any part.  Unified form: a
  ``Reasoning(text="", signature=sig, source="gemini")`` right before the part that carried it;
  a ``thought: true`` text part is a ``Reasoning`` with its text (and its own signature).  When
  building, a signature-only Reasoning is put back on the following part, and reasoning from
  other sources is dropped (Gemini cannot verify other providers' payloads, and ignores
  unsigned thought text).
* **Errors.**  A bad API key is 400 INVALID_ARGUMENT with ``reason: API_KEY_INVALID``: it is
  classified ``auth``.  ``build_error`` writes the google.rpc status name for the HTTP status
  (keeping a Gemini one that agrees with it) and a ``RetryInfo`` detail for ``retry_after``.
* **Usage.**  ``promptTokenCount`` already includes ``cachedContentTokenCount``;
  ``candidatesTokenCount`` excludes ``thoughtsTokenCount``; ``toolUsePromptTokenCount`` (results
  of server-side tools) is counted as input.  Unified ``output_tokens`` = candidates + thoughts.
* **Streams.**  Gemini has no start or stop event: the decoder synthesizes ``MessageStart`` from
  the first chunk and ends (``done``) at the chunk carrying ``finishReason`` (or a prompt
  ``blockReason``), with the usage known then; a later chunk is ignored.  ``functionCall`` parts
  arrive whole.  The encoder emits one chunk per text/thought delta, one per function call
  (arguments buffered until ``BlockStop``) and a final chunk with ``finishReason`` and
  ``usageMetadata`` (omitted when no usage is known).  An in-band error is a chunk ``{"error": {code, message, status}}``, on
  which google-genai's stream iterator raises ``ClientError``/``ServerError`` (it checks that
  the chunk's JSON starts with ``{"error":``, so ``error`` must be the first key).
"""

from __future__ import annotations

import mimetypes
import re
from collections.abc import Callable, Mapping
from functools import cache
from typing import Any
from urllib.parse import parse_qs

import msgspec

from .._types import Send
from ..errors import GatewayError, classify
from ..model_names import path_segment
from ..sse import ServerSentEvent, encode_json_event
from ..unified import (
    BlockStop,
    Error,
    Event,
    File,
    Finish,
    FinishReason,
    Image,
    Message,
    MessageStart,
    OutputFormat,
    Part,
    Reasoning,
    ReasoningConfig,
    ReasoningDelta,
    Request,
    Response,
    Signature,
    Text,
    TextDelta,
    Tool,
    ToolArgsDelta,
    ToolCall,
    ToolCallStart,
    ToolChoice,
    ToolResult,
    Usage,
    UsageEvent,
)
from ._common import (
    effort_to_budget,
    expect_bool,
    expect_dict,
    expect_int,
    expect_list,
    expect_model,
    expect_number,
    expect_str,
    new_id,
    pick_extra,
)
from .base import Codec, StreamDecoder, StreamEncoder, bad_request
from .framing import JsonArrayStream

__all__ = ["GeminiCodec"]

_NAME = "gemini"
_json = msgspec.json.Encoder()

# --- markers kept in ``extra`` (never wire fields: proto JSON names have no dots) -----------
_MARK = "gemini."
_SNAKE = "gemini.snake"  # camelCase names of this struct's fields that came snake_case
_INNER = "gemini.inner"  # unknown fields of the nested object (inlineData, functionCall ...)
_RAW_PARTS = "gemini.rawParts"  # [[position, part], ...] parts the model cannot name
_SYNTHETIC_ID = "gemini.syntheticId"
_NO_ARGS = "gemini.noArgs"
_NO_ROLE = "gemini.noRole"
_THOUGHT = "gemini.thought"  # an empty ``thought: true`` part (not a signature carrier)
_JSON_SCHEMA = "gemini.jsonSchema"  # parametersJsonSchema / responseJsonSchema was used
_GROUP = "gemini.group"  # index of the ``tools[]`` entry a tool came from
_SYSTEM = "gemini.systemInstruction"  # residual fields of these objects (presence = it existed)
_GENERATION = "gemini.generationConfig"
_THINKING = "gemini.thinkingConfig"
_TOOL_CONFIG = "gemini.toolConfig"
_CALLING = "gemini.functionCallingConfig"
_CANDIDATE = "gemini.candidate"
_CONTENT = "gemini.content"
_MORE_CANDIDATES = "gemini.candidates"
_NO_CANDIDATES = "gemini.noCandidates"
_NO_FINISH = "gemini.noFinishReason"
_USAGE = "gemini.usage"  # {"set": {...}, "drop": [...]} against the canonical usageMetadata
_TOOL_USE_TOKENS = "gemini.toolUsePromptTokens"

_DATA_KEYS = ("text", "inlineData", "fileData", "functionCall", "functionResponse")

# FinishReason (google.genai.types.FinishReason / API reference "Candidate.FinishReason").
_FINISH_IN: dict[str, FinishReason] = {
    "STOP": "stop",
    "MAX_TOKENS": "length",
    "SAFETY": "content_filter",
    "RECITATION": "content_filter",
    "BLOCKLIST": "content_filter",
    "PROHIBITED_CONTENT": "content_filter",
    "SPII": "content_filter",
    "IMAGE_SAFETY": "content_filter",
    "IMAGE_PROHIBITED_CONTENT": "content_filter",
    "IMAGE_RECITATION": "content_filter",
    "MALFORMED_FUNCTION_CALL": "error",
    "OTHER": "error",  # what an abnormal end is built as (_FINISH_OUT), so it reads back
}
_FINISH_OUT: dict[str, str] = {
    "stop": "STOP",
    "length": "MAX_TOKENS",
    "tool_calls": "STOP",  # Gemini ends a function-calling turn with STOP
    "content_filter": "SAFETY",
    "pause": "STOP",
    "error": "OTHER",
}

_CALLING_IN = {"AUTO": "auto", "NONE": "none", "ANY": "required"}
_CALLING_OUT = {"auto": "AUTO", "none": "NONE", "required": "ANY", "tool": "ANY"}

# google.rpc.Code names by HTTP status (API reference "Troubleshooting / error codes").
_STATUS_NAME = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    409: "ABORTED",
    429: "RESOURCE_EXHAUSTED",
    499: "CANCELLED",
    500: "INTERNAL",
    501: "NOT_IMPLEMENTED",
    502: "UNAVAILABLE",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}
_STATUS_CODE = {
    "INVALID_ARGUMENT": 400,
    "FAILED_PRECONDITION": 400,
    "OUT_OF_RANGE": 400,
    "UNAUTHENTICATED": 401,
    "PERMISSION_DENIED": 403,
    "NOT_FOUND": 404,
    "ABORTED": 409,
    "ALREADY_EXISTS": 409,
    "RESOURCE_EXHAUSTED": 429,
    "CANCELLED": 499,
    "INTERNAL": 500,
    "UNKNOWN": 500,
    "DATA_LOSS": 500,
    "NOT_IMPLEMENTED": 501,
    "UNAVAILABLE": 503,
    "DEADLINE_EXCEEDED": 504,
}

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


# --- spelling helpers ----------------------------------------------------------------------


@cache
def _snake(name: str) -> str:
    return _CAMEL_HUMP.sub(lambda m: "_" + m.group(1).lower(), name)


@cache
def _camel(name: str) -> str:
    return _SNAKE_HUMP.sub(lambda m: m.group(1).upper(), name)


def _known(*names: str) -> frozenset[str]:
    return frozenset(names) | frozenset(_snake(n) for n in names)


def _get(obj: Mapping[str, Any], name: str, snake: set[str]) -> Any:
    """``obj[name]`` in either spelling; a snake_case hit is remembered in ``snake``."""
    if name in obj:
        return obj[name]
    alt = _snake(name)
    if alt != name and alt in obj:
        snake.add(name)
        return obj[alt]
    return None


def _key(name: str, snake: set[str] | frozenset[str]) -> str:
    return _snake(name) if name in snake else name


def _marks(extra: Mapping[str, Any]) -> frozenset[str]:
    return frozenset(extra.get(_SNAKE, ()))


def _mark(extra: dict[str, Any], snake: set[str]) -> dict[str, Any]:
    if snake:
        extra[_SNAKE] = sorted(snake)
    return extra


def _wire(extra: Mapping[str, Any]) -> dict[str, Any]:
    """``extra`` without the bookkeeping markers: what goes back on the wire."""
    return {k: v for k, v in extra.items() if not k.startswith(_MARK)}


_CONTENT_KNOWN = frozenset({"role", "parts"})
_PARTS_KNOWN = frozenset({"parts"})
_TEXT_KNOWN = frozenset({"text"})
_PART_KNOWN = _known(*_DATA_KEYS, "thoughtSignature")  # "thought" is handled on its own
_BLOB_KNOWN = _known("mimeType", "data")
_FILE_DATA_KNOWN = _known("mimeType", "fileUri")
_CALL_KNOWN = frozenset({"name", "args", "id"})
_RESPONSE_KNOWN = frozenset({"name", "response", "id"})
# ``model`` belongs in the URL; one found in the body is read, never written back.
_REQUEST_KNOWN = _known(
    "model", "contents", "systemInstruction", "tools", "toolConfig", "generationConfig"
)
_DECL_KNOWN = _known("name", "description", "parameters", "parametersJsonSchema")
_GENERATION_KNOWN = _known(
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
_THINKING_KNOWN = _known("thinkingBudget", "includeThoughts", "thinkingLevel")
_RESPONSE_BODY_KNOWN = _known("candidates", "usageMetadata", "responseId", "modelVersion")
_CANDIDATE_KNOWN = _known("content", "finishReason")


# --- small value mappings ------------------------------------------------------------------


def _args_text(args: Any) -> str:
    return _json.encode(args).decode()


def _args_object(arguments: str) -> dict[str, Any]:
    """Gemini ``args`` must be an object: other JSON, or invalid JSON a model produced elsewhere,
    is wrapped as ``{"arguments": text}`` rather than lost."""
    if not arguments.strip():
        return {}
    try:
        value = msgspec.json.decode(arguments)
    except msgspec.DecodeError:
        return {"arguments": arguments}
    return value if isinstance(value, dict) else {"arguments": arguments}


def _json_object(text: str) -> dict[str, Any] | None:
    stripped = text.strip()
    if not stripped.startswith("{"):
        return None
    try:
        value = msgspec.json.decode(stripped)
    except msgspec.DecodeError:
        return None
    return value if isinstance(value, dict) else None


def _result_text(response: dict[str, Any]) -> tuple[str, bool]:
    """Inverse of ``_result_object``: (text, is_error)."""
    if len(response) == 1:
        ((key, value),) = response.items()
        if key in ("result", "error") and isinstance(value, str) and _json_object(value) is None:
            return value, key == "error"
    return _json.encode(response).decode(), False


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


def _wants_thoughts(request: Request | None) -> bool:
    """A Gemini client sees thought text only with includeThoughts; another provider's
    reasoning is shown under the same rule (unknown request: shown)."""
    if request is None:
        return True
    return request.reasoning is not None and request.reasoning.include_thoughts is True


def _is_gemini2(model: str) -> bool:
    # Gemini 1.x/2.x take thinkingBudget; Gemini 3+ prefer thinkingLevel ("Thinking" guide).
    return model.startswith(("gemini-1", "gemini-2"))


def _retry_delay(seconds: float) -> str:
    return f"{round(seconds, 3):g}s"


# --- tool-call pairing while parsing --------------------------------------------------------


class _Calls:
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


# --- the codec -----------------------------------------------------------------------------


class GeminiCodec(Codec):
    name = _NAME
    auth = "x-goog-api-key"

    # --- requests ---------------------------------------------------------------------------

    def request_path(self, request: Request) -> str:
        # The model is one path segment: a name that would change the template is refused
        # and the rest percent-encoded, so no client can choose another URL.
        model = path_segment(request.model.removeprefix("models/"))
        if request.stream:
            return f"/v1beta/models/{model}:streamGenerateContent?alt=sse"
        return f"/v1beta/models/{model}:generateContent"

    def parse_request(
        self, body: Any, *, model: str | None = None, stream: bool | None = None
    ) -> Request:
        body = expect_dict(body, "")
        snake: set[str] = set()
        name = model if model is not None else body.get("model")
        if name is None:
            raise bad_request("model", "required (the model is part of the URL path)")
        name = expect_model(expect_str(name, "model").removeprefix("models/"))

        contents = _get(body, "contents", snake)
        if contents is None:
            raise bad_request("contents", "required")
        expect_list(contents, "contents", non_empty=True)
        calls = _Calls()
        messages = [self._parse_content(c, f"contents[{i}]", calls) for i, c in enumerate(contents)]

        extra = pick_extra(body, _REQUEST_KNOWN)
        request = Request(model=name, messages=messages, stream=bool(stream), origin=_NAME)

        system = _get(body, "systemInstruction", snake)
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
                        extra=pick_extra(part, _TEXT_KNOWN),
                    )
                )
            extra[_SYSTEM] = pick_extra(system, _PARTS_KNOWN)

        tools = _get(body, "tools", snake)
        if tools is not None:
            request.tools = self._parse_tools(expect_list(tools, "tools"))

        tool_config = _get(body, "toolConfig", snake)
        if tool_config is not None:
            self._parse_tool_config(expect_dict(tool_config, "toolConfig"), request, extra, snake)

        generation = _get(body, "generationConfig", snake)
        if generation is not None:
            self._parse_generation(
                expect_dict(generation, "generationConfig"), request, extra, snake
            )

        request.extra = _mark(extra, snake)
        return request

    def _parse_content(self, content: Any, path: str, calls: _Calls) -> Message:
        content = expect_dict(content, path)
        extra = pick_extra(content, _CONTENT_KNOWN)
        role = content.get("role")
        if role is None:
            # The REST quickstart omits the role of a single user turn.
            extra[_NO_ROLE] = True
            role = "user"
        elif role not in ("user", "model"):
            raise bad_request(f"{path}.role", f"unknown role {role!r} (expected 'user' or 'model')")
        if "parts" not in content:
            raise bad_request(f"{path}.parts", "required")
        parts = expect_list(content["parts"], f"{path}.parts")
        if role == "model":
            calls.model_turn()
        unified, raw = self._parse_parts(parts, f"{path}.parts", role, calls)
        if raw:
            extra[_RAW_PARTS] = raw
        if role == "model":
            unified_role = "assistant"
        elif unified and all(isinstance(p, ToolResult) for p in unified):
            unified_role = "tool"
        else:
            unified_role = "user"
        return Message(role=unified_role, content=unified, extra=extra)  # type: ignore[arg-type]

    def _parse_parts(
        self, parts: list[Any], path: str, role: str, calls: _Calls | None
    ) -> tuple[list[Part], list[list[Any]]]:
        """Wire parts -> unified parts, plus the parts kept verbatim with their positions."""
        out: list[Part] = []
        raw: list[list[Any]] = []
        for j, part in enumerate(parts):
            p = f"{path}[{j}]"
            part = expect_dict(part, p)
            snake: set[str] = set()
            kinds = [k for k in _DATA_KEYS if _get(part, k, snake) is not None]
            signature = _get(part, "thoughtSignature", snake)
            if signature is not None:
                expect_str(signature, f"{p}.thoughtSignature")
            if len(kinds) > 1:
                raise bad_request(p, f"a part holds exactly one of {', '.join(_DATA_KEYS)}")
            extra = pick_extra(part, _PART_KNOWN)
            if not kinds:
                if not extra:
                    raise bad_request(p, "part has no data")
                raw.append([j, part])  # executableCode, codeExecutionResult, toolCall, ...
                continue
            kind = kinds[0]
            value = _get(part, kind, snake)
            thought = part.get("thought") is True
            if thought and kind == "text":
                extra.pop("thought")
                text = expect_str(value, f"{p}.text")
                if not text:
                    extra[_THOUGHT] = True
                out.append(
                    Reasoning(
                        text=text, signature=signature, source=_NAME, extra=_mark(extra, snake)
                    )
                )
                continue
            if signature is not None:
                sig_snake = {"thoughtSignature"} & snake
                snake -= sig_snake
                out.append(Reasoning(signature=signature, source=_NAME, extra=_mark({}, sig_snake)))
            out.append(self._parse_data(kind, value, p, role, calls, extra, snake))
        return out, raw

    def _parse_data(
        self,
        kind: str,
        value: Any,
        path: str,
        role: str,
        calls: _Calls | None,
        extra: dict[str, Any],
        snake: set[str],
    ) -> Part:
        p = f"{path}.{kind}"
        if kind == "text":
            return Text(text=expect_str(value, p), extra=_mark(extra, snake))
        value = expect_dict(value, p)
        if kind == "inlineData":
            media_type = expect_str(_get(value, "mimeType", snake), f"{p}.mimeType")
            data = expect_str(value.get("data"), f"{p}.data")
            inner = pick_extra(value, _BLOB_KNOWN)
            if inner:
                extra[_INNER] = inner
            if media_type.startswith("image/"):
                return Image(data=data, media_type=media_type, extra=_mark(extra, snake))
            return File(data=data, media_type=media_type, extra=_mark(extra, snake))
        if kind == "fileData":
            uri = expect_str(_get(value, "fileUri", snake), f"{p}.fileUri")
            media_type = _get(value, "mimeType", snake)
            if media_type is not None:
                expect_str(media_type, f"{p}.mimeType")
            inner = pick_extra(value, _FILE_DATA_KNOWN)
            if inner:
                extra[_INNER] = inner
            if media_type is not None and media_type.startswith("image/"):
                return Image(url=uri, media_type=media_type, extra=_mark(extra, snake))
            return File(url=uri, media_type=media_type, extra=_mark(extra, snake))
        name = expect_str(value.get("name"), f"{p}.name")
        call_id = value.get("id")
        if call_id is not None:
            expect_str(call_id, f"{p}.id")
        if kind == "functionCall":
            if role != "model":
                raise bad_request(p, "a functionCall belongs in a model turn")
            args = value.get("args")
            if args is None:
                extra[_NO_ARGS] = True
                args = {}
            expect_dict(args, f"{p}.args")
            inner = pick_extra(value, _CALL_KNOWN)
            if inner:
                extra[_INNER] = inner
            if call_id is None:
                call_id = new_id("call_")
                extra[_SYNTHETIC_ID] = True
            if calls is not None:
                calls.add(call_id, name)
            return ToolCall(
                id=call_id, name=name, arguments=_args_text(args), extra=_mark(extra, snake)
            )
        # functionResponse
        if role == "model":
            raise bad_request(p, "a functionResponse belongs in a user turn")
        response = expect_dict(value.get("response", {}), f"{p}.response")
        inner = pick_extra(value, _RESPONSE_KNOWN)
        matched = calls.answer(name, call_id) if calls is not None else call_id
        if matched is None:
            raise bad_request(p, f"functionResponse {name!r} has no matching tool call")
        if call_id is None:
            extra[_SYNTHETIC_ID] = True
        elif call_id != matched:
            inner["id"] = call_id  # an id we could not match: pair by name, send it back as is
        if inner:
            extra[_INNER] = inner
        text, is_error = _result_text(response)
        return ToolResult(
            tool_call_id=matched,
            name=name,
            content=[Text(text=text)],
            is_error=is_error,
            extra=_mark(extra, snake),
        )

    def _parse_tools(self, tools: list[Any]) -> list[Tool]:
        out: list[Tool] = []
        for i, entry in enumerate(tools):
            entry = expect_dict(entry, f"tools[{i}]")
            for key, value in entry.items():
                camel = _camel(key)
                if camel != "functionDeclarations":
                    # googleSearch, codeExecution, urlContext ...: native body, Gemini only.
                    out.append(Tool(name=camel, type=camel, extra={_GROUP: i, key: value}))
                    continue
                group_snake = {camel} if key != camel else set()
                path = f"tools[{i}].functionDeclarations"
                for k, decl in enumerate(expect_list(value, path)):
                    out.append(self._parse_declaration(decl, f"{path}[{k}]", i, set(group_snake)))
        return out

    def _parse_declaration(self, decl: Any, path: str, group: int, snake: set[str]) -> Tool:
        decl = expect_dict(decl, path)
        name = expect_str(decl.get("name"), f"{path}.name")
        description = decl.get("description")
        if description is not None:
            expect_str(description, f"{path}.description")
        extra = pick_extra(decl, _DECL_KNOWN)
        extra[_GROUP] = group
        parameters = decl.get("parameters")
        schema = _get(decl, "parametersJsonSchema", snake)
        if schema is not None:
            extra[_JSON_SCHEMA] = True
            parameters = schema
        if parameters is not None:
            expect_dict(parameters, f"{path}.parameters")
        return Tool(
            name=name, description=description, parameters=parameters, extra=_mark(extra, snake)
        )

    def _parse_tool_config(
        self, config: dict[str, Any], request: Request, extra: dict[str, Any], snake: set[str]
    ) -> None:
        extra[_TOOL_CONFIG] = pick_extra(config, _known("functionCallingConfig"))
        calling = _get(config, "functionCallingConfig", snake)
        if calling is None:
            return
        path = "toolConfig.functionCallingConfig"
        calling = expect_dict(calling, path)
        residual = dict(calling)
        mode = residual.pop("mode", None)
        allowed_key = "allowedFunctionNames"
        allowed = _get(calling, allowed_key, snake)
        if allowed is not None:
            allowed_key = _key(allowed_key, snake)
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
        extra[_CALLING] = residual

    def _parse_generation(
        self, config: dict[str, Any], request: Request, extra: dict[str, Any], snake: set[str]
    ) -> None:
        path = "generationConfig"
        residual = pick_extra(config, _GENERATION_KNOWN)

        def number(name: str, integer: bool = False) -> Any:
            value = _get(config, name, snake)
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
        stop = _get(config, "stopSequences", snake)
        if stop is not None:
            request.stop = [
                expect_str(s, f"{path}.stopSequences[{k}]")
                for k, s in enumerate(expect_list(stop, f"{path}.stopSequences"))
            ]
        self._parse_output(config, request, extra, residual, snake)
        thinking = _get(config, "thinkingConfig", snake)
        if thinking is not None:
            self._parse_thinking(
                expect_dict(thinking, f"{path}.thinkingConfig"), request, extra, snake
            )
        extra[_GENERATION] = residual

    def _parse_output(
        self,
        config: dict[str, Any],
        request: Request,
        extra: dict[str, Any],
        residual: dict[str, Any],
        snake: set[str],
    ) -> None:
        present = {
            name: _key(name, snake)
            for name in ("responseMimeType", "responseSchema", "responseJsonSchema")
            if _get(config, name, snake) is not None
        }
        mime = _get(config, "responseMimeType", snake)
        schema_name = "responseJsonSchema" if "responseJsonSchema" in present else "responseSchema"
        schema = _get(config, schema_name, snake)
        if mime == "application/json" and len(present) < 3:
            if schema is None:
                request.output = OutputFormat(type="json_object")
            else:
                request.output = OutputFormat(
                    schema=expect_dict(schema, f"generationConfig.{schema_name}")
                )
                if schema_name == "responseJsonSchema":
                    extra[_JSON_SCHEMA] = True
            return
        if mime == "text/plain" and schema is None:
            request.output = OutputFormat(type="text")
            return
        # text/x.enum, a schema without a JSON mime type ...: kept for Gemini only.
        for key in present.values():
            residual[key] = config[key]

    def _parse_thinking(
        self, thinking: dict[str, Any], request: Request, extra: dict[str, Any], snake: set[str]
    ) -> None:
        path = "generationConfig.thinkingConfig"
        residual = pick_extra(thinking, _THINKING_KNOWN)
        config = ReasoningConfig()
        budget = _get(thinking, "thinkingBudget", snake)
        if budget is not None:
            budget = expect_int(budget, f"{path}.thinkingBudget")
            if budget == 0:
                config.enabled = False
            elif budget < 0:
                # -1 is "dynamic": thinking on, the model picks the budget.
                config.enabled = True
                residual[_key("thinkingBudget", snake)] = budget
            else:
                config.enabled = True
                config.budget_tokens = budget
        include = _get(thinking, "includeThoughts", snake)
        if include is not None:
            config.include_thoughts = expect_bool(include, f"{path}.includeThoughts")
        level = _get(thinking, "thinkingLevel", snake)
        if level is not None:
            expect_str(level, f"{path}.thinkingLevel")
            if level.isupper() and level != "THINKING_LEVEL_UNSPECIFIED":
                config.effort = level.lower()
            else:
                residual[_key("thinkingLevel", snake)] = level
        request.reasoning = config
        extra[_THINKING] = residual

    def build_request(self, request: Request) -> dict[str, Any]:
        same = request.origin == _NAME
        rx = request.extra if same else {}
        snake = _marks(rx)
        body: dict[str, Any] = {
            _key("contents", snake): self._build_contents(request.messages, same),
        }
        if request.system or _SYSTEM in rx:
            parts = [{"text": t.text, **(_wire(t.extra) if same else {})} for t in request.system]
            body[_key("systemInstruction", snake)] = {"parts": parts, **rx.get(_SYSTEM, {})}
        if request.tools is not None:
            tools = self._build_tools(request.tools, same)
            if tools or same:
                body["tools"] = tools
        tool_config = self._build_tool_config(request, rx, snake)
        if tool_config is not None:
            body[_key("toolConfig", snake)] = tool_config
        generation = self._build_generation(request, rx, snake, same)
        if generation is not None:
            body[_key("generationConfig", snake)] = generation
        body.update(_wire(rx))
        return body

    def _build_contents(self, messages: list[Message], same: bool) -> list[dict[str, Any]]:
        names: dict[str, str] = {}  # tool-call id -> function name, for functionResponse.name
        contents: list[dict[str, Any]] = []
        for i, message in enumerate(messages):
            mx = message.extra if same else {}
            role = "model" if message.role == "assistant" else "user"
            parts = self._build_parts(message.content, same, names, f"messages[{i}].content")
            for position, part in mx.get(_RAW_PARTS, ()):
                parts.insert(position, part)
            if not same:
                if not parts:
                    continue  # e.g. only another provider's reasoning
                if contents and contents[-1]["role"] == role:
                    # One Gemini turn per speaker: parallel function responses share one content.
                    contents[-1]["parts"].extend(parts)
                    continue
            content: dict[str, Any] = (
                {"parts": parts} if mx.get(_NO_ROLE) else {"role": role, "parts": parts}
            )
            content.update(_wire(mx))
            contents.append(content)
        return contents

    def _build_parts(
        self,
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
            snake = _marks(px)
            if isinstance(part, Reasoning):
                if part.source != _NAME:
                    if show_foreign_thoughts and part.text:
                        out.append({"text": part.text, "thought": True})
                    continue
                sig_key = _key("thoughtSignature", snake)
                if part.text or px.get(_THOUGHT):
                    wire: dict[str, Any] = {"text": part.text, "thought": True}
                    if part.signature is not None:
                        wire[sig_key] = part.signature
                    wire.update(_wire(px))
                    out.append(wire)
                elif part.signature is not None:
                    pending = (sig_key, part.signature)
                continue
            built = self._build_part(part, same, px, snake, names, f"{path}[{j}]")
            if pending is not None and built:
                built[0][pending[0]] = pending[1]
                pending = None
            out.extend(built)
        if pending is not None:
            out.append({"text": "", pending[0]: pending[1]})
        return out

    def _build_part(
        self,
        part: Part,
        same: bool,
        px: Mapping[str, Any],
        snake: frozenset[str],
        names: dict[str, str],
        path: str,
    ) -> list[dict[str, Any]]:
        inner = dict(px.get(_INNER, {}))
        wire: dict[str, Any]
        if isinstance(part, Text):
            wire = {"text": part.text}
        elif isinstance(part, (Image, File)):
            wire = self._build_media(part, snake, inner, path)
        elif isinstance(part, ToolCall):
            names[part.id] = part.name
            call: dict[str, Any] = {"name": part.name}
            if not px.get(_NO_ARGS):
                call["args"] = _args_object(part.arguments)
            if same and not px.get(_SYNTHETIC_ID):
                call["id"] = part.id
            call.update(inner)
            wire = {_key("functionCall", snake): call}
        elif isinstance(part, ToolResult):
            return self._build_result(part, same, px, snake, names, inner, path)
        else:
            return []  # Reasoning is handled by the caller
        wire.update(_wire(px))
        return [wire]

    def _build_media(
        self, part: Image | File, snake: frozenset[str], inner: dict[str, Any], path: str
    ) -> dict[str, Any]:
        data, url, media_type = part.data, part.url, part.media_type
        if url is not None and data is None:
            match = _DATA_URL.match(url)
            if match:
                media_type, data, url = match.group(1) or media_type, match.group(2), None
        if data is not None:
            default = "image/jpeg" if isinstance(part, Image) else "application/octet-stream"
            media_type = media_type or _guess_media_type(data, None, default)
            blob = {_key("mimeType", snake): media_type, "data": data, **inner}
            return {_key("inlineData", snake): blob}
        if url is not None:
            file_data: dict[str, Any] = {}
            media_type = media_type or _guess_media_type(None, url, None)
            if media_type is not None:
                file_data[_key("mimeType", snake)] = media_type
            file_data[_key("fileUri", snake)] = url
            file_data.update(inner)
            return {_key("fileData", snake): file_data}
        # A provider file id (OpenAI / Anthropic Files API) means nothing to Gemini.
        raise bad_request(
            path, "a file id cannot be sent to Gemini; send the file inline or by URL"
        )

    def _build_result(
        self,
        part: ToolResult,
        same: bool,
        px: Mapping[str, Any],
        snake: frozenset[str],
        names: dict[str, str],
        inner: dict[str, Any],
        path: str,
    ) -> list[dict[str, Any]]:
        name = part.name or names.get(part.tool_call_id)
        if name is None:
            raise bad_request(path, f"tool result {part.tool_call_id!r} has no matching tool call")
        text = "".join(c.text for c in part.content if isinstance(c, Text))
        response: dict[str, Any] = {"name": name, "response": _result_object(text, part.is_error)}
        if same and not px.get(_SYNTHETIC_ID):
            response["id"] = part.tool_call_id
        response.update(inner)
        wire = {_key("functionResponse", snake): response, **_wire(px)}
        media = [
            self._build_media(c, frozenset(), {}, f"{path}.content[{k}]")
            for k, c in enumerate(part.content)
            if not isinstance(c, Text)
        ]
        return [wire, *media]

    def _build_tools(self, tools: list[Tool], same: bool) -> list[dict[str, Any]]:
        groups: dict[int, dict[str, Any]] = {}
        for tool in tools:
            tx = tool.extra if same else {}
            group = groups.setdefault(tx.get(_GROUP, 0), {})
            if tool.type != "function":
                if same:
                    group.update(_wire(tx))
                continue  # another protocol's built-in tool: Gemini has no equivalent
            snake = _marks(tx)
            decl: dict[str, Any] = {"name": tool.name}
            if tool.description is not None:
                decl["description"] = tool.description
            if tool.parameters is not None:
                # Foreign schemas are full JSON Schema (additionalProperties, $ref ...), which
                # only parametersJsonSchema accepts; Gemini's own keep their field.
                schema_key = (
                    "parametersJsonSchema" if (not same or tx.get(_JSON_SCHEMA)) else "parameters"
                )
                decl[_key(schema_key, snake)] = tool.parameters
            decl.update(_wire(tx))
            group.setdefault(_key("functionDeclarations", snake), []).append(decl)
        return [groups[k] for k in sorted(groups) if groups[k]]

    def _build_tool_config(
        self, request: Request, rx: Mapping[str, Any], snake: frozenset[str]
    ) -> dict[str, Any] | None:
        choice = request.tool_choice
        if choice is None and _TOOL_CONFIG not in rx:
            return None
        config = dict(rx.get(_TOOL_CONFIG, {}))
        calling: dict[str, Any] | None = dict(rx[_CALLING]) if _CALLING in rx else None
        if choice is not None:
            calling = calling or {}
            calling["mode"] = _CALLING_OUT[choice.mode]
            if choice.mode == "tool" and choice.name:
                calling[_key("allowedFunctionNames", snake)] = [choice.name]
        if calling is not None:
            config[_key("functionCallingConfig", snake)] = calling
        return config

    def _build_generation(
        self, request: Request, rx: Mapping[str, Any], snake: frozenset[str], same: bool
    ) -> dict[str, Any] | None:
        config: dict[str, Any] = {}

        def put(name: str, value: Any) -> None:
            if value is not None:
                config[_key(name, snake)] = value

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
                        "responseJsonSchema"
                        if (not same or rx.get(_JSON_SCHEMA))
                        else "responseSchema"
                    )
                    put(field, output.schema)
        thinking = self._build_thinking(request, rx, snake, same)
        if thinking is not None:
            put("thinkingConfig", thinking)
        if not config and _GENERATION not in rx:
            return None
        config.update(rx.get(_GENERATION, {}))
        return config

    def _build_thinking(
        self, request: Request, rx: Mapping[str, Any], snake: frozenset[str], same: bool
    ) -> dict[str, Any] | None:
        reasoning = request.reasoning
        if reasoning is None:
            return None
        config: dict[str, Any] = {}
        if reasoning.effort == "none" or (
            reasoning.enabled is False and reasoning.budget_tokens is None
        ):
            # Thinking off.  Gemini 2.5 Pro / 3 cannot turn it off and answer 400 (documented).
            config[_key("thinkingBudget", snake)] = 0
        elif reasoning.budget_tokens is not None:
            config[_key("thinkingBudget", snake)] = reasoning.budget_tokens
        elif reasoning.effort is not None:
            if same or not _is_gemini2(request.model):
                config[_key("thinkingLevel", snake)] = reasoning.effort.upper()
            else:
                config[_key("thinkingBudget", snake)] = effort_to_budget(reasoning.effort)
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
            config[_key("includeThoughts", snake)] = include
        if same:
            if _THINKING not in rx and not config:
                return None
            config.update(rx.get(_THINKING, {}))
        return config or None

    # --- responses --------------------------------------------------------------------------

    def parse_response(self, body: Any) -> Response:
        try:
            return self._parse_response(body)
        except GatewayError as error:
            # A malformed upstream body is the provider's fault, not the client's.
            raise GatewayError(
                "server_error", f"upstream sent a malformed response: {error.message}"
            ) from None

    def _parse_response(self, body: Any) -> Response:
        body = expect_dict(body, "")
        snake: set[str] = set()
        extra = pick_extra(body, _RESPONSE_BODY_KNOWN)
        response_id = _get(body, "responseId", snake)
        if not isinstance(response_id, str) or not response_id:
            response_id = new_id("resp_")
            extra[_SYNTHETIC_ID] = True
        model = _get(body, "modelVersion", snake)
        response = Response(
            id=response_id, model=model if isinstance(model, str) else "", origin=_NAME
        )
        candidates = _get(body, "candidates", snake)
        finish = None
        if isinstance(candidates, list) and candidates:
            candidate = candidates[0] if isinstance(candidates[0], dict) else {}
            if len(candidates) > 1:
                extra[_MORE_CANDIDATES] = candidates[1:]
            response.content, finish = self._parse_candidate(candidate, extra, snake)
        else:
            extra[_NO_CANDIDATES] = True
            if candidates is not None:
                extra[_MORE_CANDIDATES] = candidates
        response.finish_reason = self._finish_reason(finish, response.content, body)
        if finish is not None and _FINISH_OUT[response.finish_reason] != finish:
            extra[_CANDIDATE][_key("finishReason", snake)] = finish
        usage = _get(body, "usageMetadata", snake)
        if isinstance(usage, dict):
            response.usage, tool_tokens = _parse_usage(usage, snake)
            if tool_tokens:
                extra[_TOOL_USE_TOKENS] = tool_tokens
            canonical = _build_usage(response.usage, tool_tokens, frozenset(snake))
            extra[_USAGE] = {
                "set": {k: v for k, v in usage.items() if canonical.get(k) != v},
                "drop": [k for k in canonical if k not in usage],
            }
        response.extra = _mark(extra, snake)
        return response

    def _parse_candidate(
        self, candidate: dict[str, Any], extra: dict[str, Any], snake: set[str]
    ) -> tuple[list[Part], str | None]:
        extra[_CANDIDATE] = pick_extra(candidate, _CANDIDATE_KNOWN)
        finish = _get(candidate, "finishReason", snake)
        content = _get(candidate, "content", snake)
        if finish is None:
            extra[_NO_FINISH] = True
        if not isinstance(content, dict):
            extra[_CONTENT] = None  # e.g. a SAFETY candidate carries no content
            return [], finish if isinstance(finish, str) else None
        extra[_CONTENT] = pick_extra(content, _PARTS_KNOWN)
        parts = content.get("parts")
        unified, raw = self._parse_parts(
            parts if isinstance(parts, list) else [], "candidates[0].content.parts", "model", None
        )
        if raw:
            extra[_RAW_PARTS] = raw
        return unified, finish if isinstance(finish, str) else None

    @staticmethod
    def _finish_reason(
        finish: str | None, content: list[Part], body: Mapping[str, Any]
    ) -> FinishReason:
        if finish is None:
            feedback = body.get("promptFeedback") or body.get("prompt_feedback")
            if isinstance(feedback, dict) and (
                feedback.get("blockReason") or feedback.get("block_reason")
            ):
                return "content_filter"
        reason = _FINISH_IN.get(finish or "STOP", "stop")
        if reason == "stop" and any(isinstance(p, ToolCall) for p in content):
            return "tool_calls"
        return reason

    def build_response(self, response: Response, request: Request | None = None) -> dict[str, Any]:
        same = response.origin == _NAME
        rx = response.extra if same else {}
        snake = _marks(rx)
        body: dict[str, Any] = {}
        if not rx.get(_NO_CANDIDATES):
            candidate: dict[str, Any] = {}
            if rx.get(_CONTENT, {}) is not None:
                content = response.content
                if not same and not _wants_thoughts(request):
                    content = [p for p in content if not isinstance(p, Reasoning)]
                parts = self._build_response_parts(content, same)
                for position, part in rx.get(_RAW_PARTS, ()):
                    parts.insert(position, part)
                candidate[_key("content", snake)] = {
                    "parts": parts,
                    **rx.get(_CONTENT, {"role": "model"}),
                }
            if not rx.get(_NO_FINISH):
                candidate[_key("finishReason", snake)] = _FINISH_OUT[response.finish_reason]
            candidate.update(rx[_CANDIDATE] if _CANDIDATE in rx else {"index": 0})
            body["candidates"] = [candidate, *rx.get(_MORE_CANDIDATES, ())]
        elif _MORE_CANDIDATES in rx:
            body["candidates"] = rx[_MORE_CANDIDATES]
        usage = _build_usage(response.usage, rx.get(_TOOL_USE_TOKENS, 0), snake)
        residual = rx.get(_USAGE)
        if residual is not None:
            usage.update(residual["set"])
            for key in residual["drop"]:
                usage.pop(key, None)
        if residual is not None or not same:
            body[_key("usageMetadata", snake)] = usage
        if response.model:
            body[_key("modelVersion", snake)] = response.model
        if not rx.get(_SYNTHETIC_ID):
            body[_key("responseId", snake)] = response.id
        body.update(_wire(rx))
        return body

    def _build_response_parts(self, content: list[Part], same: bool) -> list[dict[str, Any]]:
        if same:
            return self._build_parts(content, True, {}, "content")
        # For a Gemini client the unified id is the one it echoes back: send it along.
        parts = self._build_parts(content, False, {}, "content", show_foreign_thoughts=True)
        calls = iter(p for p in content if isinstance(p, ToolCall))
        for part in parts:
            if "functionCall" in part:
                part["functionCall"]["id"] = next(calls).id
        return parts

    # --- errors -----------------------------------------------------------------------------

    def parse_error(self, status: int, body: Any, headers: Mapping[str, str]) -> GatewayError:
        if isinstance(body, list) and body:
            body = body[0]  # streamGenerateContent without alt=sse wraps errors in a list
        error = body.get("error") if isinstance(body, dict) else None
        if isinstance(error, dict):
            message = str(error.get("message") or "")
            error_type = error.get("status")
        else:
            raw = body.decode("utf-8", "replace") if isinstance(body, (bytes, bytearray)) else ""
            message, error_type = raw.strip()[:2000], None
        # A bad API key is 400 INVALID_ARGUMENT with ErrorInfo.reason API_KEY_INVALID
        # ("Troubleshooting"): classify it as auth, keeping the provider's status.
        key_invalid = isinstance(error, dict) and any(
            isinstance(d, dict) and d.get("reason") == "API_KEY_INVALID"
            for d in error.get("details") or ()
        )
        classified = classify(
            401 if key_invalid else status,
            message,
            error_type=error_type if isinstance(error_type, str) else None,
            headers=headers,
            body=body,
        )
        classified.upstream_status = status
        return classified

    def build_error(self, error: GatewayError) -> tuple[int, dict[str, Any]]:
        status = error.status
        if status == 529:
            status = 503  # Anthropic's overloaded: Gemini's is UNAVAILABLE / 503
        elif not 400 <= status <= 599:
            status = 500
        name = (
            error.code
            if error.code in _STATUS_CODE and _STATUS_CODE[error.code] == status
            else None
        )
        body: dict[str, Any] = {
            "code": status,
            "message": error.message,
            "status": name
            or _STATUS_NAME.get(status, "INTERNAL" if status >= 500 else "INVALID_ARGUMENT"),
        }
        if error.retry_after is not None:
            body["details"] = [
                {
                    "@type": "type.googleapis.com/google.rpc.RetryInfo",
                    "retryDelay": _retry_delay(error.retry_after),
                }
            ]
        return status, {"error": body}

    # --- streams ----------------------------------------------------------------------------

    def stream_decoder(self) -> StreamDecoder:
        return _Decoder(self)

    def stream_encoder(self, request: Request | None = None) -> StreamEncoder:
        return _Encoder(self, request)

    def stream_framing(self, scope: Mapping[str, Any]) -> Callable[[Send], Send] | None:
        # streamGenerateContent is SSE only with ?alt=sse; without it, one JSON array.
        query = scope.get("query_string", b"")
        if b"alt=" in query and "sse" in parse_qs(query.decode("latin-1")).get("alt", ()):
            return None
        return JsonArrayStream


# --- usage ---------------------------------------------------------------------------------


def _parse_usage(usage: Mapping[str, Any], snake: set[str]) -> tuple[Usage, int]:
    def count(name: str) -> int:
        value = _get(usage, name, snake)
        return value if isinstance(value, int) and not isinstance(value, bool) else 0

    thoughts = count("thoughtsTokenCount")
    tool_tokens = count("toolUsePromptTokenCount")
    prompt = count("promptTokenCount")
    candidates = count("candidatesTokenCount")
    # usageMetadata: totalTokenCount = prompt + toolUsePrompt + candidates + thoughts, the
    # thoughts being outside candidatesTokenCount.  A total that already balances without
    # them says this backend counted thoughts inside the candidates: not added twice.
    total = count("totalTokenCount")
    output = (
        candidates
        if thoughts and total == prompt + tool_tokens + candidates
        else (candidates + thoughts)
    )
    return (
        Usage(
            input_tokens=prompt + tool_tokens,
            output_tokens=output,
            reasoning_tokens=thoughts,
            cache_read_tokens=count("cachedContentTokenCount"),
        ),
        tool_tokens,
    )


def _build_usage(usage: Usage, tool_tokens: int, snake: frozenset[str]) -> dict[str, Any]:
    out = {
        _key("promptTokenCount", snake): max(0, usage.input_tokens - tool_tokens),
        _key("candidatesTokenCount", snake): max(0, usage.output_tokens - usage.reasoning_tokens),
        _key("totalTokenCount", snake): usage.input_tokens + usage.output_tokens,
    }
    if usage.reasoning_tokens:
        out[_key("thoughtsTokenCount", snake)] = usage.reasoning_tokens
    if usage.cache_read_tokens:
        out[_key("cachedContentTokenCount", snake)] = usage.cache_read_tokens
    if tool_tokens:
        out[_key("toolUsePromptTokenCount", snake)] = tool_tokens
    return out


# --- stream decoding -----------------------------------------------------------------------


class _Decoder(StreamDecoder):
    """GenerateContentResponse chunks -> unified events."""

    def __init__(self, codec: GeminiCodec) -> None:
        self.done = False
        self._codec = codec
        self._started = False
        self._next = 0  # index of the next block
        self._open: str | None = None  # kind of the open block: text | reasoning
        self._signed = False  # the open reasoning block already got its signature
        self._tool_calls = False
        self._usage: Usage | None = None

    def feed(self, event: ServerSentEvent) -> list[Event]:
        data = event.data.strip()
        if self.done or not data:
            return []  # a chunk after finishReason (late usage) is ignored: Finish was last
        try:
            chunk = msgspec.json.decode(data)
        except msgspec.DecodeError:
            raise GatewayError(
                "server_error", "upstream sent malformed JSON in a stream event"
            ) from None
        if isinstance(chunk, list) and chunk:
            chunk = chunk[0]
        if not isinstance(chunk, dict):
            return []
        out: list[Event] = []
        if not self._started:
            self._started = True
            snake: set[str] = set()
            response_id = _get(chunk, "responseId", snake)
            model = _get(chunk, "modelVersion", snake)
            out.append(
                MessageStart(
                    id=response_id
                    if isinstance(response_id, str) and response_id
                    else new_id("resp_"),
                    model=model if isinstance(model, str) else "",
                )
            )
        error = chunk.get("error")
        if isinstance(error, dict):
            code = error.get("code")
            out.extend(self._close())
            out.append(
                Error(
                    error=self._codec.parse_error(code if isinstance(code, int) else 500, chunk, {})
                )
            )
            self.done = True
            return out
        snake = set()
        usage = _get(chunk, "usageMetadata", snake)
        if isinstance(usage, dict):
            parsed, _ = _parse_usage(usage, snake)
            self._usage = parsed if self._usage is None else self._usage.merge(parsed)
        candidates = chunk.get("candidates")
        candidate = candidates[0] if isinstance(candidates, list) and candidates else None
        finish = None
        if isinstance(candidate, dict):
            content = candidate.get("content")
            parts = content.get("parts") if isinstance(content, dict) else None
            for part in parts if isinstance(parts, list) else ():
                if isinstance(part, dict):
                    out.extend(self._part(part))
            finish = _get(candidate, "finishReason", snake)
        blocked = chunk.get("promptFeedback") or chunk.get("prompt_feedback")
        if isinstance(finish, str) or (
            candidate is None
            and isinstance(blocked, dict)
            and (blocked.get("blockReason") or blocked.get("block_reason"))
        ):
            reason = (
                "content_filter" if not isinstance(finish, str) else _FINISH_IN.get(finish, "stop")
            )
            if reason == "stop" and self._tool_calls:
                reason = "tool_calls"
            out.extend(self._close())
            out.append(Finish(reason=reason, usage=self._usage))  # type: ignore[arg-type]
            self.done = True
        return out

    def close(self) -> list[Event]:
        return [] if self.done else self._close()

    def _close(self) -> list[Event]:
        if self._open is None:
            return []
        self._open = None
        return [BlockStop(index=self._next - 1)]

    def _start(self, kind: str) -> list[Event]:
        events = self._close()
        self._open = kind
        self._signed = False
        self._next += 1
        return events

    def _part(self, part: dict[str, Any]) -> list[Event]:
        snake: set[str] = set()
        out: list[Event] = []
        signature = _get(part, "thoughtSignature", snake)
        signature = signature if isinstance(signature, str) and signature else None
        text = part.get("text")
        if part.get("thought") is True:
            if self._open != "reasoning" or self._signed:
                out.extend(self._start("reasoning"))
            if isinstance(text, str) and text:
                out.append(ReasoningDelta(index=self._next - 1, text=text))
            if signature is not None:
                out.append(Signature(index=self._next - 1, signature=signature, source=_NAME))
                self._signed = True
            return out
        if signature is not None:
            # The signature precedes the part that carried it, in a reasoning block of its own.
            out.extend(self._start("reasoning"))
            out.append(Signature(index=self._next - 1, signature=signature, source=_NAME))
            out.extend(self._close())
        call = _get(part, "functionCall", snake)
        if isinstance(call, dict):
            out.extend(self._close())
            index = self._next
            self._next += 1
            self._tool_calls = True
            call_id = call.get("id")
            name = call.get("name")
            out.append(
                ToolCallStart(
                    index=index,
                    id=call_id if isinstance(call_id, str) and call_id else new_id("call_"),
                    name=name if isinstance(name, str) else "",
                )
            )
            out.append(ToolArgsDelta(index=index, delta=_args_text(call.get("args") or {})))
            out.append(BlockStop(index=index))
        elif isinstance(text, str) and text:
            if self._open != "text":
                out.extend(self._start("text"))
            out.append(TextDelta(index=self._next - 1, text=text))
        # inlineData (image output), executableCode ...: no stream event can carry them.
        return out


# --- stream encoding -----------------------------------------------------------------------


class _Encoder(StreamEncoder):
    """Unified events -> ``data: GenerateContentResponse`` chunks."""

    def __init__(self, codec: GeminiCodec, request: Request | None) -> None:
        self._codec = codec
        self._model = request.model if request is not None else ""
        self._thoughts = _wants_thoughts(request)
        self._id: str | None = None
        self._ended = False
        self._usage: Usage | None = None
        self._reasoning_text: set[int] = set()  # reasoning blocks that carried text
        self._calls: dict[int, list[Any]] = {}  # index -> [id, name, [arg pieces]]
        self._pending: str | None = None  # a signature for the next part

    def encode(self, event: Event) -> bytes:
        if self._ended:
            return b""
        out = b""
        if self._id is None:
            if isinstance(event, MessageStart):
                self._id = event.id
                self._model = event.model or self._model
                self._merge(event.usage)
                return b""
            self._id = new_id("resp_")
        if isinstance(event, TextDelta):
            if event.text:
                out = self._chunk([{"text": event.text}])
        elif isinstance(event, ReasoningDelta):
            if event.text and self._thoughts:
                self._reasoning_text.add(event.index)
                out = self._chunk([{"text": event.text, "thought": True}])
        elif isinstance(event, Signature):
            if event.source == _NAME and event.signature:
                if event.index in self._reasoning_text:
                    out = self._chunk(
                        [{"text": "", "thought": True, "thoughtSignature": event.signature}]
                    )
                else:
                    self._pending = event.signature
        elif isinstance(event, ToolCallStart):
            self._calls[event.index] = [event.id, event.name, []]
        elif isinstance(event, ToolArgsDelta):
            self._calls.setdefault(event.index, [new_id("call_"), "", []])[2].append(event.delta)
        elif isinstance(event, BlockStop):
            out = self._flush_call(event.index)
        elif isinstance(event, UsageEvent):
            self._merge(event.usage)
        elif isinstance(event, Finish):
            out = self._finish(event)
        elif isinstance(event, Error):
            out = self._error(event.error)
        return out

    def _merge(self, usage: Usage | None) -> None:
        if usage is not None:
            self._usage = usage if self._usage is None else self._usage.merge(usage)

    def _chunk(
        self,
        parts: list[dict[str, Any]],
        finish: str | None = None,
        usage: dict[str, Any] | None = None,
    ) -> bytes:
        if self._pending is not None:
            parts[0]["thoughtSignature"] = self._pending
            self._pending = None
        candidate: dict[str, Any] = {"content": {"parts": parts, "role": "model"}}
        if finish is not None:
            candidate["finishReason"] = finish
        candidate["index"] = 0
        chunk: dict[str, Any] = {"candidates": [candidate]}
        if usage is not None:
            chunk["usageMetadata"] = usage
        chunk["modelVersion"] = self._model
        chunk["responseId"] = self._id
        return encode_json_event(_json.encode(chunk))

    def _flush_call(self, index: int) -> bytes:
        call = self._calls.pop(index, None)
        if call is None:
            return b""
        call_id, name, pieces = call
        function_call = {"name": name, "args": _args_object("".join(pieces)), "id": call_id}
        return self._chunk([{"functionCall": function_call}])

    def _finish(self, event: Finish) -> bytes:
        out = b"".join(self._flush_call(index) for index in sorted(self._calls))
        self._merge(event.usage)
        out += self._chunk(
            [{"text": ""}],
            finish=_FINISH_OUT[event.reason],
            usage=None if self._usage is None else _build_usage(self._usage, 0, frozenset()),
        )
        self._ended = True
        return out

    def _error(self, error: Any) -> bytes:
        if not isinstance(error, GatewayError):
            error = GatewayError("server_error", str(error))
        _, body = self._codec.build_error(error)
        body["error"].pop("details", None)
        self._ended = True
        # ``error`` first: google-genai raises only on a chunk whose JSON starts '{"error":'.
        return encode_json_event(_json.encode(body))
