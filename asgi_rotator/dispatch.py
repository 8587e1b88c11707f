"""``ProviderDispatch``: the terminal ASGI app that talks to providers.

Unified request in (from the exchange, or parsed here when no protocol layer ran), provider
HTTP out, and the provider's answer back in the client's protocol.

Deliberate choices:

* When the client and the provider speak the same protocol, the upstream's bytes go to the
  client as they came (plain body, or each SSE event re-framed but with its ``data``
  untouched): fields this gateway does not model survive.  The unified twin is still built
  from them, so the layers above see the same thing either way.
* One body message per SSE event, ending on the event boundary, so a layer above may put a
  heartbeat between any two messages.
* A streamed response that ends without the protocol's terminal event was cut short: the
  client gets an in-band ``connection`` error, never a stream that looks complete.
* The upstream is read only as fast as the client takes it (no queue), and a watcher on
  ``receive`` cancels the whole exchange the moment the client disconnects, which closes
  the upstream response and discards its connection.  Under StreamGuard (which says so in
  the scope) that watcher is StreamGuard's; alone, dispatch runs its own: one plain asyncio
  task and one anyio cancel scope (``asgi_rotator._watch``), not a task group per request,
  which makes this path asyncio-specific, as every server it runs under is.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any, cast

import anyio
import msgspec

from . import _watch
from ._types import Message, Receive, Scope, Send
from .aggregate import StreamAggregate
from .answer import (
    JSON_HEADER,
    SSE_HEADERS,
    ClientStream,
    parse_request_body,
    send_error,
    send_json,
)
from .auth import Grant
from .config import Config
from .errors import GatewayError, premature_close
from .exchange import (
    ATTEMPT_HOOK,
    DEFAULT_MAX_BODY,
    DISCONNECT_WATCHED,
    EVENT,
    RESPONSE,
    SCOPE_KEY,
    WANT_RESPONSE,
    Attempt,
    Exchange,
)
from .pricing import PriceTable
from .protocols import Codec, get_codec
from .providers import Provider, Providers
from .redaction import redact, redacting_logger
from .routes import Route, detect_protocol, match_route, route_path
from .shaping import Shaping, ShapingContext
from .sse import DEFAULT_MAX_EVENT, EventTooLarge, ServerSentEvent, SSEDecoder, encode_event
from .unified import Error, Event, Finish, MessageStart, Request, Response, Usage

__all__ = ["COST_HEADER", "USAGE_HEADER", "ProviderDispatch", "format_cost", "format_usage"]

# On plain responses (docs/usage.md); a stream's figures come after its headers, so they are
# in its close record instead.
COST_HEADER = b"x-asgi-rotator-cost-usd"
USAGE_HEADER = b"x-asgi-rotator-usage"


logger = redacting_logger("asgi_rotator.dispatch")

_json_decode = msgspec.json.decode
_json_encode = msgspec.json.Encoder().encode

_DRAIN_SECONDS = 1.0


class ProviderDispatch:
    """The terminal app.  ``providers`` is a ``Providers`` (or a ``Config`` to build one).

    ``prices`` prices each attempt's usage (``pricing.PriceTable``; by default the
    configuration's ``[prices]`` over the genai-prices table)."""

    def __init__(
        self,
        providers: Providers | Config,
        *,
        max_body: int = DEFAULT_MAX_BODY,
        max_event: int = DEFAULT_MAX_EVENT,
        prices: PriceTable | None = None,
    ) -> None:
        self.providers = providers if isinstance(providers, Providers) else Providers(providers)
        self.max_body = max_body
        if isinstance(max_event, bool) or not isinstance(max_event, int) or max_event < 1:
            raise ValueError(f"max_event: expected a positive number of bytes, got {max_event!r}")
        self.max_event = max_event  # the largest upstream SSE event, in bytes
        if prices is None:
            prices = PriceTable(self.providers.config.prices)
            prices.warm(
                (p.name, p.base_urls.get(protocol), model)
                for p in self.providers
                for protocol in p.protocols[:1]
                for model in p.models
            )
        self.prices = prices

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        route = match_route(route_path(scope))
        if route is None:
            await send_error(
                send,
                detect_protocol(scope, None),
                GatewayError("not_found", f"no route for {scope['path']}"),
            )
            return
        if scope["method"] not in route.allowed:
            error = GatewayError(
                "bad_request",
                f"method {scope['method']} not allowed on {scope['path']}",
                status=405,
            )
            await send_error(
                send,
                detect_protocol(scope, route),
                error,
                [(b"allow", ", ".join(route.allowed).encode())],
            )
            return
        if route.endpoint == "generate":
            await self._generate(scope, receive, send, route)
        elif route.endpoint == "health":
            await send_json(send, {"status": "ok", "providers": sorted(self.providers.providers)})
        elif route.endpoint in ("models", "gemini_models"):
            await self.providers.discover()
            await send_json(send, self.models_listing(scope, route))
        else:
            await send_error(
                send, route.protocol, GatewayError("not_found", f"no route for {scope['path']}")
            )

    # --- generation -------------------------------------------------------------------------

    async def _generate(self, scope: Scope, receive: Receive, send: Send, route: Route) -> None:
        protocol = route.protocol or "openai_chat"
        try:
            # Made by a layer above, as a rule: then no coroutine is needed to find it.
            exchange = scope.get(SCOPE_KEY) or await Exchange.of(
                scope, receive, max_body=self.max_body
            )
        except GatewayError as error:
            await send_error(send, protocol, error)
            return
        if exchange.protocol is None:
            exchange.protocol = protocol
        codec = get_codec(exchange.protocol)
        # A layer above (StreamGuard) may own receive and cancel this call when the client
        # leaves: a second watcher here would cost a task and a scope for nothing.
        watched = scope.get(DISCONNECT_WATCHED, False)
        cancel_scope = _UNWATCHED if watched else _watch.cancel_scope()
        watcher: asyncio.Task[None] | None = None
        # What must propagate once the watcher is stopped.  Stays None when the watcher
        # cancels the call (the client left): nothing to raise.
        escaped: Exception | None = None
        # Whether anything went out yet (``_forward`` notes it before its first send): an
        # error after that is the layer above's to answer in-band.
        progress = _Progress()
        try:
            with cancel_scope:
                if not watched:
                    # The watcher turns a client disconnect into cancellation of everything
                    # below, including an upstream request still waiting for headers.
                    watcher = _watch.start(_watch.watch_disconnect(receive, cancel_scope.cancel))
                try:
                    await self._forward(exchange, codec, route, send, progress)
                except GatewayError as error:
                    # Answered here before commit; after it, in-band by the layer above.
                    exchange.current.error = error
                    if progress.started:
                        escaped = error
                    else:
                        await send_error(send, exchange.protocol, error)
                except Exception as exc:
                    if progress.started:
                        escaped = exc
                    else:
                        logger.exception("dispatch failed for %s", exchange.request_id)
                        internal = exchange.current.error = GatewayError(
                            "server_error",
                            f"internal gateway error (request {exchange.request_id})",
                        )
                        await send_error(send, exchange.protocol, internal)
        finally:
            if watcher is not None:
                await _watch.stop(watcher)  # finished before the request returns
        if escaped is not None:
            raise escaped

    async def _forward(
        self, exchange: Exchange, codec: Codec, route: Route, send: Send, progress: _Progress
    ) -> None:
        request = exchange.request
        if request is None:
            request = exchange.request = parse_request_body(codec, exchange.body, route)
            if exchange.recording:
                exchange.record("dispatch.parse", protocol=exchange.protocol)
        if exchange.model is None:
            exchange.model = request.model
        current = exchange.current
        target = current.target
        if target is None:
            target = current.target = (await self.providers.targets(request.model))[0]
        provider = target.provider
        credential = current.credential
        if credential is None and provider.credentials:
            credential = current.credential = provider.next_credential()
        upstream_protocol = current.upstream_protocol or provider.protocol_for(exchange.protocol)
        current.upstream_protocol = upstream_protocol
        upstream_codec = (
            codec if upstream_protocol == exchange.protocol else get_codec(upstream_protocol)
        )
        shaping = provider.shaping
        # A backend that only streams: a plain client's answer is its stream, aggregated.
        aggregate = shaping is not None and shaping.forces_stream and not request.stream
        outgoing = request
        if request.model != target.model or aggregate:
            outgoing = msgspec.structs.replace(
                request, model=target.model, stream=request.stream or aggregate
            )
        native = upstream_codec.build_request(outgoing)
        if current.shape is not None:
            native = current.shape(native, upstream_protocol)
        path = upstream_codec.request_path(outgoing)
        strategy = provider.strategy
        grant = await strategy.grant(credential) if credential is not None else None
        forwarded = (
            _forwarded(exchange.scope, upstream_codec.forwarded_headers)
            if upstream_protocol == exchange.protocol
            else []
        )
        context = None
        if shaping is not None:
            # Before the attempt is opened: a body rule that refuses the request, or a
            # credential without what a template names, is answered with nothing sent.
            context = _shaping_context(exchange, provider, grant)
            native, path = shaping.shape(context, native, path)
            if exchange.recording:
                exchange.record("dispatch.shape", provider=provider.name, steps=shaping.names)
            url = shaping.base_url(context, provider.base_urls[upstream_protocol]) + path
        else:
            url = provider.url(upstream_protocol, path)
        headers = _upstream_headers(provider, upstream_protocol, grant, forwarded, context)
        own_headers = len(headers)
        body = _json_encode(native)
        if exchange.recording:
            exchange.record(
                "dispatch.request",
                provider=provider.name,
                model=target.model,
                protocol=upstream_protocol,
                translated=upstream_protocol != exchange.protocol,
                bytes=len(body),
            )
        attempt = Attempt(
            number=len(exchange.attempts) + 1,
            provider=provider.name,
            model=target.model,
            credential=credential.id if credential is not None else None,
            protocol=upstream_protocol,
            started=time.monotonic(),
        )
        exchange.attempts.append(attempt)
        on_attempt = exchange.scope.get(ATTEMPT_HOOK)
        if on_attempt is not None:
            # The tracing layer's attempt span starts here; its traceparent goes upstream.
            headers.extend(on_attempt(exchange, attempt))
        # The base URL is how the price table tells the provider (api.openai.com, ...).
        pricer = _Pricer(self.prices, attempt, provider.base_urls.get(upstream_protocol))
        try:
            response = await provider.client.send("POST", url, headers, body)
            if response.status == 401 and grant is not None and strategy.refreshable:
                # A token the provider no longer takes (revoked, or expired early): one new
                # grant and one resend, within this attempt.  A second 401 is an ``auth``
                # failure like any other, never another refresh.
                assert credential is not None
                fresh = await strategy.rejected(credential, grant)
                if fresh is not None:
                    await response.aclose()
                    # The provider's own headers again, for the new grant; what was added
                    # after them (forwarded client headers, the trace context) stays.
                    context = (
                        _shaping_context(exchange, provider, fresh) if shaping is not None else None
                    )
                    headers[:own_headers] = _upstream_headers(
                        provider, upstream_protocol, fresh, forwarded, context
                    )
                    if exchange.recording:
                        exchange.record("dispatch.reauthorize", credential=credential.id)
                    response = await provider.client.send("POST", url, headers, body)
        except GatewayError as error:
            attempt.kind = error.kind
            attempt.duration = time.monotonic() - attempt.started
            # The client knows the host; which provider that is, only this layer knows.
            raise GatewayError(
                error.kind,
                f"provider {provider.name}: {error.message}",
                status=error.status,
                code=error.code,
                provider=provider.name,
            ) from None
        # Sent: the upstream request's bytes (a whole conversation, perhaps) are not kept
        # for as long as the answer streams.
        del body, headers, outgoing, native
        attempt.status = response.status
        attempt.ttfb = time.monotonic() - attempt.started
        try:
            if response.status >= 400:
                raw = await response.aread()
                raise upstream_codec.parse_error(
                    response.status, _maybe_json(raw), response.headers
                )
            if request.stream:
                progress.started = True
                relay = _StreamRelay(
                    exchange, codec, upstream_codec, request, send, pricer, self.max_event, shaping
                )
                await send({"type": "http.response.start", "status": 200, "headers": SSE_HEADERS})
                chunks = response.aiter_bytes()
                try:
                    await relay.run(chunks)
                finally:
                    await chunks.aclose()
            elif aggregate:
                unified = await self._aggregate(exchange, upstream_codec, response, shaping)
                await self._answer(exchange, codec, request, unified, None, send, progress, pricer)
            else:
                await self._plain(
                    exchange,
                    codec,
                    upstream_codec,
                    request,
                    response,
                    send,
                    progress,
                    pricer,
                    shaping,
                )
        except GatewayError as error:
            error.provider = error.provider or provider.name
            attempt.kind = error.kind
            raise
        finally:
            attempt.duration = time.monotonic() - attempt.started
            await response.aclose()

    async def _plain(
        self,
        exchange: Exchange,
        codec: Codec,
        upstream_codec: Codec,
        request: Request,
        response: Any,
        send: Send,
        progress: _Progress,
        pricer: _Pricer,
        shaping: Shaping | None,
    ) -> None:
        body: bytes = await response.aread()
        try:
            data = _json_decode(body)
        except msgspec.DecodeError:
            # 502: the upstream answered wrongly; a 500 would say the gateway itself failed.
            raise GatewayError(
                "server_error", "upstream sent a response that is not valid JSON", status=502
            ) from None
        except RecursionError:
            raise GatewayError(
                "server_error", "upstream sent a response nested too deeply", status=502
            ) from None
        # The bytes go to the client as they came when they are the client's protocol; not
        # when they came in an envelope.
        raw: bytes | None = body
        if shaping is not None and shaping.unwrapping:
            data = shaping.unwrap(data)
            raw = None
        observe = exchange.current.observe
        if observe is not None:
            observe(data)
        if (
            raw is not None
            and upstream_codec is codec
            and not request.include_cost
            and not exchange.scope.get(WANT_RESPONSE)
        ):
            # The bytes go on as they came and no layer reads the twin: of the answer, only
            # what the gateway itself reports (its id and usage) is read.
            response_id, usage = codec.response_id_and_usage(data)
            pricer(usage)
            await self._respond(exchange, raw, response_id, usage, None, send, progress)
            return
        unified = upstream_codec.parse_response(data)
        if upstream_codec is not codec:
            raw = None
            if exchange.recording:
                exchange.record(
                    "dispatch.translate_response", source=upstream_codec.name, target=codec.name
                )
        await self._answer(exchange, codec, request, unified, raw, send, progress, pricer)

    async def _aggregate(
        self, exchange: Exchange, upstream_codec: Codec, response: Any, shaping: Shaping | None
    ) -> Response:
        """The upstream's stream read to its end and added up, for a plain client."""
        decoder = upstream_codec.stream_decoder()
        sse = SSEDecoder(self.max_event)
        total = StreamAggregate()
        observe = exchange.current.observe
        chunks = response.aiter_bytes()
        try:
            try:
                async for chunk in chunks:
                    for sse_event in sse.feed(chunk):
                        if shaping is not None and shaping.unwrapping:
                            sse_event = _unwrapped(sse_event, shaping)
                        if observe is not None:
                            observe(sse_event.data)
                        total.feed(decoder.feed(sse_event))
                        if decoder.done:
                            break
                    if decoder.done:
                        break
                if not decoder.done:
                    for sse_event in sse.close():
                        if shaping is not None and shaping.unwrapping:
                            sse_event = _unwrapped(sse_event, shaping)
                        total.feed(decoder.feed(sse_event))
                    total.feed(decoder.close())
            except EventTooLarge as exc:
                raise _too_large(exc) from None
        finally:
            await chunks.aclose()
        if total.error is not None:
            raise total.error
        if not decoder.done:
            raise premature_close()
        exchange.record("dispatch.aggregate", source=upstream_codec.name)
        return total.response()

    async def _answer(
        self,
        exchange: Exchange,
        codec: Codec,
        request: Request,
        unified: Response,
        raw: bytes | None,
        send: Send,
        progress: _Progress,
        pricer: _Pricer,
    ) -> None:
        """A plain answer to the client: ``raw`` as the upstream sent it when it is already
        in the client's protocol, else built from ``unified``, which goes with it as its
        twin."""
        if raw is None:
            raw = _json_encode(codec.build_response(unified, request))
        pricer(unified.usage)
        if request.include_cost:
            cost = exchange.cost
            if cost is not None:
                # Asked for in-band (OpenRouter's usage.include): the request's cost, over
                # all its attempts, in the usage object the client reads.
                raw = _json_encode(codec.build_response(_with_cost(unified, cost), request))
        await self._respond(exchange, raw, unified.id, unified.usage, unified, send, progress)

    async def _respond(
        self,
        exchange: Exchange,
        raw: bytes,
        response_id: str | None,
        usage: Usage,
        twin: Response | None,
        send: Send,
        progress: _Progress,
    ) -> None:
        """The plain answer's start, with the usage and cost headers, and its body."""
        exchange.usage = usage
        exchange.response_id = response_id
        cost = exchange.cost
        headers = [
            JSON_HEADER,
            (b"content-length", str(len(raw)).encode()),
            (USAGE_HEADER, format_usage(usage).encode()),
        ]
        if cost is not None:
            headers.append((COST_HEADER, format_cost(cost).encode()))
        progress.started = True
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        body: Message = {"type": "http.response.body", "body": raw}
        if twin is not None:
            body[RESPONSE] = twin
        await send(body)

    # --- listings and lifespan --------------------------------------------------------------

    def models_listing(self, scope: Scope, route: Route) -> dict[str, Any]:
        """Every name a client may ask for, in the shape of the client's SDK (the protocol
        layer's detection when it ran, the same detection here when it did not)."""
        ids = self.providers.model_ids()
        exchange = scope.get(SCOPE_KEY)
        protocol = (exchange.protocol if exchange is not None else None) or detect_protocol(
            scope, route
        )
        return get_codec(protocol).models_listing(ids)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.providers.aclose()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def aclose(self) -> None:
        await self.providers.aclose()


