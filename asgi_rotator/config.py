"""Configuration: one TOML or JSON file, environment overrides, typed by msgspec.

Errors name the exact path and the bad value (``providers.openai.timeout: expected a number,
got "fast"``).  Secrets are references (``env:NAME``) resolved when providers are built and
never kept in anything that prints.

Environment overrides: ``ASGI_ROTATOR__SECTION__KEY=value`` sets ``[section] key``; the value
is read as JSON when it parses (numbers, booleans, arrays), else as a string.  So
``ASGI_ROTATOR__SERVER__PORT=9000`` or ``ASGI_ROTATOR__PROVIDERS__OPENAI__KEYS='["env:K"]'``.

With no file, providers come from the standard variables: ``OPENAI_API_KEY``,
``ANTHROPIC_API_KEY``, ``GEMINI_API_KEY`` or ``GOOGLE_API_KEY``, and the preset services'
(``OPENROUTER_API_KEY``, ``GROQ_API_KEY`` ...); ``NAME_1``, ``NAME_2`` ... add keys to a pool.
"""

from __future__ import annotations

import json
import os
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import msgspec
from msgspec import Struct, field

__all__ = [
    "PRESETS",
    "Config",
    "ConfigError",
    "CooldownConfig",
    "GroupConfig",
    "ProviderConfig",
    "ResponsesConfig",
    "RoutingConfig",
    "ServerConfig",
    "StateConfig",
    "StreamConfig",
    "TargetConfig",
    "config_from_env",
    "load_config",
    "parse_config",
    "resolve_secret",
]

ENV_PREFIX = "ASGI_ROTATOR__"

AuthStyle = Literal["bearer", "x-api-key", "x-goog-api-key", "none"]


class ConfigError(ValueError):
    """A configuration problem, with the path of the offending value in its message."""


class ServerConfig(Struct, kw_only=True, forbid_unknown_fields=True):
    host: str = "127.0.0.1"
    port: int = 8080
    # Keys clients must present (Authorization: Bearer, x-api-key, x-goog-api-key or ?key=).
    # Required before the gateway serves on a non-loopback address.
    inbound_keys: list[str] = field(default_factory=list)
    max_body_bytes: int = 32 * 1024 * 1024
    # Upstream HTTP client: "auto" (the fastest installed: aiohttp, then httpx2, then httpx),
    # or one of those names.
    upstream_client: str = "auto"


class ProviderConfig(Struct, kw_only=True, forbid_unknown_fields=True):
    # A preset ("openai", "anthropic", "gemini", "openrouter", "groq", ...) fills in protocol,
    # base_url and the key variable; a provider named like a preset uses it by default.
    preset: str | None = None
    protocol: str | None = None
    protocols: list[str] | None = None  # several = the provider speaks them all, first preferred
    base_url: str | None = None
    base_urls: dict[str, str] = field(default_factory=dict)  # per protocol, when they differ
    keys: list[str] = field(default_factory=list)  # "env:NAME" or literal; several = a pool
    models: list[str] = field(default_factory=list)
    auth: AuthStyle | None = None
    headers: dict[str, str] = field(default_factory=dict)
    timeout: float = 600.0
    connect_timeout: float = 10.0
    max_connections: int = 100
    # Credential rotation for this provider's pool (default: [cooldown] rotation).
    rotation: str | None = None
    key_tiers: list[int] = field(default_factory=list)  # "priority" rotation: tier per key
    rate_limit_scope: str | None = None  # "credential" (default) or "credential_model"


class TargetConfig(Struct, kw_only=True, forbid_unknown_fields=True):
    target: str  # "provider/model"
    params: dict[str, Any] = field(default_factory=dict)  # per-target request overrides


class GroupConfig(Struct, kw_only=True, forbid_unknown_fields=True):
    targets: list[str | TargetConfig]
    context_fallbacks: list[str] = field(default_factory=list)
    content_fallbacks: list[str] = field(default_factory=list)


