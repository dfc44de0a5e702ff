"""The dataset catalog: one YAML file per dataset in ``omg/datasets_catalog/``.

Each file is loaded into a typed, validated :class:`DatasetEntry`. Errors name the file
and the key. Example (abridged)::

    name: coco-panoptic
    description: COCO 2017 panoptic segmentation (80 things + 53 stuff)
    format: coco_panoptic            # which reader understands the files
    modality: image                  # image | video
    root: ${OMG_DATA_DIR:-data}/coco # any fsspec URI; ${VAR} and ${VAR:-default} expand
    splits:
      train: {images: train2017, panoptic_json: annotations/panoptic_train2017.json, ...}
    tasks: [panoptic, instance, semantic, open_vocab]
    evaluators: [pq, coco_segm, miou]
    sampling: {repeat_factor: 1.0, mode: pseudo_video, resize_range: [0.8, 2.0]}
    classes:
      - {id: 1, name: person, synonyms: [person, child, girl], isthing: true}

Where a dataset lives is overridable without editing the file: the environment
variable ``OMG_ROOT_<NAME>`` (name upper-cased, ``-`` as ``_``, e.g. ``OMG_ROOT_COCO_PANOPTIC``)
or a ``root=`` argument (the CLI's ``--root``) win over the file's ``root``. Extra
catalog directories (your own datasets) are added with ``OMG_CATALOG_DIR`` (a
``os.pathsep``-separated list); an entry there replaces a built-in one of the same name.
"""

from __future__ import annotations

import dataclasses
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Mapping

import yaml

from omg.env import runs_dir
from omg.utils.typed import SchemaError, from_dict, yaml_problem

Task = Literal[
    "panoptic",
    "instance",
    "semantic",
    "vis",
    "vps",
    "vss",
    "vos",
    "interactive",
    "open_vocab",
    "open_vocab_described",
    "prompt_label",
    "open_vocab_prompt_label",
]
Format = Literal[
    "coco_panoptic",
    "coco_sam",
    "coco_instances",
    "cityscapes_panoptic",
    "ade20k_panoptic",
    "vipseg",
    "youtube_vis",
    "vspw",
    "davis",
]
Evaluator = Literal[
    "pq",
    "coco_segm",
    "miou",
    "ytvis_ap",
    "vpq",
    "stq",
    "vspw_miou",
    "vspw_vc",
    "davis_jf",
    "interactive_miou",
    "noc",
]
SamplingMode = Literal["image", "pseudo_video", "clip"]

TASKS: tuple[str, ...] = Task.__args__  # type: ignore[attr-defined]
FORMATS: tuple[str, ...] = Format.__args__  # type: ignore[attr-defined]

IMAGE_TASKS = frozenset({"panoptic", "instance", "semantic", "interactive"})
VIDEO_TASKS = frozenset({"vis", "vps", "vss", "vos"})

#: split keys each format needs (required, optional); values are paths relative to the root
FORMAT_SPLIT_KEYS: dict[str, tuple[frozenset[str], frozenset[str]]] = {
    "coco_panoptic": (frozenset({"images", "panoptic_json", "panoptic_masks"}), frozenset({"instances_json"})),
    "coco_sam": (frozenset({"images", "panoptic_json", "panoptic_masks"}), frozenset()),
    # your own COCO-format instance data (polygons or RLE; instances may overlap)
    "coco_instances": (frozenset({"images", "instances_json"}), frozenset()),
    "cityscapes_panoptic": (frozenset({"images", "panoptic_json", "panoptic_masks"}), frozenset()),
    "ade20k_panoptic": (frozenset({"images", "panoptic_json", "panoptic_masks"}), frozenset()),
    # without panoptic_json the masks are VIPSeg's raw 16-bit panomasks (list: the split's video names)
    "vipseg": (frozenset({"frames", "panoptic_masks"}), frozenset({"panoptic_json", "list"})),
    "youtube_vis": (frozenset({"frames", "annotations"}), frozenset()),
    "vspw": (frozenset({"frames", "labels"}), frozenset({"list"})),
    "davis": (frozenset({"frames", "annotations"}), frozenset({"imageset"})),
}