def _with_cost(response: Response, cost: float) -> Response:
    usage = msgspec.structs.replace(response.usage, cost=cost)
    return msgspec.structs.replace(response, usage=usage)


class _Pricer:
    """Notes an attempt's usage and what it cost, when the usage arrives."""

    __slots__ = ("attempt", "prices", "url")

    def __init__(self, prices: PriceTable, attempt: Attempt, url: str | None) -> None:
        self.prices = prices
        self.attempt = attempt
        self.url = url

    def __call__(self, usage: Usage) -> None:
        attempt = self.attempt
        attempt.usage = usage
        attempt.cost = self.prices.cost(attempt.provider, self.url, attempt.model, usage)


def format_usage(usage: Usage) -> str:
    """The normalised counts, compact (an RFC 8941 dictionary): input and output always, the
    subsets inside them when not zero."""
    out = f"input={usage.input_tokens}, output={usage.output_tokens}"
    if usage.cache_read_tokens:
        out += f", cache_read={usage.cache_read_tokens}"
    if usage.cache_write_tokens:
        out += f", cache_write={usage.cache_write_tokens}"
    if usage.cache_write_1h_tokens:
        out += f", cache_write_1h={usage.cache_write_1h_tokens}"
    if usage.reasoning_tokens:
        out += f", reasoning={usage.reasoning_tokens}"
    return out


