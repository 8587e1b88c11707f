"""Where ``CooldownRetry`` keeps its state in the ``StateStore``, and how it reads it.

A cooldown scope is a credential (``key:<credential id>``), a credential for one model
(``key-model:<credential id>:<model>``), a model at a provider (``model:<provider>/<model>``)
or a whole provider (``provider:<provider>``); each has a deadline (``until:<scope>``) and a
consecutive-failure count (``fails:<scope>``).  ``Pool`` is a provider's credentials as the
layer sees them, ``Scopes`` every scope that concerns one model at one pool (its keys
prepared once: what a request reads in its one ``get_many``), ``ScopeState`` one such read.

The model name is the client's choice: ``model_in_key`` is how it stands in a key, and no
string can make it fail (docs/routing.md, "State").
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

from ..providers import Credential, Provider
from ..state import Namespace

__all__ = ["Pool", "ScopeState", "Scopes", "model_in_key"]

_NEVER = 0.0
_SCOPES_CACHED = 1024  # models per provider whose scope keys are kept formatted
# Longer model names are kept in state keys as a digest: with the longest prefix a scope adds
# (namespace, kind, credential id) a key stays within the store's limit.
_MODEL_IN_KEY_LIMIT = 256


class Pool:
    """A provider's credentials as this layer sees them, computed once."""

    __slots__ = (
        "_scopes",
        "credentials",
        "name",
        "per_model",
        "provider",
        "rotation",
        "store",
        "tiers",
    )

    def __init__(
        self,
        store: Namespace,
        provider: Provider,
        rotation: str,
        tiers: Sequence[int] | None,
        per_model: bool,
    ) -> None:
        self.store = store
        self.provider = provider
        self.name = provider.name
        # A provider without keys is one anonymous key (``key:<provider>``): when it cools
        # down, the provider is unavailable, as when every key of a pool is.
        self.credentials: list[Credential | None] = list(provider.credentials) or [None]
        if tiers is None:
            tiers = (
                range(len(self.credentials))
                if rotation == "priority"
                else [0] * len(self.credentials)
            )
        self.tiers = list(tiers)
        self.rotation = rotation
        self.per_model = per_model
        self._scopes: dict[str, Scopes] = {}

    def key(self, index: int) -> str:
        credential = self.credentials[index]
        return f"key:{self.name if credential is None else credential.id}"

    def key_model(self, index: int, model: str) -> str:
        credential = self.credentials[index]
        name = self.name if credential is None else credential.id
        return f"key-model:{name}:{model_in_key(model)}"

    def model(self, model: str) -> str:
        return f"model:{self.name}/{model_in_key(model)}"

    def whole(self) -> str:
        return f"provider:{self.name}"

    def scopes(self, model: str) -> Scopes:
        scopes = self._scopes.get(model)
        if scopes is None:
            if len(self._scopes) >= _SCOPES_CACHED:
                self._scopes.clear()  # a client cycling through model names: start again
            scopes = self._scopes[model] = Scopes(self, model)
        return scopes


class Scopes:
    """Every cooldown scope that concerns one model at one pool, with its keys in the
    backend store (namespace prefix included), formatted and checked once: what a request
    reads in its one ``get_many``."""

    __slots__ = ("count", "everyone", "keys", "model", "per_key", "whole")

    def __init__(self, pool: Pool, model: str) -> None:
        listed = [pool.model(model), pool.whole()]
        for index in range(len(pool.credentials)):
            listed.append(pool.key(index))
            listed.append(pool.key_model(index, model))
        names = list(dict.fromkeys(listed))
        position = {name: i for i, name in enumerate(names)}
        self.count = len(names)
        # Deadlines first, then failure counts, in the order of ``names``.
        self.keys = pool.store.prepare(
            [f"until:{s}" for s in names] + [f"fails:{s}" for s in names]
        )
        self.model = position[listed[0]]
        self.whole = position[listed[1]]
        # Per credential: the positions of its own scope and of its (credential, model) scope.
        self.per_key = [
            (position[listed[2 + 2 * i]], position[listed[3 + 2 * i]])
            for i in range(len(pool.credentials))
        ]
        self.everyone = list(range(len(pool.credentials)))


class ScopeState:
    """One read of the cooldown state for a target: the stored values of ``scopes.keys``."""

    __slots__ = ("quiet", "scopes", "values")

    def __init__(self, scopes: Scopes, values: list[bytes | None]) -> None:
        self.scopes = scopes
        self.values = values
        # The usual case, and the cheap one: no deadline and no failure count at all.
        self.quiet = values.count(None) == len(values)

    def until(self, position: int) -> float:
        value = self.values[position]
        return _NEVER if value is None else float(value)

    def failed(self, position: int) -> bool:
        value = self.values[self.scopes.count + position]
        return value is not None and value != b"0"


def model_in_key(model: str) -> str:
    """``model`` as it stands in a state key.  Any name a provider uses is kept as it is;
    one that a state key could not hold (a control character, too long) or that could be
    mistaken for this encoding becomes a digest.  A client chooses the model name, so this
    must never fail: the layer works alone around any app, with no validation above it."""
    if len(model) <= _MODEL_IN_KEY_LIMIT and model.isprintable() and not model.startswith("~"):
        return model
    digest = hashlib.sha256(model.encode("utf-8", "surrogatepass")).hexdigest()
    return f"~{digest}"
