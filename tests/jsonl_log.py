"""Reading a JSON-lines log the gateway may be appending to at that moment.

A line is one ``write`` (``asgi_rotator/jsonl.py``), but a reader in another process can
still see a write half done: only lines that end with their newline are records yet."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def complete_lines(log: Path) -> list[str]:
    if not log.exists():
        return []
    text = log.read_text(errors="replace")
    return text.splitlines()[: text.count("\n")]


def records(log: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in complete_lines(log)]
