"""Every mistake in a configuration, each with its path, in the gateway's own words.

``asgi_rotator.config`` calls this when it parses; ``asgi-rotator check-config`` and ``serve``
also call ``secret_problems`` with the real environment, then build the stack, so a file that
checks out is one that serves.

Deliberate choices:

* The shape is checked field by field against the ``Struct`` types rather than by one
  ``msgspec.convert``, which stops at the first mistake and words it in msgspec's terms (which
  change between its releases).
* A value under a secret-bearing path (keys, inbound keys, the state URL, provider headers) is
  never shown: its type and length are.
* Ranges and allowed values are the ones the middlewares enforce on their keyword arguments;
  checking them here names the configuration path instead of the argument, and before
  anything is built.
"""

from __future__ import annotations

import json
import math
import types
import typing
from collections.abc import Iterator, Mapping
from typing import Any, Literal, Union, get_args, get_origin

import msgspec

from .errors import DEFAULT_STATUS
from .presets import BACKENDS

__all__ = ["Problem", "secret_problems", "shape_problems", "value_problems"]

# Fields whose values are secrets, wherever they stand.
SECRET_FIELDS = frozenset({"keys", "inbound_keys", "url", "headers", "credential"})

ROTATIONS = ("round_robin", "fair_cycle", "priority", "least_used")
RATE_LIMIT_SCOPES = ("credential", "credential_model")
UPSTREAM_CLIENTS = ("auto", "aiohttp", "httpx2", "httpx")
STREAM_LIMITS = (
    "ttfb_timeout",
    "stall_timeout",
    "total_timeout",
    "send_timeout",
    "heartbeat_interval",
)


class Problem(msgspec.Struct, frozen=True):
    path: str  # "providers.openai.timeout"
    message: str  # "expected a number, got a string ("fast")"


# --- shape ----------------------------------------------------------------------------------


def shape_problems(
    data: Any, schema: type[msgspec.Struct], path: str = "", *, secret: bool = False
) -> list[Problem]:
    """What in ``data`` does not fit ``schema``: unknown and missing fields, wrong types
    (``secret``: every value under ``path`` is one, so none is shown)."""
    return list(_shape(data, schema, path, secret=secret))


def _shape(value: Any, tp: Any, path: str, secret: bool) -> Iterator[Problem]:
    if tp is Any:
        return
    origin = get_origin(tp)
    if isinstance(tp, type) and issubclass(tp, msgspec.Struct):
        yield from _struct(value, tp, path, secret)
    elif origin in (Union, types.UnionType):
        options = get_args(tp)
        if value is None and type(None) in options:
            return
        present = [o for o in options if o is not type(None)]
        if len(present) == 1:  # ``X | None`` given something: it is an X, or says why not
            yield from _shape(value, present[0], path, secret)
            return
        for option in options:
            if option is not type(None) and not any(_shape(value, option, path, secret)):
                return
        # One struct option and a table given: its own problems say more than "expected ...".
        structs = [o for o in options if isinstance(o, type) and issubclass(o, msgspec.Struct)]
        if len(structs) == 1 and isinstance(value, dict):
            yield from _struct(value, structs[0], path, secret)
        else:
            yield _expected(path, tp, value, secret)
    elif origin is list:
        if not isinstance(value, list):
            yield _expected(path, tp, value, secret)
            return
        (item,) = get_args(tp)
        for i, element in enumerate(value):
            yield from _shape(element, item, f"{path}[{i}]", secret)
    elif origin is dict:
        if not isinstance(value, dict):
            yield _expected(path, tp, value, secret)
            return
        _key, item = get_args(tp)
        for key, element in value.items():
            yield from _shape(element, item, _join(path, key), secret)
    elif origin is Literal:
        if value not in get_args(tp):
            allowed = ", ".join(str(a) for a in get_args(tp))
            shown = _show(value, secret) if secret else repr(value)[:80]
            yield Problem(path, f"{shown} is not one of {allowed}")
    elif not _is_instance(value, tp):
        yield _expected(path, tp, value, secret)


def _struct(value: Any, tp: type[msgspec.Struct], path: str, secret: bool) -> Iterator[Problem]:
    if not isinstance(value, dict):
        yield _expected(path, tp, value, secret)
        return
    fields = {f.encode_name: f for f in msgspec.structs.fields(tp)}
    for key in value:
        if key not in fields:
            known = ", ".join(fields)
            yield Problem(_join(path, key), f"unknown field; known fields here: {known}")
    hints = typing.get_type_hints(tp)
    for name, info in fields.items():
        where = _join(path, name)
        if name not in value:
            if info.required:
                yield Problem(where, "is required")
            continue
        yield from _shape(value[name], hints[info.name], where, secret or name in SECRET_FIELDS)


