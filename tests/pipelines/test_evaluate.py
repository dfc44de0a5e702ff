"""omg_platform/pipelines/evaluate.py: one Ray task per (dataset, split, task), metrics and artifacts in MLflow,
reruns skip finished pairs, a failing pair does not stop the others."""

from __future__ import annotations

import argparse
import json
import shutil

import pytest
import torch

from omg.modeling.checkpoint import save_checkpoint
from omg.modeling.model import ModelConfig, build_model
from omg_platform.pipelines.evaluate import main as evaluate_main
from tests.helpers import LABEL_SPACE


@pytest.fixture(scope="module")
def tiny_ckpt(tmp_path_factory) -> str:
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("evalckpt") / "tiny.pt"
    save_checkpoint(
        build_model(ModelConfig.tiny()),
        str(path),
        {"label_space": LABEL_SPACE, "test_size": [64, 64], "mlflow_run_id": "train-run-123"},
    )
    return str(path)


def test_every_omg_shapes_task_lands_in_mlflow(ray_local, tiny_shapes, tiny_ckpt, tmp_path, capsys):
    import mlflow

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    args = [
        "--checkpoint",
        tiny_ckpt,
        "--root",
        tiny_shapes,
        "--out",
        str(tmp_path / "eval"),
        "--limit",
        "2",
        "--tracking-uri",
        uri,
        "--quiet",
    ]
    for d in ("omg-shapes", "omg-shapes-sam", "omg-shapes-vis", "omg-shapes-vps", "omg-shapes-vos"):
        args += ["--dataset", d]
    assert evaluate_main(args) == 0
    out = capsys.readouterr().out
    for pair in (
        "omg-shapes/val/panoptic",
        "omg-shapes/val/instance",
        "omg-shapes/val/semantic",
        "omg-shapes/val_ov/open_vocab",
        "omg-shapes/val_ov/open_vocab_described",
        "omg-shapes/val/prompt_label",
        "omg-shapes/val_ov/open_vocab_prompt_label",
        "omg-shapes-sam/val/interactive",
        "omg-shapes-vis/val/vis",
        "omg-shapes-vps/val/vps",
        "omg-shapes-vps/val/vss",
        "omg-shapes-vos/val/vos",
    ):
        assert pair in out
    mlflow.set_tracking_uri(uri)
    runs = mlflow.search_runs(experiment_names=["eval"], output_format="list")
    assert len(runs) == 1
    run = runs[0]
    m = run.data.metrics
    for key in (
        "eval/omg-shapes/PQ",
        "eval/omg-shapes/AP",
        "eval/omg-shapes/mIoU",
        "eval/omg-shapes/OV_PQ_heldout",
        "eval/omg-shapes/OVD_PQ_heldout",
        "eval/omg-shapes/label_acc",
        "eval/omg-shapes/label_acc_things",
        "eval/omg-shapes/OV_label_acc_heldout",
        "eval/omg-shapes-sam/mIoU",
        "eval/omg-shapes-sam/NoC_85",
        "eval/omg-shapes-vis/AP",
        "eval/omg-shapes-vps/VPQ",
        "eval/omg-shapes-vps/STQ",
        "eval/omg-shapes-vps/mIoU",
        "eval/omg-shapes-vos/JF-Mean",
    ):
        assert key in m, key
    assert run.data.tags["omg.train_run_id"] == "train-run-123" and run.info.status == "FINISHED"
    artifacts = {a.path for a in mlflow.MlflowClient().list_artifacts(run.info.run_id, "eval/omg-shapes/val/panoptic")}
    assert {
        "eval/omg-shapes/val/panoptic/metrics.json",
        "eval/omg-shapes/val/panoptic/tables.json",
        "eval/omg-shapes/val/panoptic/overlays",
    } <= artifacts
    # a rerun skips every pair evaluated for this checkpoint
    assert evaluate_main([a for a in args if a != "--quiet"] + ["--no-mlflow"]) == 0
    err = capsys.readouterr().err
    assert err.count("already evaluated for this checkpoint") == 12 and "12 pairs, 0 to run" in err
    assert len(list((tmp_path / "eval").rglob("result.json"))) == 12
    # other conventions are another evaluation: only that pair runs again, and its result records them
    vps = [a for a in args if a not in ("--quiet", "--dataset") and not a.startswith("omg-shapes")]
    # (and data-parallel: its 2 videos in 2 chunks, a Ray task each, merged by a third)
    stable = vps + ["--no-mlflow", "--pair", "omg-shapes-vps:val:vps", "--track-ids", "stable"]
    assert evaluate_main(stable + ["--chunks", "2"]) == 0
    assert "1 pairs, 1 to run, CPU tasks, 2 chunks each" in capsys.readouterr().err
    result = json.loads(next((tmp_path / "eval").rglob("omg-shapes-vps/val/vps/result.json")).read_text())
    assert len(result["nodes"]) == 1 and "VPQ" in result["metrics"]
    assert result["tables"]["options"] == {
        "distractors": False,
        "ensemble": "released",
        "postprocess_at": "original",
        "track_ids": "stable",
        "prompt_labels": "queries",
        "test_size": [],
        "zoom_in": "model",
    }
    # a result written before the conventions were recorded is not taken for one made with them
    path = next((tmp_path / "eval").rglob("omg-shapes-vps/val/vps/result.json"))
    old = json.loads(path.read_text())
    del old["tables"]["options"]
    path.write_text(json.dumps(old))
    assert evaluate_main(vps + ["--no-mlflow", "--pair", "omg-shapes-vps:val:vps", "--track-ids", "stable"]) == 0
    assert "1 pairs, 1 to run" in capsys.readouterr().err


