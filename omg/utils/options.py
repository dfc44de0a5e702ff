"""Command-line flags from an options dataclass, so a flag is declared once, next to the field it sets.

Each field becomes ``--field-name``: its type from the default (``bool`` fields: ``--name`` / ``--no-name``;
``tuple`` fields take the metadata's ``nargs`` values of its ``type``), its choices and help from the field's metadata
(``field(default=..., metadata={"choices": (...), "help": "..."})``), the default said in the help (or the metadata's
``default_text``). An unset flag leaves the field's default, so the dataclass stays the one place where defaults live.
"""

from __future__ import annotations

import argparse
import dataclasses
from typing import Any, TypeVar

T = TypeVar("T")


def add_options(parser: argparse.ArgumentParser | Any, cls: type) -> None:
    """One flag per field of the dataclass ``cls`` on ``parser`` (a parser or an argument group)."""
    for f in dataclasses.fields(cls):
        flag = "--" + f.name.replace("_", "-")
        help_text = f.metadata.get("help", "")
        shown = f.metadata.get("default_text", f.default)
        help_text = f"{help_text} (default {shown})" if help_text else f"(default {shown})"
        if isinstance(f.default, bool):
            parser.add_argument(flag, dest=f.name, action=argparse.BooleanOptionalAction, default=None, help=help_text)
        elif isinstance(f.default, tuple):  # a fixed number of values (metadata "nargs", "type", "metavar")
            parser.add_argument(
                flag,
                dest=f.name,
                nargs=f.metadata["nargs"],
                type=f.metadata["type"],
                metavar=f.metadata.get("metavar"),
                default=None,
                help=help_text,
            )
        else:
            parser.add_argument(
                flag, dest=f.name, type=type(f.default), choices=f.metadata.get("choices"), default=None, help=help_text
            )


def options_from_args(cls: type[T], args: argparse.Namespace) -> T:
    """The dataclass ``cls`` from the flags :func:`add_options` declared (a flag not given: the field's default)."""
    given = {f.name: getattr(args, f.name, None) for f in dataclasses.fields(cls)}
    return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in given.items() if v is not None})


def check_choices(options: Any) -> None:
    """Raise ``ValueError`` naming the field when a field's value is not one of its metadata's ``choices``."""
    for f in dataclasses.fields(options):
        allowed = f.metadata.get("choices")
        if allowed is not None and getattr(options, f.name) not in allowed:
            raise ValueError(f"{f.name} must be one of {', '.join(allowed)}, got {getattr(options, f.name)!r}")
