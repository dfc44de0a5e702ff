"""omg-shapes: the embedded default dataset, generated procedurally and deterministically.

Scenes of textured "stuff" regions (sky, grass, water, sand) with "thing" shapes on top
(circle, square, triangle, star; hexagon and cross are held out of every training split
for open-vocabulary evaluation), as still images and as videos in which the shapes move,
scale, rotate, enter, leave and occlude each other while the stuff layout drifts. Like real
categories, each thing class has its own look as well as its outline: a hue band and a
surface pattern.

Everything is written in the official formats, so the platform's real readers serve it:

=========================================  ==================================================
``images/<split>/<id:012d>.jpg``           COCO images
``annotations/panoptic_<split>.json`` +    COCO panoptic (RGB id PNGs, ``segments_info`` with
``annotations/panoptic_<split>/*.png``     areas = pixel counts, bboxes, ``iscrowd``, VOID = 0)
``annotations/instances_<split>.json``     COCO instances (things; compressed RLE)
``videos/<split>/JPEGImages/<vid>/*.jpg``  video frames (shared by the three video formats)
``videos/<split>/instances.json``          YouTube-VIS (per-frame RLE or null, areas, bboxes)
``videos/<split>/panoptic.json`` +         VIPSeg in its COCO-style conversion (per-frame RGB
``videos/<split>/panoptic/<vid>/*.png``    id PNGs; a track keeps its id in every frame)
``videos/<split>/Annotations/<vid>/*.png`` DAVIS-17 semi-supervised VOS (palette PNGs; the
``videos/<split>/ImageSets/<split>.txt``   objects are the things visible in frame 0)
``meta.json``                              generator version, options, seed, classes, counts
=========================================  ==================================================

Image splits: ``train`` and ``val`` (training classes only) and ``val_ov`` (every image
holds at least one held-out class). Video splits: ``train`` and ``val``. Some images
hold crowd regions (``iscrowd=1``: a cluster of small shapes of one class) and VOID
pixels (unlabelled clutter), as real data does.

Determinism: each sample draws from its own ``numpy`` generator seeded with
``(seed, split, index)``, so the same seed and options give byte-identical files.
"""

from __future__ import annotations

import colorsys
import dataclasses
import hashlib
import math
from dataclasses import dataclass, field
from typing import Callable, Iterator

import numpy as np
from PIL import Image, ImageDraw

from omg.data.formats.davis import DAVIS_PALETTE
from omg.data.masks import coco_bbox, id2rgb, rle_encode
from omg.utils import io as uio
from omg.utils.progress import Progress

#: bump when the generator's output changes for the same seed and options
GENERATOR_VERSION = 3  # 2: class-specific thing patterns; 3: class-specific hue bands


@dataclass(frozen=True)
class ShapeClass:
    id: int
    name: str
    synonyms: tuple[str, ...]
    isthing: bool
    heldout: bool = False


THING_CLASSES: tuple[ShapeClass, ...] = (
    ShapeClass(1, "circle", ("circle", "disc", "round shape"), True),
    ShapeClass(2, "square", ("square", "box", "block"), True),
    ShapeClass(3, "triangle", ("triangle", "wedge", "three-sided shape"), True),
    ShapeClass(4, "star", ("star", "five-pointed star", "starburst"), True),
    ShapeClass(5, "hexagon", ("hexagon", "six-sided shape", "honeycomb cell"), True, heldout=True),
    ShapeClass(6, "cross", ("cross", "plus sign", "plus shape"), True, heldout=True),
)
STUFF_CLASSES: tuple[ShapeClass, ...] = (
    ShapeClass(11, "sky", ("sky", "clouds", "blue sky"), False),
    ShapeClass(12, "grass", ("grass", "lawn", "meadow"), False),
    ShapeClass(13, "water", ("water", "sea", "lake"), False),
    ShapeClass(14, "sand", ("sand", "beach", "desert"), False),
)
CLASSES: tuple[ShapeClass, ...] = THING_CLASSES + STUFF_CLASSES
TRAIN_THINGS = tuple(c for c in THING_CLASSES if not c.heldout)
HELDOUT_THINGS = tuple(c for c in THING_CLASSES if c.heldout)
THING_BY_ID = {c.id: c for c in THING_CLASSES}

IMAGE_SPLITS = ("train", "val", "val_ov")
VIDEO_SPLITS = ("train", "val")
_SPLIT_CODE = {"train": 0, "val": 1, "val_ov": 2}
_IMAGE_ID_BASE = {"train": 0, "val": 1_000_000, "val_ov": 2_000_000}


