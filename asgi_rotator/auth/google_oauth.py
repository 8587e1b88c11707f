"""``google_oauth``: Google user credentials (the Gemini CLI's OAuth file by default) plus the
Code Assist project they work in, discovered once per credential.

Options: those of ``oauth_file`` (``layout`` defaults to ``gemini_cli`` and ``path`` to
``~/.gemini/oauth_creds.json``; ``client_id`` and ``client_secret`` are the installed app's
the file was made with), and:

* ``project``: the Google Cloud project to use; without it, it is discovered.
* ``code_assist_url``: the Code Assist API (``https://cloudcode-pa.googleapis.com/v1internal``).

Discovery follows the Gemini CLI's own setup (google-gemini/gemini-cli,
``packages/core/src/code_assist/setup.ts``): ``loadCodeAssist``; a user with a current tier
works in the project it names; otherwise ``onboardUser`` on the default allowed tier (the
free tier's project is managed, so none is named), waiting for the long-running operation,
whose answer names the project.  The project is shared through the store (one discovery for
all workers) and given to requests as the grant's ``project`` context.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import anyio
import msgspec

from ..errors import GatewayError
from ._base import Credential, Grant
from ._refreshing import TokenSet
from .oauth_file import OAuthFileOptions, OAuthFileStrategy

__all__ = ["GoogleOAuthOptions", "GoogleOAuthStrategy"]

CODE_ASSIST_URL = "https://cloudcode-pa.googleapis.com/v1internal"
# As the Gemini CLI describes itself to Code Assist.
_METADATA = {
    "ideType": "IDE_UNSPECIFIED",
    "platform": "PLATFORM_UNSPECIFIED",
    "pluginType": "GEMINI",
}
_FREE_TIER = "free-tier"
_OPERATION_POLL = 2.0


class GoogleOAuthOptions(OAuthFileOptions, kw_only=True, forbid_unknown_fields=True):
    path: str | list[str] = "~/.gemini/oauth_creds.json"
    layout: str = "gemini_cli"
    project: str | None = None
    code_assist_url: str = CODE_ASSIST_URL


class GoogleOAuthStrategy(OAuthFileStrategy):
    name = "google_oauth"
    Options = GoogleOAuthOptions

    def __init__(
        self,
        provider: str,
        options: GoogleOAuthOptions,
        *,
        environ: Mapping[str, str],
        where: str | None = None,
    ) -> None:
        super().__init__(provider, options, environ=environ, where=where)
        self.code_assist_url = options.code_assist_url.rstrip("/")
        self._projects: dict[int, str] = {}
        if options.project:
            self._projects = {c.index: options.project for c in self.credentials}

    def context(self, credential: Credential, tokens: TokenSet) -> Mapping[str, str]:
        project = self._projects.get(credential.index)
        return tokens.context if project is None else {**tokens.context, "project": project}

    async def grant(self, credential: Credential) -> Grant:
        grant = await super().grant(credential)
        if credential.index not in self._projects:
            raw = await self._shared.obtain(
                f"project:{self.source_key(credential)}",
                lambda raw: raw is not None,
                lambda: self._discover(grant),
            )
            self._projects[credential.index] = raw.decode()
            grant = Grant(
                grant.token,
                context={**grant.context, "project": raw.decode()},
                expires_at=grant.expires_at,
            )
        return grant

    async def _discover(self, grant: Grant) -> tuple[bytes, float | None]:
        headers = [("authorization", f"Bearer {grant.token}")]
        loaded = await self.post_json(":loadCodeAssist", {"metadata": _METADATA}, headers)
        project = loaded.get("cloudaicompanionProject")
        if loaded.get("currentTier") and isinstance(project, str) and project:
            return project.encode(), None
        tier = _FREE_TIER
        for allowed in loaded.get("allowedTiers") or ():
            if isinstance(allowed, dict) and allowed.get("isDefault"):
                tier = str(allowed.get("id") or tier)
        operation = await self.post_json(
            ":onboardUser", {"tierId": tier, "metadata": _METADATA}, headers
        )
        while not operation.get("done") and isinstance(operation.get("name"), str):
            await anyio.sleep(_OPERATION_POLL)
            operation = await self.call(
                "GET",
                f"{self.code_assist_url}/{operation['name']}",
                headers,
                b"",
                what="Code Assist onboarding",
            )
        response = operation.get("response")
        found = response.get("cloudaicompanionProject") if isinstance(response, dict) else None
        project = found.get("id") if isinstance(found, dict) else None
        if not isinstance(project, str) or not project:
            raise GatewayError(
                "auth",
                f"provider {self.provider}: Code Assist named no project for this account; "
                f"set it as {self.where}.project",
            )
        return project.encode(), None

    async def post_json(
        self, method: str, body: dict[str, Any], headers: list[tuple[str, str]]
    ) -> dict[str, Any]:
        sent = [("content-type", "application/json"), *headers]
        return await self.call(
            "POST",
            f"{self.code_assist_url}{method}",
            sent,
            msgspec.json.encode(body),
            what=f"Code Assist {method[1:]}",
        )
