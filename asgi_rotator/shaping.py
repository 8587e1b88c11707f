"""Request shaping: a provider's declared steps over the provider-native request.

A backend that speaks a known protocol often wants a little more than the protocol: a header,
an envelope around the body, a field it insists on or refuses, a stream even for a plain
answer.  Each of those is a small step, declared per provider (``[[providers.NAME.shaping]]``:
``step`` and ``options``) or filled in by a preset, and applied by dispatch to the request it
built, after FieldCache's shaping and before it goes out.  A user can so declare a new
backend in configuration, without Python, when the steps suffice.

Steps are made by name from a registry like the codecs' and the adapters': the built-in ones
below, plus any registered under the entry point group ``asgi_rotator.shaping``
(``name = "package.module:Class"``; a registered name replaces the built-in).  A step is a
``Step`` made as ``Class(options)``; a bad option is a ``ValueError`` whose message starts
with the option (``options.fields: ...``), which the configuration reports with its path.

Built-in steps (docs/providers.md, "Request shaping"):

* ``headers`` ``{set = {name = "template"}, append = {name = "value"}}``: headers set
  (replacing one of the same name) or appended to a comma-separated list (``anthropic-beta``).
* ``body_rules`` ``{set = {path = value}, default = {path = value}, drop = [path],
  require = [path], refuse = [path]}``: values forced or filled in, fields removed, and
  fields the backend cannot do without (or cannot take) refused with the client's 400
  before anything goes upstream.
* ``envelope`` ``{wrap = "request", fields = {name = "template"}, unwrap = "response",
  path = "/v1internal:{method}"}``: the body moved under ``wrap`` beside the envelope's
  fields; the answer, and each stream event, taken out of ``unwrap``; the upstream path
  rewritten.
* ``force_stream`` ``{}``: the request always goes upstream as a stream; a plain client's
  answer is the stream aggregated.
* ``base_url`` ``{context = "api_base"}``: the upstream base URL the credential's grant
  names (Copilot's token says which API host serves the account), else the configured one.

Templates are ``str.format`` fields over the attempt's context: ``model`` (the upstream model),
``request_id`` (the gateway's, as its logs show it), ``method`` (paths only: what follows the protocol's
``:`` in its path, query included, e.g. ``streamGenerateContent?alt=sse``) and what the
credential's auth strategy provides (``project``, ``account_id``).  A field that neither
provides is the client's error, named, and nothing goes upstream.
"""

from __future__ import annotations

import copy
import string
from collections.abc import Iterable, Mapping
from functools import cache
from importlib import import_module
from importlib.metadata import entry_points
from typing import Any

from .errors import GatewayError
from .field_paths import compile_path, read, write
from .model_names import path_segment

__all__ = [
    "BUILTIN",
    "BaseUrl",
    "BodyRules",
    "Envelope",
    "ForceStream",
    "Headers",
    "Shaping",
    "ShapingContext",
    "Step",
    "make_step",
    "step_names",
]

BUILTIN = {
    "headers": "asgi_rotator.shaping:Headers",
    "body_rules": "asgi_rotator.shaping:BodyRules",
    "envelope": "asgi_rotator.shaping:Envelope",
    "force_stream": "asgi_rotator.shaping:ForceStream",
    "base_url": "asgi_rotator.shaping:BaseUrl",
}

_FORMATTER = string.Formatter()


class ShapingContext:
    """What templates may name for one attempt: its upstream model, the gateway's request id
    (the one its logs and traces carry, so a backend's request id correlates with them) and
    the credential's context (``project``, ``account_id``: the auth strategy's)."""

    __slots__ = ("provider", "values")

    def __init__(
        self,
        provider: str,
        model: str,
        extra: Mapping[str, Any] | None = None,
        *,
        request_id: str = "",
    ) -> None:
        self.provider = provider
        self.values: dict[str, str] = {
            **{k: str(v) for k, v in (extra or {}).items() if v is not None},
            "model": model,
            "request_id": request_id,
        }

    def fill(self, template: str, **more: str) -> str:
        values = {**self.values, **more} if more else self.values
        try:
            return template.format_map(values)
        except KeyError as exc:
            # The credential (or its strategy) lacks what the backend needs: answered before
            # anything goes out, naming the field and never a value.
            raise GatewayError(
                "auth",
                f"provider {self.provider}: the credential gives no {exc.args[0]!r}, which "
                "this provider's request shaping needs",
                status=401,
            ) from None


class Step:
    """The base: every hook a no-op.  ``options`` names the options a step takes."""

    options: tuple[str, ...] = ()
    forces_stream = False

    def __init__(self, options: Mapping[str, Any]) -> None:
        unknown = set(options) - set(self.options)
        if unknown:
            raise ValueError(f"options: unknown {sorted(unknown)}; known: {sorted(self.options)}")
        self.configure(dict(options))

    def configure(self, options: dict[str, Any]) -> None:
        return None

    def headers(self, context: ShapingContext, headers: list[tuple[str, str]]) -> None:
        """Change the upstream headers in place."""
        return None

    def body(self, context: ShapingContext, body: dict[str, Any]) -> dict[str, Any]:
        return body

    def path(self, context: ShapingContext, path: str) -> str:
        return path

    def base_url(self, context: ShapingContext, base: str) -> str:
        return base

    def unwrap(self, data: Any) -> Any:
        """The answer (a decoded plain body, or one decoded stream event) as the protocol
        has it."""
        return data

    @property
    def unwraps(self) -> bool:
        return type(self).unwrap is not Step.unwrap


