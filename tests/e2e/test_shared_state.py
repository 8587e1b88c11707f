"""Two gateway workers behind one Redis: what one learns, the other knows."""

from __future__ import annotations

from collections.abc import Iterator

import openai
import pytest

from asgi_rotator.config import parse_config
from asgi_rotator.mock import Fault, MockUpstream
from asgi_rotator.stack import build_app
from tests.server import serve


@pytest.fixture
def workers(mock_server: tuple[MockUpstream, str], redis_server: str) -> Iterator[tuple[str, str]]:
    mock_url = mock_server[1]
    config = parse_config(
        {
            "providers": {
                "up-chat": {
                    "protocol": "openai_chat",
                    "base_url": f"{mock_url}/v1",
                    "keys": ["key-a", "key-b"],
                }
            },
            "state": {"backend": "redis", "url": redis_server},
        },
        {},
    )
    with (
        serve(build_app(config, environ={})) as first,
        serve(build_app(config, environ={})) as second,
    ):
        yield first, second


def client(base_url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{base_url}/v1", api_key="client", max_retries=0)


def test_a_key_cooled_on_one_worker_is_skipped_by_the_other(
    workers: tuple[str, str], mock: MockUpstream
) -> None:
    first, second = workers
    mock.add_fault(Fault(status=429, retry_after=60, key="key-a", times=None))
    with client(first) as one:
        # Round robin is shared too, so key-a comes up within two requests; its 429 is
        # retried on key-b and cools key-a for 60 s in Redis.
        for _ in range(2):
            one.chat.completions.create(
                model="up-chat/m", messages=[{"role": "user", "content": "hi"}]
            )
    assert [r.key for r in mock.requests].count("key-a") == 1
    mock.requests.clear()
    with client(second) as two:
        for _ in range(10):
            two.chat.completions.create(
                model="up-chat/m", messages=[{"role": "user", "content": "hi"}]
            )
    assert {r.key for r in mock.requests} == {"key-b"}


def test_a_conversation_stored_on_one_worker_continues_on_the_other(
    workers: tuple[str, str], mock: MockUpstream
) -> None:
    first, second = workers
    with client(first) as one, client(second) as two:
        turn1 = one.responses.create(model="up-chat/m", input="My name is Ada.")
        turn2 = two.responses.create(
            model="up-chat/m", input="What is my name?", previous_response_id=turn1.id
        )
        assert two.responses.retrieve(turn2.id).id == turn2.id
    history = str(mock.requests[-1].body)
    assert "My name is Ada." in history and "What is my name?" in history
