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

Each default is written once.  The sections below hold the layers' defaults: a layer's
keyword arguments default to its section's values (``StreamGuard`` reads ``StreamConfig()``),
because no layer can be imported here (the layers import ``providers``, which imports this
module).  The limits of the core modules the layers are built on are theirs, named here:
the request body's (``exchange``), an upstream SSE event's (``sse``) and a provider's
connection limits (``upstream``).
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

from .config_check import secret_problems, shape_problems, value_problems
from .exchange import DEFAULT_MAX_BODY
from .presets import BACKENDS, Preset
from .pricing import Price
from .sse import DEFAULT_MAX_EVENT
from .upstream import DEFAULT_CONNECT_TIMEOUT, DEFAULT_MAX_CONNECTIONS, DEFAULT_TIMEOUT

__all__ = [
    "PRESETS",
    "Config",
    "ConfigError",
    "CooldownConfig",
    "FieldCacheConfig",
    "GroupConfig",
    "LoggingConfig",
    "ProviderConfig",
    "ResponsesConfig",
    "RoutingConfig",
    "ServerConfig",
    "ShapingStepConfig",
    "StateConfig",
    "StreamConfig",
    "TargetConfig",
    "TracingConfig",
    "config_from_env",
    "load_config",
    "parse_config",
    "resolve_secret",
]

ENV_PREFIX = "ASGI_ROTATOR__"

AuthStyle = Literal["bearer", "x-api-key", "x-goog-api-key", "none"]


class ConfigError(ValueError):
    """Configuration problems, each with the path of the offending value: ``problems`` lists
    them, one line each, and the message is those lines."""

    def __init__(self, problems: str | list[str]) -> None:
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        super().__init__("\n".join(self.problems))


def _hidden(value: Any) -> Any:
    """A secret-bearing value as a repr may show it: ``env:NAME`` references as they are
    (the name is not the secret), literal values by their length only."""
    if isinstance(value, list):
        return [_hidden(v) for v in value]
    if isinstance(value, dict):
        return {k: _hidden(v) for k, v in value.items()}
    if isinstance(value, str) and not value.startswith("env:"):
        return f"<secret, {len(value)} characters>"
    return value


def _repr_hiding(struct: Struct, secret_fields: frozenset[str]) -> str:
    shown = ", ".join(
        f"{name}={_hidden(msgspec.to_builtins(value)) if name in secret_fields else value!r}"
        for name, value in msgspec.structs.asdict(struct).items()
    )
    return f"{type(struct).__name__}({shown})"


class ServerConfig(Struct, kw_only=True, forbid_unknown_fields=True):
    host: str = "127.0.0.1"
    port: int = 8080
    # Keys clients must present (Authorization: Bearer, x-api-key, x-goog-api-key or ?key=).
    # Required before the gateway serves on a non-loopback address.
    inbound_keys: list[str] = field(default_factory=list)
    max_body_bytes: int = DEFAULT_MAX_BODY
    # Upstream HTTP client: "auto" (the fastest installed: aiohttp, then httpx2, then httpx),
    # or one of those names.
    upstream_client: str = "auto"

    def __repr__(self) -> str:
        return _repr_hiding(self, frozenset({"inbound_keys"}))


class ShapingStepConfig(Struct, kw_only=True, forbid_unknown_fields=True):
    step: str  # a registered step name (asgi_rotator.shaping): headers, body_rules, ...
    options: dict[str, Any] = field(default_factory=dict)


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
    # "any": clients may ask for provider/<any model>; "listed": only the models above.
    allow_models: Literal["any", "listed"] = "any"
    # Ask the provider's models endpoint what it serves (on first use, kept models_ttl
    # seconds), for /v1/models and bare model names.  Unset: on for OpenAI-compatible
    # providers and presets, when `models` lists none and no shaping step is declared.
    discover_models: bool | None = None
    models_ttl: float = 3600.0
    auth: AuthStyle | None = None  # the auth header's style; the credential says what goes in it
    # {strategy = "keys" | "oauth_file" | "token_exchange" | "google_oauth" | <registered>,
    # ...options} (asgi_rotator.auth); without it, ``keys`` make a ``keys`` strategy.
    credential: dict[str, Any] | None = None
    headers: dict[str, str] = field(default_factory=dict)
    # [[providers.NAME.shaping]]: request-shaping steps (docs/providers.md), after the
    # preset's own.
    shaping: list[ShapingStepConfig] = field(default_factory=list)
    timeout: float = DEFAULT_TIMEOUT
    connect_timeout: float = DEFAULT_CONNECT_TIMEOUT
    max_connections: int = DEFAULT_MAX_CONNECTIONS
    # Credential rotation for this provider's pool (default: [cooldown] rotation).
    rotation: str | None = None
    key_tiers: list[int] = field(default_factory=list)  # "priority" rotation: tier per key
    rate_limit_scope: str | None = None  # "credential" (default) or "credential_model"

    def __repr__(self) -> str:
        # A shaping step may set an auth header by hand, like ``headers``.
        return _repr_hiding(self, frozenset({"keys", "headers", "credential", "shaping"}))


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
    total_timeout: float | None = None  # the whole request, client time included
    # A client that has not accepted a message for this long is dropped (client_write_timeout).
    send_timeout: float | None = 30.0
    # The largest upstream SSE event (its lines, the unfinished one included), in bytes.
    max_event_bytes: int = DEFAULT_MAX_EVENT
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

    def __repr__(self) -> str:
        return _repr_hiding(self, frozenset({"url"}))


