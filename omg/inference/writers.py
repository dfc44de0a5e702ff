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
import dataclasses
import hashlib
import io
import json
import os
import sqlite3
import tempfile
from typing import Iterator, Sequence

import numpy as np
from PIL import Image, ImageDraw

from omg.data.formats.davis import DAVIS_PALETTE
from omg.data.masks import coco_bbox, id2rgb, mask_box, rle_encode, xywh
from omg.inference.results import (
    InstanceResult,
    InteractiveResult,
    PanopticResult,
    SemanticResult,
    VideoInstanceResult,
    VideoPanopticResult,
    VideoSemanticResult,
    VOSResult,
)
from omg.utils import io as uio


def _cat(category_ids: Sequence[int] | None, label: int) -> int:
    return int(category_ids[label]) if category_ids is not None else int(label) + 1


def categories(
    vocabulary: Sequence[str], isthing: Sequence[bool], category_ids: Sequence[int] | None = None
) -> list[dict]:
    return [
        {"id": _cat(category_ids, k), "name": n, "isthing": int(t), "color": color(k).tolist()}
        for k, (n, t) in enumerate(zip(vocabulary, isthing))
    ]


def color(key: int) -> np.ndarray:
    """A stable, saturated colour for an id or label."""
    h = int(hashlib.sha256(str(key).encode()).hexdigest()[:8], 16) / 0xFFFFFFFF
    r, g, b = colorsys.hsv_to_rgb(h, 0.75, 0.95)
    return (np.array([r, g, b]) * 255).astype(np.uint8)


def overlay(
    image: np.ndarray, ids: np.ndarray, labels: dict[int, str] | None = None, alpha: float = 0.55
) -> np.ndarray:
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
        return ids, {
            k + 1: (f"{r.names[k]} {r.label_scores[k]:.2f}" if r.names else f"#{k}") for k in range(len(r.masks))
        }
    if isinstance(r, VideoInstanceResult):
        # a track (query) may stand for several classes: it is drawn and labelled by its best one shown
        shown = [k for k in np.argsort(r.scores, kind="stable") if r.scores[k] >= score_threshold]  # lowest first
        for k in shown:
            ids[r.masks[k]] = r.track_ids[k]
        return ids, {int(r.track_ids[k]): f"{r.names[k]} {r.scores[k]:.2f}" for k in shown}
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
    return {
        "image_id": image_id,
        "file_name": f"{name}.png",
        "segments_info": [
            {
                "id": s.id,
                "category_id": _cat(category_ids, s.label),
                "iscrowd": 0,
                "area": s.area,
                "bbox": xywh(s.box),
                "score": round(s.score, 6),
            }
            for s in result.segments
        ],
    }


def panoptic_item(out: str, image_id, name: str, result: PanopticResult, category_ids=None) -> tuple[dict, dict]:
    """Write ``panoptic/<name>.png``; -> (its annotation, its image entry) in ``panoptic.json``."""
    uio.write_bytes(uio.join(out, "panoptic", f"{name}.png"), uio.encode_png(id2rgb(result.panoptic)))
    image = {
        "id": image_id,
        "file_name": f"{name}.jpg",
        "height": int(result.panoptic.shape[0]),
        "width": int(result.panoptic.shape[1]),
    }
    return panoptic_annotation(image_id, name, result, category_ids), image


def panoptic_json(
    out: str, items: Sequence[tuple[dict, dict]], vocabulary: Sequence[str], isthing: Sequence[bool], category_ids=None
) -> str:
    """``panoptic.json`` of the (annotation, image entry) pairs :func:`panoptic_item` returned. ``images`` is written
    too (panopticapi ignores it), so the file validates like a ground truth."""
    uri = uio.join(out, "panoptic.json")
    doc = {
        "images": [image for _, image in items],
        "annotations": [ann for ann, _ in items],
        "categories": categories(vocabulary, isthing, category_ids),
    }
    uio.write_json(uri, doc)
    return uri


def instance_records(image_id, r: InstanceResult, category_ids=None) -> list[dict]:
    return [
        {
            "image_id": image_id,
            "category_id": _cat(category_ids, int(lab)),
            "segmentation": rle,
            "bbox": [float(v) for v in coco_bbox(m)],
            "score": float(s),
        }
        for m, lab, s, rle in zip(r.masks, r.labels, r.scores, r.rles)
    ]


def instances_json(out: str, records: list[dict]) -> str:
    """``instances_results.json``: the COCO results records (:func:`instance_records`) of every image."""
    uri = uio.join(out, "instances_results.json")
    uio.write_json(uri, records)
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
            rec.update(
                label=int(r.labels[k]),
                name=r.names[k],
                label_score=float(r.label_scores[k]),
                label_source=r.label_sources[k],
            )
        recs.append(rec)
    uri = uio.join(out, "interactive", f"{name}.json")
    uio.write_json(uri, recs)
    return uri


