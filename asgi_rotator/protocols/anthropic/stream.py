"""Anthropic Messages streams: provider SSE events decoded into unified events, and unified
events encoded as this protocol's SSE events."""

from __future__ import annotations

from typing import Any

from ...errors import GatewayError, classify
from ...sse import ServerSentEvent, encode_json_event
from ...unified import (
    BlockStop,
    Error,
    Event,
    Finish,
    MessageStart,
    ReasoningDelta,
    Signature,
    TextDelta,
    ToolArgsDelta,
    ToolCallStart,
    Usage,
    UsageEvent,
)
from .._common import new_id
from ..base import Codec, JsonStreamDecoder, StreamEncoder
from .content import NAME, encode_json, json_text
from .response import STOP_FROM_WIRE, build_usage, error_fields, parse_usage, stop_reason_of

# Messages API "Errors": type <-> status.
_ERROR_STATUS = {
    "invalid_request_error": 400,
    "authentication_error": 401,
    "billing_error": 402,
    "permission_error": 403,
    "not_found_error": 404,
    "request_too_large": 413,
    "rate_limit_error": 429,
    "api_error": 500,
    "timeout_error": 504,
    "overloaded_error": 529,
}

# The block a stream delta opens when it comes with no start (a lenient upstream).
_DELTA_OPENS: dict[Any, str] = {
    "text_delta": "text",
    "thinking_delta": "thinking",
    "signature_delta": "thinking",
}


def _stream_error(data: dict[str, Any]) -> GatewayError:
    error_type, message = error_fields(data)
    status = _ERROR_STATUS.get(error_type or "", 500)
    return classify(status, message, error_type=error_type)