class ResponsesConfig(Struct, kw_only=True, forbid_unknown_fields=True):
    enabled: bool = True
    ttl: float | None = 30 * 24 * 3600.0  # OpenAI keeps stored responses for 30 days
    max_responses: int | None = 10_000
    max_bytes: int | None = 512 * 1024 * 1024  # stored records' total size; oldest go first
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
    retry_on: list[str] | None = None  # None: the layer's DEFAULT_RETRY_ON
    backoff_base: float = 1.0
    backoff_max: float = 60.0
    failure_threshold: int = 3
    failure_window: float = 600.0
    auth_cooldown: float = 3600.0
    quota_cooldown: float = 3600.0


class TracingConfig(Struct, kw_only=True, forbid_unknown_fields=True):
    """[tracing]: OpenTelemetry spans and metrics.  The standard OTEL_* variables win."""

    # None: on when an OTLP endpoint is set (here or OTEL_EXPORTER_OTLP_*ENDPOINT) or
    # prometheus is; true with no endpoint: the process's global providers (an embedding host's).
    enabled: bool | None = None
    endpoint: str | None = None  # OTLP base URL, e.g. http://127.0.0.1:4318
    protocol: str = "http/protobuf"  # or "grpc" (needs opentelemetry-exporter-otlp-proto-grpc)
    service_name: str = "asgi-rotator"
    resource_attributes: dict[str, str] = field(default_factory=dict)
    capture_content: bool = False  # messages on spans, redacted and capped
    max_content_bytes: int = 16384  # per captured attribute
    prometheus: bool = False  # serve GET /metrics for scraping
    prometheus_path: str = "/metrics"


class AdapterMatch(Struct, kw_only=True, forbid_unknown_fields=True):
    provider: str = "*"  # provider name glob
    model: str = "*"  # upstream model glob
    client: str = "*"  # client protocol glob


class AdapterConfig(Struct, kw_only=True, forbid_unknown_fields=True):
    adapter: str  # a registered adapter name (asgi_rotator.adapters)
    match: AdapterMatch = field(default_factory=AdapterMatch)
    options: dict[str, Any] = field(default_factory=dict)


class FieldCacheConfig(Struct, kw_only=True, forbid_unknown_fields=True):
    enabled: bool = True
    # The built-in rules by name (anthropic_thinking, gemini_thought_signatures,
    # openai_encrypted_reasoning, provider_session_keys): each on unless switched off here.
    builtin: dict[str, bool] = field(default_factory=dict)
    ttl: float | None = 24 * 3600.0  # seconds a cached value lives (built-in rules)
    max_bytes: int = 256 * 1024  # the most one answer may store per rule
    # [[field_cache.rules]]: rules of the path language (docs/field-cache.md); checked by
    # asgi_rotator.field_paths when the stack is built, errors naming the path.
    rules: list[dict[str, Any]] = field(default_factory=list)
    # [[field_cache.adapters]]: request shaping per provider/model (docs/field-cache.md).
    adapters: list[AdapterConfig] = field(default_factory=list)


class LoggingConfig(Struct, kw_only=True, forbid_unknown_fields=True):
    requests: str | None = None  # JSON-lines request log (docs/usage.md), one line a request
    totals: bool = False  # usage and cost totals by inbound key, model and day, in the store
    totals_days: int = 90  # how long a day's totals are kept


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
    tracing: TracingConfig = field(default_factory=TracingConfig)
    field_cache: FieldCacheConfig = field(default_factory=FieldCacheConfig)
    # "provider/model" -> USD per million tokens, over the genai-prices table (docs/usage.md)
    prices: dict[str, Price] = field(default_factory=dict)
    logging: LoggingConfig = field(default_factory=LoggingConfig)


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
    # The backends of coding tools, reached with the user's own credential (presets.py).
    **BACKENDS,
}


def resolve_secret(ref: str, env: Mapping[str, str], where: str) -> str:
    """A key or URL as configured: ``env:NAME`` reads the environment (an unset variable is
    a ``ConfigError`` naming ``where``), anything else is the literal value."""
    if not ref.startswith("env:"):
        return ref
    value = env.get(ref[4:])
    if value is None:
        raise ConfigError(f"{where}: environment variable {ref[4:]} is not set")
    if not value.strip():
        raise ConfigError(f"{where}: environment variable {ref[4:]} is empty or blank")
    return value


