from __future__ import annotations

import types

import asgi_rotator


def test_all_is_complete_and_sorted() -> None:
    # Every public name but the submodules (imported as a side effect) and the
    # ``from __future__ import annotations`` feature.
    public = {
        name
        for name, value in vars(asgi_rotator).items()
        if not name.startswith("_")
        and not isinstance(value, types.ModuleType)
        and name != "annotations"
    }
    assert set(asgi_rotator.__all__) == public
    assert asgi_rotator.__all__ == sorted(asgi_rotator.__all__)
