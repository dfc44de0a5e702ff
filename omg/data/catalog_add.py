"""`omg catalog add`: your own dataset, in an official format, as a validated catalog entry in one command.

    entry, path = add_dataset("my-coco", "coco_panoptic", "s3://bucket/my-coco")

Finds the splits on disk (the file names each format's tools write), reads the class list from the
annotation files (ids, names, thing/stuff; synonyms default to the name), writes
``<catalog dir>/<name>.yaml`` (``$OMG_CATALOG_DIR``, else ``<runs>/catalog``, which the catalog loads
too) and checks it by loading it back with the catalog's own loader. Formats: ``coco_panoptic``,
``ade20k_panoptic`` and ``cityscapes_panoptic`` (their converters' outputs), ``coco_instances``,
``youtube_vis``, ``davis``, ``vipseg``.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import yaml

from omg.data.catalog import (
    CatalogError,
    ClassInfo,
    DatasetEntry,
    Sampling,
    catalog_dirs,
    load_entry,
    user_catalog_dir,
)
from omg.utils import io as uio
from omg.utils.typed import to_dict


class _Dumper(yaml.SafeDumper):
    """YAML like the files in omg/datasets_catalog/: short lists and mappings on one line."""


def _Flow(value):  # noqa: N802 - reads as a type in the code above
    return _FlowList(value) if isinstance(value, (list, tuple)) else _FlowDict(value)


class _FlowList(list):
    pass


class _FlowDict(dict):
    pass


_Dumper.add_representer(_FlowList, lambda d, v: d.represent_sequence("tag:yaml.org,2002:seq", v, flow_style=True))
_Dumper.add_representer(_FlowDict, lambda d, v: d.represent_mapping("tag:yaml.org,2002:map", v, flow_style=True))

FORMATS = (
    "coco_panoptic",
    "ade20k_panoptic",
    "cityscapes_panoptic",
    "coco_instances",
    "youtube_vis",
    "davis",
    "vipseg",
)
_NAME = re.compile(r"^[a-z0-9][a-z0-9_.-]*$")
_IMAGE_EXT = (".jpg", ".jpeg", ".png")


def _jsons(root: str) -> list[str]:
    """JSON files directly in ``root`` and in ``root/annotations`` (relative paths, sorted)."""
    out = []
    for sub in ("", "annotations"):
        folder = uio.join(root, sub) if sub else root
        if uio.exists(folder):
            out += [f"{sub}/{n}" if sub else n for n in uio.listdir(folder) if n.endswith(".json")]
    return sorted(out)


def _split_name(stem: str, prefixes: tuple[str, ...]) -> str:
    for p in prefixes:
        if stem.startswith(p):
            stem = stem[len(p) :]
            break
    return stem.strip("_-") or "train"


def _find_images(root: str, file_name: str, hints: list[str]) -> str:
    """The folder (relative to root) that holds ``file_name``: the first of ``hints`` that does, else the first
    folder found within two levels below root."""
    for h in hints:
        if uio.exists(uio.join(root, h, file_name) if h else uio.join(root, file_name)):
            return h or "."
    fs, base = uio.fs_and_path(root)
    for depth in (1, 2):
        for path in sorted(fs.glob(f"{base.rstrip('/')}/{'/'.join(['*'] * depth)}/{file_name}")):
            return path[len(base.rstrip("/")) + 1 :].rsplit("/", 1)[0]
    raise ValueError(
        f"{root}: cannot find the folder holding {file_name!r} (an image of the annotation file); "
        "pass the split's files with --split NAME:images=FOLDER,..."
    )


def _discover_coco(root: str, kind: str) -> dict[str, dict[str, str]]:
    word = "panoptic" if kind == "panoptic" else "instances"
    splits = {}
    for rel in _jsons(root):
        stem = rel.rsplit("/", 1)[-1][:-5]
        if word not in stem:  # panoptic_val2017, ade20k_panoptic_val, cityscapes_panoptic_val_trainId, ...
            continue
        doc = uio.read_json(uio.join(root, rel))
        anns = doc.get("annotations") or []
        if kind == "panoptic" and not (anns and "segments_info" in anns[0]):
            continue
        if kind == "instances" and not (anns and "segmentation" in anns[0]):
            continue
        split = _split_name(stem.split(word, 1)[1], ())
        images = doc.get("images") or []
        if not images:
            continue
        folder = rel.rsplit("/", 1)[0] if "/" in rel else ""
        long = {"val": "validation", "train": "training"}.get(split, split)
        hints = [split, f"images/{split}", f"images/{long}", "images", ""]
        paths = {"images": _find_images(root, images[0]["file_name"], hints)}
        if kind == "panoptic":
            masks = f"{folder}/{stem}" if folder else stem
            if not uio.exists(uio.join(root, masks)):
                raise ValueError(
                    f"{uio.join(root, rel)}: no PNG folder {masks!r} beside it (COCO panoptic keeps the "
                    "PNGs in a folder named like the JSON)"
                )
            paths.update(panoptic_json=rel, panoptic_masks=masks)
        else:
            paths["instances_json"] = rel
        splits[split] = paths
    return splits


def _discover_cityscapes(root: str) -> dict[str, dict[str, str]]:
    """cityscapesScripts' createPanopticImgs output: gtFine/cityscapes_panoptic_<split>[_trainId].json + PNG folder;
    images in leftImg8bit/<split>/<city>/ (trainId files preferred)."""
    splits = {}
    for rel in _jsons(uio.join(root, "gtFine")):
        stem = rel.rsplit("/", 1)[-1][:-5]
        if not stem.startswith("cityscapes_panoptic_"):
            continue
        split = stem[len("cityscapes_panoptic_") :].replace("_trainId", "")
        if split in splits and not stem.endswith("_trainId"):
            continue
        splits[split] = {
            "images": f"leftImg8bit/{split}",
            "panoptic_json": f"gtFine/{rel}",
            "panoptic_masks": f"gtFine/{rel[:-5]}",
        }
    return splits


def _discover_ytvis(root: str) -> dict[str, dict[str, str]]:
    splits = {}
    candidates = [(rel, None) for rel in _jsons(root)]
    for split in ("train", "valid", "val", "test"):
        if uio.exists(uio.join(root, split, "instances.json")):  # YouTube-VIS 2021: <split>/instances.json
            candidates.append((f"{split}/instances.json", split))
    for rel, split in candidates:
        doc = uio.read_json(uio.join(root, rel))
        if not isinstance(doc.get("videos"), list):  # an unlabelled split (valid.json: no annotations) counts too
            continue
        split = split or _split_name(rel.rsplit("/", 1)[-1][:-5], ("instances_", "instances"))
        videos = doc["videos"]
        if not videos:
            continue
        first = videos[0]["file_names"][0]
        hints = [f"{split}/JPEGImages", "JPEGImages", f"{split}", ""]
        splits[split] = {"frames": _find_images(root, first, hints), "annotations": rel}
    return splits


def _discover_davis(root: str) -> dict[str, dict[str, str]]:
    frames = next((f for f in ("JPEGImages/480p", "JPEGImages") if uio.exists(uio.join(root, f))), None)
    anns = next((f for f in ("Annotations/480p", "Annotations") if uio.exists(uio.join(root, f))), None)
    if frames is None or anns is None:
        raise ValueError(f"{root}: a DAVIS root holds JPEGImages/480p and Annotations/480p")
    splits = {}
    for sets in ("ImageSets/2017", "ImageSets"):
        if uio.exists(uio.join(root, sets)):
            for n in uio.listdir(uio.join(root, sets)):
                if n.endswith(".txt"):
                    splits[n[:-4]] = {"frames": frames, "annotations": anns, "imageset": f"{sets}/{n}"}
            break
    return splits or {"train": {"frames": frames, "annotations": anns}}


def _discover_vipseg(root: str) -> dict[str, dict[str, str]]:
    splits = {}
    masks = next((f for f in ("panomasksRGB", "panoptic_gt_VIPSeg") if uio.exists(uio.join(root, f))), None)
    for rel in _jsons(root):
        stem = rel.rsplit("/", 1)[-1][:-5]
        if stem.startswith("panoptic_gt_VIPSeg_") and masks:
            splits[_split_name(stem, ("panoptic_gt_VIPSeg_",))] = {
                "frames": "images",
                "panoptic_masks": masks,
                "panoptic_json": rel,
            }
    if not splits and uio.exists(uio.join(root, "panomasks")):
        splits["train"] = {"frames": "images", "panoptic_masks": "panomasks"}
    return splits


def discover_splits(fmt: str, root: str) -> dict[str, dict[str, str]]:
    """Splits of a dataset root in format ``fmt``, as the format's own tools name the files."""
    found = {
        "coco_panoptic": lambda: _discover_coco(root, "panoptic"),
        "ade20k_panoptic": lambda: _discover_coco(root, "panoptic"),
        "cityscapes_panoptic": lambda: _discover_cityscapes(root),
        "coco_instances": lambda: _discover_coco(root, "instances"),
        "youtube_vis": lambda: _discover_ytvis(root),
        "davis": lambda: _discover_davis(root),
        "vipseg": lambda: _discover_vipseg(root),
    }[fmt]()
    if not found:
        raise ValueError(
            f"{root}: found no {fmt} split (annotation files named as the format's tools write them); "
            "pass the split's files with --split NAME:KEY=PATH,..."
        )
    return found


