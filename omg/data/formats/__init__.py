"""Format readers: official dataset files (any fsspec URI) -> typed :class:`~omg.data.records.Sample` records.

Every reader has the same two-step shape, so a Ray Data job can list cheaply on the
driver and load in parallel on the workers:

- ``reader.items()`` -> a deterministic list of small JSON-able items (one per image or
  video: keys, relative file names, the record's annotations);
- ``reader.load(item)`` -> a :class:`Sample`, or :class:`~omg.data.records.BadRecord`
  naming the file, record and field (unreadable, truncated or corrupt image, PNG ids that disagree
  with the JSON, unknown category, missing frame, mask/image size mismatch).

``get_reader(entry, split, root)`` picks the reader for a catalog entry's format.
"""

from __future__ import annotations

from omg.data.catalog import DatasetEntry
from omg.data.formats.base import Reader
from omg.data.formats.coco import CocoInstancesReader, CocoPanopticReader
from omg.data.formats.davis import DavisReader
from omg.data.formats.vipseg import VIPSegReader
from omg.data.formats.vspw import VSPWReader
from omg.data.formats.ytvis import YouTubeVISReader

READERS: dict[str, type[Reader]] = {
    "coco_panoptic": CocoPanopticReader,
    "coco_sam": CocoPanopticReader,
    "cityscapes_panoptic": CocoPanopticReader,
    "ade20k_panoptic": CocoPanopticReader,
    "coco_instances": CocoInstancesReader,
    "vipseg": VIPSegReader,
    "youtube_vis": YouTubeVISReader,
    "vspw": VSPWReader,
    "davis": DavisReader,
}


def get_reader(entry: DatasetEntry, split: str, root: str | None = None) -> Reader:
    if entry.format not in READERS:
        raise KeyError(f"no reader for format {entry.format!r}")
    return READERS[entry.format](entry, split, root)


__all__ = ["READERS", "Reader", "get_reader"]
