"""Providers, their credentials, and how a model name becomes an ordered list of targets.

Model addressing, in order: an alias; ``provider/model``; a group name (its targets in
order); a bare model listed by exactly one provider; a bare model no provider lists that
exactly one provider's discovered list holds (``asgi_rotator.discovery``); with a single
provider that lists no models, any name goes to it.  Anything else is a ``not_found`` error
that says what exists.

``resolve`` answers from what is known; ``discover`` (awaited before it by the layers that
resolve) fetches the discovered lists a name needs when they are due, and ``targets`` does
both.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

import anyio

from .auth import AuthStrategy, Credential, Grant, make_strategy
from .auth.keys import KeysOptions, KeysStrategy
from .config import PRESETS, Config, ConfigError, ProviderConfig, TargetConfig
from .discovery import ModelList, listing_protocol
from .errors import GatewayError
from .presets import Preset, preset_name
from .redaction import register_secret
from .shaping import Shaping, make_step
from .upstream import DEFAULT_CLIENT, HttpxUpstream, UpstreamClient, make_client

if TYPE_CHECKING:
    from .state import StateStore

__all__ = ["Credential", "Provider", "Providers", "Target"]  # Credential: from .auth

ANTHROPIC_VERSION = "2023-06-01"

# Extra headers whose values are credentials, to be redacted like the keys.
_SECRET_HEADER = re.compile(r"auth|key|token|secret|cookie|password", re.IGNORECASE)

# Default auth header per protocol (each official SDK's own).
_AUTH_BY_PROTOCOL = {
    "openai_chat": "bearer",
    "openai_responses": "bearer",
    "anthropic_messages": "x-api-key",
    "gemini": "x-goog-api-key",
}


class Provider:
    __slots__ = (
        "_turn",
        "allow_listed",
        "auth",
        "base_urls",
        "client",
        "credentials",
        "headers",
        "models",
        "name",
        "protocols",
        "session_keys",
        "shaping",
        "strategy",
    )

    def __init__(
        self,
        name: str,
        *,
        protocols: tuple[str, ...],
        base_urls: Mapping[str, str],
        strategy: AuthStrategy,
        models: tuple[str, ...] = (),
        auth: str | None = None,
        headers: Mapping[str, str] | None = None,
        client: UpstreamClient | None = None,
        allow_listed: bool = False,
        shaping: Shaping | None = None,
        session_keys: tuple[str, ...] = (),
    ) -> None:
        self.name = name
        self.protocols = protocols
        self.base_urls = {p: base_urls[p].rstrip("/") for p in protocols}
        self.strategy = strategy  # how credentials become grants (asgi_rotator.auth)
        self.credentials = strategy.credentials
        self.models = models
        self.allow_listed = allow_listed  # only ``models`` may be asked for
        self.auth = auth
        self.headers = list((headers or {}).items())
        self.client: UpstreamClient = client or HttpxUpstream()
        # Request shaping (asgi_rotator.shaping): None when the provider declares no step.
        self.shaping = shaping or None
        # Body fields the backend wants repeated per conversation (a preset's declaration;
        # the field cache's ``provider_session_keys`` rule fills them).
        self.session_keys = session_keys
        self._turn = 0

    def next_credential(self) -> Credential:
        """Plain round robin; the cooldown layer replaces this with health-aware rotation."""
        credential = self.credentials[self._turn % len(self.credentials)]
        self._turn += 1
        return credential

    def protocol_for(self, client_protocol: str | None) -> str:
        """The client's own protocol when this provider speaks it (no translation), else
        the provider's preferred one."""
        if client_protocol in self.protocols:
            return client_protocol  # type: ignore[return-value]
        return self.protocols[0]

    @property
    def continues_natively(self) -> bool:
        """Whether ``previous_response_id`` may go upstream: not when the provider's body
        rules drop or refuse it (a backend that stores nothing)."""
        return self.shaping is None or not self.shaping.removes("previous_response_id")

    def url(self, protocol: str, path: str) -> str:
        return self.base_urls[protocol] + path

    def request_headers(self, protocol: str, grant: Grant | None) -> list[tuple[str, str]]:
        """The upstream request's headers, ``grant``'s token in the provider's auth style."""
        headers = [("content-type", "application/json"), ("user-agent", "asgi-rotator")]
        if protocol == "anthropic_messages":
            headers.append(("anthropic-version", ANTHROPIC_VERSION))
        if grant is not None:
            style = self.auth or _AUTH_BY_PROTOCOL[protocol]
            if style == "bearer":
                headers.append(("authorization", f"Bearer {grant.token}"))
            elif style != "none":
                headers.append((style, grant.token))
        headers.extend(self.headers)
        return headers

    def __repr__(self) -> str:
        return f"Provider({self.name!r}, protocols={self.protocols!r})"


