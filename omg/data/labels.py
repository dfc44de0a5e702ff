"""The merged label space of joint training (docs/model.md §8.2).

Things and stuff are merged separately. Datasets are visited in order; a class whose
normalised synonym set intersects a class already merged (of the same kind) maps to it,
otherwise it is appended. The merged layout is all things, then all stuff. Class-agnostic
datasets (COCO-SAM, DAVIS) map every segment to -1 (ignored by the class loss). Held-out
classes (open-vocabulary evaluation only) never enter the training vocabulary.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

from omg.utils.vocabulary import Vocabulary, synonyms

IGNORE = -1


@dataclass(frozen=True)
class DatasetClasses:
    """What label merging needs to know about one dataset."""

    name: str
    class_agnostic: bool
    #: (category id, synonyms, isthing)
    classes: tuple[tuple[int, tuple[str, ...], bool], ...] = ()

    @staticmethod
    def from_manifest(manifest: dict) -> "DatasetClasses":
        return DatasetClasses(
            manifest["dataset"],
            bool(manifest["class_agnostic"]),
            tuple(
                (int(c["id"]), tuple(c["synonyms"]), bool(c["isthing"]))
                for c in manifest["classes"]
                if not c.get("heldout", False)
            ),
        )

    @staticmethod
    def from_entry(entry) -> "DatasetClasses":
        return DatasetClasses(
            entry.name,
            entry.class_agnostic,
            tuple((c.id, tuple(c.synonyms), c.isthing) for c in entry.classes if not c.heldout),
        )


@dataclass(frozen=True)
class LabelSpace:
    """The training vocabulary (things first, then stuff) and each dataset's mapping into it.

    mappings: dataset -> {dataset category id: merged index}; class-agnostic datasets map to :data:`IGNORE`.
    """

    vocabulary: Vocabulary
    mappings: dict[str, dict[int, int]] = field(default_factory=dict)
    class_agnostic: frozenset[str] = frozenset()

    @property
    def num_classes(self) -> int:
        return len(self.vocabulary)

    @property
    def num_things(self) -> int:
        return self.vocabulary.num_things

    def map(self, dataset: str, category_id: int) -> int:
        """Merged index of a dataset category; -1 for class-agnostic datasets."""
        if dataset in self.class_agnostic:
            return IGNORE
        try:
            return self.mappings[dataset][category_id]
        except KeyError:
            raise KeyError(f"category {category_id} of dataset {dataset!r} is not in the label space") from None

    def to_dict(self) -> dict:
        """The checkpoint-metadata form (``label_space``): the vocabulary's ``names``/``isthing`` plus the mappings."""
        return {
            **self.vocabulary.to_dict(),
            "mappings": {d: {str(k): v for k, v in m.items()} for d, m in self.mappings.items()},
            "class_agnostic": sorted(self.class_agnostic),
        }

    @staticmethod
    def from_dict(d: dict) -> "LabelSpace":
        return LabelSpace(
            Vocabulary.from_dict(d),
            {ds: {int(k): int(v) for k, v in m.items()} for ds, m in d.get("mappings", {}).items()},
            frozenset(d.get("class_agnostic", [])),
        )


def merge_label_spaces(datasets: Sequence[DatasetClasses]) -> LabelSpace:
    merged: dict[bool, list[tuple[str, ...]]] = {True: [], False: []}
    local: dict[str, list[tuple[int, bool, int]]] = {}  # dataset -> (category, isthing, index within kind)
    agnostic = set()
    for ds in datasets:
        if ds.class_agnostic:
            agnostic.add(ds.name)
            continue
        rows = []
        for cat, names, isthing in ds.classes:
            syn = synonyms(names)
            pool = merged[isthing]
            for k, existing in enumerate(pool):
                if set(existing) & set(syn):
                    rows.append((cat, isthing, k))
                    break
            else:
                pool.append(syn)
                rows.append((cat, isthing, len(pool) - 1))
        local[ds.name] = rows
    num_things = len(merged[True])
    mappings = {
        name: {cat: (k if isthing else num_things + k) for cat, isthing, k in rows} for name, rows in local.items()
    }
    vocabulary = Vocabulary(tuple(merged[True] + merged[False]), (True,) * num_things + (False,) * len(merged[False]))
    return LabelSpace(vocabulary, mappings, frozenset(agnostic))