def _is_instance(value: Any, tp: Any) -> bool:
    if tp is bool:
        return isinstance(value, bool)
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if tp is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if tp is str:
        return isinstance(value, str)
    return True  # nothing narrower is used in the schema


def _expected(path: str, tp: Any, value: Any, secret: bool) -> Problem:
    return Problem(path, f"expected {_describe(tp)}, got {_show(value, secret)}")


def _describe(tp: Any) -> str:
    origin = get_origin(tp)
    if origin in (Union, types.UnionType):
        return " or ".join(_describe(o) for o in get_args(tp) if o is not type(None))
    if origin is list:
        return "an array"
    if origin is dict or (isinstance(tp, type) and issubclass(tp, msgspec.Struct)):
        return "a table"
    if origin is Literal:
        return "one of " + ", ".join(json.dumps(a) for a in get_args(tp))
    return {bool: "true or false", int: "an integer", float: "a number", str: "a string"}.get(
        tp, str(tp)
    )


_KIND_OF = {
    bool: "a boolean",
    int: "an integer",
    float: "a number",
    str: "a string",
    list: "an array",
    dict: "a table",
}


def _show(value: Any, secret: bool) -> str:
    """A value as an error may show it: a secret only as its type and length."""
    kind = _KIND_OF.get(type(value), type(value).__name__)
    if secret and value is not None and not isinstance(value, bool):
        if isinstance(value, (str, list, dict)):
            unit = "character" if isinstance(value, str) else "item"
            kind += f" of {len(value)} {unit}{'s' if len(value) != 1 else ''}"
        return f"{kind} (not shown: it may hold a secret)"
    text = json.dumps(value, default=str)
    if len(text) > 80:
        text = text[:77] + "..."
    return f"{kind} ({text})" if not isinstance(value, (list, dict)) else f"{kind}: {text}"


def _join(path: str, key: str) -> str:
    plain = key.replace("_", "").replace("-", "").isalnum()
    segment = key if plain else json.dumps(key)
    return f"{path}.{segment}" if path else segment


# --- values ---------------------------------------------------------------------------------


