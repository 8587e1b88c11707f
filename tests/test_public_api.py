from __future__ import annotations

import asgi_rotator


def test_all_is_complete_and_sorted() -> None:
    public = {name for name in vars(asgi_rotator) if not name.startswith("_")}
    modules = {"cli", "config", "dispatch", "errors", "exchange", "middleware", "mock", "protocols",
               "providers", "routes", "sse", "stack", "state", "unified", "upstream", "annotations"}
    assert set(asgi_rotator.__all__) == public - modules
    assert asgi_rotator.__all__ == sorted(asgi_rotator.__all__)
