"""Every code block in README.md runs, against `asgi-rotator serve` with its built-in mock.

A block is run by its language:

* ``bash``: the opening block's two commands are the install-and-serve command (run whole, in
  a fresh virtual environment made from a copy of the repository) and the test command (which
  ``.ci/run`` must run exactly); any other line runs in bash against the served mock, with the
  README's address replaced by the test server's, and must exit 0 without an error answer.
* ``python``: runs in a fresh interpreter against the served mock, in a folder holding the
  README's configuration as ``gateway.toml``; an ``app`` it defines must start, answer and
  stop under its lifespan.
* ``toml``: a configuration that ``check-config`` would pass.

A block in any other language fails here until it has a runner, so the README stays true.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from asgi_rotator.config import load_config
from tests.server import free_port

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()
ADDRESS = "127.0.0.1:8080"
KEY_VARIABLES = ("OPENAI_API_KEY", "ANTHROPIC_API_KEY", "GEMINI_API_KEY", "GOOGLE_API_KEY")
# For blocks that configure real providers: present, and never sent anywhere.
FAKE_KEYS = {name: "sk-readme-test" for name in (*KEY_VARIABLES, "OPENROUTER_API_KEY")}

_FENCE = re.compile(r"^```(\w*)\n(.*?)^```$", re.MULTILINE | re.DOTALL)


def _blocks() -> list[tuple[str, str, int]]:
    return [
        (m.group(1), m.group(2), README.count("\n", 0, m.start()) + 1)
        for m in _FENCE.finditer(README)
    ]


BLOCKS = _blocks()
INSTALL, TEST_COMMAND = BLOCKS[0][1].strip().splitlines()


def _clean_env() -> dict[str, str]:
    return {
        k: v
        for k, v in os.environ.items()
        if k not in KEY_VARIABLES and not k.startswith("ASGI_ROTATOR__")
    }


@pytest.fixture(scope="module")
def served() -> Iterator[str]:
    """``asgi-rotator serve`` with no keys, as the README's first command leaves it."""
    port = free_port()
    binary = Path(sys.executable).parent / "asgi-rotator"
    process = subprocess.Popen(
        [str(binary), "serve", "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env=_clean_env(),
        text=True,
    )
    try:
        assert process.stdout is not None
        assert "listening on" in process.stdout.readline()
        _wait_healthy(f"http://127.0.0.1:{port}")
        yield f"127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait(10)
        if process.stdout is not None:
            process.stdout.close()


def _wait_healthy(url: str) -> None:
    for _ in range(400):
        try:
            httpx.get(f"{url}/healthz", timeout=1)
            return
        except httpx.TransportError:
            time.sleep(0.05)
    raise AssertionError(f"nothing answered at {url}")


def test_the_readme_opens_with_the_two_commands() -> None:
    assert BLOCKS[0][0] == "bash"
    assert INSTALL.endswith("asgi-rotator serve")
    assert "pip install" in INSTALL and "pytest" in TEST_COMMAND


def test_ci_runs_the_readme_test_command_exactly() -> None:
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    assert TEST_COMMAND in ci


@pytest.mark.slow
def test_the_install_command_installs_and_serves(tmp_path: Path) -> None:
    """The first command, whole, on a copy of the repository: a new virtual environment,
    the install, and ``asgi-rotator serve`` answering with the mock."""
    copy = tmp_path / "repo"
    files = subprocess.run(
        ["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True
    ).stdout.split(b"\0")
    if not any(files):
        pytest.skip("not a git checkout")
    for name in filter(None, files):
        source = ROOT / name.decode()
        if source.is_file():
            target = copy / name.decode()
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)
    port = free_port()
    env = _clean_env() | {"ASGI_ROTATOR__SERVER__PORT": str(port)}
    env.pop("VIRTUAL_ENV", None)
    process = subprocess.Popen(
        ["bash", "-c", INSTALL],
        cwd=copy,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env=env,
        text=True,
        start_new_session=True,
    )
    output: list[str] = []
    try:
        assert process.stdout is not None
        for line in process.stdout:
            output.append(line)
            if "listening on" in line:
                break
        else:
            raise AssertionError("the install command ended without serving:\n" + "".join(output))
        assert f"http://127.0.0.1:{port}" in output[-1]
        _wait_healthy(f"http://127.0.0.1:{port}")
        answer = httpx.post(
            f"http://127.0.0.1:{port}/v1/chat/completions",
            json={"model": "claude-mock", "messages": [{"role": "user", "content": "Hi"}]},
        )
        assert "You said: Hi" in answer.json()["choices"][0]["message"]["content"]
    finally:
        os.killpg(process.pid, 15)
        process.wait(10)
        if process.stdout is not None:
            process.stdout.close()


RUNNABLE = [(lang, code, line) for lang, code, line in BLOCKS[1:]]


@pytest.mark.parametrize(
    ("lang", "code", "line"), RUNNABLE, ids=[f"line{line}-{lang}" for lang, _, line in RUNNABLE]
)
def test_readme_block_runs(
    lang: str, code: str, line: int, served: str, tmp_path: Path
) -> None:
    code = code.replace(ADDRESS, served)
    if lang == "bash":
        _run_bash(code, tmp_path)
    elif lang == "python":
        _run_python(code, tmp_path)
    elif lang == "toml":
        path = tmp_path / "gateway.toml"
        path.write_text(code)
        load_config(path, FAKE_KEYS, check_secrets=True)
    else:
        raise AssertionError(f"README.md line {line}: no runner for ```{lang} blocks")


def _run_bash(code: str, cwd: Path) -> None:
    done = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", code],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
        env=_clean_env() | {"PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"},
    )
    assert done.returncode == 0, done.stderr
    try:
        answer = json.loads(done.stdout)
    except ValueError:
        return
    assert not (isinstance(answer, dict) and "error" in answer), done.stdout


_APP_CHECK = """
if "app" in globals():
    from starlette.testclient import TestClient

    with TestClient(app) as _client:  # lifespan runs: startup, then shutdown
        _prefix = "/llm" if '"/llm"' in _SOURCE else ""
        _answer = _client.get(_prefix + "/v1/models")
        assert _answer.status_code == 200, _answer.text
"""


def _run_python(code: str, cwd: Path) -> None:
    toml = next(c for lang, c, _ in BLOCKS if lang == "toml")
    (cwd / "gateway.toml").write_text(toml)
    script = f"_SOURCE = {code!r}\n" + code + textwrap.dedent(_APP_CHECK)
    done = subprocess.run(
        [sys.executable, "-c", script],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        env=_clean_env() | FAKE_KEYS | {"PYTHONPATH": str(ROOT)},
    )
    assert done.returncode == 0, done.stderr
