"""Shared pieces of the format readers."""

from __future__ import annotations

from collections import Counter

import numpy as np

from omg.data.catalog import DatasetEntry
from omg.data.masks import coco_bbox, rle_encode
from omg.data.records import BadRecord, Problem, Sample, Segment
from omg.utils import io as uio


class Reader:
    """Base class: ``items()`` lists, ``load(item)`` reads one record."""

    def __init__(self, entry: DatasetEntry, split: str, root: str | None = None):
        self.entry = entry
        self.split = split
        self.root = root
        self.paths = entry.split_paths(split, root)
        self.known_categories = {c.id for c in entry.classes}
        #: what a load dropped on purpose, by reason ("segment in the JSON with no pixel in the PNG": 3); the
        #: preprocessing receipts and ``omg data validate`` report these counts
        self.dropped: Counter[str] = Counter()

    def items(self) -> list[dict]:
        raise NotImplementedError

    #: the ``paths`` key of the annotation file that a malformed record is reported against
    annotation_key: str = ""
    #: False: image files are read and their size taken from the header, not decoded (``validate --no-images``)
    decode_images: bool = True

    def parse(self, item: dict) -> Sample:
        """One record from its item (the subclass's work)."""
        raise NotImplementedError

    def load(self, item: dict) -> Sample:
        """One record; a missing or ill-typed annotation field becomes a :class:`BadRecord` naming the
        annotation file, the record and the field, so a batch job quarantines it and goes on."""
        try:
            return self.parse(item)
        except BadRecord:
            raise
        except KeyError as err:
            raise BadRecord(
                self.annotation_file(),
                self.record_name(item),
                str(err.args[0]) if err.args else "",
                "missing from the annotation",
            ) from None
        except (TypeError, ValueError, IndexError, AttributeError) as err:
            raise BadRecord(
                self.annotation_file(),
                self.record_name(item),
                self.annotation_key or "annotation",
                f"malformed annotation ({type(err).__name__}: {err})",
            ) from None

    # ------------------------------------------------------------------ validation (omg data validate)
    def check(self, item: dict, sample: Sample, strict: bool = False) -> list[Problem]:
        """Consistency of a record the reader could load: what its annotation says beyond what the
        :class:`Sample` needs (areas and boxes stored in the JSON against the masks, duplicate ids, ...).
        ``strict`` also reports what the reader tolerates on purpose (documented per format)."""
        return []

    def check_items(self, items: list[dict], strict: bool = False) -> list[Problem]:
        """Consistency across the records of a split (duplicate ids, the file's category list)."""
        return []

    def annotation_file(self) -> str:
        return self.paths.get(self.annotation_key) or next(iter(self.paths.values()), self.entry.name)

    def record_name(self, item: dict) -> str:
        return f"{'video' if self.entry.modality == 'video' else 'image_id'} {item.get('key', '?')}"

    def __iter__(self):
        for item in self.items():
            yield self.load(item)

    # ------------------------------------------------------------------ helpers
    def read(self, uri: str, record: str, field_: str) -> bytes:
        try:
            return uio.read_bytes(uri)
        except FileNotFoundError:
            raise BadRecord(uri, record, field_, "file is missing") from None
        except OSError as err:
            raise BadRecord(uri, record, field_, f"cannot read: {err}") from None

    def image(self, uri: str, record: str, field_: str = "file_name") -> tuple[bytes, tuple[int, int]]:
        """Encoded bytes and (height, width); decodes fully and strictly (:func:`omg.utils.io.check_image`),
        so a truncated or corrupt file is caught here."""
        data = self.read(uri, record, field_)
        try:
            size = uio.check_image(data, uri) if self.decode_images else uio.image_size(data, uri)
        except ValueError as err:
            raise BadRecord(
                uri, record, field_, f"unreadable, truncated or corrupt image ({err.__cause__ or err})"
            ) from None
        return data, size

    def png_array(self, uri: str, record: str, field_: str) -> tuple[bytes, np.ndarray, str]:
        data = self.read(uri, record, field_)
        try:
            img = uio.decode_image(data, uri)
        except ValueError as err:
            raise BadRecord(
                uri, record, field_, f"unreadable, truncated or corrupt mask PNG ({err.__cause__ or err})"
            ) from None
        return data, np.array(img), img.mode

    def category_map(self, categories: list | None) -> dict[int, int]:
        """The annotation file's category ids -> the catalog's. An id that names the same class in both stays;
        otherwise a file category whose name is a catalog class's name takes that class's id (Cityscapes'
        converter writes label ids, 7 = road, or trainIds, 0 = road, depending on ``--use-train-id``; the
        catalog holds trainIds); any other id stays as it is (and is checked by :meth:`check_category`)."""
        if not categories or not self.entry.classes:
            return {}
        by_name = {_norm(c.name): c.id for c in self.entry.classes}
        names = {c.id: _norm(c.name) for c in self.entry.classes}
        out = {}
        for c in categories:
            if not isinstance(c, dict) or not isinstance(c.get("id"), int):
                continue
            name = _norm(str(c.get("name", "")))
            if names.get(c["id"]) == name or name not in by_name:
                out[c["id"]] = c["id"]
            else:
                out[c["id"]] = by_name[name]
        return {k: v for k, v in out.items() if k != v}

    #: the format whose converter writes covered stuff segments (:data:`COVERED`)
    COVERED_STUFF_FORMATS = ("ade20k_panoptic",)

    def covered_segments(self, infos: list[dict], png_ids: set[int], png_uri: str, record: str) -> set[int]:
        """The ids of ``infos`` (segments_info) without a pixel in the PNG: for ADE20K's converter, stuff segments
        that things wholly cover (dropped, counted in :attr:`dropped`); anything else makes the record bad
        (panopticapi refuses such a JSON)."""
        covered = [s for s in infos if s["id"] not in png_ids]
        if not covered:
            return set()
        stuff = {c.id for c in self.entry.stuff_classes}
        allowed = self.entry.format in self.COVERED_STUFF_FORMATS
        wrong = [s for s in covered if not (allowed and s["category_id"] in stuff)]
        if wrong:
            what = ", ".join(f"{s['id']} (category {s['category_id']})" for s in wrong[:5])
            rule = (
                "only a stuff segment under things may be (ADE20K's converter)"
                if allowed
                else "every segment the JSON lists must have pixels in the PNG"
            )
            raise BadRecord(
                png_uri,
                record,
                "segments_info",
                f"segment{'s' if len(wrong) > 1 else ''} {what} listed in the JSON "
                f"{'have' if len(wrong) > 1 else 'has'} no pixel in the PNG: {rule}",
            )
        self.dropped[COVERED] += len(covered)
        return {s["id"] for s in covered}

    def check_category(self, cat: int, source: str, record: str) -> None:
        if self.known_categories and cat not in self.known_categories:
            raise BadRecord(
                source,
                record,
                "category_id",
                f"unknown category {cat} (not among the {len(self.known_categories)} classes of {self.entry.name})",
            )

    def check_categories(self, categories) -> list[Problem]:
        """The annotation file's category list: ids unique, ``isthing`` 0/1, every id known to the catalog."""
        out, seen = [], set()
        source = self.annotation_file()
        for k, c in enumerate(categories or []):
            rec = f"category {c.get('id', f'#{k}') if isinstance(c, dict) else f'#{k}'}"
            if not isinstance(c, dict) or not isinstance(c.get("id"), int):
                out.append(Problem(source, rec, "id", "a category needs an integer id"))
                continue
            if c["id"] in seen:
                out.append(Problem(source, rec, "id", "duplicate category id"))
            seen.add(c["id"])
            if "isthing" in c and c["isthing"] not in (0, 1, True, False):
                out.append(Problem(source, rec, "isthing", f"must be 0 or 1, got {c['isthing']!r}"))
        return out

    def check_size(self, got: tuple[int, int], want: tuple[int, int], source: str, record: str, field_: str) -> None:
        if tuple(got) != tuple(want):
            raise BadRecord(
                source, record, field_, f"size {got[1]}x{got[0]} does not match the image's {want[1]}x{want[0]}"
            )


