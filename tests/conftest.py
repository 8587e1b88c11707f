from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

FIXTURES = Path(__file__).parent / "fixtures"


def load_fixture(protocol: str, name: str) -> Any:
    """A JSON fixture, or the raw bytes of any other fixture file."""
    path = FIXTURES / protocol / name
    if path.suffix == ".json":
        return json.loads(path.read_text())
    return path.read_bytes()


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """A real redis-server for the session; its URL."""
    from tests.redis_server import redis_server as run

    yield from run(tmp_path_factory)
