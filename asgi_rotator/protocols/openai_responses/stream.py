"""OpenAI Responses streams: provider SSE events decoded into unified events, and unified events
encoded as this protocol's SSE events."""

from __future__ import annotations

import re
import time
from collections.abc import Mapping
from typing import Any

import msgspec

from ...errors import GatewayError, classify
from ...sse import ServerSentEvent, SSEDecoder, encode_event, encode_json_event
from ...unified import (
    BlockStop,
    Error,
    Event,
    Finish,
    FinishReason,
    MessageStart,
    ReasoningDelta,
    Request,
    Signature,
    TextDelta,
    ToolArgsDelta,
    ToolCallStart,
    Usage,
    UsageEvent,
)
from .._common import int_or_zero, new_id
from ..base import Codec, JsonStreamDecoder, StreamEncoder
from .content import NAME, REASONING_SEP
from .response import (
    INCOMPLETE_FINISH,
    parse_usage,
    response_envelope,
    status_fields,
    usage_body,
)

_json_encode = msgspec.json.Encoder().encode
_json_decode = msgspec.json.Decoder().decode
_SEQUENCE_NUMBER = re.compile(rb'"sequence_number"\s*:\s*(\d+)')
_TERMINAL_STATUS = frozenset({"completed", "incomplete", "failed"})

# ``ResponseError.code`` is a closed enum in the API reference.
_FAILED_CODE = {
    "rate_limited": "rate_limit_exceeded",
    "bad_request": "invalid_prompt",
    "context_window_exceeded": "invalid_prompt",
    "content_filtered": "invalid_prompt",
}


def resume_point(body: bytes, *, find_id: bool = True) -> tuple[str | None, int | None]:
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


def rewrite_ids(
    body: bytes, response_id: str, previous_id: str | None
) -> tuple[bytes, dict[str, Any] | None]:
    """``response_id`` and ``previous_id`` in the ``response`` object of every lifecycle
    event in ``body``; the last terminal response object (completed, incomplete, failed)
    when there is one."""
    decoder = SSEDecoder()
    events = decoder.feed(body) + decoder.close()
    out: list[bytes] = []
    final: dict[str, Any] | None = None
    changed = False
    for event in events:
        data = event.data
        if '"response"' in data:
            try:
                payload = _json_decode(data)
            except (msgspec.DecodeError, RecursionError):
                payload = None
            response = payload.get("response") if isinstance(payload, dict) else None
            if isinstance(response, dict):
                response["id"] = response_id
                response["previous_response_id"] = previous_id
                # Hashed only when a string: a list or object there would raise TypeError.
                status = response.get("status")
                if isinstance(status, str) and status in _TERMINAL_STATUS:
                    final = response
                data = _json_encode(payload).decode()
                changed = True
        out.append(encode_event(data, event.event, event.id))
    return (b"".join(out) if changed else body), final


def _obj(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


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


class ResponsesStreamDecoder(JsonStreamDecoder):
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

    # Some compatible servers end a Responses stream with Chat's sentinel: nothing to decode.
    sentinel = "[DONE]"

    def feed_object(self, data: dict[str, Any], event: ServerSentEvent) -> list[Event]:
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
        key = (int_or_zero(data.get("output_index")), int_or_zero(data.get("content_index")))
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
        position = int_or_zero(data.get("output_index"))
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
        position = int_or_zero(data.get("output_index"))
        index = self._item.get(position)
        if index is not None and int_or_zero(data.get("summary_index")) > 0:
            out.append(
                ReasoningDelta(index=index, text=REASONING_SEP, id=self._item_ids.get(position))
            )

    def _reasoning_delta(self, data: dict[str, Any], out: list[Event]) -> None:
        position = int_or_zero(data.get("output_index"))
        index = self._item.get(position)
        delta = data.get("delta")
        if index is not None and isinstance(delta, str) and delta:
            self._summary_seen.add(position)
            out.append(ReasoningDelta(index=index, text=delta, id=self._item_ids.get(position)))

    def _args_delta(self, data: dict[str, Any], out: list[Event]) -> None:
        position = int_or_zero(data.get("output_index"))
        index = self._item.get(position)
        delta = data.get("delta")
        if index is not None and isinstance(delta, str) and delta:
            self._args_seen.add(position)
            out.append(ToolArgsDelta(index=index, delta=delta))

    def _args_done(self, data: dict[str, Any], out: list[Event]) -> None:
        position = int_or_zero(data.get("output_index"))
        index = self._item.get(position)
        arguments = data.get("arguments")
        if index is not None and position not in self._args_seen and isinstance(arguments, str):
            if arguments:
                out.append(ToolArgsDelta(index=index, delta=arguments))
            self._args_seen.add(position)

    def _text_done(self, data: dict[str, Any], out: list[Event]) -> None:
        key = (int_or_zero(data.get("output_index")), int_or_zero(data.get("content_index")))
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
        position = int_or_zero(data.get("output_index"))
        item = _obj(data.get("item"))
        index = self._item.get(position)
        if item.get("type") == "reasoning" and index is not None:
            if position not in self._summary_seen:
                summary = item.get("summary")
                text = (
                    REASONING_SEP.join(
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
            reason = INCOMPLETE_FINISH.get(str(cause), "length")
        usage = parse_usage(resp.get("usage")) if resp.get("usage") is not None else None
        out.append(Finish(reason=reason, usage=usage))

    def _error(self, data: dict[str, Any], out: list[Event]) -> None:
        self.done = True
        out.append(Error(error=_stream_error(data)))


_DECODERS = {
    "response.output_item.added": ResponsesStreamDecoder._item_added,
    "response.output_text.delta": ResponsesStreamDecoder._delta,
    "response.refusal.delta": ResponsesStreamDecoder._delta,
    "response.output_text.done": ResponsesStreamDecoder._text_done,
    "response.refusal.done": ResponsesStreamDecoder._text_done,
    "response.content_part.done": ResponsesStreamDecoder._text_done,
    "response.reasoning_summary_part.added": ResponsesStreamDecoder._summary_part,
    "response.reasoning_summary_text.delta": ResponsesStreamDecoder._reasoning_delta,
    "response.reasoning_text.delta": ResponsesStreamDecoder._reasoning_delta,
    "response.function_call_arguments.delta": ResponsesStreamDecoder._args_delta,
    "response.function_call_arguments.done": ResponsesStreamDecoder._args_done,
    "response.output_item.done": ResponsesStreamDecoder._item_done,
    "response.completed": ResponsesStreamDecoder._terminal,
    "response.incomplete": ResponsesStreamDecoder._terminal,
    "response.failed": ResponsesStreamDecoder._terminal,
    "error": ResponsesStreamDecoder._error,
}


class _Block:
    __slots__ = ("item", "kind", "output_index", "part_open", "text")

    def __init__(self, kind: str, output_index: int, item: dict[str, Any]) -> None:
        self.kind = kind
        self.output_index = output_index
        self.item = item
        self.text: list[str] = []
        self.part_open = False


class ResponsesStreamEncoder(StreamEncoder):
    """Unified events -> the Responses event sequence, accumulating the whole response for
    ``response.completed``.  Each text block is one assistant ``message`` item."""

    def __init__(self, codec: Codec, request: Request | None) -> None:
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
        return response_envelope(self._id, self._model, self._created, status, self._request)

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
        fields = status_fields(event.reason)
        response = self._envelope(fields["status"])
        response.update(fields)
        response["output"] = [item for item in self._output if item is not None]
        response["usage"] = usage_body(self._usage)
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
