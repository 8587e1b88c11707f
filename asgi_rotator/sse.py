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
"""

from __future__ import annotations

from msgspec import Struct

__all__ = ["ServerSentEvent", "SSEDecoder", "encode_comment", "encode_event"]

_BOM = b"\xef\xbb\xbf"


class ServerSentEvent(Struct, kw_only=True, omit_defaults=True):
    data: str = ""
    event: str | None = None
    id: str | None = None
    retry: int | None = None


class SSEDecoder:
    """Bytes in, ``ServerSentEvent``s out.  ``feed`` for each chunk, ``close`` at end of input."""

    __slots__ = ("_bom", "_data", "_event", "_fields", "_id", "_retry", "_skip_lf", "_tail")

    def __init__(self) -> None:
        self._tail = b""
        self._data: list[str] = []
        self._event: str | None = None
        self._id: str | None = None
        self._retry: int | None = None
        self._fields = False  # any field seen since the last dispatch
        self._bom = True  # still at the start of the stream: a BOM may come
        self._skip_lf = False  # the previous chunk ended in "\r"

    def feed(self, chunk: bytes) -> list[ServerSentEvent]:
        if self._tail:
            chunk = self._tail + chunk
            self._tail = b""
        if self._bom:
            if len(chunk) < 3 and _BOM.startswith(chunk):
                self._tail = chunk
                return []
            if chunk.startswith(_BOM):
                chunk = chunk[3:]
            self._bom = False
        if self._skip_lf:
            self._skip_lf = False
            if chunk[:1] == b"\n":
                chunk = chunk[1:]
        if b"\r" in chunk:
            if chunk.endswith(b"\r"):
                self._skip_lf = True
            chunk = chunk.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        end = chunk.rfind(b"\n")
        if end < 0:
            self._tail = chunk
            return []
        self._tail = chunk[end + 1 :]
        events: list[ServerSentEvent] = []
        for line in chunk[:end].split(b"\n"):
            self._line(line, events)
        return events

    def close(self) -> list[ServerSentEvent]:
        """End of input: the unterminated last line and event are flushed, not dropped."""
        events: list[ServerSentEvent] = []
        if self._tail:
            tail, self._tail = self._tail, b""
            if not (self._bom and _BOM.startswith(tail)):
                self._line(tail[3:] if self._bom and tail.startswith(_BOM) else tail, events)
        self._line(b"", events)
        return events

    def _line(self, line: bytes, events: list[ServerSentEvent]) -> None:
        if not line:
            if self._fields:
                events.append(
                    ServerSentEvent(
                        data="\n".join(self._data),
                        event=self._event,
                        id=self._id,
                        retry=self._retry,
                    )
                )
                self._data = []
                self._event = None
                self._retry = None
                self._fields = False
            return
        if line[0] == 0x3A:  # ":" comment (heartbeats)
            return
        text = line.decode("utf-8", "replace")
        name, colon, value = text.partition(":")
        if colon and value[:1] == " ":
            value = value[1:]
        if name == "data":
            self._data.append(value)
        elif name == "event":
            self._event = value
        elif name == "id":
            if "\0" not in value:
                self._id = value  # the last event id persists across events, as in browsers
        elif name == "retry":
            if value.isascii() and value.isdigit():
                self._retry = int(value)
        else:
            return  # unknown field: ignored, and does not make an event
        self._fields = True


def encode_event(data: str, event: str | None = None, id: str | None = None) -> bytes:
    """One event, ending on its blank line.  Multi-line ``data`` becomes several lines."""
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


def encode_comment(text: str = "") -> bytes:
    """A comment event (heartbeat): ignored by every SSE client, keeps idle proxies open."""
    return f": {text}\n\n".encode() if text else b":\n\n"
