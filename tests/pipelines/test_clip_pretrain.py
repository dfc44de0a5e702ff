"""pipelines/clip_pretrain.py: bad input is said before Ray starts. The job itself (2 DDP workers, tracked in MLflow,
its weights loadable as ``model.pretrained``, a finished output not trained again) is checked on the quick demo's
clip stage, which runs it as a user does (tests/test_cli.py ``_check_the_clip_stage``)."""

from __future__ import annotations

from pipelines.clip_pretrain import main


def test_missing_captions_are_said_before_ray_starts(tmp_path, capsys):
    assert main(["--root", str(tmp_path), "--no-mlflow"]) == 2
    assert "omg data captions --root" in capsys.readouterr().err.strip().splitlines()[-1]
