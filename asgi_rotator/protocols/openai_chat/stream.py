"""OpenAI Chat Completions streams: provider SSE events decoded into unified events, and unified
events encoded as this protocol's SSE events."""

from __future__ import annotations

import time
from typing import Any

import msgspec

from ...errors import GatewayError, classify
from ...sse import ServerSentEvent, encode_json_event
from ...unified import (
    BlockStop,
    Error,
    Event,
    Finish,
    FinishReason,
    MessageStart,
    ReasoningDelta,
    TextDelta,
    ToolArgsDelta,
    ToolCallStart,
    Usage,
    UsageEvent,
)
from .._common import new_id
from ..base import JsonStreamDecoder, StreamEncoder
from .content import REASONING_FIELDS, encode_json
from .response import (
    FINISH_OUT,
    build_usage,
    error_body,
    error_fields,
    finish_reason_of,
    parse_usage,
    str_or,
)

# An in-band stream error has no HTTP status: infer one from its type or code.
_STATUS_BY_ERROR_TYPE = {
    "invalid_request_error": 400,
    "context_length_exceeded": 400,
    "authentication_error": 401,
    "invalid_api_key": 401,
    "permission_error": 403,
    "not_found_error": 404,
    "model_not_found": 404,
    "rate_limit_exceeded": 429,
    "rate_limit_error": 429,
    "insufficient_quota": 429,
    "requests": 429,
    "tokens": 429,
    "overloaded_error": 503,
    "service_unavailable": 503,
    "server_error": 500,
}

_decode = msgspec.json.Decoder().decode
_DONE = b"data: [DONE]\n\n"


class ChatStreamDecoder(JsonStreamDecoder):
    def __init__(self) -> None:
        self.done = False
        self._started = False
        self._block: Any = None  # what the open block is: "text", "reasoning", ("tool", key)
        self._count = 0  # blocks started so far
        self._tools: dict[Any, int] = {}  # wire tool key -> unified block index
        self._last_tool: Any = None
        self._reason: FinishReason | None = None
        self._saw_tool = False
        self._usage: Usage | None = None

    sentinel = "[DONE]"

    def on_sentinel(self) -> list[Event]:
        out: list[Event] = []
        self._start({}, out)
        self._finish(out)
        return out

    def feed_object(self, chunk: dict[str, Any], event: ServerSentEvent) -> list[Event]:
        out: list[Event] = []
        if not self._started:
            self._start(chunk, out)
        if error := chunk.get("error"):
            message, error_type, param = error_fields(chunk)
            status = _STATUS_BY_ERROR_TYPE.get(error_type or "", 500)
            code = error.get("code") if isinstance(error, dict) else None
            if isinstance(code, int) and 400 <= code <= 599:
                status = code  # vLLM puts the HTTP status in ``code``
            err = classify(status, message, error_type=error_type, body=chunk)
            err.param = param
            self._close_block(out)
            out.append(Error(error=err))
            self.done = True
            return out
        choices = chunk.get("choices")
        for choice in choices if isinstance(choices, list) else ():
            if isinstance(choice, dict) and choice.get("index", 0) == 0:
                self._choice(choice, out)
        if isinstance(usage := chunk.get("usage"), dict):
            parsed = parse_usage(usage)
            self._usage = parsed if self._usage is None else self._usage.merge(parsed)
        return out

    def close(self) -> list[Event]:
        out: list[Event] = []
        if not self.done:
            self._close_block(out)
        return out

    def _start(self, chunk: dict[str, Any], out: list[Event]) -> None:
        if self._started:
            return
        self._started = True
        created = chunk.get("created")
        out.append(
            MessageStart(
                id=str_or(chunk.get("id"), "") or new_id("chatcmpl-"),
                model=str_or(chunk.get("model"), ""),
                created=created if isinstance(created, int) else 0,
            )
        )

    def _choice(self, choice: dict[str, Any], out: list[Event]) -> None:
        delta = choice.get("delta")
        delta = delta if isinstance(delta, dict) else {}
        # Most deltas carry text alone: reasoning and tool calls are read where they are.
        if not delta.keys().isdisjoint(REASONING_FIELDS):
            for key in REASONING_FIELDS:
                if (text := delta.get(key)) and isinstance(text, str):
                    out.append(ReasoningDelta(index=self._open("reasoning", out), text=text))
                    break  # vLLM repeats the same text under both names
        for key in ("content", "refusal"):
            if (text := delta.get(key)) and isinstance(text, str):
                out.append(TextDelta(index=self._open("text", out), text=text))
        if "tool_calls" in delta or "function_call" in delta:
            tool_calls = delta.get("tool_calls")
            for call in tool_calls if isinstance(tool_calls, list) else ():
                if isinstance(call, dict):
                    self._tool_delta(call.get("index"), call, call.get("function"), out)
            if isinstance(legacy := delta.get("function_call"), dict):
                self._tool_delta("function_call", {}, legacy, out)
        reason = choice.get("finish_reason")
        if reason and isinstance(reason, str):
            self._close_block(out)
            self._reason = finish_reason_of(reason)

    def _tool_delta(self, key: Any, call: dict[str, Any], fn: Any, out: list[Event]) -> None:
        fn = fn if isinstance(fn, dict) else {}
        if not isinstance(key, (int, str)):
            # No index (some compatible servers): a new id starts a call, else continue.
            key = call.get("id") if isinstance(call.get("id"), str) else self._last_tool
        if key is None or key not in self._tools:
            self._close_block(out)
            key = key if key is not None else ("anonymous", len(self._tools))
            index = self._tools[key] = self._count
            self._count += 1
            self._block = ("tool", key)
            self._saw_tool = True
            call_id = call.get("id")
            name = fn.get("name")
            out.append(
                ToolCallStart(
                    index=index,
                    id=call_id if isinstance(call_id, str) and call_id else new_id("call_"),
                    name=name if isinstance(name, str) else "",
                )
            )
        self._last_tool = key
        # A late fragment for an earlier call (no known provider interleaves) still goes
        # to that call's block rather than being lost.
        if isinstance(args := fn.get("arguments"), str) and args:
            out.append(ToolArgsDelta(index=self._tools[key], delta=args))

    def _open(self, kind: str, out: list[Event]) -> int:
        if self._block != kind:
            self._close_block(out)
            self._block = kind
            self._count += 1
        return self._count - 1

    def _close_block(self, out: list[Event]) -> None:
        if self._block is not None:
            index = (
                self._tools[self._block[1]] if isinstance(self._block, tuple) else self._count - 1
            )
            out.append(BlockStop(index=index))
            self._block = None

    def _finish(self, out: list[Event]) -> None:
        self._close_block(out)
        reason = self._reason or "stop"
        if reason == "stop" and self._saw_tool:
            reason = "tool_calls"
        out.append(Finish(reason=reason, usage=self._usage))
        self.done = True


