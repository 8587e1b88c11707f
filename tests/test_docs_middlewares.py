"""docs/middlewares.md: every snippet runs, composing its layer around the foreign app of
examples/selective.py, and the composed app answers."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import httpx
import pytest

pytestmark = pytest.mark.anyio

DOC = (Path(__file__).resolve().parent.parent / "docs" / "middlewares.md").read_text()
# Each section's heading, and the python blocks under it.
SECTIONS = re.split(r"^## ", DOC, flags=re.M)
PREAMBLE, *LAYERS = SECTIONS
SETUP = re.findall(r"```python\n(.*?)```", PREAMBLE, re.S)
SNIPPETS = {
    section.split("\n", 1)[0]: re.findall(r"```python\n(.*?)```", section, re.S)
    for section in LAYERS
}
# What a plain chat request gets from each composition (a missing key is refused).
EXPECTED = {"InboundKeys": 401}


def test_every_layer_has_its_section_and_snippet() -> None:
    from asgi_rotator import middleware

    documented = set(SNIPPETS)
    assert set(middleware.__all__) | {"Health", "ProviderDispatch"} <= documented
    assert all(len(blocks) == 1 for blocks in SNIPPETS.values())
    assert "examples/selective.py" in PREAMBLE


@pytest.mark.parametrize("layer", list(SNIPPETS))
async def test_the_snippet_runs_and_answers(layer: str) -> None:
    namespace: dict[str, Any] = {}
    for block in SETUP:
        exec(block, namespace)
    exec(SNIPPETS[layer][0], namespace)
    app = namespace["app"]
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://example") as client:
        response = await client.post(
            "/v1/chat/completions",
            json={"model": "m", "messages": [{"role": "user", "content": "Hi"}]},
        )
    assert response.status_code == EXPECTED.get(layer, 200), response.text
    providers = namespace.get("providers")
    if providers is not None:
        await providers.aclose()


def test_every_keyword_option_is_in_its_layers_table() -> None:
    import inspect

    from asgi_rotator import ProviderDispatch, middleware
    from asgi_rotator.health import Health

    classes = {name: getattr(middleware, name) for name in middleware.__all__}
    classes |= {"Health": Health, "ProviderDispatch": ProviderDispatch}
    sections = {section.split("\n", 1)[0]: section for section in LAYERS}
    for name, cls in classes.items():
        options = [p for p in inspect.signature(cls).parameters if p not in ("app", "self")]
        missing = [p for p in options if f"`{p}`" not in sections[name]]
        assert not missing, f"{name}: {missing} not documented"
