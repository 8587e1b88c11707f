"""examples/otel-collector is not run in CI (it needs Docker), but its files are parsed here,
so what it promises stays consistent with the gateway and with itself; and the export
settings those files use are checked as serve reads them."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from asgi_rotator.config import ConfigError, TracingConfig, load_config
from asgi_rotator.telemetry import telemetry_from_config

HERE = Path("examples/otel-collector")


def test_the_collector_pipelines_use_only_what_is_declared() -> None:
    collector = yaml.safe_load((HERE / "collector.yaml").read_text())
    assert "http" in collector["receivers"]["otlp"]["protocols"]
    for name, pipeline in collector["service"]["pipelines"].items():
        assert name in ("traces", "metrics")
        for kind in ("receivers", "processors", "exporters"):
            for component in pipeline.get(kind, []):
                assert component in collector[kind], f"{name}: {component} is not declared"
    jaeger = collector["exporters"]["otlp/jaeger"]["endpoint"]
    assert jaeger.split(":")[0] == "jaeger"


def test_the_compose_file_wires_the_gateway_to_the_collector() -> None:
    compose = yaml.safe_load((HERE / "compose.yaml").read_text())
    services = compose["services"]
    assert set(services) == {"gateway", "collector", "jaeger"}
    env = services["gateway"]["environment"]
    assert env["OTEL_EXPORTER_OTLP_ENDPOINT"] == "http://collector:4318"
    assert env["OTEL_EXPORTER_OTLP_PROTOCOL"] == "http/protobuf"
    collector_config = services["collector"]["volumes"][0].split(":")[0]
    assert (HERE / collector_config).resolve() == (HERE / "collector.yaml").resolve()
    gateway_config = services["gateway"]["volumes"][0].split(":")[0]
    assert (HERE / gateway_config).exists()


def test_the_gateway_config_is_valid_and_exports_with_the_compose_environment() -> None:
    config = load_config(HERE / "gateway.toml", {})
    assert config.tracing.prometheus
    compose = yaml.safe_load((HERE / "compose.yaml").read_text())
    env = compose["services"]["gateway"]["environment"]
    telemetry = telemetry_from_config(config.tracing, env)
    assert telemetry is not None and telemetry.tracer_provider is not None
    telemetry.shutdown()


def test_a_bad_otel_number_is_a_config_error_naming_the_variable() -> None:
    config = TracingConfig(endpoint="http://127.0.0.1:4318")
    with pytest.raises(ConfigError, match=r"OTEL_METRIC_EXPORT_INTERVAL.*'soon'"):
        telemetry_from_config(config, {"OTEL_METRIC_EXPORT_INTERVAL": "soon"})


def _exemplars_exported(env: dict[str, str]) -> int:
    """Exemplars on a histogram point recorded with a sampled span in the context, as the
    collector receives them from the providers ``serve`` builds."""
    from opentelemetry import trace

    from tests.otlp_receiver import receiving

    with receiving() as receiver:
        telemetry = telemetry_from_config(TracingConfig(endpoint=receiver.url), env)
        assert telemetry is not None
        histogram = telemetry.meter_provider.get_meter("test").create_histogram("test.seconds")
        tracer = telemetry.tracer_provider.get_tracer("test")
        with tracer.start_as_current_span("request"):
            assert trace.get_current_span().get_span_context().trace_flags.sampled
            histogram.record(0.5, {"k": "v"})
        telemetry.shutdown()  # flushes the metrics to the receiver
        points = receiver.metrics()["test.seconds"]
    return sum(len(point.exemplars) for _, point in points)


def test_exemplars_are_off_unless_the_standard_variable_asks_for_them() -> None:
    # Off by default: the Tracing layer records after its span has left the context, so the
    # SDK's trace_based filter would only cost its check.
    assert _exemplars_exported({}) == 0
    assert _exemplars_exported({"OTEL_METRICS_EXEMPLAR_FILTER": "always_on"}) == 1
    assert _exemplars_exported({"OTEL_METRICS_EXEMPLAR_FILTER": "trace_based"}) == 1


def test_a_bad_exemplar_filter_is_a_config_error_naming_the_variable() -> None:
    config = TracingConfig(endpoint="http://127.0.0.1:4318")
    with pytest.raises(ConfigError, match=r"OTEL_METRICS_EXEMPLAR_FILTER.*'sometimes'"):
        telemetry_from_config(config, {"OTEL_METRICS_EXEMPLAR_FILTER": "sometimes"})