def test_an_earlier_result_stands_only_for_the_same_limit_and_conventions(tmp_path):
    """A result of the first 2 items is not the whole split's (it once was: `omg eval` without --limit took the
    quick demo's --limit 2 results), nor one made with other conventions."""
    from omg.evaluation.evaluators import EvalOptions
    from omg_platform.pipelines.evaluate import earlier_result

    released = EvalOptions()
    assert earlier_result(str(tmp_path), None, released) is None
    doc = {"metrics": {"PQ": 50.0}, "limit": 2, "tables": {"options": released.to_dict()}}
    (tmp_path / "result.json").write_text(json.dumps(doc))
    assert earlier_result(str(tmp_path), 2, released) == doc
    assert earlier_result(str(tmp_path), None, released) is None and earlier_result(str(tmp_path), 4, released) is None
    assert earlier_result(str(tmp_path), 2, EvalOptions(track_ids="stable")) is None


def test_a_test_size_option_overrides_the_datasets_and_the_models_while_it_evaluates(tmp_path):
    """``--test-size LONG SHORT``: the evaluation resizes to it instead of the catalog's test size or the model's
    (the predictor's own setting is back afterwards); it is one of the conventions an earlier result must share."""
    from omg.data.catalog import get_entry
    from omg.evaluation.evaluators import EvalOptions
    from omg.evaluation.runner import PairSpec
    from omg.inference.predictor import OMGPredictor
    from omg.utils.options import add_options, options_from_args
    from omg_platform.pipelines.evaluate import earlier_result

    parser = argparse.ArgumentParser()
    add_options(parser, EvalOptions)
    opts = options_from_args(EvalOptions, parser.parse_args(["--test-size", "256", "192"]))
    assert opts.test_size == (256, 192) and options_from_args(EvalOptions, parser.parse_args([])).test_size == ()
    with pytest.raises(ValueError, match="test_size must be"):
        EvalOptions(test_size=(256, 16))
    predictor = OMGPredictor(build_model(ModelConfig.tiny()), {"label_space": LABEL_SPACE, "test_size": [64, 64]})
    entry = get_entry("coco-panoptic")  # the catalog's test size: the released 1333 x 800
    for options, during in ((EvalOptions(), (1333, 800)), (opts, (256, 192))):
        spec = PairSpec("unused.pt", entry, "val", "panoptic", str(tmp_path), str(tmp_path), "cpu", 0, options)
        with spec.evaluator(predictor) as evaluator:
            assert evaluator.ctx.predictor.test_size == during
        assert predictor.test_size == (64, 64)
    doc = {"limit": None, "tables": {"options": EvalOptions().to_dict()}}
    (tmp_path / "result.json").write_text(json.dumps(doc))
    assert earlier_result(str(tmp_path), None, EvalOptions()) == json.loads(json.dumps(doc)), "JSON round trip"
    assert earlier_result(str(tmp_path), None, opts) is None


