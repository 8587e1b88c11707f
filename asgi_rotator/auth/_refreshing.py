"""``RefreshingStrategy``: what the token strategies share (``oauth_file``,
``token_exchange``, ``google_oauth``): the current tokens per credential, refresh before
expiry with a margin, one refresh for every concurrent request and worker
(``SharedValue``), and one new grant after a 401.

A subclass says where tokens come from (``initial``, ``reload``), how new ones are had
(``renew``: a token endpoint, writing back what it must), and what a grant carries
(``context``).
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar

import msgspec

from ..errors import GatewayError
from ..redaction import register_secret
from ..upstream import HttpxUpstream, UpstreamClient
from ._base import AuthStrategy, Credential, Grant, fingerprint
from ._shared import SharedValue, now

if TYPE_CHECKING:
    from ..state import StateStore

__all__ = ["RefreshingStrategy", "TokenSet"]

_decode_json = msgspec.json.decode
_encode_json = msgspec.json.encode


class TokenSet(msgspec.Struct, kw_only=True, omit_defaults=True):
    """One credential's tokens as a strategy holds and workers share them."""

    access_token: str
    refresh_token: str | None = None
    expires_at: float | None = None  # wall-clock seconds
    obtained_at: float | None = None  # when this gateway got it (None: read from a file)
    context: dict[str, str] = msgspec.field(default_factory=dict)
    # What else the token endpoint answered that the source keeps (an id_token).
    extra: dict[str, Any] = msgspec.field(default_factory=dict)

    def __repr__(self) -> str:
        return f"TokenSet(fingerprint={fingerprint(self.access_token)!r})"


_decode_tokens = msgspec.json.Decoder(TokenSet).decode