class StreamConfig(Struct, kw_only=True, forbid_unknown_fields=True):
    enabled: bool = True
    ttfb_timeout: float | None = 30.0
    stall_timeout: float | None = 60.0
    total_timeout: float | None = None
    heartbeat_interval: float | None = 15.0
    keepalive_before_first_event: bool = False
    max_ttfb_timeout: float | None = None  # bound for the x-rotator-ttfb-timeout header
    close_log: str | None = None  # JSON-lines file of stream close records
    # Per provider ("openai") or per model ("openai/gpt-4.1"): the same timeout keys.
    overrides: dict[str, dict[str, float | None]] = field(default_factory=dict)


class StateConfig(Struct, kw_only=True, forbid_unknown_fields=True):
    backend: Literal["memory", "file", "redis"] = "memory"
    path: str | None = None  # directory, for the file backend
    url: str | None = None  # for the redis backend; "env:NAME" allowed (it may hold a password)
    max_entries: int = 100_000


class ResponsesConfig(Struct, kw_only=True, forbid_unknown_fields=True):
    enabled: bool = True
    ttl: float | None = 30 * 24 * 3600.0
    max_responses: int | None = 10_000
    max_depth: int = 100
    native_continuation: bool = True


class RoutingConfig(Struct, kw_only=True, forbid_unknown_fields=True):
    enabled: bool = True
    fallback_on: list[str] = field(
        default_factory=lambda: [
            "rate_limited",
            "overloaded",
            "server_error",
            "timeout",
            "connection",
        ]
    )


class CooldownConfig(Struct, kw_only=True, forbid_unknown_fields=True):
    enabled: bool = True
    rotation: str = "round_robin"
    max_attempts: int = 3
    retry_budget: float = 30.0
    max_wait: float = 5.0
    retry_on: list[str] | None = None  # default: the retryable kinds and auth
    backoff_base: float = 1.0
    backoff_max: float = 60.0
    failure_threshold: int = 3
    failure_window: float = 600.0
    auth_cooldown: float = 3600.0
    quota_cooldown: float = 3600.0


class Config(Struct, kw_only=True, forbid_unknown_fields=True):
    server: ServerConfig = field(default_factory=ServerConfig)
    providers: dict[str, ProviderConfig] = field(default_factory=dict)
    groups: dict[str, GroupConfig] = field(default_factory=dict)
    aliases: dict[str, str] = field(default_factory=dict)  # model name -> "provider/model" or group
    stream: StreamConfig = field(default_factory=StreamConfig)
    state: StateConfig = field(default_factory=StateConfig)
    responses: ResponsesConfig = field(default_factory=ResponsesConfig)
    routing: RoutingConfig = field(default_factory=RoutingConfig)
    cooldown: CooldownConfig = field(default_factory=CooldownConfig)


class Preset(Struct, frozen=True, kw_only=True):
    protocols: tuple[str, ...]
    base_url: str
    env: str | None
    base_urls: dict[str, str] = field(default_factory=dict)


