"""``google_oauth``: the Gemini CLI's OAuth file (Google's form-encoded refresh, no
rotation) and the Code Assist project found once per credential."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from asgi_rotator.auth import Grant
from asgi_rotator.config import parse_config
from asgi_rotator.mock import MockUpstream, TokenAuthority
from asgi_rotator.providers import Providers
from asgi_rotator.state import MemoryStore

CLIENT_SECRET = "mock-installed-app-secret"


def gemini_file(path: Path, access: str, refresh: str, expiry: float) -> Path:
    path.write_text(
        json.dumps(
            {
                "access_token": access,
                "refresh_token": refresh,
                "scope": "https://www.googleapis.com/auth/cloud-platform",
                "token_type": "Bearer",
                "id_token": "old.id.token",
                "expiry_date": int(expiry * 1000),
            }
        )
    )
    return path


def config(url: str, path: Path, **options: Any) -> Any:
    credential = {
        "strategy": "google_oauth",
        "path": str(path),
        "token_url": f"{url}/token",
        "client_id": "mock-installed-app.apps.googleusercontent.com",
        "client_secret": "env:GEMINI_CLIENT_SECRET",
        "code_assist_url": f"{url}/v1internal",
        **options,
    }
    provider = {"protocol": "gemini", "base_url": url, "auth": "bearer", "credential": credential}
    return parse_config({"providers": {"gcli": provider}}, {})


ENV = {"GEMINI_CLIENT_SECRET": CLIENT_SECRET}


async def first_grant(config: Any) -> Grant:
    """The grant a freshly started gateway's ``gcli`` provider would send first."""
    providers = Providers(config, ENV)
    try:
        provider = providers.providers["gcli"]
        return await provider.strategy.grant(provider.credentials[0])
    finally:
        await providers.aclose()


@pytest.mark.anyio
async def test_the_project_is_discovered_once_by_onboarding_and_shared_by_workers(
    upstream: tuple[MockUpstream, str], authority: TokenAuthority, tmp_path: Path
) -> None:
    url = upstream[1]
    access, refresh, expiry = authority.issue()
    path = gemini_file(tmp_path / "oauth_creds.json", access, refresh, expiry)
    store = MemoryStore()
    workers = [Providers(config(url, path), ENV), Providers(config(url, path), ENV)]
    try:
        grants = []
        for providers in workers:
            providers.bind_store(store)
            provider = providers.providers["gcli"]
            for _ in range(2):
                grants.append(await provider.strategy.grant(provider.credentials[0]))
    finally:
        for providers in workers:
            await providers.aclose()
    project = authority.onboarded["user"]
    assert [g.context for g in grants] == [{"project": project}] * 4
    # A first loadCodeAssist finds no tier, onboardUser makes the project; the second
    # worker takes it from the store.
    assert (authority.loads, authority.onboards) == (1, 1)


@pytest.mark.anyio
async def test_an_onboarded_user_gets_the_project_load_code_assist_names(
    upstream: tuple[MockUpstream, str], authority: TokenAuthority, tmp_path: Path
) -> None:
    url = upstream[1]
    authority.onboarded["user"] = "projects-own-42"
    access, refresh, expiry = authority.issue()
    path = gemini_file(tmp_path / "oauth_creds.json", access, refresh, expiry)
    grant = await first_grant(config(url, path))
    assert grant.context == {"project": "projects-own-42"}
    assert (authority.loads, authority.onboards) == (1, 0)


@pytest.mark.anyio
async def test_a_configured_project_needs_no_discovery(
    upstream: tuple[MockUpstream, str], authority: TokenAuthority, tmp_path: Path
) -> None:
    url = upstream[1]
    access, refresh, expiry = authority.issue()
    path = gemini_file(tmp_path / "oauth_creds.json", access, refresh, expiry)
    grant = await first_grant(config(url, path, project="my-project"))
    assert grant.context == {"project": "my-project"} and authority.loads == 0


@pytest.mark.anyio
async def test_google_refresh_is_a_form_post_and_keeps_the_refresh_token(
    upstream: tuple[MockUpstream, str], authority: TokenAuthority, tmp_path: Path
) -> None:
    mock, url = upstream
    access, refresh, _ = authority.issue(expires_in=-1)
    path = gemini_file(tmp_path / "oauth_creds.json", access, refresh, time.time() - 1)
    grant = await first_grant(config(url, path, project="p"))
    assert authority.refreshes == 1 and authority.valid(grant.token)
    (sent,) = [r for r in mock.requests if r.path == "/token"]
    assert sent.headers["content-type"] == "application/x-www-form-urlencoded"
    after = json.loads(path.read_text())
    assert after["access_token"] == grant.token
    assert after["refresh_token"] == refresh  # Google does not rotate it
    assert after["scope"] == "https://www.googleapis.com/auth/cloud-platform"
    assert after["expiry_date"] > (time.time() + 3000) * 1000