class Target:
    """One ``provider/model`` to try, with per-target request overrides."""

    __slots__ = ("model", "params", "provider")

    def __init__(
        self, provider: Provider, model: str, params: Mapping[str, Any] | None = None
    ) -> None:
        self.provider = provider
        self.model = model
        self.params = dict(params or {})

    @property
    def name(self) -> str:
        return f"{self.provider.name}/{self.model}"

    def __repr__(self) -> str:
        return f"Target({self.name!r})"


class Providers:
    """All configured providers, groups and aliases; resolves model names to targets.

    ``client`` names the upstream HTTP client implementation (``upstream.make_client``:
    ``auto``, ``aiohttp``, ``httpx2``, ``httpx``); ``mock://`` providers always use httpx."""

    def __init__(
        self,
        config: Config,
        environ: Mapping[str, str] | None = None,
        *,
        client: str = DEFAULT_CLIENT,
    ) -> None:
        env = os.environ if environ is None else environ
        self.config = config
        self.providers: dict[str, Provider] = {
            name: _build_provider(name, pc, env, client) for name, pc in config.providers.items()
        }
        # Per provider that discovers its models; the bare names they hold that no provider
        # lists, and a count of the changes to them (a layer caching resolutions watches it).
        self.discovery: dict[str, ModelList] = {}
        for name, pc in config.providers.items():
            model_list = _model_list(pc, self.providers[name])
            if model_list is not None:
                self.discovery[name] = model_list
        self._discovered: dict[str, list[str]] = {}
        self.models_version = 0
        self.groups: dict[str, list[tuple[str, dict[str, Any]]]] = {
            name: [
                (t.target, t.params) if isinstance(t, TargetConfig) else (t, {})
                for t in group.targets
            ]
            for name, group in config.groups.items()
        }
        self._bare: dict[str, list[str]] = {}
        for provider in self.providers.values():
            for model in provider.models:
                self._bare.setdefault(model, []).append(provider.name)
        for name, targets in self.groups.items():
            for i, (target, _) in enumerate(targets):
                self._split(
                    target, f"groups.{name}.targets[{i}]"
                )  # fail at startup, not per request

    def __iter__(self) -> Iterator[Provider]:
        return iter(self.providers.values())

    def __len__(self) -> int:
        return len(self.providers)

    def resolve(self, model: str, *, discovered: bool = True) -> list[Target]:
        """Ordered targets for a model name (one, unless it names a group), from the
        configuration and the lists discovered so far (``discovered=False``: the
        configuration alone)."""
        model = self.config.aliases.get(model, model)
        group = self.groups.get(model)
        if group is not None:
            return [self._target(spec, params) for spec, params in group]
        return [self._target(model, {}, discovered)]

    async def targets(self, model: str) -> list[Target]:
        """``resolve``, after ``discover`` for the name when the configuration alone does
        not resolve it (what it does resolve, a discovered list cannot change)."""
        if self.discovery:
            try:
                return self.resolve(model, discovered=False)
            except GatewayError:
                await self.discover(model)
        return self.resolve(model)

    async def discover(self, model: str | None = None) -> None:
        """Fetch the discovered model lists that are due, when ``model`` needs them (the
        configuration alone does not resolve it) or, without a model, for a listing.
        Never raises for a failed fetch (``discovery.ModelList.refresh``)."""
        if not self.discovery:
            return
        due = [model_list for model_list in self.discovery.values() if model_list.due()]
        if not due:
            return
        if model is not None:
            try:
                self.resolve(model, discovered=False)
            except GatewayError:
                pass
            else:
                return  # the configuration answers it: no request waits on a fetch
        changed: list[bool] = []

        async def refresh(model_list: ModelList) -> None:
            changed.append(await model_list.refresh())

        if len(due) == 1:
            await refresh(due[0])
        else:
            async with anyio.create_task_group() as group:
                for model_list in due:
                    group.start_soon(refresh, model_list)
        if any(changed):
            self._index()

    def _index(self) -> None:
        discovered: dict[str, list[str]] = {}
        for name, model_list in self.discovery.items():
            for model in model_list.models:
                if model not in self._bare:  # a listed model goes where the listing says
                    discovered.setdefault(model, []).append(name)
        self._discovered = discovered
        self.models_version += 1

    def _target(self, spec: str, params: dict[str, Any], discovered: bool = True) -> Target:
        provider_name, _, model = spec.partition("/")
        provider = self.providers.get(provider_name) if model else None
        if provider is not None:
            if provider.allow_listed and model not in provider.models:
                raise GatewayError(
                    "not_found",
                    f"model {model!r} is not offered by provider {provider_name!r} "
                    f"(it allows only its listed models: {', '.join(provider.models)})",
                    param="model",
                )
            return Target(provider, model, params)
        owners = self._bare.get(spec) or (self._discovered.get(spec, []) if discovered else [])
        if len(owners) == 1:
            return Target(self.providers[owners[0]], spec, params)
        if len(owners) > 1:
            raise GatewayError(
                "not_found",
                f"model {spec!r} is offered by several providers ({', '.join(owners)}); "
                f"ask for one as 'provider/{spec}'",
                param="model",
            )
        if len(self.providers) == 1:
            (only,) = self.providers.values()
            if not only.models:
                return Target(only, spec, params)
        failed = sorted(name for name, m in self.discovery.items() if m.failure is not None)
        unknown = "not configured or discovered" if self.discovery else "not configured"
        raise GatewayError(
            "not_found",
            f"model {spec!r} is {unknown}; use 'provider/model' with a provider among "
            f"{', '.join(sorted(self.providers)) or '(none)'}, a listed model or a group"
            + (f" (the model lists of {', '.join(failed)} could not be fetched)" if failed else ""),
            param="model",
        )

    def _split(self, spec: str, where: str) -> None:
        provider_name, _, model = spec.partition("/")
        if not model or provider_name not in self.providers:
            if spec not in self._bare:
                raise ConfigError(
                    f"{where}: {spec!r} is not 'provider/model' with a configured provider"
                )
            return
        provider = self.providers[provider_name]
        if provider.allow_listed and model not in provider.models:
            raise ConfigError(
                f"{where}: {spec!r}: provider {provider_name!r} allows only its listed models"
            )

    def model_ids(self) -> list[str]:
        """Every name a client may ask for, for the models listings (the discovered lists
        as they are: ``discover()`` first brings them up to date)."""
        ids: list[str] = []
        for provider in self.providers.values():
            ids.extend(f"{provider.name}/{m}" for m in provider.models)
            model_list = self.discovery.get(provider.name)
            if model_list is not None:
                ids.extend(f"{provider.name}/{m}" for m in model_list.models)
        ids.extend(m for m, owners in self._bare.items() if len(owners) == 1)
        ids.extend(m for m, owners in self._discovered.items() if len(owners) == 1)
        ids.extend(self.groups)
        ids.extend(self.config.aliases)
        return list(dict.fromkeys(ids))

    def bind_store(self, store: StateStore | None) -> None:
        """Give every auth strategy the shared store (refresh locks, refreshed tokens) and
        its provider's upstream client.  The stack calls this once; unbound, strategies
        keep their state in memory."""
        for provider in self.providers.values():
            provider.strategy.bind(store=store, client=provider.client)

    async def aclose(self) -> None:
        for provider in self.providers.values():
            await provider.strategy.aclose()
            await provider.client.aclose()


