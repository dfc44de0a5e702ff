"""Class names as text: the one vocabulary type, and the class-string normalisation of the released code.

A :class:`Vocabulary` is what every layer means by "the classes": synonym lists (each already normalised)
with their thing/stuff flags. The training label space holds one (:class:`omg.data.labels.LabelSpace`), the
text embedder embeds one, the predictor classifies against one, an evaluation builds one from a dataset's
catalog entry. Strings, lists and dicts become a Vocabulary only at I/O (:meth:`Vocabulary.parse`);
:meth:`Vocabulary.to_dict` is the checkpoint-metadata form.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable, Sequence


def normalize_class_name(name: str) -> list[str]:
    """OMG-Seg's class-string normalisation: ``_or_`` and ``/`` -> ``,``; ``_`` -> space; lower case; split on ``,``."""
    text = name.replace("_or_", ",").replace("/", ",").replace("_", " ").lower()
    out: list[str] = []
    for part in text.split(","):
        part = part.strip()
        if part and part not in out:
            out.append(part)
    return out


def synonyms(names: str | Iterable[str]) -> tuple[str, ...]:
    """One class's normalised synonyms, in order, without repeats (``"circle, disc"`` or ``["circle", "disc"]``)."""
    out: list[str] = []
    for n in [names] if isinstance(names, str) else names:
        for s in normalize_class_name(n):
            if s not in out:
                out.append(s)
    return tuple(out)


@dataclass(frozen=True)
class Vocabulary:
    """Classes as normalised synonym lists, each a thing or stuff (label k is class k)."""

    names: tuple[tuple[str, ...], ...]
    isthing: tuple[bool, ...]

    def __post_init__(self):
        if len(self.names) != len(self.isthing):
            raise ValueError(f"vocabulary: {len(self.names)} classes but {len(self.isthing)} thing/stuff flags")
        for i, syns in enumerate(self.names):
            if not syns:
                raise ValueError(f"class {i} of the vocabulary has no name")

    def __len__(self) -> int:
        return len(self.names)

    @property
    def display(self) -> list[str]:
        """The first synonym of each class."""
        return [n[0] for n in self.names]

    @property
    def num_things(self) -> int:
        return sum(self.isthing)

    @staticmethod
    def of(classes: Sequence[str | Sequence[str]], isthing: Sequence[bool] | None = None) -> "Vocabulary":
        """From class names (``["circle, disc", ...]`` or ``[["circle", "disc"], ...]``), things unless ``isthing``
        says otherwise. Raises ``ValueError`` for an empty vocabulary or a class without a name."""
        if isinstance(classes, str) or len(classes) == 0:
            raise ValueError("the vocabulary is empty: give at least one class name")
        names = []
        for i, c in enumerate(classes):
            syns = synonyms(c)
            if not syns:
                raise ValueError(f"class {i} of the vocabulary has no name: {c!r}")
            names.append(syns)
        flags = tuple(bool(x) for x in isthing) if isthing is not None else (True,) * len(names)
        return Vocabulary(tuple(names), flags)

    @staticmethod
    def parse(items: Sequence[Any], training: "Vocabulary | None" = None) -> "Vocabulary":
        """A request's vocabulary: ``"circle, disc"``, ``["circle", "disc"]``, ``"stuff:sky"`` or
        ``{"names": [...], "isthing": bool}`` per class (a Vocabulary is returned as it is).

        Without an explicit flag a class is stuff if it matches a stuff class of the training
        vocabulary, else a thing.
        """
        if isinstance(items, Vocabulary):
            return items
        if isinstance(items, str) or len(items) == 0:
            raise ValueError("the vocabulary must be a non-empty list of class names")
        train: dict[str, bool] = {}
        if training is not None:
            for syns, th in zip(training.names, training.isthing):
                for s in syns:
                    train.setdefault(s, th)
        names, flags = [], []
        for i, item in enumerate(items):
            if isinstance(item, dict):
                raw, flag = item.get("names") or item.get("name"), item.get("isthing")
            else:
                raw, flag = item, None
            if isinstance(raw, str) and raw.lower().startswith(("stuff:", "thing:")):
                flag = raw.lower().startswith("thing:")
                raw = raw.split(":", 1)[1]
            syns = synonyms(raw) if raw else ()
            if not syns:
                raise ValueError(f"vocabulary entry {i} has no name: {item!r}")
            if flag is None:
                flag = next((train[s] for s in syns if s in train), True)
            names.append(syns)
            flags.append(bool(flag))
        return Vocabulary(tuple(names), tuple(flags))

    def seen_in(self, training: "Vocabulary") -> list[bool]:
        """Per class: whether one of its synonyms is a synonym of a ``training`` class."""
        train = {s for syns in training.names for s in syns}
        return [bool(set(syns) & train) for syns in self.names]

    def plus(self, other: "Vocabulary") -> "Vocabulary":
        """This vocabulary followed by ``other``'s classes."""
        return Vocabulary(self.names + other.names, self.isthing + other.isthing)

    def items(self) -> list[str]:
        """The classes as a request writes them (what :meth:`parse` reads back to this vocabulary): synonyms
        comma-separated, a stuff class prefixed ``stuff:`` (``["circle, disc", "stuff:sky"]``)."""
        return [("" if th else "stuff:") + ", ".join(syns) for syns, th in zip(self.names, self.isthing)]

    def to_dict(self) -> dict:
        return {"names": [list(n) for n in self.names], "isthing": list(self.isthing)}

    @staticmethod
    def from_dict(d: dict) -> "Vocabulary":
        return Vocabulary(tuple(tuple(n) for n in d["names"]), tuple(bool(x) for x in d["isthing"]))