# ----------------------------------------------------------------------------- videos
# The video formats are written frame by frame (a streamed video's frames as they come; a whole video's result
# frame after frame), in memory bounded by one frame: what a file needs at its end (a YouTube-VIS track's frames,
# VIPSeg's per-frame segments) is spooled to a temporary SQLite file beside nothing else.


class _Spool:
    """Rows (key, frame, text) in a temporary SQLite database, read back by key then frame."""

    def __init__(self):
        self.dir = tempfile.TemporaryDirectory(prefix="omg-spool-")
        self.db = sqlite3.connect(os.path.join(self.dir.name, "spool.db"))
        self.db.execute("CREATE TABLE rows (key INTEGER, frame INTEGER, text TEXT)")

    def add(self, rows: list[tuple[int, int, str]]) -> None:
        self.db.executemany("INSERT INTO rows VALUES (?, ?, ?)", rows)

    def read(self) -> Iterator[tuple[int, int, str]]:
        self.db.execute("CREATE INDEX IF NOT EXISTS by_key ON rows (key, frame)")
        yield from self.db.execute("SELECT key, frame, text FROM rows ORDER BY key, frame")

    def close(self) -> None:
        self.db.close()
        self.dir.cleanup()


def _json(obj) -> bytes:
    return uio.dumps_json(obj)


class YtvisWriter:
    """YouTube-VIS results, video after video, frame after frame: ``add(video_id, frame_result)`` with a video
    instance result of one (or more) frames of the video; ``close()`` writes ``results.json``. A track is a
    (track id, label) pair, its score the mean over the video's frames of the frames' scores (as
    :meth:`VideoInstanceResult.concat`), its segmentation null in the frames where it is absent or empty."""

    def __init__(self, out: str, category_ids=None):
        self.uri = uio.join(out, "results.json")
        self.category_ids = category_ids
        self.spool = _Spool()
        self.tracks: list[tuple[object, int, float]] = []  # (video id, category id, score); key = index
        self.frames: list[int] = []  # per video
        self._video = object()
        self._keys: dict[tuple[int, int], int] = {}
        self._totals: dict[int, float] = {}

    def _end_video(self) -> None:
        for (_, lab), key in self._keys.items():
            self.tracks[key] = (self.tracks[key][0], self.tracks[key][1], self._totals[key])
        self._keys, self._totals = {}, {}

    def add(self, video_id, r: VideoInstanceResult) -> None:
        if video_id != self._video:
            self._end_video()
            self._video = video_id
            self.frames.append(0)
        t0, n = self.frames[-1], r.masks.shape[1]
        rows, encoded = [], {}  # a track id's masks are encoded once (the pairs of one query share them)
        for k, (tid, lab) in enumerate(zip(r.track_ids.tolist(), r.labels.tolist())):
            key = self._keys.get((tid, lab))
            if key is None:
                key = self._keys[(tid, lab)] = len(self.tracks)
                self.tracks.append((video_id, _cat(self.category_ids, lab), 0.0))
                self._totals[key] = 0.0
            self._totals[key] += float(r.scores[k]) * n
            hit = encoded.get(tid)
            if hit is None or not np.array_equal(hit[0], r.masks[k]):
                hit = encoded[tid] = (
                    r.masks[k],
                    [(t, _json(rle_encode(m)).decode()) for t, m in enumerate(r.masks[k]) if m.any()],
                )
            rows += [(key, t0 + t, text) for t, text in hit[1]]
        self.spool.add(rows)
        self.frames[-1] += n

    def records(self) -> Iterator[bytes]:
        """The file's bytes, track after track (as ``dumps_json`` of the whole list)."""
        self._end_video()
        videos = {}
        for v, _, _ in self.tracks:
            videos.setdefault(v, len(videos))
        rows = self.spool.read()
        row = next(rows, None)
        yield b"["
        for key, (video_id, cat, total) in enumerate(self.tracks):
            num_frames = self.frames[videos[video_id]]
            head = _json(
                {"video_id": video_id, "category_id": cat, "score": float(np.float32(total / max(num_frames, 1)))}
            )
            segs = ["null"] * num_frames
            while row is not None and row[0] == key:
                segs[row[1]] = row[2]
                row = next(rows, None)
            yield (b"," if key else b"") + head[:-1] + b',"segmentations":[' + ",".join(segs).encode() + b"]}"
        yield b"]"

    def close(self) -> str:
        try:
            uio.write_chunks(self.uri, self.records())
        finally:
            self.spool.close()
        return self.uri


