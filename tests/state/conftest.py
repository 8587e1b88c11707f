from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from asgi_rotator.state import FileStore, MemoryStore, StateStore


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


@pytest.fixture(params=["memory", "file"])
async def store(
    request: pytest.FixtureRequest, clock: FakeClock, tmp_path: Path
) -> AsyncIterator[StateStore]:
    backend: StateStore
    if request.param == "memory":
        backend = MemoryStore(clock=clock)
    else:
        backend = FileStore(tmp_path / "state", clock=clock)
    async with backend:
        yield backend
