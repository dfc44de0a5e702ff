"""VSPW: ``data/<video>/origin/*.jpg`` frames and ``data/<video>/mask/*.png`` label maps.

The "0/255 reduction" happens here: raw 0 ("others") and 255 become ignore (255), raw k in
1..124 becomes class k - 1. The stored mask is the reduced label PNG (mask kind "semantic").
"""

from __future__ import annotations

import numpy as np

from omg.data.formats.base import Reader, segments_from_id_maps
from omg.data.records import BadRecord, Sample, digest
from omg.utils import io as uio

IGNORE = 255


def reduce_labels(raw: np.ndarray) -> np.ndarray:
    out = raw.astype(np.int64) - 1
    out[(raw == 0) | (raw == 255)] = IGNORE
    return out.astype(np.uint8)


class VSPWReader(Reader):
    annotation_key = "labels"

    def items(self) -> list[dict]:
        if "list" in self.paths:
            names = [x.strip() for x in uio.read_bytes(self.paths["list"]).decode().splitlines() if x.strip()]
        else:
            names = uio.listdir(self.paths["labels"])
        out = []
        for name in sorted(names):
            try:
                frames = [f for f in uio.listdir(uio.join(self.paths["frames"], name, "origin")) if f.endswith(".jpg")]
            except FileNotFoundError:
                frames = []
            out.append({"key": name, "frames": frames})
        return out

    def parse(self, item: dict) -> Sample:
        vid = item["key"]
        record = f"video {vid}"
        if not item["frames"]:
            raise BadRecord(
                uio.join(self.paths["frames"], vid, "origin"),
                record,
                "frames",
                "no JPEG frame (the video's folder is missing or empty)",
            )
        num_classes = len(self.entry.classes)
        frames, masks, maps, names = [], [], [], []
        size = None
        for t, fn in enumerate(item["frames"]):
            rec = f"{record}, frame {t}"
            img_uri = uio.join(self.paths["frames"], vid, "origin", fn)
            data, sz = self.image(img_uri, rec)
            size = size or sz
            self.check_size(sz, size, img_uri, rec, "file_name")
            png_uri = uio.join(self.paths["labels"], vid, "mask", fn[:-4] + ".png")
            _, raw, _ = self.png_array(png_uri, rec, "mask")
            if raw.ndim != 2:
                raise BadRecord(png_uri, rec, "mask", f"a VSPW label map is single-channel, got shape {raw.shape}")
            self.check_size(raw.shape, sz, png_uri, rec, "mask")
            lab = reduce_labels(raw)
            bad = np.unique(lab[(lab != IGNORE) & (lab >= num_classes)])
            if bad.size:
                raise BadRecord(png_uri, rec, "mask", f"label values {(bad + 1).tolist()[:5]} outside 1..{num_classes}")
            frames.append(data)
            masks.append(uio.encode_png(lab))
            maps.append(lab.astype(np.int64))
            names.append(f"{vid}/{fn}")
        classes = sorted({int(c) for m in maps for c in np.unique(m).tolist() if c != IGNORE})
        # a segment per class present; its id is the class id (+1, so that no id is 0)
        shifted = [np.where(m == IGNORE, 0, m + 1) for m in maps]
        segments = segments_from_id_maps(shifted, {c + 1: c for c in classes}, {})
        for s in segments:
            s.id -= 1
        return Sample(
            dataset=self.entry.name,
            split=self.split,
            key=vid,
            modality="video",
            height=size[0],
            width=size[1],
            frame_names=names,
            frames=frames,
            mask_kind="semantic",
            masks=masks,
            segments=segments,
            source=uio.join(self.paths["frames"], vid),
            checksum=digest(*frames, *masks),
        )
