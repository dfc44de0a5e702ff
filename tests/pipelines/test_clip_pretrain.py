"""omg_platform/pipelines/clip_pretrain.py, the CLIP pretraining stage as a Ray Train job: its input checks here;
the job itself (2 DDP workers, tracked in MLflow, its weights loadable as ``model.pretrained``, a finished output
not trained again) is the quick demo's CLIP stage, checked in tests/test_cli.py."""

from __future__ import annotations

from omg_platform.pipelines.clip_pretrain import main


def test_missing_captions_are_said_before_ray_starts(tmp_path, capsys):
    assert main(["--root", str(tmp_path), "--no-mlflow"]) == 2
    assert "omg data captions --root" in capsys.readouterr().err.strip().splitlines()[-1]
