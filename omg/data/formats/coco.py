"""COCO-format readers: panoptic (COCO, COCO-SAM, Cityscapes, ADE20K) and instances."""

from __future__ import annotations

import numpy as np

from omg.data.formats.base import Reader, segment_index_pngs, segments_from_id_maps
from omg.data.masks import coco_bbox, polygons_to_mask, rgb2id, rle_decode, rle_encode
from omg.data.records import BadRecord, Problem, Sample, Segment, digest, json_digest
from omg.utils import io as uio


def cityscapes_image_name(file_name: str, image_id) -> str:
    """Where a Cityscapes image lives under ``leftImg8bit/<split>/``, as the established loaders find it
    (detectron2's ``get_cityscapes_panoptic_files``: by the image id, in its city's folder).

    cityscapesScripts' ``createPanopticImgs`` writes ``images[].file_name`` as the *annotation's* name
    (``frankfurt_000000_000294_gtFine_leftImg8bit.png``) and the image id ``frankfurt_000000_000294``; the
    image is ``frankfurt/frankfurt_000000_000294_leftImg8bit.png``. A file_name that is already the image's
    name (with or without its city folder) resolves to the same path.
    """
    base = str(file_name).rsplit("/", 1)[-1]
    for suffix in ("_gtFine_leftImg8bit.png", "_leftImg8bit.png"):
        if base.endswith(suffix):
            stem = base[: -len(suffix)]
            break
    else:
        stem = str(image_id)
    return f"{stem.split('_', 1)[0]}/{stem}_leftImg8bit.png"


class CocoPanopticReader(Reader):
    """COCO panoptic JSON + RGB id PNGs.

    The same reader serves ``coco_sam`` (every non-crowd segment, things and stuff, becomes
    a class-agnostic object: category -1), ``cityscapes_panoptic`` (images in per-city
    folders, see :func:`cityscapes_image_name`; trainId or label-id categories) and ``ade20k_panoptic``.

    A segment the JSON lists but the PNG does not hold makes the record bad, except a stuff segment of ADE20K
    (its converter keeps stuff segments that things wholly cover, with their pre-overlap areas): dropped and
    counted in :attr:`dropped` (:meth:`Reader.covered_segments`); areas
    and boxes always come from the PNG. PNG ids missing from the JSON make the record bad.
    """

    annotation_key = "panoptic_json"

    def items(self) -> list[dict]:
        doc = uio.read_json(self.paths["panoptic_json"])
        self.categories = doc.get("categories")
        remap = self.category_map(self.categories)
        images = {im["id"]: im for im in doc.get("images", [])}
        out = []
        for ann in sorted(doc.get("annotations", []), key=lambda a: str(a["image_id"])):
            im = images.get(ann["image_id"])
            if im is None:  # kept as an item so that load() quarantines it with a reason
                im = {"file_name": "", "width": 0, "height": 0}
            name = im["file_name"]
            if self.entry.format == "cityscapes_panoptic" and name:
                name = cityscapes_image_name(name, ann["image_id"])
            infos = ann.get("segments_info", [])
            if remap and isinstance(infos, list):
                infos = [
                    dict(s, category_id=remap.get(s.get("category_id"), s.get("category_id")))
                    if isinstance(s, dict)
                    else s
                    for s in infos
                ]
            out.append(
                {
                    "key": str(ann["image_id"]),
                    "image": name,
                    "mask": ann["file_name"],
                    "width": im["width"],
                    "height": im["height"],
                    "segments_info": infos,
                }
            )
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
            raise BadRecord(png_uri, record, "file_name", f"a panoptic PNG is RGB, got shape {arr.shape}")
        self.check_size(arr.shape[:2], size, png_uri, record, "file_name")
        ids = rgb2id(arr[..., :3])
        infos = item["segments_info"]
        json_ids = {s["id"] for s in infos}
        png_ids = set(np.unique(ids).tolist()) - {0}
        if png_ids - json_ids:
            raise BadRecord(
                png_uri,
                record,
                "segments_info",
                f"ids {sorted(png_ids - json_ids)[:5]} are in the PNG but not in the JSON",
            )
        covered = self.covered_segments(infos, png_ids, png_uri, record)
        sam = self.entry.format == "coco_sam"
        cats, crowd = {}, {}
        for s in infos:
            if s["id"] in covered:
                continue
            if sam:
                if s.get("iscrowd", 0):
                    continue
                cats[s["id"]] = -1
            else:
                self.check_category(s["category_id"], png_uri, f"{record}, segment {s['id']}")
                cats[s["id"]] = s["category_id"]
                crowd[s["id"]] = bool(s.get("iscrowd", 0))
        segments = segments_from_id_maps([ids], cats, crowd)
        return Sample(
            dataset=self.entry.name,
            split=self.split,
            key=item["key"],
            modality="image",
            height=size[0],
            width=size[1],
            frame_names=[item["image"]],
            frames=[img_bytes],
            mask_kind="segment_index",
            masks=segment_index_pngs([ids], segments),
            segments=segments,
            source=img_uri,
            checksum=digest(img_bytes, png_bytes, json_digest(infos)),
        )

    #: formats whose converter stores pre-overlap areas in the JSON (ADE20K: stuff under things): their JSON
    #: areas and boxes are compared with the PNG only by ``validate --strict``
    PRE_OVERLAP_AREAS = ("ade20k_panoptic",)

    def check(self, item: dict, sample: Sample, strict: bool = False) -> list[Problem]:
        record = f"image_id {item['key']}"
        png_uri = uio.join(self.paths["panoptic_masks"], item["mask"])
        out = []
        if (item["height"], item["width"]) != (sample.height, sample.width):
            out.append(
                Problem(
                    uio.join(self.paths["images"], item["image"]),
                    record,
                    "width/height",
                    f"image is {sample.width}x{sample.height}, JSON says {item['width']}x{item['height']}",
                )
            )
        exact = strict or self.entry.format not in self.PRE_OVERLAP_AREAS
        by_id = {g.id: g for g in sample.segments}
        seen = set()
        for info in item["segments_info"]:
            rec = f"{record}, segment {info['id']}"
            if info["id"] in seen:
                out.append(Problem(png_uri, rec, "id", "duplicate segment id"))
            seen.add(info["id"])
            if info.get("iscrowd", 0) not in (0, 1, True, False):
                out.append(Problem(png_uri, rec, "iscrowd", f"must be 0 or 1, got {info.get('iscrowd')!r}"))
            g = by_id.get(info["id"])
            if g is None:
                if strict and not (self.entry.format == "coco_sam" and info.get("iscrowd", 0)):
                    out.append(Problem(png_uri, rec, "id", "segment in the JSON but not in the PNG (dropped on load)"))
                continue
            if exact and "area" in info and info["area"] != g.areas[0]:
                out.append(Problem(png_uri, rec, "area", f"JSON area {info['area']} != {g.areas[0]} pixels in the PNG"))
            tight = [int(v) for v in g.bboxes[0]]
            if exact and "bbox" in info and [int(round(v)) for v in info["bbox"]] != tight:
                out.append(Problem(png_uri, rec, "bbox", f"JSON bbox {info['bbox']} != tight box {tight}"))
        return out

    def check_items(self, items: list[dict], strict: bool = False) -> list[Problem]:
        return self.check_categories(getattr(self, "categories", None))


