"""``Tracing``: OpenTelemetry spans and metrics for every request, from what the layers below
recorded on the exchange.

It must be the outermost layer, so that refusals (auth, bad input) are traced too, and it
works alone around any ASGI app: without an exchange it still gives the request span.

* One request span: SERVER, or INTERNAL when the host already has an active span (a FastAPI
  app with its own instrumentation), so a request never gets two SERVER spans.  Incoming W3C
  ``traceparent``/``tracestate`` continue the client's trace.
* One CLIENT span per upstream attempt, named ``{gen_ai.operation.name} {gen_ai.request.model}``
  with the GenAI semantic-convention attributes.  Dispatch calls ``scope[ATTEMPT_HOOK]`` as
  each attempt starts: the span is started then, so the upstream request carries its
  ``traceparent`` and a provider-side trace joins this one.  Everything else about the attempt
  (status, usage, close reason) is read from the exchange once the request is over.
* Transform passes (``exchange.passes``, kept because this layer sets ``RECORD``) become span
  events on the span they belong to; a cooldown wait is an event with its length.
* Metrics are ``tracing_metrics.GenAIMetrics``; content capture is ``tracing_content``.
* Nothing per streamed event but a type check: the send wrapper notes the first and last
  chunk and the finish reason, and all span and metric work happens once, at the end.
* Payloads are not captured unless asked (``capture_content`` or
  ``OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT``); then they are redacted and capped
  (``asgi_rotator.middleware.tracing_content``).
* Nothing here may break or delay a request: every span and metric step, and every user
  hook, runs under ``_guarded``; export is the SDK's business, off the request path (the
  stack builder uses a batch span processor and a periodic metric reader).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterable, Mapping
from contextvars import Token
from typing import Any
from urllib.parse import urlsplit

from opentelemetry import context as otel_context
from opentelemetry import metrics, propagate, trace
from opentelemetry.context import Context
from opentelemetry.trace import Span, SpanKind, Status, StatusCode

from .._types import App, Message, Receive, Scope, Send
from ..config import TracingConfig
from ..errors import GatewayError
from ..exchange import (
    ATTEMPT_HOOK,
    ERROR,
    EVENT,
    RECORD,
    RESPONSE,
    SCOPE_KEY,
    WANT_RESPONSE,
    Attempt,
    Exchange,
)
from ..redaction import register_secret
from ..routes import match_route, route_path
from ..unified import Finish, MessageStart, Response
from .tracing_content import OutputCollector, capture_request, capture_response, redact
from .tracing_metrics import OPERATION, PROVIDER, GenAIMetrics

__all__ = [
    "CAPTURE_ENV",
    "SCHEMA_URL",
    "SCHEMA_URL_LATEST",
    "STABILITY_ENV",
    "Tracing",
]

logger = logging.getLogger("asgi_rotator.tracing")

CAPTURE_ENV = "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT"
STABILITY_ENV = "OTEL_SEMCONV_STABILITY_OPT_IN"
# The GenAI conventions are still "development": by default the names of semconv 1.41 (what
# backends read today; the last core release that defines GenAI), with
# ``gen_ai_latest_experimental`` the newest ones.  After 1.41 the GenAI conventions left the
# core repository for open-telemetry/semantic-conventions-genai, which versions them under
# its own schema URL (core 1.42+ defines no gen_ai name): its rename of the cache write
# tokens (#440) is the one that reaches the attributes written here.
SCHEMA_URL = "https://opentelemetry.io/schemas/1.41.0"
SCHEMA_URL_LATEST = "https://opentelemetry.io/schemas/gen-ai/1.42.0"
_SCOPE_NAME = "asgi_rotator"

# Passes recorded just before dispatch starts an attempt: they belong to that attempt.
_BEFORE_ATTEMPT = ("dispatch.request", "dispatch.parse", "field_cache.inject", "adapter")
# Passes that only restate what the spans' attributes already say (the client protocol, the
# credential chosen, the time to first chunk, the configured limits): no event of their own,
# since an event costs the request and the exporter more than an attribute (an SDK event is
# ~7 µs on the request path and as much again to encode: most of a plain request's budget).
_RESTATED = frozenset(
    ("protocol.detect", "cooldown.select", "stream_guard.limits", "stream_guard.first_event")
)
_OTHER = "_OTHER"
_ATTR_MAX = 256  # a string attribute from a pass or an error message is cut here

_time_ns = time.time_ns
_monotonic = time.monotonic
_perf_counter = time.perf_counter

Hook = Callable[[Span, Scope], None]


def _env_true(environ: Mapping[str, str], name: str) -> bool:
    return environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")


class Tracing:
    """Spans and metrics for the stack below (see the module docstring).

    ``tracer_provider``/``meter_provider``: the SDK providers to use; ``None`` takes the
    process's global ones (an embedding host's).  ``capture_content``: record the messages
    (redacted, at most ``max_content_bytes`` per attribute); ``None`` reads
    ``OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT``.  ``secrets``: more strings that
    must never be exported, added to ``asgi_rotator.redaction``'s registry (the stack's
    provider and inbound keys are there already), which cleans anything captured and every
    string taken from a pass or an error message.  ``request_hook(span, scope)`` runs as the request span starts,
    ``response_hook(span, scope)`` before it ends; neither can break a request.
    """

    def __init__(
        self,
        app: App,
        *,
        tracer_provider: trace.TracerProvider | None = None,
        meter_provider: metrics.MeterProvider | None = None,
        capture_content: bool | None = None,
        max_content_bytes: int = TracingConfig().max_content_bytes,
        secrets: Iterable[str] = (),
        latest_semconv: bool | None = None,
        request_hook: Hook | None = None,
        response_hook: Hook | None = None,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        env = os.environ if environ is None else environ
        self.app = app
        if latest_semconv is None:
            opt_in = {v.strip() for v in env.get(STABILITY_ENV, "").split(",")}
            latest_semconv = "gen_ai_latest_experimental" in opt_in
        self.latest = latest_semconv
        schema = SCHEMA_URL_LATEST if latest_semconv else SCHEMA_URL
        from .. import __version__

        self.tracer = trace.get_tracer(
            _SCOPE_NAME, __version__, tracer_provider=tracer_provider, schema_url=schema
        )
        meter = metrics.get_meter(
            _SCOPE_NAME, __version__, meter_provider=meter_provider, schema_url=schema
        )
        self.capture = _env_true(env, CAPTURE_ENV) if capture_content is None else capture_content
        self.max_content_bytes = max_content_bytes
        for secret in secrets:  # the process-wide registry every writer redacts with
            register_secret(secret)
        self.request_hook = request_hook
        self.response_hook = response_hook
        self.cache_write_attr = (
            "gen_ai.usage.cache_write.input_tokens"
            if latest_semconv
            else "gen_ai.usage.cache_creation.input_tokens"
        )
        self.metrics = GenAIMetrics(meter)
        self._servers: dict[str, tuple[str | None, int | None]] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        traced = _Traced(self, scope, send)
        scope[RECORD] = True
        scope[WANT_RESPONSE] = True  # the span's finish reason and model are read from it
        scope[ATTEMPT_HOOK] = traced.on_attempt
        token = traced.start()
        try:
            await self.app(scope, receive, traced.send)
        except BaseException as exc:
            traced.raised = exc
            raise
        finally:
            if token is not None:
                otel_context.detach(token)
            _guarded(traced.finish)

    # --- what the end of a request turns into ----------------------------------------------

    def server_of(self, exchange: Exchange, attempt: Attempt) -> tuple[str | None, int | None]:
        """``server.address``/``server.port`` of the attempt's upstream, parsed once per URL."""
        target = exchange.current.target
        url = None
        if target is not None and attempt.protocol is not None:
            url = target.provider.base_urls.get(attempt.protocol)
        if url is None:
            return None, None
        server = self._servers.get(url)
        if server is None:
            parts = urlsplit(url)
            port = parts.port or (443 if parts.scheme == "https" else 80)
            server = self._servers[url] = (parts.hostname, port)
        return server


