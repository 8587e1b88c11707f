"""``asgi-rotator serve`` and tracing: the standard OTEL_* variables alone turn OTLP export
on, and when the SDK is missing, serve says so in one line and serves untraced."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import httpx
import openai

from tests.otlp_receiver import receiving, wait_for_spans
from tests.server import free_port

# Blocks the SDK's import the way an environment without the extra would fail it.
WITHOUT_SDK = (
    "import sys; sys.modules['opentelemetry.sdk'] = None; "
    "from asgi_rotator.cli import main; raise SystemExit(main(sys.argv[1:]))"
)


@dataclass
class Served:
    url: str
    stderr: str = ""  # once the server has stopped


@contextmanager
def served(env: dict[str, str], *, without_sdk: bool = False) -> Iterator[Served]:
    port = free_port()
    base = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("OTEL_", "ASGI_ROTATOR__")) and not k.endswith("_API_KEY")
    }
    command = (
        [sys.executable, "-c", WITHOUT_SDK]
        if without_sdk
        else [sys.executable, "-m", "asgi_rotator.cli"]
    )
    process = subprocess.Popen(
        [*command, "serve", "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**base, **env},
        text=True,
    )
    result = Served(f"http://127.0.0.1:{port}")
    url = result.url
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        assert f"listening on {url}" in line
        for _ in range(200):
            try:
                httpx.get(f"{url}/healthz", timeout=1)
                break
            except httpx.TransportError:
                time.sleep(0.05)
        yield result
    finally:
        process.terminate()
        _out, result.stderr = process.communicate(timeout=15)


def test_serve_exports_over_otlp_from_the_standard_variables() -> None:
    with receiving() as receiver:
        env = {
            "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.url,
            "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
            "OTEL_SERVICE_NAME": "gateway-under-test",
            "OTEL_RESOURCE_ATTRIBUTES": "deployment.environment=ci",
            "OTEL_BSP_SCHEDULE_DELAY": "100",
            "OTEL_METRIC_EXPORT_INTERVAL": "200",
        }
        with (
            served(env) as gateway,
            openai.OpenAI(base_url=f"{gateway.url}/v1", api_key="k", max_retries=0) as client,
        ):
            client.chat.completions.create(
                model="gpt-mock", messages=[{"role": "user", "content": "hi"}]
            )
            spans = wait_for_spans(receiver, lambda s: any(x.kind == "CLIENT" for x in s))
            deadline = time.monotonic() + 10
            while "gen_ai.client.token.usage" not in receiver.metrics():
                assert time.monotonic() < deadline, "no metrics exported"
                time.sleep(0.05)
        (server,) = [s for s in spans if s.attributes.get("http.route") == "/v1/chat/completions"]
        assert server.resource["service.name"] == "gateway-under-test"
        assert server.resource["deployment.environment"] == "ci"
        (attempt,) = [s for s in spans if s.kind == "CLIENT"]
        assert attempt.name == "chat gpt-mock"
        assert attempt.parent_id == server.span_id


def test_serve_says_in_one_line_when_the_sdk_is_missing() -> None:
    env = {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:9"}
    with served(env, without_sdk=True) as gateway:
        assert httpx.get(f"{gateway.url}/healthz").status_code == 200  # serving all the same
    lines = gateway.stderr.strip().splitlines()
    notes = [line for line in lines if "OpenTelemetry SDK" in line]
    assert len(notes) == 1
    assert notes[0].startswith("asgi-rotator: ")
    assert "asgi-rotator[otel]" in notes[0]