class RefreshingStrategy(AuthStrategy):
    """Tokens that expire and are refreshed.  Options every subclass takes: ``margin``
    (seconds before expiry to refresh; default 300), ``timeout`` (a refresh's bound)."""

    refreshable: ClassVar[bool] = True

    def __init__(
        self,
        provider: str,
        options: Any,
        *,
        environ: Mapping[str, str],
        where: str | None = None,
    ) -> None:
        super().__init__(provider, options, environ=environ, where=where)
        self.margin: float = options.margin
        self._tokens: dict[int, TokenSet] = {}
        self._shared = SharedValue(timeout=options.timeout)
        self._client: UpstreamClient | None = None
        self._own_client: UpstreamClient | None = None

    # --- what a subclass provides -------------------------------------------------------------

    @abstractmethod
    def source_key(self, credential: Credential) -> str:
        """A name for the credential's source that is the same in every worker (it keys the
        shared tokens and the refresh lock) and holds no secret."""

    @abstractmethod
    async def reload(self, credential: Credential) -> TokenSet | None:
        """The tokens as the source has them now (a file someone else may have refreshed),
        or ``None`` when the source holds none of its own."""

    @abstractmethod
    async def renew(self, credential: Credential, current: TokenSet | None) -> TokenSet:
        """New tokens from the token endpoint; written back to the source where it has one."""

    async def adopted(
        self, credential: Credential, tokens: TokenSet, previous: TokenSet | None
    ) -> None:
        """``tokens`` replace ``previous`` without this process having renewed them (another
        worker did): a source that can be written keeps up (a spent refresh token must not
        stay in a file the user's CLI reads)."""
        return None

    def context(self, credential: Credential, tokens: TokenSet) -> Mapping[str, str]:
        return tokens.context

    # --- the strategy -------------------------------------------------------------------------

    def bind(self, *, store: StateStore | None, client: UpstreamClient | None) -> None:
        self._shared = SharedValue(store, timeout=self._shared.timeout)
        self._client = client

    @property
    def client(self) -> UpstreamClient:
        """The client for token endpoints: the provider's, or one of our own when unbound."""
        if self._client is None:
            self._client = self._own_client = HttpxUpstream(timeout=30.0)
        return self._client

    def hold(self, credential: Credential, tokens: TokenSet) -> None:
        """Make ``tokens`` the credential's current ones (and their secrets redacted)."""
        register_secret(tokens.access_token)
        register_secret(tokens.refresh_token)
        self._tokens[credential.index] = tokens

    async def grant(self, credential: Credential) -> Grant:
        tokens = self._tokens.get(credential.index)
        if tokens is None or not self._fresh(tokens):
            stale = fingerprint(tokens.access_token) if tokens is not None else None
            tokens = await self._renewed(credential, stale)
        return self._grant(credential, tokens)

    async def rejected(self, credential: Credential, grant: Grant) -> Grant | None:
        tokens = self._tokens.get(credential.index)
        if tokens is not None and fingerprint(tokens.access_token) != grant.fingerprint:
            return self._grant(credential, tokens)  # already replaced by another request
        return self._grant(credential, await self._renewed(credential, grant.fingerprint))

    async def aclose(self) -> None:
        client, self._own_client = self._own_client, None
        if client is not None:
            await client.aclose()

    # --- helpers ------------------------------------------------------------------------------

    def _grant(self, credential: Credential, tokens: TokenSet) -> Grant:
        return Grant(
            tokens.access_token,
            context=self.context(credential, tokens),
            expires_at=tokens.expires_at,
        )

    def _fresh(self, tokens: TokenSet) -> bool:
        """Not within the margin of its expiry.  The margin is at most half the token's
        lifetime when the gateway knows it, so a short-lived token is not refreshed on
        every request."""
        if tokens.expires_at is None:
            return True
        margin = self.margin
        if tokens.obtained_at is not None:
            margin = min(margin, (tokens.expires_at - tokens.obtained_at) / 2)
        return tokens.expires_at - now() > margin

    async def _renewed(self, credential: Credential, stale: str | None) -> TokenSet:
        """Tokens newer than the ``stale`` fingerprint and fresh: published by another
        request or worker, found in the source, or renewed here, in that order."""

        def usable(raw: bytes | None) -> bool:
            if raw is None:
                return False
            tokens = _decode_tokens(raw)
            return fingerprint(tokens.access_token) != stale and self._fresh(tokens)

        async def produce() -> tuple[bytes, float | None]:
            reloaded = await self.reload(credential)
            if (
                reloaded is not None
                and fingerprint(reloaded.access_token) != stale
                and self._fresh(reloaded)
            ):
                tokens = reloaded  # refreshed by the user's own CLI meanwhile
            else:
                current = reloaded or self._tokens.get(credential.index)
                tokens = await self.renew(credential, current)
            ttl = None
            if tokens.expires_at is not None:
                ttl = max(tokens.expires_at - now(), 1.0)
            return _encode_json(tokens), ttl

        raw = await self._shared.obtain(f"tokens:{self.source_key(credential)}", usable, produce)
        tokens = _decode_tokens(raw)
        previous = self._tokens.get(credential.index)
        if previous is None or previous.access_token != tokens.access_token:
            # Renewed by another worker (or found in the source): this process sees them
            # first now, and the source may need them too.
            self.hold(credential, tokens)
            await self.adopted(credential, tokens, previous)
        return tokens

    async def post_form_or_json(
        self,
        url: str,
        fields: Mapping[str, str],
        *,
        form: bool,
        headers: list[tuple[str, str]] | None = None,
        what: str,
    ) -> dict[str, Any]:
        """POST to a token endpoint; its JSON answer.  A refusal is an ``auth`` error that
        names the endpoint's host and its ``error`` code, never a token."""
        from urllib.parse import urlencode

        if form:
            body = urlencode(fields).encode()
            content_type = "application/x-www-form-urlencoded"
        else:
            body = _encode_json(dict(fields))
            content_type = "application/json"
        sent = [("content-type", content_type), ("accept", "application/json")]
        return await self.call("POST", url, sent + list(headers or ()), body, what=what)

    async def call(
        self,
        method: str,
        url: str,
        headers: list[tuple[str, str]],
        body: bytes,
        *,
        what: str,
    ) -> dict[str, Any]:
        """One request to a token or setup endpoint; its JSON object, or an ``auth`` error."""
        url = url.replace("mock://", "http://", 1)
        try:
            response = await self.client.send(method, url, headers, body)
        except GatewayError as error:
            raise GatewayError(
                error.kind, f"provider {self.provider}: {what}: {error.message}"
            ) from None
        try:
            raw = await response.aread()
        finally:
            await response.aclose()
        try:
            data = _decode_json(raw) if raw else {}
        except (msgspec.DecodeError, RecursionError):
            data = None
        if response.status >= 400 or not isinstance(data, dict):
            code = ""
            if isinstance(data, dict):
                # OAuth's {"error": "invalid_grant"}, Google's {"error": {"status": ...}}.
                named = data.get("error")
                if isinstance(named, dict):
                    named = named.get("status") or named.get("code") or named.get("type")
                if isinstance(named, str | int):
                    code = f" ({named})"
            # A refusal (a revoked or reused refresh token) is the credential's failure; an
            # endpoint that is down is a server error another try may get past.
            refused = response.status < 500 and isinstance(data, dict)
            raise GatewayError(
                "auth" if refused else "server_error",
                f"provider {self.provider}: {what} failed: HTTP {response.status}{code}",
                status=None if refused else 502,
                upstream_status=response.status,
                provider=self.provider,
            )
        return data
