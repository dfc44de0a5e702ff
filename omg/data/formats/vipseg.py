"""VIPSeg: per-frame panoptic masks, either the COCO-style conversion (RGB id PNGs + JSON)
or the raw 16-bit ``panomasks`` (0 / 200 = VOID; <= 128: stuff class id + 1;
> 128: (thing class id + 1) * 100 + instance index)."""

from __future__ import annotations

import numpy as np

from omg.data import io as uio
from omg.data.formats.base import Reader, segment_index_pngs, segments_from_id_maps
from omg.data.masks import rgb2id
from omg.data.records import BadRecord, Sample, digest, json_digest

RAW_VOID = (0, 200)


def raw_panomask_categories(values: np.ndarray) -> dict[int, int]:
    """Raw panomask values -> {value: VIPSeg class id}; VOID values excluded."""
    out = {}
    for v in np.unique(values).tolist():
        if v in RAW_VOID:
            continue
        out[int(v)] = int(v) - 1 if v <= 128 else int(v) // 100 - 1
    return out


class VIPSegReader(Reader):
    annotation_key = "panoptic_json"

    def items(self) -> list[dict]:
        if "panoptic_json" in self.paths:
            doc = uio.read_json(self.paths["panoptic_json"])
            videos = {v["video_id"]: v for v in doc.get("videos", [])}
            out = []
            for vann in sorted(doc.get("annotations", []), key=lambda a: str(a["video_id"])):
                v = videos.get(vann["video_id"], {"images": []})
                images = {im["id"]: im for im in v["images"]}
                frames = []
                for ann in vann["annotations"]:
                    im = images.get(ann["image_id"], {})
                    frames.append({"image": im.get("file_name", ""), "mask": ann["file_name"],
                                   "width": im.get("width", 0), "height": im.get("height", 0),
                                   "segments_info": ann.get("segments_info", [])})
                out.append({"key": str(vann["video_id"]), "frames": frames, "raw": False,
                            "num_images": len(v["images"])})
            return out
        if "list" in self.paths:
            names = [x.strip() for x in uio.read_bytes(self.paths["list"]).decode().splitlines() if x.strip()]
        else:
            names = uio.listdir(self.paths["panoptic_masks"])
        out = []
        for name in sorted(names):
            masks = [f for f in uio.listdir(uio.join(self.paths["panoptic_masks"], name)) if f.endswith(".png")]
            out.append({"key": name, "raw": True,
                        "frames": [{"image": f[:-4] + ".jpg", "mask": f} for f in masks]})
        return out

    def parse(self, item: dict) -> Sample:
        record = f"video {item['key']}"
        vid = item["key"]
        if not item["raw"] and item["num_images"] != len(item["frames"]):
            raise BadRecord(self.paths["panoptic_json"], record, "annotations",
                            f"{len(item['frames'])} annotated frames for {item['num_images']} images (a frame is missing)")
        frames, masks, id_maps, names = [], [], [], []
        cats: dict[int, int] = {}
        crowd: dict[int, bool] = {}
        size = None
        for t, fr in enumerate(item["frames"]):
            rec = f"{record}, frame {t}"
            if not fr["image"]:
                raise BadRecord(self.paths.get("panoptic_json", ""), rec, "image_id", "annotation for a frame not in 'images'")
            img_uri = uio.join(self.paths["frames"], vid, fr["image"])
            data, sz = self.image(img_uri, rec)
            size = size or sz
            self.check_size(sz, size, img_uri, rec, "file_name")
            png_uri = uio.join(self.paths["panoptic_masks"], vid, fr["mask"])
            png, arr, _ = self.png_array(png_uri, rec, "file_name")
            self.check_size(arr.shape[:2], sz, png_uri, rec, "file_name")
            if item["raw"]:
                if arr.ndim != 2:
                    raise BadRecord(png_uri, rec, "", f"a raw VIPSeg panomask is single-channel, got shape {arr.shape}")
                values = arr.astype(np.int64)
                frame_cats = raw_panomask_categories(values)
                ids = np.where(np.isin(values, RAW_VOID), 0, values)
            else:
                if arr.ndim != 3:
                    raise BadRecord(png_uri, rec, "", f"a converted VIPSeg PNG is RGB, got shape {arr.shape}")
                ids = rgb2id(arr[..., :3])
                infos = fr["segments_info"]
                json_ids = {s["id"] for s in infos}
                png_ids = set(np.unique(ids).tolist()) - {0}
                if png_ids != json_ids:
                    raise BadRecord(png_uri, rec, "segments_info",
                                    f"PNG ids and JSON ids differ (only in PNG: {sorted(png_ids - json_ids)[:5]}, "
                                    f"only in JSON: {sorted(json_ids - png_ids)[:5]})")
                frame_cats = {s["id"]: s["category_id"] for s in infos}
                crowd.update({s["id"]: bool(s.get("iscrowd", 0)) for s in infos})
            for sid, cat in frame_cats.items():
                self.check_category(cat, png_uri, f"{rec}, segment {sid}")
                if cats.setdefault(sid, cat) != cat:
                    raise BadRecord(png_uri, f"{rec}, segment {sid}", "category_id",
                                    f"track {sid} changes category ({cats[sid]} -> {cat})")
            frames.append(data)
            masks.append(png)  # the source bytes, for the checksum
            id_maps.append(ids)
            names.append(f"{vid}/{fr['image']}")
        if not frames:
            raise BadRecord(self.paths["panoptic_masks"], record, "", "video has no frames")
        segments = segments_from_id_maps(id_maps, dict(sorted(cats.items())), crowd)
        return Sample(dataset=self.entry.name, split=self.split, key=vid, modality="video", height=size[0],
                      width=size[1], frame_names=names, frames=frames, mask_kind="segment_index",
                      masks=segment_index_pngs(id_maps, segments),
                      segments=segments, source=uio.join(self.paths["frames"], vid),
                      checksum=digest(*frames, *masks, json_digest([f.get("segments_info") for f in item["frames"]])))
