"""Portkey's open-source gateway (``@portkey-ai/gateway``, Node.js) as a comparison arm.

Installed on first use (``--with-portkey``) with npm into ``benchmarks/.portkey`` (gitignored;
``BENCH_PORTKEY_DIR`` puts it elsewhere), at a pinned version, so every run measures the same
code.  It needs ``node`` and ``npm``; without them the harness says so and skips the arm.

Portkey takes the upstream from request headers rather than from a configuration file:
``x-portkey-provider`` names the provider's protocol (``openai``, or ``anthropic`` for the
translated path, where it turns an OpenAI Chat request into an Anthropic Messages one) and
``x-portkey-custom-host`` the upstream's base URL, which may be a loopback address.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

VERSION = "1.15.2"
PACKAGE = "@portkey-ai/gateway"
KEY = "bench-key"


def directory() -> Path:
    return Path(os.environ.get("BENCH_PORTKEY_DIR") or Path(__file__).parent / ".portkey")


def missing_tools() -> str | None:
    """Why the arm cannot run here, or None when it can."""
    absent = [tool for tool in ("node", "npm") if shutil.which(tool) is None]
    return f"{' and '.join(absent)} not found" if absent else None


def entry() -> Path:
    return directory() / "node_modules" / PACKAGE / "build" / "start-server.js"


def ensure_installed(log: object = print) -> Path:
    """The server's entry point, installing the pinned package when missing."""
    target = entry()
    installed = target.parent.parent / "package.json"
    if target.exists() and f'"version": "{VERSION}"' in installed.read_text():
        return target
    log(f"installing {PACKAGE}@{VERSION} into {directory()} (once) ...")  # type: ignore[operator]
    directory().mkdir(parents=True, exist_ok=True)
    subprocess.run(
        ["npm", "install", "--prefix", str(directory()), "--no-audit", "--no-fund"]
        + ["--loglevel", "error", f"{PACKAGE}@{VERSION}"],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    return target


def version() -> str:
    return VERSION


def command(port: int) -> list[str]:
    return ["node", str(entry()), f"--port={port}", "--headless"]


def environment() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI", "ANTHROPIC"))}
    env["NODE_ENV"] = "production"
    return env


def headers(upstream: str, *, translated: bool) -> list[tuple[str, str]]:
    """The request headers that point Portkey at the benchmark upstream."""
    provider = "anthropic" if translated else "openai"
    return [
        ("x-portkey-provider", provider),
        ("x-portkey-custom-host", upstream.rstrip("/") + "/v1"),
        ("x-api-key", KEY),  # Anthropic's header, for the translated path
    ]
