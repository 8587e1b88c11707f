"""Operating the gateway: the per-request log line, x-request-id, /healthz and /readyz."""

from __future__ import annotations

import errno
import logging
import os
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest

from asgi_rotator.config import parse_config
from asgi_rotator.mock import Fault, MockUpstream
from asgi_rotator.stack import build_app
from tests.e2e.conftest import provider_config, wait_for
from tests.redis_server import start_redis, stop_redis
from tests.server import free_port, serve

CANARY = "sk-canary-0f9e8d7c6b5a49382716"
REQUESTS_LOGGER = "asgi_rotator.requests"


@pytest.fixture(scope="module")
def canary_gateway(mock_server: tuple[MockUpstream, str]) -> Iterator[str]:
    """Two targets in a group; the first provider's key is the canary."""
    providers = provider_config(mock_server[1])
    providers["up-chat"]["keys"] = [CANARY]
    config = parse_config(
        {
            "providers": providers,
            "groups": {"pair": {"targets": ["up-chat/model-x", "up-anthropic/model-y"]}},
            "cooldown": {"max_attempts": 1},
        },
        {},
    )
    with serve(build_app(config, environ={})) as url:
        yield url


def _request_records(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == REQUESTS_LOGGER]


def test_a_failed_request_logs_one_warning_with_its_attempts_and_no_secret(
    canary_gateway: str, mock: MockUpstream, caplog: pytest.LogCaptureFixture
) -> None:
    # Every upstream fails, and the provider's message echoes the key it was sent.
    mock.add_fault(Fault(status=500, message=f"internal error for key {CANARY}", times=None))
    caplog.set_level(logging.INFO)
    response = httpx.post(
        f"{canary_gateway}/v1/chat/completions",
        json={"model": "pair", "messages": [{"role": "user", "content": "secret question"}]},
    )
    assert response.status_code >= 500
    request_id = response.headers["x-request-id"]
    records = wait_for(lambda: _request_records(caplog))
    assert len(records) == 1
    (record,) = records
    assert record.levelno == logging.WARNING
    summary = record.request  # type: ignore[attr-defined]
    assert summary["request_id"] == request_id
    assert summary["protocol"] == "openai_chat"
    assert summary["model"] == "pair"
    attempts = summary["attempts"]
    assert [a["target"] for a in attempts] == ["up-chat/model-x", "up-anthropic/model-y"]
    assert [a["credential"] for a in attempts] == ["up-chat#0", "up-anthropic#0"]
    assert all(a["kind"] == "server_error" and a["status"] == 500 for a in attempts)
    assert all(a["duration"] is not None for a in attempts)
    line = record.getMessage()
    assert request_id in line and "up-chat/model-x" in line and "up-anthropic/model-y" in line
    # Nothing secret and no content, anywhere in what was logged.
    everything = caplog.text + repr([r.__dict__ for r in caplog.records])
    assert CANARY not in everything
    assert "secret question" not in everything


def test_a_request_that_failed_over_logs_a_warning(
    canary_gateway: str, mock: MockUpstream, caplog: pytest.LogCaptureFixture
) -> None:
    mock.add_fault(Fault(status=503, model="model-x", times=None))
    caplog.set_level(logging.WARNING)
    with openai.OpenAI(base_url=f"{canary_gateway}/v1", api_key="k", max_retries=0) as client:
        raw = client.chat.completions.with_raw_response.create(
            model="pair", messages=[{"role": "user", "content": "Hi"}]
        )
    assert raw.http_response.status_code == 200
    (record,) = wait_for(lambda: _request_records(caplog))
    assert record.levelno == logging.WARNING
    summary = record.request  # type: ignore[attr-defined]
    assert summary["request_id"] == raw.headers["x-request-id"]
    assert [a["kind"] for a in summary["attempts"]] == ["overloaded", None]


def test_a_healthy_request_logs_info_only_when_asked(
    canary_gateway: str, mock: MockUpstream, caplog: pytest.LogCaptureFixture
) -> None:
    body = {"model": "up-anthropic/model-y", "messages": [{"role": "user", "content": "Hi"}]}
    caplog.set_level(logging.INFO)
    loud = httpx.post(f"{canary_gateway}/v1/chat/completions", json=body)
    (record,) = wait_for(lambda: _request_records(caplog))
    assert record.levelno == logging.INFO
    assert record.request["request_id"] == loud.headers["x-request-id"]  # type: ignore[attr-defined]
    # Not asked: nothing for a healthy request.  (The level stays put from here on, so a
    # line written after the answer went out is held to it too.)
    caplog.set_level(logging.WARNING)
    quiet = httpx.post(f"{canary_gateway}/v1/chat/completions", json=body)
    assert quiet.status_code == 200 and quiet.headers["x-request-id"].startswith("req_")
    failed = httpx.post(f"{canary_gateway}/v1/chat/completions", json={**body, "model": "none"})
    wait_for(lambda: len(_request_records(caplog)) == 2)
    ids = [r.request["request_id"] for r in _request_records(caplog)]  # type: ignore[attr-defined]
    assert ids == [loud.headers["x-request-id"], failed.headers["x-request-id"]]


