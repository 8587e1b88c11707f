"""A stream's unified events put back together as the unified ``Response`` they add up to.

Used where a stream must become one answer: a stored Responses response (ResponsesState),
and a plain client's answer from a provider that only streams (dispatch, ``force_stream``).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import msgspec

from .unified import (
    Error,
    Event,
    Finish,
    MessageStart,
    Part,
    Reasoning,
    ReasoningDelta,
    Response,
    Signature,
    Text,
    TextDelta,
    ToolArgsDelta,
    ToolCall,
    ToolCallStart,
    Usage,
    UsageEvent,
)

__all__ = ["StreamAggregate"]


class StreamAggregate:
    """A stream's unified events -> the unified ``Response`` they add up to."""

    __slots__ = ("created", "error", "finish", "model", "parts", "pieces", "upstream_id", "usage")

    def __init__(self) -> None:
        self.upstream_id = ""
        self.model = ""
        self.created = 0
        self.usage = Usage()
        self.parts: dict[int, Part] = {}
        self.pieces: dict[int, list[str]] = {}
        self.finish: Finish | None = None
        self.error: Any = None

    def feed(self, events: Iterable[Event]) -> None:
        for event in events:
            if isinstance(event, TextDelta):
                if self._part(event.index, Text) is not None:
                    self.pieces[event.index].append(event.text)
            elif isinstance(event, ReasoningDelta):
                part = self._part(event.index, Reasoning)
                if part is not None:
                    self.pieces[event.index].append(event.text)
                    part.id = part.id or event.id
            elif isinstance(event, Signature):
                part = self._part(event.index, Reasoning)
                if part is not None:
                    part.signature = event.signature or part.signature
                    part.redacted = event.redacted or part.redacted
                    part.source = event.source or part.source
                    part.id = part.id or event.id
            elif isinstance(event, ToolCallStart):
                if event.index not in self.parts:
                    self.parts[event.index] = ToolCall(id=event.id, name=event.name)
                    self.pieces[event.index] = []
            elif isinstance(event, ToolArgsDelta):
                if isinstance(self.parts.get(event.index), ToolCall):
                    self.pieces[event.index].append(event.delta)
            elif isinstance(event, MessageStart):
                self.upstream_id = self.upstream_id or event.id
                self.model = event.model or self.model
                self.created = event.created or self.created
                if event.usage is not None:
                    self.usage = self.usage.merge(event.usage)
            elif isinstance(event, UsageEvent):
                self.usage = self.usage.merge(event.usage)
            elif isinstance(event, Finish):
                self.finish = event
                if event.usage is not None:
                    self.usage = self.usage.merge(event.usage)
            elif isinstance(event, Error):
                self.error = event.error

    def _part(self, index: int, kind: type[Text] | type[Reasoning]) -> Any:
        part = self.parts.get(index)
        if part is None:
            part = self.parts[index] = kind(text="")
            self.pieces[index] = []
        return part if isinstance(part, kind) else None

    def response(self) -> Response:
        content: list[Part] = []
        for index in sorted(self.parts):
            part = self.parts[index]
            joined = "".join(self.pieces[index])
            if isinstance(part, ToolCall):
                content.append(msgspec.structs.replace(part, arguments=joined or "{}"))
            elif isinstance(part, Reasoning):
                content.append(msgspec.structs.replace(part, text=joined))
            elif joined:
                content.append(Text(text=joined))
        finish = self.finish
        return Response(
            id=self.upstream_id,
            model=self.model,
            content=content,
            finish_reason="error"
            if self.error is not None
            else (finish.reason if finish is not None else "stop"),
            stop_sequence=finish.stop_sequence if finish is not None else None,
            usage=self.usage,
            created=self.created,
        )
