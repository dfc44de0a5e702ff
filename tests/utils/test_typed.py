from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import pytest

from omg.utils.typed import SchemaError, from_dict, to_dict


@dataclass(frozen=True)
class Inner:
    x: int
    mode: Literal["a", "b"] = "a"


@dataclass(frozen=True)
class Outer:
    name: str
    inner: Inner
    items: tuple[float, ...] = ()
    table: dict[str, int] = field(default_factory=dict)
    maybe: str | None = None


def test_roundtrip():
    data = {"name": "n", "inner": {"x": 1, "mode": "b"}, "items": [1, 2.5], "table": {"k": 3}, "maybe": None}
    obj = from_dict(Outer, data, "f.yaml")
    assert obj.items == (1.0, 2.5) and obj.inner.mode == "b"
    assert to_dict(obj) == {**data, "items": [1.0, 2.5]}


@pytest.mark.parametrize(
    "data,key,fragment",
    [
        ({"name": "n", "inner": {"x": 1}, "extra": 1}, "extra", "unknown key"),
        ({"inner": {"x": 1}}, "name", "missing required key"),
        ({"name": 3, "inner": {"x": 1}}, "name", "expected a string"),
        ({"name": "n", "inner": {"x": True}}, "inner.x", "expected an integer"),
        ({"name": "n", "inner": {"x": 1, "mode": "c"}}, "inner.mode", "expected one of"),
        ({"name": "n", "inner": {"x": 1}, "items": [1, "a"]}, "items.1", "expected a number"),
        ({"name": "n", "inner": {"x": 1}, "table": {"k": "v"}}, "table.k", "expected an integer"),
    ],
)
def test_errors_name_source_and_key(data, key, fragment):
    with pytest.raises(SchemaError) as info:
        from_dict(Outer, data, "f.yaml")
    assert info.value.key == key
    assert str(info.value).startswith(f"f.yaml: key '{key}'")
    assert fragment in str(info.value)
