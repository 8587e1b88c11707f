"""Run an inner app for one attempt, holding its response until it is clearly answering.

The routing layers (fallback, cooldown/retry) may try again only before the response is
committed, and a provider can fail after a 200: an error event may come before any content
(an overloaded Anthropic stream, a Gemini error chunk).  So ``http.response.start`` and
any body messages that carry no content yet (``MessageStart``, usage, pings) are held.  The
attempt is *committed*, and everything held goes out, at the first body message that
carries content, that has no unified twin (a foreign app: nothing to judge it by), or that
ends the response.  It has *failed* when the status is an error or an ``Error`` event comes
first; then nothing was sent and the caller may try again.
"""

from __future__ import annotations

from typing import Any

from .._types import App, Message, Send
from ..errors import GatewayError, classify
from ..exchange import ERROR, EVENT
from ..unified import Error, MessageStart, UsageEvent

__all__ = ["Held", "run_held"]


_PRELUDE = (MessageStart, UsageEvent)


class _Abandon(Exception):
    """Raised from ``send`` to stop an inner app whose stream failed before commit."""


class Held:
    """The outcome of one attempt: ``committed`` (it went out), or ``error`` and the
    messages that were held back (an error response, or a stream's prelude)."""

    __slots__ = ("committed", "error", "messages", "status")

    def __init__(self) -> None:
        self.committed = False
        self.error: GatewayError | None = None
        self.messages: list[Message] = []
        self.status: int | None = None

    async def release(self, send: Send) -> None:
        """Send the held error response as it was (for a final, non-retried failure).
        A failure that came in-band after a 200 has no error response to release: the
        caller renders one in the client's protocol instead."""
        for message in self.messages:
            await send(message)


async def run_held(app: App, scope: Any, receive: Any, send: Send) -> Held:
    held = Held()

    async def held_send(message: Message) -> None:
        if held.committed:
            await send(message)
            return
        kind = message["type"]
        if kind == "http.response.start":
            held.status = message["status"]
            held.messages.append(message)
            if held.status >= 400:
                held.error = message.get(ERROR) or classify(
                    held.status, f"HTTP {held.status} from the inner app"
                )
            return
        if kind != "http.response.body" or held.error is not None:
            held.messages.append(message)  # the rest of an error response, kept for release
            return
        events = message.get(EVENT)
        if events is not None:
            for event in events:
                if isinstance(event, Error):
                    held.error = event.error
                    held.messages.clear()  # a 200 prelude is no error response to release
                    raise _Abandon
            if message.get("more_body", False) and all(isinstance(e, _PRELUDE) for e in events):
                held.messages.append(message)
                return
        held.committed = True
        for earlier in held.messages:
            await send(earlier)
        held.messages.clear()
        await send(message)

    try:
        await app(scope, receive, held_send)
    except _Abandon:
        pass
    return held
