"""``oauth_file``: an OAuth token file that the user's own CLI wrote, refreshed in place.

Options (``credential = {strategy = "oauth_file", ...}``):

* ``path``: the file, or a list of files (a pool, one credential each); ``~`` expands.
* ``layout``: where the fields sit in the file, by name (below) or ``generic``; every field
  of a layout can be overridden: ``access_token``, ``refresh_token``, ``expires_at`` (dotted
  paths into the JSON), ``expires_unit`` (``ms``, ``s``, ``iso`` or ``jwt``: the access
  token's own ``exp`` claim), ``id_token``, ``refreshed_at`` (an ISO time written on
  refresh), ``context`` (name -> path: facts a request needs, such as ``account_id``).
* ``token_url``, ``client_id``, ``client_secret`` (``env:NAME`` allowed), ``scope``,
  ``body`` (``json`` or ``form``): the token endpoint and how it is asked.
* ``margin`` (seconds before expiry to refresh, default 300), ``timeout`` (30).

Layouts, each from the client that writes the file:

* ``claude_code``: Claude Code's ``~/.claude/.credentials.json`` (``claudeAiOauth``, expiry
  in ms; refreshed at ``console.anthropic.com/v1/oauth/token`` with Claude Code's public
  client id, JSON body).
* ``codex``: Codex CLI's ``~/.codex/auth.json`` (``tokens.*``, no expiry field: the access
  token's JWT ``exp``; ``last_refresh`` written on refresh; ``account_id`` as context;
  refreshed at ``auth.openai.com/oauth/token`` with the Codex CLI's public client id).
* ``gemini_cli``: Gemini CLI's ``~/.gemini/oauth_creds.json`` (google-auth-library's
  ``expiry_date`` in ms; ``oauth2.googleapis.com/token``, form body; ``client_id`` and
  ``client_secret`` are the options of the installed app to refresh as).

Write-back keeps the file's shape: it is re-read, only the token fields (and the expiry in
the file's own unit, ``refreshed_at``, ``id_token``) are changed, every other field stays,
and the new file replaces the old atomically with the old file's permissions.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import tempfile
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import anyio.to_thread
import msgspec

from ..config import ConfigError, resolve_secret
from ..errors import GatewayError
from ..field_paths import Segment, compile_path, read, write
from ..redaction import register_secret
from ._base import Credential, fingerprint
from ._refreshing import RefreshingStrategy, TokenSet
from ._shared import now

__all__ = ["LAYOUTS", "Layout", "OAuthFileOptions", "OAuthFileStrategy", "TokenFile"]

ExpiresUnit = Literal["ms", "s", "iso", "jwt"]


class Layout(msgspec.Struct, kw_only=True, frozen=True):
    access_token: str
    refresh_token: str
    expires_at: str | None = None
    expires_unit: ExpiresUnit = "s"
    id_token: str | None = None
    refreshed_at: str | None = None
    context: dict[str, str] = msgspec.field(default_factory=dict)
    token_url: str | None = None
    client_id: str | None = None
    scope: str | None = None
    body: Literal["json", "form"] = "json"


LAYOUTS: dict[str, Layout] = {
    # Claude Code (the CLI's credentials file and its refresh request, as Claude Code's
    # OAuth clients document them).
    "claude_code": Layout(
        access_token="claudeAiOauth.accessToken",
        refresh_token="claudeAiOauth.refreshToken",
        expires_at="claudeAiOauth.expiresAt",
        expires_unit="ms",
        token_url="https://console.anthropic.com/v1/oauth/token",
        client_id="9d1c250a-e61b-44d9-88ed-5944d1962f5e",
    ),
    # Codex CLI (openai/codex, codex-rs/core auth: auth.json and its refresh request).
    "codex": Layout(
        access_token="tokens.access_token",
        refresh_token="tokens.refresh_token",
        expires_unit="jwt",
        id_token="tokens.id_token",
        refreshed_at="last_refresh",
        context={"account_id": "tokens.account_id"},
        token_url="https://auth.openai.com/oauth/token",
        client_id="app_EMoamEEZ73f0CkXaXp7hrann",
        scope="openid profile email",
    ),
    # Gemini CLI (google-gemini/gemini-cli, code_assist/oauth2.ts: google-auth-library's
    # Credentials written as JSON).
    "gemini_cli": Layout(
        access_token="access_token",
        refresh_token="refresh_token",
        expires_at="expiry_date",
        expires_unit="ms",
        id_token="id_token",
        token_url="https://oauth2.googleapis.com/token",
        body="form",
    ),
    "generic": Layout(
        access_token="access_token", refresh_token="refresh_token", expires_at="expires_at"
    ),
}


class OAuthFileOptions(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    path: str | list[str]
    layout: str = "generic"
    access_token: str | None = None
    refresh_token: str | None = None
    expires_at: str | None = None
    expires_unit: ExpiresUnit | None = None
    id_token: str | None = None
    refreshed_at: str | None = None
    context: dict[str, str] | None = None
    token_url: str | None = None
    client_id: str | None = None
    client_secret: str | None = None
    scope: str | None = None
    body: Literal["json", "form"] | None = None
    margin: float = 300.0
    timeout: float = 30.0


class OAuthFileStrategy(RefreshingStrategy):
    name = "oauth_file"
    Options = OAuthFileOptions

    def __init__(
        self,
        provider: str,
        options: OAuthFileOptions,
        *,
        environ: Mapping[str, str],
        where: str | None = None,
    ) -> None:
        super().__init__(provider, options, environ=environ, where=where)
        if options.layout not in LAYOUTS:
            raise ConfigError(
                f"{self.where}.layout: unknown layout {options.layout!r}; "
                f"known: {', '.join(LAYOUTS)}"
            )
        overrides = {
            f.name: getattr(options, f.name)
            for f in msgspec.structs.fields(Layout)
            if getattr(options, f.name, None) is not None
        }
        self.layout = msgspec.structs.replace(LAYOUTS[options.layout], **overrides)
        for name, path in _paths(self.layout).items():
            try:
                compile_path(path)
            except ValueError as exc:
                raise ConfigError(f"{self.where}.{name}: {path!r}: {exc}") from None
        if self.layout.token_url is None:
            raise ConfigError(f"{self.where}.token_url: is required for layout {options.layout!r}")
        self.client_id = self.layout.client_id
        self.client_secret = None
        if options.client_secret is not None:
            self.client_secret = resolve_secret(
                options.client_secret, environ, f"{self.where}.client_secret"
            )
            register_secret(self.client_secret)
        if self.client_id is None:
            raise ConfigError(f"{self.where}.client_id: is required for layout {options.layout!r}")
        paths = [options.path] if isinstance(options.path, str) else options.path
        if not paths:
            raise ConfigError(f"{self.where}.path: expected at least one file")
        self.files: list[TokenFile] = []
        self.paths = paths
        for i, raw in enumerate(paths):
            at = f"{self.where}.path" + ("" if isinstance(options.path, str) else f"[{i}]")
            token_file = TokenFile(Path(raw).expanduser(), self.layout)
            credential = Credential(provider, i)
            try:
                # At startup: a missing or unreadable file is a configuration error now.
                tokens = token_file.read()
            except (OSError, ValueError) as exc:
                raise ConfigError(f"{at}: {_reason(exc)}") from None
            self.credentials.append(credential)
            self.files.append(token_file)
            self.hold(credential, tokens)

    def source_key(self, credential: Credential) -> str:
        # The path as configured (``~`` unexpanded): workers on other machines, given the
        # same configuration, name the same credential; a changed path is another one.  A
        # hash, as a home directory may name its user.
        return f"{credential.id}:{fingerprint(self.paths[credential.index])}"

    async def reload(self, credential: Credential) -> TokenSet | None:
        token_file = self.files[credential.index]
        try:
            return await anyio.to_thread.run_sync(token_file.read)
        except (OSError, ValueError):
            return None  # gone or half-written: the refresh below decides

    async def adopted(
        self, credential: Credential, tokens: TokenSet, previous: TokenSet | None
    ) -> None:
        token_file = self.files[credential.index]
        on_file = await self.reload(credential)
        # Only over what this process last saw there: a file the user has logged in again
        # with since is theirs, and newer.
        if (
            on_file is not None
            and previous is not None
            and on_file.access_token == previous.access_token
        ):
            await anyio.to_thread.run_sync(token_file.write, tokens)

    async def renew(self, credential: Credential, current: TokenSet | None) -> TokenSet:
        layout = self.layout
        if current is None or not current.refresh_token:
            raise GatewayError(
                "auth", f"provider {self.provider}: the token file holds no refresh token"
            )
        fields = {"grant_type": "refresh_token", "refresh_token": current.refresh_token}
        assert self.client_id is not None and layout.token_url is not None
        fields["client_id"] = self.client_id
        if self.client_secret is not None:
            fields["client_secret"] = self.client_secret
        if layout.scope is not None:
            fields["scope"] = layout.scope
        answer = await self.post_form_or_json(
            layout.token_url, fields, form=layout.body == "form", what="token refresh"
        )
        tokens = tokens_from_answer(answer, current)
        self.hold(credential, tokens)  # redacted before anything can print it
        token_file = self.files[credential.index]
        await anyio.to_thread.run_sync(token_file.write, tokens)
        return tokens


def tokens_from_answer(answer: Mapping[str, Any], current: TokenSet | None) -> TokenSet:
    """A token endpoint's answer (RFC 6749 section 5.1) as tokens; a refresh token it does
    not rotate stays the current one."""
    access = answer.get("access_token")
    if not isinstance(access, str) or not access:
        raise GatewayError("auth", "the token endpoint answered without an access_token")
    refresh = answer.get("refresh_token")
    if not isinstance(refresh, str) or not refresh:
        refresh = current.refresh_token if current is not None else None
    obtained = now()
    expires_in = answer.get("expires_in")
    expires_at = None
    if isinstance(expires_in, int | float) and not isinstance(expires_in, bool):
        expires_at = obtained + float(expires_in)
    else:
        expires_at = _jwt_expiry(access)
    extra = {k: answer[k] for k in ("id_token",) if isinstance(answer.get(k), str)}
    return TokenSet(
        access_token=access,
        refresh_token=refresh,
        expires_at=expires_at,
        obtained_at=obtained,
        context=dict(current.context) if current is not None else {},
        extra=extra,
    )


class TokenFile:
    """One token file read and written through a ``Layout``.  Blocking: run in a thread."""

    __slots__ = ("_at", "layout", "path")

    def __init__(self, path: Path, layout: Layout) -> None:
        self.path = path
        self.layout = layout
        # The layout's paths in the field cache's path language (dotted keys, [index]).
        self._at = {name: compile_path(where) for name, where in _paths(layout).items()}

    def __repr__(self) -> str:
        return f"TokenFile({self.path.name!r})"

    def read(self) -> TokenSet:
        data = _load(self.path.read_text())
        layout, at = self.layout, self._at
        access = _get(data, at["access_token"])
        if not isinstance(access, str) or not access:
            raise ValueError(f"no access token at {layout.access_token!r}")
        refresh = _get(data, at["refresh_token"])
        expires_at: float | None
        if layout.expires_unit == "jwt":
            expires_at = _jwt_expiry(access)
        else:
            raw = _get(data, at["expires_at"]) if "expires_at" in at else None
            expires_at = _expiry_from(raw, layout.expires_unit)
        context = {}
        for name in layout.context:
            value = _get(data, at[f"context.{name}"])
            if isinstance(value, str) and value:
                context[name] = value
        tokens = TokenSet(
            access_token=access,
            refresh_token=refresh if isinstance(refresh, str) and refresh else None,
            expires_at=expires_at,
            context=context,
        )
        register_secret(tokens.access_token)
        register_secret(tokens.refresh_token)
        return tokens

    def write(self, tokens: TokenSet) -> None:
        """The file with ``tokens`` in it, every other field as it was, replaced atomically."""
        layout, at = self.layout, self._at
        data = _load(self.path.read_text())
        write(data, at["access_token"], tokens.access_token, always=True)
        if tokens.refresh_token is not None:
            write(data, at["refresh_token"], tokens.refresh_token, always=True)
        if "expires_at" in at and layout.expires_unit != "jwt" and tokens.expires_at is not None:
            expiry = _expiry_to(tokens.expires_at, layout.expires_unit)
            write(data, at["expires_at"], expiry, always=True)
        if "id_token" in at and "id_token" in tokens.extra:
            write(data, at["id_token"], tokens.extra["id_token"], always=True)
        if "refreshed_at" in at:
            stamp = datetime.fromtimestamp(tokens.obtained_at or now(), UTC)
            write(data, at["refreshed_at"], stamp.isoformat().replace("+00:00", "Z"), always=True)
        text = json.dumps(data, indent=2)
        mode = self.path.stat().st_mode & 0o777
        fd, temporary = tempfile.mkstemp(prefix=f".{self.path.name}.", dir=self.path.parent)
        try:
            with os.fdopen(fd, "w") as out:
                os.fchmod(out.fileno(), mode)
                out.write(text)
                out.flush()
                os.fsync(out.fileno())
            os.replace(temporary, self.path)
        except BaseException:
            os.unlink(temporary)
            raise


def _get(data: Any, path: tuple[Segment, ...]) -> Any:
    found = read(data, path)
    return found[0] if found else None


def _paths(layout: Layout) -> dict[str, str]:
    """The layout's JSON paths by option name (``context.<name>`` for a context's)."""
    paths = {
        name: getattr(layout, name)
        for name in ("access_token", "refresh_token", "expires_at", "id_token", "refreshed_at")
        if getattr(layout, name) is not None
    }
    paths.update({f"context.{name}": path for name, path in layout.context.items()})
    return paths


def _expiry_from(raw: Any, unit: ExpiresUnit) -> float | None:
    if raw is None:
        return None
    if unit == "iso":
        if not isinstance(raw, str):
            raise ValueError("the expiry is not an ISO time")
        return datetime.fromisoformat(raw.replace("Z", "+00:00")).timestamp()
    if isinstance(raw, bool) or not isinstance(raw, int | float):
        raise ValueError("the expiry is not a number")
    return raw / 1000.0 if unit == "ms" else float(raw)


def _expiry_to(expires_at: float, unit: ExpiresUnit) -> Any:
    if unit == "ms":
        return int(expires_at * 1000)
    if unit == "iso":
        return datetime.fromtimestamp(expires_at, UTC).isoformat().replace("+00:00", "Z")
    return int(expires_at)


def _load(text: str) -> Any:
    """A token file's JSON; nested deeper than the decoder goes, a ``ValueError`` like any
    other file that cannot be read."""
    try:
        return json.loads(text)
    except RecursionError:
        raise ValueError("JSON nested too deeply") from None


def _jwt_expiry(token: str) -> float | None:
    """The ``exp`` claim of a JWT (unverified: the gateway only schedules its refresh by it)."""
    parts = token.split(".")
    if len(parts) != 3:
        return None
    payload = parts[1] + "=" * (-len(parts[1]) % 4)
    try:
        claims = json.loads(base64.urlsafe_b64decode(payload))
    except (ValueError, binascii.Error, RecursionError):
        return None
    exp = claims.get("exp") if isinstance(claims, dict) else None
    if isinstance(exp, int | float) and not isinstance(exp, bool):
        return float(exp)
    return None


def _reason(exc: BaseException) -> str:
    if isinstance(exc, FileNotFoundError):
        return "no such file"
    if isinstance(exc, OSError):
        return f"cannot read: {exc.strerror}"
    if isinstance(exc, json.JSONDecodeError):
        return "not valid JSON"
    return str(exc)