class MessagesStreamDecoder(JsonStreamDecoder):
    """Anthropic SSE events -> unified events.  Wire block indices map to unified ones in
    order of start; blocks of server tools get none and their events are skipped."""

    def __init__(self) -> None:
        self.done = False
        self._started = False
        self._blocks: dict[int, tuple[int, str] | None] = {}  # wire index -> (index, kind)
        self._open: dict[int, None] = {}  # unified indices, in start order
        self._next = 0
        self._usage: dict[str, Any] = {}  # raw Anthropic usage, later counts overwrite
        self._stop_reason: str | None = None
        self._stop_sequence: str | None = None

    def feed_object(self, data: dict[str, Any], event: ServerSentEvent) -> list[Event]:
        kind = data.get("type")
        out: list[Event] = []
        # Content block events first: they are most of a stream.
        if kind in ("content_block_delta", "content_block_start", "content_block_stop"):
            if not self._started:
                self._ensure_start(out)
            index = data.get("index")
            if isinstance(index, int):
                if kind == "content_block_delta":
                    self._block_delta(index, data, out)
                elif kind == "content_block_start":
                    self._block_start(index, data, out)
                else:
                    self._block_stop(index, data, out)
        elif kind == "message_start":
            self._message_start(data, out)
        elif kind == "error":
            self._ensure_start(out)
            out.append(Error(error=_stream_error(data)))
            self.done = True
        elif kind == "message_delta":
            delta = data.get("delta")
            if isinstance(delta, dict):
                self._stop_reason = delta.get("stop_reason") or self._stop_reason
                self._stop_sequence = delta.get("stop_sequence") or self._stop_sequence
            self._merge_usage(data.get("usage"))
        elif kind == "message_stop":
            self._ensure_start(out)
            out.extend(BlockStop(index=i) for i in self._open)
            self._open.clear()
            reason = self._stop_reason
            out.append(
                Finish(
                    reason=STOP_FROM_WIRE.get(reason, "stop")
                    if isinstance(reason, str)
                    else "stop",
                    usage=parse_usage(self._usage),
                    stop_sequence=self._stop_sequence
                    if isinstance(self._stop_sequence, str)
                    else None,
                )
            )
            self.done = True
        return out  # ping and unknown event types: nothing

    def _ensure_start(self, out: list[Event]) -> None:
        if not self._started:
            self._started = True
            out.append(MessageStart(id=new_id("msg_"), model=""))

    def _message_start(self, data: dict[str, Any], out: list[Event]) -> None:
        if self._started:
            return
        self._started = True
        message = data.get("message")
        message = message if isinstance(message, dict) else {}
        self._merge_usage(message.get("usage"))
        out.append(
            MessageStart(
                id=str(message.get("id") or new_id("msg_")),
                model=str(message.get("model") or ""),
                usage=parse_usage(self._usage),
            )
        )

    def _merge_usage(self, usage: Any) -> None:
        if isinstance(usage, dict):
            self._usage.update((k, v) for k, v in usage.items() if v is not None)

    def _open_block(self, wire: int, kind: str) -> int:
        index = self._next
        self._next += 1
        self._blocks[wire] = (index, kind)
        self._open[index] = None
        return index

    def _block_start(self, wire: int, data: dict[str, Any], out: list[Event]) -> None:
        block = data.get("content_block")
        block = block if isinstance(block, dict) else {}
        kind = block.get("type")
        if wire in self._blocks or kind not in (
            "text",
            "thinking",
            "redacted_thinking",
            "tool_use",
        ):
            self._blocks.setdefault(wire, None)
            return
        index = self._open_block(wire, kind)
        if kind == "text":
            out.append(TextDelta(index=index, text=str(block.get("text") or "")))
        elif kind == "thinking":
            out.append(ReasoningDelta(index=index, text=str(block.get("thinking") or "")))
            if block.get("signature"):
                out.append(Signature(index=index, signature=str(block["signature"]), source=NAME))
        elif kind == "redacted_thinking":
            out.append(Signature(index=index, redacted=str(block.get("data") or ""), source=NAME))
        else:
            out.append(
                ToolCallStart(
                    index=index,
                    id=str(block.get("id") or new_id("toolu_")),
                    name=str(block.get("name") or ""),
                )
            )
            if isinstance(block.get("input"), dict) and block["input"]:
                out.append(ToolArgsDelta(index=index, delta=json_text(block["input"])))

    def _block_delta(self, wire: int, data: dict[str, Any], out: list[Event]) -> None:
        delta = data.get("delta")
        if not isinstance(delta, dict):
            return
        kind = delta.get("type")
        if wire not in self._blocks:
            # A delta with no start opens its block (a lenient upstream).
            # Hashed only when a string: a list or object there is an unknown type too.
            opens = _DELTA_OPENS.get(kind) if isinstance(kind, str) else None
            if opens is None:
                return
            self._open_block(wire, opens)
        entry = self._blocks[wire]
        if entry is None or entry[0] not in self._open:
            return
        index = entry[0]
        if kind == "text_delta":
            out.append(TextDelta(index=index, text=str(delta.get("text") or "")))
        elif kind == "thinking_delta":
            out.append(ReasoningDelta(index=index, text=str(delta.get("thinking") or "")))
        elif kind == "signature_delta":
            out.append(
                Signature(index=index, signature=str(delta.get("signature") or ""), source=NAME)
            )
        elif kind == "input_json_delta" and delta.get("partial_json"):
            out.append(ToolArgsDelta(index=index, delta=str(delta["partial_json"])))

    def _block_stop(self, wire: int, data: dict[str, Any], out: list[Event]) -> None:
        entry = self._blocks.get(wire)
        if entry is not None and entry[0] in self._open:
            del self._open[entry[0]]
            out.append(BlockStop(index=entry[0]))


