"""Shared pieces of the format readers."""

from __future__ import annotations

import numpy as np

from omg.data import io as uio
from omg.data.catalog import DatasetEntry
from omg.data.masks import mask_bbox, rle_encode
from omg.data.records import BadRecord, Sample, Segment


class Reader:
    """Base class: ``items()`` lists, ``load(item)`` reads one record."""

    def __init__(self, entry: DatasetEntry, split: str, root: str | None = None):
        self.entry = entry
        self.split = split
        self.paths = entry.split_paths(split, root)
        self.known_categories = {c.id for c in entry.classes}

    def items(self) -> list[dict]:
        raise NotImplementedError

    #: the ``paths`` key of the annotation file that a malformed record is reported against
    annotation_key: str = ""

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
            raise BadRecord(self.annotation_file(), self.record_name(item), str(err.args[0]) if err.args else "",
                            "missing from the annotation") from None
        except (TypeError, ValueError, IndexError, AttributeError) as err:
            raise BadRecord(self.annotation_file(), self.record_name(item), "",
                            f"malformed annotation ({type(err).__name__}: {err})") from None

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
        """Encoded bytes and (height, width); decodes fully and strictly (:func:`omg.data.io.check_image`),
        so a truncated or corrupt file is caught here."""
        data = self.read(uri, record, field_)
        try:
            size = uio.check_image(data, uri)
        except ValueError as err:
            raise BadRecord(uri, record, field_, f"unreadable, truncated or corrupt image ({err.__cause__ or err})") from None
        return data, size

    def png_array(self, uri: str, record: str, field_: str) -> tuple[bytes, np.ndarray, str]:
        data = self.read(uri, record, field_)
        try:
            img = uio.decode_image(data, uri)
        except ValueError as err:
            raise BadRecord(uri, record, field_, f"unreadable, truncated or corrupt mask PNG ({err.__cause__ or err})") from None
        return data, np.array(img), img.mode

    def check_category(self, cat: int, source: str, record: str) -> None:
        if self.known_categories and cat not in self.known_categories:
            raise BadRecord(source, record, "category_id",
                            f"unknown category {cat} (not among the {len(self.known_categories)} classes of {self.entry.name})")

    def check_size(self, got: tuple[int, int], want: tuple[int, int], source: str, record: str, field_: str) -> None:
        if tuple(got) != tuple(want):
            raise BadRecord(source, record, field_, f"size {got[1]}x{got[0]} does not match the image's {want[1]}x{want[0]}")


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
        pos = np.searchsorted(ids[order], m)
        pos = np.minimum(pos, len(ids) - 1) if len(ids) else pos
        hit = (ids[order][pos] == m) if len(ids) else np.zeros(m.shape, bool)
        index = np.where(hit, order[pos] + 1, 0).astype(dtype)
        out.append(uio.encode_png(index))
    return out


def segments_from_id_maps(id_maps: list[np.ndarray], categories: dict[int, int], crowd: dict[int, bool],
                          with_rles: bool = False) -> list[Segment]:
    """Per-frame id maps -> one Segment per id (areas and boxes per frame), in ``categories`` order."""
    t = len(id_maps)
    out = []
    for sid, cat in categories.items():
        areas, boxes, rles = [], [], []
        for ids in id_maps:
            m = ids == sid
            a = int(m.sum())
            areas.append(a)
            boxes.append([float(v) for v in mask_bbox(m)] if a else [0.0, 0.0, 0.0, 0.0])
            if with_rles:
                rles.append(rle_encode(m)["counts"] if a else "")
        out.append(Segment(id=int(sid), category_id=int(cat), iscrowd=bool(crowd.get(sid, False)), areas=areas,
                           bboxes=boxes, rles=rles if with_rles else []))
    assert all(len(s.areas) == t for s in out)
    return out
