"""Two gateway workers on one Redis and one token file: one refresh between them."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import anthropic
import openai
import pytest

from asgi_rotator.config import parse_config
from asgi_rotator.mock import MockUpstream, TokenAuthority
from asgi_rotator.stack import build_app
from tests.auth.conftest import claude_file, claude_provider
from tests.server import serve

HI = [{"role": "user", "content": "hi"}]


async def requests_to(urls: list[str], each: int) -> list[Any]:
    clients = [anthropic.AsyncAnthropic(base_url=u, api_key="c", max_retries=0) for u in urls]
    try:
        return await asyncio.gather(
            *(
                client.messages.create(model="claude/mock-claude", max_tokens=64, messages=HI)
                for client in clients
                for _ in range(each)
            )
        )
    finally:
        for client in clients:
            await client.close()


def test_two_workers_on_redis_refresh_once_between_them(
    upstream: tuple[MockUpstream, str],
    authority: TokenAuthority,
    redis_server: str,
    tmp_path: Path,
) -> None:
    mock, url = upstream
    authority.latency = 0.3
    access, refresh, _ = authority.issue(expires_in=-1)
    path = claude_file(tmp_path / "c.json", access, refresh, time.time() - 1)
    config = parse_config(
        {
            "providers": {"claude": claude_provider(url, path)},
            "state": {"backend": "redis", "url": redis_server},
        },
        {},
    )
    with (
        serve(build_app(config, environ={})) as first,
        serve(build_app(config, environ={})) as second,
    ):
        answers = asyncio.run(requests_to([first, second], 10))
    assert len(answers) == 20
    assert authority.refreshes == 1
    keys = {r.key for r in mock.requests if r.protocol}
    assert len(keys) == 1 and authority.valid(keys.pop())


def test_workers_on_two_machines_share_one_rotation_and_both_files_keep_up(
    upstream: tuple[MockUpstream, str],
    authority: TokenAuthority,
    redis_server: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Two machines, the same configuration (``~/.codex/auth.json``), each with its own copy
    of the file.  The refresh token rotates once: the second worker must take the tokens
    the first got, never spend the dead refresh token its own file holds, and its file must
    hold the live ones afterwards (the user's CLI there reads it)."""
    mock, url = upstream
    access, refresh, _ = authority.issue(expires_in=-1, jwt=True)
    homes = []
    for name in ("a", "b"):
        home = tmp_path / name
        (home / ".codex").mkdir(parents=True)
        (home / ".codex" / "auth.json").write_text(
            json.dumps({"tokens": {"access_token": access, "refresh_token": refresh}})
        )
        homes.append(home)
    provider = {
        "protocol": "openai_responses",
        "base_url": f"{url}/v1",
        "credential": {
            "strategy": "oauth_file",
            "layout": "codex",
            "path": "~/.codex/auth.json",
            "token_url": f"{url}/oauth/token",
        },
    }
    config = parse_config(
        {"providers": {"codex": provider}, "state": {"backend": "redis", "url": redis_server}},
        {},
    )
    apps = []
    for home in homes:
        monkeypatch.setenv("HOME", str(home))  # each machine's own home
        apps.append(build_app(config, environ={}))
    with serve(apps[0]) as first, serve(apps[1]) as second:
        for gw in (first, second):
            with openai.OpenAI(base_url=f"{gw}/v1", api_key="c", max_retries=0) as client:
                client.responses.create(model="codex/mock-gpt", input="hi")
    assert authority.refreshes == 1
    files = [json.loads((h / ".codex" / "auth.json").read_text())["tokens"] for h in homes]
    assert files[0] == files[1]
    assert files[0]["refresh_token"] in authority.refresh
    keys = {r.key for r in mock.requests if r.protocol}
    assert keys == {files[0]["access_token"]}