class MessagesStreamEncoder(StreamEncoder):
    """Unified events -> Anthropic SSE.  Wire indices are given in the order blocks open, which
    is the order the SDK's accumulator appends them in."""

    def __init__(self, codec: Codec, model: str | None) -> None:
        self._codec = codec
        self._model = model or ""
        self._started = False
        self._ended = False
        self._wire: dict[int, tuple[int, str]] = {}  # unified index -> (wire index, block type)
        self._open: dict[int, None] = {}  # unified indices with an open wire block
        self._pending: set[int] = set()  # reasoning blocks not yet known thinking or redacted
        self._next = 0
        self._usage = Usage()

    def encode(self, event: Event) -> bytes:
        if self._ended:
            return b""
        out: list[bytes] = []
        if not self._started and not isinstance(event, Error):
            self._start(event if isinstance(event, MessageStart) else None, out)
            if isinstance(event, MessageStart):
                return b"".join(out)
        if isinstance(event, TextDelta):
            if self._ensure(event.index, "text", out) and event.text:
                self._delta(event.index, {"type": "text_delta", "text": event.text}, out)
        elif isinstance(event, ReasoningDelta):
            if event.index not in self._wire and not event.text:
                self._pending.add(event.index)
            elif self._ensure(event.index, "thinking", out) and event.text:
                self._delta(event.index, {"type": "thinking_delta", "thinking": event.text}, out)
        elif isinstance(event, Signature):
            self._signature(event, out)
        elif isinstance(event, ToolCallStart):
            if event.index not in self._wire:
                block = {"type": "tool_use", "id": event.id, "name": event.name, "input": {}}
                self._open_block(event.index, block, out)
        elif isinstance(event, ToolArgsDelta):
            if self._ensure(event.index, "tool_use", out) and event.delta:
                self._delta(
                    event.index, {"type": "input_json_delta", "partial_json": event.delta}, out
                )
        elif isinstance(event, BlockStop):
            self._pending.discard(event.index)  # an empty reasoning block: nothing to show
            self._stop(event.index, out)
        elif isinstance(event, UsageEvent):
            self._usage = self._usage.merge(event.usage)
        elif isinstance(event, Finish):
            self._finish(event, out)
        elif isinstance(event, Error):
            _, body = self._codec.build_error(event.error)
            out.append(encode_json_event(encode_json(body), "error"))
            self._ended = True
        return b"".join(out)

    def _start(self, event: MessageStart | None, out: list[bytes]) -> None:
        self._started = True
        if event is not None and event.usage is not None:
            self._usage = self._usage.merge(event.usage)
        message: dict[str, Any] = {
            "id": (event.id if event is not None and event.id else new_id("msg_")),
            "type": "message",
            "role": "assistant",
            "content": [],
            "model": (event.model if event is not None and event.model else self._model),
            "stop_reason": None,
            "stop_sequence": None,
            "usage": build_usage(self._usage),
        }
        self._emit("message_start", {"type": "message_start", "message": message}, out)
        self._emit("ping", {"type": "ping"}, out)  # as Anthropic does after message_start

    def _emit(self, name: str, data: dict[str, Any], out: list[bytes]) -> None:
        out.append(encode_json_event(encode_json(data), name))

    def _open_block(self, index: int, block: dict[str, Any], out: list[bytes]) -> None:
        self._pending.discard(index)
        self._wire[index] = (self._next, block["type"])
        self._open[index] = None
        self._emit(
            "content_block_start",
            {"type": "content_block_start", "index": self._next, "content_block": block},
            out,
        )
        self._next += 1

    def _ensure(self, index: int, kind: str, out: list[bytes]) -> bool:
        """Open block ``index`` as ``kind`` if it is new; True when it is open as ``kind``."""
        if index not in self._wire:
            block: dict[str, Any]
            if kind == "text":
                block = {"type": "text", "text": ""}
            elif kind == "thinking":
                block = {"type": "thinking", "thinking": "", "signature": ""}
            else:
                block = {"type": "tool_use", "id": new_id("toolu_"), "name": "", "input": {}}
            self._open_block(index, block, out)
        return index in self._open and self._wire[index][1] == kind

    def _delta(self, index: int, delta: dict[str, Any], out: list[bytes]) -> None:
        data = {"type": "content_block_delta", "index": self._wire[index][0], "delta": delta}
        self._emit("content_block_delta", data, out)

    def _stop(self, index: int, out: list[bytes]) -> None:
        if index in self._open:
            del self._open[index]
            data = {"type": "content_block_stop", "index": self._wire[index][0]}
            self._emit("content_block_stop", data, out)

    def _signature(self, event: Signature, out: list[bytes]) -> None:
        if event.source != NAME:
            return  # another provider's payload means nothing to an Anthropic client
        if event.redacted:
            block = {"type": "redacted_thinking", "data": event.redacted}
            if event.index not in self._wire:
                self._open_block(event.index, block, out)
            else:
                # The block already shows thinking text: the redacted data is a block of its own.
                wire = self._next
                self._next += 1
                start = {"type": "content_block_start", "index": wire, "content_block": block}
                self._emit("content_block_start", start, out)
                self._emit("content_block_stop", {"type": "content_block_stop", "index": wire}, out)
        if event.signature and self._ensure(event.index, "thinking", out):
            self._delta(event.index, {"type": "signature_delta", "signature": event.signature}, out)

    def _finish(self, event: Finish, out: list[bytes]) -> None:
        for index in list(self._open):
            self._stop(index, out)
        if event.usage is not None:
            self._usage = self._usage.merge(event.usage)
        delta = {
            "stop_reason": stop_reason_of(event.reason, event.stop_sequence),
            "stop_sequence": event.stop_sequence,
        }
        self._emit(
            "message_delta",
            {"type": "message_delta", "delta": delta, "usage": build_usage(self._usage)},
            out,
        )
        self._emit("message_stop", {"type": "message_stop"}, out)
        self._ended = True