class _Traced:
    """One request's tracing state (not on the layer: requests run concurrently)."""

    __slots__ = (
        "attempt_spans",
        "chunks",
        "downstream",
        "error",
        "finish_reason",
        "first_chunk",
        "last_chunk",
        "layer",
        "mono0",
        "output",
        "perf0",
        "raised",
        "response",
        "response_model",
        "scope",
        "span",
        "span_context",
        "sse",
        "status",
        "wall0",
    )

    def __init__(self, layer: Tracing, scope: Scope, send: Send) -> None:
        self.layer = layer
        self.scope = scope
        self.downstream = send
        self.wall0 = _time_ns()
        self.mono0 = _monotonic()
        self.perf0 = _perf_counter()
        self.span: Span = trace.INVALID_SPAN
        self.span_context: Any = None
        self.attempt_spans: dict[int, Span] = {}
        self.status: int | None = None
        self.error: GatewayError | None = None
        self.raised: BaseException | None = None
        self.sse = False
        self.first_chunk: float | None = None
        self.last_chunk: float | None = None
        self.chunks = 0
        self.finish_reason: str | None = None
        self.response_model: str | None = None
        self.response: Response | None = None
        self.output: OutputCollector | None = None

    # --- the request span --------------------------------------------------------------

    def start(self) -> Token[Context] | None:
        try:
            layer, scope = self.layer, self.scope
            parent = otel_context.get_current()
            if trace.get_current_span(parent).get_span_context().is_valid:
                kind = SpanKind.INTERNAL  # the host's span is the SERVER one
            else:
                kind = SpanKind.SERVER
                carrier = _HeaderCarrier(scope["headers"])
                if carrier:  # no trace header, nothing to continue: the propagators are skipped
                    parent = propagate.extract(carrier, context=parent)
            method = scope.get("method", "GET")
            route = _route_template(scope)
            attributes: dict[str, Any] = {
                "http.request.method": method,
                "url.path": scope.get("path", "/"),
                "url.scheme": scope.get("scheme", "http"),
            }
            if route is not None:
                attributes["http.route"] = route
            self.span = span = layer.tracer.start_span(
                f"{method} {route}" if route else method,
                context=parent,
                kind=kind,
                attributes=attributes,
                start_time=self.wall0,
            )
            self.span_context = trace.set_span_in_context(span, parent)
            if layer.request_hook is not None:
                _guarded(layer.request_hook, span, scope)
            return otel_context.attach(self.span_context)
        except Exception:
            logger.exception("tracing: the request span could not start")
            return None

    async def send(self, message: Message) -> None:
        kind = message["type"]
        if kind == "http.response.body":
            if self.sse:
                events = message.get(EVENT)
                if events:
                    now = _monotonic()
                    if self.first_chunk is None:
                        self.first_chunk = now
                    self.last_chunk = now
                    self.chunks += 1
                    for event in events:
                        # A type check per event, nothing more (no span work per event).
                        event_type = type(event)
                        if event_type is Finish:
                            self.finish_reason = event.reason
                        elif event_type is MessageStart:
                            self.response_model = event.model
                    if self.output is not None:
                        self.output.add(events)
            else:
                response = message.get(RESPONSE)
                if response is not None:
                    self.response = response
            error = message.get(ERROR)
            if error is not None:
                self.error = error
        elif kind == "http.response.start":
            self.status = message["status"]
            self.sse = _is_sse(message)
            if self.sse and self.layer.capture:
                self.output = OutputCollector()
            error = message.get(ERROR)
            if error is not None:
                self.error = error
        await self.downstream(message)

    # --- the attempt spans -------------------------------------------------------------

    def on_attempt(self, exchange: Exchange, attempt: Attempt) -> list[tuple[str, str]]:
        """Dispatch calls this as an upstream attempt starts: the attempt's CLIENT span
        starts now, and its ``traceparent`` goes out with the upstream request."""
        try:
            if not self.span.is_recording():
                # Sampled out (or no SDK): a child of an unsampled span is not sampled
                # either, so no attributes are worth building; the traceparent still goes.
                span = self.layer.tracer.start_span(
                    "attempt", context=self.span_context, kind=SpanKind.CLIENT
                )
                self.attempt_spans[attempt.number] = span
            else:
                span = self._attempt_span(exchange, attempt, started=True)
            carrier: dict[str, str] = {}
            propagate.inject(carrier, context=trace.set_span_in_context(span))
            return list(carrier.items())
        except Exception:
            logger.exception("tracing: the attempt span could not start")
            return []

    def _attempt_span(self, exchange: Exchange, attempt: Attempt, *, started: bool) -> Span:
        layer = self.layer
        protocol = attempt.protocol or exchange.current.upstream_protocol or exchange.protocol
        operation = OPERATION.get(protocol or "", "chat")
        attributes: dict[str, Any] = {
            "gen_ai.operation.name": operation,
            "gen_ai.provider.name": PROVIDER.get(protocol or "", attempt.provider or "_OTHER"),
            "gen_ai.request.model": attempt.model,
            "asgi_rotator.attempt": attempt.number,
            "asgi_rotator.provider": attempt.provider,
        }
        if protocol is not None:
            attributes["asgi_rotator.upstream_protocol"] = protocol
            attributes["asgi_rotator.translated"] = protocol != exchange.protocol
        if attempt.credential is not None:
            attributes["asgi_rotator.credential"] = attempt.credential  # an id, never the key
        previous = self._previous(exchange, attempt)
        if previous is not None:
            attributes["asgi_rotator.previous_failure"] = previous
        address, port = layer.server_of(exchange, attempt)
        if address is not None:
            attributes["server.address"] = address
            attributes["server.port"] = port
        request = exchange.request
        if request is not None and started:
            # The parameters as this attempt sends them (a target may override some).
            _request_attributes(attributes, request)
            if layer.capture:
                _guarded(capture_request, attributes, request, layer.max_content_bytes)
        start = self._wall(attempt.started) if attempt.started else _time_ns()
        span = layer.tracer.start_span(
            f"{operation} {attempt.model}",
            context=self.span_context,
            kind=SpanKind.CLIENT,
            attributes=attributes,
            start_time=start,
        )
        self.attempt_spans[attempt.number] = span
        return span

    @staticmethod
    def _previous(exchange: Exchange, attempt: Attempt) -> str | None:
        index = attempt.number - 2
        attempts = exchange.attempts
        if 0 <= index < len(attempts):
            return attempts[index].kind or (
                f"http_{attempts[index].status}" if attempts[index].status else None
            )
        return None

    # --- the end -------------------------------------------------------------------------

    def finish(self) -> None:
        layer = self.layer
        span = self.span
        exchange: Exchange | None = self.scope.get(SCOPE_KEY)
        end = _time_ns()
        recording = span.is_recording()
        attributes: dict[str, Any] = {}
        if exchange is not None:
            self._finish_attempts(exchange, end)
            if recording:
                self._exchange_attributes(attributes, exchange)
            _guarded(
                layer.metrics.record,
                exchange,
                self.sse,
                self.first_chunk,
                self.last_chunk,
                self.chunks,
            )
        status = self.status
        if recording:
            if status is not None:
                attributes["http.response.status_code"] = status
            error = self.error or (exchange.current.error if exchange is not None else None)
            if self.raised is not None and status is None:
                attributes["error.type"] = type(self.raised).__qualname__
                span.set_status(Status(StatusCode.ERROR, "the request raised"))
            elif status is not None and status >= 500:
                attributes["error.type"] = error.kind if error is not None else str(status)
                span.set_status(Status(StatusCode.ERROR))
            elif error is not None:
                # Answered (4xx, or an in-band error after commit): the kind says what.
                attributes["error.type"] = error.kind
                if status is not None and status < 400:
                    span.set_status(Status(StatusCode.ERROR, self._message(error)))
            span.set_attributes(attributes)
            if layer.response_hook is not None:
                _guarded(layer.response_hook, span, self.scope)
        span.end(end_time=end)

    def _finish_attempts(self, exchange: Exchange, end: int) -> None:
        attempts = exchange.attempts
        if not attempts and not exchange.passes:
            return
        last = attempts[-1] if attempts else None
        close = exchange.current.close_record
        for attempt in attempts:
            span = self.attempt_spans.get(attempt.number)
            if span is None:  # recorded by a layer, not started by dispatch (a foreign app)
                span = self._attempt_span(exchange, attempt, started=False)
            if span.is_recording():
                self._attempt_attributes(span, exchange, attempt, attempt is last, close)
        self._pass_events(exchange)
        for attempt in attempts:
            span = self.attempt_spans[attempt.number]
            if attempt.duration is not None and attempt.started:
                span.end(end_time=self._wall(attempt.started + attempt.duration))
            else:
                span.end(end_time=end)

    def _attempt_attributes(
        self,
        span: Span,
        exchange: Exchange,
        attempt: Attempt,
        final: bool,
        close: Any,
    ) -> None:
        layer = self.layer
        # One set_attributes call: each SDK call takes the span's lock and cleans its values.
        attributes: dict[str, Any] = {}
        if attempt.status is not None:
            attributes["http.response.status_code"] = attempt.status
        if attempt.kind is not None:
            attributes["error.type"] = attempt.kind
            span.set_status(Status(StatusCode.ERROR, attempt.kind))
        if close is not None and self.sse and close.attempt == attempt.number:
            _close_attributes(attributes, close)
        charged = attempt.charged()  # a failed attempt costs what its provider says
        if charged is not None:
            attributes["asgi_rotator.cost_usd"] = charged
        if not final or attempt.kind is not None:
            span.set_attributes(attributes)
            return
        if exchange.response_id is not None:
            attributes["gen_ai.response.id"] = exchange.response_id
        response = self.response
        model = self.response_model or (response.model if response is not None else None)
        if model:
            attributes["gen_ai.response.model"] = model
        reason = self.finish_reason or (response.finish_reason if response is not None else None)
        if reason is not None:
            attributes["gen_ai.response.finish_reasons"] = (reason,)
        usage = exchange.usage
        if usage is not None:
            attributes["gen_ai.usage.input_tokens"] = usage.input_tokens
            attributes["gen_ai.usage.output_tokens"] = usage.output_tokens
            if usage.cache_read_tokens:
                attributes["gen_ai.usage.cache_read.input_tokens"] = usage.cache_read_tokens
            if usage.cache_write_tokens:
                attributes[layer.cache_write_attr] = usage.cache_write_tokens
            if usage.reasoning_tokens:
                attributes["gen_ai.usage.reasoning.output_tokens"] = usage.reasoning_tokens
        if self.first_chunk is not None and attempt.started:
            attributes["gen_ai.response.time_to_first_chunk"] = self.first_chunk - attempt.started
        span.set_attributes(attributes)
        if layer.capture:
            if self.output is not None:
                _guarded(
                    self.output.attribute,
                    span,
                    reason,
                    layer.max_content_bytes,
                )
            elif response is not None:
                _guarded(capture_response, span, response, layer.max_content_bytes)

    def _exchange_attributes(self, attributes: dict[str, Any], exchange: Exchange) -> None:
        protocol = exchange.protocol
        if protocol is not None:
            attributes["asgi_rotator.client_protocol"] = protocol
            attributes["gen_ai.operation.name"] = OPERATION.get(protocol, "chat")
        if exchange.model is not None:
            attributes["gen_ai.request.model"] = exchange.model[:_ATTR_MAX]
        attributes["asgi_rotator.request_id"] = exchange.request_id
        attributes["asgi_rotator.attempts"] = len(exchange.attempts)
        for recorded in exchange.passes:
            if recorded.name == "fallback.plan":
                targets = recorded.data.get("targets") or ()
                if len(targets) > 1:
                    group = recorded.data.get("group")
                    if group:
                        attributes["asgi_rotator.fallback.group"] = redact(str(group)[:_ATTR_MAX])
                    attributes["asgi_rotator.fallback.targets"] = tuple(
                        redact(str(t)[:_ATTR_MAX]) for t in targets[:32]
                    )
                break
        cost = exchange.cost  # the sum over the attempts; unknown if any is
        if cost is not None:
            attributes["asgi_rotator.cost_usd"] = cost
        request = exchange.request
        if request is not None:
            attributes["gen_ai.request.stream"] = request.stream
        close = exchange.current.close_record
        if close is not None and self.sse:  # StreamGuard keeps a record for plain answers too
            _close_attributes(attributes, close)

    def _pass_events(self, exchange: Exchange) -> None:
        """Each transform pass as an event on the span it belongs to: the attempt running
        when it was recorded (or about to start, for the passes that prepare one), else the
        request span.  Counts and sizes only: passes never carry payloads, and strings are
        cut short."""
        windows: list[tuple[float, float, Span]] = []
        for attempt in exchange.attempts:
            if attempt.started:
                begin = attempt.started - self.mono0 + self.perf0
                length = attempt.duration if attempt.duration is not None else float("inf")
                windows.append((begin, begin + length, self.attempt_spans[attempt.number]))
        for recorded in exchange.passes:
            name = recorded.name
            if name in _RESTATED or self._restates(name, recorded.data):
                continue
            at = recorded.at
            owner: Span = self.span
            for begin, stop, span in windows:
                if begin <= at <= stop:
                    owner = span
                    break
                if at < begin and name.startswith(_BEFORE_ATTEMPT):
                    owner = span
                    break
            if owner.is_recording():
                owner.add_event(
                    name,
                    _event_attributes(recorded.data),
                    timestamp=self.wall0 + int((at - self.perf0) * 1e9),
                )

    def _restates(self, name: str, data: dict[str, Any]) -> bool:
        """Whether a pass says nothing the spans do not: a step that answered is its
        attempt's span; a plan of one target is that attempt; the close of a stream is the
        ``asgi_rotator.stream.*`` attributes, and a plain answer that completed says so by
        its status.  A plan of several targets is the request span's
        ``asgi_rotator.fallback.group`` and ``.targets``."""
        if name == "fallback.attempt":
            return bool(data.get("outcome") == "answered")
        if name == "fallback.plan":
            return True
        if name == "stream_guard.close":
            return self.sse or data.get("reason") == "completed"
        return False

    def _wall(self, monotonic: float) -> int:
        return self.wall0 + int((monotonic - self.mono0) * 1e9)

    def _message(self, error: GatewayError) -> str:
        return redact(error.message)[:_ATTR_MAX]