def test_a_zoom_in_option_overrides_the_checkpoints_while_it_evaluates(tmp_path):
    """``--zoom-in off|on``: the interactive corrections on the whole image or with RITM's zoom-in whatever the
    checkpoint records (``model``, the default, keeps it); the predictor's own setting is back afterwards, and it is
    one of the conventions an earlier result must share."""
    from omg.data.catalog import get_entry
    from omg.evaluation.evaluators import EvalOptions
    from omg.evaluation.runner import PairSpec
    from omg.inference.predictor import OMGPredictor
    from omg.utils.zoom import ZoomIn
    from omg_platform.pipelines.evaluate import earlier_result

    recorded = ZoomIn(min_crop=0.3)
    meta = {"label_space": LABEL_SPACE, "test_size": [64, 64], "zoom_in": {"min_crop": 0.3}}
    predictor = OMGPredictor(build_model(ModelConfig.tiny(refinement=True)), meta)
    assert predictor.zoom == recorded
    entry = get_entry("omg-shapes-sam")
    for option, during in (("model", recorded), ("off", None), ("on", ZoomIn())):
        spec = PairSpec(
            "unused.pt",
            entry,
            "val",
            "interactive",
            str(tmp_path),
            str(tmp_path),
            "cpu",
            0,
            EvalOptions(zoom_in=option),
        )
        with spec.evaluator(predictor) as evaluator:
            assert evaluator.ctx.predictor.zoom == during
        assert predictor.zoom == recorded
    predictor.zoom = None  # off, whatever the checkpoint says; and so it stays after an evaluation
    with PairSpec("unused.pt", entry, "val", "interactive", str(tmp_path), str(tmp_path), "cpu", 0).evaluator(
        predictor
    ):
        pass
    assert predictor.zoom is None
    with pytest.raises(ValueError, match="zoom_in"):
        EvalOptions(zoom_in="maybe")
    doc = {"limit": None, "tables": {"options": EvalOptions().to_dict()}}
    (tmp_path / "result.json").write_text(json.dumps(doc))
    assert earlier_result(str(tmp_path), None, EvalOptions(zoom_in="off")) is None


def test_evaluation_options_default_to_the_released_conventions():
    from omg.data.catalog import get_entry
    from omg.evaluation.evaluators import EvalOptions, vocabulary_of
    from omg.inference.predictor import OMGPredictor

    opts = EvalOptions()
    assert (opts.distractors, opts.ensemble, opts.postprocess_at, opts.track_ids) == (
        False,
        "released",
        "original",
        "released",
    )
    assert [opts.open_vocab(t) for t in ("panoptic", "open_vocab", "open_vocab_described", "vis")] == [
        False,
        True,
        True,
        False,
    ]
    assert EvalOptions(ensemble="auto").open_vocab("panoptic") == "auto"
    with pytest.raises(ValueError, match="track_ids must be one of released, stable"):
        EvalOptions(track_ids="query")
    entry = get_entry("omg-shapes-vis")  # things only: the training vocabulary also has stuff classes
    predictor = OMGPredictor(build_model(ModelConfig.tiny()), {"label_space": LABEL_SPACE})
    own, ids = vocabulary_of(entry, False)
    assert ids == [c.id for c in entry.classes if not c.heldout], "the dataset's own classes only (released)"
    more, more_ids = vocabulary_of(entry, False, predictor)
    assert more.names[: len(own)] == own.names and len(more) > len(own) and set(more_ids[len(own) :]) == {-1}
    assert "sky" in {s for n in more.names[len(own) :] for s in n}, "the training stuff the dataset lacks"
    # a descriptive vocabulary names a class by its catalog descriptions where it has any (the held-out shapes)
    shapes = get_entry("omg-shapes")
    names, _ = vocabulary_of(shapes, True)
    described, ids = vocabulary_of(shapes, True, described=True)
    hexagon = ids.index(5)
    assert described.names[hexagon] == ("blue diagonally striped shape", "blue slanted striped shape")
    assert names.names[hexagon][0] == "hexagon" and described.names[0] == names.names[0] == (
        "circle",
        "disc",
        "round shape",
    )


