"""``build_app(config)``: the default stack, in the order ARCHITECTURE.md draws it."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from .config import Config, ProviderConfig, config_from_env, parse_config
from .dispatch import ProviderDispatch
from .middleware.auth import InboundKeys
from .providers import Providers

__all__ = ["MOCK_PROVIDERS", "Gateway", "build_app", "with_mock_providers"]

# The built-in demo: one in-process mock upstream per protocol family, so any client can be
# pointed at any of them and see translation at work with no keys and no network.
MOCK_PROVIDERS = {
    "mock-openai": ProviderConfig(
        preset="mock", protocols=["openai_chat", "openai_responses"], models=["gpt-mock"]
    ),
    "mock-anthropic": ProviderConfig(
        preset="mock", protocols=["anthropic_messages"], models=["claude-mock"]
    ),
    "mock-gemini": ProviderConfig(preset="mock", protocols=["gemini"], models=["gemini-mock"]),
}


def with_mock_providers(config: Config) -> Config:
    import msgspec

    return msgspec.structs.replace(config, providers=dict(MOCK_PROVIDERS))


class Gateway:
    """The assembled stack: an ASGI app, plus ``aclose()`` for hosts that mount it without
    running its lifespan (the upstream clients are then made lazily and must be closed by
    the host, e.g. in its own lifespan)."""

    __slots__ = ("app", "config", "providers")

    def __init__(self, app: Any, config: Config, providers: Providers) -> None:
        self.app = app
        self.config = config
        self.providers = providers

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        await self.app(scope, receive, send)

    async def aclose(self) -> None:
        await self.providers.aclose()


def build_app(
    config: Config | Mapping[str, Any] | None = None, *, environ: Mapping[str, str] | None = None
) -> Gateway:
    """The whole gateway as one ASGI app, for ``asgi-rotator serve`` or for embedding."""
    env = os.environ if environ is None else environ
    if config is None:
        config = config_from_env(env)
    elif not isinstance(config, Config):
        config = parse_config(dict(config), env)
    providers = Providers(config, env)
    app: Any = ProviderDispatch(providers, max_body=config.server.max_body_bytes)
    keys = [_secret(k, env) for k in config.server.inbound_keys]
    if keys:
        app = InboundKeys(app, keys=keys)
    return Gateway(app, config, providers)


def _secret(ref: str, env: Mapping[str, str]) -> str:
    if ref.startswith("env:"):
        value = env.get(ref[4:])
        if not value:
            from .config import ConfigError

            raise ConfigError(f"server.inbound_keys: environment variable {ref[4:]} is not set")
        return value
    return ref
