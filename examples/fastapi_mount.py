"""The whole gateway mounted inside a FastAPI app, next to the app's own routes.

    pip install -e '.[serve]' fastapi && uvicorn examples.fastapi_mount:app

With no API keys set it serves the built-in mock providers; then, for instance:

    curl -s localhost:8000/llm/v1/chat/completions -H 'content-type: application/json' \\
      -d '{"model": "claude-mock", "messages": [{"role": "user", "content": "Hi"}]}'
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from asgi_rotator import build_app
from asgi_rotator.config import config_from_env
from asgi_rotator.stack import with_mock_providers

config = config_from_env()
gateway = build_app(config if config.providers else with_mock_providers(config))


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    yield
    await gateway.aclose()  # a mounted app's lifespan does not run: close its clients here


app = FastAPI(lifespan=lifespan)
app.mount("/llm", gateway)  # OpenAI SDKs: base_url=".../llm/v1"; Anthropic and Gemini: ".../llm"


@app.get("/")
async def home() -> dict[str, str]:
    return {"hello": "this is the host app; the gateway lives under /llm"}