class CocoInstancesReader(Reader):
    """COCO instances JSON (polygons, compressed or uncompressed RLE); instances may overlap."""

    annotation_key = "instances_json"

    def items(self) -> list[dict]:
        doc = uio.read_json(self.paths["instances_json"])
        self.categories = doc.get("categories")
        remap = self.category_map(self.categories)
        by_image: dict = {}
        for ann in doc.get("annotations", []):
            if remap and ann.get("category_id") in remap:
                ann = dict(ann, category_id=remap[ann["category_id"]])
            by_image.setdefault(ann["image_id"], []).append(ann)
        out = []
        for im in sorted(doc.get("images", []), key=lambda i: str(i["id"])):
            anns = sorted(by_image.get(im["id"], []), key=lambda a: a["id"])
            out.append(
                {
                    "key": str(im["id"]),
                    "image": im["file_name"],
                    "width": im["width"],
                    "height": im["height"],
                    "annotations": anns,
                }
            )
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
                        raise BadRecord(
                            self.paths["instances_json"],
                            rec,
                            "segmentation.size",
                            f"RLE size {seg['size']} != image size {[h, w]}",
                        )
                    mask = rle_decode(seg)
            except BadRecord:
                raise
            except Exception as err:  # noqa: BLE001 - pycocotools raises many types on a malformed RLE or polygon
                raise BadRecord(self.paths["instances_json"], rec, "segmentation", f"cannot decode ({err})") from None
            area = int(mask.sum())
            segments.append(
                Segment(
                    id=int(ann["id"]),
                    category_id=int(ann["category_id"]),
                    iscrowd=bool(ann.get("iscrowd", 0)),
                    areas=[area],
                    bboxes=[[float(v) for v in coco_bbox(mask)]],
                    rles=[rle_encode(mask)["counts"] if area else ""],
                )
            )
        return Sample(
            dataset=self.entry.name,
            split=self.split,
            key=item["key"],
            modality="image",
            height=h,
            width=w,
            frame_names=[item["image"]],
            frames=[img_bytes],
            mask_kind="rle",
            masks=[],
            segments=segments,
            source=img_uri,
            checksum=digest(img_bytes, json_digest(item["annotations"])),
        )

    def check(self, item: dict, sample: Sample, strict: bool = False) -> list[Problem]:
        """Stored area and box against the decoded mask, for RLE masks (a polygon's area is its polygon's).
        Crowd annotations are compared only with ``strict``: the official COCO files store an area and box
        for them that differ from their decoded RLE (e.g. instances_val2017.json)."""
        out = []
        source = self.paths["instances_json"]
        by_id = {g.id: g for g in sample.segments}
        for ann in item["annotations"]:
            g = by_id[int(ann["id"])]
            if not isinstance(ann.get("segmentation"), dict) or (ann.get("iscrowd", 0) and not strict):
                continue
            rec = f"image_id {item['key']}, annotation {ann['id']}"
            if "area" in ann and round(float(ann["area"])) != g.areas[0]:
                out.append(Problem(source, rec, "area", f"{ann['area']} != {g.areas[0]} decoded pixels"))
            tight = [int(v) for v in g.bboxes[0]]
            if "bbox" in ann and [int(round(v)) for v in ann["bbox"]] != tight:
                out.append(Problem(source, rec, "bbox", f"{ann['bbox']} != tight box {tight}"))
        return out

    def check_items(self, items: list[dict], strict: bool = False) -> list[Problem]:
        out = self.check_categories(getattr(self, "categories", None))
        seen: set = set()
        for item in items:
            for ann in item["annotations"]:
                if ann.get("id") in seen:
                    out.append(
                        Problem(
                            self.paths["instances_json"], f"annotation {ann.get('id')}", "id", "duplicate annotation id"
                        )
                    )
                seen.add(ann.get("id"))
        return out
