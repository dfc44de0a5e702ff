"""omg-shapes captions: image–caption pairs for contrastive pretraining of the tiny CLIPs, a companion of
omg-shapes generated deterministically beside it (``<root>/captions/``).

The rule: a caption names what is drawn with a controlled vocabulary: shape names and their synonyms, hue words,
surface-pattern words, size, count, position and the stuff around. The corpus knows the whole world: all six shapes
are drawn and named, the held-out hexagon and cross included (``shapes="all"``, the default), while omg-shapes'
segmentation training never holds a held-out mask, shape or name (only its ``val_ov`` split does). That is the
setting open-vocabulary segmentation relies on: a web-scale CLIP has seen ADE20K's classes in captions although the
segmenter never saw their masks. ``shapes="train"`` draws and names the four training shapes only (captions version
2's world: a CLIP that never heard of a hexagon), for the ablation. Each drawn shape takes either its own class's
look (hue band and pattern, as in omg-shapes) or, with probability ``free_look``, a hue band and a pattern drawn
from all six of omg-shapes', so shape and look are not one word for the CLIP to learn.

Files (open_clip's CSV dataset layout: ``--csv-img-key filepath --csv-caption-key title``, tab separated)::

    captions/<split>/<id:08d>.jpg         the images (image_size x image_size)
    captions/<split>.csv                  filepath <TAB> title  (paths relative to captions/)
    captions/panoptic_<split>.json        where each named thing and stuff is: COCO panoptic, one annotation per
    captions/panoptic_<split>/<id>.png    image (file_name <id>.png), categories with their ``synonyms``
    captions/meta.json                    generator version, seed, options, words, counts (written last)

The panoptic annotations make the corpus a grounded one, as Panoptic Narrative Grounding (Gonzalez et al., ICCV
2021) grounds COCO captions' phrases in panoptic masks: the CLIP pretraining's region loss
(``ClipPretrainConfig.region_weight``) reads them; an image-level CLIP needs only the CSV.
"""

from __future__ import annotations

import colorsys
import dataclasses
from dataclasses import dataclass
from typing import Callable, NamedTuple

import numpy as np

from omg.data.masks import id2rgb
from omg.data.synthetic import (
    CLASSES,
    STUFF_CLASSES,
    THING_CLASSES,
    THING_HUE_SPREAD,
    THING_HUES,
    THING_PATTERNS,
    TRAIN_THINGS,
    Scene,
    Segment,
    StuffLayout,
    _place_things,
    _sample_thing,
    panoptic_categories,
    segment_info,
    stuff_texture,
    thing_texture,
)
from omg.utils import io as uio
from omg.utils.options import check_choices
from omg.utils.progress import Progress

CAPTIONS_VERSION = 4  # 2: close-ups; 3: the held-out shapes drawn and named (shapes='all'); 4: panoptic regions
SPLITS = ("train", "val")

#: the words of each hue band (HSV hue centre of omg-shapes' THING_HUES)
HUE_WORDS: dict[float, tuple[str, ...]] = {
    0.0: ("red",),
    1 / 6: ("yellow",),
    2 / 6: ("green",),
    3 / 6: ("cyan", "turquoise"),
    4 / 6: ("blue",),
    5 / 6: ("magenta", "purple"),
}
PATTERN_WORDS: dict[str, tuple[str, ...]] = {
    "plain": ("plain", "solid"),
    "stripes": ("striped",),
    "checks": ("checkered", "chequered"),
    "dots": ("dotted", "spotted"),
    "diagonal": ("diagonally striped", "slanted striped"),
    "rings": ("ringed", "banded"),
}
STUFF_WORDS: dict[str, tuple[str, ...]] = {
    "sky": ("the sky", "a blue sky"),
    "grass": ("grass", "a lawn"),
    "water": ("water", "the sea"),
    "sand": ("sand", "a beach"),
}
NUMBERS = ("a", "two", "three", "four")


#: the shapes a caption corpus draws and names (CaptionOptions.shapes)
SHAPE_POOLS = {"all": THING_CLASSES, "train": TRAIN_THINGS}