def value_problems(config: Any, presets: Mapping[str, Any], protocols: set[str]) -> list[Problem]:
    """Ranges, allowed values and references, on a configuration of the right shape."""
    found: list[Problem] = []
    add = found.append
    server = config.server
    if not 1 <= server.port <= 65535:
        add(Problem("server.port", f"must be between 1 and 65535, got {server.port}"))
    _positive(add, "server.max_body_bytes", server.max_body_bytes)
    _one_of(add, "server.upstream_client", server.upstream_client, UPSTREAM_CLIENTS)
    for i, key in enumerate(server.inbound_keys):
        _not_blank(add, f"server.inbound_keys[{i}]", key)

    for name, provider in config.providers.items():
        where = _join("providers", name)
        if "/" in name:
            add(Problem(where, "a provider name cannot contain '/'"))
        preset = provider.preset or (name if name in presets and name not in BACKENDS else None)
        if provider.preset is not None and provider.preset not in presets:
            allowed = ", ".join(presets)
            add(Problem(f"{where}.preset", f"unknown preset {provider.preset!r}; known: {allowed}"))
        listed = provider.protocols or ([provider.protocol] if provider.protocol else [])
        field = "protocols" if provider.protocols else "protocol"
        for i, protocol in enumerate(listed):
            if protocol not in protocols:
                at = f"{where}.{field}" + (f"[{i}]" if provider.protocols else "")
                known = ", ".join(sorted(protocols))
                add(Problem(at, f"unknown protocol {protocol!r}; known: {known}"))
        if not listed and preset is None:
            add(Problem(where, "needs `protocol` (or a `preset`)"))
        if provider.base_url is None and preset is None and not provider.base_urls:
            add(Problem(where, "needs `base_url` (or a `preset`)"))
        for i, key in enumerate(provider.keys):
            if key.startswith("env:") and not key[4:].strip():
                add(Problem(f"{where}.keys[{i}]", "empty variable name after 'env:'"))
            else:
                _not_blank(add, f"{where}.keys[{i}]", key)
        if provider.credential is not None:
            from .auth import option_problems  # local: the strategies import the config

            if provider.keys:
                add(Problem(f"{where}.keys", "give keys or a credential table, not both"))
            for at, message in option_problems(provider.credential, f"{where}.credential"):
                add(Problem(at, message))
        if provider.allow_models == "listed" and not provider.models:
            add(Problem(f"{where}.allow_models", '"listed" needs a `models` list'))
        if provider.allow_models == "listed" and provider.discover_models:
            add(
                Problem(
                    f"{where}.discover_models",
                    'cannot be true with allow_models = "listed" '
                    "(only the listed models may be asked for)",
                )
            )
        _positive(add, f"{where}.models_ttl", provider.models_ttl)
        for i, step in enumerate(provider.shaping):
            from .shaping import make_step  # local: steps import the field paths

            try:
                make_step(step.step, step.options)
            except ValueError as exc:
                # "options.wrap: expected ..." -> providers.x.shaping[0].options.wrap
                field, _, message = str(exc).partition(": ")
                add(Problem(f"{where}.shaping[{i}].{field}", message))
        _positive(add, f"{where}.timeout", provider.timeout)
        _positive(add, f"{where}.connect_timeout", provider.connect_timeout)
        _positive(add, f"{where}.max_connections", provider.max_connections)
        if provider.rotation is not None:
            _one_of(add, f"{where}.rotation", provider.rotation, ROTATIONS)
        if provider.rate_limit_scope is not None:
            _one_of(add, f"{where}.rate_limit_scope", provider.rate_limit_scope, RATE_LIMIT_SCOPES)
        if provider.key_tiers and len(provider.key_tiers) != max(1, len(provider.keys)):
            add(
                Problem(
                    f"{where}.key_tiers",
                    f"expected one tier per key ({len(provider.keys)}), "
                    f"got {len(provider.key_tiers)}",
                )
            )

    found.extend(_reference_problems(config))

    stream = config.stream
    for name in (*STREAM_LIMITS, "max_ttfb_timeout"):
        _seconds(add, f"stream.{name}", getattr(stream, name))
    _positive(add, "stream.max_event_bytes", stream.max_event_bytes)
    if stream.keepalive_before_first_event and stream.heartbeat_interval is None:
        add(Problem("stream.keepalive_before_first_event", "needs a heartbeat_interval"))
    for key, limits in stream.overrides.items():
        for name, value in limits.items():
            at = f"{_join('stream.overrides', key)}.{name}"
            if name not in STREAM_LIMITS:
                add(Problem(at, f"unknown key; known: {', '.join(STREAM_LIMITS)}"))
            else:
                _seconds(add, at, value)

    state = config.state
    if state.backend == "file" and not state.path:
        add(Problem("state.path", "the file backend needs a directory"))
    if state.backend == "redis" and not state.url:
        add(Problem("state.url", "the redis backend needs a URL (redis://host:6379/0)"))
    _positive(add, "state.max_entries", state.max_entries)

    responses = config.responses
    _seconds(add, "responses.ttl", responses.ttl)
    if responses.max_responses is not None:
        _positive(add, "responses.max_responses", responses.max_responses)
    if responses.max_bytes is not None:
        _positive(add, "responses.max_bytes", responses.max_bytes)
    _positive(add, "responses.max_depth", responses.max_depth)

    _kinds(add, "routing.fallback_on", config.routing.fallback_on)
    cooldown = config.cooldown
    _one_of(add, "cooldown.rotation", cooldown.rotation, ROTATIONS)
    if cooldown.retry_on is not None:
        _kinds(add, "cooldown.retry_on", cooldown.retry_on)
    _positive(add, "cooldown.max_attempts", cooldown.max_attempts)
    _positive(add, "cooldown.failure_threshold", cooldown.failure_threshold)
    for name in ("retry_budget", "max_wait"):
        value = getattr(cooldown, name)
        if not (value >= 0 and math.isfinite(value)):
            add(Problem(f"cooldown.{name}", f"must be 0 or more, got {value}"))
    for name in ("backoff_base", "backoff_max", "failure_window", "auth_cooldown"):
        _positive(add, f"cooldown.{name}", getattr(cooldown, name))
    _positive(add, "cooldown.quota_cooldown", cooldown.quota_cooldown)
    if cooldown.backoff_max < cooldown.backoff_base:
        add(Problem("cooldown.backoff_max", "must be at least cooldown.backoff_base"))
    if hasattr(config, "field_cache"):
        from .field_rules import config_problems  # local: the rules import the unified model

        found.extend(Problem(path, message) for path, message in config_problems(config))
    found += _price_problems(config)
    _positive(add, "logging.totals_days", config.logging.totals_days)
    return found


