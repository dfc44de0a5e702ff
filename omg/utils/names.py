"""Class names as text: the normalisation the released code applies and synonym lists (shared by the data
labels, the text embeddings and the open-vocabulary inference)."""

from __future__ import annotations

from typing import Sequence


def normalize_class_name(name: str) -> list[str]:
    """OMG-Seg's class-string normalisation: ``_or_`` and ``/`` -> ``,``; ``_`` -> space; lower case; split on ``,``."""
    text = name.replace("_or_", ",").replace("/", ",").replace("_", " ").lower()
    out: list[str] = []
    for part in text.split(","):
        part = part.strip()
        if part and part not in out:
            out.append(part)
    return out



def as_vocabulary(classes: Sequence[str | Sequence[str]]) -> list[list[str]]:
    """Accept ``["circle, disc", ...]`` or ``[["circle", "disc"], ...]``; return synonym lists.

    Raises ``ValueError`` for an empty vocabulary or a class without a name.
    """
    if len(classes) == 0:
        raise ValueError("the vocabulary is empty: give at least one class name")
    vocab = []
    for i, c in enumerate(classes):
        syns = normalize_class_name(c) if isinstance(c, str) else [s for n in c for s in normalize_class_name(n)]
        if not syns:
            raise ValueError(f"class {i} of the vocabulary has no name: {c!r}")
        vocab.append(syns)
    return vocab
