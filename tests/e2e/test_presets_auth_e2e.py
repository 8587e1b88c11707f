"""Each preset with its own auth strategy: the credential file its CLI wrote (or the GitHub
token Copilot exchanges), a token close to expiry refreshed before the request, the
context the strategy found (Codex's account id, Code Assist's onboarded project) in the
request the backend validates; through the official SDKs, plain and streamed."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from asgi_rotator.config import parse_config
from asgi_rotator.mock import MockUpstream, TokenAuthority
from asgi_rotator.mock.backends import MockBackends
from asgi_rotator.presets import BACKENDS
from asgi_rotator.stack import build_app
from tests.e2e.clients import DRIVERS
from tests.server import serve

GITHUB_TOKEN = "gho_mock-github-token"
CLIENT_SECRET = "mock-installed-app-secret"
ENV = {"GITHUB_TOKEN": GITHUB_TOKEN, "GOOGLE_CLIENT_SECRET": CLIENT_SECRET}
MODELS = {
    "claude_code": "claude-sonnet-4-5",
    "codex": "gpt-5-codex",
    "copilot": "gpt-4.1",
    "gemini_cli": "gemini-2.5-pro",
    "antigravity": "gemini-2.5-flash",
}
# Within the strategies' refresh margin: the first request refreshes first.
SOON = 30.0


def _files(directory: Path, authority: TokenAuthority) -> dict[str, Path]:
    access, refresh, expiry = authority.issue(expires_in=SOON)
    claude = directory / "claude.json"
    claude.write_text(
        json.dumps(
            {
                "claudeAiOauth": {
                    "accessToken": access,
                    "refreshToken": refresh,
                    "expiresAt": int(expiry * 1000),
                    "subscriptionType": "max",
                }
            }
        )
    )
    access, refresh, _ = authority.issue(expires_in=SOON, jwt=True)
    codex = directory / "codex.json"
    codex.write_text(
        json.dumps(
            {
                "tokens": {
                    "id_token": "old.id.token",
                    "access_token": access,
                    "refresh_token": refresh,
                    "account_id": "acct-e2e",
                },
                "last_refresh": "2026-01-01T00:00:00Z",
            }
        )
    )
    out = {"claude_code": claude, "codex": codex}
    for name in ("gemini_cli", "antigravity"):
        access, refresh, expiry = authority.issue(expires_in=SOON)
        path = directory / f"{name}.json"
        path.write_text(
            json.dumps(
                {
                    "access_token": access,
                    "refresh_token": refresh,
                    "token_type": "Bearer",
                    "expiry_date": int(expiry * 1000),
                }
            )
        )
        out[name] = path
    return out


def _credential(name: str, url: str, path: Path | None) -> dict[str, Any]:
    table = dict(BACKENDS[name].credential or {})
    if name == "copilot":
        return {**table, "exchange_url": f"{url}/copilot_internal/v2/token"}
    assert path is not None
    table["path"] = str(path)
    if name == "claude_code":
        table["token_url"] = f"{url}/v1/oauth/token"
    elif name == "codex":
        table["token_url"] = f"{url}/oauth/token"
    else:
        table.update(
            token_url=f"{url}/token",
            client_id="mock-installed-app.apps.googleusercontent.com",
            client_secret="env:GOOGLE_CLIENT_SECRET",
            code_assist_url=f"{url}/v1internal",
        )
    return table


@pytest.fixture(scope="module")
def setup(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[TokenAuthority, MockBackends, str]]:
    authority = TokenAuthority(lifetime=3600.0)
    authority.github.add(GITHUB_TOKEN)
    backends = MockBackends(MockUpstream(authority=authority))
    files = _files(tmp_path_factory.mktemp("credentials"), authority)
    with serve(backends) as mock_url:
        providers = {
            name: {
                "preset": name,
                "base_url": f"{mock_url}/{name}",
                "credential": _credential(name, mock_url, files.get(name)),
            }
            for name in BACKENDS
        }
        # Copilot's exchanged token names the API host for the account; the configured
        # base URL (nothing listens there) is only the fallback.
        authority.api_base = f"{mock_url}/copilot"
        providers["copilot"]["base_url"] = "http://127.0.0.1:9/unused"
        config = parse_config({"providers": providers}, ENV)
        with serve(build_app(config, environ=ENV)) as url:
            yield authority, backends, url


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
@pytest.mark.parametrize("preset", list(BACKENDS))
def test_each_preset_with_its_own_credential(
    setup: tuple[TokenAuthority, MockBackends, str], preset: str, stream: bool
) -> None:
    authority, backends, url = setup
    protocol = BACKENDS[preset].protocols[0]
    with DRIVERS[protocol](url) as driver:
        result = driver.ask(f"{preset}/{MODELS[preset]}", "Hello there", stream=stream)
    assert "You said: Hello there" in result.text
    assert result.input_tokens == 12
    seen = [r for r in backends.requests if r.backend == preset and r.status == 200][-1]
    token = seen.headers["authorization"].removeprefix("Bearer ")
    assert authority.valid(token)  # refreshed (or exchanged) before it went out
    if preset == "codex":
        assert seen.headers["chatgpt-account-id"] == "acct-e2e"
    if preset in ("gemini_cli", "antigravity"):
        assert seen.body["project"] == authority.onboarded["user"]


def test_the_tokens_were_refreshed_once_each(
    setup: tuple[TokenAuthority, MockBackends, str],
) -> None:
    authority, _, url = setup
    for preset in BACKENDS:
        protocol = BACKENDS[preset].protocols[0]
        with DRIVERS[protocol](url) as driver:
            driver.ask(f"{preset}/{MODELS[preset]}")
    # Four files near expiry, one refresh each however many requests; one Copilot exchange.
    assert authority.refreshes == 4
    assert authority.exchanges == 1


def test_a_revoked_token_is_refreshed_once_and_the_request_resent_shaped(
    setup: tuple[TokenAuthority, MockBackends, str],
) -> None:
    authority, backends, url = setup
    with DRIVERS["anthropic_messages"](url) as driver:
        driver.ask("claude_code/claude-sonnet-4-5")
        sent = [r for r in backends.requests if r.backend == "claude_code"][-1]
        revoked = sent.headers["authorization"].removeprefix("Bearer ")
        authority.revoke(revoked)
        refreshes = authority.refreshes
        result = driver.ask("claude_code/claude-sonnet-4-5")
    assert "You said" in result.text
    assert authority.refreshes == refreshes + 1
    refused, resent = [r for r in backends.requests if r.backend == "claude_code"][-2:]
    assert refused.headers["authorization"] == f"Bearer {revoked}"
    # The resend carries the new token and the preset's headers again.
    assert resent.headers["authorization"] != refused.headers["authorization"]
    assert "oauth-2025-04-20" in resent.headers["anthropic-beta"]
    assert resent.status == 200
