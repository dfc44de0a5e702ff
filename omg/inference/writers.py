"""Writing predictions in the official result formats, and coloured overlays to look at.

=============  =================================================================================
panoptic       COCO panoptic: ``panoptic/<name>.png`` (RGB ids) + ``panoptic.json`` (annotations with
               segments_info: id, category_id, iscrowd 0, area, bbox, score)
instance       COCO results JSON: ``[{image_id, category_id, segmentation: RLE, bbox, score}]``
semantic       ``semantic/<name>.png`` (uint8 class ids; 255 = unlabelled)
vis            YouTube-VIS results JSON: ``[{video_id, category_id, score, segmentations: [RLE | None]}]``
vps            VIPSeg: ``panoptic/<video>/<frame>.png`` + ``panoptic.json`` (per video, per frame segments_info)
vss            ``semantic/<video>/<frame>.png``
vos            DAVIS: ``Annotations/<video>/<frame>.png`` (palette-indexed object ids)
=============  =================================================================================

``category_ids`` maps vocabulary indices to the dataset's category ids (default: index + 1).
"""

from __future__ import annotations

import colorsys
import hashlib
import io
from typing import Sequence

import numpy as np
from PIL import Image, ImageDraw

from omg.utils import io as uio
from omg.data.masks import coco_bbox, id2rgb, rle_encode, xywh
from omg.data.formats.davis import DAVIS_PALETTE
from omg.inference.results import (
    InstanceResult, InteractiveResult, PanopticResult, SemanticResult, VideoInstanceResult, VideoPanopticResult,
    VideoSemanticResult, VOSResult,
)


def _cat(category_ids: Sequence[int] | None, label: int) -> int:
    return int(category_ids[label]) if category_ids is not None else int(label) + 1


def categories(vocabulary: Sequence[str], isthing: Sequence[bool], category_ids: Sequence[int] | None = None) -> list[dict]:
    return [{"id": _cat(category_ids, k), "name": n, "isthing": int(t), "color": color(k).tolist()}
            for k, (n, t) in enumerate(zip(vocabulary, isthing))]


def color(key: int) -> np.ndarray:
    """A stable, saturated colour for an id or label."""
    h = int(hashlib.sha256(str(key).encode()).hexdigest()[:8], 16) / 0xFFFFFFFF
    r, g, b = colorsys.hsv_to_rgb(h, 0.75, 0.95)
    return (np.array([r, g, b]) * 255).astype(np.uint8)


def overlay(image: np.ndarray, ids: np.ndarray, labels: dict[int, str] | None = None, alpha: float = 0.55) -> np.ndarray:
    """Blend a colour per id (0 = none) over the image, draw the boundaries and the labels."""
    out = image.astype(np.float32).copy()
    for v in np.unique(ids):
        if v == 0:
            continue
        m = ids == v
        out[m] = (1 - alpha) * out[m] + alpha * color(int(v))
    edge = np.zeros(ids.shape, bool)
    edge[:, 1:] |= ids[:, 1:] != ids[:, :-1]
    edge[1:, :] |= ids[1:, :] != ids[:-1, :]
    out[edge] = 255
    img = Image.fromarray(out.clip(0, 255).astype(np.uint8))
    if labels:
        draw = ImageDraw.Draw(img)
        for v, text in labels.items():
            ys, xs = np.nonzero(ids == v)
            if len(xs):
                x, y = int(np.median(xs)), int(np.median(ys))
                draw.text((x + 1, y + 1), text, fill=(0, 0, 0))
                draw.text((x, y), text, fill=(255, 255, 255))
    return np.asarray(img)


