"""Validation of annotation files in the official formats.

Each ``validate_*`` function checks one split of one format and returns a
:class:`Report`: counts and a list of :class:`Problem` (file, record, field, message).
They check what the official tools and our readers rely on: files exist and decode,
sizes agree, PNG ids agree with the JSON segments, areas equal pixel counts, boxes are
tight, RLEs decode, categories are known, video tracks keep their ids and categories.

``validate_dataset(name, root)`` validates every split of a catalog entry, and
``validate_omg_shapes(root)`` every omg-shapes entry (what ``omg data validate`` runs).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

import numpy as np

from omg.data import io as uio
from omg.data.catalog import DatasetEntry, load_catalog
from omg.data.masks import mask_bbox, polygons_to_mask, rgb2id, rle_decode, segment_areas, segment_bboxes
from omg.utils.progress import Progress


@dataclass(frozen=True)
class Problem:
    file: str
    record: str
    field: str
    message: str

    def __str__(self) -> str:
        where = ", ".join(x for x in (self.record, f"field '{self.field}'" if self.field else "") if x)
        return f"{self.file}: {where}: {self.message}" if where else f"{self.file}: {self.message}"


@dataclass
class Report:
    what: str
    counts: dict[str, int] = field(default_factory=dict)
    problems: list[Problem] = field(default_factory=list)
    #: stop collecting after this many problems (the count keeps going)
    max_problems: int = 50
    num_problems: int = 0

    @property
    def ok(self) -> bool:
        return self.num_problems == 0

    def add(self, file: str, record: str, field_: str, message: str) -> None:
        self.num_problems += 1
        if len(self.problems) < self.max_problems:
            self.problems.append(Problem(file, record, field_, message))

    def count(self, key: str, n: int = 1) -> None:
        self.counts[key] = self.counts.get(key, 0) + n

    def summary(self) -> str:
        counts = ", ".join(f"{v} {k}" for k, v in self.counts.items())
        status = "OK" if self.ok else f"{self.num_problems} problem(s)"
        return f"{self.what}: {counts or 'nothing'} -- {status}"


def _load_png(uri: str, report: Report, record: str) -> np.ndarray | None:
    try:
        img = uio.decode_image(uio.read_bytes(uri), uri)
    except (OSError, ValueError) as err:
        report.add(uri, record, "", f"cannot read: {err}")
        return None
    return np.asarray(img)


def _check_image(uri: str, width: int | None, height: int | None, report: Report, record: str) -> None:
    try:
        img = uio.decode_image(uio.read_bytes(uri), uri)
    except (OSError, ValueError) as err:
        report.add(uri, record, "file_name", f"image unreadable: {err}")
        return
    if width is not None and height is not None and img.size != (width, height):
        report.add(uri, record, "width/height", f"image is {img.size[0]}x{img.size[1]}, JSON says {width}x{height}")


def _check_segments(report: Report, png_uri: str, record: str, ids: np.ndarray, infos: list[dict],
                    categories: dict[int, dict]) -> dict[int, dict]:
    """PNG ids vs ``segments_info``: ids, categories, areas, boxes. Returns infos by id."""
    areas = segment_areas(ids)
    boxes = segment_bboxes(ids)
    by_id: dict[int, dict] = {}
    for k, info in enumerate(infos):
        rec = f"{record}, segment {info.get('id', f'#{k}')}"
        for key in ("id", "category_id"):
            if key not in info:
                report.add(png_uri, rec, key, "missing")
        if "id" not in info:
            continue
        sid = info["id"]
        if sid in by_id:
            report.add(png_uri, rec, "id", "duplicate segment id")
        by_id[sid] = info
        if info.get("category_id") not in categories:
            report.add(png_uri, rec, "category_id", f"unknown category {info.get('category_id')}")
        if sid not in areas:
            report.add(png_uri, rec, "id", "segment in the JSON but not in the PNG")
            continue
        if "area" in info and info["area"] != areas[sid]:
            report.add(png_uri, rec, "area", f"JSON area {info['area']} != {areas[sid]} pixels in the PNG")
        if "bbox" in info and [int(round(v)) for v in info["bbox"]] != boxes[sid]:
            report.add(png_uri, rec, "bbox", f"JSON bbox {info['bbox']} != tight box {boxes[sid]}")
        if info.get("iscrowd", 0) not in (0, 1):
            report.add(png_uri, rec, "iscrowd", f"must be 0 or 1, got {info.get('iscrowd')}")
    for sid in sorted(set(areas) - set(by_id)):
        report.add(png_uri, f"{record}, segment {sid}", "id", "id in the PNG but not in the JSON segments_info")
    return by_id


def validate_coco_panoptic(images: str, panoptic_json: str, panoptic_masks: str,
                           instances_json: str | None = None, check_images: bool = True,
                           progress: bool = False) -> Report:
    report = Report(f"coco_panoptic {panoptic_json}")
    try:
        doc = uio.read_json(panoptic_json)
    except (OSError, ValueError) as err:
        report.add(panoptic_json, "", "", f"cannot read JSON: {err}")
        return report
    for key in ("images", "annotations", "categories"):
        if key not in doc:
            report.add(panoptic_json, "", key, "missing top-level key")
            return report
    cats = {c["id"]: c for c in doc["categories"]}
    for c in doc["categories"]:
        if c.get("isthing") not in (0, 1, True, False):
            report.add(panoptic_json, f"category {c.get('id')}", "isthing", "must be 0 or 1")
    images_by_id = {im["id"]: im for im in doc["images"]}
    with Progress(f"validate {panoptic_json.rsplit('/', 1)[-1]}", total=len(doc["annotations"]),
                  unit="img", enabled=progress) as prog:
        for ann in doc["annotations"]:
            record = f"image_id {ann.get('image_id')}"
            im = images_by_id.get(ann.get("image_id"))
            if im is None:
                report.add(panoptic_json, record, "image_id", "no such image in 'images'")
                continue
            png_uri = uio.join(panoptic_masks, ann["file_name"])
            rgb = _load_png(png_uri, report, record)
            if rgb is None:
                continue
            if rgb.ndim != 3 or rgb.shape[2] != 3:
                report.add(png_uri, record, "", f"panoptic PNG must be RGB, got shape {rgb.shape}")
                continue
            if rgb.shape[:2] != (im["height"], im["width"]):
                report.add(png_uri, record, "", f"PNG is {rgb.shape[1]}x{rgb.shape[0]}, image is {im['width']}x{im['height']}")
            if check_images:
                _check_image(uio.join(images, im["file_name"]), im["width"], im["height"], report, record)
            _check_segments(report, png_uri, record, rgb2id(rgb), ann.get("segments_info", []), cats)
            report.count("images")
            report.count("segments", len(ann.get("segments_info", [])))
            prog.update()
    if instances_json is not None:
        sub = validate_coco_instances(instances_json)
        report.counts.update(sub.counts)
        report.num_problems += sub.num_problems
        report.problems += sub.problems[: max(0, report.max_problems - len(report.problems))]
    return report


def validate_coco_instances(instances_json: str) -> Report:
    report = Report(f"coco_instances {instances_json}")
    try:
        doc = uio.read_json(instances_json)
    except (OSError, ValueError) as err:
        report.add(instances_json, "", "", f"cannot read JSON: {err}")
        return report
    cats = {c["id"] for c in doc.get("categories", [])}
    images = {im["id"]: im for im in doc.get("images", [])}
    seen_ids = set()
    for ann in doc.get("annotations", []):
        record = f"annotation {ann.get('id')}"
        if ann.get("id") in seen_ids:
            report.add(instances_json, record, "id", "duplicate annotation id")
        seen_ids.add(ann.get("id"))
        im = images.get(ann.get("image_id"))
        if im is None:
            report.add(instances_json, record, "image_id", f"no such image {ann.get('image_id')}")
            continue
        if ann.get("category_id") not in cats:
            report.add(instances_json, record, "category_id", f"unknown category {ann.get('category_id')}")
        seg = ann.get("segmentation")
        try:
            if isinstance(seg, list):
                mask = polygons_to_mask(seg, im["height"], im["width"])
            else:
                if list(seg["size"]) != [im["height"], im["width"]]:
                    report.add(instances_json, record, "segmentation.size",
                               f"{seg['size']} != image size {[im['height'], im['width']]}")
                    continue
                mask = rle_decode(seg)
        except Exception as err:  # pycocotools raises various types on bad input
            report.add(instances_json, record, "segmentation", f"cannot decode: {err}")
            continue
        if isinstance(seg, dict) and ann.get("area") != int(mask.sum()):
            report.add(instances_json, record, "area", f"{ann.get('area')} != {int(mask.sum())} decoded pixels")
        if isinstance(seg, dict) and [int(round(v)) for v in ann.get("bbox", [])] != mask_bbox(mask):
            report.add(instances_json, record, "bbox", f"{ann.get('bbox')} != tight box {mask_bbox(mask)}")
        report.count("instances")
    return report


def validate_youtube_vis(frames: str, annotations: str, check_images: bool = True, progress: bool = False) -> Report:
    report = Report(f"youtube_vis {annotations}")
    try:
        doc = uio.read_json(annotations)
    except (OSError, ValueError) as err:
        report.add(annotations, "", "", f"cannot read JSON: {err}")
        return report
    cats = {c["id"] for c in doc.get("categories", [])}
    videos = {v["id"]: v for v in doc.get("videos", [])}
    for v in doc.get("videos", []):
        record = f"video {v['id']}"
        if v.get("length") != len(v.get("file_names", [])):
            report.add(annotations, record, "length", f"{v.get('length')} != {len(v.get('file_names', []))} file_names")
        if check_images:
            for fn in v.get("file_names", []):
                _check_image(uio.join(frames, fn), v.get("width"), v.get("height"), report, record)
        report.count("videos")
        report.count("frames", len(v.get("file_names", [])))
    with Progress(f"validate {annotations.rsplit('/', 1)[-1]}", total=len(doc.get("annotations", [])),
                  unit="track", enabled=progress) as prog:
        for ann in doc.get("annotations", []):
            record = f"annotation {ann.get('id')} (video {ann.get('video_id')})"
            v = videos.get(ann.get("video_id"))
            if v is None:
                report.add(annotations, record, "video_id", "no such video")
                continue
            if ann.get("category_id") not in cats:
                report.add(annotations, record, "category_id", f"unknown category {ann.get('category_id')}")
            segs = ann.get("segmentations", [])
            areas = ann.get("areas") or [None] * len(segs)
            boxes = ann.get("bboxes") or [None] * len(segs)
            if len(segs) != v["length"]:
                report.add(annotations, record, "segmentations", f"{len(segs)} entries for a {v['length']}-frame video")
                continue
            present = 0
            for t, (seg, area, box) in enumerate(zip(segs, areas, boxes)):
                if seg is None:
                    if area is not None or box is not None:
                        report.add(annotations, f"{record}, frame {t}", "areas/bboxes", "must be null where the segmentation is null")
                    continue
                present += 1
                try:
                    mask = polygons_to_mask(seg, v["height"], v["width"]) if isinstance(seg, list) else rle_decode(seg)
                except Exception as err:
                    report.add(annotations, f"{record}, frame {t}", "segmentations", f"cannot decode: {err}")
                    continue
                if mask.shape != (v["height"], v["width"]):
                    report.add(annotations, f"{record}, frame {t}", "segmentations", f"mask {mask.shape} != video size")
                    continue
                if area is not None and area != int(mask.sum()):
                    report.add(annotations, f"{record}, frame {t}", "areas", f"{area} != {int(mask.sum())} decoded pixels")
                if box is not None and [int(round(b)) for b in box] != mask_bbox(mask):
                    report.add(annotations, f"{record}, frame {t}", "bboxes", f"{box} != tight box {mask_bbox(mask)}")
            if present == 0:
                report.add(annotations, record, "segmentations", "track is null in every frame")
            report.count("tracks")
            prog.update()
    return report


def validate_vipseg(frames: str, panoptic_masks: str, panoptic_json: str, check_images: bool = True,
                    progress: bool = False) -> Report:
    """The COCO-style VIPSeg conversion: a track keeps its id (and category) in every frame."""
    report = Report(f"vipseg {panoptic_json}")
    try:
        doc = uio.read_json(panoptic_json)
    except (OSError, ValueError) as err:
        report.add(panoptic_json, "", "", f"cannot read JSON: {err}")
        return report
    cats = {c["id"]: c for c in doc.get("categories", [])}
    videos = {v["video_id"]: v for v in doc.get("videos", [])}
    with Progress(f"validate {panoptic_json.rsplit('/', 1)[-1]}", total=len(doc.get("annotations", [])),
                  unit="video", enabled=progress) as prog:
        for vann in doc.get("annotations", []):
            vid = vann.get("video_id")
            v = videos.get(vid)
            if v is None:
                report.add(panoptic_json, f"video {vid}", "video_id", "annotations for a video not in 'videos'")
                continue
            images = {im["id"]: im for im in v["images"]}
            if len(vann["annotations"]) != len(v["images"]):
                report.add(panoptic_json, f"video {vid}", "annotations",
                           f"{len(vann['annotations'])} annotated frames for {len(v['images'])} images")
            track_cat: dict[int, int] = {}
            for ann in vann["annotations"]:
                record = f"video {vid}, image_id {ann.get('image_id')}"
                im = images.get(ann.get("image_id"))
                if im is None:
                    report.add(panoptic_json, record, "image_id", "no such image in the video")
                    continue
                png_uri = uio.join(panoptic_masks, vid, ann["file_name"])
                rgb = _load_png(png_uri, report, record)
                if rgb is None:
                    continue
                if check_images:
                    _check_image(uio.join(frames, vid, im["file_name"]), im["width"], im["height"], report, record)
                by_id = _check_segments(report, png_uri, record, rgb2id(rgb), ann.get("segments_info", []), cats)
                for sid, info in by_id.items():
                    if track_cat.setdefault(sid, info.get("category_id")) != info.get("category_id"):
                        report.add(png_uri, f"{record}, segment {sid}", "category_id",
                                   f"track changes category ({track_cat[sid]} -> {info.get('category_id')})")
                report.count("frames")
            report.count("videos")
            report.count("tracks", len(track_cat))
            prog.update()
    return report


def validate_davis(frames: str, annotations: str, imageset: str | None = None, check_images: bool = True,
                   progress: bool = False) -> Report:
    report = Report(f"davis {annotations}")
    if imageset is not None:
        try:
            names = [x.strip() for x in uio.read_bytes(imageset).decode().splitlines() if x.strip()]
        except OSError as err:
            report.add(imageset, "", "", f"cannot read: {err}")
            return report
    else:
        names = uio.listdir(annotations)
    prog = Progress(f"validate {annotations.rsplit('/', 1)[-1]}", total=len(names), unit="video", enabled=progress)
    for name in names:
        prog.update()
        record = f"video {name}"
        try:
            ann_files = [f for f in uio.listdir(uio.join(annotations, name)) if f.endswith(".png")]
            frame_files = [f for f in uio.listdir(uio.join(frames, name)) if f.endswith(".jpg")]
        except (OSError, FileNotFoundError) as err:
            report.add(uio.join(annotations, name), record, "", f"missing folder: {err}")
            continue
        if not ann_files:
            report.add(uio.join(annotations, name), record, "", "no annotation PNGs")
            continue
        if [f[:-4] for f in ann_files] != [f[:-4] for f in frame_files][: len(ann_files)]:
            report.add(uio.join(annotations, name), record, "", "annotation PNG names do not match the frame names")
        for k, fn in enumerate(ann_files):
            uri = uio.join(annotations, name, fn)
            try:
                img = uio.decode_image(uio.read_bytes(uri), uri)
            except (OSError, ValueError) as err:
                report.add(uri, record, "", str(err))
                continue
            if img.mode != "P":
                report.add(uri, record, "", f"DAVIS annotations are palette PNGs (mode P), got mode {img.mode}")
            arr = np.asarray(img)
            if check_images:
                _check_image(uio.join(frames, name, fn[:-4] + ".jpg"), arr.shape[1], arr.shape[0], report, record)
            if k == 0 and not (arr[(arr > 0) & (arr < 255)]).size:
                report.add(uri, record, "", "the first frame has no object")
            report.count("frames")
        report.count("videos")
    prog.close()
    return report


VALIDATORS = {
    "coco_panoptic": validate_coco_panoptic,
    "coco_sam": validate_coco_panoptic,
    "cityscapes_panoptic": validate_coco_panoptic,
    "ade20k_panoptic": validate_coco_panoptic,
    "youtube_vis": validate_youtube_vis,
    "davis": validate_davis,
}


def validate_split(entry: DatasetEntry, split: str, root: str | None = None, check_images: bool = True,
                   progress: bool = False) -> Report:
    paths = entry.split_paths(split, root)
    if entry.format == "vipseg":
        if "panoptic_json" not in paths:
            raise NotImplementedError("validation of raw VIPSeg panomasks (no panoptic_json) is not supported")
        report = validate_vipseg(paths["frames"], paths["panoptic_masks"], paths["panoptic_json"], check_images, progress)
    elif entry.format in VALIDATORS:
        fn = VALIDATORS[entry.format]
        kwargs = {k: v for k, v in paths.items() if k != "list"}
        report = fn(**kwargs, check_images=check_images, progress=progress)
    else:
        raise NotImplementedError(f"no validator for format {entry.format!r} yet")
    report.what = f"{entry.name}/{split} ({report.what})"
    return report


def check_heldout(entry: DatasetEntry, split: str, root: str | None, report: Report) -> None:
    """Held-out (open-vocabulary) classes must not occur in training splits."""
    heldout = {c.id for c in entry.classes if c.heldout}
    if not heldout or split != "train":
        return
    paths = entry.split_paths(split, root)
    key = "panoptic_json" if "panoptic_json" in paths else "annotations"
    doc = uio.read_json(paths[key])
    hits = defaultdict(int)
    for ann in doc.get("annotations", []):
        for frame in ann.get("annotations", [ann]):
            for seg in frame.get("segments_info", [frame] if "category_id" in frame else []):
                if seg.get("category_id") in heldout:
                    hits[seg["category_id"]] += 1
    for cat, n in sorted(hits.items()):
        report.add(paths[key], f"category {cat}", "category_id", f"held-out class occurs {n} times in a training split")


def validate_dataset(entry: DatasetEntry, root: str | None = None, check_images: bool = True,
                     progress: bool = False) -> list[Report]:
    reports = []
    for split in entry.splits:
        report = validate_split(entry, split, root, check_images, progress)
        check_heldout(entry, split, root, report)
        reports.append(report)
    return reports


def validate_omg_shapes(root: str, check_images: bool = True, progress: bool = False) -> list[Report]:
    """Validate every omg-shapes catalog entry against the files under ``root``."""
    catalog = load_catalog()
    reports = []
    for entry in catalog.values():
        if entry.name.startswith("omg-shapes") and entry.derived_from is None:
            reports += validate_dataset(entry, root, check_images, progress)
    return reports