#: which task an evaluator scores
EVALUATOR_TASK: dict[str, str] = {
    "pq": "panoptic",
    "coco_segm": "instance",
    "miou": "semantic",
    "ytvis_ap": "vis",
    "vpq": "vps",
    "stq": "vps",
    "vspw_miou": "vss",
    "vspw_vc": "vss",
    "davis_jf": "vos",
    "interactive_miou": "interactive",
    "noc": "interactive",
}

DEFAULT_CATALOG_DIR = Path(__file__).resolve().parents[1] / "datasets_catalog"


class CatalogError(SchemaError):
    """A catalog file is malformed; the message names the file and the key."""


@dataclass(frozen=True)
class ClassInfo:
    """One category. ``synonyms[0]`` is the display name; all synonyms feed the text classifier."""

    id: int
    name: str
    synonyms: tuple[str, ...]
    isthing: bool
    #: never present in training splits; reserved for open-vocabulary evaluation
    heldout: bool = False
    #: what the class looks like, in words ("a blue diagonally striped shape"): the vocabulary of the
    #: ``open_vocab_described`` task names a class by these instead of its synonyms when it has any
    descriptions: tuple[str, ...] = ()

    def __post_init__(self):
        if not self.synonyms:
            raise ValueError(f"class {self.id} ({self.name!r}) has no synonyms")
        for kind, words in (("synonym", self.synonyms), ("description", self.descriptions)):
            for s in words:
                if not s or s != s.strip() or "," in s:
                    raise ValueError(f"class {self.id}: {kind} {s!r} must be non-empty, trimmed, without commas")


@dataclass(frozen=True)
class Sampling:
    """How joint training draws from the dataset (docs/model.md §10)."""

    #: copies of the dataset per epoch of the concatenated training set; 0 = not trained on
    repeat_factor: float = 1.0
    #: image: one image; pseudo_video: 2 copies of an image with independent crops; clip: frames of a video
    mode: SamplingMode = "image"
    #: random resize range, as a ratio of the training crop
    resize_range: tuple[float, ...] = (0.8, 2.0)
    clip_length: int = 2
    clip_interval: int = 2

    def __post_init__(self):
        if self.repeat_factor < 0:
            raise ValueError(f"sampling.repeat_factor must be >= 0, got {self.repeat_factor}")
        if len(self.resize_range) != 2 or not 0 < self.resize_range[0] <= self.resize_range[1]:
            raise ValueError(
                f"sampling.resize_range must be [low, high] with 0 < low <= high, got {list(self.resize_range)}"
            )
        if self.clip_length < 1 or self.clip_interval < 1:
            raise ValueError("sampling.clip_length and sampling.clip_interval must be >= 1")