def overlay_ids(r, score_threshold: float = 0.0) -> tuple[np.ndarray, dict[int, str] | None]:
    """Any result -> (id map to colour, H x W or T x H x W with 0 = nothing; {id: text}) for :func:`overlay`.
    Instances below ``score_threshold`` are not drawn; higher scores paint over lower ones."""
    if isinstance(r, (PanopticResult, VideoPanopticResult)):
        return r.panoptic, {s.id: s.name for s in r.segments}
    if isinstance(r, (SemanticResult, VideoSemanticResult)):
        return r.labels + 1, {k + 1: n for k, n in enumerate(r.vocabulary)}
    if isinstance(r, VOSResult):
        return r.masks, None
    ids = np.zeros(r.masks.shape[1:], np.int32)
    if isinstance(r, InteractiveResult):
        for k, m in enumerate(r.masks):
            ids[m] = k + 1
        return ids, {k + 1: (f"{r.names[k]} {r.label_scores[k]:.2f}" if r.names else f"#{k}") for k in range(len(r.masks))}
    if isinstance(r, VideoInstanceResult):
        for k in np.argsort(r.scores):  # lowest first: higher scores paint over
            if r.scores[k] >= score_threshold:
                ids[r.masks[k]] = r.track_ids[k]
        return ids, {int(r.track_ids[k]): f"{r.names[k]} {r.scores[k]:.2f}" for k in range(len(r.labels))}
    if isinstance(r, InstanceResult):  # sorted by score, highest first
        keep = [k for k in range(len(r.scores)) if r.scores[k] >= score_threshold]
        for k in keep[::-1]:
            ids[r.masks[k]] = k + 1
        return ids, {k + 1: f"{r.names[k]} {r.scores[k]:.2f}" for k in keep}
    raise TypeError(f"no overlay for a {type(r).__name__}")


def write_overlay(uri: str, image: np.ndarray, ids: np.ndarray, labels: dict[int, str] | None = None) -> None:
    uio.write_bytes(uri, uio.encode_png(overlay(image, ids, labels)))


# ----------------------------------------------------------------------------- images

def panoptic_annotation(image_id, name: str, result: PanopticResult, category_ids=None) -> dict:
    return {"image_id": image_id, "file_name": f"{name}.png", "segments_info": [
        {"id": s.id, "category_id": _cat(category_ids, s.label), "iscrowd": 0, "area": s.area, "bbox": xywh(s.box),
         "score": round(s.score, 6)} for s in result.segments]}


def write_panoptic(out: str, items: list[tuple[object, str, PanopticResult]], isthing: Sequence[bool],
                   category_ids=None) -> str:
    """``images`` is written too (panopticapi ignores it), so the file validates like a ground truth."""
    anns, images = [], []
    for image_id, name, r in items:
        uio.write_bytes(uio.join(out, "panoptic", f"{name}.png"), uio.encode_png(id2rgb(r.panoptic)))
        anns.append(panoptic_annotation(image_id, name, r, category_ids))
        images.append({"id": image_id, "file_name": f"{name}.jpg", "height": int(r.panoptic.shape[0]),
                       "width": int(r.panoptic.shape[1])})
    vocab = items[0][2].vocabulary if items else []
    uri = uio.join(out, "panoptic.json")
    uio.write_json(uri, {"images": images, "annotations": anns, "categories": categories(vocab, isthing, category_ids)})
    return uri


def instance_records(image_id, r: InstanceResult, category_ids=None) -> list[dict]:
    return [{"image_id": image_id, "category_id": _cat(category_ids, int(lab)), "segmentation": rle,
             "bbox": [float(v) for v in coco_bbox(m)], "score": float(s)}
            for m, lab, s, rle in zip(r.masks, r.labels, r.scores, r.rles)]


def write_instances(out: str, items: list[tuple[object, str, InstanceResult]], category_ids=None) -> str:
    recs = []
    for image_id, _, r in items:
        recs += instance_records(image_id, r, category_ids)
    uri = uio.join(out, "instances_results.json")
    uio.write_json(uri, recs)
    return uri


def write_semantic(out: str, name: str, r: SemanticResult | np.ndarray) -> str:
    labels = r.labels if isinstance(r, SemanticResult) else r
    uri = uio.join(out, "semantic", f"{name}.png")
    uio.write_bytes(uri, uio.encode_png(np.where(labels < 255, labels, 255).astype(np.uint8)))
    return uri


