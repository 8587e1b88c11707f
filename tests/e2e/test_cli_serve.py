"""``asgi-rotator serve`` options, run as a user runs them: a real process on loopback."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from tests.server import free_port

KEY_VARIABLES = ("OPENAI_API_KEY", "ANTHROPIC_API_KEY", "GEMINI_API_KEY", "GOOGLE_API_KEY")
CHAT = {"model": "claude-mock", "messages": [{"role": "user", "content": "Hi"}]}


def _env() -> dict[str, str]:
    return {
        k: v
        for k, v in os.environ.items()
        if k not in KEY_VARIABLES and not k.startswith("ASGI_ROTATOR__")
    }


class Served:
    def __init__(self, process: subprocess.Popen[str], line: str, log: Path) -> None:
        self.process = process
        self.line = line
        self.log = log
        found = re.search(r"listening on (http://\S+?:\d+)", line)
        assert found, line
        self.url = found.group(1)

    def stop(self) -> str:
        """Stop the server; everything it logged."""
        if self.process.poll() is None:
            self.process.terminate()
        self.process.wait(15)
        return self.log.read_text()


@contextmanager
def serving(tmp_path: Path, *options: str, module: str = "asgi_rotator") -> Iterator[Served]:
    log = tmp_path / "stderr.log"
    with log.open("w") as stderr:
        process = subprocess.Popen(
            [sys.executable, "-m", module, "serve", "--port", str(free_port()), *options],
            stdout=subprocess.PIPE,
            stderr=stderr,
            env=_env(),
            text=True,
        )
    try:
        assert process.stdout is not None
        served = Served(process, process.stdout.readline(), log)
        yield served
    finally:
        if process.poll() is None:
            process.terminate()
        process.wait(15)
        if process.stdout is not None:
            process.stdout.close()


def test_version_from_the_module_and_the_subcommand() -> None:
    for argv in (["--version"], ["serve", "--version"]):
        out = subprocess.run(
            [sys.executable, "-m", "asgi_rotator", *argv], capture_output=True, text=True
        )
        assert out.returncode == 0
        assert re.fullmatch(r"asgi-rotator \d+\.\d+\.\d+\S*\n", out.stdout), out.stdout


def test_the_listening_line_comes_once_the_port_is_bound(tmp_path: Path) -> None:
    """``python -m asgi_rotator`` is the command; the moment it says it listens, a request
    gets through, with no retry."""
    with serving(tmp_path) as served:
        assert "built-in mock provider" in served.line
        response = httpx.post(f"{served.url}/v1/chat/completions", json=CHAT, timeout=10)
        assert response.status_code == 200
        assert response.headers["x-request-id"].startswith("req_")


def test_a_busy_port_is_one_line_and_status_1() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        out = subprocess.run(
            [sys.executable, "-m", "asgi_rotator", "serve", "--port", str(port)],
            capture_output=True,
            text=True,
            env=_env(),
            timeout=30,
        )
    assert out.returncode == 1
    assert out.stdout == ""
    lines = out.stderr.splitlines()
    assert len(lines) == 1, out.stderr
    assert f"cannot listen on 127.0.0.1:{port}" in lines[0]
    assert "in use" in lines[0].lower()


def test_default_log_level_is_quiet_for_healthy_requests_and_warns_for_failed_ones(
    tmp_path: Path,
) -> None:
    with serving(tmp_path) as served:
        assert httpx.post(f"{served.url}/v1/chat/completions", json=CHAT).status_code == 200
        failed = httpx.post(
            f"{served.url}/v1/chat/completions", json={**CHAT, "model": "no-such-model"}
        )
        assert failed.status_code == 404
        log = served.stop()
    request_lines = [line for line in log.splitlines() if " request req_" in line]
    assert len(request_lines) == 1, log
    assert "WARNING" in request_lines[0]
    assert failed.headers["x-request-id"] in request_lines[0]


def test_log_level_info_writes_a_line_per_request(tmp_path: Path) -> None:
    with serving(tmp_path, "--log-level", "info") as served:
        ok = httpx.post(f"{served.url}/v1/chat/completions", json=CHAT)
        log = served.stop()
    request_lines = [line for line in log.splitlines() if " request req_" in line]
    assert len(request_lines) == 1, log
    assert "INFO" in request_lines[0] and ok.headers["x-request-id"] in request_lines[0]
    assert "model=claude-mock" in request_lines[0]


def test_access_log_on_and_off_and_never_a_query_key(tmp_path: Path) -> None:
    secret = "AIza-canary-query-key"
    for flag, expected in (("--access-log", True), ("--no-access-log", False)):
        with serving(tmp_path, flag) as served:
            httpx.get(f"{served.url}/v1beta/models", params={"key": secret})
            log = served.stop()
        assert ('"GET /v1beta/models?key=***' in log) is expected, log
        assert secret not in log


def test_log_format_json_writes_one_object_per_line(tmp_path: Path) -> None:
    with serving(tmp_path, "--log-format", "json", "--access-log") as served:
        failed = httpx.post(
            f"{served.url}/v1/chat/completions", json={**CHAT, "model": "no-such-model"}
        )
        log = served.stop()
    records = [json.loads(line) for line in log.splitlines() if line.strip()]
    assert records, log
    assert all({"time", "level", "logger", "message"} <= set(r) for r in records)
    (request,) = [r for r in records if r["logger"] == "asgi_rotator.requests"]
    assert request["level"] == "warning"
    assert request["request_id"] == failed.headers["x-request-id"]
    assert request["status"] == 404 and request["protocol"] == "openai_chat"
    assert any(r["logger"] == "uvicorn.access" for r in records)


def test_workers_share_one_port(tmp_path: Path) -> None:
    with serving(tmp_path, "--workers", "2") as served:
        assert "2 workers" in served.line and "per worker" in served.line
        with httpx.Client(timeout=30) as client:
            answers = [
                client.post(f"{served.url}/v1/chat/completions", json=CHAT) for _ in range(4)
            ]
        assert all(a.status_code == 200 for a in answers)


def test_workers_must_be_at_least_one() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "asgi_rotator", "serve", "--workers", "0"],
        capture_output=True,
        text=True,
        env=_env(),
    )
    assert out.returncode == 2 and "--workers" in out.stderr and "Traceback" not in out.stderr


def test_an_unknown_log_level_is_refused() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "asgi_rotator", "serve", "--log-level", "loud"],
        capture_output=True,
        text=True,
    )
    assert out.returncode == 2 and "--log-level" in out.stderr
