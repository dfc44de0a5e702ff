"""omg_platform/pipelines/clip_pretrain.py: the CLIP pretraining stage as a Ray Train job (2 DDP workers on the
test's local Ray),
tracked in MLflow, its weights loadable as ``model.pretrained``; a finished output is not trained again."""

from __future__ import annotations

import json

import pytest

from omg.data.captions import CaptionOptions, generate_captions
from omg_platform.pipelines.clip_pretrain import main


@pytest.mark.slow
def test_two_workers_pretrain_track_in_mlflow_and_the_weights_load(ray_local, tmp_path, capsys):
    import mlflow

    from omg.modeling.model import ModelConfig, build_model

    generate_captions(str(tmp_path / "shapes"), opts=CaptionOptions(num_train=40, num_val=12), progress=False)
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    out = str(tmp_path / "clip.pt")
    args = [
        "--root",
        str(tmp_path / "shapes"),
        "--steps",
        "4",
        "--batch-size",
        "8",
        "--workers",
        "2",
        "--cpus-per-worker",
        "1",
        "--out",
        out,
        "--tracking-uri",
        uri,
    ]
    assert main(args) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["weights"] == out and result["val_after"]["n"] == 12
    mlflow.set_tracking_uri(uri)
    run = mlflow.get_run(result["mlflow_run_id"])
    assert run.info.status == "FINISHED" and run.data.params["clip.workers"] == "2"
    assert [m.step for m in mlflow.MlflowClient().get_metric_history(run.info.run_id, "train/loss")] == [1, 2, 3, 4]
    assert "val/image_to_text" in run.data.metrics
    model = build_model(ModelConfig.tiny(pretrained=out))  # what the segmentation model's config takes
    assert model.config.pretrained == out

    assert main(args) == 0  # the same settings: not trained again
    assert "already trained with these settings" in capsys.readouterr().err


def test_missing_captions_are_said_before_ray_starts(tmp_path, capsys):
    assert main(["--root", str(tmp_path), "--no-mlflow"]) == 2
    assert "omg data captions --root" in capsys.readouterr().err.strip().splitlines()[-1]
