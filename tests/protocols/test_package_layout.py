"""Every codec package is the same template (docs/protocols.md), so a fifth protocol copies
one: the same modules, each importing only the ones before it, and what one module takes from
another under a public name (a private name is that module's own business)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import asgi_rotator.protocols

PROTOCOLS = Path(asgi_rotator.protocols.__file__).parent
PACKAGES = sorted(path.parent.name for path in PROTOCOLS.glob("*/__init__.py"))
# The template's modules, in the order they may import each other.
TEMPLATE = ("content", "request", "response", "stream", "__init__")


def _sibling_imports(path: Path) -> list[tuple[str, str]]:
    """(sibling module, name) for each name a module imports from its own package."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level == 1 and node.module:
            found += [(node.module, alias.name) for alias in node.names]
    return found


def test_there_are_codec_packages() -> None:
    assert {"anthropic", "gemini", "openai_chat", "openai_responses"} <= set(PACKAGES)


@pytest.mark.parametrize("package", PACKAGES)
def test_a_codec_package_is_the_template(package: str) -> None:
    modules = sorted(path.stem for path in (PROTOCOLS / package).glob("*.py"))
    assert modules == sorted(TEMPLATE)
    for index, module in enumerate(TEMPLATE):
        for sibling, name in _sibling_imports(PROTOCOLS / package / f"{module}.py"):
            assert sibling in TEMPLATE[:index], f"{package}/{module} imports .{sibling}"
            assert not name.startswith("_"), f"{package}/{module} imports {sibling}.{name}"
