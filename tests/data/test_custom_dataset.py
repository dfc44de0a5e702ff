"""Your own dataset in four commands: `omg catalog add` on a COCO-format dataset that omg-shapes' generator did not
make (panopticapi's sample_data), `omg preprocess`, a short fine-tune from a checkpoint with the new vocabulary
(`model.init_from`), `omg eval`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml

from omg.data.catalog import load_catalog
from omg_platform.cli import main as omg_main
from tests import FIXTURES, ROOT

FIX = FIXTURES / "official"
FINETUNE = str(ROOT / "omg_platform/pipelines/configs/finetune_demo.yaml")


@pytest.fixture()
def user_catalog(tmp_path, monkeypatch) -> Path:
    folder = tmp_path / "catalog"
    monkeypatch.setenv("OMG_CATALOG_DIR", str(folder))
    return folder


def test_catalog_add_finds_splits_and_classes_and_writes_a_valid_entry(user_catalog, capsys):
    assert (
        omg_main(["catalog", "add", "my-coco", "--format", "coco_panoptic", "--root", str(FIX / "coco-panopticapi")])
        == 0
    )
    out = capsys.readouterr().out
    assert f"wrote {user_catalog / 'my-coco.yaml'}" in out and "133 classes (80 things, 53 stuff)" in out
    assert "omg preprocess --dataset my-coco" in out and "model.init_from=" in out
    entry = load_catalog()["my-coco"]
    assert entry.splits == {
        "examples": {
            "images": "input_images",
            "panoptic_json": "panoptic_examples.json",
            "panoptic_masks": "panoptic_examples",
        }
    }
    assert entry.classes[0].name == "person" and entry.classes[0].synonyms == ("person",) and entry.classes[0].isthing
    assert omg_main(["data", "validate", "--dataset", "my-coco"]) == 0
    # again: refused, then replaced with --overwrite; a built-in name is refused
    assert (
        omg_main(["catalog", "add", "my-coco", "--format", "coco_panoptic", "--root", str(FIX / "coco-panopticapi")])
        == 2
    )
    assert "exists" in capsys.readouterr().err
    assert (
        omg_main(
            [
                "catalog",
                "add",
                "my-coco",
                "--format",
                "coco_panoptic",
                "--root",
                str(FIX / "coco-panopticapi"),
                "--overwrite",
            ]
        )
        == 0
    )
    assert omg_main(["catalog", "add", "vipseg", "--format", "vipseg", "--root", str(FIX / "vipseg/VIPSeg_720P")]) == 2
    assert "exists already" in capsys.readouterr().err


@pytest.mark.parametrize(
    "fmt,root,splits,classes",
    [
        ("vipseg", "vipseg/VIPSeg_720P", ["train", "val"], 124),
        ("ade20k_panoptic", "ade20k/ADEChallengeData2016", ["train", "val"], 150),
        ("cityscapes_panoptic", "cityscapes", ["val"], 19),
        ("coco_panoptic", "cityscapes/gtFine", None, None),  # images nowhere near: told to name the split's files
    ],
)
def test_catalog_add_on_other_official_layouts(user_catalog, capsys, fmt, root, splits, classes):
    rc = omg_main(["catalog", "add", "mine", "--format", fmt, "--root", str(FIX / root)])
    if splits is None:
        assert rc == 2 and "--split NAME:images=FOLDER" in capsys.readouterr().err
        return
    assert rc == 0, capsys.readouterr().err
    entry = load_catalog()["mine"]
    assert sorted(entry.splits) == splits and len(entry.classes) == classes
    assert omg_main(["data", "validate", "--dataset", "mine"]) == 0


def test_catalog_add_with_explicit_split_paths(user_catalog, capsys):
    root = FIX / "cityscapes"
    split = (
        "val:images=leftImg8bit/val,panoptic_json=gtFine/cityscapes_panoptic_val_trainId.json,"
        "panoptic_masks=gtFine/cityscapes_panoptic_val_trainId"
    )
    assert (
        omg_main(["catalog", "add", "my-city", "--format", "coco_panoptic", "--root", str(root), "--split", split]) == 0
    )
    entry = load_catalog()["my-city"]
    assert entry.splits["val"]["panoptic_json"] == "gtFine/cityscapes_panoptic_val_trainId.json"
    assert [c.name for c in entry.classes][:3] == ["road", "sidewalk", "building"]


def test_video_layouts_added_to_the_catalog_are_trainable_as_written(
    user_catalog, ray_local, tiny_shapes, tmp_path, capsys
):
    """`omg catalog add` on a DAVIS layout gives an entry that fine-tuning samples (repeat factor 1, not the
    built-in davis-17's 0: the paper only evaluates on it), and on a YouTube-VIS layout it also finds the
    unlabelled valid.json (videos, no annotations), the split a user predicts on."""
    import shutil

    from omg.data.ingest import BatchBuilder, DatasetSpec, IngestConfig, PlanDataset
    from omg.data.shards import read_manifest

    assert omg_main(["catalog", "add", "my-davis", "--format", "davis", "--root", f"{tiny_shapes}/videos/train"]) == 0
    entry = load_catalog()["my-davis"]
    assert entry.sampling.repeat_factor == 1.0 and entry.sampling.mode == "clip" and list(entry.splits) == ["train"]
    assert omg_main(["preprocess", "--dataset", "my-davis", "--out", str(tmp_path / "shards"), "--quiet"]) == 0
    uri = str(tmp_path / "shards/my-davis/train")
    builder = BatchBuilder(
        IngestConfig(crop_size=(64, 64), batch_size=2, datasets=(DatasetSpec("my-davis", uri, entry.sampling),))
    )
    plan = PlanDataset(builder, 0)
    assert read_manifest(uri)["rows"] == 3 and len(plan) > 0, "fine-tuning by name samples the new entry"
    batch = plan[0]
    assert batch["dataset"] == "my-davis" and len(batch["images"]) == 2

    root = tmp_path / "ytvis"
    shutil.copytree(f"{tiny_shapes}/videos/train/JPEGImages", root / "train/JPEGImages")
    shutil.copytree(f"{tiny_shapes}/videos/val/JPEGImages", root / "valid/JPEGImages")
    shutil.copy(f"{tiny_shapes}/videos/train/instances.json", root / "train.json")
    valid = json.loads(Path(f"{tiny_shapes}/videos/val/instances.json").read_text())
    valid.pop("annotations")
    (root / "valid.json").write_text(json.dumps(valid))
    capsys.readouterr()
    assert omg_main(["catalog", "add", "my-vis", "--format", "youtube_vis", "--root", str(root)]) == 0, (
        capsys.readouterr().err
    )
    vis = load_catalog()["my-vis"]
    assert vis.splits == {
        "train": {"frames": "train/JPEGImages", "annotations": "train.json"},
        "valid": {"frames": "valid/JPEGImages", "annotations": "valid.json"},
    }


def _init_checkpoint(path: Path, **changes) -> str:
    from omg.modeling.checkpoint import save_checkpoint
    from omg.modeling.model import ModelConfig, build_model

    model_section = yaml.safe_load(Path(FINETUNE).read_text())["model"]
    torch.manual_seed(0)
    save_checkpoint(build_model(ModelConfig(**{**model_section, **changes})), str(path), {"test_size": [128, 128]})
    return str(path)


def test_init_from_must_have_the_configs_architecture(tmp_path, capsys):
    from omg_platform.pipelines.joint_train import main as train_main

    init = _init_checkpoint(tmp_path / "other.pt", hidden_dim=32)
    rc = train_main(["--config", FINETUNE, "data.datasets=[{name: omg-shapes}]", f"model.init_from={init}"])
    err = capsys.readouterr().err
    assert rc == 2 and "model.hidden_dim is 64 here, 32 in the checkpoint" in err


def test_init_from_may_unfreeze_the_same_clip_but_not_change_it(tmp_path):
    """Fine-tuning may learn a CLIP the checkpoint kept frozen (tiny_convnext -> tiny_convnext_learned: the same
    network, the same weights fit; the finetune grid's learned trial); another network is refused."""
    from omg.modeling.checkpoint import config_differences, same_architecture
    from omg.modeling.model import ModelConfig

    model_section = yaml.safe_load(Path(FINETUNE).read_text())["model"]
    assert model_section["variant"] == "tiny_convnext"
    init = _init_checkpoint(tmp_path / "frozen.pt")
    assert config_differences(ModelConfig(**{**model_section, "variant": "tiny_convnext_learned"}), init) == []
    assert config_differences(ModelConfig(**{**model_section, "variant": "tiny_vit"}), init) == [
        "model.variant is 'tiny_vit' here, 'tiny_convnext' in the checkpoint"
    ]
    assert same_architecture("ViT-L-14", "ViT-L-14-learned") and not same_architecture("tiny_vit", "tiny_convnext")