def test_prompt_labels_are_scored_per_clicked_segment(tiny_shapes, tmp_path):
    """prompt_label: every non-crowd segment clicked at its centre, its mask labelled by the CLIP; the accuracy is
    the share of segments whose label is their class (checked against the predictor's own labels here)."""
    import numpy as np

    from omg.data.catalog import get_entry
    from omg.data.decode import decode_masks
    from omg.data.formats import get_reader
    from omg.evaluation.evaluators import EvalContext, EvalOptions, PromptLabelEvaluator, centre_prompts
    from omg.inference.media import load_image
    from omg.inference.predictor import OMGPredictor
    from omg.utils import io as uio

    torch.manual_seed(0)
    pred = OMGPredictor(build_model(ModelConfig.tiny()), {"label_space": LABEL_SPACE, "test_size": [64, 64]})
    entry = get_entry("omg-shapes")
    reader = get_reader(entry, "val", tiny_shapes)
    ev = PromptLabelEvaluator(EvalContext(pred, entry, reader, str(tmp_path), EvalOptions(), 0))
    right, total = 0, 0
    for it in reader.items()[:3]:
        ev.process(it)
        sample = reader.load(it)
        masks = decode_masks(sample)[:, 0]
        keep = [j for j, g in enumerate(sample.segments) if not g.iscrowd and masks[j].any()]
        pred.set_image(load_image(uio.join(reader.paths["images"], it["image"])))
        labels = pred.predict("interactive", points=centre_prompts(pred, masks[keep]), vocabulary=ev.vocab).labels
        right += sum(ev.cat_ids[k] == sample.segments[j].category_id for j, k in zip(keep, labels))
        total += len(keep)
    s = ev.evaluate()
    assert s.metrics["labelled_segments"] == total > 0
    assert np.isclose(s.metrics["label_acc"], 100.0 * right / total)
    assert sum(v["segments"] for v in s.tables["per_class"].values()) == total

    # a CLIP that calls everything sky: right on exactly the sky segments, never on a thing
    answer = pred.predict

    def everything_is_sky(task, **kwargs):
        r = answer(task, **kwargs)
        r.labels = np.full(len(r.masks), ev.cat_ids.index(11))
        return r

    pred.predict = everything_is_sky
    sky = PromptLabelEvaluator(EvalContext(pred, entry, reader, str(tmp_path), EvalOptions(), 0))
    cats = []
    for it in reader.items()[:3]:
        sky.process(it)
        sample = reader.load(it)
        masks = decode_masks(sample)[:, 0]
        cats += [g.category_id for j, g in enumerate(sample.segments) if not g.iscrowd and masks[j].any()]
    m = sky.evaluate().metrics
    stuff = [c for c in cats if c >= 11]
    assert cats.count(11) > 0 and len(stuff) > cats.count(11), "the test needs sky and other stuff"
    assert np.isclose(m["label_acc"], 100.0 * cats.count(11) / len(cats)) and m["label_acc_things"] == 0.0
    assert np.isclose(m["label_acc_stuff"], 100.0 * cats.count(11) / len(stuff))
    assert "label_acc_heldout" not in m  # the closed-set task: no held-out class in its vocabulary


