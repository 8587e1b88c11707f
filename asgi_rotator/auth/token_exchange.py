"""``token_exchange``: a long-lived token exchanged for a short-lived one (GitHub Copilot).

Options (``credential = {strategy = "token_exchange", ...}``):

* ``token``: the long-lived token (``env:NAME`` or literal), or a list of them (a pool).
* ``exchange_url``: where it is exchanged (default: GitHub's Copilot token endpoint,
  ``https://api.github.com/copilot_internal/v2/token``); ``method`` (``GET``).
* ``scheme``: how the long-lived token is presented, ``token`` (GitHub's
  ``Authorization: token ...``) or ``bearer``.
* ``headers``: extra headers for the exchange request (an editor version, for Copilot).
* ``margin`` (seconds before expiry to exchange again, default 300), ``timeout`` (30).

The answer, as Copilot's clients read it: ``token``, ``expires_at`` (unix seconds), and
``endpoints.api``, the API base URL for this account, given to requests as the grant's
``api_base`` context.  Nothing is written anywhere but the shared store: the long-lived token
is the source, and exchanging it again is always possible.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal

import msgspec

from ..config import ConfigError, resolve_secret
from ..errors import GatewayError
from ..redaction import register_secret
from ._base import Credential, fingerprint
from ._refreshing import RefreshingStrategy, TokenSet
from ._shared import now

__all__ = ["TokenExchangeOptions", "TokenExchangeStrategy"]

COPILOT_EXCHANGE_URL = "https://api.github.com/copilot_internal/v2/token"


class TokenExchangeOptions(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    token: str | list[str]
    exchange_url: str = COPILOT_EXCHANGE_URL
    method: Literal["GET", "POST"] = "GET"
    scheme: Literal["token", "bearer"] = "token"
    headers: dict[str, str] = msgspec.field(default_factory=dict)
    margin: float = 300.0
    timeout: float = 30.0


class TokenExchangeStrategy(RefreshingStrategy):
    name = "token_exchange"
    Options = TokenExchangeOptions

    def __init__(
        self,
        provider: str,
        options: TokenExchangeOptions,
        *,
        environ: Mapping[str, str],
        where: str | None = None,
    ) -> None:
        super().__init__(provider, options, environ=environ, where=where)
        refs = [options.token] if isinstance(options.token, str) else options.token
        if not refs:
            raise ConfigError(f"{self.where}.token: expected at least one token")
        self.options = options
        self._long_lived: list[str] = []
        for i, ref in enumerate(refs):
            at = f"{self.where}.token" + ("" if isinstance(options.token, str) else f"[{i}]")
            secret = resolve_secret(ref, environ, at)
            register_secret(secret)
            self._long_lived.append(secret)
            self.credentials.append(Credential(provider, i))

    def source_key(self, credential: Credential) -> str:
        return f"{self.provider}:{fingerprint(self._long_lived[credential.index])}"

    async def reload(self, credential: Credential) -> TokenSet | None:
        return None

    async def renew(self, credential: Credential, current: TokenSet | None) -> TokenSet:
        options = self.options
        scheme = "token" if options.scheme == "token" else "Bearer"
        headers = [
            ("authorization", f"{scheme} {self._long_lived[credential.index]}"),
            ("accept", "application/json"),
            *options.headers.items(),
        ]
        answer = await self.call(
            options.method, options.exchange_url, headers, b"", what="token exchange"
        )
        token = answer.get("token")
        expires_at = answer.get("expires_at")
        if not isinstance(token, str) or not token:
            raise GatewayError(
                "auth", f"provider {self.provider}: the token exchange answered no token"
            )
        context: dict[str, str] = {}
        endpoints = answer.get("endpoints")
        if isinstance(endpoints, dict) and isinstance(endpoints.get("api"), str):
            context["api_base"] = endpoints["api"]
        tokens = TokenSet(
            access_token=token,
            expires_at=float(expires_at) if isinstance(expires_at, int | float) else None,
            obtained_at=now(),
            context=context,
        )
        self.hold(credential, tokens)
        return tokens