def format_cost(cost: float) -> str:
    """USD as a plain decimal (no exponent), to 1e-10 (xAI's tick)."""
    return f"{cost:.10f}".rstrip("0").rstrip(".") or "0"


class _Progress:
    """Whether the response has started going out: after that, failures go in-band."""

    __slots__ = ("started",)

    def __init__(self) -> None:
        self.started = False


class _Unwatched:
    """The cancel scope's stand-in when a layer above watches for the disconnect."""

    __slots__ = ()

    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc_info: object) -> None:
        return None

    def cancel(self) -> None:
        return None


_UNWATCHED = _Unwatched()


class _StreamRelay:
    """One upstream stream to the client: SSE bytes -> unified events -> client bytes.

    One body message per upstream read, carrying every whole event that read completed
    (``message[EVENT]`` lists their unified twins, in order) and ending on an event boundary.
    Events that arrive in one read are available at the same instant, so sending them in one
    message delays none of them, and costs the server one socket write instead of one per
    event.  A paced upstream (one event per read) still gets one message per event."""

    __slots__ = (
        "decoder",
        "encoder",
        "exchange",
        "max_event",
        "pricer",
        "request",
        "send",
        "shaping",
        "stream",
    )

    def __init__(
        self,
        exchange: Exchange,
        codec: Codec,
        upstream_codec: Codec,
        request: Request,
        send: Send,
        pricer: _Pricer,
        max_event: int = DEFAULT_MAX_EVENT,
        shaping: Shaping | None = None,
    ) -> None:
        self.exchange = exchange
        # Only a provider whose answers come in an envelope costs a decode per event.
        self.shaping = shaping if shaping is not None and shaping.unwrapping else None
        self.pricer = pricer
        self.request = request
        self.max_event = max_event
        self.send = send
        self.decoder = upstream_codec.stream_decoder()
        # The upstream's events go out as they came (same protocol) unless the client asked
        # for the cost in-band: then they are re-encoded, the last usage with the cost in it.
        same = upstream_codec is codec and not request.include_cost
        self.encoder = None if same else codec.stream_encoder(request)
        # The client's stream, opened before its start goes out: this layer notes what it
        # sends, and the layers above continue it from there if they must end it.
        self.stream = ClientStream.open(exchange, self.encoder)

    async def run(self, chunks: AsyncIterator[bytes]) -> None:
        decoder = self.decoder
        sse = SSEDecoder(self.max_event)
        failure: GatewayError | None = None
        try:
            async for chunk in chunks:
                sse_events = sse.feed(chunk)
                del chunk  # nothing of a read is kept through the wait for the next
                if sse_events:
                    await self.emit(sse_events)
                del sse_events
                if decoder.done:
                    break
            if not decoder.done:
                await self.emit(sse.close(), last=True)
        except GatewayError as error:
            failure = error
        except EventTooLarge as exc:
            failure = _too_large(exc)
        if failure is None and not decoder.done:
            failure = premature_close()
        if failure is not None:
            await self.fail(failure)
        await self.send({"type": "http.response.body", "body": b"", "more_body": False})
        if failure is None:
            # The client has its whole answer; what the upstream still sends after its
            # terminal event (the chunked-body terminator, a late usage chunk) is read and
            # dropped so the connection goes back to the pool instead of being discarded.
            with anyio.move_on_after(_DRAIN_SECONDS):
                async for _ in chunks:
                    pass

    async def emit(self, sse_events: list[ServerSentEvent], *, last: bool = False) -> None:
        """One body message for the events of one read, up to the terminal one (``last``:
        the upstream ended, and the decoder says what its end means)."""
        decoder = self.decoder
        exchange = self.exchange
        encoder = self.encoder
        events: list[Event] = []
        parts: list[bytes] = []
        failure: GatewayError | None = None
        observe = exchange.current.observe
        shaping = self.shaping
        try:
            for sse_event in sse_events:
                if shaping is not None:
                    sse_event = _unwrapped(sse_event, shaping)
                if observe is not None:
                    observe(sse_event.data)
                decoded = decoder.feed(sse_event)
                events += decoded
                if encoder is None:
                    # Same protocol: the upstream's event goes out as it came, fields we do
                    # not model included; only the framing is ours.  An error event is the
                    # one that may quote a key back: it goes out redacted.
                    data = sse_event.data
                    if decoded and Error in map(type, decoded):
                        data = redact(data)
                    parts.append(encode_event(data, sse_event.event))
                if decoder.done:
                    break
            if last and not decoder.done:
                events += decoder.close()
        except GatewayError as error:
            if not events:
                raise
            failure = error  # the events before the bad one still go out, then the error
        for i, event in enumerate(events):
            # By exact type, as the client stream notes them: the unified event classes
            # are not subclassed, and this runs for every event.
            kind = type(event)
            if kind is Finish:
                usage = cast(Finish, event).usage
                if usage is not None:
                    exchange.usage = usage
                    self.pricer(usage)
                    cost = exchange.cost
                    if self.request.include_cost and cost is not None:
                        # Asked for in-band: the request's cost in the client's usage.
                        usage = msgspec.structs.replace(usage, cost=cost)
                        event = events[i] = msgspec.structs.replace(event, usage=usage)
            elif kind is MessageStart:
                exchange.response_id = cast(MessageStart, event).id
            if encoder is not None:
                parts.append(encoder.encode(event))
        if parts or events or sse_events:
            # Also when the events have no bytes in the client's protocol (an Anthropic
            # ping, a Responses *.done translated away): an empty body message still tells
            # the layers above that the upstream is alive, which is what a stall timeout
            # measures.
            raw = parts[0] if len(parts) == 1 else b"".join(parts)
            self.stream.sent(raw, events)  # before it goes: a layer above may rename it
            await self.send(
                {"type": "http.response.body", "body": raw, "more_body": True, EVENT: events}
            )
        if failure is not None:
            raise failure

    async def fail(self, failure: GatewayError) -> None:
        exchange = self.exchange
        current = exchange.current
        assert current.target is not None  # chosen before the upstream was called
        failure.provider = failure.provider or current.target.provider.name
        current.error = failure
        if exchange.attempts:
            exchange.attempts[-1].kind = failure.kind
        await self.send(self.stream.error_message(failure))


