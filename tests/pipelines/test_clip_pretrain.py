"""omg_platform/pipelines/clip_pretrain.py, the CLIP pretraining stage as a Ray Train job: its input checks here;
the job itself (2 DDP workers, tracked in MLflow, its weights loadable as ``model.pretrained``, a finished output
not trained again) is the quick demo's CLIP stage, checked in tests/test_cli.py."""

from __future__ import annotations

from omg_platform.pipelines.clip_pretrain import main


def test_missing_captions_are_said_before_ray_starts(tmp_path, capsys):
    assert main(["--root", str(tmp_path), "--no-mlflow"]) == 2
    assert "omg data captions --root" in capsys.readouterr().err.strip().splitlines()[-1]


def test_captions_without_regions_are_said_before_ray_starts_when_the_region_loss_is_on(tmp_path, capsys):
    from omg.data.captions import CaptionOptions, generate_captions

    generate_captions(str(tmp_path), opts=CaptionOptions(num_train=4, num_val=2, image_size=32), progress=False)
    (tmp_path / "captions/panoptic_train.json").unlink()  # captions of version 3: no regions
    assert main(["--root", str(tmp_path), "--no-mlflow", "--region-weight", "1"]) == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert "panoptic_train.json" in last and "captions without regions" in last