#: the reason a segment listed in the JSON but holding no pixel of its PNG is dropped (ADE20K's converter keeps
#: stuff segments that things wholly cover); counted in :attr:`Reader.dropped`, never a bad record
#: the one segment a panoptic JSON may list without a pixel in its PNG: ADE20K's converter keeps a stuff segment that
#: things wholly cover, with its pre-overlap area (any other such segment is damaged data: the record is quarantined)
COVERED = "stuff segment in the JSON wholly covered by things in the PNG (ADE20K converter)"


def _norm(name: str) -> str:
    return " ".join(name.replace("_", " ").lower().split())


def segment_index_pngs(id_maps: list[np.ndarray], segments: list[Segment]) -> list[bytes]:
    """Per-frame id maps -> PNGs of the ``segment_index`` kind (value k = ``segments[k-1]``, 0 = VOID;
    ids not among ``segments``, e.g. crowd regions dropped for COCO-SAM, become VOID)."""
    ids = np.array([s.id for s in segments], dtype=np.int64)
    order = np.argsort(ids)
    dtype = np.uint8 if len(segments) < 256 else np.uint16
    if len(segments) >= 65536:
        raise ValueError("more than 65535 segments in one record")
    out = []
    for m in id_maps:
        if not len(ids):  # nothing labelled: all VOID
            out.append(uio.encode_png(np.zeros(m.shape, dtype)))
            continue
        pos = np.minimum(np.searchsorted(ids[order], m), len(ids) - 1)
        hit = ids[order][pos] == m
        index = np.where(hit, order[pos] + 1, 0).astype(dtype)
        out.append(uio.encode_png(index))
    return out


def segments_from_id_maps(
    id_maps: list[np.ndarray], categories: dict[int, int], crowd: dict[int, bool], with_rles: bool = False
) -> list[Segment]:
    """Per-frame id maps -> one Segment per id (areas and boxes per frame), in ``categories`` order."""
    t = len(id_maps)
    out = []
    for sid, cat in categories.items():
        areas, boxes, rles = [], [], []
        for ids in id_maps:
            m = ids == sid
            a = int(m.sum())
            areas.append(a)
            boxes.append([float(v) for v in coco_bbox(m)] if a else [0.0, 0.0, 0.0, 0.0])
            if with_rles:
                rles.append(rle_encode(m)["counts"] if a else "")
        out.append(
            Segment(
                id=int(sid),
                category_id=int(cat),
                iscrowd=bool(crowd.get(sid, False)),
                areas=areas,
                bboxes=boxes,
                rles=rles if with_rles else [],
            )
        )
    assert all(len(s.areas) == t for s in out)
    return out