class ChatStreamEncoder(StreamEncoder):
    def __init__(self, include_usage: bool, model: str) -> None:
        self._include_usage = include_usage
        self._head: dict[str, Any] | None = None
        # Every chunk repeats the head: its bytes, up to the choice's delta, are made once.
        self._prefix = b""
        self._model = model
        self._tools: dict[int, int] = {}  # unified block index -> wire tool_calls index
        self._usage: Usage | None = None
        self._ended = False

    def encode(self, event: Event) -> bytes:
        if self._ended:
            return b""
        out = b""
        if self._head is None:
            start = event if isinstance(event, MessageStart) else MessageStart(id="", model="")
            self._head = {
                "id": start.id or new_id("chatcmpl-"),
                "object": "chat.completion.chunk",
                "created": start.created or int(time.time()),
                "model": start.model or self._model,
            }
            self._prefix = (
                b"data: " + encode_json(self._head)[:-1] + b',"choices":[{"index":0,"delta":'
            )
            if start.usage is not None:
                self._usage = start.usage
            out = self._chunk({"role": "assistant", "content": ""})
            if isinstance(event, MessageStart):
                return out
        if isinstance(event, TextDelta):
            return out + self._chunk({"content": event.text})
        if isinstance(event, ReasoningDelta):
            return out + self._chunk({"reasoning_content": event.text})
        if isinstance(event, ToolCallStart):
            return out + self._tool_start(event.index, event.id, event.name)
        if isinstance(event, ToolArgsDelta):
            if event.index not in self._tools:
                out += self._tool_start(event.index, new_id("call_"), "")
            call = {"index": self._tools[event.index], "function": {"arguments": event.delta}}
            return out + self._chunk({"tool_calls": [call]})
        if isinstance(event, UsageEvent):
            self._merge_usage(event.usage)
        elif isinstance(event, Finish):
            return out + self._finish(event)
        elif isinstance(event, Error):
            self._ended = True
            err = event.error
            if not isinstance(err, GatewayError):
                err = GatewayError("server_error", str(err) or "upstream stream failed")
            return out + encode_json_event(encode_json({"error": error_body(err)}))
        # MessageStart after the first, BlockStop and Signature have no chat representation.
        return out

    def _tool_start(self, index: int, call_id: str, name: str) -> bytes:
        wire_index = self._tools.setdefault(index, len(self._tools))
        call = {
            "index": wire_index,
            "id": call_id,
            "type": "function",
            "function": {"name": name, "arguments": ""},
        }
        return self._chunk({"tool_calls": [call]})

    def _finish(self, event: Finish) -> bytes:
        self._ended = True
        if event.usage is not None:
            self._merge_usage(event.usage)
        out = self._chunk({}, FINISH_OUT.get(event.reason, "stop"))
        if self._include_usage and self._usage is not None:
            out += self._event(
                {**self._head_dict(), "choices": [], "usage": build_usage(self._usage)}
            )
        return out + _DONE

    def _merge_usage(self, usage: Usage) -> None:
        self._usage = usage if self._usage is None else self._usage.merge(usage)

    def _head_dict(self) -> dict[str, Any]:
        assert self._head is not None
        return self._head

    def _chunk(self, delta: dict[str, Any], finish_reason: str | None = None) -> bytes:
        # The bytes of {**head, "choices": [{"index": 0, "delta": ..., "finish_reason": ...}]}.
        if finish_reason is None:
            return self._prefix + encode_json(delta) + b',"finish_reason":null}]}\n\n'
        return b"".join(
            (
                self._prefix,
                encode_json(delta),
                b',"finish_reason":',
                encode_json(finish_reason),
                b"}]}\n\n",
            )
        )

    @staticmethod
    def _event(chunk: dict[str, Any]) -> bytes:
        return encode_json_event(encode_json(chunk))