def _preset(name: str, pc: ProviderConfig) -> Preset | None:
    return PRESETS.get(preset_name(name, pc.preset) or "")


def _model_list(pc: ProviderConfig, provider: Provider) -> ModelList | None:
    """The provider's discovered list, when it discovers: as configured, else when it lists
    no models and is OpenAI-compatible or of a preset (every plain preset has a models
    endpoint).  Not by default for a provider with request shaping (the coding tools'
    backends): the fetch carries the credential's headers, not what the shaping steps add,
    which such a backend needs before it answers."""
    protocol = listing_protocol(provider.protocols)
    wanted = pc.discover_models
    if wanted is None:
        preset = _preset(provider.name, pc)
        wanted = (
            not pc.models
            and pc.allow_models == "any"
            and provider.shaping is None
            and (preset is not None or protocol in ("openai_chat", "openai_responses"))
        )
    if not wanted or protocol is None:
        return None
    return ModelList(provider, protocol, ttl=pc.models_ttl, timeout=pc.timeout)


def _build_provider(
    name: str, pc: ProviderConfig, env: Mapping[str, str], client_name: str = DEFAULT_CLIENT
) -> Provider:
    preset = _preset(name, pc)
    protocols = tuple(
        pc.protocols or ([pc.protocol] if pc.protocol else preset.protocols if preset else ())
    )
    base_urls: dict[str, str] = {}
    for protocol in protocols:
        url = pc.base_urls.get(protocol) or pc.base_url
        if url is None and preset is not None:
            url = preset.base_urls.get(protocol, preset.base_url)
        if url is None:
            raise ConfigError(f"providers.{name}: no base_url for protocol {protocol!r}")
        base_urls[protocol] = url
    strategy: AuthStrategy
    # Keys given by hand are a static pool, even on a preset whose backend has its own
    # credential file (a long-lived token); otherwise the preset's auth strategy.
    table = pc.credential
    if table is None and not pc.keys and preset is not None:
        table = preset.credential
    if table is not None:
        strategy = make_strategy(name, table, env)
    else:
        key_refs = list(pc.keys)
        if not key_refs and preset is not None and preset.env and env.get(preset.env):
            key_refs = [f"env:{preset.env}"]
        strategy = KeysStrategy(
            name, KeysOptions(keys=key_refs), environ=env, where=f"providers.{name}"
        )
    shaped_headers = {
        header: value
        for step in pc.shaping
        if step.step == "headers"
        for table in (step.options.get("set"), step.options.get("append"))
        if isinstance(table, dict)
        for header, value in table.items()
        if isinstance(value, str)
    }
    for header, value in {**pc.headers, **shaped_headers}.items():
        if _SECRET_HEADER.search(header):
            register_secret(value)  # an auth header set by hand (a proxy's key, a cookie)
            register_secret(value.partition(" ")[2])  # the credential of "Bearer <credential>"
    client: UpstreamClient
    if any(url.startswith("mock://") for url in base_urls.values()):
        from .mock import mock_transport  # the in-process mock provider, only when asked for

        base_urls = {p: u.replace("mock://", "http://", 1) for p, u in base_urls.items()}
        client = HttpxUpstream(transport=mock_transport())
    else:
        try:
            client = make_client(
                client_name,
                timeout=pc.timeout,
                connect_timeout=pc.connect_timeout,
                max_connections=pc.max_connections,
            )
        except ValueError as exc:
            raise ConfigError(f"providers.{name}: {exc}") from None
    shaping = []
    steps = [
        *(preset.shaping if preset is not None else ()),
        *({"step": step.step, "options": step.options} for step in pc.shaping),
    ]
    own = len(steps) - len(pc.shaping)
    for i, step in enumerate(steps):
        try:
            shaping.append(make_step(step["step"], step.get("options", {})))
        except ValueError as exc:
            where = (
                f"providers.{name}.shaping[{i - own}]"
                if i >= own
                else f"preset {preset_name(name, pc.preset)}"
            )
            raise ConfigError(f"{where}: {exc}") from None
    return Provider(
        name,
        protocols=protocols,
        base_urls=base_urls,
        strategy=strategy,
        models=tuple(pc.models),
        allow_listed=pc.allow_models == "listed",
        auth=pc.auth or (preset.auth if preset is not None else None),
        shaping=Shaping(shaping),
        headers=pc.headers,
        client=client,
        session_keys=preset.session_keys if preset is not None else (),
    )