# Base URLs follow each official SDK's convention for its protocol: OpenAI-style ones end in
# the version segment, Anthropic's and Gemini's are the host (the codec adds /v1/messages,
# /v1beta/models/...).
PRESETS: dict[str, Preset] = {
    "openai": Preset(
        protocols=("openai_chat", "openai_responses"),
        base_url="https://api.openai.com/v1",
        env="OPENAI_API_KEY",
    ),
    "anthropic": Preset(
        protocols=("anthropic_messages",),
        base_url="https://api.anthropic.com",
        env="ANTHROPIC_API_KEY",
    ),
    "gemini": Preset(
        protocols=("gemini",),
        base_url="https://generativelanguage.googleapis.com",
        env="GEMINI_API_KEY",
    ),
    "openrouter": Preset(
        protocols=("openai_chat", "openai_responses", "anthropic_messages"),
        base_url="https://openrouter.ai/api/v1",
        base_urls={"anthropic_messages": "https://openrouter.ai/api"},
        env="OPENROUTER_API_KEY",
    ),
    "groq": Preset(
        protocols=("openai_chat", "openai_responses"),
        base_url="https://api.groq.com/openai/v1",
        env="GROQ_API_KEY",
    ),
    "deepseek": Preset(
        protocols=("openai_chat", "anthropic_messages"),
        base_url="https://api.deepseek.com/v1",
        base_urls={"anthropic_messages": "https://api.deepseek.com/anthropic"},
        env="DEEPSEEK_API_KEY",
    ),
    "mistral": Preset(
        protocols=("openai_chat",), base_url="https://api.mistral.ai/v1", env="MISTRAL_API_KEY"
    ),
    "together": Preset(
        protocols=("openai_chat",), base_url="https://api.together.xyz/v1", env="TOGETHER_API_KEY"
    ),
    "vllm": Preset(
        protocols=("openai_chat", "openai_responses"), base_url="http://127.0.0.1:8000/v1", env=None
    ),
    "ollama": Preset(protocols=("openai_chat",), base_url="http://127.0.0.1:11434/v1", env=None),
    # The built-in mock upstream, served in-process: no network, no keys.
    "mock": Preset(
        protocols=("openai_chat", "openai_responses", "anthropic_messages", "gemini"),
        base_url="mock://upstream/v1",
        base_urls={"anthropic_messages": "mock://upstream", "gemini": "mock://upstream"},
        env=None,
    ),
}


def resolve_secret(ref: str, env: Mapping[str, str], where: str) -> str:
    """A key or URL as configured: ``env:NAME`` reads the environment (an unset variable is
    a ``ConfigError`` naming ``where``), anything else is the literal value."""
    if not ref.startswith("env:"):
        return ref
    value = env.get(ref[4:])
    if not value:
        raise ConfigError(f"{where}: environment variable {ref[4:]} is not set")
    return value


