"""Inference: post-processing on hand-made logits, video association, the open-vocabulary ensemble,
the predictor (caching, every task, bad inputs), result files and `omg predict`."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from omg.cli import main
from omg.data.masks import rle_decode
from omg.data.validate import validate_files
from omg.inference import open_vocab as ov
from omg.inference.postprocess import instance_inference, panoptic_inference, semantic_inference
from omg.inference.predictor import OMGPredictor, Vocabulary
from omg.inference.video import associate, clip_length, split_clips, vos_from_proposals
from omg.modeling.checkpoint import save_checkpoint
from omg.modeling.model import ModelConfig, build_model

BIG = 20.0


def _masks(*regions, size=(8, 8)):
    """Mask logits: +BIG inside each region (y0, y1, x0, x1), -BIG outside."""
    out = torch.full((len(regions), *size), -BIG)
    for k, (y0, y1, x0, x1) in enumerate(regions):
        out[k, y0:y1, x0:x1] = BIG
    return out


def _logits(*rows):
    """Rows of (label, prob) over C = 3 classes + background: the logit of ``label`` is set so that
    its softmax probability is ``prob`` and the other classes share the rest equally."""
    out = []
    for label, prob in rows:
        rest = (1 - prob) / 3
        p = torch.full((4,), rest)
        p[label] = prob
        out.append(torch.log(p))
    return torch.stack(out)


ISTHING = torch.tensor([True, True, False])  # classes 0, 1 things; class 2 stuff


# ------------------------------------------------------------------------------ panoptic

def test_panoptic_by_hand():
    logits = _logits((0, 0.9), (2, 0.8), (2, 0.7), (3, 0.9), (1, 0.6))
    masks = _masks((0, 4, 0, 4), (4, 8, 0, 8), (0, 4, 4, 8), (0, 8, 0, 8), (0, 2, 0, 2))
    pan, segs = panoptic_inference(logits, masks, ISTHING)
    # q3 is background (dropped); q4's mask lies inside q0's, where q0 wins -> area ratio 0 < 0.8 -> dropped;
    # q1 and q2 are the same stuff class -> merged into one segment
    assert [(s.label, s.isthing, s.area) for s in segs] == [(0, True, 16), (2, False, 48)]
    assert (pan[:4, :4] == segs[0].id).all() and (pan[4:] == segs[1].id).all() and (pan[:4, 4:] == segs[1].id).all()
    assert segs[0].score == pytest.approx(0.9, abs=1e-5)


def test_panoptic_void_threshold_and_overlap_rule():
    logits = _logits((0, 0.9), (1, 0.85))
    masks = _masks((0, 8, 0, 5), (0, 8, 3, 8))  # q1 loses columns 3-4 to the higher-scored q0
    pan, segs = panoptic_inference(logits, masks, ISTHING)
    # q1 wins 24 of its 40 pixels = 0.6 < 0.8 -> dropped, its pixels stay VOID
    assert [s.label for s in segs] == [0] and (pan[:, 5:] == 0).all()
    pan, segs = panoptic_inference(logits, masks, ISTHING, iou_thr=0.5)
    assert [s.label for s in segs] == [0, 1] and segs[1].area == 24
    pan, segs = panoptic_inference(logits, masks, ISTHING, object_mask_thr=0.95)
    assert segs == [] and (pan == 0).all()


def test_stable_ids_survive_a_vanishing_segment():
    logits = _logits((0, 0.9), (1, 0.9), (0, 0.9), (2, 0.9))
    frame0 = _masks((0, 2, 0, 2), (2, 4, 0, 2), (4, 6, 0, 2), (6, 8, 0, 8))
    frame1 = frame0.clone()
    frame1[1] = -BIG  # query 1 disappears in frame 1
    ids = []
    for m in (frame0, frame1):
        _, segs = panoptic_inference(logits, m, ISTHING, stable_ids=True)
        ids.append({s.query: s.id for s in segs})
    assert ids[0] == {0: 1, 1: 2, 2: 3, 3: 4 + 1 + 2}
    assert ids[1] == {0: 1, 2: 3, 3: 7}, "query 2 keeps id 3 although query 1 vanished"
    _, counter = panoptic_inference(logits, frame1, ISTHING)
    assert [s.id for s in counter][:2] == [1, 2], "the per-frame counter (released code) shifts ids"


def test_instance_by_hand():
    logits = _logits((0, 0.9), (1, 0.5), (2, 0.9))
    masks = _masks((0, 4, 0, 4), (4, 8, 4, 8), (0, 8, 0, 8))
    masks[0, 0, 0] = 0.0  # one pixel at logit 0: outside the binary mask
    inst = instance_inference(logits, masks, ISTHING, topk=4)
    pairs = list(zip(inst.queries.tolist(), inst.labels.tolist()))
    # top-4 of Q x C: (0,0) .9, (2,2) .9 [stuff: dropped], (1,1) .5, then the ties at (1-.5)/3 -> things only
    assert pairs[:2] == [(0, 0), (1, 1)] and all(ISTHING[l] for _, l in pairs)
    mask_score = torch.sigmoid(torch.tensor(BIG)).item()
    assert inst.scores[0].item() == pytest.approx(0.9 * mask_score, rel=1e-5)
    assert inst.masks[0].sum() == 15


def test_semantic_by_hand():
    logits = _logits((0, 0.9), (2, 0.8))
    masks = _masks((0, 8, 0, 4), (0, 8, 4, 8))
    labels, scores = semantic_inference(logits, masks)
    assert (labels[:, :4] == 0).all() and (labels[:, 4:] == 2).all() and scores.shape == (3, 8, 8)


# ------------------------------------------------------------------------------ video

def test_association_restores_a_permutation():
    g = torch.Generator().manual_seed(0)
    prev = torch.randn(30, 16, generator=g)
    perm = torch.randperm(30, generator=g)
    current = prev[perm] + 0.05 * torch.randn(30, 16, generator=g)  # clip k sees the same objects, shuffled
    order = associate(prev, current)
    assert torch.equal(perm[order], torch.arange(30))


def test_clips():
    assert clip_length("vis", 20) == 5 and clip_length("vis", 10) == 3
    assert clip_length("vps", 20) == 2 and clip_length("vss", 9) == 3
    assert [list(c) for c in split_clips(7, 3)] == [[0, 1, 2], [3, 4, 5], [6]]
    with pytest.raises(ValueError):
        split_clips(0, 3)


def test_vos_first_frame_association():
    t, h, w = 3, 8, 8
    gt = np.zeros((2, h, w), bool)
    gt[0, :4, :4] = True
    gt[1, 4:, 4:] = True
    props = np.zeros((4, t, h, w), bool)
    props[2, :, :4, :4] = True   # object 7 (given first), tracked by query 2
    props[0, :, 4:, 4:] = True   # object 9, query 0
    props[1, :, 4:, :4] = True   # a distractor, unmatched
    out, queries = vos_from_proposals(props, np.array([0.9, 0.8, 0.7, 0.1]), gt, [7, 9])
    assert queries == {7: 2, 9: 0}
    assert (out[:, :4, :4] == 7).all() and (out[:, 4:, 4:] == 9).all() and (out[:, 4:, :4] == 0).all()


# ------------------------------------------------------------------------------ open vocabulary

def test_seen_classes():
    seen = ov.seen_classes([["disc", "round shape"], ["hexagon"], ["Sea"]], [["circle", "disc"], ["water", "sea"]])
    assert seen.tolist() == [True, False, True]


def test_geometric_ensemble_by_hand():
    p_in = torch.tensor([0.5, 0.3, 0.2])
    p_void = 0.2
    logits_in = torch.log(torch.cat([p_in * (1 - p_void), torch.tensor([p_void])]))
    p_clip = torch.tensor([0.1, 0.6, 0.3])
    seen = torch.tensor([True, True, False])
    out = ov.geometric_ensemble(logits_in, torch.log(p_clip), seen).exp()
    a = torch.tensor([0.4, 0.4, 0.8])
    fused = p_in ** (1 - a) * p_clip ** a
    expected = torch.cat([fused / fused.sum() * (1 - p_void), torch.tensor([p_void])])
    assert torch.allclose(out, expected, atol=1e-6)
    # an empty mask at stride 32: no CLIP term
    out = ov.geometric_ensemble(logits_in, torch.log(p_clip), seen, torch.tensor(False)).exp()
    assert torch.allclose(out[:3], p_in * (1 - p_void), atol=1e-6)


# ------------------------------------------------------------------------------ the predictor

LABEL_SPACE = {"names": [["circle", "disc"], ["square"], ["triangle"], ["star"], ["sky"], ["grass"], ["water"], ["sand"]],
               "isthing": [True] * 4 + [False] * 4,
               "mappings": {"omg-shapes": {"1": 0, "2": 1, "3": 2, "4": 3, "11": 4, "12": 5, "13": 6, "14": 7},
                            "omg-shapes-vps": {"1": 0, "2": 1, "3": 2, "4": 3, "11": 4, "12": 5, "13": 6, "14": 7}},
               "class_agnostic": []}


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> str:
    torch.manual_seed(0)
    model = build_model(ModelConfig.tiny())
    path = str(tmp_path_factory.mktemp("ckpt") / "tiny.pt")
    save_checkpoint(model, path, {"label_space": LABEL_SPACE, "test_size": [128, 128]})
    return path


@pytest.fixture()
def predictor(checkpoint) -> OMGPredictor:
    return OMGPredictor.from_checkpoint(checkpoint)


def _image(h=96, w=128, seed=0):
    return np.random.default_rng(seed).integers(0, 255, (h, w, 3), dtype=np.uint8)


def test_features_are_computed_once(predictor):
    predictor.set_image(_image())
    a = predictor.predict("panoptic")
    b = predictor.predict("semantic", vocabulary=["hexagon, six-sided shape", "stuff:sky"])
    c = predictor.predict("interactive", points=[[10, 10]])
    d = predictor.predict("interactive", boxes=[[0, 0, 40, 40]])
    assert predictor.stats["backbone_calls"] == 1
    assert predictor.stats["decoder_calls"] == 3, "object queries once (any vocabulary), one pass per prompt set"
    assert a.panoptic.shape == (96, 128) and b.labels.max() <= 1 and b.vocabulary == ["hexagon", "sky"]
    assert c.masks.shape == (1, 96, 128) and d.masks.shape == (1, 96, 128)


def test_every_image_task_and_a_batch(predictor):
    imgs = [_image(seed=1), _image(64, 80, seed=2)]
    predictor.set_image(imgs)
    pans = predictor.predict("panoptic")
    assert [p.panoptic.shape for p in pans] == [(96, 128), (64, 80)]
    for r in pans:
        ids = set(np.unique(r.panoptic).tolist()) - {0}
        assert ids == {s.id for s in r.segments}
        assert all(s.area == int((r.panoptic == s.id).sum()) for s in r.segments)
        assert all(np.array_equal(rle_decode(r.rles[s.id]), r.panoptic == s.id) for s in r.segments)
    inst = predictor.predict("instance")
    assert all(set(x.labels.tolist()) <= {0, 1, 2, 3} for x in inst), "instances are things only"
    assert all(np.all(np.diff(x.scores) <= 1e-6) for x in inst), "sorted by final score"
    inter = predictor.predict("interactive", points=[[[5, 5], [60, 40]], [[70, 60]]], vocabulary=["circle", "stuff:sky"])
    assert [r.masks.shape[0] for r in inter] == [2, 1] and inter[0].names[0] in ("circle", "sky")


def test_every_video_task(predictor):
    frames = np.random.default_rng(3).integers(0, 255, (7, 64, 64, 3), dtype=np.uint8)
    predictor.set_video(frames)
    vis = predictor.predict("vis")
    assert vis.masks.shape[1:] == (7, 64, 64) and (vis.track_ids >= 1).all()
    calls = predictor.stats["backbone_calls"]
    vps = predictor.predict("vps", vocabulary=["circle", "stuff:sky"])
    assert calls == 3 and predictor.stats["backbone_calls"] == calls, "7 frames: clips of 3 for vis and vps alike (cached)"
    assert vps.panoptic.shape == (7, 64, 64) and len(vps.frame_segments) == 7
    vss = predictor.predict("vss")
    assert vss.labels.shape == (7, 64, 64) and predictor.stats["backbone_calls"] == calls, "cached"
    ff = np.zeros((64, 64), np.uint8)
    ff[:20, :20] = 1
    vos = predictor.predict("vos", first_frame_masks=ff)
    assert vos.masks.shape == (7, 64, 64) and vos.object_ids == [1]


def test_vocabulary_parsing():
    train = Vocabulary([["circle"], ["sky", "clouds"]], [True, False])
    v = Vocabulary.parse(["clouds", "thing:lake", "stuff:road, street", {"names": ["kite"], "isthing": False}], train)
    assert v.names == [["clouds"], ["lake"], ["road", "street"], ["kite"]] and v.isthing == [False, True, False, False]


def test_bad_inputs(predictor):
    with pytest.raises(ValueError, match="H x W x 3"):
        predictor.set_image(np.zeros((10, 10), np.uint8))
    with pytest.raises(ValueError, match="dtype int64"):
        predictor.set_image(np.zeros((10, 10, 3), np.int64))
    with pytest.raises(ValueError, match="needs an image"):
        OMGPredictor(predictor.model, predictor.metadata).predict("panoptic")
    predictor.set_image(_image())
    with pytest.raises(ValueError, match="unknown task 'depth'"):
        predictor.predict("depth")
    with pytest.raises(ValueError, match="point 0 .* outside the 128x96 image"):
        predictor.predict("interactive", points=[[200, 10]])
    with pytest.raises(ValueError, match="non-empty list"):
        predictor.predict("panoptic", vocabulary=[])
    with pytest.raises(ValueError, match="takes no prompts"):
        predictor.predict("panoptic", points=[[1, 1]])
    with pytest.raises(ValueError, match="needs a video"):
        predictor.predict("vis")
    predictor.set_video(np.zeros((3, 32, 32, 3), np.uint8))
    with pytest.raises(ValueError, match="first_frame_masks"):
        predictor.predict("vos")


# ------------------------------------------------------------------------------ files and the CLI

def test_omg_predict_writes_valid_official_files(checkpoint, tiny_shapes, tmp_path, capsys):
    val = Path(tiny_shapes) / "images/val"
    out = tmp_path / "pan"
    assert main(["predict", "--checkpoint", checkpoint, "--input", str(val), "--task", "panoptic", "--out", str(out),
                 "--dataset", "omg-shapes"]) == 0
    report = validate_files("coco_panoptic", images=str(val), panoptic_json=str(out / "panoptic.json"),
                            panoptic_masks=str(out / "panoptic"), check_images=False)
    assert report.ok, [str(p) for p in report.problems]
    doc = json.loads((out / "panoptic.json").read_text())
    cats = {c["id"] for c in doc["categories"]}
    assert cats == {1, 2, 3, 4, 11, 12, 13, 14}, "the dataset's own category ids"
    assert len(list((out / "overlays").glob("*.png"))) == len(list(val.glob("*.jpg")))

    out = tmp_path / "inst"
    assert main(["predict", "--checkpoint", checkpoint, "--input", str(val), "--task", "instance", "--out", str(out)]) == 0
    recs = json.loads((out / "instances_results.json").read_text())
    assert recs and all(set(r) == {"image_id", "category_id", "segmentation", "bbox", "score"} for r in recs)
    assert rle_decode(recs[0]["segmentation"]).shape == (64, 64)

    video = Path(tiny_shapes) / "videos/val/JPEGImages/val_0000"
    out = tmp_path / "vps"
    assert main(["predict", "--checkpoint", checkpoint, "--input", str(video), "--task", "vps", "--out", str(out)]) == 0
    report = validate_files("vipseg", "video", frames=str(video.parent), panoptic_masks=str(out / "panoptic"),
                            panoptic_json=str(out / "panoptic.json"), check_images=False)
    assert report.ok, [str(p) for p in report.problems]

    out = tmp_path / "vis"
    assert main(["predict", "--checkpoint", checkpoint, "--input", str(video), "--task", "vis", "--out", str(out)]) == 0
    recs = json.loads((out / "results.json").read_text())
    n_frames = len(list(video.glob("*.jpg")))
    assert recs and all(len(r["segmentations"]) == n_frames for r in recs)

    out = tmp_path / "vos"
    first = Path(tiny_shapes) / "videos/val/Annotations/val_0000/00000.png"
    assert main(["predict", "--checkpoint", checkpoint, "--input", str(video), "--task", "vos", "--out", str(out),
                 "--first-frame-masks", str(first)]) == 0
    pngs = sorted((out / "Annotations/val_0000").glob("*.png"))
    assert [p.stem for p in pngs] == [p.stem for p in sorted(video.glob("*.jpg"))]
    assert all(Image.open(p).mode == "P" and Image.open(p).size == (64, 64) for p in pngs), "DAVIS palette PNGs"

    out = tmp_path / "int"
    image = next(val.glob("*.jpg"))
    assert main(["predict", "--checkpoint", checkpoint, "--input", str(image), "--task", "interactive",
                 "--points", "20,30", "--boxes", "0,0,40,40", "--label", "--vocabulary", "circle",
                 "--vocabulary", "stuff:sky", "--out", str(out)]) == 0
    recs = json.loads((out / "interactive" / f"{image.stem}.json").read_text())
    assert len(recs) == 2 and recs[0]["name"] in ("circle", "sky")
    assert Image.open(out / "interactive" / f"{image.stem}.png").size == (64, 64)
    capsys.readouterr()
    assert main(["predict", "--checkpoint", checkpoint, "--input", str(image), "--task", "interactive",
                 "--out", str(out)]) == 2
    assert "needs --points" in capsys.readouterr().err