@dataclass(frozen=True)
class DatasetEntry:
    name: str
    description: str
    format: Format
    modality: Literal["image", "video"]
    root: str
    #: split -> {key: path under root}; a list of paths are alternatives: the split's files are those of the first
    #: alternative whose every path exists (e.g. a converter's two namings: cityscapes-panoptic)
    splits: dict[str, dict[str, str | tuple[str, ...]]]
    tasks: tuple[Task, ...]
    evaluators: tuple[Evaluator, ...]
    classes: tuple[ClassInfo, ...] = ()
    #: every segment is one anonymous "object" (COCO-SAM, DAVIS); classes must be empty
    class_agnostic: bool = False
    #: the entry reads another entry's files (COCO-SAM reads COCO panoptic)
    derived_from: str | None = None
    sampling: Sampling = field(default_factory=Sampling)
    #: the test-time resize (long side, short side limits, keep ratio) of the released OMG-Seg configs for this
    #: dataset (COCO 1333 x 800, Cityscapes 2048 x 1024, ADE20K 2560 x 640, videos 1280 x 736;
    #: ``seg/configs/_base_/datasets/*.py``); empty: the model's own ``test_size``
    test_size: tuple[int, ...] = ()
    #: encoding details a reader must know (label offsets, ignore values, ...)
    notes: str = ""
    homepage: str = ""
    #: the YAML file this entry came from (set by the loader)
    source: str = field(default="", compare=False)

    def __post_init__(self):
        if self.test_size and (len(self.test_size) != 2 or min(self.test_size) < 32):
            raise ValueError(f"test_size must be [long side, short side], each >= 32, got {list(self.test_size)}")

    # ---- lookups ---------------------------------------------------------------
    @property
    def thing_classes(self) -> tuple[ClassInfo, ...]:
        return tuple(c for c in self.classes if c.isthing)

    @property
    def stuff_classes(self) -> tuple[ClassInfo, ...]:
        return tuple(c for c in self.classes if not c.isthing)

    @property
    def class_by_id(self) -> dict[int, ClassInfo]:
        return {c.id: c for c in self.classes}

    def env_var(self) -> str:
        """The environment variable that overrides :attr:`root`."""
        return "OMG_ROOT_" + re.sub(r"[^0-9A-Za-z]", "_", self.name).upper()

    def resolve_root(self, override: str | None = None, environ: Mapping[str, str] | None = None) -> str:
        """The dataset root URI: ``override``, else ``$OMG_ROOT_<NAME>``, else :attr:`root` expanded."""
        env = os.environ if environ is None else environ
        if override:
            return override
        if env.get(self.env_var()):
            return env[self.env_var()]
        return expand_vars(self.root, env)

    def split_paths(self, split: str, root: str | None = None) -> dict[str, str]:
        """Absolute URIs of a split's files, e.g. ``{"images": "s3://b/coco/train2017", ...}``: with alternatives
        (lists), those of the first alternative whose every path exists (else the first alternative's, which the
        readers then report missing)."""
        if split not in self.splits:
            raise KeyError(f"dataset {self.name!r} has no split {split!r} (splits: {', '.join(self.splits)})")
        base = self.resolve_root(root)
        paths = self.splits[split]
        count = max((len(v) for v in paths.values() if isinstance(v, tuple)), default=0)
        if not count:
            return {k: join_uri(base, v) for k, v in paths.items()}
        from omg.utils import io as uio

        options = [
            {k: join_uri(base, v[i] if isinstance(v, tuple) else v) for k, v in paths.items()} for i in range(count)
        ]
        varying = [k for k, v in paths.items() if isinstance(v, tuple)]
        return next((o for o in options if all(uio.exists(o[k]) for k in varying)), options[0])


_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def expand_vars(text: str, environ: Mapping[str, str]) -> str:
    """Expand ``${VAR}`` and ``${VAR:-default}``; an unset ``${VAR}`` without default is an error."""

    def repl(m: re.Match) -> str:
        name, default = m.group(1), m.group(2)
        value = environ.get(name)
        if value:
            return value
        if default is not None:
            return default
        raise KeyError(f"environment variable {name} is not set (used in {text!r})")

    return _VAR.sub(repl, text)


def join_uri(base: str, rel: str) -> str:
    if not rel or rel == ".":
        return base
    if "://" in rel or rel.startswith("/"):
        return rel
    return base.rstrip("/") + "/" + rel