@dataclass(frozen=True)
class CaptionOptions:
    image_size: int = 128  # the tiny CLIPs' input size
    num_train: int = 2000
    num_val: int = 200
    max_things: int = 3
    #: probability that a shape takes a hue band and pattern drawn from all six, not its own class's
    free_look: float = 0.5
    #: probability that an image is a close-up: one large shape near the middle (object-centric pictures, which
    #: teach the image tower what a single shape's region looks like, as photos of one object do for CLIP)
    closeup: float = 0.5
    #: probability that a close-up is captioned by its shape's name alone ("a hexagon", no look, no stuff): in a
    #: batch, those captions differ in nothing but the shape, so the CLIP must see the shape to match them
    shape_only: float = 0.0
    jpeg_quality: int = 92
    shapes: str = dataclasses.field(
        default="all",
        metadata={
            "choices": tuple(SHAPE_POOLS),
            "help": "the shapes drawn and named: all six, the held-out ones included, or the four training ones",
        },
    )

    def __post_init__(self):
        check_choices(self)
        if self.image_size < 32:
            raise ValueError(f"image_size must be >= 32, got {self.image_size}")
        if self.num_train < 0 or self.num_val < 0 or self.max_things < 1:
            raise ValueError("num_train and num_val must be >= 0, max_things >= 1")
        for name in ("free_look", "closeup", "shape_only"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {getattr(self, name)}")

    def count(self, split: str) -> int:
        return {"train": self.num_train, "val": self.num_val}[split]


class Captioned(NamedTuple):
    """One sample of the corpus."""

    image: np.ndarray  # H x W x 3 uint8
    text: str
    looks: list["Look"]  # the shapes as the caption names them
    segments: list[Segment]  # where each thing and stuff is (disjoint; VOID elsewhere)


@dataclass(frozen=True)
class Look:
    shape: str  # a shape of the options' pool
    hue: float  # a key of HUE_WORDS
    pattern: str  # a key of PATTERN_WORDS
    size: str  # "small" | "" | "large"
    position: str


def sample_rng(seed: int, split: str, index: int) -> np.random.Generator:
    """The random generator of a split's sample ``index`` (what makes each caption reproducible alone)."""
    return np.random.default_rng([seed, 7, SPLITS.index(split), index])


def _position(cx: float, cy: float, s: int) -> str:
    x, y = cx / s, cy / s
    if abs(x - 0.5) < 0.17 and abs(y - 0.5) < 0.17:
        return "in the middle"
    if abs(x - 0.5) >= abs(y - 0.5):
        return "on the left" if x < 0.5 else "on the right"
    return "at the top" if y < 0.5 else "at the bottom"


def sample(rng: np.random.Generator, opts: CaptionOptions) -> Captioned:
    """One image, its caption, the looks of its shapes (front to back) and its segments."""
    s = opts.image_size
    layout = StuffLayout.sample(rng, video=False)
    scene = Scene(stuff=layout, stuff_textures={c.id: stuff_texture(c.name, s, s, rng) for c in layout.classes})
    closeup = rng.random() < opts.closeup
    if closeup:
        thing = _sample_thing(rng, SHAPE_POOLS[opts.shapes], s, r_range=(0.3, 0.42))
        thing.cx, thing.cy = (float(rng.uniform(0.4, 0.6) * s) for _ in range(2))
        scene.things = [thing]
    else:
        scene.things = _place_things(rng, s, int(rng.integers(1, opts.max_things + 1)), SHAPE_POOLS[opts.shapes])
    looks = []
    bands = sorted(HUE_WORDS)
    for thing in scene.things:
        own = rng.random() >= opts.free_look
        hue = THING_HUES[thing.cls.name] if own else bands[int(rng.integers(len(bands)))]
        pattern = (
            THING_PATTERNS[thing.cls.name] if own else sorted(PATTERN_WORDS)[int(rng.integers(len(PATTERN_WORDS)))]
        )
        colour = (
            np.array(
                colorsys.hsv_to_rgb(
                    (hue + rng.uniform(-THING_HUE_SPREAD, THING_HUE_SPREAD)) % 1.0,
                    rng.uniform(0.55, 1.0),
                    rng.uniform(0.55, 1.0),
                )
            )
            * 255.0
        )
        thing.color = colour
        scene.thing_textures.append(thing_texture(colour, s, s, rng, thing.shade_dir, pattern))
        size = "small" if thing.r < 0.12 * s else "large" if thing.r > 0.17 * s else ""
        looks.append(Look(thing.cls.name, hue, pattern, size, _position(thing.cx, thing.cy, s)))
    frame = scene.render(s, s, 0.0, 6)
    if closeup and opts.shape_only and rng.random() < opts.shape_only:
        return Captioned(frame.image, shape_caption(rng, looks[0].shape), looks, frame.segments)
    return Captioned(
        frame.image, caption(rng, looks[::-1], [c.name for c in layout.classes]), looks[::-1], frame.segments
    )


def shape_caption(rng: np.random.Generator, shape: str) -> str:
    """'a hexagon', 'a photo of a six-sided shape' (a synonym and the prefix drawn from ``rng``)."""
    cls = next(c for c in THING_CLASSES if c.name == shape)
    name = cls.synonyms[int(rng.integers(len(cls.synonyms)))]
    return ("a photo of a " if rng.random() < 0.5 else "a ") + name


def caption(rng: np.random.Generator, looks: list[Look], stuff: list[str]) -> str:
    """'two small red striped squares and a blue ringed star at the top, over grass and the sky' (synonyms and word
    order drawn from ``rng``; shapes that look alike are counted together)."""
    groups: dict[tuple, list[Look]] = {}
    for look in looks:
        groups.setdefault((look.shape, look.hue, look.pattern, look.size), []).append(look)
    by_name = {c.name: c for c in THING_CLASSES}
    parts = []
    for (shape, hue, pattern, size), members in groups.items():
        n = len(members)
        name = by_name[shape].synonyms[int(rng.integers(len(by_name[shape].synonyms)))]
        words = [NUMBERS[min(n, len(NUMBERS)) - 1]]
        if size:
            words.append(size)
        hue_word = HUE_WORDS[hue][int(rng.integers(len(HUE_WORDS[hue])))]
        pattern_word = PATTERN_WORDS[pattern][int(rng.integers(len(PATTERN_WORDS[pattern])))]
        words += [hue_word, pattern_word] if rng.random() < 0.5 else [pattern_word, hue_word]
        words.append(name if n == 1 else _plural(name))
        if n == 1:
            words.append(members[0].position)
        parts.append(" ".join(words))
    text = " and ".join(parts) if len(parts) < 3 else ", ".join(parts[:-1]) + " and " + parts[-1]
    if stuff:
        places = [STUFF_WORDS[s][int(rng.integers(len(STUFF_WORDS[s])))] for s in stuff]
        around = places[0] if len(places) == 1 else ", ".join(places[:-1]) + " and " + places[-1]
        text += (", over " if rng.random() < 0.5 else " in front of ") + around
    return text[0].upper() + text[1:] if rng.random() < 0.5 else text


def _plural(name: str) -> str:
    """'box' -> 'boxes', 'round shape' -> 'round shapes' (the last word)."""
    return name + ("es" if name.endswith(("s", "x", "ch", "sh")) else "s")


def generate_captions(
    root: str,
    seed: int = 0,
    opts: CaptionOptions | None = None,
    progress: bool = True,
    log: Callable[[str], None] | None = None,
) -> dict:
    """Write the caption companion under ``<root>/captions`` (idempotent: a complete one with the same seed, options
    and version is left as it is; a different one is an error) and return its meta document."""
    opts = opts or CaptionOptions()
    out = uio.join(root, "captions")
    meta_uri = uio.join(out, "meta.json")
    if uio.exists(meta_uri):
        old = uio.read_json(meta_uri)
        if (old.get("version"), old.get("seed"), old.get("options")) == (
            CAPTIONS_VERSION,
            seed,
            dataclasses.asdict(opts),
        ):
            if log:
                log(f"omg-shapes captions already complete at {out} (seed {seed}); nothing to do")
            return old
        raise FileExistsError(
            f"{meta_uri} describes other captions (seed {old.get('seed')}, version "
            f"{old.get('version')}); choose another root or delete {out} first"
        )
    counts = {}
    categories = [{**cat, "synonyms": list(c.synonyms)} for c, cat in zip(CLASSES, panoptic_categories(None))]
    for split in SPLITS:
        rows = ["filepath\ttitle"]
        images, annotations = [], []
        n = opts.count(split)
        with Progress(f"omg-shapes captions/{split}", total=n, unit="img", enabled=progress) as prog:
            for i in range(n):
                drawn = sample(sample_rng(seed, split, i), opts)
                rel = f"{split}/{i:08d}.jpg"
                uio.write_bytes(uio.join(out, rel), uio.encode_jpeg(drawn.image, opts.jpeg_quality))
                rows.append(f"{rel}\t{drawn.text}")
                pan = np.zeros(drawn.image.shape[:2], dtype=np.int64)
                for seg_id, seg in enumerate(drawn.segments, start=1):
                    pan[seg.mask] = seg_id
                uio.write_bytes(uio.join(out, f"panoptic_{split}/{i:08d}.png"), uio.encode_png(id2rgb(pan)))
                h, w = pan.shape
                images.append({"id": i, "file_name": rel, "width": w, "height": h})
                annotations.append(
                    {
                        "image_id": i,
                        "file_name": f"{i:08d}.png",
                        "segments_info": [segment_info(k, seg) for k, seg in enumerate(drawn.segments, start=1)],
                    }
                )
                prog.update()
        uio.write_bytes(uio.join(out, f"{split}.csv"), ("\n".join(rows) + "\n").encode("utf-8"))
        uio.write_json(
            uio.join(out, f"panoptic_{split}.json"),
            {"images": images, "annotations": annotations, "categories": categories},
        )
        counts[split] = n
    meta = {
        "generator": "omg-shapes captions",
        "version": CAPTIONS_VERSION,
        "seed": seed,
        "options": dataclasses.asdict(opts),
        "counts": counts,
        "shapes": [c.name for c in SHAPE_POOLS[opts.shapes]],
        "hue_words": {str(k): v for k, v in HUE_WORDS.items()},
        "pattern_words": PATTERN_WORDS,
        "stuff": [c.name for c in STUFF_CLASSES],
    }
    uio.write_json(meta_uri, meta)
    if log:
        log(f"wrote {sum(counts.values())} captioned images to {out}")
    return meta