def _price_problems(config: Any) -> Iterator[Problem]:
    """``prices."provider/model"``: a configured provider, prices of 0 or more."""
    for key, price in config.prices.items():
        where = _join("prices", key)
        provider, slash, model = key.partition("/")
        if not slash or not model:
            yield Problem(where, 'expected a key "provider/model"')
        elif provider not in config.providers:
            known = ", ".join(config.providers) or "(none)"
            yield Problem(where, f"no provider {provider!r}; providers: {known}")
        for name in ("input", "output", "cache_read", "cache_write", "cache_write_1h"):
            value = getattr(price, name)
            if value is not None and not (value >= 0 and math.isfinite(value)):
                yield Problem(f"{where}.{name}", f"must be a price of 0 or more, got {value}")


def _reference_problems(config: Any) -> Iterator[Problem]:
    """Group targets, fallbacks and aliases name a configured provider, model or group."""
    bare = {model for provider in config.providers.values() for model in provider.models}
    single_open = len(config.providers) == 1 and not next(iter(config.providers.values())).models

    def problem(where: str, spec: str) -> Problem | None:
        if spec in config.groups or spec in bare or single_open:
            return None
        provider, _, model = spec.partition("/")
        if model and provider in config.providers:
            return None
        known = ", ".join(sorted(config.providers)) or "(none)"
        return Problem(
            where,
            f"{spec!r} is not 'provider/model' with a configured provider ({known}), "
            "a listed model or a group",
        )

    for name, group in config.groups.items():
        where = _join("groups", name)
        if not group.targets:
            yield Problem(f"{where}.targets", "must not be empty")
        for field in ("targets", "context_fallbacks", "content_fallbacks"):
            for i, target in enumerate(getattr(group, field)):
                spec = target if isinstance(target, str) else target.target
                found = problem(f"{where}.{field}[{i}]", spec)
                if found is not None:
                    yield found
    for alias, spec in config.aliases.items():
        found = problem(_join("aliases", alias), spec)
        if found is not None:
            yield found


def _positive(add: Any, path: str, value: float) -> None:
    if not (value > 0 and math.isfinite(value)):
        add(Problem(path, f"must be greater than 0, got {value}"))


def _seconds(add: Any, path: str, value: float | None) -> None:
    if value is not None:
        _positive(add, path, value)


def _one_of(add: Any, path: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        add(Problem(path, f"{value!r} is not one of {', '.join(allowed)}"))


def _kinds(add: Any, path: str, kinds: list[str]) -> None:
    for i, kind in enumerate(kinds):
        if kind not in DEFAULT_STATUS:
            known = ", ".join(DEFAULT_STATUS)
            add(Problem(f"{path}[{i}]", f"unknown error kind {kind!r}; known: {known}"))


def _not_blank(add: Any, path: str, value: str) -> None:
    if not value.strip():
        add(Problem(path, "must not be empty or blank"))


# --- secrets --------------------------------------------------------------------------------


def secret_problems(config: Any, env: Mapping[str, str]) -> list[Problem]:
    """Every ``env:NAME`` reference that the environment does not answer with a value."""
    refs: list[tuple[str, str]] = [
        (f"server.inbound_keys[{i}]", ref) for i, ref in enumerate(config.server.inbound_keys)
    ]
    for name, provider in config.providers.items():
        refs.extend(
            (f"{_join('providers', name)}.keys[{i}]", ref) for i, ref in enumerate(provider.keys)
        )
        for option, value in (provider.credential or {}).items():
            at = f"{_join('providers', name)}.credential.{option}"
            if isinstance(value, str):
                refs.append((at, value))
            elif isinstance(value, list):
                refs.extend((f"{at}[{i}]", v) for i, v in enumerate(value) if isinstance(v, str))
    if config.state.backend == "redis" and config.state.url:
        refs.append(("state.url", config.state.url))
    found = []
    for path, ref in refs:
        if ref.startswith("env:") and ref[4:].strip():
            value = env.get(ref[4:])
            if value is None:
                found.append(Problem(path, f"environment variable {ref[4:]} is not set"))
            elif not value.strip():
                found.append(Problem(path, f"environment variable {ref[4:]} is empty or blank"))
    return found
