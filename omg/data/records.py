"""The typed sample record: one image or one video, as every format reader yields it.

A :class:`Sample` carries encoded bytes only (JPEG/PNG frames, PNG or RLE masks), so it is
cheap to move through Ray Data and to store in Parquet; decoding happens in the training
ingest. Masks are lossless and come in one of four kinds:

``segment_index`` one 8-bit (16-bit beyond 255 segments) PNG per frame; value k > 0 is ``segments[k-1]``,
              0 = VOID. Panoptic data (COCO, Cityscapes, ADE20K, VIPSeg) is stored this way: lossless given
              ``segments`` (which keep the original ids), a third of an RGB id PNG, and no id decoding
``panoptic``  one RGB id PNG per frame (id = R + 256 G + 256^2 B, 0 = VOID); segment ids as in ``segments``
``semantic``  one label PNG per frame (uint8 class id, 255 = ignore); a segment per class present, id = class id
``index``     one palette PNG per frame (DAVIS: 0 = background, 255 = ignore, k = object k)
``rle``       no PNG; every segment carries one compressed COCO RLE per frame (may overlap; "" = absent)

Every segment records per-frame areas and boxes (``[x, y, w, h]``, zeros where absent).
``category_id`` is the dataset's own id (-1 for class-agnostic data).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from typing import Literal

import pyarrow as pa

MaskKind = Literal["segment_index", "panoptic", "semantic", "index", "rle"]

#: bump when the Parquet layout changes
SCHEMA_VERSION = 2


class BadRecord(ValueError):
    """A source record cannot be turned into a valid :class:`Sample`.

    ``str(err)`` names the source file, the record and the field; the preprocessing job
    quarantines the record with this reason and goes on.
    """

    def __init__(self, source: str, record: str, field_: str, reason: str):
        self.source, self.record, self.field, self.reason = source, record, field_, reason
        where = ", ".join(x for x in (record, f"field '{field_}'" if field_ else "") if x)
        super().__init__(f"{source}: {where}: {reason}")


@dataclass(frozen=True)
class Problem:
    """A finding of ``omg data validate``: a bad record, or an inconsistency a reader tolerates (a JSON area
    that disagrees with the mask, a duplicate id, ...). ``str()`` names the file, record and field."""

    file: str
    record: str
    field: str
    message: str

    def __str__(self) -> str:
        where = ", ".join(x for x in (self.record, f"field '{self.field}'" if self.field else "") if x)
        return f"{self.file}: {where}: {self.message}" if where else f"{self.file}: {self.message}"

    @staticmethod
    def of(err: "BadRecord") -> "Problem":
        return Problem(err.source, err.record, err.field, err.reason)


@dataclass
class Segment:
    id: int
    category_id: int
    iscrowd: bool
    areas: list[int]
    bboxes: list[list[float]]
    #: compressed RLE counts per frame ("" = absent); only for mask kind "rle"
    rles: list[str] = field(default_factory=list)

    def present(self) -> list[bool]:
        return [a > 0 for a in self.areas]


@dataclass
class Sample:
    dataset: str
    split: str
    key: str
    modality: Literal["image", "video"]
    height: int
    width: int
    frame_names: list[str]
    frames: list[bytes]
    mask_kind: MaskKind
    masks: list[bytes]
    segments: list[Segment]
    #: where the record came from (image/video path or URI)
    source: str
    #: sha256 over the record's source bytes (frames, masks and its annotation JSON)
    checksum: str

    @property
    def num_frames(self) -> int:
        return len(self.frames)

    def __post_init__(self):
        if len(self.frames) != len(self.frame_names):
            raise ValueError(f"{self.key}: {len(self.frames)} frames but {len(self.frame_names)} frame names")
        if self.mask_kind != "rle" and self.masks and len(self.masks) != len(self.frames):
            raise ValueError(f"{self.key}: {len(self.masks)} mask PNGs for {len(self.frames)} frames")

    # ------------------------------------------------------------------ Arrow rows
    def to_row(self) -> dict:
        row = asdict(self)
        row["segments"] = [asdict(s) for s in self.segments]
        return row

    @staticmethod
    def from_row(row: dict) -> "Sample":
        segs = [
            Segment(
                id=int(s["id"]),
                category_id=int(s["category_id"]),
                iscrowd=bool(s["iscrowd"]),
                areas=list(s["areas"]),
                bboxes=[list(b) for b in s["bboxes"]],
                rles=list(s["rles"] or []),
            )
            for s in row["segments"]
        ]
        return Sample(
            dataset=row["dataset"],
            split=row["split"],
            key=row["key"],
            modality=row["modality"],
            height=int(row["height"]),
            width=int(row["width"]),
            frame_names=list(row["frame_names"]),
            frames=list(row["frames"]),
            mask_kind=row["mask_kind"],
            masks=list(row["masks"]),
            segments=segs,
            source=row["source"],
            checksum=row["checksum"],
        )


ARROW_SCHEMA = pa.schema(
    [
        ("dataset", pa.string()),
        ("split", pa.string()),
        ("key", pa.string()),
        ("modality", pa.string()),
        ("height", pa.int32()),
        ("width", pa.int32()),
        ("frame_names", pa.list_(pa.string())),
        ("frames", pa.list_(pa.binary())),
        ("mask_kind", pa.string()),
        ("masks", pa.list_(pa.binary())),
        (
            "segments",
            pa.list_(
                pa.struct(
                    [
                        ("id", pa.int64()),
                        ("category_id", pa.int64()),
                        ("iscrowd", pa.bool_()),
                        ("areas", pa.list_(pa.int64())),
                        ("bboxes", pa.list_(pa.list_(pa.float64()))),
                        ("rles", pa.list_(pa.string())),
                    ]
                )
            ),
        ),
        ("source", pa.string()),
        ("checksum", pa.string()),
    ],
    metadata={"omg.schema_version": str(SCHEMA_VERSION)},
)

QUARANTINE_SCHEMA = pa.schema(
    [
        ("dataset", pa.string()),
        ("split", pa.string()),
        ("key", pa.string()),
        ("source", pa.string()),
        ("field", pa.string()),
        ("reason", pa.string()),
    ]
)


def digest(*parts: bytes | str) -> str:
    h = hashlib.sha256()
    for p in parts:
        h.update(p.encode() if isinstance(p, str) else p)
        h.update(b"\x00")
    return h.hexdigest()


def json_digest(obj) -> str:
    return digest(json.dumps(obj, sort_keys=True, separators=(",", ":")))
