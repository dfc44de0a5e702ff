"""Strict construction of (nested, frozen) dataclasses from plain dicts (YAML/JSON).

Used by the dataset catalog and the run configs. Every error names the source
(usually a file) and the dotted key, e.g.
``datasets_catalog/coco.yaml: key 'splits.train.images': expected str, got int (3)``.

Supported field types: ``str``, ``int``, ``float``, ``bool``, ``Literal[...]``,
``Optional[T]``, ``list[T]``, ``tuple[T, ...]``, ``dict[str, T]`` and nested dataclasses.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any, Literal, Union


class SchemaError(ValueError):
    """A value does not fit the schema. ``str(err)`` names the source and the key."""

    def __init__(self, source: str, key: str, message: str):
        self.source, self.key, self.message = source, key, message
        where = f"key '{key}'" if key else "top level"
        super().__init__(f"{source}: {where}: {message}")


class FieldError(ValueError):
    """Raised by a dataclass's ``__post_init__`` for one field: :func:`from_dict` reports it under that field's
    dotted key (``model.variant``), with the source."""

    def __init__(self, field_: str, message: str):
        self.field, self.message = field_, message
        super().__init__(f"{field_}: {message}")


def yaml_problem(err: Exception) -> str:
    """A YAML parse error in one line: ``not valid YAML (line 3, column 7): found unexpected end of stream``."""
    mark = getattr(err, "problem_mark", None)
    where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
    problem = getattr(err, "problem", None) or str(err).splitlines()[0]
    return f"not valid YAML{where}: {problem}"


def _describe(value: Any) -> str:
    text = repr(value)
    if len(text) > 60:
        text = text[:57] + "..."
    return f"{type(value).__name__} ({text})"


def _join(prefix: str, key: Any) -> str:
    return f"{prefix}.{key}" if prefix else str(key)


def convert(tp: Any, value: Any, source: str, key: str) -> Any:
    """Check ``value`` against type ``tp`` and convert it (lists to tuples, dicts to dataclasses)."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return value
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        candidates = [arg for arg in args if arg is not type(None)]
        if len(candidates) == 1:  # Optional[T]: T's own error, with its key (a nested field's included)
            return convert(candidates[0], value, source, key)
        errors = []
        for arg in candidates:
            try:
                return convert(arg, value, source, key)
            except SchemaError as err:
                errors.append(err.message)
        raise SchemaError(source, key, " or ".join(errors))
    if origin is Literal:
        if value not in args:
            choices = ", ".join(repr(a) for a in args)
            raise SchemaError(source, key, f"expected one of {choices}, got {value!r}")
        return value
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise SchemaError(source, key, f"expected a mapping, got {_describe(value)}")
        return from_dict(tp, value, source, key)
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise SchemaError(source, key, f"expected a list, got {_describe(value)}")
        item_tp = args[0] if args else Any
        items = [convert(item_tp, v, source, _join(key, i)) for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is dict:
        if not isinstance(value, dict):
            raise SchemaError(source, key, f"expected a mapping, got {_describe(value)}")
        key_tp, val_tp = args if args else (Any, Any)
        out = {}
        for k, v in value.items():
            if key_tp is str and not isinstance(k, str):
                raise SchemaError(source, _join(key, k), f"mapping keys must be strings, got {_describe(k)}")
            out[k] = convert(val_tp, v, source, _join(key, k))
        return out
    if tp is bool:
        if not isinstance(value, bool):
            raise SchemaError(source, key, f"expected true/false, got {_describe(value)}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise SchemaError(source, key, f"expected an integer, got {_describe(value)}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise SchemaError(source, key, f"expected a number, got {_describe(value)}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise SchemaError(source, key, f"expected a string, got {_describe(value)}")
        return value
    raise TypeError(f"unsupported schema type {tp!r} at {key}")


def from_dict(cls: type, data: dict, source: str, prefix: str = "") -> Any:
    """Build dataclass ``cls`` from ``data``: unknown keys, missing keys and wrong types raise."""
    if not isinstance(data, dict):
        raise SchemaError(source, prefix, f"expected a mapping, got {_describe(data)}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise SchemaError(
            source,
            _join(prefix, unknown[0]),
            f"unknown key (allowed here: {', '.join(sorted(fields))})",
        )
    kwargs = {}
    for name, field in fields.items():
        key = _join(prefix, name)
        if name not in data:
            if field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING:
                raise SchemaError(source, key, "missing required key")
            continue
        kwargs[name] = convert(hints[name], data[name], source, key)
    try:
        return cls(**kwargs)
    except SchemaError:
        raise
    except FieldError as err:
        raise SchemaError(source, _join(prefix, err.field), err.message) from err
    except (ValueError, TypeError) as err:  # __post_init__ invariants
        raise SchemaError(source, prefix, str(err)) from err


def to_dict(obj: Any) -> Any:
    """Inverse of :func:`from_dict` for dataclasses (tuples become lists)."""
    if dataclasses.is_dataclass(obj):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    if isinstance(obj, dict):
        return {k: to_dict(v) for k, v in obj.items()}
    return obj
