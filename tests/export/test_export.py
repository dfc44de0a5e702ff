"""Export with verified parity: every exported graph equals the eager module (max |difference| <= 1e-4, fp32), on
random inputs, on other vocabulary and prompt counts (the dynamic axes) and on an omg-shapes image; the exported
runtime behind the predictor gives the PyTorch results (identical segment maps, PQ difference 0.0)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from omg.export.graphs import ExportSpec, example_inputs, export, graph_modules
from omg.export.runtime import ExportedModel, _Graph
from omg.inference.media import load_image
from omg.inference.objects import ObjectPrompt
from omg.inference.predictor import OMGPredictor
from omg.modeling.checkpoint import load_checkpoint
from omg.modeling.model import ModelConfig, build_model
from tests.helpers import LABEL_SPACE

pytestmark = pytest.mark.slow  # exports take ~1.5 min in all; `make test` (CI) runs them

TOL = 1e-4
SIZE = (64, 64)  # the omg-shapes images' padded input at the checkpoints' test size 64


#: the fixture's torch-export is made by `omg export` with a vocabulary (checked in the CLI test)
CLI_VOCABULARY = ["circle", "stuff:sky"]


@pytest.fixture(scope="module")
def exported(interactive_checkpoint, tmp_path_factory):
    """The trained tiny checkpoint (tiny ConvNeXt, sampled location content), exported in both formats: ONNX by
    :func:`export`, torch-export by the command line (`omg export`, in this process)."""
    from omg_platform.cli import main

    model, meta = load_checkpoint(interactive_checkpoint)
    out = {fmt: tmp_path_factory.mktemp(fmt) for fmt in ("onnx", "torch-export")}
    export(model, meta, out["onnx"], "onnx", SIZE, checkpoint=interactive_checkpoint)
    vocabulary = [a for name in CLI_VOCABULARY for a in ("--vocabulary", name)]
    assert (
        main(
            [
                "export",
                "--checkpoint",
                interactive_checkpoint,
                "--format",
                "torch-export",
                "--out",
                str(out["torch-export"]),
                "--image-size",
                *map(str, SIZE),
                *vocabulary,
            ]
        )
        == 0
    )
    return interactive_checkpoint, out


def _max_diff(a, b) -> float:
    return max(float((x.float() - y.float()).abs().max()) if x.numel() else 0.0 for x, y in zip(a, b))


def _check_graphs(model, folder, fmt, image=None):
    modules = graph_modules(model, SIZE)
    spec = ExportSpec.read(folder)
    graphs = {g: _Graph(folder, s.file, fmt, None) for g, s in spec.graphs.items()}
    diffs = {}
    for seed, (c, k, p) in enumerate([(3, 2, 2), (9, 5, 7), (1, 1, 1)]):  # the traced sizes, then other dynamic sizes
        inputs = example_inputs(model, SIZE, num_classes=c, num_synonyms=k, num_prompts=p, seed=seed)
        if image is not None and seed == 0:
            inputs["image_encoder"] = (image,)
            with torch.no_grad():
                enc = modules["image_encoder"](image)
            inputs["object_decoder"] = (*enc[:4], *inputs["object_decoder"][4:])
            inputs["prompt_decoder"] = (*enc[:4], *inputs["prompt_decoder"][4:])
        for name, module in modules.items():
            with torch.no_grad():
                ref = module(*inputs[name])
            got = graphs[name](*inputs[name])
            assert [tuple(g.shape) for g in got] == [tuple(r.shape) for r in ref], name
            diffs[(name, c, k, p)] = _max_diff(got, ref)
    assert max(diffs.values()) <= TOL, diffs
    return diffs


@pytest.mark.parametrize("fmt", ["onnx", "torch-export"])
def test_every_graph_equals_the_eager_model(exported, tiny_shapes, fmt):
    ckpt, folders = exported
    model, _ = load_checkpoint(ckpt)
    # an omg-shapes image at the predictor's input (resized to the test size, padded with the pixel mean)
    pred = OMGPredictor(model, {"test_size": [64, 64]})
    first = json.loads(open(f"{tiny_shapes}/annotations/panoptic_val.json").read())["images"][0]["file_name"]
    batch, _ = pred.core.prepare([load_image(f"{tiny_shapes}/images/val/{first}")])
    _check_graphs(model.eval(), folders[fmt], fmt, batch.cpu())


def test_the_tiny_vit_variant_exports_with_parity(tmp_path):
    torch.manual_seed(0)
    model = build_model(ModelConfig.tiny("tiny_vit")).eval()
    export(model, {"label_space": LABEL_SPACE, "test_size": [64, 64]}, tmp_path, "onnx", SIZE)
    _check_graphs(model, tmp_path, "onnx")


@pytest.mark.parametrize("fmt", ["onnx", "torch-export"])
def test_the_exported_runtime_gives_the_pytorch_results(exported, tiny_shapes, fmt):
    """Panoptic, instance, semantic (open vocabulary with the CLIP ensemble) and clicks on omg-shapes val: identical
    segment maps and labels (so PQ differs by exactly 0.0), scores within float noise."""
    ckpt, folders = exported
    m1, meta = load_checkpoint(ckpt)
    m2, _ = load_checkpoint(ckpt)
    eager, graphs = OMGPredictor(m1, meta), OMGPredictor(ExportedModel(m2, folders[fmt]), meta)
    gt = json.loads(open(f"{tiny_shapes}/annotations/panoptic_val.json").read())
    for info in gt["images"][:4]:
        image = load_image(f"{tiny_shapes}/images/val/{info['file_name']}")
        for p in (eager, graphs):
            p.set_image(image)
        a, b = eager.panoptic(), graphs.panoptic()
        assert np.array_equal(a.panoptic, b.panoptic) and [s.label for s in a.segments] == [s.label for s in b.segments]
        assert np.allclose([s.score for s in a.segments], [s.score for s in b.segments], atol=1e-4)
        ia, ib = eager.instance(), graphs.instance()
        assert np.array_equal(ia.masks, ib.masks) and np.array_equal(ia.labels, ib.labels)
        sa, sb = (p.semantic(vocabulary=["hexagon", "circle", "stuff:sky"], open_vocab=True) for p in (eager, graphs))
        assert np.array_equal(sa.labels, sb.labels)
        clicks = [[16, 16], [40, 30]]
        ca, cb = (
            p.interactive(points=clicks, boxes=[[2, 2, 60, 60]], vocabulary=["circle", "sky"]) for p in (eager, graphs)
        )
        assert np.array_equal(ca.masks, cb.masks) and ca.names == cb.names
        assert np.allclose(ca.scores, cb.scores, atol=1e-4)
        # the fixture's model has refinement: positive and negative clicks (replayed), a box, a previous mask
        objects = [
            ObjectPrompt([[16, 16], [30, 30], [20, 40]], [1, 0, 1]),
            ObjectPrompt([[40, 30]], [0], [2, 2, 60, 60]),
        ]
        ra, rb = (p.interactive(objects=objects) for p in (eager, graphs))
        assert np.array_equal(ra.masks, rb.masks) and np.allclose(ra.logits, rb.logits, atol=1e-4)
    assert graphs.model.stats["graph_calls"] > 0, "the graphs ran"


def test_export_cli_and_predict_runtime_write_the_same_files(exported, tiny_shapes, tmp_path, capsys):
    """omg export (the fixture's torch-export, with a vocabulary; its ONNX graphs come from the function behind the
    command, which takes three times as long in that format), then omg predict --runtime onnx and --runtime
    torch-export: the panoptic PNGs byte for byte and the JSON (scores within 1e-4) equal the PyTorch runtime's.
    (The commands run in this process: `omg_platform.cli.main`.)"""
    from omg_platform.cli import main

    ckpt, folders = exported
    out = folders["torch-export"]
    spec = json.loads((out / "export.json").read_text())
    assert spec["image_size"] == [64, 64] and set(spec["graphs"]) == {
        "image_encoder",
        "object_decoder",
        "prompt_decoder",
    }
    assert spec["vocabulary"] and np.load(out / "text_embeddings.npy").shape[0] == len(CLI_VOCABULARY)
    images = f"{tiny_shapes}/images/val"
    written = {}
    for runtime, folder in (("torch", None), ("onnx", folders["onnx"]), ("torch-export", out)):
        args = [
            "predict",
            "--checkpoint",
            ckpt,
            "--input",
            images,
            "--task",
            "panoptic",
            "--out",
            str(tmp_path / runtime),
            "--no-overlays",
            "--runtime",
            runtime,
        ]
        args += ["--exported", str(folder)] if folder else []
        assert main(args) == 0
        written[runtime] = {
            p.relative_to(tmp_path / runtime): p.read_bytes()
            for p in sorted((tmp_path / runtime).rglob("*"))
            if p.is_file()
        }
    for runtime in ("onnx", "torch-export"):
        assert written["torch"].keys() == written[runtime].keys()
        for name, data in written["torch"].items():
            if name.suffix != ".json":
                assert data == written[runtime][name], f"{runtime}: {name} differs"  # the PNGs, byte for byte
                continue
            a, b = json.loads(data), json.loads(written[runtime][name])
            scores = [[s.pop("score") for s in ann["segments_info"]] for doc in (a, b) for ann in doc["annotations"]]
            assert a == b, name  # ids, categories, areas, boxes
            half = len(scores) // 2
            assert np.allclose(sum(scores[:half], []), sum(scores[half:], []), atol=1e-4), "scores within noise"
    capsys.readouterr()
    assert (
        main(
            [
                "predict",
                "--checkpoint",
                ckpt,
                "--input",
                images,
                "--task",
                "vis",
                "--out",
                str(tmp_path / "x"),
                "--runtime",
                "onnx",
                "--exported",
                str(folders["onnx"]),
            ]
        )
        == 2
    )
    assert "vis needs --runtime torch" in capsys.readouterr().err.strip().splitlines()[-1]


def test_inputs_larger_than_the_export_and_clips_are_refused(exported):
    ckpt, folders = exported
    model, meta = load_checkpoint(ckpt)
    graphs = ExportedModel(model, folders["onnx"])
    with pytest.raises(
        ValueError,
        match=r"the input is 96x64 \(padded\) but .* at most 64x64: export again with "
        r"--image-size 96 64",
    ):
        graphs.extract(torch.zeros(1, 3, 96, 64))
    with pytest.raises(ValueError, match="not clips of 2 frames"):
        graphs.extract(torch.zeros(1, 2, 3, 64, 64))
    other = build_model(ModelConfig.tiny("tiny_vit"))
    with pytest.raises(ValueError, match="exported from a tiny_convnext_learned model, the checkpoint is tiny_vit"):
        ExportedModel(other, folders["onnx"])
