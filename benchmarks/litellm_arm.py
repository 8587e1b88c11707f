"""LiteLLM's proxy as the comparison arm, in its own virtual environment.

Installed on first use (``--with-litellm``) into ``benchmarks/.venv-litellm`` (gitignored),
never into the project's environment: its dependency pins are its own.  It runs offline:
``LITELLM_LOCAL_MODEL_COST_MAP=True`` reads the bundled price table instead of fetching it,
telemetry is off, and a master key stands in for its database-backed key management.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

VENV = Path(__file__).parent / ".venv-litellm"
MASTER_KEY = "sk-bench-master"
# Model names a client asks LiteLLM for; the same upstream routes as the stack arms.
MODEL = "bench"
TRANSLATED_MODEL = "bench-translated"


def litellm_bin() -> Path:
    return VENV / "bin" / "litellm"


def ensure_installed(log: object = print) -> Path:
    """The proxy's entry point, installing ``litellm[proxy]`` from PyPI when missing."""
    entry = litellm_bin()
    if entry.exists():
        return entry
    log(f"installing litellm[proxy] into {VENV} (once) ...")  # type: ignore[operator]
    subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
    subprocess.run([str(VENV / "bin" / "pip"), "install", "--quiet", "litellm[proxy]"], check=True)
    return entry


def version() -> str:
    result = subprocess.run(
        [
            str(VENV / "bin" / "python"),
            "-c",
            "import importlib.metadata as m; print(m.version('litellm'))",
        ],
        capture_output=True,
        text=True,
    )
    return result.stdout.strip() or "unknown"


def write_config(directory: Path, upstream: str) -> Path:
    """A proxy config with the benchmark's upstream as an OpenAI-compatible provider and as
    an Anthropic one (for the translated stream)."""
    upstream = upstream.rstrip("/")
    path = directory / "litellm.yaml"
    path.write_text(
        f"""\
model_list:
  - model_name: {MODEL}
    litellm_params:
      model: openai/bench
      api_base: {upstream}/v1
      api_key: bench-key
  - model_name: bench-hold
    litellm_params:
      model: openai/bench-hold
      api_base: {upstream}/v1
      api_key: bench-key
  - model_name: {TRANSLATED_MODEL}
    litellm_params:
      model: anthropic/bench
      api_base: {upstream}
      api_key: bench-key
litellm_settings:
  telemetry: false
  drop_params: true
  set_verbose: false
general_settings:
  master_key: {MASTER_KEY}
"""
    )
    return path


def command(config: Path, port: int) -> list[str]:
    return [str(litellm_bin()), "--config", str(config), "--host", "127.0.0.1", "--port", str(port)]


def environment() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI", "ANTHROPIC"))}
    env.update(
        {
            "LITELLM_LOCAL_MODEL_COST_MAP": "True",
            "LITELLM_MASTER_KEY": MASTER_KEY,
            "LITELLM_TELEMETRY": "False",
            "LITELLM_LOG": "ERROR",
            "DISABLE_ADMIN_UI": "True",
            "NO_DOCS": "True",
        }
    )
    env.pop("PYTHONPATH", None)
    env.pop("VIRTUAL_ENV", None)
    return env
