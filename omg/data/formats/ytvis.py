"""YouTube-VIS 2019/2021: JPEG frames + one JSON with per-frame RLE / polygon / null per track."""

from __future__ import annotations

from omg.data.formats.base import Reader
from omg.data.masks import coco_bbox, polygons_to_mask, rle_decode, rle_encode
from omg.data.records import BadRecord, Problem, Sample, Segment, digest, json_digest
from omg.utils import io as uio


class YouTubeVISReader(Reader):
    annotation_key = "annotations"

    def items(self) -> list[dict]:
        doc = uio.read_json(self.paths["annotations"])
        self.categories = doc.get("categories")
        remap = self.category_map(self.categories)
        by_video: dict = {}
        for ann in doc.get("annotations", []):
            if remap and ann.get("category_id") in remap:
                ann = dict(ann, category_id=remap[ann["category_id"]])
            by_video.setdefault(ann["video_id"], []).append(ann)
        out = []
        for v in sorted(doc.get("videos", []), key=lambda v: v["id"]):
            out.append(
                {
                    "key": str(v["id"]),
                    "file_names": v["file_names"],
                    "width": v["width"],
                    "height": v["height"],
                    "length": v.get("length", len(v["file_names"])),
                    "annotations": sorted(by_video.get(v["id"], []), key=lambda a: a["id"]),
                }
            )
        return out

    def parse(self, item: dict) -> Sample:
        record = f"video {item['key']}"
        if item["length"] != len(item["file_names"]):
            raise BadRecord(
                self.paths["annotations"], record, "length", f"{item['length']} != {len(item['file_names'])} file_names"
            )
        frames, size = [], None
        for t, fn in enumerate(item["file_names"]):
            data, sz = self.image(uio.join(self.paths["frames"], fn), f"{record}, frame {t}", "file_names")
            if size is None:
                size = sz
            self.check_size(
                sz,
                (item["height"], item["width"]),
                uio.join(self.paths["frames"], fn),
                f"{record}, frame {t}",
                "width/height",
            )
            frames.append(data)
        h, w = item["height"], item["width"]
        t_len = len(frames)
        segments = []
        for ann in item["annotations"]:
            rec = f"{record}, annotation {ann['id']}"
            self.check_category(ann["category_id"], self.paths["annotations"], rec)
            segs = ann.get("segmentations", [])
            if len(segs) != t_len:
                raise BadRecord(
                    self.paths["annotations"],
                    rec,
                    "segmentations",
                    f"{len(segs)} entries for a {t_len}-frame video (a frame is missing)",
                )
            areas, boxes, rles = [], [], []
            for t, seg in enumerate(segs):
                if seg is None:
                    areas.append(0)
                    boxes.append([0.0, 0.0, 0.0, 0.0])
                    rles.append("")
                    continue
                try:
                    mask = polygons_to_mask(seg, h, w) if isinstance(seg, list) else rle_decode(seg)
                except Exception as err:  # noqa: BLE001 - pycocotools raises many types on a malformed mask
                    raise BadRecord(
                        self.paths["annotations"], f"{rec}, frame {t}", "segmentations", f"cannot decode ({err})"
                    ) from None
                if mask.shape != (h, w):
                    raise BadRecord(
                        self.paths["annotations"],
                        f"{rec}, frame {t}",
                        "segmentations",
                        f"mask size {mask.shape[1]}x{mask.shape[0]} does not match the video's {w}x{h}",
                    )
                a = int(mask.sum())
                areas.append(a)
                boxes.append([float(v) for v in coco_bbox(mask)] if a else [0.0, 0.0, 0.0, 0.0])
                rles.append(rle_encode(mask)["counts"] if a else "")
            segments.append(
                Segment(
                    id=int(ann["id"]),
                    category_id=int(ann["category_id"]),
                    iscrowd=bool(ann.get("iscrowd", 0)),
                    areas=areas,
                    bboxes=boxes,
                    rles=rles,
                )
            )
        source = uio.join(self.paths["frames"], item["file_names"][0].rsplit("/", 1)[0]) if item["file_names"] else ""
        return Sample(
            dataset=self.entry.name,
            split=self.split,
            key=item["key"],
            modality="video",
            height=h,
            width=w,
            frame_names=list(item["file_names"]),
            frames=frames,
            mask_kind="rle",
            masks=[],
            segments=segments,
            source=source,
            checksum=digest(*frames, json_digest(item["annotations"])),
        )

    def check(self, item: dict, sample: Sample, strict: bool = False) -> list[Problem]:
        """Stored per-frame areas and boxes against the decoded masks; null where the mask is null; a track
        present somewhere. OVIS-style files store each box's area as the area: accepted unless ``strict``."""
        out = []
        source = self.paths["annotations"]
        by_id = {g.id: g for g in sample.segments}
        for ann in item["annotations"]:
            g = by_id[int(ann["id"])]
            record = f"video {item['key']}, annotation {ann['id']}"
            segs = ann.get("segmentations", [])
            areas = ann.get("areas") or [None] * len(segs)
            boxes = ann.get("bboxes") or [None] * len(segs)
            for t, (seg, area, box) in enumerate(zip(segs, areas, boxes)):
                rec = f"{record}, frame {t}"
                if seg is None:
                    if area is not None or box is not None:
                        out.append(Problem(source, rec, "areas/bboxes", "must be null where the segmentation is null"))
                    continue
                box_area = float(box[2]) * float(box[3]) if box else None
                if (
                    area is not None
                    and round(float(area)) != g.areas[t]
                    and (strict or box_area is None or round(float(area)) != round(box_area))
                ):
                    out.append(Problem(source, rec, "areas", f"{area} != {g.areas[t]} decoded pixels"))
                tight = [int(v) for v in g.bboxes[t]]
                if box is not None and g.areas[t] and [int(round(v)) for v in box] != tight:
                    out.append(Problem(source, rec, "bboxes", f"{box} != tight box {tight}"))
            if not any(g.areas):
                out.append(Problem(source, record, "segmentations", "track is empty in every frame"))
        return out

    def check_items(self, items: list[dict], strict: bool = False) -> list[Problem]:
        return self.check_categories(getattr(self, "categories", None))
