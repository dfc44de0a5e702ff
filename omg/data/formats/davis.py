"""DAVIS-17 semi-supervised VOS: JPEG frames + palette-indexed annotation PNGs (0 background, 255 ignore)."""

from __future__ import annotations

import numpy as np

from omg.data import io as uio
from omg.data.formats.base import Reader, segments_from_id_maps
from omg.data.records import BadRecord, Sample, digest


class DavisReader(Reader):
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
            out.append({"key": name, "frames": frames})
        return out

    def load(self, item: dict) -> Sample:
        vid = item["key"]
        record = f"video {vid}"
        if not item["frames"]:
            raise BadRecord(uio.join(self.paths["frames"], vid), record, "", "no frames")
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
                raise BadRecord(png_uri, rec, "", f"a DAVIS annotation is an indexed PNG, got mode {mode}")
            self.check_size(arr.shape, sz, png_uri, rec, "annotation")
            frames.append(data)
            masks.append(png)
            maps.append(np.where(arr == 255, 0, arr).astype(np.int64))
            names.append(f"{vid}/{fn}")
        objects = sorted({int(v) for v in np.unique(maps[0]).tolist() if v != 0})
        if not objects:
            raise BadRecord(uio.join(self.paths["annotations"], vid), record, "", "the first frame has no object")
        later = sorted({int(v) for m in maps for v in np.unique(m).tolist() if v != 0})
        segments = segments_from_id_maps(maps, {o: -1 for o in later}, {})
        return Sample(dataset=self.entry.name, split=self.split, key=vid, modality="video", height=size[0],
                      width=size[1], frame_names=names, frames=frames, mask_kind="index", masks=masks,
                      segments=segments, source=uio.join(self.paths["frames"], vid), checksum=digest(*frames, *masks))