def test_health_and_readiness_spend_no_provider_call(
    canary_gateway: str, mock: MockUpstream
) -> None:
    assert httpx.get(f"{canary_gateway}/healthz").json() == {"status": "ok"}
    ready = httpx.get(f"{canary_gateway}/readyz")
    assert ready.status_code == 200 and ready.json() == {"status": "ready"}
    assert mock.requests == []


def test_probes_need_no_inbound_key(mock_server: tuple[MockUpstream, str]) -> None:
    config = parse_config(
        {"providers": provider_config(mock_server[1]), "server": {"inbound_keys": ["inbound-key-7c1e5a9b3d"]}}, {}
    )
    with serve(build_app(config, environ={})) as url:
        assert httpx.get(f"{url}/healthz").status_code == 200
        assert httpx.get(f"{url}/readyz").status_code == 200
        assert httpx.get(f"{url}/v1/models").status_code == 401


def test_readyz_follows_a_redis_store_that_stops_and_starts_again(
    mock_server: tuple[MockUpstream, str], tmp_path: Path
) -> None:
    port = free_port()
    redis = start_redis(port, tmp_path)
    config = parse_config(
        {
            "providers": provider_config(mock_server[1]),
            "state": {"backend": "redis", "url": f"redis://127.0.0.1:{port}/0"},
        },
        {},
    )
    try:
        with serve(build_app(config, environ={})) as url:
            assert httpx.get(f"{url}/readyz").status_code == 200
            stop_redis(redis)
            down = httpx.get(f"{url}/readyz")
            assert down.status_code == 503
            reason = down.json()["reason"]
            assert "RedisStore" in reason and f"127.0.0.1:{port}" in reason
            # Liveness does not depend on the store: the process is fine.
            assert httpx.get(f"{url}/healthz").status_code == 200
            redis = start_redis(port, tmp_path)
            assert wait_for(lambda: httpx.get(f"{url}/readyz").status_code == 200, timeout=10), (
                "readyz did not recover once Redis was back"
            )
    finally:
        stop_redis(redis)


def test_readyz_reports_a_state_directory_that_cannot_be_written(
    mock_server: tuple[MockUpstream, str], tmp_path: Path
) -> None:
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("a file where the state directory should be")
    config = parse_config(
        {
            "providers": provider_config(mock_server[1]),
            "state": {"backend": "file", "path": str(blocker)},
        },
        {},
    )
    with serve(build_app(config, environ={})) as url:
        down = httpx.get(f"{url}/readyz")
        assert down.status_code == 503
        assert "FileStore" in down.json()["reason"]


def test_a_connection_failure_names_the_provider_host_and_reason(
    mock_server: tuple[MockUpstream, str],
) -> None:
    port = free_port()
    providers = {
        "up-dead": {
            "protocol": "openai_chat",
            "base_url": f"http://127.0.0.1:{port}/v1",
            "keys": [CANARY],
        }
    }
    config = parse_config({"providers": providers, "cooldown": {"max_attempts": 1}}, {})
    with (
        serve(build_app(config, environ={})) as url,
        openai.OpenAI(base_url=f"{url}/v1", api_key="k", max_retries=0) as client,
        pytest.raises(openai.APIStatusError) as caught,
    ):
        client.chat.completions.create(
            model="up-dead/m", messages=[{"role": "user", "content": "Hi"}]
        )
    assert caught.value.status_code == 502
    message = str(caught.value)
    assert "up-dead" in message and f"127.0.0.1:{port}" in message
    assert os.strerror(errno.ECONNREFUSED) in message
    assert CANARY not in message


def test_a_client_cannot_forge_a_log_line(
    canary_gateway: str, mock: MockUpstream, caplog: pytest.LogCaptureFixture
) -> None:
    """A path or a model name with a newline in it stays on its one line."""
    caplog.set_level(logging.WARNING)
    forged = "\nWARNING asgi_rotator.requests: request req_forged"
    by_model = httpx.post(
        f"{canary_gateway}/v1/chat/completions",
        json={"model": f"nope{forged}", "messages": [{"role": "user", "content": "Hi"}]},
    )
    by_path = httpx.get(f"{canary_gateway}/v1/nothing%0AWARNING%20forged")
    assert by_model.status_code >= 400 and by_path.status_code == 404
    records = wait_for(lambda: len(_request_records(caplog)) == 2 and _request_records(caplog))
    assert len(records) == 2
    assert all("\n" not in record.getMessage() for record in records)
