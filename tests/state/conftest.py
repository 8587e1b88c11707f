from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from asgi_rotator.state import FileStore, MemoryStore, RedisStore, StateStore


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "fake_clock: a contract test that moves a fake clock; Redis expires keys on the "
        "server's clock, so test_redis.py holds its real-time twin, <name>_in_real_time",
    )


class FakeClock:
    """A clock the test moves by hand, so expiry is tested without sleeping."""

    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture(params=["memory", "file", "redis"])
async def store(
    request: pytest.FixtureRequest, clock: FakeClock, tmp_path: Path
) -> AsyncIterator[StateStore]:
    backend: StateStore
    if request.param == "memory":
        backend = MemoryStore(clock=clock)
    elif request.param == "file":
        backend = FileStore(tmp_path / "state", clock=clock)
    else:
        if request.node.get_closest_marker("fake_clock") is not None:
            pytest.skip(
                "Redis expires keys on the server's clock: "
                f"test_redis.py::{request.function.__name__}_in_real_time is this test"
            )
        backend = make_redis_store(request.getfixturevalue("redis_server"))
    async with backend:
        yield backend


def make_redis_store(url: str) -> RedisStore:
    """A store with a prefix of its own, so tests never see each other's keys."""
    return RedisStore(url, prefix=f"test-{uuid.uuid4().hex}:")
