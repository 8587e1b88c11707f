"""Export for ``asgi-rotator serve``: OpenTelemetry SDK providers built from the standard
``OTEL_*`` variables and the ``[tracing]`` section, and the optional Prometheus ``/metrics``.

The environment wins over the file, as the OpenTelemetry SDK does.  Spans leave through a
batch span processor and metrics through a periodic reader: both export from their own
thread, so a slow or failing collector never delays a request.  The SDK and the exporters
are the ``otel`` extra (``pip install 'asgi-rotator[otel]'``, also in ``[serve]``); without
them the gateway runs untraced and ``serve`` says so in one line.

Embedded (``build_app`` in a host that set up OpenTelemetry itself, ``[tracing] enabled =
true`` and no endpoint), no provider is built here: the Tracing layer uses the host's global
ones, so the gateway's spans land in the host's traces.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any
from urllib.parse import unquote

from ._types import App, Receive, Scope, Send
from .config import ConfigError, TracingConfig

__all__ = ["MetricsEndpoint", "Telemetry", "export_problem", "telemetry_from_config"]

logger = logging.getLogger("asgi_rotator.telemetry")
_DEFAULTS = TracingConfig()

_ENDPOINTS = (
    "OTEL_EXPORTER_OTLP_ENDPOINT",
    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT",
)
_EXTRA = "pip install 'asgi-rotator[otel]'"


class Telemetry:
    """What the Tracing layer is given: the providers (``None``: the process's global
    ones), the Prometheus registry when ``/metrics`` is on, and how to flush at shutdown."""

    def __init__(
        self,
        tracer_provider: Any = None,
        meter_provider: Any = None,
        registry: Any = None,
        *,
        capture_content: bool | None = None,
        max_content_bytes: int = _DEFAULTS.max_content_bytes,
        prometheus_path: str = _DEFAULTS.prometheus_path,
    ) -> None:
        self.tracer_provider = tracer_provider
        self.meter_provider = meter_provider
        self.registry = registry
        self.capture_content = capture_content
        self.max_content_bytes = max_content_bytes
        self.prometheus_path = prometheus_path

    def shutdown(self) -> None:
        """Flush and stop the providers built here (blocking: run it in a thread)."""
        for provider in (self.tracer_provider, self.meter_provider):
            if provider is not None:
                try:
                    provider.shutdown()
                except Exception:
                    logger.exception("telemetry: shutdown failed")


def _env_bool(value: str | None) -> bool | None:
    if value is None or not value.strip():
        return None
    return value.strip().lower() in ("1", "true", "yes", "on")


def _signal_endpoint(config: TracingConfig, env: Mapping[str, str], signal: str) -> str | None:
    """The URL a signal is posted to: the per-signal variable as given, else the generic
    one (variable, then file) with ``/v1/{signal}`` appended, as the OTLP spec says."""
    specific = env.get(f"OTEL_EXPORTER_OTLP_{signal.upper()}_ENDPOINT")
    if specific:
        return specific
    base = env.get("OTEL_EXPORTER_OTLP_ENDPOINT") or config.endpoint
    if not base:
        return None
    return f"{base.rstrip('/')}/v1/{signal}"


def _grpc_endpoint(config: TracingConfig, env: Mapping[str, str], signal: str) -> str | None:
    """gRPC takes the collector's address as it is: no ``/v1/{signal}`` path."""
    return (
        env.get(f"OTEL_EXPORTER_OTLP_{signal.upper()}_ENDPOINT")
        or env.get("OTEL_EXPORTER_OTLP_ENDPOINT")
        or config.endpoint
    )


def _protocol(env: Mapping[str, str], signal: str, config: TracingConfig) -> str:
    return (
        env.get(f"OTEL_EXPORTER_OTLP_{signal.upper()}_PROTOCOL")
        or env.get("OTEL_EXPORTER_OTLP_PROTOCOL")
        or config.protocol
    ).strip()


def _wants_export(config: TracingConfig, env: Mapping[str, str]) -> bool:
    return bool(config.endpoint) or any(env.get(name) for name in _ENDPOINTS)


def _enabled(config: TracingConfig, env: Mapping[str, str]) -> bool:
    if _env_bool(env.get("OTEL_SDK_DISABLED")):
        return False
    if config.enabled is not None:
        return config.enabled
    return _wants_export(config, env) or config.prometheus