class Headers(Step):
    options = ("set", "append")

    def configure(self, options: dict[str, Any]) -> None:
        self.set = _templates(options, "set")
        self.append = _templates(options, "append")
        if not self.set and not self.append:
            raise ValueError("options: expected `set` or `append`")

    def headers(self, context: ShapingContext, headers: list[tuple[str, str]]) -> None:
        for name, template in self.set.items():
            value = context.fill(template)
            headers[:] = [(k, v) for k, v in headers if k.lower() != name]
            headers.append((name, value))
        for name, template in self.append.items():
            value = context.fill(template)
            for i, (key, existing) in enumerate(headers):
                if key.lower() == name:
                    listed = [v.strip() for v in existing.split(",")]
                    if value not in listed:
                        headers[i] = (key, f"{existing},{value}")
                    break
            else:
                headers.append((name, value))


class BodyRules(Step):
    options = ("set", "default", "drop", "require", "refuse")

    def configure(self, options: dict[str, Any]) -> None:
        self.set = _values(options, "set")
        self.default = _values(options, "default")
        self.drop = _paths(options, "drop")
        self.require = _paths(options, "require")
        self.refuse = _paths(options, "refuse")

    def body(self, context: ShapingContext, body: dict[str, Any]) -> dict[str, Any]:
        for text, path in self.refuse:
            if read(body, path):
                raise GatewayError(
                    "bad_request",
                    f"provider {context.provider} does not accept `{text}`; leave it out",
                    param=text,
                )
        for _, path in self.drop:
            _delete(body, path)
        for path, value in self.default:
            if not read(body, path):
                write(body, path, _fresh(value), always=True)
        for path, value in self.set:
            _delete(body, path)
            write(body, path, _fresh(value), always=True)
        for text, path in self.require:
            if not read(body, path):
                raise GatewayError(
                    "bad_request",
                    f"provider {context.provider} requires `{text}` in the request",
                    param=text,
                )
        return body


class Envelope(Step):
    options = ("wrap", "fields", "unwrap", "path")

    def configure(self, options: dict[str, Any]) -> None:
        wrap = options.get("wrap")
        if wrap is not None and (not isinstance(wrap, str) or not wrap):
            raise ValueError("options.wrap: expected a non-empty string")
        self.wrap: str | None = wrap
        self.fields = _templates(options, "fields")
        if self.fields and wrap is None:
            raise ValueError("options.fields: needs `wrap` (the key the body goes under)")
        if wrap is not None and wrap in self.fields:
            raise ValueError(f"options.fields: {wrap!r} is the key the body goes under")
        unwrap = options.get("unwrap")
        if unwrap is not None and (not isinstance(unwrap, str) or not unwrap):
            raise ValueError("options.unwrap: expected a non-empty string")
        self.unwrap_key: str | None = unwrap
        path = options.get("path")
        if path is not None:
            if not isinstance(path, str) or not path.startswith("/"):
                raise ValueError("options.path: expected a path template starting with '/'")
            _check_template(path, "options.path")
        self.path_template: str | None = path
        if wrap is None and unwrap is None and path is None:
            raise ValueError("options: expected `wrap`, `unwrap` or `path`")

    def body(self, context: ShapingContext, body: dict[str, Any]) -> dict[str, Any]:
        if self.wrap is None:
            return body
        wrapped: dict[str, Any] = {name: context.fill(t) for name, t in self.fields.items()}
        wrapped[self.wrap] = body
        return wrapped

    def path(self, context: ShapingContext, path: str) -> str:
        if self.path_template is None:
            return path
        # Gemini's paths end in ":method" (and ?alt=sse for a stream): the method stays.
        method = path.rpartition(":")[2] if ":" in path else path.lstrip("/")
        # The model may be the client's choice: in a path it is one encoded segment that
        # cannot change the URL (model_names.path_segment refuses what would).
        model = path_segment(context.values["model"])
        return context.fill(self.path_template, method=method, model=model)

    def unwrap(self, data: Any) -> Any:
        key = self.unwrap_key
        if key is not None and isinstance(data, dict) and key in data:
            return data[key]
        return data  # an error body is not wrapped


class ForceStream(Step):
    forces_stream = True


class BaseUrl(Step):
    options = ("context",)

    def configure(self, options: dict[str, Any]) -> None:
        key = options.get("context", "api_base")
        if not isinstance(key, str) or not key:
            raise ValueError("options.context: expected the name of a context field")
        self.key = key

    def base_url(self, context: ShapingContext, base: str) -> str:
        # The value comes from the credential's token endpoint, never from the client; only
        # an http(s) URL is taken, anything else leaves the configured base.
        named = context.values.get(self.key, "")
        if named.startswith(("https://", "http://")):
            return named.rstrip("/")
        return base


