"""The mock's token side: the token endpoints of the backends the presets reach, and which
access tokens are valid now.

Like the rest of the mock, written from the services' documented behaviour, sharing no code
with ``asgi_rotator.auth``:

* Access tokens expire after ``lifetime`` seconds; a model request with an expired, unknown
  or revoked token is a 401 in the protocol's error shape (``MockUpstream(authority=...)``).
* ``POST /v1/oauth/token`` (Anthropic console, JSON) and ``POST /oauth/token`` (OpenAI auth,
  JSON) refresh and rotate: the refresh token used is spent, a second use is
  ``400 invalid_grant``, as both services do.  OpenAI's access tokens are JWTs (Codex reads
  their ``exp``) and the answer carries an ``id_token``.
* ``POST /token`` (Google OAuth, form body, ``client_secret`` required) refreshes without
  rotating, as Google does for installed apps.
* ``GET /copilot_internal/v2/token`` (GitHub, ``Authorization: token <github token>``)
  exchanges a known GitHub token for a Copilot token: ``token``, ``expires_at`` (unix
  seconds), ``refresh_in``, ``endpoints.api``.
* ``POST /v1internal:loadCodeAssist`` and ``:onboardUser`` (Code Assist): a user not yet
  onboarded has no ``currentTier`` and a default allowed tier; onboarding answers a
  long-running operation, done at once, naming the managed project.

Every endpoint counts its calls (``refreshes``, ``exchanges``, ``loads``, ``onboards``), so a
test can assert that fifty requests at expiry refreshed once.
"""

from __future__ import annotations

import base64
import itertools
import json
import os
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qs

import msgspec

__all__ = ["TokenAuthority"]

_json = msgspec.json.Encoder()
_JSON_HEADERS = [(b"content-type", b"application/json")]

# Paths of the refresh endpoints -> (body format, rotates the refresh token, JWT access tokens)
_REFRESH = {
    "/v1/oauth/token": ("json", True, False),  # console.anthropic.com (Claude Code)
    "/oauth/token": ("json", True, True),  # auth.openai.com (Codex)
    "/token": ("form", False, False),  # oauth2.googleapis.com (Gemini CLI)
}
_COPILOT_EXCHANGE = "/copilot_internal/v2/token"
_LOAD = "/v1internal:loadCodeAssist"
_ONBOARD = "/v1internal:onboardUser"


