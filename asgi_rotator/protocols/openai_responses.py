"""OpenAI Responses API (``POST /v1/responses``) codec.

Deliberate choices, so the other codecs and the docs can rely on them:

* **Items to messages.**  ``input`` is a flat item list; the unified model is a message list.
  A run of consecutive assistant-side items (``reasoning``, assistant ``message``,
  ``function_call``) becomes one assistant ``Message``; a run of ``function_call_output``
  items becomes one ``tool`` message; each user ``message`` item is one user message.
  ``system``/``developer`` message items go to ``Request.system`` (with ``instructions``)
  because the unified model has no system role inside the conversation.
* **Markers.**  What a same-protocol rebuild needs and the unified model cannot say (where a
  developer message stood in ``input``, message-item ids/status/phase, string-vs-list
  content, items with no unified form such as ``web_search_call`` or ``item_reference``) is
  kept in ``extra[MARK]`` of the nearest struct.  ``MARK`` is never written to the wire and is
  only read when ``origin`` is this protocol.
* **Absent versus null.**  A known field sent as ``null`` (or ``stream: false``) is not
  consumed: it stays in ``extra`` and comes back verbatim.  Response fields that are derived
  from the unified values (``status``, ``incomplete_details``, ``error``, ``usage`` ...) are
  consumed only when the derivation gives the same value back; otherwise the upstream value
  is kept.
* **Defaults only for foreign origins.**  A request parsed from this protocol is rebuilt with
  exactly its own fields; a request from another protocol gets what the Responses API needs:
  ``strict: false`` on function tools (Responses defaults ``strict`` to true, which rejects
  most schemas written for other APIs), ``detail: "auto"`` on images, a ``name`` on
  ``json_schema`` formats, assistant history as ``{"role": "assistant", "content": "..."}``.
* **Reasoning.**  A ``reasoning`` item's summary parts become ``Reasoning.text`` joined by a
  blank line; ``encrypted_content`` is ``Reasoning.redacted`` and ``id`` the ``rs_`` id.  A
  reasoning part from another protocol is not sent upstream (a ``rs_`` id OpenAI did not
  issue is rejected); in a response built for a client it becomes a summary-only item.
* **Stream errors.**  The openai SDK raises ``APIError`` on a stream event only when its data
  has a top-level ``error`` key (``openai/_streaming.py``), and the documented ``error``
  event (``ResponseErrorEvent``) has flat ``code``/``message``/``param``.  OpenAI's servers
  send both shapes in practice.  The encoder therefore ends an errored stream with
  ``response.failed`` (status ``failed``, ``error {code, message}``) followed by an ``error``
  event carrying the flat fields *and* a nested ``error`` object: it validates as
  ``ResponseErrorEvent`` and makes the SDK raise.  The decoder reads either shape.
* **Streams are rebuilt, not replayed.**  The encoder works from unified events, so each
  text block becomes its own ``message`` item, a reasoning block one summary part (the
  decoder joins summary parts with a blank line), and what has no unified event (annotations,
  logprobs, built-in tool items such as ``web_search_call``) is not streamed.  A length or
  content-filter stop ends with ``response.incomplete``, as OpenAI does; ids are kept as
  the upstream gave them.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterable, Mapping
from typing import Any

import msgspec

from ..errors import DEFAULT_STATUS, GatewayError, classify
from ..sse import ServerSentEvent, SSEDecoder, encode_json_event
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
    budget_to_effort,
    expect_bool,
    expect_dict,
    expect_int,
    expect_list,
    expect_model,
    expect_number,
    expect_str,
    new_id,
    pick_extra,
    reported_cost,
)
from .base import Codec, StreamDecoder, StreamEncoder, bad_request

__all__ = ["MARK", "OpenAIResponsesCodec", "as_instructions"]

NAME = "openai_responses"
# Key in ``extra`` for what only a same-protocol rebuild needs; never sent on the wire.
MARK = "_openai_responses"

_json_encode = msgspec.json.Encoder().encode
_json_decode = msgspec.json.Decoder().decode
_SEQUENCE_NUMBER = re.compile(rb'"sequence_number"\s*:\s*(\d+)')

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
_INCOMPLETE_FINISH: dict[str, FinishReason] = {
    "max_output_tokens": "length",
    "content_filter": "content_filter",
}
_FINISH_INCOMPLETE = {"length": "max_output_tokens", "content_filter": "content_filter"}
# ``ResponseError.code`` is a closed enum in the API reference.
_FAILED_CODE = {
    "rate_limited": "rate_limit_exceeded",
    "bad_request": "invalid_prompt",
    "context_window_exceeded": "invalid_prompt",
    "content_filtered": "invalid_prompt",
}
# kind -> (error.type, error.code) of the HTTP error body (API reference "Error codes").
_ERROR_SHAPE: dict[str, tuple[str, str | None]] = {
    "rate_limited": ("rate_limit_error", "rate_limit_exceeded"),
    "overloaded": ("server_error", "server_overloaded"),
    "server_error": ("server_error", None),
    "timeout": ("server_error", "timeout"),
    "connection": ("server_error", "upstream_connection_error"),
    "context_window_exceeded": ("invalid_request_error", "context_length_exceeded"),
    "content_filtered": ("invalid_request_error", "content_policy_violation"),
    "auth": ("authentication_error", "invalid_api_key"),
    "bad_request": ("invalid_request_error", None),
    "not_found": ("invalid_request_error", "not_found"),
}
# Known-key sets for ``pick_extra``, made once rather than per call.
_KEYS_CONTENT = frozenset({"content"})
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
    return Text(text=text.text, extra={k: v for k, v in text.extra.items() if k != MARK})


class OpenAIResponsesCodec(Codec):
    name = NAME
    auth = "bearer"
    # Every stream event has a ``sequence_number``, and an error event repeats the response.
    numbers_stream_events = True

    # --- requests ---------------------------------------------------------------------------

    def request_path(self, request: Request) -> str:
        return "/responses"

    def parse_request(
        self, body: Any, *, model: str | None = None, stream: bool | None = None
    ) -> Request:
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

    def build_request(self, request: Request) -> dict[str, Any]:
        own = request.origin == NAME
        mark = _mark(request.extra) if own else {}
        body: dict[str, Any] = _wire_extra(request.extra) if own else {}
        body["model"] = request.model
        body["input"] = self._build_input(request, own, mark)
        body.update(self._build_settings(request, own, mark))
        if request.stream:
            body["stream"] = True
        return body

    def _build_input(self, request: Request, own: bool, mark: dict[str, Any]) -> Any:
        if own and mark.get("input_string") and len(request.messages) == 1:
            only = request.messages[0]
            if only.role == "user" and not only.extra and len(only.content) == 1:
                if isinstance(only.content[0], Text):
                    return only.content[0].text
        items: list[dict[str, Any]] = []
        for message in request.messages:
            msg_mark = _mark(message.extra) if own else {}
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

    def _build_settings(self, request: Request, own: bool, mark: dict[str, Any]) -> dict[str, Any]:
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

    # --- responses --------------------------------------------------------------------------

    def parse_response(self, body: Any) -> Response:
        if not isinstance(body, dict):
            raise GatewayError("server_error", "upstream sent a response that is not an object")
        output = body.get("output")
        output = output if isinstance(output, list) else []
        content, opaque = _parse_output(output)
        status = body.get("status")
        finish: FinishReason = "stop"
        if status == "completed":
            if any(isinstance(p, ToolCall) for p in content):
                finish = "tool_calls"
        elif status == "incomplete":
            details = body.get("incomplete_details")
            reason = details.get("reason") if isinstance(details, dict) else None
            finish = _INCOMPLETE_FINISH.get(str(reason), "length")
        elif status == "failed":
            finish = "error"
        created = body.get("created_at")
        response = Response(
            id=str(body.get("id") or ""),
            model=str(body.get("model") or ""),
            content=content,
            finish_reason=finish,
            usage=_parse_usage(body.get("usage")),
            created=int(created) if isinstance(created, (int, float)) else 0,
            origin=NAME,
        )
        # Keep upstream values the unified fields cannot reproduce exactly.
        derived = _derived_response_fields(response)
        consumed = {"id", "model", "output"} | {
            k for k, v in derived.items() if k in body and body[k] == v
        }
        extra = {k: v for k, v in body.items() if k not in consumed}
        mark: dict[str, Any] = {}
        absent = [k for k in derived if k not in body]
        if absent:
            mark["absent"] = absent
        if opaque:
            mark["opaque"] = opaque
        if mark:
            extra[MARK] = mark
        response.extra = extra
        return response

    def build_response(self, response: Response, request: Request | None = None) -> dict[str, Any]:
        own = response.origin == NAME
        output = _assistant_items(response.content, own, for_response=True)
        mark = _mark(response.extra) if own else {}
        for at, item in mark.get("opaque", ()):
            output.insert(min(at, len(output)), item)
        extra = _wire_extra(response.extra) if own else {}
        if own:
            # The upstream's own echo fields are in extra: nothing is invented.
            body: dict[str, Any] = {"id": response.id, **extra, "model": response.model}
        else:
            body = _response_envelope(
                self, response.id, response.model, response.created, "completed", request
            )
        body["output"] = output
        for key, value in _derived_response_fields(response).items():
            if key not in extra:
                body[key] = value
        for key in mark.get("absent", ()):
            body.pop(key, None)
        return body

    # --- errors -----------------------------------------------------------------------------

    def parse_error(self, status: int, body: Any, headers: Mapping[str, str]) -> GatewayError:
        message, error_type, param = "", None, None
        if isinstance(body, dict):
            error = body.get("error")
            if isinstance(error, dict):
                message = str(error.get("message") or "")
                error_type = error.get("code") or error.get("type")
                param = error.get("param")
            elif isinstance(error, str):
                message = error
        elif isinstance(body, (bytes, bytearray)):
            message = bytes(body[:2000]).decode("utf-8", "replace").strip()
        err = classify(
            status,
            message,
            error_type=str(error_type) if error_type else None,
            headers=headers,
            body=body,
            provider=NAME,
        )
        if isinstance(param, str):
            err.param = param
        return err

    def build_error(self, error: GatewayError) -> tuple[int, dict[str, Any]]:
        error_type, code = _ERROR_SHAPE[error.kind]
        if error.kind == "rate_limited" and error.quota:
            error_type = code = "insufficient_quota"
        elif error.kind == "auth" and error.status == 403:
            error_type, code = "permission_error", None
        status = error.status
        if error.kind == "overloaded" or status < 400 or status > 599 or status == 529:
            status = DEFAULT_STATUS[error.kind]
        body = {
            "error": {
                "message": error.message,
                "type": error_type,
                "param": error.param,
                "code": error.code or code,
            }
        }
        return status, body

    # --- streams ----------------------------------------------------------------------------

    def stream_decoder(self) -> StreamDecoder:
        return _Decoder()

    def stream_encoder(self, request: Request | None = None) -> StreamEncoder:
        return _Encoder(self, request)

    def stream_resume_point(
        self, body: bytes, *, find_id: bool = True
    ) -> tuple[str | None, int | None]:
        # Per sent event on every Responses stream: the number is found from the end
        # without decoding; the id only in the one event that announces it.
        last = None
        at = body.rfind(b'"sequence_number"')
        if at >= 0:
            found = _SEQUENCE_NUMBER.match(body, at)
            if found is not None:
                last = int(found.group(1))
        response_id = None
        if find_id and b'"response.created"' in body:
            decoder = SSEDecoder()
            for event in [*decoder.feed(body), *decoder.close()]:
                try:
                    data = _json_decode(event.data)
                except (msgspec.DecodeError, UnicodeDecodeError, RecursionError):
                    continue
                if isinstance(data, dict) and data.get("type") == "response.created":
                    response = data.get("response")
                    if isinstance(response, dict) and isinstance(response.get("id"), str):
                        response_id = response["id"]
        return response_id, last


# --- request parsing ---------------------------------------------------------------------------


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
        fields = pick_extra(item, _KEYS_ROLE_CONTENT)
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
        extra = pick_extra(item, _KEYS_TYPE_CALL_ID_OUTPUT)
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
        extra = pick_extra(part, frozenset({"type", key}))
        if kind != default_type:
            extra["type"] = kind
        return Text(text=text, extra=extra)
    if kind == "input_image":
        url, file_id = part.get("image_url"), part.get("file_id")
        if url is None and file_id is None:
            raise bad_request(path, "input_image needs image_url or file_id")
        image = Image(extra=pick_extra(part, _KEYS_TYPE_IMAGE_URL_DETAIL))
        if url is not None:
            image.url = expect_str(url, f"{path}.image_url")
        if part.get("detail") is not None:
            image.detail = expect_str(part["detail"], f"{path}.detail")
        elif "detail" in part:
            image.extra["detail"] = None
        return image
    if kind == "input_file":
        file = File(extra=pick_extra(part, _KEYS_TYPE_FILE_ID_FILE_URL_FILE_DATA_FILENAME))
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
    extra = pick_extra(item, _KEYS_TYPE_CALL_ID_NAME_ARGUMENTS)
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
    extra = pick_extra(item, _KEYS_TYPE_ID_SUMMARY_ENCRYPTED_CONTENT)
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
        return Tool(name=str(label), type=kind, extra=pick_extra(tool, _KEYS_TYPE))
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


# --- request building ----------------------------------------------------------------------------


def _mark(extra: dict[str, Any]) -> dict[str, Any]:
    value = extra.get(MARK)
    return value if isinstance(value, dict) else {}


def _wire_extra(extra: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in extra.items() if k != MARK}


def _system_items(system: list[Text]) -> list[tuple[int, dict[str, Any]]]:
    """system/developer message items back at their place in ``input``."""
    grouped: dict[int, tuple[dict[str, Any], list[Text]]] = {}
    for text in system:
        marker = _mark(text.extra)
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
    extra = _wire_extra(text.extra) if own else {}
    kind = extra.pop("type", default_type)
    part = {"type": kind, ("refusal" if kind == "refusal" else "text"): text.text}
    if kind == "output_text" and not own:
        part["annotations"] = []
    part.update(extra)
    return part


def _media_part(part: Image | File, own: bool) -> dict[str, Any] | None:
    extra = _wire_extra(part.extra) if own else {}
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
        item = _wire_extra(message.extra) if own else {}
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
        item = _wire_extra(message.extra)
        item.update(role="user", content=[])
        items.append(item)
    return items


def _function_output_item(result: ToolResult, own: bool) -> dict[str, Any]:
    texts = [p for p in result.content if isinstance(p, Text)]
    if own:
        string = bool(_mark(result.extra).get("string"))
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
        item.update(_wire_extra(result.extra))
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
            marker = _mark(part.extra) if own else {}
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
                item.update(_wire_extra(part.extra))
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
        item.update(_wire_extra(part.extra))
        if _mark(part.extra).get("no_summary"):
            del item["summary"]
    return item


def _build_tool(tool: Tool, own: bool) -> dict[str, Any] | None:
    if tool.type != "function":
        # Built-in tools only go back to the protocol they were written for.
        return {"type": tool.type, **_wire_extra(tool.extra)} if own else None
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
        out.update(_wire_extra(tool.extra))
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


# --- responses -----------------------------------------------------------------------------------


def _parse_output(output: list[Any]) -> tuple[list[Part], list[list[Any]]]:
    content: list[Part] = []
    opaque: list[list[Any]] = []
    for i, item in enumerate(output):
        kind = item.get("type") if isinstance(item, dict) else None
        try:
            if kind == "message":
                fields = pick_extra(item, _KEYS_CONTENT)
                parts = item.get("content")
                texts = [
                    _parse_content_part(p, f"output[{i}].content[{j}]", "output_text")
                    for j, p in enumerate(parts if isinstance(parts, list) else ())
                ]
                if texts and all(isinstance(t, Text) for t in texts):
                    texts[0].extra[MARK] = {"item": fields}
                    content.extend(texts)
                    continue
            elif kind == "function_call":
                content.append(_parse_function_call(item, f"output[{i}]"))
                continue
            elif kind == "reasoning":
                content.append(_parse_reasoning_item(item, f"output[{i}]"))
                continue
        except GatewayError:
            pass  # an odd item the unified model cannot hold: carried as it is
        opaque.append([i, item])
    return content, opaque


def _parse_usage(raw: Any) -> Usage:
    if not isinstance(raw, dict):
        return Usage()
    inp = raw.get("input_tokens_details")
    out = raw.get("output_tokens_details")
    inp = inp if isinstance(inp, dict) else {}
    out = out if isinstance(out, dict) else {}
    return Usage(
        input_tokens=_int(raw.get("input_tokens")),
        output_tokens=_int(raw.get("output_tokens")),
        reasoning_tokens=_int(out.get("reasoning_tokens")),
        cache_read_tokens=_int(inp.get("cached_tokens")),
        cache_write_tokens=_int(inp.get("cache_write_tokens")),
        cost=reported_cost(raw),  # xAI and OpenRouter report it here too
    )


def _obj(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def _usage_body(usage: Usage) -> dict[str, Any]:
    # OpenAI counts like the unified rule: input includes cached, output includes reasoning.
    return {
        "input_tokens": usage.input_tokens,
        "input_tokens_details": {
            "cached_tokens": usage.cache_read_tokens,
            "cache_write_tokens": usage.cache_write_tokens,
        },
        "output_tokens": usage.output_tokens,
        "output_tokens_details": {"reasoning_tokens": usage.reasoning_tokens},
        "total_tokens": usage.total_tokens,
    }


def _status_fields(finish: FinishReason, message: str | None = None) -> dict[str, Any]:
    if finish in _FINISH_INCOMPLETE:
        return {
            "status": "incomplete",
            "incomplete_details": {"reason": _FINISH_INCOMPLETE[finish]},
            "error": None,
        }
    if finish == "error":
        return {
            "status": "failed",
            "incomplete_details": None,
            "error": {
                "code": "server_error",
                "message": message or "The model ended the response abnormally.",
            },
        }
    return {"status": "completed", "incomplete_details": None, "error": None}


def _derived_response_fields(response: Response) -> dict[str, Any]:
    out: dict[str, Any] = {"object": "response", "created_at": response.created or int(time.time())}
    out.update(_status_fields(response.finish_reason))
    out["usage"] = _usage_body(response.usage)
    return out


def _response_envelope(
    codec: OpenAIResponsesCodec,
    response_id: str,
    model: str,
    created: int,
    status: str,
    request: Request | None,
) -> dict[str, Any]:
    """A response object in the field order of the API reference, with the request echo
    (``tools``, ``tool_choice`` ... are required by the SDK's ``Response`` type)."""
    body: dict[str, Any] = {
        "id": response_id,
        "object": "response",
        "created_at": created or int(time.time()),
        "status": status,
        "background": False,
        "error": None,
        "incomplete_details": None,
        "instructions": None,
        "max_output_tokens": None,
        "model": model,
        "output": [],
        "parallel_tool_calls": True,
        "previous_response_id": None,
        "reasoning": {"effort": None, "summary": None},
        "store": True,
        "temperature": 1.0,
        "text": {"format": {"type": "text"}},
        "tool_choice": "auto",
        "tools": [],
        "top_p": 1.0,
        "truncation": "disabled",
        "usage": None,
        "user": None,
        "metadata": {},
    }
    if request is not None:
        own = request.origin == NAME
        echo = codec._build_settings(request, own, _mark(request.extra) if own else {})
        if "reasoning" in echo:
            echo["reasoning"] = {"effort": None, "summary": None, **echo["reasoning"]}
        body.update(echo)
    return body


# --- stream decoding -----------------------------------------------------------------------------


def _stream_error(payload: Mapping[str, Any]) -> GatewayError:
    """``error`` event (flat per the API reference, or nested as servers send it) or a failed
    response's ``error`` object."""
    nested = payload.get("error")
    source = nested if isinstance(nested, Mapping) else payload
    code = source.get("code") or payload.get("code")
    error_type = source.get("type") if source is nested else None
    message = str(source.get("message") or payload.get("message") or "upstream stream error")
    hint = f"{code or ''} {error_type or ''}".lower()
    status = 500
    for words, value in _STREAM_ERROR_STATUS:
        if any(w in hint for w in words):
            status = value
            break
    err = classify(
        status,
        message,
        error_type=str(code or error_type or "") or None,
        body=payload,
        provider=NAME,
    )
    param = source.get("param")
    if isinstance(param, str):
        err.param = param
    return err


_STREAM_ERROR_STATUS: tuple[tuple[tuple[str, ...], int], ...] = (
    (("rate_limit", "too_many_requests", "quota"), 429),
    (("overloaded", "unavailable"), 503),
    (("timeout",), 504),
    (("auth", "api_key", "permission"), 401),
    (("not_found",), 404),
    (("server_error", "internal"), 500),
    (("invalid", "context_length", "policy", "image", "bad_request"), 400),
)


class _Decoder(StreamDecoder):
    def __init__(self) -> None:
        self.done = False
        self._started = False
        self._next = 0  # next unified block index
        self._text: dict[tuple[int, int], int] = {}  # (output_index, content_index) -> block
        self._item: dict[int, int] = {}  # output_index -> block (reasoning / function_call)
        self._item_ids: dict[int, str] = {}
        self._summary_seen: set[int] = set()
        self._args_seen: set[int] = set()
        self._open: set[int] = set()
        self._tool_calls = False

    def feed(self, event: ServerSentEvent) -> list[Event]:
        if self.done or not event.data or event.data == "[DONE]":
            return []
        try:
            data = _json_decode(event.data)
        except msgspec.DecodeError:
            raise GatewayError(
                "server_error", "upstream sent malformed JSON in a stream event"
            ) from None
        if not isinstance(data, dict):
            return []
        kind = data.get("type") or event.event
        out: list[Event] = []
        if not self._started:
            self._started = True
            resp = _obj(data.get("response"))
            created = resp.get("created_at")
            out.append(
                MessageStart(
                    id=str(resp.get("id") or new_id("resp_")),
                    model=str(resp.get("model") or ""),
                    created=int(created) if isinstance(created, (int, float)) else 0,
                )
            )
        handler = _DECODERS.get(str(kind))
        if handler is not None:
            handler(self, data, out)
        return out

    # -- helpers

    def _open_block(self) -> int:
        index = self._next
        self._next += 1
        self._open.add(index)
        return index

    def _stop(self, index: int | None, out: list[Event]) -> None:
        if index is not None and index in self._open:
            self._open.discard(index)
            out.append(BlockStop(index=index))

    def _text_delta(self, data: dict[str, Any], text: str, out: list[Event]) -> None:
        if not text:
            return
        key = (_int(data.get("output_index")), _int(data.get("content_index")))
        index = self._text.get(key)
        if index is None:
            index = self._text[key] = self._open_block()
        out.append(TextDelta(index=index, text=text))

    # -- handlers

    def _delta(self, data: dict[str, Any], out: list[Event]) -> None:
        delta = data.get("delta")
        if isinstance(delta, str):
            self._text_delta(data, delta, out)

    def _item_added(self, data: dict[str, Any], out: list[Event]) -> None:
        item = data.get("item")
        if not isinstance(item, dict):
            return
        position = _int(data.get("output_index"))
        if item.get("type") == "function_call":
            index = self._item[position] = self._open_block()
            self._tool_calls = True
            out.append(
                ToolCallStart(
                    index=index, id=str(item.get("call_id") or ""), name=str(item.get("name") or "")
                )
            )
            if item.get("arguments"):
                self._args_seen.add(position)
                out.append(ToolArgsDelta(index=index, delta=str(item["arguments"])))
        elif item.get("type") == "reasoning":
            # Opened at once so the block carries its rs_ id even with no summary text.
            index = self._item[position] = self._open_block()
            self._item_ids[position] = str(item.get("id") or "")
            out.append(ReasoningDelta(index=index, text="", id=self._item_ids[position] or None))

    def _summary_part(self, data: dict[str, Any], out: list[Event]) -> None:
        position = _int(data.get("output_index"))
        index = self._item.get(position)
        if index is not None and _int(data.get("summary_index")) > 0:
            out.append(
                ReasoningDelta(index=index, text=_REASONING_SEP, id=self._item_ids.get(position))
            )

    def _reasoning_delta(self, data: dict[str, Any], out: list[Event]) -> None:
        position = _int(data.get("output_index"))
        index = self._item.get(position)
        delta = data.get("delta")
        if index is not None and isinstance(delta, str) and delta:
            self._summary_seen.add(position)
            out.append(ReasoningDelta(index=index, text=delta, id=self._item_ids.get(position)))

    def _args_delta(self, data: dict[str, Any], out: list[Event]) -> None:
        position = _int(data.get("output_index"))
        index = self._item.get(position)
        delta = data.get("delta")
        if index is not None and isinstance(delta, str) and delta:
            self._args_seen.add(position)
            out.append(ToolArgsDelta(index=index, delta=delta))

    def _args_done(self, data: dict[str, Any], out: list[Event]) -> None:
        position = _int(data.get("output_index"))
        index = self._item.get(position)
        arguments = data.get("arguments")
        if index is not None and position not in self._args_seen and isinstance(arguments, str):
            if arguments:
                out.append(ToolArgsDelta(index=index, delta=arguments))
            self._args_seen.add(position)

    def _text_done(self, data: dict[str, Any], out: list[Event]) -> None:
        key = (_int(data.get("output_index")), _int(data.get("content_index")))
        if key not in self._text:
            part = data.get("part")
            text = data.get("text")
            if isinstance(part, dict):
                text = (
                    part.get("text") if part.get("type") == "output_text" else part.get("refusal")
                )
            if isinstance(text, str):
                self._text_delta(data, text, out)
        self._stop(self._text.get(key), out)

    def _item_done(self, data: dict[str, Any], out: list[Event]) -> None:
        position = _int(data.get("output_index"))
        item = _obj(data.get("item"))
        index = self._item.get(position)
        if item.get("type") == "reasoning" and index is not None:
            if position not in self._summary_seen:
                summary = item.get("summary")
                text = (
                    _REASONING_SEP.join(
                        p["text"]
                        for p in summary
                        if isinstance(p, dict) and isinstance(p.get("text"), str)
                    )
                    if isinstance(summary, list)
                    else ""
                )
                if text:
                    out.append(
                        ReasoningDelta(index=index, text=text, id=self._item_ids.get(position))
                    )
            if item.get("encrypted_content"):
                out.append(
                    Signature(
                        index=index,
                        redacted=str(item["encrypted_content"]),
                        source=NAME,
                        id=str(item.get("id") or self._item_ids.get(position) or "") or None,
                    )
                )
        elif item.get("type") == "function_call" and index is not None:
            self._args_done(item | {"output_index": position}, out)
        elif item.get("type") == "message":
            content = item.get("content")
            for j, part in enumerate(content if isinstance(content, list) else ()):
                self._text_done({"output_index": position, "content_index": j, "part": part}, out)
        self._stop(index, out)

    def _terminal(self, data: dict[str, Any], out: list[Event]) -> None:
        self.done = True
        resp = _obj(data.get("response"))
        if data.get("type") == "response.failed":
            error = resp.get("error")
            out.append(Error(error=_stream_error(error if isinstance(error, dict) else {})))
            return
        for index in sorted(self._open):
            out.append(BlockStop(index=index))
        self._open.clear()
        reason: FinishReason = "tool_calls" if self._tool_calls else "stop"
        if data.get("type") == "response.incomplete" or resp.get("status") == "incomplete":
            details = resp.get("incomplete_details")
            cause = details.get("reason") if isinstance(details, dict) else None
            reason = _INCOMPLETE_FINISH.get(str(cause), "length")
        usage = _parse_usage(resp.get("usage")) if resp.get("usage") is not None else None
        out.append(Finish(reason=reason, usage=usage))

    def _error(self, data: dict[str, Any], out: list[Event]) -> None:
        self.done = True
        out.append(Error(error=_stream_error(data)))


_DECODERS = {
    "response.output_item.added": _Decoder._item_added,
    "response.output_text.delta": _Decoder._delta,
    "response.refusal.delta": _Decoder._delta,
    "response.output_text.done": _Decoder._text_done,
    "response.refusal.done": _Decoder._text_done,
    "response.content_part.done": _Decoder._text_done,
    "response.reasoning_summary_part.added": _Decoder._summary_part,
    "response.reasoning_summary_text.delta": _Decoder._reasoning_delta,
    "response.reasoning_text.delta": _Decoder._reasoning_delta,
    "response.function_call_arguments.delta": _Decoder._args_delta,
    "response.function_call_arguments.done": _Decoder._args_done,
    "response.output_item.done": _Decoder._item_done,
    "response.completed": _Decoder._terminal,
    "response.incomplete": _Decoder._terminal,
    "response.failed": _Decoder._terminal,
    "error": _Decoder._error,
}


# --- stream encoding -----------------------------------------------------------------------------


class _Block:
    __slots__ = ("item", "kind", "output_index", "part_open", "text")

    def __init__(self, kind: str, output_index: int, item: dict[str, Any]) -> None:
        self.kind = kind
        self.output_index = output_index
        self.item = item
        self.text: list[str] = []
        self.part_open = False


class _Encoder(StreamEncoder):
    """Unified events -> the Responses event sequence, accumulating the whole response for
    ``response.completed``.  Each text block is one assistant ``message`` item."""

    def __init__(self, codec: OpenAIResponsesCodec, request: Request | None) -> None:
        self._codec = codec
        self._request = request
        self._seq = 0
        self._id = ""
        self._model = request.model if request is not None else ""
        self._created = 0
        self._usage = Usage()
        self._blocks: dict[int, _Block] = {}
        self._output: list[dict[str, Any] | None] = []  # finished items by output_index
        self._started = False
        self._closed = False

    def encode(self, event: Event) -> bytes:
        if self._closed:
            return b""
        chunks: list[bytes] = []
        if not self._started:
            start = event if isinstance(event, MessageStart) else None
            self._start(start, chunks)
            if start is not None:
                return b"".join(chunks)
        if isinstance(event, TextDelta):
            block = self._block(event.index, "text", chunks)
            if event.text and block.kind == "text":
                block.text.append(event.text)
                self._emit(
                    chunks,
                    "response.output_text.delta",
                    item_id=block.item["id"],
                    output_index=block.output_index,
                    content_index=0,
                    delta=event.text,
                    logprobs=[],
                )
        elif isinstance(event, ReasoningDelta):
            block = self._block(event.index, "reasoning", chunks, reasoning_id=event.id)
            if event.text and block.kind == "reasoning":
                self._summary_part(block, chunks)
                block.text.append(event.text)
                self._emit(
                    chunks,
                    "response.reasoning_summary_text.delta",
                    item_id=block.item["id"],
                    output_index=block.output_index,
                    summary_index=0,
                    delta=event.text,
                )
        elif isinstance(event, Signature):
            if event.source == NAME and event.redacted:
                block = self._block(event.index, "reasoning", chunks, reasoning_id=event.id)
                if block.kind == "reasoning":
                    block.item["encrypted_content"] = event.redacted
        elif isinstance(event, ToolCallStart):
            self._block(event.index, "tool", chunks, call=(event.id, event.name))
        elif isinstance(event, ToolArgsDelta):
            block = self._block(event.index, "tool", chunks)
            if event.delta and block.kind == "tool":
                block.text.append(event.delta)
                self._emit(
                    chunks,
                    "response.function_call_arguments.delta",
                    item_id=block.item["id"],
                    output_index=block.output_index,
                    delta=event.delta,
                )
        elif isinstance(event, BlockStop):
            self._stop(event.index, chunks)
        elif isinstance(event, UsageEvent):
            self._usage = self._usage.merge(event.usage)
        elif isinstance(event, Finish):
            self._finish(event, chunks)
        elif isinstance(event, Error):
            self._fail(event.error, chunks)
        return b"".join(chunks)

    def resume(self, start: MessageStart, last_sequence: int | None = None) -> None:
        # The opening is dropped (the OpenAI SDK rejects a second response.created with
        # another id) and the numbering goes on from the client's last event.  A started
        # encoder takes the client's id: a layer above may have given the response its own.
        if self._started:
            if start.id:
                self._id = start.id
        else:
            super().resume(start)
        if last_sequence is not None:
            self._seq = last_sequence + 1

    # -- framing

    def _emit(self, chunks: list[bytes], kind: str, **fields: Any) -> None:
        payload = {"type": kind, **fields, "sequence_number": self._seq}
        self._seq += 1
        chunks.append(encode_json_event(_json_encode(payload), kind))

    def _envelope(self, status: str) -> dict[str, Any]:
        return _response_envelope(
            self._codec, self._id, self._model, self._created, status, self._request
        )

    def _start(self, start: MessageStart | None, chunks: list[bytes]) -> None:
        self._started = True
        self._id = start.id if start is not None and start.id else new_id("resp_")
        if start is not None and start.model:
            self._model = start.model
        self._created = (start.created if start is not None else 0) or int(time.time())
        if start is not None and start.usage is not None:
            self._usage = self._usage.merge(start.usage)
        self._emit(chunks, "response.created", response=self._envelope("in_progress"))
        self._emit(chunks, "response.in_progress", response=self._envelope("in_progress"))

    # -- blocks

    def _block(
        self,
        index: int,
        kind: str,
        chunks: list[bytes],
        *,
        reasoning_id: str | None = None,
        call: tuple[str, str] | None = None,
    ) -> _Block:
        block = self._blocks.get(index)
        if block is not None:
            return block
        position = len(self._output)
        self._output.append(None)
        if kind == "text":
            item: dict[str, Any] = {
                "id": new_id("msg_"),
                "type": "message",
                "status": "in_progress",
                "content": [],
                "role": "assistant",
            }
        elif kind == "reasoning":
            item = {"id": reasoning_id or new_id("rs_"), "type": "reasoning", "summary": []}
        else:
            call_id, name = call or (new_id("call_"), "")
            item = {
                "id": new_id("fc_"),
                "type": "function_call",
                "status": "in_progress",
                "arguments": "",
                "call_id": call_id,
                "name": name,
            }
        block = self._blocks[index] = _Block(kind, position, item)
        self._emit(chunks, "response.output_item.added", output_index=position, item=dict(item))
        if kind == "text":
            self._emit(
                chunks,
                "response.content_part.added",
                item_id=item["id"],
                output_index=position,
                content_index=0,
                part=_output_text(""),
            )
        return block

    def _summary_part(self, block: _Block, chunks: list[bytes]) -> None:
        if not block.part_open:
            block.part_open = True
            self._emit(
                chunks,
                "response.reasoning_summary_part.added",
                item_id=block.item["id"],
                output_index=block.output_index,
                summary_index=0,
                part={"type": "summary_text", "text": ""},
            )

    def _stop(self, index: int, chunks: list[bytes]) -> None:
        block = self._blocks.get(index)
        if block is None or self._output[block.output_index] is not None:
            return
        text = "".join(block.text)
        item = block.item
        common = {"item_id": item["id"], "output_index": block.output_index}
        if block.kind == "text":
            part = _output_text(text)
            self._emit(
                chunks,
                "response.output_text.done",
                **common,
                content_index=0,
                text=text,
                logprobs=[],
            )
            self._emit(chunks, "response.content_part.done", **common, content_index=0, part=part)
            item.update(status="completed", content=[part])
        elif block.kind == "reasoning":
            if block.part_open:
                summary = {"type": "summary_text", "text": text}
                self._emit(
                    chunks,
                    "response.reasoning_summary_text.done",
                    **common,
                    summary_index=0,
                    text=text,
                )
                self._emit(
                    chunks,
                    "response.reasoning_summary_part.done",
                    **common,
                    summary_index=0,
                    part=summary,
                )
                item["summary"] = [summary]
        else:
            self._emit(chunks, "response.function_call_arguments.done", **common, arguments=text)
            item.update(status="completed", arguments=text)
        self._output[block.output_index] = item
        self._emit(chunks, "response.output_item.done", output_index=block.output_index, item=item)

    # -- terminal events

    def _finish(self, event: Finish, chunks: list[bytes]) -> None:
        for index in sorted(self._blocks):
            self._stop(index, chunks)
        if event.usage is not None:
            self._usage = self._usage.merge(event.usage)
        fields = _status_fields(event.reason)
        response = self._envelope(fields["status"])
        response.update(fields)
        response["output"] = [item for item in self._output if item is not None]
        response["usage"] = _usage_body(self._usage)
        kind = {"incomplete": "response.incomplete", "failed": "response.failed"}.get(
            fields["status"], "response.completed"
        )
        self._emit(chunks, kind, response=response)
        self._closed = True

    def _fail(self, error: Any, chunks: list[bytes]) -> None:
        err = error if isinstance(error, GatewayError) else GatewayError("server_error", str(error))
        code = _FAILED_CODE.get(err.kind, "server_error")
        response = self._envelope("failed")
        response["error"] = {"code": code, "message": err.message}
        response["output"] = [item for item in self._output if item is not None]
        self._emit(chunks, "response.failed", response=response)
        _, body = self._codec.build_error(err)
        self._emit(
            chunks,
            "error",
            code=body["error"]["code"] or code,
            message=err.message,
            param=err.param,
            error=body["error"],
        )
        self._closed = True


def _output_text(text: str) -> dict[str, Any]:
    return {"type": "output_text", "annotations": [], "logprobs": [], "text": text}