def export_problem(config: TracingConfig, env: Mapping[str, str]) -> str | None:
    """Why export that was asked for cannot happen (the extra, or the gRPC exporter, is not
    installed), in one line; ``None`` when nothing is missing."""
    if not _enabled(config, env) or not (_wants_export(config, env) or config.prometheus):
        return None
    try:
        import opentelemetry.sdk
    except ImportError:
        return f"tracing export is configured but the OpenTelemetry SDK is not installed; {_EXTRA}"
    if _wants_export(config, env):
        for signal in ("traces", "metrics"):
            protocol = _protocol(env, signal, config)
            module = {
                "http/protobuf": "opentelemetry.exporter.otlp.proto.http",
                "grpc": "opentelemetry.exporter.otlp.proto.grpc",
            }.get(protocol)
            if module is None:
                return f"OTLP protocol {protocol!r} is not supported; use http/protobuf or grpc"
            try:
                __import__(module)
            except ImportError:
                package = "opentelemetry-exporter-otlp-proto-" + (
                    "grpc" if protocol == "grpc" else "http"
                )
                return f"OTLP over {protocol} needs {package}; {_EXTRA}"
    if config.prometheus:
        try:
            import opentelemetry.exporter.prometheus  # noqa: F401
        except ImportError:
            return f"[tracing] prometheus needs opentelemetry-exporter-prometheus; {_EXTRA}"
    return None


def telemetry_from_config(config: TracingConfig, env: Mapping[str, str]) -> Telemetry | None:
    """The gateway's telemetry, or ``None`` when tracing is off or cannot be set up (see
    ``export_problem``)."""
    if not _enabled(config, env):
        return None
    capture = _env_bool(env.get("OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT"))
    options: dict[str, Any] = {
        "capture_content": config.capture_content if capture is None else capture,
        "max_content_bytes": config.max_content_bytes,
        "prometheus_path": config.prometheus_path,
    }
    exporting = _wants_export(config, env)
    if not exporting and not config.prometheus:
        return Telemetry(**options)  # the host's global providers
    if export_problem(config, env) is not None:
        return None
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import MetricReader, PeriodicExportingMetricReader
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    resource = Resource.create(_resource_attributes(config, env))
    tracer_provider = TracerProvider(resource=resource)
    readers: list[MetricReader] = []
    registry = None
    if exporting:
        kwargs = _exporter_options(env)
        span_exporter, metric_exporter = _exporters(config, env, kwargs)
        if span_exporter is not None:
            tracer_provider.add_span_processor(BatchSpanProcessor(span_exporter))
        if metric_exporter is not None:
            interval = _millis(env, "OTEL_METRIC_EXPORT_INTERVAL")
            readers.append(
                PeriodicExportingMetricReader(
                    metric_exporter,
                    export_interval_millis=60_000 if interval is None else interval,
                )
            )
    if config.prometheus:
        from opentelemetry.exporter.prometheus import PrometheusMetricReader
        from prometheus_client import CollectorRegistry

        # A registry per gateway, not prometheus_client's process-wide one: two gateways
        # in one process (tests, a host mounting two) would otherwise report each other.
        registry = CollectorRegistry()
        try:
            readers.append(PrometheusMetricReader(registry=registry))
        except TypeError:  # an exporter older than its registry argument
            from prometheus_client import REGISTRY

            registry = REGISTRY
            readers.append(PrometheusMetricReader())
    meter_provider = MeterProvider(resource=resource, metric_readers=readers, **_exemplars(env))
    return Telemetry(tracer_provider, meter_provider, registry, **options)


_EXEMPLAR_FILTERS = {
    "always_off": "AlwaysOffExemplarFilter",
    "always_on": "AlwaysOnExemplarFilter",
    "trace_based": "TraceBasedExemplarFilter",
}


def _exemplars(env: Mapping[str, str]) -> dict[str, Any]:
    """The meter provider's exemplar filter: ``OTEL_METRICS_EXEMPLAR_FILTER`` when set, else
    ``always_off`` (the SDK's default is ``trace_based``).  The Tracing layer records its
    histograms once the request's span has ended and left the context, so ``trace_based``
    never finds a sampled span there and only costs its check, three times a request."""
    import opentelemetry.sdk.metrics as sdk_metrics

    name = env.get("OTEL_METRICS_EXEMPLAR_FILTER", "").strip() or "always_off"
    if name not in _EXEMPLAR_FILTERS:
        raise ConfigError(
            f"OTEL_METRICS_EXEMPLAR_FILTER: expected one of {', '.join(sorted(_EXEMPLAR_FILTERS))},"
            f" got {name!r}"
        )
    filter_class = getattr(sdk_metrics, _EXEMPLAR_FILTERS[name], None)
    if filter_class is None:  # an SDK older than exemplars: nothing to filter
        return {}
    return {"exemplar_filter": filter_class()}


