"""VIPSeg: per-frame panoptic masks, either the COCO-style conversion (RGB id PNGs + JSON) or the raw
16-bit ``panomasks``.

The conversion is what the official ``create_panoptic_video_labels.py`` + ``splitjson.py`` write
(VIPSeg-Dataset 92e1459): ``panomasksRGB/<video>/<frame>.png`` and ``panoptic_gt_VIPSeg_<split>.json``
whose ``images[].file_name`` is the *mask's* name (``<frame>.png``) while the frame on disk is
``images/<video>/<frame>.jpg``: a ``.png`` file name is read as the ``.jpg`` frame of the same stem.
Raw panomasks are read as the released OMG-Seg code reads them (lxtGH/OMG-Seg 1ae2e7d,
``seg/datasets/vipseg.py`` lines 20-47, ``to_coco``): 0 and 200 are VOID (200 is a known defect of the
VIPSeg release, VIPSeg-Dataset issue #1), a value above 128 is (thing class id + 1) * 100 + instance
index, any other value a stuff class id + 1. (VIPSeg's own converter calls values below 125 stuff and
knows no 200; on the released masks both rules agree.)
"""

from __future__ import annotations

import numpy as np

from omg.data.formats.base import Reader, segment_index_pngs, segments_from_id_maps
from omg.data.masks import rgb2id
from omg.data.records import BadRecord, Problem, Sample, digest, json_digest
from omg.utils import io as uio

RAW_VOID = (0, 200)


def raw_panomask_categories(values: np.ndarray) -> dict[int, int]:
    """Raw panomask values -> {value: VIPSeg class id}; VOID excluded (OMG-Seg's ``to_coco``)."""
    out = {}
    for v in np.unique(values).tolist():
        if v in RAW_VOID:
            continue
        out[int(v)] = int(v) - 1 if v <= 128 else int(v) // 100 - 1
    return out


def frame_name(file_name: str) -> str:
    """The frame of a JSON ``images[].file_name``: the official converter names it after its mask (``.png``)."""
    return file_name[:-4] + ".jpg" if file_name.endswith(".png") else file_name