def ytvis_records(video_id, r: VideoInstanceResult, category_ids=None) -> list[dict]:
    return [
        {
            "video_id": video_id,
            "category_id": _cat(category_ids, int(r.labels[k])),
            "score": float(r.scores[k]),
            "segmentations": r.rles(k),
        }
        for k in range(len(r.labels))
    ]


def write_ytvis(out: str, items: list[tuple[object, VideoInstanceResult]], category_ids=None) -> str:
    w = YtvisWriter(out, category_ids)
    for video_id, r in items:
        w.add(video_id, r)
    return w.close()


class VipsegWriter:
    """VIPSeg predictions, video after video, frame after frame: ``add(video, frame_name, frame_result)`` writes
    ``panoptic/<video>/<frame>.png`` and spools the frame's segments; ``close()`` writes ``panoptic.json``."""

    def __init__(self, out: str, isthing: Sequence[bool], category_ids=None, json_out: str | None = None):
        self.out, self.isthing, self.category_ids = out, isthing, category_ids
        self.json_out = json_out or out
        self.spool = _Spool()
        self.videos: list[str] = []
        self.vocabulary: list[str] = []
        self._frame = 0

    def add(self, video: str, name: str, r: VideoPanopticResult) -> None:
        if not self.videos or video != self.videos[-1]:
            self.videos.append(video)
            self._frame = 0
        self.vocabulary = r.vocabulary
        label = {s.id: s.label for s in r.segments}
        t = self._frame
        pan = r.panoptic[0]
        uio.write_bytes(uio.join(self.out, "panoptic", video, f"{name}.png"), uio.encode_png(id2rgb(pan)))
        infos = []
        for sid in r.frame_segments[0]:
            m = pan == sid
            infos.append(
                {
                    "id": int(sid),
                    "category_id": _cat(self.category_ids, label[sid]),
                    "iscrowd": 0,
                    "area": int(m.sum()),
                    "bbox": coco_bbox(m),
                }
            )
        h, w = pan.shape
        self.spool.add([(len(self.videos) - 1, t, _json([name, int(h), int(w), infos]).decode())])
        self._frame += 1

    def chunks(self) -> Iterator[bytes]:
        """``{"videos": [...], "annotations": [...], "categories": [...]}`` as ``dumps_json`` writes it."""
        yield b'{"videos":['
        for part in ("videos", "annotations"):
            if part == "annotations":
                yield b'],"annotations":['
            key_now, first = -1, True
            for key, t, text in self.spool.read():
                name, h, w, infos = json.loads(text)
                video = self.videos[key]
                if key != key_now:
                    if key_now >= 0:
                        yield b"]}"
                    yield (
                        (b"" if key_now < 0 else b",")
                        + _json({"video_id": video})[:-1]
                        + (b',"images":[' if part == "videos" else b',"annotations":[')
                    )
                    key_now, first = key, True
                if part == "videos":
                    item = {"id": f"{video}_{t}", "file_name": f"{name}.jpg", "height": h, "width": w}
                else:
                    item = {"image_id": f"{video}_{t}", "file_name": f"{name}.png", "segments_info": infos}
                yield (b"" if first else b",") + _json(item)
                first = False
            if key_now >= 0:
                yield b"]}"
        yield b'],"categories":' + _json(categories(self.vocabulary, self.isthing, self.category_ids)) + b"}"

    def close(self) -> str:
        uri = uio.join(self.json_out, "panoptic.json")
        try:
            uio.write_chunks(uri, self.chunks())
        finally:
            self.spool.close()
        return uri


def write_vipseg(
    out: str, items: list[tuple[str, Sequence[str], VideoPanopticResult]], isthing, category_ids=None
) -> str:
    w = VipsegWriter(out, isthing, category_ids)
    for video, frame_names, r in items:
        for t, name in enumerate(frame_names):
            w.add(video, name, frame_of(r, t))
    return w.close()


def frame_of(r, t: int):
    """Frame t of a video result, as a video result of one frame."""
    if isinstance(r, VideoPanopticResult):
        ids = r.frame_segments[t]
        pan = r.panoptic[t : t + 1]
        segs = [
            dataclasses.replace(s, area=int((pan == s.id).sum()), box=mask_box(pan[0] == s.id))
            for s in r.segments
            if s.id in set(ids)
        ]
        return VideoPanopticResult(pan, segs, r.vocabulary, [ids])
    if isinstance(r, VideoSemanticResult):
        return VideoSemanticResult(r.labels[t : t + 1], r.vocabulary)
    if isinstance(r, VOSResult):
        return VOSResult(r.masks[t : t + 1], r.object_ids, r.queries)
    if isinstance(r, VideoInstanceResult):
        return VideoInstanceResult(r.masks[:, t : t + 1], r.labels, r.scores, r.track_ids, r.names, r.vocabulary)
    raise TypeError(f"not a video result: {type(r).__name__}")