def _shaping_context(exchange: Exchange, provider: Provider, grant: Grant | None) -> ShapingContext:
    """What the provider's shaping templates may name: the attempt's model and the gateway's
    request id, and what the credential's auth strategy knows beside the token (``project``,
    ``account_id``)."""
    target = exchange.current.target
    assert target is not None  # chosen before the request is built
    return ShapingContext(
        provider.name,
        target.model,
        grant.context if grant is not None else None,
        request_id=exchange.request_id,
    )


def _forwarded(scope: Scope, names: tuple[str, ...]) -> list[tuple[str, str]]:
    """The client's headers of ``names`` (``Codec.forwarded_headers``), which go on to a
    provider of its own protocol (a function, not a comprehension in ``_forward``, whose
    cells would be kept for as long as it streams)."""
    return [
        (name, value.decode("latin-1"))
        for name in names
        for key, value in scope["headers"]
        if key.decode("latin-1") == name
    ]


def _upstream_headers(
    provider: Provider,
    protocol: str,
    grant: Grant | None,
    forwarded: list[tuple[str, str]],
    context: ShapingContext | None,
) -> list[tuple[str, str]]:
    """The provider's headers for ``grant``, the client's forwarded ones, and the
    provider's shaping of them (a beta merged into the client's list)."""
    headers = provider.request_headers(protocol, grant)
    headers += forwarded
    if context is not None and provider.shaping is not None:
        provider.shaping.headers(context, headers)
    return headers


def _unwrapped(sse_event: ServerSentEvent, shaping: Shaping) -> ServerSentEvent:
    """One stream event out of the provider's envelope (``[DONE]`` and other non-JSON data
    as they are)."""
    try:
        data = _json_decode(sse_event.data)
    except (msgspec.DecodeError, RecursionError):
        # Too deep as well: the stream's decoder then reports it as the upstream's error.
        return sse_event
    inner = shaping.unwrap(data)
    if inner is data:
        return sse_event
    return ServerSentEvent(
        data=_json_encode(inner).decode(), event=sse_event.event, id=sse_event.id
    )


def _too_large(exc: EventTooLarge) -> GatewayError:
    # Nothing of the event went out (it is never whole): before the first event this is a
    # retryable failure like any other, after it an in-band error.
    return GatewayError(
        "server_error",
        f"upstream sent an event larger than {exc.limit} bytes (stream.max_event_bytes)",
        status=502,
        code="event_too_large",
    )


def _maybe_json(raw: bytes) -> Any:
    try:
        return _json_decode(raw)
    except (msgspec.DecodeError, RecursionError):
        return raw
