"""Auth strategies: how a provider's credentials become what each upstream request carries.

Configuration: a provider's ``credential`` table names a strategy and its options; the
``auth`` field stays the header style (``bearer``, ``x-api-key`` ...)::

    [providers.claude]
    preset = "anthropic"
    auth = "bearer"
    credential = {strategy = "oauth_file", layout = "claude_code", path = "~/.claude/.credentials.json"}

Without a ``credential`` table, ``keys`` (and the preset's key variable) make a ``keys``
strategy, as before.

The interface (``_base.py``):

* ``AuthStrategy``: made once per provider, ``Class(provider, options, environ=, where=)``;
  ``credentials`` is its pool (``Credential``: ``id`` = ``provider#index``, nothing secret);
  ``bind(store=, client=)`` hands it the shared ``StateStore`` and the provider's upstream
  client; ``await grant(credential)`` is the ``Grant`` to send now (refreshed first when
  within its margin of expiry); ``await rejected(credential, grant)`` after a 401 is a new
  grant to retry once with, or ``None``.
* ``Grant``: ``token`` (the secret for the auth header), ``context`` (``account_id``,
  ``project``, ``api_base`` ...: what request shaping may need), ``expires_at``,
  ``fingerprint`` (what logs and comparisons use; the repr shows only it).

Dispatch asks ``provider.strategy.grant(credential)`` per attempt and builds the headers with
``provider.request_headers(protocol, grant)``; on a 401, when ``strategy.refreshable``, it asks
``rejected`` once and resends once.  Never a loop.

``RefreshingStrategy`` is the base of the token strategies (margin, one refresh per
credential across requests and workers, the 401 rule); docs/auth.md says how to write one.

Built-in strategies: ``keys``, ``oauth_file``, ``token_exchange``, ``google_oauth``; any
other registered under the entry point group ``asgi_rotator.auth``
(``name = "package.module:Class"``; a registered built-in name replaces the built-in).
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import cache
from importlib import import_module
from importlib.metadata import entry_points
from typing import Any

import msgspec

from ._base import AuthStrategy, Credential, Grant, fingerprint
from ._refreshing import RefreshingStrategy, TokenSet

__all__ = [
    "BUILTIN",
    "AuthStrategy",
    "Credential",
    "Grant",
    "RefreshingStrategy",
    "TokenSet",
    "fingerprint",
    "get_strategy",
    "make_strategy",
    "option_problems",
    "strategy_names",
]

BUILTIN = {
    "keys": "asgi_rotator.auth.keys:KeysStrategy",
    "oauth_file": "asgi_rotator.auth.oauth_file:OAuthFileStrategy",
    "token_exchange": "asgi_rotator.auth.token_exchange:TokenExchangeStrategy",
    "google_oauth": "asgi_rotator.auth.google_oauth:GoogleOAuthStrategy",
}


@cache
def _entry_point_targets() -> dict[str, str]:
    return {ep.name: ep.value for ep in entry_points(group="asgi_rotator.auth")}


def strategy_names() -> list[str]:
    return sorted({*BUILTIN, *_entry_point_targets()})


def get_strategy(name: str) -> type[AuthStrategy]:
    """The strategy class registered as ``name``; ``KeyError`` naming the known ones."""
    target = _entry_point_targets().get(name) or BUILTIN.get(name)
    if target is None:
        raise KeyError(f"unknown auth strategy {name!r}; known: {', '.join(strategy_names())}")
    module, _, attr = target.partition(":")
    cls: type[AuthStrategy] = getattr(import_module(module), attr)
    return cls


def option_problems(table: Mapping[str, Any], where: str) -> list[tuple[str, str]]:
    """What is wrong with a ``credential`` table, as (path, message) pairs."""
    from ..config_check import shape_problems  # local: config imports this module's users

    strategy = table.get("strategy")
    if not isinstance(strategy, str):
        return [(f"{where}.strategy", f"is required; known: {', '.join(strategy_names())}")]
    try:
        cls = get_strategy(strategy)
    except KeyError:
        known = ", ".join(strategy_names())
        return [(f"{where}.strategy", f"unknown auth strategy {strategy!r}; known: {known}")]
    options = {k: v for k, v in table.items() if k != "strategy"}
    return [(p.path, p.message) for p in shape_problems(options, cls.Options, where, secret=True)]


def make_strategy(
    provider: str,
    table: Mapping[str, Any],
    environ: Mapping[str, str],
    *,
    where: str | None = None,
) -> AuthStrategy:
    """The strategy a ``credential`` table declares (``strategy`` plus its options)."""
    from ..config import ConfigError

    where = where or f"providers.{provider}.credential"
    problems = option_problems(table, where)
    if problems:
        raise ConfigError([f"{path}: {message}" for path, message in problems])
    cls = get_strategy(table["strategy"])
    options = msgspec.convert({k: v for k, v in table.items() if k != "strategy"}, cls.Options)
    return cls(provider, options, environ=environ, where=where)
