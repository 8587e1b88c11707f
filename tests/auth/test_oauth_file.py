"""``oauth_file`` end to end: the gateway behind uvicorn, the official SDKs as clients, the
mock's token endpoints and model routes behind their own server, token files as the CLIs
write them."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import anthropic
import openai
import pytest

from asgi_rotator.auth.oauth_file import LAYOUTS, TokenFile
from asgi_rotator.config import parse_config
from asgi_rotator.mock import Fault, MockUpstream, TokenAuthority
from asgi_rotator.stack import build_app
from tests.auth.conftest import claude_file, claude_provider
from tests.server import serve

HI = [{"role": "user", "content": "hi"}]


@contextmanager
def gateway(providers: dict[str, Any], **sections: Any) -> Iterator[str]:
    config = parse_config({"providers": providers, **sections}, {})
    with serve(build_app(config, environ={})) as url:
        yield url


def model_keys(mock: MockUpstream) -> list[str | None]:
    return [r.key for r in mock.requests if r.protocol is not None]


def test_a_token_within_its_margin_is_refreshed_before_the_request_and_written_back(
    upstream: tuple[MockUpstream, str], authority: TokenAuthority, tmp_path: Path
) -> None:
    mock, url = upstream
    access, refresh, _ = authority.issue()
    # The file says the token ends in a minute: inside the default five-minute margin.
    path = claude_file(tmp_path / ".credentials.json", access, refresh, time.time() + 60)
    before = json.loads(path.read_text())
    with (
        gateway({"claude": claude_provider(url, path)}) as gw,
        anthropic.Anthropic(base_url=gw, api_key="client", max_retries=0) as client,
    ):
        message = client.messages.create(model="claude/mock-claude", max_tokens=64, messages=HI)
        assert message.content[0].type == "text"
        client.messages.create(model="claude/mock-claude", max_tokens=64, messages=HI)

    assert authority.refreshes == 1  # the second request used the refreshed token
    (first, second) = model_keys(mock)
    assert first == second != access and authority.valid(first)
    # The same parser reads the refreshed file, and it holds every field the CLI wrote.
    reread = TokenFile(path, LAYOUTS["claude_code"]).read()
    assert reread.access_token == first
    assert reread.refresh_token in authority.refresh and refresh in authority.spent
    assert reread.expires_at is not None and reread.expires_at > time.time() + 3000
    after = json.loads(path.read_text())
    for key in ("scopes", "subscriptionType"):
        assert after["claudeAiOauth"][key] == before["claudeAiOauth"][key]
    assert after["mcpOAuth"] == before["mcpOAuth"]
    assert isinstance(after["claudeAiOauth"]["expiresAt"], int)  # still milliseconds
    assert path.stat().st_mode & 0o777 == 0o600
    assert [p.name for p in tmp_path.iterdir()] == [".credentials.json"]  # no temporary left


def test_a_401_refreshes_once_and_resends_once(
    upstream: tuple[MockUpstream, str], authority: TokenAuthority, tmp_path: Path
) -> None:
    mock, url = upstream
    access, refresh, expiry = authority.issue()
    path = claude_file(tmp_path / "c.json", access, refresh, expiry)
    authority.revoke(access)  # the file still says it is good for an hour
    with (
        gateway({"claude": claude_provider(url, path)}) as gw,
        anthropic.Anthropic(base_url=gw, api_key="client", max_retries=0) as client,
    ):
        client.messages.create(model="claude/mock-claude", max_tokens=64, messages=HI)
    assert authority.refreshes == 1
    keys = model_keys(mock)
    assert keys[0] == access and len(keys) == 2 and authority.valid(keys[1])


def test_a_second_401_is_an_auth_error_not_another_refresh(
    upstream: tuple[MockUpstream, str], authority: TokenAuthority, tmp_path: Path
) -> None:
    mock, url = upstream
    access, refresh, expiry = authority.issue()
    path = claude_file(tmp_path / "c.json", access, refresh, expiry)
    mock.add_fault(Fault(status=401, protocol="anthropic_messages", times=None))
    with (
        gateway({"claude": claude_provider(url, path)}) as gw,
        anthropic.Anthropic(base_url=gw, api_key="client", max_retries=0) as client,
        pytest.raises(anthropic.AuthenticationError),
    ):
        client.messages.create(model="claude/mock-claude", max_tokens=64, messages=HI)
    assert authority.refreshes == 1
    assert len(model_keys(mock)) == 2


def test_fifty_concurrent_requests_at_expiry_refresh_once(
    upstream: tuple[MockUpstream, str], authority: TokenAuthority, tmp_path: Path
) -> None:
    mock, url = upstream
    authority.latency = 0.3  # the refresh is still running when the last request arrives
    access, refresh, _ = authority.issue(expires_in=-1)
    path = claude_file(tmp_path / "c.json", access, refresh, time.time() - 1)

    async def fifty(gw: str) -> list[Any]:
        async with anthropic.AsyncAnthropic(base_url=gw, api_key="c", max_retries=0) as client:
            return await asyncio.gather(
                *(
                    client.messages.create(model="claude/mock-claude", max_tokens=64, messages=HI)
                    for _ in range(50)
                )
            )

    with gateway({"claude": claude_provider(url, path)}) as gw:
        answers = asyncio.run(fifty(gw))
    assert len(answers) == 50
    assert authority.refreshes == 1
    keys = model_keys(mock)
    assert len(keys) == 50 and len(set(keys)) == 1 and authority.valid(keys[0])


def codex_file(path: Path, authority: TokenAuthority, expires_in: float) -> Path:
    access, refresh, _ = authority.issue(expires_in=expires_in, jwt=True)
    path.write_text(
        json.dumps(
            {
                "OPENAI_API_KEY": None,
                "tokens": {
                    "id_token": "old.id.token",
                    "access_token": access,
                    "refresh_token": refresh,
                    "account_id": "acct-7",
                },
                "last_refresh": "2026-01-01T00:00:00Z",
            }
        )
    )
    return path


def test_codex_file_expiry_comes_from_the_token_and_the_account_id_rides_along(
    upstream: tuple[MockUpstream, str], authority: TokenAuthority, tmp_path: Path
) -> None:
    mock, url = upstream
    path = codex_file(tmp_path / "auth.json", authority, expires_in=30)
    provider = {
        "protocol": "openai_responses",
        "base_url": f"{url}/v1",
        "credential": {
            "strategy": "oauth_file",
            "layout": "codex",
            "path": str(path),
            "token_url": f"{url}/oauth/token",
        },
    }
    with (
        gateway({"codex": provider}) as gw,
        openai.OpenAI(base_url=f"{gw}/v1", api_key="client", max_retries=0) as client,
    ):
        client.responses.create(model="codex/mock-gpt", input="hi")
    assert authority.refreshes == 1
    after = json.loads(path.read_text())
    tokens = after["tokens"]
    assert tokens["access_token"] == model_keys(mock)[0]
    assert tokens["account_id"] == "acct-7" and after["OPENAI_API_KEY"] is None
    assert tokens["id_token"] != "old.id.token"  # the endpoint's new id token is kept
    assert after["last_refresh"] > "2026-01-01T00:00:00Z"
    reread = TokenFile(path, LAYOUTS["codex"]).read()
    assert reread.context == {"account_id": "acct-7"}
    assert reread.expires_at is not None and reread.expires_at > time.time() + 3000


@pytest.mark.anyio
async def test_the_grant_carries_the_files_context(
    upstream: tuple[MockUpstream, str], authority: TokenAuthority, tmp_path: Path
) -> None:
    url = upstream[1]
    path = codex_file(tmp_path / "auth.json", authority, expires_in=3600)
    from asgi_rotator.providers import Providers

    config = parse_config(
        {
            "providers": {
                "codex": {
                    "protocol": "openai_responses",
                    "base_url": f"{url}/v1",
                    "credential": {"strategy": "oauth_file", "layout": "codex", "path": str(path)},
                }
            }
        },
        {},
    )
    providers = Providers(config, {})
    try:
        provider = providers.providers["codex"]
        grant = await provider.strategy.grant(provider.credentials[0])
        assert grant.context == {"account_id": "acct-7"}
        assert grant.token not in repr(grant) and grant.fingerprint in repr(grant)
    finally:
        await providers.aclose()
    assert authority.refreshes == 0  # fresh: nothing to do


@pytest.mark.parametrize(
    "fault",
    [
        Fault(path="/v1/oauth/token", malformed_json=True, times=None),
        Fault(path="/v1/oauth/token", deep_json=True, times=None),
    ],
    ids=["malformed_json", "deep_json"],
)
def test_a_token_endpoint_answering_garbled_json_is_a_502_not_a_gateway_failure(
    upstream: tuple[MockUpstream, str], authority: TokenAuthority, tmp_path: Path, fault: Fault
) -> None:
    mock, url = upstream
    access, refresh, _ = authority.issue(expires_in=-1)
    path = claude_file(tmp_path / "c.json", access, refresh, time.time() - 1)
    mock.add_fault(fault)
    with (
        gateway({"claude": claude_provider(url, path)}) as gw,
        anthropic.Anthropic(base_url=gw, api_key="client", max_retries=0) as client,
        pytest.raises(anthropic.APIStatusError) as caught,
    ):
        client.messages.create(model="claude/mock-claude", max_tokens=64, messages=HI)
    # The token endpoint's failure, not the gateway's own (a deep body was a 500).
    assert caught.value.status_code == 502
    assert "token refresh failed" in str(caught.value)
    assert model_keys(mock) == []


def test_a_refused_refresh_is_an_auth_error_naming_the_endpoint_not_the_token(
    upstream: tuple[MockUpstream, str], authority: TokenAuthority, tmp_path: Path
) -> None:
    mock, url = upstream
    access, _, _ = authority.issue(expires_in=-1)
    path = claude_file(tmp_path / "c.json", access, "spent-refresh-token-0001", time.time() - 1)
    with (
        gateway({"claude": claude_provider(url, path)}) as gw,
        anthropic.Anthropic(base_url=gw, api_key="client", max_retries=0) as client,
        pytest.raises(anthropic.AuthenticationError) as caught,
    ):
        client.messages.create(model="claude/mock-claude", max_tokens=64, messages=HI)
    message = str(caught.value)
    assert "token refresh failed" in message and "invalid_grant" in message
    assert "spent-refresh-token-0001" not in message
    assert model_keys(mock) == []  # nothing went upstream with a token known to be dead
