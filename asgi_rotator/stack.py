"""``build_app(config)``: the default stack, in the order docs/architecture.md draws it.

    Health              /healthz and /readyz, outside inbound keys and tracing: probes carry
                        no key, and are neither traffic to trace nor to log
    Tracing             only when [tracing] or the OTEL_* variables ask for it; outermost
                        of the request's layers, so refusals are traced too (a Prometheus
                        /metrics sits outside it)
    LogLines            a warning line per failed or failed-over request (info per request
                        when asked), and x-request-id on every response
    InboundKeys         only when server.inbound_keys is set; outside everything that spends
                        money or reads stored state
    RequestLog          only when logging.requests or logging.totals is set: a JSON line
                        per request, usage totals per inbound key
    ProtocolNegotiation detection, one validated parse, every error in the client's protocol
    ResponsesState      previous_response_id, stored responses (responses.enabled)
    FallbackRouter      groups, fallbacks (routing.enabled)
    CooldownRetry       key rotation, cooldowns, retries (cooldown.enabled)
    FieldCache          per attempt: reasoning payloads carried between turns, adapters
                        (field_cache.enabled)
    StreamGuard         timeouts, heartbeats, disconnects, close records (stream.enabled)
    ProviderDispatch    the terminal app

Any layer can be left out (``without={"cooldown"}``), which is how the benchmarks measure
what each one costs; the order of the rest never changes.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import anyio
import msgspec

from .config import Config, ProviderConfig, config_from_env, parse_config, resolve_secret
from .dispatch import ProviderDispatch
from .exchange import SCOPE_KEY
from .field_rules import rules_from_config
from .health import Health
from .middleware.auth import InboundKeys
from .middleware.cooldown import CooldownRetry
from .middleware.fallback import FallbackRouter
from .middleware.field_cache import FieldCache
from .middleware.log_lines import LogLines
from .middleware.protocol import ProtocolNegotiation
from .middleware.request_log import RequestLog
from .middleware.responses import ResponsesState
from .middleware.stream_guard import StreamGuard
from .providers import Providers
from .state import FileStore, MemoryStore, RedisStore, StateStore
from .telemetry import MetricsEndpoint, Telemetry, telemetry_from_config
from .usage_totals import UsageTotals

__all__ = [
    "LAYERS",
    "MOCK_PROVIDERS",
    "Gateway",
    "build_app",
    "key_name",
    "make_store",
    "with_mock_providers",
]

# Innermost first; each name can be switched off with ``without=``.
LAYERS = (
    "stream_guard",
    "field_cache",
    "cooldown",
    "fallback",
    "responses",
    "protocol",
    "request_log",
    "auth",
    "log_lines",
    "health",
)

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
    return msgspec.structs.replace(config, providers=dict(MOCK_PROVIDERS))


class Gateway:
    """The assembled stack: an ASGI app, plus ``aclose()`` for hosts that mount it without
    running its lifespan (the upstream clients are then made lazily and must be closed by
    the host, e.g. in its own lifespan)."""

    __slots__ = ("app", "config", "providers", "stores", "telemetry")

    def __init__(
        self,
        app: Any,
        config: Config,
        providers: Providers,
        stores: list[StateStore],
        telemetry: Telemetry | None = None,
    ) -> None:
        self.app = app
        self.config = config
        self.providers = providers
        self.stores = stores
        self.telemetry = telemetry

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(scope, receive, send)
            return
        try:
            await self.app(scope, receive, send)
        finally:
            exchange = scope.get(SCOPE_KEY)
            if exchange is not None:
                exchange.detach()  # freed by reference counting, not by the GC

    async def _lifespan(self, scope: Any, receive: Any, send: Any) -> None:
        # Apart from __call__: its closure would cost every request two cells.
        async def lifespan_send(message: Any) -> None:
            # Dispatch closed the upstream clients; the layers' stores close here, before
            # the server hears that shutdown is complete.
            if message["type"] == "lifespan.shutdown.complete":
                for store in self.stores:
                    await store.aclose()
                await self._flush_telemetry()
            await send(message)

        await self.app(scope, receive, lifespan_send)

    async def aclose(self) -> None:
        await self.providers.aclose()
        for store in self.stores:
            await store.aclose()
        await self._flush_telemetry()

    async def _flush_telemetry(self) -> None:
        # The SDK's shutdown exports what is still queued and joins its threads: blocking,
        # so off the event loop.
        telemetry = self.telemetry
        if telemetry is not None and (telemetry.tracer_provider or telemetry.meter_provider):
            self.telemetry = None
            await anyio.to_thread.run_sync(telemetry.shutdown)


def make_store(config: Config, name: str, environ: Mapping[str, str]) -> StateStore:
    """The configured store for one layer's state (``name``: ``cooldown``, ``responses``,
    ``usage``, ``auth``).  One store per layer: a layer's entries never evict another's (LRU, file
    cap)."""
    if config.state.backend == "file":
        assert config.state.path is not None
        return FileStore(Path(config.state.path) / name, max_entries=config.state.max_entries)
    if config.state.backend == "redis":
        assert config.state.url is not None
        return RedisStore(
            resolve_secret(config.state.url, environ, "state.url"), prefix=f"asgi_rotator:{name}:"
        )
    return MemoryStore(max_entries=config.state.max_entries)


def key_name(ref: str, index: int) -> str:
    """An inbound key's name in the request log and the usage totals: the environment
    variable it comes from (``env:TEAM_A`` is ``TEAM_A``), else ``key1``, ``key2`` ..."""
    return ref[4:] if ref.startswith("env:") else f"key{index + 1}"


def build_app(
    config: Config | Mapping[str, Any] | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    without: Iterable[str] = (),
) -> Gateway:
    """The whole gateway as one ASGI app, for ``asgi-rotator serve`` or for embedding."""
    env = os.environ if environ is None else environ
    if config is None:
        config = config_from_env(env)
    elif not isinstance(config, Config):
        config = parse_config(dict(config), env)
    skip = set(without)
    # "tracing" too, though not in LAYERS: it is on only when configured, so the benchmarks'
    # one-layer-off arms would measure nothing by leaving it out.
    unknown = skip - {*LAYERS, "tracing"}
    if unknown:
        raise ValueError(
            f"without: unknown layers {sorted(unknown)}; known: {', '.join(LAYERS)}, tracing"
        )
    providers = Providers(config, env, client=config.server.upstream_client)
    max_body = config.server.max_body_bytes
    stores: list[StateStore] = []

    def store(name: str) -> StateStore:
        made = make_store(config, name, env)
        stores.append(made)
        return made

    if any(provider.strategy.refreshable for provider in providers):
        # Refresh locks and refreshed tokens, shared by every worker on the store.
        providers.bind_store(store("auth"))
    app: Any = ProviderDispatch(
        providers, max_body=max_body, max_event=config.stream.max_event_bytes
    )
    if config.stream.enabled and "stream_guard" not in skip:
        app = StreamGuard(app, **_options(config.stream, "max_event_bytes"), max_body=max_body)
    if config.field_cache.enabled and "field_cache" not in skip:
        rules = rules_from_config(config.field_cache)
        if rules:
            app = FieldCache(app, rules=rules, store=store("field_cache"), providers=providers)
    if config.cooldown.enabled and "cooldown" not in skip:
        app = CooldownRetry(
            app,
            providers=providers,
            store=store("cooldown"),
            **_options(config.cooldown, "rotation"),
            **_key_pools(config),
        )
    if config.routing.enabled and "fallback" not in skip:
        app = FallbackRouter(app, providers=providers, **_options(config.routing))
    if config.responses.enabled and "responses" not in skip:
        app = ResponsesState(
            app,
            store=store("responses"),
            providers=providers,
            **_options(config.responses),
            max_body=max_body,
        )
    if "protocol" not in skip:
        app = ProtocolNegotiation(app, max_body=max_body)
    logging = config.logging
    if (logging.requests or logging.totals) and "request_log" not in skip:
        app = RequestLog(
            app,
            path=logging.requests,
            totals=UsageTotals(store("usage"), ttl_days=logging.totals_days)
            if logging.totals
            else None,
        )
    keys = _inbound_keys(config, env)
    if keys and "auth" not in skip:
        app = InboundKeys(app, keys=keys)
    if "log_lines" not in skip:
        app = LogLines(app)
    telemetry = telemetry_from_config(config.tracing, env) if "tracing" not in skip else None
    if telemetry is not None:
        from .middleware.tracing import Tracing  # local: imports opentelemetry

        app = Tracing(
            app,
            tracer_provider=telemetry.tracer_provider,
            meter_provider=telemetry.meter_provider,
            capture_content=telemetry.capture_content,
            max_content_bytes=telemetry.max_content_bytes,
            environ=env,
        )
        if telemetry.registry is not None:
            app = MetricsEndpoint(app, registry=telemetry.registry, path=telemetry.prometheus_path)
    if "health" not in skip:
        # Only the stores that live outside the process can be unreachable.
        remote = [s for s in stores if not isinstance(s, MemoryStore)]
        app = Health(app, providers=providers, stores=remote)
    return Gateway(app, config, providers, stores, telemetry)


def _options(section: msgspec.Struct, *leave_out: str) -> dict[str, Any]:
    """A config section as its layer's keyword arguments: the section's fields are named
    like the layer's options, apart from ``enabled`` (whether the stack has the layer) and
    what ``leave_out`` names (options of another part)."""
    return {
        name: getattr(section, name)
        for name in section.__struct_fields__
        if name != "enabled" and name not in leave_out
    }


def _inbound_keys(config: Config, env: Mapping[str, str]) -> dict[str, str]:
    return {
        key_name(ref, i): resolve_secret(ref, env, "server.inbound_keys")
        for i, ref in enumerate(config.server.inbound_keys)
    }


def _key_pools(config: Config) -> dict[str, Any]:
    """CooldownRetry's per-provider options, from each provider's section: its rotation
    (else [cooldown]'s), key tiers and rate-limit scope (the layer's default if unset)."""
    providers = config.providers.items()
    return {
        "rotation": {name: pc.rotation or config.cooldown.rotation for name, pc in providers},
        "tiers": {name: pc.key_tiers for name, pc in providers if pc.key_tiers},
        "rate_limit_scope": {
            name: pc.rate_limit_scope for name, pc in providers if pc.rate_limit_scope
        },
    }
