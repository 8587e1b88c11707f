"""Run an inner app for one attempt, holding its response until it is clearly answering.

The routing layers (fallback, cooldown/retry) may try again only before the response is
committed, and a provider can fail after a 200: an error event may come before any content
(an overloaded Anthropic stream, a Gemini error chunk).  So ``http.response.start`` and
any body messages that carry no content yet (``MessageStart``, usage, pings) are held.  The
attempt is *committed*, and everything held goes out, at the first body message that
carries content, that has no unified twin (a foreign app: nothing to judge it by), or that
ends the response.  It has *failed* when the status is an error or an ``Error`` event comes
first; then nothing was sent and the caller may try again.

A caller that changes the response start (the routing layers write the attempt count) says
so with ``on_start``, applied to the start when it goes out, at commit or release: the start
is always held, so no send wrapper is needed.  Once committed, the hold has nothing left to
decide and passes every later message straight on: ``send`` returns the downstream's own
awaitable.

Given the request's ``exchange``, the hold lets go of the request's bytes at commit: no
attempt starts after it, and only an attempt's inner app reads them, while a stream may wait
for minutes with a whole conversation in them.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from msgspec import Struct, field

from .._types import App, Message, Receive, Scope, Send
from ..errors import GatewayError, classify
from ..exchange import ERROR, EVENT, Exchange
from ..unified import Error, MessageStart, UsageEvent

__all__ = ["Abandon", "Held", "run_held"]


_PRELUDE = (MessageStart, UsageEvent)


class Abandon(Exception):
    """Raised from ``Held.send`` to stop an inner app whose stream failed before commit: a
    caller that runs the app itself rather than through ``run_held`` catches it."""


class Held(Struct, eq=False):
    """The outcome of one attempt: ``committed`` (it went out), or ``error`` and the
    messages that were held back (an error response, or a stream's prelude).

    ``send`` (a bound method) is what the inner app is given; ``downstream`` is where the
    held messages go at commit, the start through ``on_start`` if given.

    A ``Struct`` (compared by identity) rather than a class with an ``__init__``: one is
    made for every attempt of every routing layer, and a ``Struct`` is made without running
    Python code."""

    downstream: Send
    on_start: Callable[[Message], Message] | None = None
    exchange: Exchange | None = None
    committed: bool = False
    error: GatewayError | None = None
    messages: list[Message] = field(default_factory=list)
    status: int | None = None

    def send(self, message: Message) -> Awaitable[None]:
        if self.committed:
            # Nothing left to decide: the message goes on, the downstream's own awaitable
            # returned as it is, so a long stream costs the hold no coroutine per event.
            return self.downstream(message)
        return self._judge(message)

    async def _judge(self, message: Message) -> None:
        """Hold ``message``, or commit with it, or fail the attempt."""
        kind = message["type"]
        if kind == "http.response.start":
            status = self.status = message["status"]
            self.messages.append(message)
            if status >= 400:
                self.error = message.get(ERROR) or classify(
                    status, f"HTTP {status} from the inner app"
                )
            return
        if kind != "http.response.body" or self.error is not None:
            self.messages.append(message)  # the rest of an error response, kept for release
            return
        events = message.get(EVENT)
        if events is not None:
            for event in events:
                if isinstance(event, Error):
                    self.error = event.error
                    self.messages = []  # a 200 prelude is no error response to release
                    raise Abandon
            if message.get("more_body", False) and all(isinstance(e, _PRELUDE) for e in events):
                self.messages.append(message)
                return
        self.committed = True
        await self.release(self.downstream)
        # Committed: nothing is held, released or replayed again, for as long as the
        # stream lasts.
        self.messages = []
        self.on_start = None
        if self.exchange is not None:
            self.exchange.body = b""
            self.exchange = None
        await self.downstream(message)

    def __repr__(self) -> str:
        # Never the held messages: a provider's error body may echo part of a key back.
        kind = self.error.kind if self.error is not None else None
        return f"<Held committed={self.committed} status={self.status} error={kind!r}>"

    async def release(self, send: Send) -> None:
        """Send the held error response as it was (for a final, non-retried failure).
        A failure that came in-band after a 200 has no error response to release: the
        caller renders one in the client's protocol instead."""
        on_start = self.on_start
        for message in self.messages:
            if on_start is not None and message["type"] == "http.response.start":
                message = on_start(message)
            await send(message)


async def run_held(
    app: App,
    scope: Scope,
    receive: Receive,
    send: Send,
    *,
    on_start: Callable[[Message], Message] | None = None,
) -> Held:
    held = Held(send, on_start)
    try:
        await app(scope, receive, held.send)
    except Abandon:
        pass
    return held
