"""Gemini generateContent streams: provider SSE events decoded into unified events, and unified
events encoded as this protocol's SSE events."""

from __future__ import annotations

from typing import Any

from ...errors import GatewayError
from ...sse import ServerSentEvent, encode_json_event
from ...unified import (
    BlockStop,
    Error,
    Event,
    Finish,
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
from .._common import new_id
from ..base import Codec, JsonStreamDecoder, StreamEncoder
from .content import NAME, args_object, args_text, get_field, json_encoder
from .response import FINISH_IN, FINISH_OUT, build_usage, parse_usage, wants_thoughts


class GeminiStreamDecoder(JsonStreamDecoder):
    """GenerateContentResponse chunks -> unified events.  A chunk after the one with
    ``finishReason`` (late usage) is ignored, as after every terminal event: Finish was last."""

    def __init__(self, codec: Codec) -> None:
        self.done = False
        self._codec = codec
        self._started = False
        self._next = 0  # index of the next block
        self._open: str | None = None  # kind of the open block: text | reasoning
        self._signed = False  # the open reasoning block already got its signature
        self._tool_calls = False
        self._usage: Usage | None = None

    def object_of(self, value: Any) -> dict[str, Any] | None:
        if isinstance(value, list) and value and isinstance(value[0], dict):
            return value[0]  # a chunk sent as an array element, as the JSON-array stream does
        return None

    def feed_object(self, chunk: dict[str, Any], event: ServerSentEvent) -> list[Event]:
        out: list[Event] = []
        if not self._started:
            self._started = True
            snake: set[str] = set()
            response_id = get_field(chunk, "responseId", snake)
            model = get_field(chunk, "modelVersion", snake)
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
        usage = get_field(chunk, "usageMetadata", snake)
        if isinstance(usage, dict):
            parsed, _ = parse_usage(usage, snake)
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
            finish = get_field(candidate, "finishReason", snake)
        blocked = chunk.get("promptFeedback") or chunk.get("prompt_feedback")
        if isinstance(finish, str) or (
            candidate is None
            and isinstance(blocked, dict)
            and (blocked.get("blockReason") or blocked.get("block_reason"))
        ):
            reason = (
                "content_filter" if not isinstance(finish, str) else FINISH_IN.get(finish, "stop")
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
        signature = get_field(part, "thoughtSignature", snake)
        signature = signature if isinstance(signature, str) and signature else None
        text = part.get("text")
        if part.get("thought") is True:
            if self._open != "reasoning" or self._signed:
                out.extend(self._start("reasoning"))
            if isinstance(text, str) and text:
                out.append(ReasoningDelta(index=self._next - 1, text=text))
            if signature is not None:
                out.append(Signature(index=self._next - 1, signature=signature, source=NAME))
                self._signed = True
            return out
        if signature is not None:
            # The signature precedes the part that carried it, in a reasoning block of its own.
            out.extend(self._start("reasoning"))
            out.append(Signature(index=self._next - 1, signature=signature, source=NAME))
            out.extend(self._close())
        call = get_field(part, "functionCall", snake)
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
            out.append(ToolArgsDelta(index=index, delta=args_text(call.get("args") or {})))
            out.append(BlockStop(index=index))
        elif isinstance(text, str) and text:
            if self._open != "text":
                out.extend(self._start("text"))
            out.append(TextDelta(index=self._next - 1, text=text))
        # inlineData (image output), executableCode ...: no stream event can carry them.
        return out


class GeminiStreamEncoder(StreamEncoder):
    """Unified events -> ``data: GenerateContentResponse`` chunks."""

    def __init__(self, codec: Codec, request: Request | None) -> None:
        self._codec = codec
        self._model = request.model if request is not None else ""
        self._thoughts = wants_thoughts(request)
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
            if event.source == NAME and event.signature:
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
        return encode_json_event(json_encoder.encode(chunk))

    def _flush_call(self, index: int) -> bytes:
        call = self._calls.pop(index, None)
        if call is None:
            return b""
        call_id, name, pieces = call
        function_call = {"name": name, "args": args_object("".join(pieces)), "id": call_id}
        return self._chunk([{"functionCall": function_call}])

    def _finish(self, event: Finish) -> bytes:
        out = b"".join(self._flush_call(index) for index in sorted(self._calls))
        self._merge(event.usage)
        out += self._chunk(
            [{"text": ""}],
            finish=FINISH_OUT[event.reason],
            usage=None if self._usage is None else build_usage(self._usage, 0, frozenset()),
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
        return encode_json_event(json_encoder.encode(body))
