"""COCO-format readers: panoptic (COCO, COCO-SAM, Cityscapes, ADE20K) and instances."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

from omg.data import io as uio
from omg.data.formats.base import Reader, segment_index_pngs, segments_from_id_maps
from omg.data.masks import mask_bbox, polygons_to_mask, rgb2id, rle_decode, rle_encode
from omg.data.records import BadRecord, Sample, Segment, digest, json_digest


def cityscapes_image_name(file_name: str) -> str:
    """``frankfurt_000000_000294_leftImg8bit.png`` -> ``frankfurt/frankfurt_000000_000294_leftImg8bit.png``."""
    return f"{file_name.split('_', 1)[0]}/{file_name}"


class CocoPanopticReader(Reader):
    """COCO panoptic JSON + RGB id PNGs.

    The same reader serves ``coco_sam`` (every non-crowd segment, things and stuff, becomes
    a class-agnostic object: category -1), ``cityscapes_panoptic`` (images in per-city
    folders, trainId categories) and ``ade20k_panoptic``.
    """

    annotation_key = "panoptic_json"

    def items(self) -> list[dict]:
        doc = uio.read_json(self.paths["panoptic_json"])
        images = {im["id"]: im for im in doc.get("images", [])}
        out = []
        for ann in sorted(doc.get("annotations", []), key=lambda a: str(a["image_id"])):
            im = images.get(ann["image_id"])
            if im is None:  # kept as an item so that load() quarantines it with a reason
                im = {"file_name": "", "width": 0, "height": 0}
            name = im["file_name"]
            if self.entry.format == "cityscapes_panoptic" and name:
                name = cityscapes_image_name(name)
            out.append({"key": str(ann["image_id"]), "image": name, "mask": ann["file_name"],
                        "width": im["width"], "height": im["height"], "segments_info": ann.get("segments_info", [])})
        return out

    def parse(self, item: dict) -> Sample:
        record = f"image_id {item['key']}"
        if not item["image"]:
            raise BadRecord(self.paths["panoptic_json"], record, "image_id", "annotation for an image not in 'images'")
        img_uri = uio.join(self.paths["images"], item["image"])
        png_uri = uio.join(self.paths["panoptic_masks"], item["mask"])
        img_bytes, size = self.image(img_uri, record)
        png_bytes, arr, _ = self.png_array(png_uri, record, "file_name")
        if arr.ndim != 3 or arr.shape[2] < 3:
            raise BadRecord(png_uri, record, "", f"a panoptic PNG is RGB, got shape {arr.shape}")
        self.check_size(arr.shape[:2], size, png_uri, record, "file_name")
        ids = rgb2id(arr[..., :3])
        infos = item["segments_info"]
        json_ids = {s["id"] for s in infos}
        png_ids = set(np.unique(ids).tolist()) - {0}
        if png_ids - json_ids:
            raise BadRecord(png_uri, record, "segments_info",
                            f"ids {sorted(png_ids - json_ids)[:5]} are in the PNG but not in the JSON")
        if json_ids - png_ids:
            raise BadRecord(png_uri, record, "segments_info",
                            f"ids {sorted(json_ids - png_ids)[:5]} are in the JSON but not in the PNG")
        sam = self.entry.format == "coco_sam"
        cats, crowd = {}, {}
        for s in infos:
            if sam:
                if s.get("iscrowd", 0):
                    continue
                cats[s["id"]] = -1
            else:
                self.check_category(s["category_id"], png_uri, f"{record}, segment {s['id']}")
                cats[s["id"]] = s["category_id"]
                crowd[s["id"]] = bool(s.get("iscrowd", 0))
        segments = segments_from_id_maps([ids], cats, crowd)
        return Sample(dataset=self.entry.name, split=self.split, key=item["key"], modality="image",
                      height=size[0], width=size[1], frame_names=[item["image"]], frames=[img_bytes],
                      mask_kind="segment_index", masks=segment_index_pngs([ids], segments), segments=segments,
                      source=img_uri,
                      checksum=digest(img_bytes, png_bytes, json_digest(infos)))


class CocoInstancesReader(Reader):
    """COCO instances JSON (polygons, compressed or uncompressed RLE); instances may overlap."""

    annotation_key = "instances_json"

    def items(self) -> list[dict]:
        doc = uio.read_json(self.paths["instances_json"])
        by_image: dict = {}
        for ann in doc.get("annotations", []):
            by_image.setdefault(ann["image_id"], []).append(ann)
        out = []
        for im in sorted(doc.get("images", []), key=lambda i: str(i["id"])):
            anns = sorted(by_image.get(im["id"], []), key=lambda a: a["id"])
            out.append({"key": str(im["id"]), "image": im["file_name"], "width": im["width"], "height": im["height"],
                        "annotations": anns})
        return out

    def parse(self, item: dict) -> Sample:
        record = f"image_id {item['key']}"
        img_uri = uio.join(self.paths["images"], item["image"])
        img_bytes, size = self.image(img_uri, record)
        self.check_size((item["height"], item["width"]), size, img_uri, record, "width/height")
        h, w = size
        segments = []
        for ann in item["annotations"]:
            rec = f"{record}, annotation {ann['id']}"
            self.check_category(ann["category_id"], self.paths["instances_json"], rec)
            seg = ann.get("segmentation")
            try:
                if isinstance(seg, list):
                    mask = polygons_to_mask(seg, h, w)
                else:
                    if list(seg["size"]) != [h, w]:
                        raise BadRecord(self.paths["instances_json"], rec, "segmentation.size",
                                        f"RLE size {seg['size']} != image size {[h, w]}")
                    mask = rle_decode(seg)
            except BadRecord:
                raise
            except Exception as err:
                raise BadRecord(self.paths["instances_json"], rec, "segmentation", f"cannot decode ({err})") from None
            area = int(mask.sum())
            segments.append(Segment(id=int(ann["id"]), category_id=int(ann["category_id"]),
                                    iscrowd=bool(ann.get("iscrowd", 0)), areas=[area],
                                    bboxes=[[float(v) for v in mask_bbox(mask)]],
                                    rles=[rle_encode(mask)["counts"] if area else ""]))
        return Sample(dataset=self.entry.name, split=self.split, key=item["key"], modality="image",
                      height=h, width=w, frame_names=[item["image"]], frames=[img_bytes], mask_kind="rle",
                      masks=[], segments=segments, source=img_uri,
                      checksum=digest(img_bytes, json_digest(item["annotations"])))


def decode_png_ids(data: bytes) -> np.ndarray:
    """RGB id PNG bytes -> H x W int64 ids."""
    return rgb2id(np.array(Image.open(io.BytesIO(data)).convert("RGB")))