def _request_attributes(attributes: dict[str, Any], request: Any) -> None:
    attributes["gen_ai.request.stream"] = request.stream
    if request.max_tokens is not None:
        attributes["gen_ai.request.max_tokens"] = request.max_tokens
    if request.temperature is not None:
        attributes["gen_ai.request.temperature"] = request.temperature
    if request.top_p is not None:
        attributes["gen_ai.request.top_p"] = request.top_p
    if request.top_k is not None:
        attributes["gen_ai.request.top_k"] = request.top_k
    if request.stop:
        attributes["gen_ai.request.stop_sequences"] = tuple(request.stop)
    if request.seed is not None:
        attributes["gen_ai.request.seed"] = request.seed
    if request.presence_penalty is not None:
        attributes["gen_ai.request.presence_penalty"] = request.presence_penalty
    if request.frequency_penalty is not None:
        attributes["gen_ai.request.frequency_penalty"] = request.frequency_penalty
    output = request.output
    if output is not None:
        attributes["gen_ai.output.type"] = "json" if output.type != "text" else "text"


def _close_attributes(attributes: dict[str, Any], close: Any) -> None:
    attributes["asgi_rotator.stream.close_reason"] = close.reason
    attributes["asgi_rotator.stream.events"] = close.events
    attributes["asgi_rotator.stream.bytes"] = close.bytes
    if close.heartbeats:
        attributes["asgi_rotator.stream.heartbeats"] = close.heartbeats


