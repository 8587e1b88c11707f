"""Incremental Server-Sent Events decoding and encoding.

The decoder follows the WHATWG "event stream interpretation" rules with two deliberate
departures, both because an LLM stream's last event matters more than a browser's:

* a final event with no blank line after it is dispatched by ``close()`` instead of being
  discarded (providers and proxies sometimes cut the last ``\\n``);
* an event with fields but no ``data`` is still dispatched (``data == ""``), so a bare
  ``event: ping`` is seen rather than silently merged into the next event.

It works on bytes and splits lines only at ``\\r`` and ``\\n``, which never occur inside a
multi-byte UTF-8 sequence, so a character split across chunks is reassembled for free; each
complete line is decoded once.  A ``\\r`` at the very end of a chunk is a line end whose
``\\n`` may arrive in the next chunk: that ``\\n`` is then skipped, not read as a blank line.
A line is split at its first ``:`` as bytes (a byte that is never part of a multi-byte
character, so this is the same split as on the decoded text) and only the value is decoded.

Bounded, and linear in what it is fed: a line that has not ended yet is kept as a list of
the chunks it came in (joined once, when its line end arrives), never re-concatenated per
chunk, so a line of many megabytes costs what it weighs once, not once per chunk.  An event
(its fields' lines, the unfinished one included) larger than ``max_event`` raises
``EventTooLarge`` as soon as the limit is passed, before more of it is kept.

``encode_json_event`` is ``encode_event`` for data that is JSON as msgspec writes it, which
never holds a line break: the bytes go out as they are, with no decode, split or re-encode.
"""

from __future__ import annotations

from msgspec import Struct

__all__ = [
    "DEFAULT_MAX_EVENT",
    "EventTooLarge",
    "ServerSentEvent",
    "SSEDecoder",
    "encode_comment",
    "encode_event",
    "encode_json_event",
]

_BOM = b"\xef\xbb\xbf"
# Far above any real LLM event (a large tool call's arguments come in many deltas; an image
# is the biggest single thing a provider puts in one event), far below what hurts a server.
DEFAULT_MAX_EVENT = 16 * 1024 * 1024


class EventTooLarge(ValueError):
    """An event grew past the decoder's ``max_event`` bytes."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"an event is larger than {limit} bytes")
        self.limit = limit


class ServerSentEvent(Struct, kw_only=True, omit_defaults=True):
    data: str = ""
    event: str | None = None
    id: str | None = None
    retry: int | None = None


class SSEDecoder:
    """Bytes in, ``ServerSentEvent``s out.  ``feed`` for each chunk, ``close`` at end of input.

    ``max_event`` bounds one event's size in bytes (its lines as received, without line
    ends); ``feed`` raises ``EventTooLarge`` past it."""

    __slots__ = (
        "_bom",
        "_data",
        "_event",
        "_fields",
        "_id",
        "_max",
        "_parts",
        "_pending",
        "_retry",
        "_size",
        "_skip_lf",
    )

    def __init__(self, max_event: int = DEFAULT_MAX_EVENT) -> None:
        self._max = max_event
        self._parts: list[bytes] = []  # the unfinished line, as the chunks it came in
        self._pending = 0  # their length
        self._size = 0  # bytes of the current event's lines so far
        self._data: list[str] = []
        self._event: str | None = None
        self._id: str | None = None
        self._retry: int | None = None
        self._fields = False  # any field seen since the last dispatch
        self._bom = True  # still at the start of the stream: a BOM may come
        self._skip_lf = False  # the previous chunk ended in "\r"

    def feed(self, chunk: bytes) -> list[ServerSentEvent]:
        if self._bom:
            if self._parts:  # at most two bytes of a BOM
                chunk = self._take() + chunk
            if len(chunk) < 3 and _BOM.startswith(chunk):
                self._keep(chunk)
                return []
            if chunk.startswith(_BOM):
                chunk = chunk[3:]
            self._bom = False
        if self._skip_lf:
            # The previous chunk ended on a line end, so nothing of a line is kept.
            self._skip_lf = False
            if chunk[:1] == b"\n":
                chunk = chunk[1:]
        if b"\r" in chunk:
            if chunk.endswith(b"\r"):
                self._skip_lf = True
            chunk = chunk.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        if b"\n" not in chunk:
            self._keep(chunk)  # more of the unfinished line: kept, not joined
            return []
        lines = chunk.split(b"\n")
        if self._parts:
            self._parts.append(lines[0])
            lines[0] = self._take()  # the line is whole: joined once
        tail = lines.pop()  # what follows the last line end: the start of a line
        events: list[ServerSentEvent] = []
        for line in lines:
            if not line:  # a blank line ends the event
                if self._fields:
                    events.append(self._dispatch())
                self._size = 0
                continue
            name, colon, value = line.partition(b":")
            if not name:  # ":" comment (heartbeats)
                continue
            if colon and value[:1] == b" ":
                value = value[1:]
            if name == b"data":
                self._data.append(value.decode("utf-8", "replace"))
            elif name == b"event":
                self._event = value.decode("utf-8", "replace")
            elif name == b"id":
                if b"\0" not in value:
                    # The last event id persists across events, as in browsers.
                    self._id = value.decode("utf-8", "replace")
            elif name == b"retry":
                if value.isdigit():  # ASCII digits only, for bytes
                    self._retry = int(value)
            else:
                continue  # unknown field: ignored, and does not make an event
            self._fields = True
            self._size += len(line)
            if self._size > self._max:
                raise EventTooLarge(self._max)
        if tail:
            self._keep(tail)
        return events

    def close(self) -> list[ServerSentEvent]:
        """End of input: the unterminated last line and event are flushed, not dropped (as if
        the stream had ended with a blank line)."""
        return self.feed(b"\n\n")

    def _keep(self, part: bytes) -> None:
        self._parts.append(part)
        self._pending += len(part)
        if self._size + self._pending > self._max:
            raise EventTooLarge(self._max)

    def _take(self) -> bytes:
        line = b"".join(self._parts)
        self._parts = []
        self._pending = 0
        return line

    def _dispatch(self) -> ServerSentEvent:
        event = ServerSentEvent(
            data="\n".join(self._data), event=self._event, id=self._id, retry=self._retry
        )
        self._data = []
        self._event = None
        self._retry = None
        self._fields = False
        return event


def encode_event(data: str, event: str | None = None, id: str | None = None) -> bytes:
    """One event, ending on its blank line.  Multi-line ``data`` becomes several lines."""
    if event is None and id is None and "\n" not in data and "\r" not in data:
        return f"data: {data}\n\n".encode()  # the usual event, in one step
    head = ""
    if event is not None:
        head = f"event: {event}\n"
    if id is not None:
        head += f"id: {id}\n"
    if "\n" in data or "\r" in data:
        lines = data.replace("\r\n", "\n").replace("\r", "\n").split("\n")
        body = "".join(f"data: {line}\n" for line in lines)
    else:
        body = f"data: {data}\n"
    return f"{head}{body}\n".encode()


def encode_json_event(data: bytes, event: str | None = None) -> bytes:
    """``encode_event(data.decode(), event)`` for ``data`` that has no line break in it, such
    as JSON written by msgspec (which escapes every control character in strings)."""
    if event is None:
        return b"data: " + data + b"\n\n"
    return b"event: " + event.encode() + b"\ndata: " + data + b"\n\n"


def encode_comment(text: str = "") -> bytes:
    """A comment event (heartbeat): ignored by every SSE client, keeps idle proxies open."""
    return f": {text}\n\n".encode() if text else b":\n\n"