def write_vss(out: str, video: str, frame_names: Sequence[str], r: VideoSemanticResult) -> None:
    for t, name in enumerate(frame_names):
        write_semantic(out, f"{video}/{name}", r.labels[t])


def write_vos(out: str, video: str, frame_names: Sequence[str], r: VOSResult) -> None:
    for t, name in enumerate(frame_names):
        uio.write_bytes(
            uio.join(out, "Annotations", video, f"{name}.png"), uio.encode_png(r.masks[t], palette=DAVIS_PALETTE)
        )


class VideoOutput:
    """``omg predict``'s outputs of one video task over one or more videos, frame by frame: the official files
    (:data:`VIDEO_TASKS` rows of the table above; one ``results.json`` / ``panoptic.json`` for all the videos), and
    each video's overlays (``overlays/<video>/<frame>.png`` and / or an overlay video).
    ``start(video, ...)`` before each video's frames, ``add(name, image, frame_result)``; ``close()`` -> the outputs
    written."""

    def __init__(
        self,
        out: str,
        task: str,
        isthing: Sequence[bool] = (),
        category_ids=None,
        score_threshold: float = 0.0,
        overlays: bool = True,
        results_out: str | None = None,
    ):
        if task not in ("vis", "vps", "vss", "vos"):
            raise ValueError(f"not a video task: {task!r}")
        self.out, self.task, self.score_threshold, self.overlays = out, task, score_threshold, overlays
        results_out = results_out or out  # where results.json / panoptic.json go (a batch job: one per video)
        self.ytvis = YtvisWriter(results_out, category_ids) if task == "vis" else None
        self.vipseg = VipsegWriter(out, isthing, category_ids, json_out=results_out) if task == "vps" else None
        self.video, self.movie, self.written = None, None, []
        self.frames = 0  # of all the videos

    def start(
        self,
        video: str,
        video_id: object = 1,
        overlay_frames: bool = True,
        overlay_video: str | None = None,
        fps: float = 25.0,
    ) -> None:
        """The next video: its name (folders under ``out``), its id in the results, and its overlays."""
        self._end_video()
        self.video, self.video_id, self.overlay_frames = video, video_id, overlay_frames
        if overlay_video:
            from omg.inference.media import VideoWriter

            self.movie = VideoWriter(overlay_video, fps)

    def add(self, name: str, image: np.ndarray, r) -> None:
        if self.video is None:
            raise RuntimeError("VideoOutput.add before start(video)")
        if self.task == "vis":
            self.ytvis.add(self.video_id, r)
        elif self.task == "vps":
            self.vipseg.add(self.video, name, r)
        elif self.task == "vss":
            write_semantic(self.out, f"{self.video}/{name}", r.labels[0])
        else:
            uio.write_bytes(
                uio.join(self.out, "Annotations", self.video, f"{name}.png"),
                uio.encode_png(r.masks[0], palette=DAVIS_PALETTE),
            )
        if self.overlay_frames or self.movie is not None:
            ids, labels = overlay_ids(r, self.score_threshold)
            shown = overlay(image, ids[0], labels)
            if self.overlay_frames:
                uio.write_bytes(uio.join(self.out, "overlays", self.video, f"{name}.png"), uio.encode_png(shown))
            if self.movie is not None:
                self.movie.add(shown)
        self.frames += 1

    def _end_video(self) -> None:
        if self.video is None:
            return
        folder = {"vss": "semantic", "vos": "Annotations"}.get(self.task)
        if folder:
            self.written.append(uio.join(self.out, folder, self.video))
        if self.overlay_frames:
            self.written.append(uio.join(self.out, "overlays", self.video))
        self.video = None
        if self.movie is not None:
            movie, self.movie = self.movie, None
            movie.close()
            self.written.append(movie.path)

    def abort(self) -> None:
        """A video failed part way: the whole-run files (results.json, panoptic.json) are not written, the overlay
        video is closed (it holds the frames done)."""
        for spooled in (self.ytvis, self.vipseg):
            if spooled is not None:
                spooled.spool.close()
        if self.movie is not None:
            self.movie.close()

    def close(self) -> list[str]:
        try:
            if self.ytvis is not None:
                self.written.insert(0, self.ytvis.close())
            if self.vipseg is not None:
                self.written.insert(0, self.vipseg.close())
        finally:
            self._end_video()
        return self.written


def read_png(uri: str) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(uio.read_bytes(uri))))
