"""A Django project that serves the whole gateway under ``/llm/``.

    pip install -e '.[serve]' django
    uvicorn examples.django_mount.asgi:application

With no API keys set it serves the built-in mock providers; then, for instance:

    curl -s localhost:8000/llm/v1/chat/completions -H 'content-type: application/json' \\
      -d '{"model": "claude-mock", "messages": [{"role": "user", "content": "Hi"}]}'

Django's ``urls.py`` can only route to Django views, and Django's ASGI handler refuses
lifespan events, so this module is the host: one small ASGI app in front of both that

* sends ``/llm`` and everything under it to the gateway, with the prefix in ``root_path``
  (which is how the gateway finds its routes below a mount point); the rest goes to Django;
* answers the server's lifespan itself and closes the gateway's upstream clients and state
  stores at shutdown (``gateway.aclose()``); the clients are made lazily on first use.
"""

from __future__ import annotations

import os
from typing import Any

from django.core.asgi import get_asgi_application

from asgi_rotator import build_app
from asgi_rotator.config import config_from_env
from asgi_rotator.stack import with_mock_providers

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "examples.django_mount.site.settings")

# Written as Django writes its URL prefixes; "/llm" works the same.
PREFIX = os.environ.get("GATEWAY_PREFIX", "/llm/")
_BARE = PREFIX.rstrip("/")

django_app = get_asgi_application()
config = config_from_env()
gateway = build_app(config if config.providers else with_mock_providers(config))


async def application(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        await _lifespan(receive, send)
        return
    # The server's own root_path (a proxy's prefix, ``uvicorn --root-path``) stays in front.
    root: str = scope.get("root_path", "")
    path: str = scope["path"]
    inner = path[len(root) :] if root and path.startswith(root) else path
    if inner == _BARE or inner.startswith(_BARE + "/"):
        await gateway(dict(scope, root_path=root + PREFIX), receive, send)
        return
    await django_app(scope, receive, send)


async def _lifespan(receive: Any, send: Any) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await gateway.aclose()
            await send({"type": "lifespan.shutdown.complete"})
            return