def _resource_attributes(config: TracingConfig, env: Mapping[str, str]) -> dict[str, Any]:
    attributes: dict[str, Any] = dict(config.resource_attributes)
    attributes["service.name"] = config.service_name
    for item in env.get("OTEL_RESOURCE_ATTRIBUTES", "").split(","):
        key, sep, value = item.partition("=")
        if sep and key.strip():
            attributes[key.strip()] = unquote(value.strip())
    if env.get("OTEL_SERVICE_NAME"):
        attributes["service.name"] = env["OTEL_SERVICE_NAME"]
    return attributes


def _exporter_options(env: Mapping[str, str]) -> dict[str, Any]:
    options: dict[str, Any] = {}
    headers = env.get("OTEL_EXPORTER_OTLP_HEADERS")
    if headers:
        options["headers"] = {
            unquote(k.strip()): unquote(v.strip())
            for k, sep, v in (item.partition("=") for item in headers.split(","))
            if sep
        }
    timeout = _millis(env, "OTEL_EXPORTER_OTLP_TIMEOUT")
    if timeout is not None:
        options["timeout"] = timeout / 1000  # the exporters take seconds
    return options


def _millis(env: Mapping[str, str], name: str) -> float | None:
    """A variable in milliseconds; a value that is not a positive number is a ConfigError
    naming the variable."""
    raw = env.get(name, "").strip()
    if not raw:
        return None
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not value > 0:
        raise ConfigError(f"{name}: expected a positive number of milliseconds, got {raw!r}")
    return value


def _exporters(
    config: TracingConfig, env: Mapping[str, str], options: dict[str, Any]
) -> tuple[Any, Any]:
    compression = env.get("OTEL_EXPORTER_OTLP_COMPRESSION", "").strip().lower()
    spans = metrics = None
    traces_url = _signal_endpoint(config, env, "traces")
    if traces_url and env.get("OTEL_TRACES_EXPORTER", "otlp").strip() != "none":
        if _protocol(env, "traces", config) == "grpc":
            from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (  # type: ignore[import-not-found]
                OTLPSpanExporter as GrpcSpanExporter,
            )

            spans = GrpcSpanExporter(endpoint=_grpc_endpoint(config, env, "traces"), **options)
        else:
            from opentelemetry.exporter.otlp.proto.http import Compression

            from .telemetry_otlp import LeanSpanExporter

            spans = LeanSpanExporter(
                endpoint=traces_url,
                compression=Compression.Gzip if compression == "gzip" else None,
                **options,
            )
    metrics_url = _signal_endpoint(config, env, "metrics")
    if metrics_url and env.get("OTEL_METRICS_EXPORTER", "otlp").strip() != "none":
        if _protocol(env, "metrics", config) == "grpc":
            from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import (  # type: ignore[import-not-found]
                OTLPMetricExporter as GrpcMetricExporter,
            )

            metrics = GrpcMetricExporter(endpoint=_grpc_endpoint(config, env, "metrics"), **options)
        else:
            from opentelemetry.exporter.otlp.proto.http import Compression
            from opentelemetry.exporter.otlp.proto.http.metric_exporter import (
                OTLPMetricExporter,
            )

            metrics = OTLPMetricExporter(
                endpoint=metrics_url,
                compression=Compression.Gzip if compression == "gzip" else None,
                **options,
            )
    return spans, metrics


class MetricsEndpoint:
    """``GET /metrics`` in Prometheus' text format from ``registry``; everything else goes
    to ``app``.  Outside the Tracing layer, so scrapes make no spans."""

    def __init__(self, app: App, *, registry: Any, path: str = _DEFAULTS.prometheus_path) -> None:
        from prometheus_client import make_asgi_app

        self.app = app
        self.path = path
        self.metrics = make_asgi_app(registry=registry)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] == self.path:
            await self.metrics(scope, receive, send)
            return
        await self.app(scope, receive, send)