def _check_entry(entry: DatasetEntry, source: str, stem: str) -> None:
    def fail(key: str, msg: str):
        raise CatalogError(source, key, msg)

    if entry.name != stem:
        fail("name", f"must equal the file name without .yaml ({stem!r}), got {entry.name!r}")
    if not entry.root.strip():
        fail("root", "must not be empty")
    if not entry.splits:
        fail("splits", "must name at least one split")
    required, optional = FORMAT_SPLIT_KEYS[entry.format]
    for split, paths in entry.splits.items():
        missing = sorted(required - set(paths))
        if missing:
            fail(f"splits.{split}.{missing[0]}", f"missing (format {entry.format} needs {', '.join(sorted(required))})")
        extra = sorted(set(paths) - required - optional)
        if extra:
            fail(
                f"splits.{split}.{extra[0]}",
                f"unknown key for format {entry.format} (allowed: {', '.join(sorted(required | optional))})",
            )
        lists = {k: len(v) for k, v in paths.items() if isinstance(v, tuple)}
        if len(set(lists.values())) > 1 or 0 in lists.values():
            fail(f"splits.{split}", f"alternatives (lists) must all have the same, non-zero length, got {lists}")
    if not entry.tasks:
        fail("tasks", "must name at least one task")
    wrong = [t for t in entry.tasks if t in (VIDEO_TASKS if entry.modality == "image" else IMAGE_TASKS)]
    if wrong:
        fail("tasks", f"task {wrong[0]!r} does not fit modality {entry.modality!r}")
    for ev in entry.evaluators:
        if EVALUATOR_TASK[ev] not in entry.tasks:
            fail("evaluators", f"evaluator {ev!r} scores task {EVALUATOR_TASK[ev]!r}, which is not in tasks")
    if entry.class_agnostic and entry.classes:
        fail("classes", "a class_agnostic dataset has no classes")
    if not entry.class_agnostic and not entry.classes:
        fail("classes", "missing (or set class_agnostic: true)")
    seen: set[int] = set()
    for i, c in enumerate(entry.classes):
        if c.id in seen:
            fail(f"classes.{i}.id", f"duplicate class id {c.id}")
        seen.add(c.id)


def load_entry(path: str | Path) -> DatasetEntry:
    """Load and validate one catalog file."""
    path = Path(path)
    source = str(path)
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise CatalogError(source, "", yaml_problem(err)) from err
    except OSError as err:
        raise CatalogError(source, "", f"cannot read: {err}") from err
    if not isinstance(data, dict):
        raise CatalogError(source, "", f"expected a mapping at the top level, got {type(data).__name__}")
    if "source" in data:
        raise CatalogError(source, "source", "unknown key (set by the loader)")
    try:
        entry = from_dict(DatasetEntry, data, source)
    except SchemaError as err:
        raise CatalogError(err.source, err.key, err.message) from None
    entry = dataclasses.replace(entry, source=source)
    _check_entry(entry, source, path.stem)
    return entry


def user_catalog_dir(environ: Mapping[str, str] | None = None) -> Path:
    """Where `omg catalog add` writes: the first ``$OMG_CATALOG_DIR`` folder, else ``<runs dir>/catalog``."""
    env = os.environ if environ is None else environ
    extra = [p for p in env.get("OMG_CATALOG_DIR", "").split(os.pathsep) if p]
    return Path(extra[0]) if extra else Path(runs_dir("catalog", environ=env))


def catalog_dirs(environ: Mapping[str, str] | None = None) -> list[Path]:
    """The built-in catalog, then ``$OMG_CATALOG_DIR`` folders (else ``<runs dir>/catalog`` if it exists)."""
    env = os.environ if environ is None else environ
    dirs = [DEFAULT_CATALOG_DIR]
    extra = env.get("OMG_CATALOG_DIR", "")
    dirs += [Path(p) for p in extra.split(os.pathsep) if p]
    if not extra and user_catalog_dir(env).is_dir():
        dirs.append(user_catalog_dir(env))
    return dirs


def load_catalog(dirs: list[Path] | None = None) -> dict[str, DatasetEntry]:
    """Every entry of the catalog directories, by name (later directories override earlier ones)."""
    entries: dict[str, DatasetEntry] = {}
    for d in dirs if dirs is not None else catalog_dirs():
        if not d.is_dir():
            raise CatalogError(str(d), "", "catalog directory does not exist")
        for path in sorted(d.glob("*.yaml")):
            entry = load_entry(path)
            entries[entry.name] = entry
    for entry in entries.values():
        if entry.derived_from is not None and entry.derived_from not in entries:
            raise CatalogError(entry.source, "derived_from", f"names no catalog entry ({entry.derived_from!r})")
    return dict(sorted(entries.items()))


def get_entry(name: str, catalog: dict[str, DatasetEntry] | None = None) -> DatasetEntry:
    catalog = load_catalog() if catalog is None else catalog
    if name not in catalog:
        raise KeyError(f"no dataset named {name!r} in the catalog; known: {', '.join(catalog)}")
    return catalog[name]