@dataclass(frozen=True)
class SynthOptions:
    """Sizes and counts. Defaults keep CPU training fast (a few seconds to generate)."""

    image_size: int = 128
    num_train_images: int = 400
    num_val_images: int = 60
    num_val_ov_images: int = 40
    num_train_videos: int = 48
    num_val_videos: int = 12
    min_frames: int = 8
    max_frames: int = 24
    max_things: int = 6
    max_video_things: int = 4
    crowd_prob: float = 0.12
    void_prob: float = 0.2
    #: visible remnants smaller than this (pixels) become VOID instead of tiny segments
    min_segment_area: int = 6
    jpeg_quality: int = 92

    def __post_init__(self):
        if self.image_size < 32:
            raise ValueError(f"image_size must be >= 32, got {self.image_size}")
        if not 1 <= self.min_frames <= self.max_frames:
            raise ValueError(f"need 1 <= min_frames <= max_frames, got {self.min_frames}, {self.max_frames}")
        for name in ("num_train_images", "num_val_images", "num_val_ov_images", "num_train_videos", "num_val_videos"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0")
        if self.max_things < 1 or self.max_video_things < 1:
            raise ValueError("max_things and max_video_things must be >= 1")

    def num_images(self, split: str) -> int:
        return {"train": self.num_train_images, "val": self.num_val_images, "val_ov": self.num_val_ov_images}[split]

    def num_videos(self, split: str) -> int:
        return {"train": self.num_train_videos, "val": self.num_val_videos}[split]


# ----------------------------------------------------------------------------- geometry


def shape_polygon(name: str, cx: float, cy: float, r: float, angle: float) -> list[tuple[float, float]]:
    """Vertices (x, y) of a thing shape of circumradius ``r`` centred at (cx, cy), rotated by ``angle``."""
    if name == "circle":
        t = np.linspace(0, 2 * np.pi, 48, endpoint=False)
        radii = np.full_like(t, r)
    elif name == "square":
        t = np.pi / 4 + np.arange(4) * np.pi / 2
        radii = np.full(4, r)
    elif name == "triangle":
        t = -np.pi / 2 + np.arange(3) * 2 * np.pi / 3
        radii = np.full(3, r)
    elif name == "star":
        t = -np.pi / 2 + np.arange(10) * np.pi / 5
        radii = np.where(np.arange(10) % 2 == 0, r, 0.45 * r)
    elif name == "hexagon":
        t = np.arange(6) * np.pi / 3
        radii = np.full(6, r)
    elif name == "cross":
        a = 0.34 * r
        pts = np.array(
            [(-a, -r), (a, -r), (a, -a), (r, -a), (r, a), (a, a), (a, r), (-a, r), (-a, a), (-r, a), (-r, -a), (-a, -a)]
        )
        t = np.arctan2(pts[:, 1], pts[:, 0])
        radii = np.hypot(pts[:, 0], pts[:, 1])
    else:
        raise ValueError(f"unknown shape {name!r}")
    t = t + angle
    return [(float(cx + rr * math.cos(tt)), float(cy + rr * math.sin(tt))) for tt, rr in zip(t, radii)]


def rasterize(polygon: list[tuple[float, float]], height: int, width: int) -> np.ndarray:
    img = Image.new("L", (width, height), 0)
    ImageDraw.Draw(img).polygon(polygon, fill=1)
    return np.asarray(img, dtype=bool)


def ellipse_mask(cx: float, cy: float, rx: float, ry: float, height: int, width: int) -> np.ndarray:
    yy, xx = np.mgrid[0:height, 0:width]
    return ((xx + 0.5 - cx) / rx) ** 2 + ((yy + 0.5 - cy) / ry) ** 2 <= 1.0


# ----------------------------------------------------------------------------- textures


def _noise(rng: np.random.Generator, h: int, w: int, sigma: float) -> np.ndarray:
    return rng.normal(0.0, sigma, size=(h, w, 1))


def stuff_texture(name: str, h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    """A full-frame float texture (H x W x 3) with the class's colour statistics."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    tint = rng.uniform(-12, 12, size=3)
    if name == "sky":
        base = np.array([105.0, 160.0, 232.0]) + tint
        img = base + (yy / h)[..., None] * np.array([55.0, 45.0, 15.0])
        for _ in range(int(rng.integers(1, 4))):  # soft clouds
            cx, cy = rng.uniform(0, w), rng.uniform(0, h)
            rx, ry = rng.uniform(0.1, 0.3) * w, rng.uniform(0.04, 0.1) * h
            blob = np.exp(-(((xx - cx) / rx) ** 2 + ((yy - cy) / ry) ** 2))
            img = img + blob[..., None] * 70.0
        img = img + _noise(rng, h, w, 3.0)
    elif name == "grass":
        base = np.array([68.0, 142.0, 52.0]) + tint
        stripes = rng.normal(0, 1, size=(1, w)).repeat(h, axis=0)
        blades = stripes * 18.0 + rng.normal(0, 10, size=(h, w))
        img = base + blades[..., None] * np.array([0.6, 1.0, 0.4])
    elif name == "water":
        base = np.array([38.0, 92.0, 168.0]) + tint
        period = rng.uniform(5, 9)
        phase = rng.uniform(0, 2 * np.pi)
        ripple = np.sin(2 * np.pi * yy / period + 0.8 * np.sin(2 * np.pi * xx / (3 * period)) + phase)
        img = base + ripple[..., None] * np.array([14.0, 18.0, 22.0]) + _noise(rng, h, w, 3.0)
    elif name == "sand":
        base = np.array([214.0, 190.0, 136.0]) + tint
        speckle = (rng.random((h, w)) < 0.08)[..., None] * np.array([-45.0, -45.0, -40.0])
        img = base + speckle + _noise(rng, h, w, 7.0)
    elif name == "void":
        grey = rng.uniform(70, 150)
        img = grey + rng.normal(0, 35, size=(h, w, 1)) + rng.normal(0, 12, size=(h, w, 3))
    else:
        raise ValueError(f"unknown stuff texture {name!r}")
    return img


#: each thing class's hue band (centre; HSV hue in [0, 1), +- THING_HUE_SPREAD), saturation and value stay
#: random. Real categories differ in appearance as well as in outline: with outline alone (omg-shapes v1)
#: the four training classes had identical appearance statistics; with outline and a surface pattern (v2)
#: the demo model (tiny ConvNeXt from random init, 1500 steps on 2 CPU cores) still classified things at
#: chance (29% right on four classes, on training images too) while its masks were good (best video tube
#: IoU 0.80 per track), so VIS AP stalled at 14. Stuff, which differs in colour, was learned (PQ_st 94).
THING_HUES = {"circle": 0.0, "square": 1 / 6, "triangle": 2 / 6, "star": 3 / 6, "hexagon": 4 / 6, "cross": 5 / 6}
THING_HUE_SPREAD = 0.04


def thing_color(rng: np.random.Generator, name: str) -> np.ndarray:
    """A saturated colour in the hue band of thing class ``name`` (HSV -> RGB, 0..255)."""
    hue = (THING_HUES[name] + rng.uniform(-THING_HUE_SPREAD, THING_HUE_SPREAD)) % 1.0
    sat, val = rng.uniform(0.55, 1.0), rng.uniform(0.55, 1.0)
    return np.array(colorsys.hsv_to_rgb(hue, sat, val)) * 255.0


#: each thing class's surface pattern, drawn over its colour and shading.
THING_PATTERNS = {
    "circle": "plain",
    "square": "stripes",
    "triangle": "checks",
    "star": "dots",
    "hexagon": "diagonal",
    "cross": "rings",
}


def thing_texture(
    color: np.ndarray, h: int, w: int, rng: np.random.Generator, direction: float, pattern: str = "plain"
) -> np.ndarray:
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    shade = ((xx * math.cos(direction) + yy * math.sin(direction)) / max(h, w) - 0.5) * 40.0
    period, phase = rng.uniform(6.0, 8.0), rng.uniform(0.0, 8.0)
    wave = lambda v: np.sign(np.sin(2 * np.pi * (v + phase) / period))  # noqa: E731
    if pattern == "plain":
        motif = np.zeros((h, w))
    elif pattern == "stripes":
        motif = wave(yy)
    elif pattern == "checks":
        motif = wave(xx) * wave(yy)
    elif pattern == "dots":
        motif = np.where(
            (np.sin(2 * np.pi * (xx + phase) / period) * np.sin(2 * np.pi * (yy + phase) / period)) > 0.5, 1.5, -0.5
        )
    elif pattern == "diagonal":
        motif = wave((xx + yy) / math.sqrt(2))
    elif pattern == "rings":
        motif = wave(np.hypot(xx - rng.uniform(0, w), yy - rng.uniform(0, h)))
    else:
        raise ValueError(f"unknown thing pattern {pattern!r}")
    return color + shade[..., None] + 30.0 * motif[..., None] + _noise(rng, h, w, 4.0)


# ----------------------------------------------------------------------------- scenes


@dataclass
class Segment:
    """One annotated region of a rendered frame."""

    key: str  # stable within a video: "stuff:<cls>", "thing:<k>", "crowd"
    category_id: int
    iscrowd: int
    mask: np.ndarray  # H x W bool, visible pixels


@dataclass
class Frame:
    image: np.ndarray  # H x W x 3 uint8
    segments: list[Segment]  # non-empty, disjoint; pixels outside all of them are VOID


@dataclass
class StuffLayout:
    """Horizontal bands of stuff classes separated by wavy boundaries (drifting over time)."""

    classes: list[ShapeClass]
    bases: list[float]  # boundary heights as fractions of H (len = len(classes) - 1)
    amps: list[float]
    freqs: list[float]
    phases: list[float]
    drift: list[float]  # per-frame change of bases
    phase_speed: list[float]

    @staticmethod
    def sample(rng: np.random.Generator, video: bool) -> "StuffLayout":
        k = int(rng.choice([1, 2, 3], p=[0.2, 0.45, 0.35]))
        idx = rng.permutation(len(STUFF_CLASSES))[:k]
        classes = [STUFF_CLASSES[i] for i in idx]
        bases = sorted(rng.uniform(0.2, 0.8, size=k - 1).tolist())
        n = k - 1
        return StuffLayout(
            classes=classes,
            bases=bases,
            amps=rng.uniform(0.02, 0.08, size=n).tolist(),
            freqs=rng.uniform(0.5, 2.0, size=n).tolist(),
            phases=rng.uniform(0, 2 * np.pi, size=n).tolist(),
            drift=(rng.uniform(-0.012, 0.012, size=n) if video else np.zeros(n)).tolist(),
            phase_speed=(rng.uniform(-0.15, 0.15, size=n) if video else np.zeros(n)).tolist(),
        )

    def label_map(self, h: int, w: int, t: float = 0.0) -> np.ndarray:
        """H x W index into ``classes``."""
        xx = (np.arange(w) + 0.5) / w
        yy = (np.arange(h)[:, None] + 0.5) / h
        out = np.zeros((h, w), dtype=np.int64)
        for j in range(len(self.bases)):
            base = self.bases[j] + self.drift[j] * t
            boundary = base + self.amps[j] * np.sin(
                2 * np.pi * self.freqs[j] * xx + self.phases[j] + self.phase_speed[j] * t
            )
            out += (yy >= boundary[None, :]).astype(np.int64)
        return out


@dataclass
class Thing:
    cls: ShapeClass
    cx: float
    cy: float
    r: float
    angle: float
    color: np.ndarray
    shade_dir: float
    # motion (videos): per-frame velocity, scale rate, angular velocity
    vx: float = 0.0
    vy: float = 0.0
    scale_rate: float = 1.0
    spin: float = 0.0

    def at(self, t: float) -> tuple[float, float, float, float]:
        return (self.cx + self.vx * t, self.cy + self.vy * t, self.r * self.scale_rate**t, self.angle + self.spin * t)

    def mask(self, h: int, w: int, t: float = 0.0) -> np.ndarray:
        cx, cy, r, a = self.at(t)
        return rasterize(shape_polygon(self.cls.name, cx, cy, r, a), h, w)


@dataclass
class Scene:
    stuff: StuffLayout
    stuff_textures: dict[int, np.ndarray]
    things: list[Thing] = field(default_factory=list)  # back to front
    thing_textures: list[np.ndarray] = field(default_factory=list)
    crowd: tuple[ShapeClass, np.ndarray, np.ndarray] | None = None  # class, mask, texture
    void: tuple[np.ndarray, np.ndarray] | None = None  # mask, texture

    def render(self, h: int, w: int, t: float, min_area: int) -> Frame:
        img = np.zeros((h, w, 3))
        # owner: -1 = VOID, else index into `keys`
        keys: list[tuple[str, int, int]] = []
        owner = np.full((h, w), -1, dtype=np.int64)
        band = self.stuff.label_map(h, w, t)
        for j, cls in enumerate(self.stuff.classes):
            m = band == j
            if m.any():
                img[m] = self.stuff_textures[cls.id][m]
                owner[m] = len(keys)
                keys.append((f"stuff:{cls.id}", cls.id, 0))
        if self.void is not None:
            m, tex = self.void
            img[m] = tex[m]
            owner[m] = -1
        if self.crowd is not None:
            cls, m, tex = self.crowd
            img[m] = tex[m]
            owner[m] = len(keys)
            keys.append(("crowd", cls.id, 1))
        for k, (thing, tex) in enumerate(zip(self.things, self.thing_textures)):
            m = thing.mask(h, w, t)
            if m.any():
                img[m] = tex[m]
                owner[m] = len(keys)
                keys.append((f"thing:{k}", thing.cls.id, 0))
        segments = []
        for idx, (key, cat, crowd) in enumerate(keys):
            m = owner == idx
            area = int(m.sum())
            if area == 0:
                continue
            if area < min_area:
                owner[m] = -1  # a sliver: VOID rather than a meaningless segment
                continue
            segments.append(Segment(key=key, category_id=cat, iscrowd=crowd, mask=m))
        image = np.clip(np.rint(img), 0, 255).astype(np.uint8)
        return Frame(image=image, segments=segments)


def _sample_thing(rng: np.random.Generator, classes: tuple[ShapeClass, ...], s: int, r_range=(0.08, 0.22)) -> Thing:
    cls = classes[int(rng.integers(len(classes)))]
    return Thing(
        cls=cls,
        cx=float(rng.uniform(0.1, 0.9) * s),
        cy=float(rng.uniform(0.1, 0.9) * s),
        r=float(rng.uniform(*r_range) * s),
        angle=float(rng.uniform(0, 2 * np.pi)),
        color=thing_color(rng, cls.name),
        shade_dir=float(rng.uniform(0, 2 * np.pi)),
    )


def _place_things(
    rng: np.random.Generator, s: int, n: int, classes: tuple[ShapeClass, ...], required: tuple[ShapeClass, ...] = ()
) -> list[Thing]:
    """Place up to ``n`` things; a placement that would hide more than half of an earlier thing is redrawn."""
    things: list[Thing] = []
    masks: list[np.ndarray] = []
    for i in range(n):
        pool = required if i < len(required) else classes
        for _attempt in range(20):
            cand = _sample_thing(rng, pool, s)
            m = cand.mask(s, s)
            if m.sum() < 30:
                continue
            ok = True
            for prev in masks:
                if (prev & ~m).sum() < 0.5 * prev.sum():
                    ok = False
                    break
            if ok:
                masks = [p & ~m for p in masks] + [m]
                things.append(cand)
                break
    return things


def image_scene(rng: np.random.Generator, opts: SynthOptions, split: str) -> Scene:
    s = opts.image_size
    layout = StuffLayout.sample(rng, video=False)
    textures = {c.id: stuff_texture(c.name, s, s, rng) for c in layout.classes}
    scene = Scene(stuff=layout, stuff_textures=textures)
    if rng.random() < opts.void_prob:
        m = ellipse_mask(
            rng.uniform(0, s), rng.uniform(0, s), rng.uniform(0.06, 0.16) * s, rng.uniform(0.06, 0.16) * s, s, s
        )
        scene.void = (m, stuff_texture("void", s, s, rng))
    if rng.random() < opts.crowd_prob:
        cls = TRAIN_THINGS[int(rng.integers(len(TRAIN_THINGS)))]
        cx, cy = rng.uniform(0.2, 0.8) * s, rng.uniform(0.2, 0.8) * s
        m = np.zeros((s, s), dtype=bool)
        color = thing_color(rng, cls.name)
        for _ in range(int(rng.integers(5, 9))):
            m |= rasterize(
                shape_polygon(
                    cls.name,
                    cx + rng.normal(0, 0.06 * s),
                    cy + rng.normal(0, 0.06 * s),
                    rng.uniform(0.025, 0.045) * s,
                    rng.uniform(0, 2 * np.pi),
                ),
                s,
                s,
            )
        scene.crowd = (cls, m, thing_texture(color, s, s, rng, 0.0, THING_PATTERNS[cls.name]))
    classes = TRAIN_THINGS if split != "val_ov" else THING_CLASSES
    required = (HELDOUT_THINGS[int(rng.integers(len(HELDOUT_THINGS)))],) if split == "val_ov" else ()
    n = int(rng.integers(1, opts.max_things + 1))
    scene.things = _place_things(rng, s, max(n, len(required)), classes, required)
    scene.thing_textures = [
        thing_texture(t.color, s, s, rng, t.shade_dir, THING_PATTERNS[t.cls.name]) for t in scene.things
    ]
    return scene


def video_scene(rng: np.random.Generator, opts: SynthOptions, num_frames: int) -> Scene:
    s = opts.image_size
    layout = StuffLayout.sample(rng, video=True)
    textures = {c.id: stuff_texture(c.name, s, s, rng) for c in layout.classes}
    scene = Scene(stuff=layout, stuff_textures=textures)
    n = int(rng.integers(1, opts.max_video_things + 1))
    things = _place_things(rng, s, n, TRAIN_THINGS)
    for k, th in enumerate(things):
        speed = rng.uniform(0.5, 3.0)
        direction = rng.uniform(0, 2 * np.pi)
        th.vx, th.vy = float(speed * math.cos(direction)), float(speed * math.sin(direction))
        th.scale_rate = float(rng.uniform(0.97, 1.03))
        th.spin = float(rng.uniform(-0.08, 0.08))
        if k > 0 and rng.random() < 0.3:
            # enters later: start outside the frame, move towards the centre
            side = int(rng.integers(4))
            th.cx, th.cy = [
                (-th.r, rng.uniform(0, s)),
                (s + th.r, rng.uniform(0, s)),
                (rng.uniform(0, s), -th.r),
                (rng.uniform(0, s), s + th.r),
            ][side]
            tx, ty = rng.uniform(0.3, 0.7) * s, rng.uniform(0.3, 0.7) * s
            d = math.hypot(tx - th.cx, ty - th.cy)
            speed = d / rng.uniform(0.4 * num_frames, 0.9 * num_frames)
            th.vx, th.vy = float((tx - th.cx) / d * speed), float((ty - th.cy) / d * speed)
    scene.things = things
    scene.thing_textures = [thing_texture(t.color, s, s, rng, t.shade_dir, THING_PATTERNS[t.cls.name]) for t in things]
    return scene


# ----------------------------------------------------------------------------- writers


def _rng(seed: int, kind: int, split: str, index: int) -> np.random.Generator:
    return np.random.default_rng([seed, kind, _SPLIT_CODE[split], index])


def _unique_ids(rng: np.random.Generator, n: int) -> list[int]:
    """``n`` distinct panoptic segment ids in [1, 2**24), COCO-like (arbitrary, not class-coded)."""
    ids: list[int] = []
    while len(ids) < n:
        v = int(rng.integers(1, 1 << 24))
        if v not in ids:
            ids.append(v)
    return ids


def panoptic_categories(split: str | None) -> list[dict]:
    """COCO panoptic ``categories``; held-out classes are listed only in ``val_ov`` (and for ``None``: all)."""
    out = []
    for c in CLASSES:
        if c.heldout and split not in ("val_ov", None):
            continue
        color = [int(v) for v in hashlib.sha256(c.name.encode()).digest()[:3]]
        out.append(
            {
                "id": c.id,
                "name": c.name,
                "supercategory": "shape" if c.isthing else "background",
                "isthing": int(c.isthing),
                "color": color,
            }
        )
    return out


def segment_info(seg_id: int, seg: Segment) -> dict:
    return {
        "id": seg_id,
        "category_id": seg.category_id,
        "iscrowd": seg.iscrowd,
        "area": int(seg.mask.sum()),
        "bbox": coco_bbox(seg.mask),
    }


class _Writer:
    def __init__(self, out: str):
        self.out = out
        self.files = 0

    def bytes(self, rel: str, data: bytes) -> None:
        uio.write_bytes(uio.join(self.out, rel), data)
        self.files += 1

    def json(self, rel: str, obj) -> None:
        self.bytes(rel, uio.dumps_json(obj))


def write_image_split(w: _Writer, split: str, opts: SynthOptions, seed: int, progress: bool = True) -> dict:
    s = opts.image_size
    images, pan_anns, inst_anns = [], [], []
    ann_id = 1
    n = opts.num_images(split)
    with Progress(f"omg-shapes images/{split}", total=n, unit="img", enabled=progress) as prog:
        for i in range(n):
            rng = _rng(seed, 0, split, i)
            frame = image_scene(rng, opts, split).render(s, s, 0.0, opts.min_segment_area)
            image_id = _IMAGE_ID_BASE[split] + i + 1
            stem = f"{image_id:012d}"
            ids = _unique_ids(rng, len(frame.segments))
            pan = np.zeros((s, s), dtype=np.int64)
            infos = []
            for seg_id, seg in zip(ids, frame.segments):
                pan[seg.mask] = seg_id
                infos.append(segment_info(seg_id, seg))
                if THING_BY_ID.get(seg.category_id):
                    inst_anns.append(
                        {
                            "id": ann_id,
                            "image_id": image_id,
                            "category_id": seg.category_id,
                            "segmentation": rle_encode(seg.mask),
                            "area": int(seg.mask.sum()),
                            "bbox": coco_bbox(seg.mask),
                            "iscrowd": seg.iscrowd,
                        }
                    )
                    ann_id += 1
            w.bytes(f"images/{split}/{stem}.jpg", uio.encode_jpeg(frame.image, opts.jpeg_quality))
            w.bytes(f"annotations/panoptic_{split}/{stem}.png", uio.encode_png(id2rgb(pan)))
            images.append({"id": image_id, "file_name": f"{stem}.jpg", "width": s, "height": s})
            pan_anns.append({"image_id": image_id, "file_name": f"{stem}.png", "segments_info": infos})
            prog.update()
    cats = panoptic_categories(split)
    info = {
        "description": f"omg-shapes {split} (generator v{GENERATOR_VERSION}, seed {seed})",
        "version": str(GENERATOR_VERSION),
    }
    w.json(
        f"annotations/panoptic_{split}.json",
        {"info": info, "licenses": [], "images": images, "annotations": pan_anns, "categories": cats},
    )
    w.json(
        f"annotations/instances_{split}.json",
        {
            "info": info,
            "licenses": [],
            "images": images,
            "annotations": inst_anns,
            "categories": [c for c in cats if c["isthing"]],
        },
    )
    return {"images": n, "segments": sum(len(a["segments_info"]) for a in pan_anns), "instances": len(inst_anns)}


def write_video_split(w: _Writer, split: str, opts: SynthOptions, seed: int, progress: bool = True) -> dict:
    s = opts.image_size
    n = opts.num_videos(split)
    yt_videos, yt_anns, vps_videos, vps_anns, names = [], [], [], [], []
    ann_id = 1
    frames_total = 0
    with Progress(f"omg-shapes videos/{split}", total=n, unit="video", enabled=progress) as prog:
        for i in range(n):
            rng = _rng(seed, 1, split, i)
            num_frames = int(rng.integers(opts.min_frames, opts.max_frames + 1))
            scene = video_scene(rng, opts, num_frames)
            frames = [scene.render(s, s, float(t), opts.min_segment_area) for t in range(num_frames)]
            name = f"{split}_{i:04d}"
            names.append(name)
            keys = sorted({seg.key for f in frames for seg in f.segments}, key=_key_order)
            track_ids = dict(zip(keys, _unique_ids(rng, len(keys))))
            # DAVIS objects: the things visible in frame 0, numbered 1..N in drawing order
            davis_ids = {
                seg.key: j + 1 for j, seg in enumerate([g for g in frames[0].segments if g.key.startswith("thing:")])
            }
            image_entries, frame_anns = [], []
            per_track: dict[str, list] = {k: [None] * num_frames for k in keys if k.startswith("thing:")}
            for t, frame in enumerate(frames):
                fname = f"{t:05d}"
                w.bytes(
                    f"videos/{split}/JPEGImages/{name}/{fname}.jpg", uio.encode_jpeg(frame.image, opts.jpeg_quality)
                )
                pan = np.zeros((s, s), dtype=np.int64)
                davis = np.zeros((s, s), dtype=np.uint8)
                infos = []
                for seg in frame.segments:
                    pan[seg.mask] = track_ids[seg.key]
                    infos.append(segment_info(track_ids[seg.key], seg))
                    if seg.key in davis_ids:
                        davis[seg.mask] = davis_ids[seg.key]
                    if seg.key in per_track:
                        per_track[seg.key][t] = seg.mask
                w.bytes(f"videos/{split}/panoptic/{name}/{fname}.png", uio.encode_png(id2rgb(pan)))
                w.bytes(f"videos/{split}/Annotations/{name}/{fname}.png", uio.encode_png(davis, palette=DAVIS_PALETTE))
                image_id = (i + 1) * 10000 + t
                image_entries.append({"id": image_id, "file_name": f"{fname}.jpg", "width": s, "height": s})
                frame_anns.append({"image_id": image_id, "file_name": f"{fname}.png", "segments_info": infos})
            frames_total += num_frames
            vps_videos.append({"video_id": name, "images": image_entries})
            vps_anns.append({"video_id": name, "annotations": frame_anns})
            vid = i + 1
            yt_videos.append(
                {
                    "id": vid,
                    "width": s,
                    "height": s,
                    "length": num_frames,
                    "file_names": [f"{name}/{t:05d}.jpg" for t in range(num_frames)],
                }
            )
            for key, masks in per_track.items():
                cat = scene.things[int(key.split(":")[1])].cls.id
                yt_anns.append(
                    {
                        "id": ann_id,
                        "video_id": vid,
                        "category_id": cat,
                        "iscrowd": 0,
                        "height": s,
                        "width": s,
                        "length": 1,
                        "segmentations": [rle_encode(m) if m is not None else None for m in masks],
                        "areas": [int(m.sum()) if m is not None else None for m in masks],
                        "bboxes": [coco_bbox(m) if m is not None else None for m in masks],
                    }
                )
                ann_id += 1
            prog.update()
    info = {
        "description": f"omg-shapes videos {split} (generator v{GENERATOR_VERSION}, seed {seed})",
        "version": str(GENERATOR_VERSION),
    }
    thing_cats = [{"id": c.id, "name": c.name, "supercategory": "shape"} for c in TRAIN_THINGS]
    w.json(
        f"videos/{split}/instances.json",
        {"info": info, "licenses": [], "videos": yt_videos, "annotations": yt_anns, "categories": thing_cats},
    )
    w.json(
        f"videos/{split}/panoptic.json",
        {"info": info, "videos": vps_videos, "annotations": vps_anns, "categories": panoptic_categories(split)},
    )
    w.bytes(f"videos/{split}/ImageSets/{split}.txt", ("\n".join(names) + "\n").encode() if names else b"")
    return {"videos": n, "frames": frames_total, "tracks": len(yt_anns)}


def _key_order(key: str) -> tuple[int, int]:
    kind, _, rest = key.partition(":")
    return ({"stuff": 0, "crowd": 1, "thing": 2}[kind], int(rest) if rest else 0)


def meta_document(opts: SynthOptions, seed: int, counts: dict) -> dict:
    return {
        "generator": "omg-shapes",
        "generator_version": GENERATOR_VERSION,
        "seed": seed,
        "options": dataclasses.asdict(opts),
        "classes": [dataclasses.asdict(c) for c in CLASSES],
        "counts": counts,
    }


def generate(
    out: str,
    seed: int = 0,
    opts: SynthOptions | None = None,
    progress: bool = True,
    log: Callable[[str], None] | None = None,
) -> dict:
    """Write omg-shapes under ``out`` (a path or fsspec URI); return the ``meta.json`` document.

    ``meta.json`` is written last: its presence marks a complete dataset. If ``out``
    already holds a complete dataset with the same seed, options and generator version,
    nothing is rewritten.
    """
    opts = opts or SynthOptions()
    meta_uri = uio.join(out, "meta.json")
    if uio.exists(meta_uri):
        old = uio.read_json(meta_uri)
        same = (
            old.get("generator_version") == GENERATOR_VERSION
            and old.get("seed") == seed
            and old.get("options") == dataclasses.asdict(opts)
        )
        if same:
            if log:
                log(f"omg-shapes already complete at {out} (seed {seed}); nothing to do")
            return old
        raise FileExistsError(
            f"{meta_uri} describes a different omg-shapes (seed {old.get('seed')}, generator "
            f"v{old.get('generator_version')}); choose another --out or delete it first"
        )
    w = _Writer(out)
    counts: dict[str, dict] = {"images": {}, "videos": {}}
    for split in IMAGE_SPLITS:
        counts["images"][split] = write_image_split(w, split, opts, seed, progress)
    for split in VIDEO_SPLITS:
        counts["videos"][split] = write_video_split(w, split, opts, seed, progress)
    meta = meta_document(opts, seed, counts)
    w.json("meta.json", meta)
    if log:
        log(f"wrote {w.files} files to {out}")
    return meta


def iter_files(root: str) -> Iterator[str]:
    """Every file under a local dataset root, relative, sorted (for digests and tests)."""
    from pathlib import Path

    base = Path(root)
    for p in sorted(base.rglob("*")):
        if p.is_file():
            yield str(p.relative_to(base))
