"""A provider's ``credential`` table: checked with paths, secrets unshown, strategies
pluggable by entry point."""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import msgspec
import openai
import pytest

import asgi_rotator.auth as auth
from asgi_rotator.auth import AuthStrategy, Credential, Grant
from asgi_rotator.auth.oauth_file import LAYOUTS, TokenFile
from asgi_rotator.config import ConfigError, parse_config
from asgi_rotator.mock import MockUpstream
from asgi_rotator.providers import Providers
from asgi_rotator.stack import build_app
from tests.server import serve

SECRET = "ghu_literalSecretValue123456"


def provider(**credential: Any) -> dict[str, Any]:
    return {
        "providers": {
            "p": {"protocol": "openai_chat", "base_url": "http://x/v1", "credential": credential}
        }
    }


@pytest.mark.parametrize(
    ("credential", "expected"),
    [
        ({"strategy": "nope"}, "providers.p.credential.strategy: unknown auth strategy 'nope'"),
        ({"path": "x"}, "providers.p.credential.strategy: is required"),
        ({"strategy": "oauth_file"}, "providers.p.credential.path: is required"),
        (
            {"strategy": "oauth_file", "path": "x", "margn": 5},
            "providers.p.credential.margn: unknown field",
        ),
        (
            {"strategy": "token_exchange", "token": 12345},
            "providers.p.credential.token: expected a string or an array, got an integer",
        ),
    ],
)
def test_a_bad_credential_table_is_named_by_its_path(
    credential: dict[str, Any], expected: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(provider(**credential), {})
    assert expected in str(caught.value)


def test_a_credential_value_is_never_shown() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(provider(strategy="token_exchange", token=SECRET, margin=SECRET), {})
    assert "providers.p.credential.margin" in str(caught.value)
    assert SECRET not in str(caught.value)
    config = parse_config(provider(strategy="token_exchange", token=SECRET), {})
    assert SECRET not in repr(config) and SECRET not in repr(config.providers["p"])


def test_keys_and_a_credential_table_are_not_both_taken() -> None:
    data = provider(strategy="token_exchange", token="t0123456")
    data["providers"]["p"]["keys"] = ["k0123456"]
    with pytest.raises(ConfigError, match=r"providers\.p\.keys: give keys or a credential"):
        parse_config(data, {})


def test_a_missing_token_file_is_a_config_error_at_startup(tmp_path: Path) -> None:
    config = parse_config(
        provider(strategy="oauth_file", layout="claude_code", path=str(tmp_path / "absent.json")),
        {},
    )
    with pytest.raises(ConfigError, match=r"providers\.p\.credential\.path: no such file"):
        Providers(config, {})


def test_a_token_file_nested_too_deeply_is_a_config_error_at_startup(tmp_path: Path) -> None:
    path = tmp_path / "deep.json"
    path.write_text('{"claudeAiOauth": ' + "[" * 10_000 + "]" * 10_000 + "}")
    config = parse_config(provider(strategy="oauth_file", layout="claude_code", path=str(path)), {})
    with pytest.raises(ConfigError) as caught:
        Providers(config, {})
    assert str(caught.value) == "providers.p.credential.path: JSON nested too deeply"


def test_a_jwt_whose_claims_are_nested_too_deeply_has_no_expiry(tmp_path: Path) -> None:
    claims = base64.urlsafe_b64encode(b"[" * 10_000 + b"]" * 10_000).decode().rstrip("=")
    path = tmp_path / "auth.json"
    path.write_text(json.dumps({"tokens": {"access_token": f"e30.{claims}.sig"}}))
    tokens = TokenFile(path, LAYOUTS["codex"]).read()
    assert tokens.access_token == f"e30.{claims}.sig" and tokens.expires_at is None


def test_an_unset_token_variable_is_named(tmp_path: Path) -> None:
    data = provider(strategy="token_exchange", token=["env:GH_1", "env:NO_SUCH_TOKEN"])
    with pytest.raises(ConfigError, match=r"credential\.token\[1\]: .*NO_SUCH_TOKEN is not set"):
        parse_config(data, {"GH_1": "ghu_0123456789"}, check_secrets=True)
    config = parse_config(provider(strategy="token_exchange", token="env:NO_SUCH_TOKEN"), {})
    with pytest.raises(ConfigError, match=r"providers\.p\.credential\.token: .*NO_SUCH_TOKEN"):
        Providers(config, {})


# --- a strategy of the user's own, registered by entry point --------------------------------


class SignedOptions(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    secret: str
    accounts: list[str]


class SignedStrategy(AuthStrategy):
    """One credential per account, each with its own token."""

    name = "signed"
    Options = SignedOptions

    def __init__(
        self,
        provider: str,
        options: SignedOptions,
        *,
        environ: Mapping[str, str],
        where: str | None = None,
    ) -> None:
        super().__init__(provider, options, environ=environ, where=where)
        self.secret = options.secret
        self.accounts = options.accounts
        self.credentials = [Credential(provider, i) for i in range(len(options.accounts))]

    async def grant(self, credential: Credential) -> Grant:
        account = self.accounts[credential.index]
        return Grant(f"{self.secret}.{account}", context={"account": account})


def test_a_strategy_registered_by_entry_point_serves_requests(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(
        auth, "_entry_point_targets", lambda: {"signed": f"{__name__}:SignedStrategy"}
    )
    assert "signed" in auth.strategy_names()
    mock = MockUpstream()
    with serve(mock) as url:
        data = provider(strategy="signed", secret="s3cr3t", accounts=["a", "b"])
        data["providers"]["p"]["base_url"] = f"{url}/v1"
        data["cooldown"] = {"rotation": "round_robin"}
        with (
            serve(build_app(parse_config(data, {}), environ={})) as gw,
            openai.OpenAI(base_url=f"{gw}/v1", api_key="c", max_retries=0) as client,
        ):
            for _ in range(2):
                client.chat.completions.create(
                    model="p/mock-gpt", messages=[{"role": "user", "content": "hi"}]
                )
    assert sorted(r.key or "" for r in mock.requests) == ["s3cr3t.a", "s3cr3t.b"]
