"""Every catalog entry loads and holds the real class lists; malformed files get errors naming file and key."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from omg.data import synthetic
from omg.data.catalog import (
    DEFAULT_CATALOG_DIR,
    CatalogError,
    expand_vars,
    get_entry,
    load_catalog,
    load_entry,
)

PAPER_DATASETS = {
    # name: (classes, things, stuff)
    "coco-panoptic": (133, 80, 53),
    "coco-sam": (0, 0, 0),
    "cityscapes-panoptic": (19, 8, 11),
    "ade20k-panoptic": (150, 100, 50),
    "vipseg": (124, 58, 66),
    "youtube-vis-2019": (40, 40, 0),
    "youtube-vis-2021": (40, 40, 0),
    "vspw": (124, 58, 66),
    "davis-17": (0, 0, 0),
}


def test_every_entry_loads():
    catalog = load_catalog()
    assert set(PAPER_DATASETS) <= set(catalog)
    assert {"omg-shapes", "omg-shapes-sam", "omg-shapes-vis", "omg-shapes-vps", "omg-shapes-vos"} <= set(catalog)
    for name, entry in catalog.items():
        assert entry.source.endswith(f"{name}.yaml")
        assert entry.tasks and entry.evaluators and entry.splits


@pytest.mark.parametrize("name", sorted(PAPER_DATASETS))
def test_real_class_lists(name):
    entry = get_entry(name)
    n, th, st = PAPER_DATASETS[name]
    assert (len(entry.classes), len(entry.thing_classes), len(entry.stuff_classes)) == (n, th, st)
    assert entry.class_agnostic == (n == 0)


def test_known_class_facts():
    coco = get_entry("coco-panoptic").class_by_id
    assert coco[1].name == "person" and coco[90].name == "toothbrush" and coco[200].name == "rug-merged"
    assert not coco[184].isthing and "tree" in coco[184].synonyms
    city = get_entry("cityscapes-panoptic").class_by_id
    assert city[0].name == "road" and city[11].name == "person" and city[11].isthing and not city[10].isthing
    ade = get_entry("ade20k-panoptic").class_by_id
    assert ade[0].name == "wall" and ade[12].name == "person" and ade[149].name == "flag"
    yt19 = get_entry("youtube-vis-2019").class_by_id
    assert yt19[1].name == "person" and yt19[40].synonyms == ("tennis racket",)
    assert get_entry("coco-sam").derived_from == "coco-panoptic"


def test_paper_repeat_factors():
    rf = {n: get_entry(n).sampling.repeat_factor for n in PAPER_DATASETS}
    assert rf["coco-panoptic"] == rf["coco-sam"] == 1.0
    assert rf["youtube-vis-2019"] == rf["youtube-vis-2021"] == rf["vipseg"] == rf["cityscapes-panoptic"] == 15.0
    assert rf["ade20k-panoptic"] == rf["davis-17"] == 0.0
    assert get_entry("coco-sam").sampling.resize_range == (0.1, 2.0)


def test_omg_shapes_catalog_matches_generator():
    gen = {c.id: (c.name, c.synonyms, c.isthing, c.heldout) for c in synthetic.CLASSES}
    for name in ("omg-shapes", "omg-shapes-vps"):
        cat = {c.id: (c.name, c.synonyms, c.isthing, c.heldout) for c in get_entry(name).classes}
        assert cat == gen
    vis = {c.id for c in get_entry("omg-shapes-vis").classes}
    assert vis == {c.id for c in synthetic.TRAIN_THINGS}


def test_root_resolution(monkeypatch):
    entry = get_entry("coco-panoptic")
    assert entry.resolve_root(environ={}) == "data/coco"
    assert entry.resolve_root(environ={"OMG_DATA_DIR": "s3://bucket/ds"}) == "s3://bucket/ds/coco"
    assert entry.resolve_root(environ={"OMG_ROOT_COCO_PANOPTIC": "gs://x/coco"}) == "gs://x/coco"
    assert entry.resolve_root("/mnt/coco", environ={"OMG_ROOT_COCO_PANOPTIC": "gs://x"}) == "/mnt/coco"
    monkeypatch.setenv("OMG_ROOT_COCO_PANOPTIC", "memory://coco")
    assert entry.split_paths("val")["panoptic_json"] == "memory://coco/annotations/panoptic_val2017.json"
    with pytest.raises(KeyError, match="no split 'test'"):
        entry.split_paths("test")


def test_expand_vars():
    assert expand_vars("${A}/x", {"A": "a"}) == "a/x"
    assert expand_vars("${B:-dflt}/x", {}) == "dflt/x"
    with pytest.raises(KeyError, match="C is not set"):
        expand_vars("${C}", {})


def test_extra_catalog_dir_overrides(tmp_path, monkeypatch):
    text = (DEFAULT_CATALOG_DIR / "davis-17.yaml").read_text().replace("DAVIS 2017 semi", "My DAVIS semi")
    (tmp_path / "davis-17.yaml").write_text(text)
    monkeypatch.setenv("OMG_CATALOG_DIR", str(tmp_path))
    assert get_entry("davis-17", load_catalog()).description.startswith("My DAVIS")


# ---- malformed files --------------------------------------------------------------------


def _base() -> dict:
    return yaml.safe_load((DEFAULT_CATALOG_DIR / "omg-shapes.yaml").read_text())


def _write(tmp_path: Path, data: dict, name: str = "omg-shapes") -> Path:
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def _mutate(data: dict, dotted: str, value) -> dict:
    keys = dotted.split(".")
    node = data
    for k in keys[:-1]:
        node = node[int(k)] if isinstance(node, list) else node[k]
    if value is _DELETE:
        del node[keys[-1]]
    else:
        node[int(keys[-1]) if isinstance(node, list) else keys[-1]] = value
    return data


_DELETE = object()


@pytest.mark.parametrize(
    "dotted,value,key,fragment",
    [
        ("colour", "red", "colour", "unknown key"),
        ("format", _DELETE, "format", "missing required key"),
        ("format", "coco_json", "format", "expected one of"),
        ("modality", 3, "modality", "expected one of"),
        ("tasks", ["panoptic", "depth"], "tasks.1", "expected one of"),
        ("tasks", ["vis"], "tasks", "does not fit modality"),
        ("evaluators", ["pq", "ytvis_ap"], "evaluators", "scores task 'vis'"),
        ("splits.train.images", 3, "splits.train.images", "expected a string"),
        ("splits.train.panoptic_json", _DELETE, "splits.train.panoptic_json", "missing"),
        ("splits.train.frames", "x", "splits.train.frames", "unknown key for format"),
        ("classes.1.id", 1, "classes.1.id", "duplicate class id"),
        ("classes.0.isthing", "yes", "classes.0.isthing", "expected true/false"),
        ("classes.0.synonyms", [], "classes.0", "no synonyms"),
        ("classes.0.synonyms", ["a, b"], "classes.0", "without commas"),
        ("classes", [], "classes", "class_agnostic"),
        ("sampling.repeat_factor", -1, "sampling", "repeat_factor must be >= 0"),
        ("sampling.resize_range", [2.0, 1.0], "sampling", "resize_range"),
        ("name", "other", "name", "must equal the file name"),
        ("root", "  ", "root", "must not be empty"),
    ],
)
def test_malformed_entries(tmp_path, dotted, value, key, fragment):
    path = _write(tmp_path, _mutate(_base(), dotted, value))
    with pytest.raises(CatalogError) as info:
        load_entry(path)
    assert info.value.source == str(path)
    assert info.value.key == key, str(info.value)
    assert fragment in str(info.value)
    assert str(path) in str(info.value)


def test_not_yaml_and_not_a_mapping(tmp_path):
    bad = tmp_path / "x.yaml"
    bad.write_text("name: [unclosed\n")
    with pytest.raises(CatalogError, match="not valid YAML"):
        load_entry(bad)
    bad.write_text("- 1\n- 2\n")
    with pytest.raises(CatalogError, match="expected a mapping"):
        load_entry(bad)


def test_derived_from_must_exist(tmp_path):
    data = yaml.safe_load((DEFAULT_CATALOG_DIR / "omg-shapes-sam.yaml").read_text())
    data["derived_from"] = "nothing-here"
    _write(tmp_path, data, "omg-shapes-sam")
    with pytest.raises(CatalogError, match="derived_from"):
        load_catalog([tmp_path])
