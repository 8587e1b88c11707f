"""``LogLines``: one log line per request, and the request id in ``x-request-id``.

A request that ended in an error (an error status, or an in-band error after the stream
began) or that failed over (more than one upstream attempt) gets a WARNING line; any other
gets an INFO line, written only when the logger is enabled for INFO (``serve --log-level
info``), so by default a healthy request costs no formatting at all.

The line carries what finds and explains a request, and nothing a client sent or a provider
answered: the request id, method and path (never the query string, where Gemini clients put
their key), the client protocol, the model, the status, the duration, and each upstream
attempt (target, credential id, error kind, upstream status, duration).  An error's message
is included only when the gateway wrote it (a connection or timeout failure); a provider's
message may echo the request or a key, so only its kind and status are logged.

The same fields ride on the log record as ``record.request`` (a dict), which the JSON
formatter of ``asgi-rotator serve --log-format json`` writes as fields.

It must sit outside the layers whose outcome it reports (outermost, or just inside a
health endpoint), and it works alone around any ASGI app: with no exchange below it, it
logs the status and makes a request id of its own.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable
from random import getrandbits
from typing import Any

from .._types import App, Message, Receive, Scope, Send
from ..exchange import SCOPE_KEY, Exchange
from ..redaction import redacting_logger

__all__ = ["LogLines", "request_summary"]

# How a stream may end without anything having gone wrong on our side or upstream.
_CLEAN_CLOSES = frozenset({"completed", "client_disconnected"})


class LogLines:
    """``logger``: a ``logging.Logger`` or its name; ``header``: the response header that
    carries the request id (``None``: none)."""

    def __init__(
        self,
        app: App,
        *,
        logger: logging.Logger | str = "asgi_rotator.requests",
        header: str | None = "x-request-id",
    ) -> None:
        self.app = app
        # The gateway's own messages only, but a secret registered anywhere is still
        # removed from the line (``redaction.RedactingFilter``).
        self.logger = redacting_logger(logger) if isinstance(logger, str) else logger
        self.header = header.lower().encode("latin-1") if header else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.monotonic()
        # An object rather than a closure: a stream keeps it for as long as it lasts, and a
        # closure over what it needs would be a function and five cells.
        send_with_id = _SendWithId(scope, send, self.header)
        try:
            await self.app(scope, receive, send_with_id)
        finally:
            exchange = scope.get(SCOPE_KEY)
            status = send_with_id.status
            failed = status >= 400 or status == 0 or _went_wrong(exchange)
            level = logging.WARNING if failed else logging.INFO
            if self.logger.isEnabledFor(level):
                summary = request_summary(scope, exchange, status, time.monotonic() - started)
                if exchange is None and send_with_id.own_id is not None:
                    summary["request_id"] = send_with_id.own_id
                self.logger.log(level, _line(summary), extra={"request": summary})


class _SendWithId:
    """One request's ``send``: notes the status, and puts the request id on the start
    (the exchange's, or one of its own when no layer below made an exchange).

    Not a coroutine: it only looks at a message on its way, so it hands back the downstream
    send's awaitable rather than awaiting it in a coroutine of its own, which every event
    of every stream would pass through."""

    __slots__ = ("downstream", "header", "own_id", "scope", "status")

    def __init__(self, scope: Scope, downstream: Send, header: bytes | None) -> None:
        self.scope = scope
        self.downstream = downstream
        self.header = header
        self.status = 0
        self.own_id: str | None = None

    def __call__(self, message: Message) -> Awaitable[None]:
        if message["type"] == "http.response.start":
            self.status = message["status"]
            header = self.header
            if header is not None:
                exchange = self.scope.get(SCOPE_KEY)
                if exchange is not None:
                    request_id = exchange.request_id
                else:
                    request_id = self.own_id = f"req_{getrandbits(64):016x}"
                message["headers"] = [*message.get("headers", ()), (header, request_id.encode())]
        return self.downstream(message)


def _went_wrong(exchange: Exchange | None) -> bool:
    if exchange is None:
        return False
    if exchange.current.error is not None or len(exchange.attempts) > 1:
        return True
    close = exchange.current.close_record
    return close is not None and close.reason not in _CLEAN_CLOSES


def request_summary(
    scope: Scope, exchange: Exchange | None, status: int, duration: float
) -> dict[str, Any]:
    """What the log line says about one request, as plain JSON-ready values: no content,
    no secret."""
    summary: dict[str, Any] = {
        "request_id": exchange.request_id if exchange is not None else None,
        "method": scope.get("method"),
        "path": scope.get("path"),  # never the query string
        "status": status or None,
        "duration": round(duration, 4),
    }
    if exchange is None:
        return summary
    summary["protocol"] = exchange.protocol
    summary["model"] = exchange.model
    error = exchange.current.error
    if error is not None:
        summary["error"] = error.kind
        if error.upstream_status is None:
            # The gateway's own words (connection, timeout, validation), never a provider's.
            summary["error_message"] = error.message
    if exchange.current.close_record is not None:
        summary["close"] = exchange.current.close_record.reason
    summary["attempts"] = [
        {
            "target": f"{a.provider}/{a.model}",
            "credential": a.credential,
            "kind": a.kind,
            "status": a.status,
            "duration": None if a.duration is None else round(a.duration, 4),
        }
        for a in exchange.attempts
    ]
    return summary


def _shown(value: object) -> str:
    """A value as the text line shows it: what a client chose (a path, a model name) is
    quoted when it holds a newline or another control character, so it cannot forge a line."""
    text = str(value)
    return text if text.isprintable() else repr(text)


def _line(summary: dict[str, Any]) -> str:
    parts = [
        f"request {summary['request_id']}",
        f"{summary['method']} {_shown(summary['path'])}",
        f"status={summary['status']}",
        f"duration={summary['duration']:.3f}s",
    ]
    for key in ("protocol", "model", "error", "close"):
        if summary.get(key) is not None:
            parts.append(f"{key}={_shown(summary[key])}")
    if summary.get("error_message"):
        parts.append(f"error_message={summary['error_message']!r}")
    attempts = summary.get("attempts")
    if attempts:
        parts.append(
            "attempts=["
            + "; ".join(
                f"#{n} {_shown(a['target'])} credential={a['credential']} "
                f"kind={a['kind'] or 'ok'} "
                f"status={a['status']} duration="
                + ("-" if a["duration"] is None else f"{a['duration']:.3f}s")
                for n, a in enumerate(attempts, 1)
            )
            + "]"
        )
    return " ".join(parts)
