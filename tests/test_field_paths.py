"""The field-cache path language (docs/field-cache.md)."""

from __future__ import annotations

from typing import Any

import pytest

from asgi_rotator.field_paths import compile_path, read, write

DOC: dict[str, Any] = {
    "id": "msg_1",
    "content": [
        {"type": "thinking", "signature": "s1"},
        {"type": "text", "text": "hi"},
        {"type": "thinking", "signature": "s2"},
    ],
    "candidates": [{"content": {"parts": [{"thoughtSignature": "g1"}, {"text": "x"}]}}],
}


@pytest.mark.parametrize(
    ("path", "found"),
    [
        ("id", ["msg_1"]),
        ("content[0].signature", ["s1"]),
        ("content[-1].signature", ["s2"]),
        ("content[*].type", ["thinking", "text", "thinking"]),
        ("content[?type=thinking].signature", ["s1", "s2"]),
        ("candidates[*].content.parts[*].thoughtSignature", ["g1"]),
        ("missing.key", []),
        ("content[7]", []),
        ("id[0]", []),
    ],
)
def test_read(path: str, found: list[Any]) -> None:
    assert read(DOC, compile_path(path)) == found


def test_write_creates_objects_and_respects_when() -> None:
    body: dict[str, Any] = {"messages": [{"role": "user"}, {"role": "assistant"}]}
    assert write(body, compile_path("metadata.session"), "abc", always=False) == 1
    assert body["metadata"] == {"session": "abc"}
    assert write(body, compile_path("metadata.session"), "new", always=False) == 0
    assert write(body, compile_path("metadata.session"), "new", always=True) == 1
    assert write(body, compile_path("messages[?role=assistant].tag"), 1, always=False) == 1
    assert body["messages"][1] == {"role": "assistant", "tag": 1}


@pytest.mark.parametrize("bad", ["", ".id", "content[", "content[?type]", "a..b", "a b"])
def test_bad_paths_are_refused(bad: str) -> None:
    with pytest.raises(ValueError):
        compile_path(bad)
