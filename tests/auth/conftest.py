"""Auth fixtures: the mock upstream with its token authority, behind a real uvicorn server,
and token files as the users' CLIs write them."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from asgi_rotator.mock import MockUpstream, TokenAuthority
from tests.server import serve


@pytest.fixture
def authority() -> TokenAuthority:
    return TokenAuthority(lifetime=3600.0)


@pytest.fixture
def upstream(authority: TokenAuthority) -> Iterator[tuple[MockUpstream, str]]:
    mock = MockUpstream(authority=authority)
    with serve(mock) as url:
        authority.api_base = url  # what the Copilot exchange names as the API base
        yield mock, url


def claude_file(path: Path, access: str, refresh: str, expiry: float) -> Path:
    """Claude Code's credentials file, with the fields the CLI writes beside the tokens."""
    path.write_text(
        json.dumps(
            {
                "claudeAiOauth": {
                    "accessToken": access,
                    "refreshToken": refresh,
                    "expiresAt": int(expiry * 1000),
                    "scopes": ["user:inference", "user:profile"],
                    "subscriptionType": "max",
                },
                "mcpOAuth": {"server": {"accessToken": "unrelated"}},
            }
        )
    )
    path.chmod(0o600)
    return path


def claude_provider(url: str, path: Path, **options: Any) -> dict[str, Any]:
    return {
        "protocol": "anthropic_messages",
        "base_url": url,
        "auth": "bearer",
        "credential": {
            "strategy": "oauth_file",
            "layout": "claude_code",
            "path": str(path),
            "token_url": f"{url}/v1/oauth/token",
            **options,
        },
    }
