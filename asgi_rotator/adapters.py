"""Adapters: per-provider and per-model request shaping, applied by ``FieldCache`` in the same
per-attempt place as its rules (after the target is chosen, before the request goes out).

Declared in config (``[[field_cache.adapters]]``: ``adapter``, ``match``, ``options``) and
made by name from a registry like the codecs': the built-in ones below, plus any registered
under the entry point group ``asgi_rotator.adapters`` (``name = "package.module:Class"``; a
registered name replaces the built-in).  An adapter is a ``field_rules.Rule`` made as
``Class(name, options, provider=..., model=..., client=...)``; a bad option is a
``ValueError`` naming the option, which the config reports with its path.

Built-in adapters (docs/field-cache.md, "Adapters"):

* ``model_override`` ``{model}``: the upstream model name for this attempt.
* ``developer_role`` ``{role = "system"}``: OpenAI ``developer`` messages sent as ``system``
  (or another role) to a provider that refuses the role.
* ``reasoning`` ``{knob = "effort"|"budget"|"none", budgets = {low = 1024, ...}}``: the one
  reasoning knob a model accepts: an effort becomes a budget, a budget an effort, or
  reasoning is left out for a model that takes none.
* ``field_rename`` ``{from, to}``: a field of the native body moved (paths as in rules).
* ``drop_fields`` ``{paths = [...]}``: fields of the native body removed.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import cache
from importlib import import_module
from importlib.metadata import entry_points
from typing import Any

import msgspec

from .field_paths import compile_path, read, write
from .field_rules import Attempt, Rule
from .unified import ReasoningConfig, Request

__all__ = [
    "BUILTIN",
    "DeveloperRole",
    "DropFields",
    "FieldRename",
    "ModelOverride",
    "ReasoningKnob",
    "adapter_names",
    "make_adapter",
]

BUILTIN = {
    "model_override": "asgi_rotator.adapters:ModelOverride",
    "developer_role": "asgi_rotator.adapters:DeveloperRole",
    "reasoning": "asgi_rotator.adapters:ReasoningKnob",
    "field_rename": "asgi_rotator.adapters:FieldRename",
    "drop_fields": "asgi_rotator.adapters:DropFields",
}

# The shared effort table of docs/protocols.md ("Reasoning"), as budgets.
DEFAULT_BUDGETS = {"minimal": 512, "low": 1024, "medium": 8192, "high": 24576}


class Adapter(Rule):
    def __init__(self, name: str, options: Mapping[str, Any], **match: Any) -> None:
        super().__init__(name, **match)
        unknown = set(options) - set(self.options)
        if unknown:
            raise ValueError(f"options: unknown {sorted(unknown)}; known: {sorted(self.options)}")
        self.configure(dict(options))

    options: tuple[str, ...] = ()

    def configure(self, options: dict[str, Any]) -> None:
        return None

    def noted(self, attempt: Attempt, **data: Any) -> None:
        attempt.record("field_cache.adapter", rule=self.name, **data)


def _string(options: dict[str, Any], key: str, default: str | None = None) -> str:
    value = options.get(key, default)
    if not isinstance(value, str) or not value:
        raise ValueError(f"options.{key}: expected a non-empty string")
    return value


class ModelOverride(Adapter):
    options = ("model",)

    def configure(self, options: dict[str, Any]) -> None:
        self.model_name = _string(options, "model")

    async def inject(self, attempt: Attempt, request: Request) -> Request:
        # Dispatch sends the target's model; the attempt's target is a copy with another
        # name (FieldCache restores the routing layer's after the attempt).
        exchange = attempt.exchange
        target = exchange.current.target
        if target is not None and target.model != self.model_name:
            exchange.current.target = type(target)(target.provider, self.model_name, target.params)
            self.noted(attempt, field="model")
        return msgspec.structs.replace(request, model=self.model_name)


class DeveloperRole(Adapter):
    options = ("role",)

    def configure(self, options: dict[str, Any]) -> None:
        self.role = _string(options, "role", "system")

    def shapes(self, attempt: Attempt, request: Request) -> bool:
        return True

    def shape(self, attempt: Attempt, body: dict[str, Any]) -> dict[str, Any]:
        renamed = 0
        for key in ("messages", "input"):
            items = body.get(key)
            if isinstance(items, list):
                for item in items:
                    if isinstance(item, dict) and item.get("role") == "developer":
                        item["role"] = self.role
                        renamed += 1
        if renamed:
            self.noted(attempt, field="role", values=renamed)
        return body


class ReasoningKnob(Adapter):
    options = ("knob", "budgets")

    def configure(self, options: dict[str, Any]) -> None:
        self.knob = _string(options, "knob")
        if self.knob not in ("effort", "budget", "none"):
            raise ValueError("options.knob: expected effort, budget or none")
        budgets = options.get("budgets", DEFAULT_BUDGETS)
        if not isinstance(budgets, dict) or not all(
            isinstance(v, int) and v >= 0 for v in budgets.values()
        ):
            raise ValueError("options.budgets: expected a table of effort = tokens")
        self.budgets = dict(budgets)

    async def inject(self, attempt: Attempt, request: Request) -> Request:
        config = request.reasoning
        if config is None:
            return request
        if self.knob == "none":
            self.noted(attempt, field="reasoning", dropped=True)
            return msgspec.structs.replace(request, reasoning=None)
        changed: ReasoningConfig | None = None
        if self.knob == "budget" and config.effort is not None:
            budget = self.budgets.get(config.effort)
            if budget is not None:
                changed = msgspec.structs.replace(config, effort=None, budget_tokens=budget)
        elif self.knob == "effort" and config.budget_tokens is not None:
            # The smallest effort whose budget covers the one asked for.
            ranked = sorted(self.budgets.items(), key=lambda kv: kv[1])
            effort = next((e for e, b in ranked if b >= config.budget_tokens), ranked[-1][0])
            changed = msgspec.structs.replace(config, effort=effort, budget_tokens=None)
        if changed is None:
            return request
        self.noted(attempt, field="reasoning", knob=self.knob)
        return msgspec.structs.replace(request, reasoning=changed)


class FieldRename(Adapter):
    options = ("from", "to")

    def configure(self, options: dict[str, Any]) -> None:
        self.source = compile_path(_string(options, "from"))
        self.target = compile_path(_string(options, "to"))
        for key, path in (("from", self.source), ("to", self.target)):
            if path[-1][0] != "key":
                raise ValueError(f"options.{key}: the last segment must be a key")

    def shapes(self, attempt: Attempt, request: Request) -> bool:
        return True

    def shape(self, attempt: Attempt, body: dict[str, Any]) -> dict[str, Any]:
        values = read(body, self.source)
        if values:
            _delete(body, self.source)
            write(body, self.target, values[-1], always=True)
            self.noted(attempt, field="rename")
        return body


class DropFields(Adapter):
    options = ("paths",)

    def configure(self, options: dict[str, Any]) -> None:
        paths = options.get("paths")
        if not isinstance(paths, list) or not paths:
            raise ValueError("options.paths: expected a list of paths")
        self.paths = [compile_path(_string({"p": p}, "p")) for p in paths]
        for i, path in enumerate(self.paths):
            if path[-1][0] != "key":
                raise ValueError(f"options.paths[{i}]: the last segment must be a key")

    def shapes(self, attempt: Attempt, request: Request) -> bool:
        return True

    def shape(self, attempt: Attempt, body: dict[str, Any]) -> dict[str, Any]:
        dropped = sum(_delete(body, path) for path in self.paths)
        if dropped:
            self.noted(attempt, field="drop", values=dropped)
        return body


def _delete(body: Any, path: Any) -> int:
    *head, (_, last) = path
    parents = read(body, head) if head else [body]
    dropped = 0
    for parent in parents:
        if isinstance(parent, dict) and last in parent:
            del parent[last]
            dropped += 1
    return dropped


@cache
def _entry_point_targets() -> dict[str, str]:
    return {ep.name: ep.value for ep in entry_points(group="asgi_rotator.adapters")}


def adapter_names() -> list[str]:
    return sorted({*BUILTIN, *_entry_point_targets()})


def make_adapter(kind: str, options: Mapping[str, Any], *, name: str, **match: Any) -> Rule:
    """An adapter by its registered name; ``ValueError`` for an unknown name or option (its
    message starts with the field: ``adapter: ...``, ``options.model: ...``)."""
    target = _entry_point_targets().get(kind) or BUILTIN.get(kind)
    if target is None:
        raise ValueError(f"adapter: unknown {kind!r}; known: {', '.join(adapter_names())}")
    module, _, attr = target.partition(":")
    cls = getattr(import_module(module), attr)
    return cls(name, options, **match)  # type: ignore[no-any-return]