def _event_attributes(data: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in data.items():
        name = f"asgi_rotator.{key}"
        if isinstance(value, (bool, int, float)):
            out[name] = value
        elif isinstance(value, str):
            out[name] = redact(value[:_ATTR_MAX])
        elif isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value):
            out[name] = tuple(redact(v[:_ATTR_MAX]) for v in value[:32])
        elif isinstance(value, (list, tuple, dict)):
            out[f"{name}.count"] = len(value)
    return out


def _route_template(scope: Scope) -> str | None:
    path = route_path(scope)
    route = match_route(path)
    if route is None:
        return None
    if route.protocol == "gemini" and route.model is not None:
        return path.replace(route.model, "{model}", 1)
    if route.item is not None:
        prefix = path[: len(path) - len(route.item)]
        return prefix + (
            "{response_id}/input_items" if route.item.endswith("/input_items") else "{response_id}"
        )
    return path


def _is_sse(start: Message) -> bool:
    for name, value in start.get("headers", ()):
        if name.lower() == b"content-type":
            return bool(value.lower().startswith(b"text/event-stream"))
    return False


class _HeaderCarrier(dict[str, str]):
    """ASGI headers as the propagator's carrier (lower-case names, the first value wins)."""

    def __init__(self, headers: Iterable[tuple[bytes, bytes]]) -> None:
        super().__init__()
        for name, value in headers:
            if name in (b"traceparent", b"tracestate", b"baggage"):
                self.setdefault(name.decode("latin-1"), value.decode("latin-1"))


def _guarded(function: Callable[..., Any], *args: Any) -> Any:
    """Run a tracing step or a user hook: a failure is logged, never passed to the request."""
    try:
        return function(*args)
    except Exception:
        logger.exception("tracing: %s failed", getattr(function, "__qualname__", function))
        return None