class VIPSegReader(Reader):
    annotation_key = "panoptic_json"

    def items(self) -> list[dict]:
        if "panoptic_json" in self.paths:
            doc = uio.read_json(self.paths["panoptic_json"])
            self.categories = doc.get("categories")
            remap = self.category_map(self.categories)
            videos = {v["video_id"]: v for v in doc.get("videos", [])}
            out = []
            for vann in sorted(doc.get("annotations", []), key=lambda a: str(a["video_id"])):
                v = videos.get(vann["video_id"], {"images": []})
                images = {im["id"]: im for im in v["images"]}
                frames = []
                for ann in vann["annotations"]:
                    im = images.get(ann["image_id"], {})
                    infos = ann.get("segments_info", [])
                    if remap and isinstance(infos, list):
                        infos = [
                            dict(x, category_id=remap.get(x.get("category_id"), x.get("category_id")))
                            if isinstance(x, dict)
                            else x
                            for x in infos
                        ]
                    frames.append(
                        {
                            "image": frame_name(im.get("file_name", "")),
                            "mask": ann["file_name"],
                            "width": im.get("width", 0),
                            "height": im.get("height", 0),
                            "segments_info": infos,
                        }
                    )
                out.append(
                    {"key": str(vann["video_id"]), "frames": frames, "raw": False, "num_images": len(v["images"])}
                )
            return out
        if "list" in self.paths:
            names = [x.strip() for x in uio.read_bytes(self.paths["list"]).decode().splitlines() if x.strip()]
        else:
            names = uio.listdir(self.paths["panoptic_masks"])
        out = []
        for name in sorted(names):
            try:
                masks = [f for f in uio.listdir(uio.join(self.paths["panoptic_masks"], name)) if f.endswith(".png")]
            except FileNotFoundError:  # a listed video without its folder: quarantined by parse()
                masks = []
            out.append({"key": name, "raw": True, "frames": [{"image": f[:-4] + ".jpg", "mask": f} for f in masks]})
        return out

    def parse(self, item: dict) -> Sample:
        record = f"video {item['key']}"
        vid = item["key"]
        if not item["frames"]:
            raise BadRecord(
                uio.join(self.paths["panoptic_masks"], vid),
                record,
                "panoptic_masks",
                "the video has no mask PNG (its folder is missing or empty)",
            )
        if not item["raw"] and item["num_images"] != len(item["frames"]):
            raise BadRecord(
                self.paths["panoptic_json"],
                record,
                "annotations",
                f"{len(item['frames'])} annotated frames for {item['num_images']} images (a frame is missing)",
            )
        frames, masks, id_maps, names = [], [], [], []
        cats: dict[int, int] = {}
        crowd: dict[int, bool] = {}
        size = None
        for t, fr in enumerate(item["frames"]):
            rec = f"{record}, frame {t}"
            if not fr["image"]:
                raise BadRecord(
                    self.paths.get("panoptic_json", ""), rec, "image_id", "annotation for a frame not in 'images'"
                )
            img_uri = uio.join(self.paths["frames"], vid, fr["image"])
            data, sz = self.image(img_uri, rec)
            size = size or sz
            self.check_size(sz, size, img_uri, rec, "file_name")
            png_uri = uio.join(self.paths["panoptic_masks"], vid, fr["mask"])
            png, arr, _ = self.png_array(png_uri, rec, "file_name")
            self.check_size(arr.shape[:2], sz, png_uri, rec, "file_name")
            if item["raw"]:
                if arr.ndim != 2:
                    raise BadRecord(
                        png_uri, rec, "file_name", f"a raw VIPSeg panomask is single-channel, got shape {arr.shape}"
                    )
                values = arr.astype(np.int64)
                frame_cats = raw_panomask_categories(values)
                ids = np.where(np.isin(values, RAW_VOID), 0, values)
            else:
                if arr.ndim != 3:
                    raise BadRecord(png_uri, rec, "file_name", f"a converted VIPSeg PNG is RGB, got shape {arr.shape}")
                ids = rgb2id(arr[..., :3])
                infos = fr["segments_info"]
                json_ids = {s["id"] for s in infos}
                png_ids = set(np.unique(ids).tolist()) - {0}
                if png_ids - json_ids:
                    raise BadRecord(
                        png_uri,
                        rec,
                        "segments_info",
                        f"ids {sorted(png_ids - json_ids)[:5]} are in the PNG but not in the JSON",
                    )
                self.covered_segments(infos, png_ids, png_uri, rec)  # VIPSeg's converter lists the PNG's ids only
                frame_cats = {s["id"]: s["category_id"] for s in infos if s["id"] in png_ids}
                crowd.update({s["id"]: bool(s.get("iscrowd", 0)) for s in infos})
            for sid, cat in frame_cats.items():
                self.check_category(cat, png_uri, f"{rec}, segment {sid}")
                if cats.setdefault(sid, cat) != cat:
                    raise BadRecord(
                        png_uri,
                        f"{rec}, segment {sid}",
                        "category_id",
                        f"track {sid} changes category ({cats[sid]} -> {cat})",
                    )
            frames.append(data)
            masks.append(png)  # the source bytes, for the checksum
            id_maps.append(ids)
            names.append(f"{vid}/{fr['image']}")
        segments = segments_from_id_maps(id_maps, dict(sorted(cats.items())), crowd)
        return Sample(
            dataset=self.entry.name,
            split=self.split,
            key=vid,
            modality="video",
            height=size[0],
            width=size[1],
            frame_names=names,
            frames=frames,
            mask_kind="segment_index",
            masks=segment_index_pngs(id_maps, segments),
            segments=segments,
            source=uio.join(self.paths["frames"], vid),
            checksum=digest(*frames, *masks, json_digest([f.get("segments_info") for f in item["frames"]])),
        )

    def check(self, item: dict, sample: Sample, strict: bool = False) -> list[Problem]:
        """The conversion's per-frame JSON areas against the PNGs (the official converter writes them from the
        PNG, so they agree exactly)."""
        if item["raw"]:
            return []
        out = []
        by_id = {g.id: g for g in sample.segments}
        for t, fr in enumerate(item["frames"]):
            png_uri = uio.join(self.paths["panoptic_masks"], item["key"], fr["mask"])
            for info in fr["segments_info"]:
                g = by_id.get(info["id"])
                rec = f"video {item['key']}, frame {t}, segment {info['id']}"
                if g is None:
                    if strict:
                        out.append(
                            Problem(png_uri, rec, "id", "segment in the JSON but not in the PNG (dropped on load)")
                        )
                    continue
                if "area" in info and info["area"] != g.areas[t]:
                    out.append(
                        Problem(png_uri, rec, "area", f"JSON area {info['area']} != {g.areas[t]} pixels in the PNG")
                    )
        return out

    def check_items(self, items: list[dict], strict: bool = False) -> list[Problem]:
        return self.check_categories(getattr(self, "categories", None))
