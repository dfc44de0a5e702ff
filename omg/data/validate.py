"""``omg data validate``: a dataset's files checked by the format readers themselves.

The readers (``omg/data/formats/``) are the one place a format is parsed: what makes a record bad
for training (a missing or undecodable file, PNG ids that disagree with the JSON, an unknown
category, a missing frame, a size mismatch) is what they raise as :class:`BadRecord`. Validation
runs every record of a split through its reader and adds the reader's consistency checks
(:meth:`Reader.check` / :meth:`Reader.check_items`: areas and boxes stored in the JSON against the
masks, duplicate ids, the category list) and the held-out classes of the catalog (they must not
occur in a training split). ``strict`` also reports what a reader tolerates on purpose (ADE20K's
pre-overlap areas, COCO crowd areas, OVIS box areas, segments with no pixel in their PNG).

Each split gives a :class:`Report`: counts, what was dropped on purpose, and the problems (file,
record, field, message).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from omg.data.catalog import DatasetEntry, Format, load_catalog
from omg.data.formats import get_reader
from omg.data.records import BadRecord, Problem
from omg.utils.errors import describe
from omg.utils.progress import Progress

__all__ = ["Problem", "Report", "validate_dataset", "validate_files", "validate_omg_shapes", "validate_split"]


@dataclass
class Report:
    what: str
    counts: dict[str, int] = field(default_factory=dict)
    problems: list[Problem] = field(default_factory=list)
    #: what the reader dropped on purpose, by reason (not problems; see the format's reader)
    dropped: dict[str, int] = field(default_factory=dict)
    #: stop collecting after this many problems (the count keeps going)
    max_problems: int = 50
    num_problems: int = 0

    @property
    def ok(self) -> bool:
        return self.num_problems == 0

    def add(self, problem: Problem) -> None:
        self.num_problems += 1
        if len(self.problems) < self.max_problems:
            self.problems.append(problem)

    def count(self, key: str, n: int = 1) -> None:
        self.counts[key] = self.counts.get(key, 0) + n

    def summary(self) -> str:
        counts = ", ".join(f"{v} {k}" for k, v in self.counts.items())
        dropped = "".join(f"; dropped {n} x {reason}" for reason, n in self.dropped.items())
        status = "OK" if self.ok else f"{self.num_problems} problem(s)"
        return f"{self.what}: {counts or 'nothing'}{dropped} -- {status}"


def validate_split(
    entry: DatasetEntry,
    split: str,
    root: str | None = None,
    check_images: bool = True,
    progress: bool = False,
    strict: bool = False,
) -> Report:
    """Every record of one split through its reader, plus the reader's consistency checks."""
    reader = get_reader(entry, split, root)
    reader.decode_images = check_images
    report = Report(f"{entry.name}/{split} ({entry.format} {reader.annotation_file()})")
    try:
        items = reader.items()
    except FileNotFoundError as err:
        report.add(
            Problem(
                str(err.filename or reader.annotation_file()),
                "",
                "",
                "missing: the split's annotation file or folder is not there (check the catalog paths or --root)",
            )
        )
        return report
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as err:
        what = describe(err) if isinstance(err, OSError) else f"{type(err).__name__}: {err}"
        report.add(Problem(reader.annotation_file(), "", "", f"cannot read the split's annotations: {what}"))
        return report
    heldout = {c.id for c in entry.classes if c.heldout} if split == "train" else set()
    leaked: Counter[int] = Counter()
    unit = "videos" if entry.modality == "video" else "images"
    with Progress(f"validate {entry.name}/{split}", total=len(items), unit=unit[:-1], enabled=progress) as prog:
        for item in items:
            prog.update()
            try:
                sample = reader.load(item)
            except BadRecord as err:
                report.add(Problem.of(err))
                continue
            for problem in reader.check(item, sample, strict):
                report.add(problem)
            report.count(unit)
            if entry.modality == "video":
                report.count("frames", sample.num_frames)
            report.count("tracks" if entry.modality == "video" else "segments", len(sample.segments))
            leaked.update(g.category_id for g in sample.segments if g.category_id in heldout)
    for problem in reader.check_items(items, strict):
        report.add(problem)
    for cat, n in sorted(leaked.items()):
        report.add(
            Problem(
                reader.annotation_file(),
                f"category {cat}",
                "category_id",
                f"held-out class occurs {n} times in a training split",
            )
        )
    report.dropped = dict(sorted(reader.dropped.items()))
    if strict:
        for reason, n in report.dropped.items():
            report.add(Problem(reader.annotation_file(), "", "", f"--strict: {n} x {reason}"))
    return report


def validate_dataset(
    entry: DatasetEntry,
    root: str | None = None,
    check_images: bool = True,
    progress: bool = False,
    splits: list[str] | None = None,
    strict: bool = False,
) -> list[Report]:
    """Every split of a catalog entry (or the ``splits`` named; an unknown one raises ``KeyError``)."""
    for split in splits or []:
        if split not in entry.splits:
            raise KeyError(f"dataset {entry.name!r} has no split {split!r} (splits: {', '.join(entry.splits)})")
    return [validate_split(entry, split, root, check_images, progress, strict) for split in (splits or entry.splits)]


def validate_files(
    format: Format, modality: str = "image", check_images: bool = True, strict: bool = False, **paths: str
) -> Report:
    """Files of a format outside the catalog (e.g. prediction files ``omg predict`` wrote), by their paths
    (``images=..., panoptic_json=..., panoptic_masks=...`` for COCO panoptic). No class list: any category
    id is accepted."""
    entry = DatasetEntry(
        name="files",
        description="",
        format=format,
        modality=modality,
        root="",
        splits={"files": dict(paths)},
        tasks=(),
        evaluators=(),
    )
    return validate_split(entry, "files", None, check_images, strict=strict)


def validate_omg_shapes(root: str, check_images: bool = True, progress: bool = False) -> list[Report]:
    """Validate every omg-shapes catalog entry against the files under ``root``."""
    catalog = load_catalog()
    reports = []
    for entry in catalog.values():
        if entry.name.startswith("omg-shapes") and entry.derived_from is None:
            reports += validate_dataset(entry, root, check_images, progress)
    return reports
