"""``token_exchange`` (Copilot's): a GitHub token exchanged for a short-lived one, cached,
exchanged again before expiry and after a 401."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import openai
import pytest

from asgi_rotator.auth import _refreshing
from asgi_rotator.config import parse_config
from asgi_rotator.mock import MockUpstream, TokenAuthority
from asgi_rotator.providers import Providers
from asgi_rotator.stack import build_app
from tests.server import serve

GITHUB_TOKEN = "ghu_mockGithubToken0123456789"


def copilot(url: str, **options: Any) -> dict[str, Any]:
    return {
        "copilot": {
            "protocol": "openai_chat",
            "base_url": f"{url}/v1",
            "credential": {
                "strategy": "token_exchange",
                "token": "env:GH_TOKEN",
                "exchange_url": f"{url}/copilot_internal/v2/token",
                **options,
            },
        }
    }


@contextmanager
def asking(providers: dict[str, Any]) -> Iterator[Callable[[], object]]:
    """A gateway over ``providers``; a function that sends it one chat request."""
    env = {"GH_TOKEN": GITHUB_TOKEN}
    with (
        serve(build_app(parse_config({"providers": providers}, env), environ=env)) as url,
        openai.OpenAI(base_url=f"{url}/v1", api_key="client", max_retries=0) as client,
    ):
        yield lambda: client.chat.completions.create(
            model="copilot/mock-gpt", messages=[{"role": "user", "content": "hi"}]
        )


def test_the_exchanged_token_is_used_and_cached(
    upstream: tuple[MockUpstream, str], authority: TokenAuthority
) -> None:
    mock, url = upstream
    authority.github.add(GITHUB_TOKEN)
    with asking(copilot(url)) as ask:
        for _ in range(3):
            ask()
    assert authority.exchanges == 1
    keys = {r.key for r in mock.requests if r.protocol}
    assert len(keys) == 1 and authority.valid(keys.pop())


def test_a_token_within_its_margin_is_exchanged_again_before_it_expires(
    upstream: tuple[MockUpstream, str],
    authority: TokenAuthority,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    mock, url = upstream
    authority.github.add(GITHUB_TOKEN)
    authority.lifetime = 600.0
    skew = [0.0]  # seconds the gateway's and the mock's clocks are moved on
    monkeypatch.setattr(_refreshing, "now", lambda: time.time() + skew[0])
    authority.clock = lambda: time.time() + skew[0]
    with asking(copilot(url)) as ask:
        ask()
        skew[0] = 200.0  # 400 s left: outside the 300 s margin
        ask()
        assert authority.exchanges == 1
        skew[0] = 301.0  # 299 s left: inside it, though the token still works
        (first,) = {r.key for r in mock.requests if r.protocol}
        assert authority.valid(first)
        ask()
    assert authority.exchanges == 2
    last = [r.key for r in mock.requests if r.protocol][-1]
    assert last != first and authority.valid(last)


def test_a_401_exchanges_again_once(
    upstream: tuple[MockUpstream, str], authority: TokenAuthority
) -> None:
    mock, url = upstream
    authority.github.add(GITHUB_TOKEN)
    with asking(copilot(url)) as ask:
        ask()
        (first,) = {r.key for r in mock.requests if r.protocol}
        authority.revoke(first)
        ask()
    keys = [r.key for r in mock.requests if r.protocol]
    assert authority.exchanges == 2
    assert keys[:2] == [first, first] and len(keys) == 3 and authority.valid(keys[2])


@pytest.mark.anyio
async def test_the_grant_names_the_accounts_api_base(
    upstream: tuple[MockUpstream, str], authority: TokenAuthority
) -> None:
    url = upstream[1]
    authority.github.add(GITHUB_TOKEN)
    providers = Providers(parse_config({"providers": copilot(url)}, {}), {"GH_TOKEN": GITHUB_TOKEN})
    try:
        provider = providers.providers["copilot"]
        grant = await provider.strategy.grant(provider.credentials[0])
    finally:
        await providers.aclose()
    assert grant.context == {"api_base": url}
    assert grant.expires_at is not None


def test_an_unknown_github_token_is_an_auth_error(
    upstream: tuple[MockUpstream, str], authority: TokenAuthority
) -> None:
    mock, url = upstream
    with asking(copilot(url)) as ask, pytest.raises(openai.AuthenticationError) as caught:
        ask()
    assert "token exchange failed: HTTP 401" in str(caught.value)
    assert GITHUB_TOKEN not in str(caught.value)
    assert not [r for r in mock.requests if r.protocol]
