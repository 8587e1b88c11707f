"""The auth strategy interface: ``Credential``, ``Grant``, ``AuthStrategy``."""

from __future__ import annotations

import hashlib
from abc import ABC, abstractmethod
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar

import msgspec

if TYPE_CHECKING:
    from ..state import StateStore
    from ..upstream import UpstreamClient

__all__ = ["AuthStrategy", "Credential", "Grant", "fingerprint"]


def fingerprint(token: str) -> str:
    """What may stand for a token wherever it must be named or compared: a short hash.

    Two grants are the same token exactly when their fingerprints are equal; the token
    itself is never compared outside the strategy that holds it, nor shown."""
    return hashlib.sha256(token.encode()).hexdigest()[:16]


class Credential:
    """One member of a provider's pool (a key, a token file, a GitHub token).  ``id``
    (``provider#index``) is what rotation, cooldowns, logs, traces and errors name; what
    the credential is made of stays with its strategy."""

    __slots__ = ("id", "index", "provider")

    def __init__(self, provider: str, index: int) -> None:
        self.provider = provider
        self.index = index
        self.id = f"{provider}#{index}"

    def __repr__(self) -> str:
        return f"Credential({self.id!r})"


class Grant:
    """What one upstream request carries for a credential: ``token`` (the secret that goes in
    the auth header) and ``context``, the credential's other facts a request may need
    (``account_id`` for Codex, ``project`` for Code Assist, ``api_base`` for Copilot).

    ``expires_at`` is wall-clock seconds (``None``: does not expire).  The repr shows the
    fingerprint, never the token."""

    __slots__ = ("context", "expires_at", "fingerprint", "token")

    def __init__(
        self,
        token: str,
        *,
        context: Mapping[str, str] | None = None,
        expires_at: float | None = None,
    ) -> None:
        self.token = token
        self.context: Mapping[str, str] = context or {}
        self.expires_at = expires_at
        self.fingerprint = fingerprint(token)

    def __repr__(self) -> str:
        return f"Grant(fingerprint={self.fingerprint!r}, context={sorted(self.context)!r})"


class AuthStrategy(ABC):
    """How a provider's credentials become grants.  Registered by ``name`` (built-ins, or the
    entry point group ``asgi_rotator.auth``: ``name = "package.module:Class"``).

    Made once per provider as ``Class(provider, options, environ=..., where=...)`` where ``options`` is
    the provider's ``credential`` table, ``strategy`` left out, converted to the class's
    ``Options`` struct; a bad option raises ``ConfigError`` naming the field under
    ``providers.<name>.credential``.  Construction may read files (at startup); nothing after
    it blocks the event loop.

    ``bind`` is called by the stack once, before traffic, with the shared ``StateStore``
    (locks and refreshed tokens that workers share) and the provider's pooled upstream client
    (for token endpoints); unbound, a strategy uses a private in-memory store and its own
    client."""

    name: ClassVar[str]
    Options: ClassVar[type[msgspec.Struct]]
    # Whether a 401 may be cured by fetching a new grant (dispatch retries once if so).
    refreshable: ClassVar[bool] = False

    def __init__(
        self,
        provider: str,
        options: Any,
        *,
        environ: Mapping[str, str],
        where: str | None = None,
    ) -> None:
        self.provider = provider
        # The configuration path of ``options``, for a ConfigError.
        self.where = where or f"providers.{provider}.credential"
        self.credentials: list[Credential] = []

    def bind(self, *, store: StateStore | None, client: UpstreamClient | None) -> None:
        return None

    @abstractmethod
    async def grant(self, credential: Credential) -> Grant:
        """The grant to use now: valid, refreshed first if it is within its margin of expiry.
        Concurrent calls for one credential share one refresh (across workers, through the
        store).  A failure is a ``GatewayError`` of kind ``auth`` (or ``connection``/
        ``timeout`` when the token endpoint cannot be reached)."""

    async def rejected(self, credential: Credential, grant: Grant) -> Grant | None:
        """The upstream answered 401 to ``grant``: a new grant to retry with once, or
        ``None`` when nothing new can be had (a static key).  Called at most once per
        attempt; a grant already replaced by another request's refresh is returned as is."""
        return None

    async def aclose(self) -> None:
        """Release what ``bind`` did not hand over (a private client)."""
        return None

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.provider!r}, credentials={len(self.credentials)})"