def write_interactive(out: str, name: str, r: InteractiveResult) -> str:
    """``interactive/<name>.png``: prompt k's mask painted with value k + 1 (later prompts on top);
    ``interactive/<name>.json``: per prompt RLE, score and label."""
    ids = np.zeros(r.masks.shape[1:], np.uint8)
    for k, m in enumerate(r.masks):
        ids[m] = min(k + 1, 255)
    uio.write_bytes(uio.join(out, "interactive", f"{name}.png"), uio.encode_png(ids))
    recs = []
    for k in range(len(r.masks)):
        rec = {"prompt": k, "segmentation": r.rles[k], "score": float(r.scores[k])}
        if r.names is not None:
            rec.update(label=int(r.labels[k]), name=r.names[k], label_score=float(r.label_scores[k]))
        recs.append(rec)
    uri = uio.join(out, "interactive", f"{name}.json")
    uio.write_json(uri, recs)
    return uri


# ----------------------------------------------------------------------------- videos

def ytvis_records(video_id, r: VideoInstanceResult, category_ids=None) -> list[dict]:
    return [{"video_id": video_id, "category_id": _cat(category_ids, int(r.labels[k])), "score": float(r.scores[k]),
             "segmentations": r.rles(k)} for k in range(len(r.labels))]


def write_ytvis(out: str, items: list[tuple[object, VideoInstanceResult]], category_ids=None) -> str:
    recs = []
    for video_id, r in items:
        recs += ytvis_records(video_id, r, category_ids)
    uri = uio.join(out, "results.json")
    uio.write_json(uri, recs)
    return uri


def vipseg_annotation(video: str, frame_names: Sequence[str], r: VideoPanopticResult, category_ids=None) -> dict:
    by_id = {s.id: s for s in r.segments}
    frames = []
    for t, name in enumerate(frame_names):
        pan = r.panoptic[t]
        infos = []
        for sid in r.frame_segments[t]:
            m = pan == sid
            s = by_id[sid]
            infos.append({"id": int(sid), "category_id": _cat(category_ids, s.label), "iscrowd": 0,
                          "area": int(m.sum()), "bbox": coco_bbox(m)})
        frames.append({"image_id": f"{video}_{t}", "file_name": f"{name}.png", "segments_info": infos})
    return {"video_id": video, "annotations": frames}


def write_vipseg(out: str, items: list[tuple[str, Sequence[str], VideoPanopticResult]], isthing, category_ids=None) -> str:
    anns, videos = [], []
    for video, frame_names, r in items:
        for t, name in enumerate(frame_names):
            uio.write_bytes(uio.join(out, "panoptic", video, f"{name}.png"), uio.encode_png(id2rgb(r.panoptic[t])))
        anns.append(vipseg_annotation(video, frame_names, r, category_ids))
        h, w = r.panoptic.shape[1:]
        videos.append({"video_id": video, "images": [{"id": f"{video}_{t}", "file_name": f"{n}.jpg", "height": int(h),
                                                      "width": int(w)} for t, n in enumerate(frame_names)]})
    vocab = items[0][2].vocabulary if items else []
    uri = uio.join(out, "panoptic.json")
    uio.write_json(uri, {"videos": videos, "annotations": anns, "categories": categories(vocab, isthing, category_ids)})
    return uri


def write_vss(out: str, video: str, frame_names: Sequence[str], r: VideoSemanticResult) -> None:
    for t, name in enumerate(frame_names):
        write_semantic(out, f"{video}/{name}", r.labels[t])


def write_vos(out: str, video: str, frame_names: Sequence[str], r: VOSResult) -> None:
    for t, name in enumerate(frame_names):
        uio.write_bytes(uio.join(out, "Annotations", video, f"{name}.png"),
                        uio.encode_png(r.masks[t], palette=DAVIS_PALETTE))


def read_png(uri: str) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(uio.read_bytes(uri))))