class Shaping:
    """A provider's steps, in order."""

    __slots__ = ("forces_stream", "names", "steps", "unwrapping")

    def __init__(self, steps: Iterable[Step]) -> None:
        self.steps = tuple(steps)
        self.names = [type(step).__name__ for step in self.steps]  # for the transform record
        self.forces_stream = any(step.forces_stream for step in self.steps)
        # Unwrapped last step first: the outermost envelope comes off first.
        self.unwrapping = tuple(step for step in reversed(self.steps) if step.unwraps)

    def shape(
        self, context: ShapingContext, body: dict[str, Any], path: str
    ) -> tuple[dict[str, Any], str]:
        """The body and the path, through every step."""
        for step in self.steps:
            body = step.body(context, body)
            path = step.path(context, path)
        return body, path

    def base_url(self, context: ShapingContext, base: str) -> str:
        for step in self.steps:
            base = step.base_url(context, base)
        return base

    def headers(self, context: ShapingContext, headers: list[tuple[str, str]]) -> None:
        """The headers, through every step, in place."""
        for step in self.steps:
            step.headers(context, headers)

    def removes(self, field: str) -> bool:
        """Whether a body rule drops or refuses this top-level field."""
        return any(
            any(path == (("key", field),) for _, path in (*step.drop, *step.refuse))
            for step in self.steps
            if isinstance(step, BodyRules)
        )

    def unwrap(self, data: Any) -> Any:
        for step in self.unwrapping:
            data = step.unwrap(data)
        return data

    def __bool__(self) -> bool:
        return bool(self.steps)

    def __repr__(self) -> str:
        return f"Shaping({self.names!r})"


# --- option helpers -----------------------------------------------------------------------


def _templates(options: dict[str, Any], key: str) -> dict[str, str]:
    table = options.get(key, {})
    if not isinstance(table, dict) or not all(
        isinstance(k, str) and k and isinstance(v, str) for k, v in table.items()
    ):
        raise ValueError(f'options.{key}: expected a table of name = "template"')
    for name, template in table.items():
        _check_template(template, f"options.{key}.{name}")
    return {name.lower() if key != "fields" else name: t for name, t in table.items()}


def _check_template(template: str, where: str) -> None:
    try:
        fields = [f for _, f, _, _ in _FORMATTER.parse(template) if f is not None]
    except ValueError as exc:
        raise ValueError(f"{where}: not a valid template ({exc})") from None
    for field in fields:
        if not field.isidentifier():
            raise ValueError(f"{where}: {{{field}}} is not a plain field name")


def _values(options: dict[str, Any], key: str) -> list[tuple[Any, Any]]:
    table = options.get(key, {})
    if not isinstance(table, dict):
        raise ValueError(f"options.{key}: expected a table of path = value")
    out = []
    for text, value in table.items():
        path = _compile(text, f"options.{key}")
        out.append((path, value))
    return out


def _paths(options: dict[str, Any], key: str) -> list[tuple[str, Any]]:
    paths = options.get(key, [])
    if not isinstance(paths, list) or not all(isinstance(p, str) and p for p in paths):
        raise ValueError(f"options.{key}: expected a list of paths")
    return [(p, _compile(p, f"options.{key}")) for p in paths]


def _compile(text: str, where: str) -> Any:
    try:
        path = compile_path(text)
    except ValueError as exc:
        raise ValueError(f"{where}: {exc}") from None
    if path[-1][0] != "key":
        raise ValueError(f"{where}: {text!r}: the last segment must be a key")
    return path


def _fresh(value: Any) -> Any:
    # A table or list from the configuration is copied into each body, never shared by
    # two requests (a later step or layer may change it in place).
    return copy.deepcopy(value) if isinstance(value, (dict, list)) else value


def _delete(body: Any, path: Any) -> None:
    *head, (_, last) = path
    for parent in read(body, head) if head else [body]:
        if isinstance(parent, dict):
            parent.pop(last, None)


# --- the registry -------------------------------------------------------------------------


@cache
def _entry_point_targets() -> dict[str, str]:
    return {ep.name: ep.value for ep in entry_points(group="asgi_rotator.shaping")}


def step_names() -> list[str]:
    return sorted({*BUILTIN, *_entry_point_targets()})


def make_step(kind: str, options: Mapping[str, Any]) -> Step:
    """A step by its registered name; ``ValueError`` for an unknown name or option (its
    message starts with the field: ``step: ...``, ``options.wrap: ...``)."""
    target = _entry_point_targets().get(kind) or BUILTIN.get(kind)
    if target is None:
        raise ValueError(f"step: unknown {kind!r}; known: {', '.join(step_names())}")
    module, _, attr = target.partition(":")
    cls = getattr(import_module(module), attr)
    return cls(options)  # type: ignore[no-any-return]