def load_config(
    path: str | os.PathLike[str],
    environ: Mapping[str, str] | None = None,
    *,
    check_secrets: bool = False,
) -> Config:
    """Read a TOML or JSON file (by suffix; TOML otherwise) and apply environment overrides.

    ``check_secrets``: also report every ``env:NAME`` reference the environment does not
    answer (``serve`` and ``check-config`` do; a library user may build providers later)."""
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
    except RecursionError:
        raise ConfigError(f"{path}: nested too deeply") from None
    return parse_config(data, environ, source=str(path), check_secrets=check_secrets)


def parse_config(
    data: Any,
    environ: Mapping[str, str] | None = None,
    *,
    source: str = "config",
    check_secrets: bool = False,
) -> Config:
    """A ``Config`` from plain data (a parsed file) and the environment's overrides.

    Raises ``ConfigError`` listing every mistake, each with its path; a mistake in a value
    set by an ``ASGI_ROTATOR__...`` variable names the variable instead of ``source``."""
    from .protocols import codec_names  # local: the registry imports codecs lazily

    if not isinstance(data, dict):
        raise ConfigError(f"{source}: the top level must be a table/object")
    env = os.environ if environ is None else environ
    data, origins = _apply_env(data, env)
    problems = shape_problems(data, Config)
    # The values are checked too, with what is misshapen left out, so that one run names
    # every mistake; what leaving a field out would itself cause is not reported twice.
    pruned = [_prune(data, p.path) for p in problems] if problems else []
    try:
        config = msgspec.convert(data, Config)
    except msgspec.ValidationError:
        assert problems  # only a required field left out can get here
    else:
        found = value_problems(config, PRESETS, set(codec_names()))
        if check_secrets:
            found += secret_problems(config, env)
        problems += [p for p in found if not any(_related(p.path, cut) for cut in pruned)]
    if problems:
        raise ConfigError([_located(p.path, p.message, source, origins) for p in problems])
    return config


def _prune(data: dict[str, Any], path: str) -> str:
    """Remove the table entry that holds ``path``'s mistake; the path of what was removed."""
    node: Any = data
    keys = _path_keys(path)
    for i, key in enumerate(keys):
        if not isinstance(node, dict) or key not in node:
            break
        if i == len(keys) - 1 or not isinstance(node[key], dict):
            del node[key]
            return path[: _prefix_length(path, i + 1)]
        node = node[key]
    return path


# A segment of an error path: ``.name``, ``."quoted name"`` or ``[index]``.
_SEGMENT = re.compile(r'\.?(?:"((?:[^"\\]|\\.)*)"|([^.\["]+))|\[\d+\]')


def _path_keys(path: str) -> list[str]:
    """The table keys of an error path: ``groups.g.targets[0]`` -> groups, g, targets."""
    keys = []
    for match in _SEGMENT.finditer(path):
        quoted, plain = match.groups()
        if quoted is not None:
            keys.append(json.loads(f'"{quoted}"'))
        elif plain is not None:
            keys.append(plain)
    return keys


def _prefix_length(path: str, keys: int) -> int:
    """Where the first ``keys`` table keys of ``path`` end."""
    ends = [m.end() for m in _SEGMENT.finditer(path) if not m.group(0).startswith("[")]
    return ends[keys - 1]


def _related(path: str, cut: str) -> bool:
    return path == cut or path.startswith((cut + ".", cut + "[")) or cut.startswith(path + ".")


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


def _apply_env(
    data: dict[str, Any], environ: Mapping[str, str]
) -> tuple[dict[str, Any], dict[str, str]]:
    """The data with ``ASGI_ROTATOR__...`` overrides applied, and which variable set which
    path (``{"server.port": "ASGI_ROTATOR__SERVER__PORT"}``), for the error messages."""
    overrides = sorted((k, v) for k, v in environ.items() if k.startswith(ENV_PREFIX))
    if not overrides:
        return data, {}
    data = json.loads(json.dumps(data))  # deep copy; values are plain TOML/JSON
    origins: dict[str, str] = {}
    for key, raw in overrides:
        parts = [p.lower() for p in key[len(ENV_PREFIX) :].split("__") if p]
        if not parts:
            continue
        try:
            value: Any = json.loads(raw)
        except (ValueError, RecursionError):
            value = raw
        node = data
        for part in parts[:-1]:
            child = node.get(part)
            if not isinstance(child, dict):
                child = node[part] = {}
            node = child
        node[parts[-1]] = value
        origins[".".join(parts)] = key
    return data, origins


def _located(path: str, message: str, source: str, origins: Mapping[str, str]) -> str:
    """``source: path: message``, where ``source`` is the variable that set the value (or a
    table above it) when one did, else the file."""
    for set_path, variable in origins.items():
        if path == set_path or path.startswith((set_path + ".", set_path + "[")):
            return f"{variable}: {path}: {message}"
    return f"{source}: {path}: {message}"
