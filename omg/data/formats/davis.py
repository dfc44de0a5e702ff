"""DAVIS-17 semi-supervised VOS: JPEG frames + palette-indexed annotation PNGs (0 background, 255 ignore)."""

from __future__ import annotations

import numpy as np

from omg.data.formats.base import Reader, segments_from_id_maps
from omg.data.records import BadRecord, Sample, digest
from omg.utils import io as uio


#: the DAVIS / PASCAL VOC palette of the annotation PNGs (index i -> R, G, B; 256 entries, flat)
def _voc_palette() -> list[int]:
    out: list[int] = []
    for i in range(256):
        r = g = b = 0
        c = i
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        out += [r, g, b]
    return out


DAVIS_PALETTE: list[int] = _voc_palette()


class DavisReader(Reader):
    annotation_key = "annotations"

    def items(self) -> list[dict]:
        if "imageset" in self.paths:
            names = [x.strip() for x in uio.read_bytes(self.paths["imageset"]).decode().splitlines() if x.strip()]
        else:
            names = uio.listdir(self.paths["annotations"])
        out = []
        for name in names:
            try:
                frames = [f for f in uio.listdir(uio.join(self.paths["frames"], name)) if f.endswith(".jpg")]
            except FileNotFoundError:
                frames = []
            try:
                annotations = [f for f in uio.listdir(uio.join(self.paths["annotations"], name)) if f.endswith(".png")]
            except FileNotFoundError:
                annotations = []
            out.append({"key": name, "frames": frames, "annotations": annotations})
        return out

    def check_frames(self, item: dict) -> None:
        """Every annotated frame has its JPEG and the numbering has no gap (DAVIS names frames 00000.jpg,
        00001.jpg, ...): a missing frame is a bad record, never a silently shorter video."""
        vid, frames = item["key"], item["frames"]
        have = {f[:-4] for f in frames}
        for png in item.get("annotations", []):
            if png[:-4] not in have:
                raise BadRecord(
                    uio.join(self.paths["frames"], vid, png[:-4] + ".jpg"),
                    f"video {vid}",
                    "file_name",
                    f"frame is missing (its annotation {png} exists)",
                )
        numbers = [int(f[:-4]) for f in frames if f[:-4].isdigit()]
        if len(numbers) == len(frames) and numbers:
            for a, b in zip(numbers, numbers[1:]):
                if b != a + 1:
                    raise BadRecord(
                        uio.join(self.paths["frames"], vid),
                        f"video {vid}",
                        "file_name",
                        f"frame {a + 1:05d}.jpg is missing (frames jump from {a:05d} to {b:05d})",
                    )

    def parse(self, item: dict) -> Sample:
        vid = item["key"]
        record = f"video {vid}"
        if not item["frames"]:
            raise BadRecord(
                uio.join(self.paths["frames"], vid),
                record,
                "frames",
                "no JPEG frame (the video's folder is missing or empty)",
            )
        self.check_frames(item)
        frames, masks, maps, names = [], [], [], []
        size = None
        for t, fn in enumerate(item["frames"]):
            rec = f"{record}, frame {t}"
            img_uri = uio.join(self.paths["frames"], vid, fn)
            data, sz = self.image(img_uri, rec)
            size = size or sz
            self.check_size(sz, size, img_uri, rec, "file_name")
            png_uri = uio.join(self.paths["annotations"], vid, fn[:-4] + ".png")
            png, arr, mode = self.png_array(png_uri, rec, "annotation")
            if mode not in ("P", "L") or arr.ndim != 2:
                raise BadRecord(
                    png_uri, rec, "annotation", f"a DAVIS annotation is an indexed PNG (mode P), got mode {mode}"
                )
            self.check_size(arr.shape, sz, png_uri, rec, "annotation")
            frames.append(data)
            masks.append(png)
            maps.append(np.where(arr == 255, 0, arr).astype(np.int64))
            names.append(f"{vid}/{fn}")
        objects = sorted({int(v) for v in np.unique(maps[0]).tolist() if v != 0})
        if not objects:
            raise BadRecord(
                uio.join(self.paths["annotations"], vid), record, "annotation", "the first frame has no object"
            )
        later = sorted({int(v) for m in maps for v in np.unique(m).tolist() if v != 0})
        segments = segments_from_id_maps(maps, {o: -1 for o in later}, {})
        return Sample(
            dataset=self.entry.name,
            split=self.split,
            key=vid,
            modality="video",
            height=size[0],
            width=size[1],
            frame_names=names,
            frames=frames,
            mask_kind="index",
            masks=masks,
            segments=segments,
            source=uio.join(self.paths["frames"], vid),
            checksum=digest(*frames, *masks),
        )
