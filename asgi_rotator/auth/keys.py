"""``keys``: a static pool of API keys, as configured (``env:NAME`` or literal)."""

from __future__ import annotations

from collections.abc import Mapping

import msgspec

from ..config import resolve_secret
from ..redaction import register_secret
from ._base import AuthStrategy, Credential, Grant

__all__ = ["KeysStrategy"]


class KeysOptions(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    keys: list[str] = msgspec.field(default_factory=list)  # "env:NAME" or literal
    # What request shaping may need beside the key (``project``, ``account_id``): the same
    # for every key of the pool.
    context: dict[str, str] = msgspec.field(default_factory=dict)


class KeysStrategy(AuthStrategy):
    """Each key is a credential; its grant never changes, so a 401 is not retried here (the
    cooldown layer takes the key out of rotation instead)."""

    name = "keys"
    Options = KeysOptions

    def __init__(
        self,
        provider: str,
        options: KeysOptions,
        *,
        environ: Mapping[str, str],
        where: str | None = None,
    ) -> None:
        super().__init__(provider, options, environ=environ, where=where)
        self._grants: list[Grant] = []
        for i, ref in enumerate(options.keys):
            secret = resolve_secret(ref, environ, f"{self.where}.keys[{i}]")
            register_secret(secret)
            self.credentials.append(Credential(provider, i))
            self._grants.append(Grant(secret, context=options.context))

    async def grant(self, credential: Credential) -> Grant:
        return self._grants[credential.index]