def load_config(path: str | os.PathLike[str], environ: Mapping[str, str] | None = None) -> Config:
    """Read a TOML or JSON file (by suffix; TOML otherwise) and apply environment overrides."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from None
    try:
        data = json.loads(text) if path.suffix == ".json" else tomllib.loads(text)
    except (ValueError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(
            f"{path}: not valid {'JSON' if path.suffix == '.json' else 'TOML'}: {exc}"
        ) from None
    return parse_config(data, environ, source=str(path))


def parse_config(
    data: Any, environ: Mapping[str, str] | None = None, *, source: str = "config"
) -> Config:
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: the top level must be a table/object")
    data = _apply_env(data, os.environ if environ is None else environ)
    # msgspec writes a dict key as `[...]` in its error paths; tables keyed by name are
    # checked entry by entry first so the error names the provider or group.
    for section, schema in (("providers", ProviderConfig), ("groups", GroupConfig)):
        table = data.get(section)
        if isinstance(table, dict):
            for name, entry in table.items():
                try:
                    msgspec.convert(entry, schema)
                except msgspec.ValidationError as exc:
                    raise ConfigError(
                        f"{source}: {_explain(exc, entry, prefix=f'{section}.{name}')}"
                    ) from None
    try:
        config = msgspec.convert(data, Config)
    except msgspec.ValidationError as exc:
        raise ConfigError(f"{source}: {_explain(exc, data)}") from None
    _check(config, source)
    return config


def config_from_env(environ: Mapping[str, str] | None = None) -> Config:
    """Providers from the standard API-key variables, for running without a file."""
    env = os.environ if environ is None else environ
    providers: dict[str, ProviderConfig] = {}
    for name, preset in PRESETS.items():
        if preset.env is None:
            continue
        names = [preset.env]
        if name == "gemini":
            names.append("GOOGLE_API_KEY")
        keys = [
            f"env:{var}"
            for base in names
            for var in (base, *(f"{base}_{i}" for i in range(1, 100)))
            if env.get(var)
        ]
        if keys:
            providers[name] = ProviderConfig(preset=name, keys=keys)
    return (
        parse_config({}, env)
        if not providers
        else _with_providers(parse_config({}, env), providers)
    )


def _with_providers(config: Config, providers: dict[str, ProviderConfig]) -> Config:
    return msgspec.structs.replace(config, providers={**providers, **config.providers})


def _apply_env(data: dict[str, Any], environ: Mapping[str, str]) -> dict[str, Any]:
    overrides = sorted((k, v) for k, v in environ.items() if k.startswith(ENV_PREFIX))
    if not overrides:
        return data
    data = json.loads(json.dumps(data))  # deep copy; values are plain TOML/JSON
    for key, raw in overrides:
        parts = [p.lower() for p in key[len(ENV_PREFIX) :].split("__") if p]
        if not parts:
            continue
        try:
            value: Any = json.loads(raw)
        except ValueError:
            value = raw
        node = data
        for part in parts[:-1]:
            child = node.get(part)
            if not isinstance(child, dict):
                child = node[part] = {}
            node = child
        node[parts[-1]] = value
    return data


_AT_PATH = re.compile(r" - at `\$(.*)`$")


def _explain(exc: msgspec.ValidationError, data: Any, prefix: str = "") -> str:
    """msgspec says ``Expected `int`, got `str` - at `$.server.port```; we add the value."""
    message = str(exc)
    match = _AT_PATH.search(message)
    if not match:
        return f"{prefix}: {message}" if prefix else message
    raw_path = match.group(1)
    problem = message[: match.start()]
    path = prefix + raw_path if prefix else raw_path.lstrip(".")
    value = _lookup(data, raw_path)
    shown = "" if value is _MISSING else f" (got {json.dumps(value, default=str)[:80]})"
    return f"{path}: {problem[0].lower()}{problem[1:]}{shown}"


_MISSING = object()
_SEGMENT = re.compile(r"\.([^.\[]+)|\[(\d+)\]|\[(\"[^\"]*\")\]")


def _lookup(data: Any, raw_path: str) -> Any:
    node = data
    for key, index, quoted in _SEGMENT.findall(raw_path):
        try:
            if index:
                node = node[int(index)]
            else:
                node = node[json.loads(quoted) if quoted else key]
        except (KeyError, IndexError, TypeError, ValueError):
            return _MISSING
    return node


def _check(config: Config, source: str) -> None:
    from .protocols import codec_names  # local: the registry imports codecs lazily

    known = set(codec_names())
    for name, provider in config.providers.items():
        where = f"{source}: providers.{name}"
        if "/" in name:
            raise ConfigError(f"{where}: a provider name cannot contain '/'")
        preset_name = provider.preset or (name if name in PRESETS else None)
        if provider.preset is not None and provider.preset not in PRESETS:
            raise ConfigError(
                f"{where}.preset: unknown preset {provider.preset!r}; known: {', '.join(PRESETS)}"
            )
        protocols = provider.protocols or ([provider.protocol] if provider.protocol else [])
        for i, protocol in enumerate(protocols):
            if protocol not in known:
                raise ConfigError(
                    f"{where}.protocols[{i}]: unknown protocol {protocol!r}; known: {', '.join(sorted(known))}"
                )
        if not protocols and preset_name is None:
            raise ConfigError(f"{where}: needs `protocol` (or a `preset`)")
        if provider.base_url is None and preset_name is None and not provider.base_urls:
            raise ConfigError(f"{where}: needs `base_url` (or a `preset`)")
        for i, key in enumerate(provider.keys):
            if key.startswith("env:") and not key[4:]:
                raise ConfigError(f"{where}.keys[{i}]: empty variable name after 'env:'")
        if provider.timeout <= 0:
            raise ConfigError(f"{where}.timeout: must be > 0 (got {provider.timeout})")
    for name, group in config.groups.items():
        if not group.targets:
            raise ConfigError(f"{source}: groups.{name}.targets: must not be empty")
    if config.state.backend == "file" and not config.state.path:
        raise ConfigError(f"{source}: state.path: the file backend needs a directory")
    if config.state.backend == "redis" and not config.state.url:
        raise ConfigError(
            f"{source}: state.url: the redis backend needs a URL (redis://host:6379/0)"
        )
