"""The Tracing layer's metrics: the GenAI client metrics of the semantic conventions, with
their bucket boundaries, and the gateway's own counters.

Recorded once per request, from the exchange, after the answer went out.  Cardinality stays
low: no request ids or keys in any attribute, and a model name becomes a label only once its
provider has answered for it, so a client cannot mint series by inventing model names.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from opentelemetry.metrics import CallbackOptions, Meter, Observation

from ..exchange import Exchange

__all__ = [
    "DURATION_BUCKETS",
    "OPERATION",
    "PROVIDER",
    "TOKEN_BUCKETS",
    "GenAIMetrics",
]

# Bucket boundaries the GenAI metric conventions give (semconv 1.41, gen-ai-metrics.md): the
# three client time histograms share DURATION_BUCKETS.
TOKEN_BUCKETS = (1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304,
                 16777216, 67108864)  # fmt: skip
DURATION_BUCKETS = (0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48,
                    40.96, 81.92)  # fmt: skip

# gen_ai.operation.name per wire protocol.
OPERATION = {
    "openai_chat": "chat",
    "openai_responses": "chat",
    "anthropic_messages": "chat",
    "gemini": "generate_content",
}
# gen_ai.provider.name: the conventions name the API family, not the host; an
# OpenAI-compatible server is "openai".
PROVIDER = {
    "openai_chat": "openai",
    "openai_responses": "openai",
    "anthropic_messages": "anthropic",
    "gemini": "gcp.gemini",
}
_KNOWN_MODELS_MAX = 1000
_OTHER = "_OTHER"


class _Tally:
    """A counter summed here and handed to the SDK only when a reader collects (an
    observable counter, cumulative like any OpenTelemetry counter).  A synchronous SDK
    counter's ``add`` builds a measurement and a frozen attribute set under a lock, ~10 µs
    per call on the request path; here an add is one dict update."""

    def __init__(self, meter: Meter, name: str, unit: str, description: str) -> None:
        self.totals: dict[tuple[tuple[str, Any], ...], float] = {}
        meter.create_observable_counter(
            name, callbacks=[self._observe], unit=unit, description=description
        )

    def add(self, amount: float, attributes: dict[str, Any]) -> None:
        key = tuple(attributes.items())
        self.totals[key] = self.totals.get(key, 0) + amount

    def _observe(self, options: CallbackOptions) -> Iterable[Observation]:
        # Called from the reader's thread: a copy is taken in one step.
        return [Observation(total, dict(key)) for key, total in self.totals.copy().items()]


class GenAIMetrics:
    def __init__(self, meter: Meter) -> None:
        self.token_usage = meter.create_histogram(
            "gen_ai.client.token.usage",
            unit="{token}",
            description="Tokens used per upstream call, by gen_ai.token.type",
            explicit_bucket_boundaries_advisory=TOKEN_BUCKETS,
        )
        self.duration = meter.create_histogram(
            "gen_ai.client.operation.duration",
            unit="s",
            description="Duration of each upstream GenAI call",
            explicit_bucket_boundaries_advisory=DURATION_BUCKETS,
        )
        self.ttfc = meter.create_histogram(
            "gen_ai.client.operation.time_to_first_chunk",
            unit="s",
            description="Time to the first chunk of a streamed answer",
            explicit_bucket_boundaries_advisory=DURATION_BUCKETS,
        )
        self.per_chunk = meter.create_histogram(
            "gen_ai.client.operation.time_per_output_chunk",
            unit="s",
            description="Time between chunks of a streamed answer, after the first",
            explicit_bucket_boundaries_advisory=DURATION_BUCKETS,
        )
        self.attempts = _Tally(
            meter,
            "asgi_rotator.attempts",
            unit="{attempt}",
            description="Upstream attempts, by outcome and error kind",
        )
        self.cooldowns = _Tally(
            meter,
            "asgi_rotator.cooldowns",
            unit="{cooldown}",
            description="Cooldowns started on a credential, model or provider, by reason",
        )
        self.stream_closes = _Tally(
            meter,
            "asgi_rotator.stream.closes",
            unit="{stream}",
            description="Response streams that ended, by close reason",
        )
        self.cost = _Tally(
            meter,
            "asgi_rotator.cost",
            unit="USD",
            description="What upstream attempts cost, where known, by provider and model",
        )
        self.known_models: set[tuple[str, str]] = set()
        # Bounded as the labels are: known models (at most _KNOWN_MODELS_MAX, else _OTHER)
        # times the configured providers, protocols and error kinds.
        self._labels: dict[tuple[str, str, str, str | None, bool], _Labels] = {}

    def model_label(self, provider: str, model: str | None, answered: bool) -> str:
        """The model as a label: one its provider answered for, else ``_OTHER``."""
        if model is None:
            return _OTHER
        key = (provider, model)
        if key in self.known_models:
            return model
        if answered and len(self.known_models) < _KNOWN_MODELS_MAX:
            self.known_models.add(key)
            return model
        return _OTHER

    def labels(
        self, protocol: str, provider: str, model: str | None, kind: str | None, answered: bool
    ) -> _Labels:
        """The label sets of an attempt, built once per distinct combination: a request
        looks its own up instead of building five dicts."""
        model_label = self.model_label(provider, model, answered)
        key = (protocol, provider, model_label, kind, answered)
        labels = self._labels.get(key)
        if labels is None:
            labels = self._labels[key] = _Labels(protocol, provider, model_label, kind, answered)
        return labels

    def record(
        self,
        exchange: Exchange,
        streamed: bool,
        first_chunk: float | None,
        last_chunk: float | None,
        chunks: int,
    ) -> None:
        """One request's metrics.  ``streamed``: the answer was an event stream, whose
        chunks ``first_chunk``/``last_chunk`` (``time.monotonic()``) and ``chunks`` describe."""
        attempts = exchange.attempts
        last = attempts[-1] if attempts else None
        for attempt in attempts:
            protocol = attempt.protocol or exchange.current.upstream_protocol or ""
            answered = attempt.kind is None and (attempt.status or 200) < 400
            labels = self.labels(protocol, attempt.provider, attempt.model, attempt.kind, answered)
            if attempt.duration is not None:
                self.duration.record(attempt.duration, labels.base)
            self.attempts.add(1, labels.outcome)
            charged = attempt.charged()
            if charged:  # unknown is not zero, and zero adds nothing
                self.cost.add(charged, labels.base)
            if attempt is not last or not answered:
                continue
            usage = exchange.usage
            if usage is not None:
                self.token_usage.record(usage.input_tokens, labels.input_tokens)
                self.token_usage.record(usage.output_tokens, labels.output_tokens)
            if first_chunk is not None and attempt.started:
                self.ttfc.record(first_chunk - attempt.started, labels.base)
                if chunks > 1 and last_chunk is not None:
                    self.per_chunk.record((last_chunk - first_chunk) / (chunks - 1), labels.base)
        for recorded in exchange.passes:
            if recorded.name == "cooldown.cool":
                reason = recorded.data.get("reason")
                self.cooldowns.add(1, {"asgi_rotator.reason": str(reason)})
        close = exchange.current.close_record
        if close is not None and streamed:  # StreamGuard keeps a record for plain answers too
            self.stream_closes.add(1, {"asgi_rotator.close_reason": close.reason})


class _Labels:
    """The label sets one kind of attempt is recorded with.  Shared between requests, so
    never mutated: the SDK copies what it keeps."""

    __slots__ = ("base", "input_tokens", "outcome", "output_tokens")

    def __init__(
        self, protocol: str, provider: str, model: str, kind: str | None, answered: bool
    ) -> None:
        base: dict[str, Any] = {
            "gen_ai.operation.name": OPERATION.get(protocol, "chat"),
            "gen_ai.provider.name": PROVIDER.get(protocol, _OTHER),
            "gen_ai.request.model": model,
            "asgi_rotator.provider": provider,
        }
        if kind is not None:
            base["error.type"] = kind
        self.base = base
        self.outcome = {**base, "asgi_rotator.outcome": "success" if answered else "failure"}
        self.input_tokens = {**base, "gen_ai.token.type": "input"}
        self.output_tokens = {**base, "gen_ai.token.type": "output"}
