"""The Dockerfile and compose.yaml: built and run where docker works; elsewhere, what they
name must exist (the entry point, the files copied, the extras installed)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import tomllib
import uuid
from importlib import import_module
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCKERFILE = (ROOT / "Dockerfile").read_text()
COMPOSE = (ROOT / "compose.yaml").read_text()
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


def _instructions(name: str) -> list[str]:
    """The arguments of every ``name`` instruction, continuation lines joined."""
    joined = re.sub(r"\\\n\s*", " ", DOCKERFILE)
    return [
        line.split(None, 1)[1] if " " in line else ""
        for line in joined.splitlines()
        if line.split(None, 1)[:1] == [name]
    ]


def test_the_base_is_a_slim_python() -> None:
    (base,) = _instructions("FROM")
    assert re.fullmatch(r"python:3\.\d+-slim", base), base
    required = PYPROJECT["project"]["requires-python"].removeprefix(">=")
    assert tuple(map(int, base[7:].split("-")[0].split("."))) >= tuple(
        map(int, required.split("."))
    )


def test_it_runs_as_a_user_that_is_not_root() -> None:
    users = _instructions("USER")
    assert users and users[-1] not in ("root", "0")
    assert re.search(rf"useradd\b.*\b{re.escape(users[-1])}\b", DOCKERFILE)


def test_the_entry_point_is_asgi_rotator_serve_and_exists() -> None:
    (entry,) = _instructions("ENTRYPOINT")
    assert json.loads(entry) == ["asgi-rotator", "serve"]
    target = PYPROJECT["project"]["scripts"]["asgi-rotator"]
    module, _, function = target.partition(":")
    assert callable(getattr(import_module(module), function))


def test_the_files_it_copies_and_the_extras_it_installs_exist() -> None:
    for copy in _instructions("COPY"):
        *sources, _destination = copy.split()
        for source in sources:
            assert (ROOT / source).exists(), source
    extras = set(PYPROJECT["project"]["optional-dependencies"])
    for installed in re.findall(r"pip install \"\.\[([^\]]+)\]\"", DOCKERFILE):
        assert set(installed.split(",")) <= extras, installed
    assert re.search(r"pip install \"\.\[[^\]]*\bserve\b", DOCKERFILE)


def test_it_listens_on_all_interfaces_behind_inbound_keys_and_documents_its_settings() -> None:
    env = " ".join(_instructions("ENV"))
    assert "ASGI_ROTATOR__SERVER__HOST=0.0.0.0" in env
    assert "ASGI_ROTATOR__SERVER__INBOUND_KEYS" in env and "GATEWAY_KEY" in env
    for documented in ("--config", "GATEWAY_KEY", "OPENAI_API_KEY", "ASGI_ROTATOR__", "/readyz"):
        assert documented in DOCKERFILE


def test_compose_runs_the_gateway_with_redis_as_its_state_store() -> None:
    assert re.search(r"^  gateway:\n    build: \.$", COMPOSE, re.M)
    assert re.search(r"^  redis:\n    image: redis:7", COMPOSE, re.M)
    assert "ASGI_ROTATOR__STATE__BACKEND: redis" in COMPOSE
    assert "ASGI_ROTATOR__STATE__URL: redis://redis:6379/0" in COMPOSE
    assert "condition: service_healthy" in COMPOSE


def _docker_works() -> bool:
    if shutil.which("docker") is None:
        return False
    try:
        return subprocess.run(["docker", "info"], capture_output=True, timeout=20).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


@pytest.mark.slow
@pytest.mark.skipif(not _docker_works(), reason="no working docker here")
def test_the_image_builds_and_its_command_runs() -> None:
    tag = f"asgi-rotator-test:{uuid.uuid4().hex[:12]}"
    try:
        subprocess.run(["docker", "build", "-q", "-t", tag, str(ROOT)], check=True, timeout=900)
        version = subprocess.run(
            ["docker", "run", "--rm", tag, "--version"],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert version.returncode == 0 and version.stdout.startswith("asgi-rotator ")
        user = subprocess.run(
            ["docker", "run", "--rm", "--entrypoint", "id", tag, "-u"],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert user.stdout.strip() not in ("", "0")
    finally:
        subprocess.run(["docker", "rmi", "-f", tag], capture_output=True, timeout=120)