def read_classes(fmt: str, root: str, paths: dict[str, str]) -> tuple[ClassInfo, ...]:
    """The class list of an annotation file; () for a class-agnostic format (DAVIS)."""
    if fmt == "davis":
        return ()
    key = {
        "coco_panoptic": "panoptic_json",
        "ade20k_panoptic": "panoptic_json",
        "cityscapes_panoptic": "panoptic_json",
        "coco_instances": "instances_json",
        "youtube_vis": "annotations",
        "vipseg": "panoptic_json",
    }[fmt]
    if key not in paths:
        raise ValueError(f"format {fmt}: the class list comes from the {key} file; this split has none")
    doc = uio.read_json(paths[key] if paths[key].startswith("/") or "://" in paths[key] else uio.join(root, paths[key]))
    out = []
    for c in doc.get("categories") or []:
        name = " ".join(str(c["name"]).replace(",", " ").split())
        out.append(ClassInfo(id=int(c["id"]), name=name, synonyms=(name,), isthing=bool(c.get("isthing", 1))))
    if not out:
        raise ValueError(f"{paths[key]}: no 'categories' to take the classes from")
    return tuple(sorted(out, key=lambda c: c.id))


TASKS = {
    "coco_panoptic": ("panoptic", "semantic"),
    "ade20k_panoptic": ("panoptic", "semantic"),
    "cityscapes_panoptic": ("panoptic", "semantic"),
    "coco_instances": ("instance",),
    "youtube_vis": ("vis",),
    "davis": ("vos",),
    "vipseg": ("vps", "vss"),
}
EVALUATORS = {
    "coco_panoptic": ("pq", "miou"),
    "ade20k_panoptic": ("pq", "miou"),
    "cityscapes_panoptic": ("pq", "miou"),
    "coco_instances": ("coco_segm",),
    "youtube_vis": ("ytvis_ap",),
    "davis": ("davis_jf",),
    "vipseg": ("vpq", "stq", "vspw_miou"),
}
SAMPLING = {
    "coco_panoptic": Sampling(1.0, "pseudo_video"),
    "ade20k_panoptic": Sampling(1.0, "pseudo_video"),
    "cityscapes_panoptic": Sampling(1.0, "pseudo_video"),
    "coco_instances": Sampling(1.0, "pseudo_video"),
    "youtube_vis": Sampling(1.0, "clip"),
    "davis": Sampling(1.0, "clip"),
    "vipseg": Sampling(1.0, "clip"),
}
# (every format's entry is sampled when you fine-tune on it by name: the built-in davis-17's 0.0 is the paper's
# choice, which evaluates DAVIS without training on it)


