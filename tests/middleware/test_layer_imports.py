"""Every middleware module stands on its own: imported alone, in a fresh interpreter, it
brings in no other middleware module and not the terminal app (``dispatch``).  What layers
share lives in public modules of its own (``answer``, ``exchange``, the codecs)."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

import asgi_rotator
from asgi_rotator import middleware

PACKAGE = Path(asgi_rotator.__file__).parent
# A layer's module is where one of the package's middleware classes lives; the others
# (the routing helpers, cooldown's store keys, _held) are shared code any layer may use.
LAYERS = sorted(
    {getattr(middleware, name).__module__.rpartition(".")[2] for name in middleware.__all__}
)
# Empty now that the routing layers share a helper module instead of importing each other;
# an entry here would be a known (layer, layer it imports) pair still to be removed.
EXPECTED: set[tuple[str, str]] = set()

# The packages' own __init__ modules re-export every layer, so they are stood in for by
# bare packages: what is measured is what the layer's module itself imports.
_PROBE = """
import importlib, json, sys, types
for name, path in (("asgi_rotator", {root!r}), ("asgi_rotator.middleware", {middleware!r})):
    package = types.ModuleType(name)
    package.__path__ = [path]
    sys.modules[name] = package
importlib.import_module("asgi_rotator.middleware." + {layer!r})
print(json.dumps(sorted(sys.modules)))
"""


def test_every_layer_is_listed() -> None:
    assert {"auth", "cooldown", "fallback", "protocol", "responses", "stream_guard"} <= set(LAYERS)


@pytest.mark.parametrize("layer", LAYERS)
def test_a_middleware_module_imports_no_other_layer_and_not_dispatch(layer: str) -> None:
    code = _PROBE.format(root=str(PACKAGE), middleware=str(PACKAGE / "middleware"), layer=layer)
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    loaded = set(json.loads(done.stdout))
    assert f"asgi_rotator.middleware.{layer}" in loaded  # the probe measured something
    assert "asgi_rotator.dispatch" not in loaded
    others = {
        name.rpartition(".")[2]
        for name in loaded
        if name.startswith("asgi_rotator.middleware.") and name.rpartition(".")[2] in LAYERS
    } - {layer}
    assert {(layer, other) for other in others} <= EXPECTED, sorted(others)


MODULES = sorted(path.stem for path in (PACKAGE / "middleware").glob("*.py"))


@pytest.mark.parametrize("module", MODULES)
def test_no_import_of_another_layer_or_dispatch_even_inside_a_function(module: str) -> None:
    """The same rule for imports that only run when called (a fresh interpreter does not
    see those), and for the shared helpers under ``middleware/`` too: none imports
    dispatch, and a helper may be imported by any layer but imports none."""
    tree = ast.parse((PACKAGE / "middleware" / f"{module}.py").read_text())
    named: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            base = {0: "", 1: "asgi_rotator.middleware", 2: "asgi_rotator"}[node.level]
            imported = ".".join(p for p in (base, node.module or "") if p)
            named.add(imported)
            named.update(f"{imported}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            named.update(alias.name for alias in node.names)
    assert not {n for n in named if n.startswith("asgi_rotator.dispatch")}
    others = {
        n.split(".")[2]
        for n in named
        if n.startswith("asgi_rotator.middleware.") and n.split(".")[2] in LAYERS
    } - {module}
    if module == "__init__":
        return  # the package re-exports every layer, by design
    assert {(module, other) for other in others} <= EXPECTED, sorted(others)
