"""``[tracing] prometheus = true``: the gateway's ``/metrics`` scraped by a real Prometheus
server (Debian's ``prometheus`` package, which scripts/system-deps.sh installs), whose HTTP
API must then answer a query for the gateway's token-usage series."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import httpx
import openai
import pytest

from asgi_rotator.config import parse_config
from asgi_rotator.mock import MockUpstream
from asgi_rotator.stack import build_app
from tests.e2e.conftest import provider_config
from tests.server import free_port, serve

PROMETHEUS = shutil.which("prometheus")


@pytest.mark.skipif(
    PROMETHEUS is None,
    reason="the prometheus server is not installed (scripts/system-deps.sh installs it)",
)
def test_metrics_are_scraped_by_a_real_prometheus(mock_server: tuple[MockUpstream, str]) -> None:
    assert PROMETHEUS is not None
    config = parse_config(
        {"providers": provider_config(mock_server[1]), "tracing": {"prometheus": True}}, {}
    )
    gateway = build_app(config, environ={})
    with serve(gateway) as url, tempfile.TemporaryDirectory() as tmp:
        with openai.OpenAI(base_url=f"{url}/v1", api_key="k", max_retries=0) as client:
            client.chat.completions.create(
                model="up-chat/good", messages=[{"role": "user", "content": "count me"}]
            )
        scrape = httpx.get(f"{url}/metrics")
        assert scrape.status_code == 200
        assert "gen_ai_client_token_usage" in scrape.text
        target = url.removeprefix("http://")
        (Path(tmp) / "prometheus.yml").write_text(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
            "scrape_configs:\n"
            "  - job_name: asgi-rotator\n"
            f"    static_configs:\n      - targets: ['{target}']\n"
        )
        port = free_port()
        process = subprocess.Popen(
            [
                PROMETHEUS,
                f"--config.file={tmp}/prometheus.yml",
                f"--storage.tsdb.path={tmp}/data",
                f"--web.listen-address=127.0.0.1:{port}",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            query = 'gen_ai_client_token_usage_count{gen_ai_token_type="input"}'
            deadline = time.monotonic() + 60
            result: list[dict[str, object]] = []
            while time.monotonic() < deadline and not result:
                time.sleep(0.5)
                try:
                    answer = httpx.get(
                        f"http://127.0.0.1:{port}/api/v1/query", params={"query": query}
                    )
                except httpx.TransportError:
                    continue  # not listening yet
                if answer.status_code == 200:
                    result = answer.json()["data"]["result"]
            assert result, "Prometheus never had the gateway's token-usage series"
            (series,) = result
            labels = series["metric"]
            assert isinstance(labels, dict)
            assert labels["gen_ai_request_model"] == "good"
            assert labels["asgi_rotator_provider"] == "up-chat"
            assert labels["job"] == "asgi-rotator"
        finally:
            process.terminate()
            process.wait(10)