def add_dataset(
    name: str,
    fmt: str,
    root: str,
    out_dir: str | None = None,
    description: str = "",
    splits: dict[str, dict[str, str]] | None = None,
    overwrite: bool = False,
) -> tuple[DatasetEntry, Path]:
    """Write and check ``<out_dir>/<name>.yaml``; -> (the entry as the catalog loads it, its path)."""
    if not _NAME.match(name):
        raise ValueError(f"dataset name {name!r}: lowercase letters, digits, '-', '_' and '.' only")
    if fmt not in FORMATS:
        raise ValueError(f"format {fmt!r}: `omg catalog add` knows {', '.join(FORMATS)}")
    if not uio.exists(root):
        raise FileNotFoundError(f"{root}: no such dataset root")
    root = root if "://" in root else str(Path(root).resolve())
    splits = splits or discover_splits(fmt, root)
    classes = read_classes(fmt, root, next(iter(splits.values())))
    entry = DatasetEntry(
        name=name,
        description=description or f"{name} ({fmt}, added with `omg catalog add`)",
        format=fmt,
        modality="video" if fmt in ("youtube_vis", "davis", "vipseg") else "image",
        root=root,
        splits=splits,
        tasks=TASKS[fmt],
        evaluators=EVALUATORS[fmt],
        classes=classes,
        class_agnostic=not classes,
        sampling=SAMPLING[fmt],
    )
    folder = Path(out_dir) if out_dir else user_catalog_dir()
    path = folder / f"{name}.yaml"
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path}: exists (--overwrite replaces it)")
    if any((d / f"{name}.yaml").exists() for d in catalog_dirs() if d.resolve() != folder.resolve()):
        raise ValueError(
            f"a catalog entry named {name!r} exists already (`omg catalog show {name}`); choose another name"
        )
    doc = to_dict(entry)
    for key in ("source", "classes", "derived_from", "notes", "homepage"):
        doc.pop(key, None)
    for key in ("tasks", "evaluators"):
        doc[key] = _Flow(doc[key])
    doc["sampling"] = _Flow(doc["sampling"])
    text = f"# {name}: added by `omg catalog add {name} --format {fmt} --root {root}`\n" + yaml.dump(
        doc, Dumper=_Dumper, sort_keys=False, allow_unicode=True, width=120
    )
    if classes:  # one line per class, as in omg/datasets_catalog/

        def line(c: ClassInfo) -> str:
            flow = _Flow({"id": c.id, "name": c.name, "synonyms": list(c.synonyms), "isthing": c.isthing})
            return f"  - {yaml.dump(flow, Dumper=_Dumper, width=1000, sort_keys=False).strip()}\n"

        text += "classes:\n" + "".join(line(c) for c in classes)
    uio.write_bytes(str(path), text.encode())
    try:
        return load_entry(path), path
    except CatalogError:
        os.remove(path)
        raise