def test_open_vocab_prompt_labels_score_held_out_shapes_apart(tiny_shapes, tmp_path):
    """open_vocab_prompt_label: the clicks of prompt_label on val_ov with every class in the vocabulary, held-out
    ones too; OV_label_acc_heldout is the share of held-out shapes labelled right, OV_label_acc_seen_things that of
    the trained things. A CLIP that calls everything a hexagon is right on the hexagons only."""
    import numpy as np

    from omg.data.catalog import get_entry
    from omg.data.decode import decode_masks
    from omg.data.formats import get_reader
    from omg.evaluation.evaluators import EVALUATORS, EvalContext, EvalOptions
    from omg.evaluation.runner import default_pairs
    from omg.inference.predictor import OMGPredictor

    entry = get_entry("omg-shapes")
    assert ("val_ov", "open_vocab_prompt_label") in default_pairs(entry)
    torch.manual_seed(0)
    pred = OMGPredictor(build_model(ModelConfig.tiny()), {"label_space": LABEL_SPACE, "test_size": [64, 64]})
    reader = get_reader(entry, "val_ov", tiny_shapes)
    ev = EVALUATORS["open_vocab_prompt_label"](EvalContext(pred, entry, reader, str(tmp_path), EvalOptions(), 0))
    hexagon = next(c for c in entry.classes if c.name == "hexagon")
    assert hexagon.heldout and hexagon.id in ev.cat_ids  # the held-out classes are in the vocabulary
    answer = pred.predict

    def everything_is_a_hexagon(task, **kwargs):
        r = answer(task, **kwargs)
        r.labels = np.full(len(r.masks), ev.cat_ids.index(hexagon.id))
        return r

    pred.predict = everything_is_a_hexagon
    cats = []
    for it in reader.items():
        ev.process(it)
        sample = reader.load(it)
        masks = decode_masks(sample)[:, 0]
        cats += [g.category_id for j, g in enumerate(sample.segments) if not g.iscrowd and masks[j].any()]
    m = ev.evaluate().metrics
    heldout = [c for c in cats if c in {k.id for k in entry.classes if k.heldout}]
    assert cats.count(hexagon.id) > 0 and len(heldout) > cats.count(hexagon.id), "the test needs both held-out shapes"
    assert np.isclose(m["OV_label_acc_heldout"], 100.0 * cats.count(hexagon.id) / len(heldout))
    assert m["OV_label_acc_seen_things"] == 0.0 and m["OV_label_acc_stuff"] == 0.0
    assert m["OV_labelled_segments"] == len(cats)  # apart from prompt_label's label_acc in one tracking run


def test_a_failing_pair_is_reported_not_fatal(ray_local, tiny_shapes, tiny_ckpt, tmp_path, capsys):
    broken = tmp_path / "broken"
    shutil.copytree(tiny_shapes, broken)
    (broken / "videos/val/instances.json").write_text("{")
    rc = evaluate_main(
        [
            "--checkpoint",
            tiny_ckpt,
            "--root",
            str(broken),
            "--out",
            str(tmp_path / "eval"),
            "--limit",
            "1",
            "--no-mlflow",
            "--quiet",
            "--pair",
            "omg-shapes-vis:val:vis",
            "--pair",
            "omg-shapes:val:semantic",
        ]
    )
    out = capsys.readouterr().out
    assert rc == 1 and "FAILED omg-shapes-vis/val/vis" in out and "omg-shapes/val/semantic: mIoU" in out


def test_bad_arguments(tiny_ckpt, capsys):
    assert evaluate_main(["--checkpoint", tiny_ckpt]) == 2
    assert "nothing to evaluate" in capsys.readouterr().err
    assert evaluate_main(["--checkpoint", tiny_ckpt, "--pair", "omg-shapes:val:vis"]) == 2
    assert "cannot be evaluated on format coco_panoptic" in capsys.readouterr().err
    assert evaluate_main(["--checkpoint", "/nonexistent.pt", "--dataset", "omg-shapes"]) == 2
    assert "does not exist" in capsys.readouterr().err