class TokenAuthority:
    """Issued tokens and the endpoints that issue them.  ``clock`` is wall-clock seconds
    (the clients compute expiry from ``expires_in`` and ``expires_at`` in wall time)."""

    def __init__(
        self,
        *,
        lifetime: float = 3600.0,
        api_base: str | None = None,
        clock: Callable[[], float] = time.time,
        latency: float = 0.0,
    ) -> None:
        self.lifetime = lifetime
        self.api_base = api_base  # what the Copilot exchange names as endpoints.api
        self.clock = clock
        self.latency = latency  # seconds a token endpoint takes (concurrency tests)
        self.access: dict[str, float] = {}  # access token -> expiry
        self.refresh: set[str] = set()  # live refresh tokens
        self.spent: set[str] = set()  # rotated-away refresh tokens
        self.github: set[str] = set()  # GitHub tokens the Copilot exchange takes
        self.onboarded: dict[str, str] = {}  # refresh-independent user -> project
        self.refreshes = 0
        self.exchanges = 0
        self.loads = 0
        self.onboards = 0
        self._counter = itertools.count(1)

    # --- what a test sets up --------------------------------------------------------------

    def issue(
        self, *, expires_in: float | None = None, jwt: bool = False
    ) -> tuple[str, str, float]:
        """A new (access token, refresh token, expiry) as if the user had just logged in."""
        expiry = self.clock() + (self.lifetime if expires_in is None else expires_in)
        access = self._access_token(expiry, jwt)
        refresh = f"mock-rt-{next(self._counter)}-{_noise()}"
        self.refresh.add(refresh)
        return access, refresh, expiry

    def revoke(self, access_token: str) -> None:
        """The service drops a token before its expiry (a 401 the gateway must cure)."""
        self.access.pop(access_token, None)

    def valid(self, token: str | None) -> bool:
        expiry = self.access.get(token or "")
        return expiry is not None and expiry > self.clock()

    # --- the endpoints ----------------------------------------------------------------------

    def handles(self, method: str, path: str) -> bool:
        return (method == "POST" and path in _REFRESH) or (
            (method, path) in {("GET", _COPILOT_EXCHANGE), ("POST", _LOAD), ("POST", _ONBOARD)}
        )

    def answer(
        self, method: str, path: str, headers: dict[str, str], raw: bytes
    ) -> tuple[int, bytes]:
        """(status, JSON body) for a request ``handles`` accepted."""
        if path in _REFRESH:
            return self._refresh(path, headers, raw)
        if path == _COPILOT_EXCHANGE:
            return self._exchange(headers)
        token = headers.get("authorization", "")[7:]
        if not self.valid(token):
            return 401, _error(401, "UNAUTHENTICATED", "Request had invalid credentials.")
        body = _object(raw)
        if body is None:
            return 400, _error(400, "INVALID_ARGUMENT", "Invalid JSON payload received.")
        if path == _LOAD:
            return self._load(body)
        return self._onboard(body)

    def _refresh(self, path: str, headers: dict[str, str], raw: bytes) -> tuple[int, bytes]:
        form, rotates, jwt = _REFRESH[path]
        content_type = headers.get("content-type", "")
        if form == "form":
            if "application/x-www-form-urlencoded" not in content_type:
                return 400, _oauth_error("invalid_request", "expected a form body")
            fields = {k: v[0] for k, v in parse_qs(raw.decode("latin-1")).items()}
        else:
            body = _object(raw)
            if body is None or "application/json" not in content_type:
                return 400, _oauth_error("invalid_request", "expected a JSON body")
            fields = {k: v for k, v in body.items() if isinstance(v, str)}
        if fields.get("grant_type") != "refresh_token":
            return 400, _oauth_error("unsupported_grant_type", "grant_type must be refresh_token")
        if not fields.get("client_id") or (form == "form" and not fields.get("client_secret")):
            return 401, _oauth_error("invalid_client", "client authentication failed")
        token = fields.get("refresh_token", "")
        if token not in self.refresh:
            reason = "refresh token already used" if token in self.spent else "unknown token"
            return 400, _oauth_error("invalid_grant", reason)
        self.refreshes += 1
        expiry = self.clock() + self.lifetime
        answer: dict[str, Any] = {
            "access_token": self._access_token(expiry, jwt),
            "token_type": "Bearer",
            "expires_in": int(self.lifetime),
        }
        if rotates:
            self.refresh.discard(token)
            self.spent.add(token)
            fresh = f"mock-rt-{next(self._counter)}-{_noise()}"
            self.refresh.add(fresh)
            answer["refresh_token"] = fresh
        if jwt:
            answer["id_token"] = _jwt({"exp": int(expiry), "email": "user@example.com"})
        return 200, _json.encode(answer)

    def _exchange(self, headers: dict[str, str]) -> tuple[int, bytes]:
        scheme, _, token = headers.get("authorization", "").partition(" ")
        if scheme.lower() != "token" or token not in self.github:
            return 401, _json.encode(
                {"message": "Bad credentials", "documentation_url": "https://docs.github.com"}
            )
        self.exchanges += 1
        expiry = self.clock() + self.lifetime
        access = self._access_token(expiry, False)
        answer: dict[str, Any] = {
            "token": access,
            "expires_at": int(expiry),
            "refresh_in": int(self.lifetime * 0.8),
        }
        if self.api_base is not None:
            answer["endpoints"] = {"api": self.api_base}
        return 200, _json.encode(answer)

    def _load(self, body: dict[str, Any]) -> tuple[int, bytes]:
        self.loads += 1
        metadata = body.get("metadata")
        if not isinstance(metadata, dict) or metadata.get("pluginType") != "GEMINI":
            return 400, _error(400, "INVALID_ARGUMENT", "metadata.pluginType is required")
        project = self.onboarded.get("user")
        if project is None:
            tier = {"id": "free-tier", "name": "Gemini Code Assist for individuals"}
            return 200, _json.encode({"allowedTiers": [{**tier, "isDefault": True}]})
        return 200, _json.encode(
            {"currentTier": {"id": "free-tier"}, "cloudaicompanionProject": project}
        )

    def _onboard(self, body: dict[str, Any]) -> tuple[int, bytes]:
        self.onboards += 1
        if body.get("tierId") != "free-tier":
            return 400, _error(400, "INVALID_ARGUMENT", "tierId is not an allowed tier")
        if body.get("cloudaicompanionProject"):
            # The free tier's project is managed: naming one is refused, as Code Assist does.
            return 400, _error(400, "FAILED_PRECONDITION", "Precondition check failed.")
        project = self.onboarded.setdefault("user", f"mock-project-{_noise()}")
        return 200, _json.encode(
            {
                "name": "operations/onboard-1",
                "done": True,
                "response": {"cloudaicompanionProject": {"id": project, "name": project}},
            }
        )

    def _access_token(self, expiry: float, jwt: bool) -> str:
        n = next(self._counter)
        token = _jwt({"exp": int(expiry), "n": n}) if jwt else f"mock-at-{n}-{_noise()}"
        self.access[token] = expiry
        return token


def _noise() -> str:
    return base64.urlsafe_b64encode(os.urandom(9)).decode()


def _jwt(claims: dict[str, Any]) -> str:
    def part(data: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(data).encode()).decode().rstrip("=")

    return f"{part({'alg': 'none', 'typ': 'JWT'})}.{part(claims)}.{_noise()}"


def _object(raw: bytes) -> dict[str, Any] | None:
    try:
        data = json.loads(raw) if raw else None
    except (ValueError, RecursionError):
        return None
    return data if isinstance(data, dict) else None


def _oauth_error(code: str, description: str) -> bytes:
    return _json.encode({"error": code, "error_description": description})


def _error(status: int, kind: str, message: str) -> bytes:
    return _json.encode({"error": {"code": status, "message": message, "status": kind}})
