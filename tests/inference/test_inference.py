"""Inference: post-processing on hand-made logits, video association, the open-vocabulary ensemble,
the predictor (caching, every task, bad inputs), result files and `omg predict`."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from omg.data.masks import rle_decode
from omg.data.validate import validate_files
from omg.inference import open_vocab as ov
from omg.inference.postprocess import instance_inference, panoptic_inference, semantic_inference
from omg.inference.predictor import OMGPredictor
from omg.inference.results import (
    InteractiveResult,
    PanopticResult,
    SemanticResult,
    VideoInstanceResult,
    VideoPanopticResult,
    VideoSemanticResult,
)
from omg.inference.video import associate, clip_length, split_clips, vos_from_proposals
from omg.modeling.checkpoint import save_checkpoint
from omg.modeling.model import ModelConfig, build_model
from omg.utils.vocabulary import Vocabulary
from omg_platform.cli import main
from tests.helpers import LABEL_SPACE

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
        _, segs = panoptic_inference(logits, m, ISTHING, ids="stable")
        ids.append({s.query: s.id for s in segs})
    assert ids[0] == {0: 1, 1: 2, 2: 3, 3: 4 + 1 + 2}
    assert ids[1] == {0: 1, 2: 3, 3: 7}, "query 2 keeps id 3 although query 1 vanished"
    released = [
        {s.query: s.id for s in panoptic_inference(logits, m, ISTHING, ids="released")[1]} for m in (frame0, frame1)
    ]
    # the released fusion head: class + instance_id x 1000, instance_id a per-frame counter over things, stuff by
    # class (here + 1: 0 is VOID)
    assert released == [{0: 1001, 1: 2002, 2: 3001, 3: 3}, {0: 1001, 2: 2001, 3: 3}], (
        "query 2 takes instance 2 once query 1 vanished (a new track id), its class stays in the id"
    )
    with pytest.raises(ValueError, match="ids must be one of"):
        panoptic_inference(logits, frame0, ISTHING, ids="random")


def test_instance_by_hand():
    logits = _logits((0, 0.9), (1, 0.5), (2, 0.9))
    masks = _masks((0, 4, 0, 4), (4, 8, 4, 8), (0, 8, 0, 8))
    masks[0, 0, 0] = 0.0  # one pixel at logit 0: outside the binary mask
    inst = instance_inference(logits, masks, ISTHING, topk=4)
    pairs = list(zip(inst.queries.tolist(), inst.labels.tolist()))
    # top-4 of Q x C: (0,0) .9, (2,2) .9 [stuff: dropped], (1,1) .5, then the ties at (1-.5)/3 -> things only
    assert pairs[:2] == [(0, 0), (1, 1)] and all(ISTHING[label] for _, label in pairs)
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
    lengths = {
        (t, n): [len(c) for c in split_clips(t, n)] for t, n in ((17, 5), (7, 3), (15, 5), (6, 5), (2, 3), (20, 2))
    }
    # the released video_split (mask2former_vid_minvis.py L18-46), computed by hand from its loop
    assert lengths == {
        (17, 5): [5, 4, 4, 4],
        (7, 3): [3, 2, 2],
        (15, 5): [5, 5, 5],
        (6, 5): [5, 1],
        (2, 3): [2],
        (20, 2): [2] * 10,
    }
    for t in range(1, 40):
        for n in (2, 3, 5):
            clips = split_clips(t, n)
            assert [f for c in clips for f in c] == list(range(t)) and all(len(c) for c in clips)
    with pytest.raises(ValueError):
        split_clips(0, 3)


def test_vos_first_frame_association():
    t, h, w = 3, 8, 8
    gt = np.zeros((2, h, w), bool)
    gt[0, :4, :4] = True
    gt[1, 4:, 4:] = True
    props = np.zeros((4, t, h, w), bool)
    props[2, :, :4, :4] = True  # object 7 (given first), tracked by query 2
    props[0, :, 4:, 4:] = True  # object 9, query 0
    props[1, :, 4:, :4] = True  # a distractor, unmatched
    out, queries = vos_from_proposals(props, np.array([0.9, 0.8, 0.7, 0.1]), gt, [7, 9])
    assert queries == {7: 2, 9: 0}
    assert (out[:, :4, :4] == 7).all() and (out[:, 4:, 4:] == 9).all() and (out[:, 4:, :4] == 0).all()


def test_vos_paints_only_matched_proposals_with_higher_scores_on_top():
    """The released code paints only the Hungarian-matched proposals (an IoU of 0 included) and leaves the rest
    background: an unmatched proposal with a higher score than a matched one used to paint 0 over it."""
    t, h, w = 2, 8, 8
    gt = np.zeros((2, h, w), bool)
    gt[0, :4, :4] = True
    gt[1, 4:, :] = True
    props = np.zeros((3, t, h, w), bool)
    props[0, :, 4:6, :] = True  # object 6 (IoU 0.5)
    props[1, :, :4, :4] = True  # object 5
    props[1, 1, 4, :4] = True  # object 5 grows into query 0's rows on frame 1: query 0 has the higher score
    props[2, :, :2, :2] = True  # the highest score, unmatched, inside object 5's mask
    out, queries = vos_from_proposals(props, np.array([0.9, 0.5, 0.95]), gt, [5, 6])
    assert queries == {5: 1, 6: 0}
    assert (out[:, :4, :4] == 5).all(), "the unmatched, higher-scored query 2 does not paint background over 5"
    assert (out[:, 4:6, :] == 6).all(), "query 0 (score 0.9) paints over query 1 (0.5) where they overlap"
    assert (out[:, 6:, :] == 0).all()
    far = np.zeros((1, 1, h, w), bool)
    far[0, 0, 0, 0] = True
    out, queries = vos_from_proposals(far, np.array([0.3]), gt[1:], [6])
    assert queries == {6: 0} and out[0, 0, 0] == 6, "a match at IoU 0 is still the object's proposal"


# ------------------------------------------------------------------------------ open vocabulary


def test_seen_classes():
    seen = Vocabulary.of([["disc", "round shape"], ["hexagon"], ["Sea"]]).seen_in(
        Vocabulary.of([["circle", "disc"], ["water", "sea"]])
    )
    assert seen == [True, False, True]


def test_geometric_ensemble_by_hand():
    p_in = torch.tensor([0.5, 0.3, 0.2])
    p_void = 0.2
    logits_in = torch.log(torch.cat([p_in * (1 - p_void), torch.tensor([p_void])]))
    p_clip = torch.tensor([0.1, 0.6, 0.3])
    seen = torch.tensor([True, True, False])
    out = ov.geometric_ensemble(logits_in, torch.log(p_clip), seen).exp()
    a = torch.tensor([0.4, 0.4, 0.8])
    fused = p_in ** (1 - a) * p_clip**a
    expected = torch.cat([fused / fused.sum() * (1 - p_void), torch.tensor([p_void])])
    assert torch.allclose(out, expected, atol=1e-6)
    # an empty mask at stride 32: no CLIP term
    out = ov.geometric_ensemble(logits_in, torch.log(p_clip), seen, torch.tensor(False)).exp()
    assert torch.allclose(out[:3], p_in * (1 - p_void), atol=1e-6)
    # small probabilities enter as they are, as in the released product (no epsilon inside the logarithms)
    p_small = torch.tensor([0.99999, 1e-7, 1e-5 - 1e-7])
    out = ov.geometric_ensemble(logits_in, torch.log(p_small), seen)
    fused = p_in ** (1 - a) * p_small**a
    expected = torch.cat([fused / fused.sum() * (1 - p_void), torch.tensor([p_void])])
    assert torch.allclose(out, torch.log(expected + 1e-8), rtol=1e-5, atol=0)  # log(p + 1e-8) out, as released


# ------------------------------------------------------------------------------ the predictor


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


def test_the_caller_holds_image_and_video_states(predictor):
    """sam2's init_state: each image's or video's state is an object the caller holds and passes as ``state=``;
    switching between them costs no backbone call, and VOS from a prompt on the first frame leaves the current
    image as it was (nothing is saved and restored on the predictor)."""
    a, b = _image(seed=1), _image(seed=2)
    sa = predictor.set_image(a)
    sb = predictor.set_image(b)
    alone = OMGPredictor(predictor.model, predictor.metadata)
    alone.set_image(a)
    calls = predictor.stats["backbone_calls"]
    assert np.array_equal(predictor.panoptic(state=sa).panoptic, alone.panoptic().panoptic)
    assert np.array_equal(predictor.panoptic().panoptic, predictor.panoptic(state=sb).panoptic), "b is current"
    assert predictor.stats["backbone_calls"] == calls
    video = predictor.videos.init_state(np.random.default_rng(3).integers(0, 255, (4, 64, 64, 3), dtype=np.uint8))
    vos = predictor.vos(points=[[20, 20]], state=video)
    assert vos.masks.shape == (4, 64, 64)
    assert np.array_equal(predictor.panoptic().panoptic, predictor.panoptic(state=sb).panoptic), "still b"
    with pytest.raises(ValueError, match="needs a video: call set_video"):
        predictor.vis()


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
    inter = predictor.predict(
        "interactive", points=[[[5, 5], [60, 40]], [[70, 60]]], vocabulary=["circle", "stuff:sky"]
    )
    assert [r.masks.shape[0] for r in inter] == [2, 1] and inter[0].names[0] in ("circle", "sky")


def test_every_video_task(predictor):
    frames = np.random.default_rng(3).integers(0, 255, (7, 64, 64, 3), dtype=np.uint8)
    predictor.set_video(frames)
    vis = predictor.predict("vis")
    assert vis.masks.shape[1:] == (7, 64, 64) and (vis.track_ids >= 1).all()
    calls = predictor.stats["backbone_calls"]
    vps = predictor.predict("vps", vocabulary=["circle", "stuff:sky"])
    assert calls == 3 and predictor.stats["backbone_calls"] == calls, (
        "7 frames: clips of 3 for vis and vps alike (cached)"
    )
    assert vps.panoptic.shape == (7, 64, 64) and len(vps.frame_segments) == 7
    vss = predictor.predict("vss")
    assert vss.labels.shape == (7, 64, 64) and predictor.stats["backbone_calls"] == calls, "cached"
    ff = np.zeros((64, 64), np.uint8)
    ff[:20, :20] = 1
    vos = predictor.predict("vos", first_frame_masks=ff)
    assert vos.masks.shape == (7, 64, 64) and vos.object_ids == [1]


def test_the_input_is_padded_with_the_pixel_mean(predictor):
    """The released preprocessor normalises, then pads with 0 (vidseg_data_preprocessor.py L116-131): the padding is
    the mean colour, 0 after normalisation, not black. 128 x 100 at test size 128 stays, padded to 128 x 128."""
    batch, sizes = predictor.core.prepare([_image(128, 100)])
    mean = torch.tensor(predictor.model.backbone.variant.pixel_mean).view(3, 1, 1)
    assert sizes == [(128, 100)] and batch.shape[-2:] == (128, 128)
    assert torch.equal(batch[0, :, :, 100:], mean.expand(3, 128, 28))
    normalised = (batch - predictor.model.backbone.pixel_mean) / predictor.model.backbone.pixel_std
    assert normalised[0, :, :, 100:].abs().max() == 0


def test_the_training_batch_is_padded_with_the_pixel_mean():
    from omg.training.inputs import fill_padding

    images = torch.zeros(2, 1, 3, 8, 8)
    fill_padding(images, [[8, 8], [5, 6]], (1.0, 2.0, 3.0))
    assert images[0].abs().sum() == 0, "a full-size sample has no padding"
    assert (
        (images[1, 0, :, :5, :6] == 0).all()
        and (images[1, 0, 2, 5:, :] == 3).all()
        and (images[1, 0, 0, :, 6:] == 1).all()
    )


def test_the_test_resize_rounds_as_mmcv(predictor):
    """mmcv's rescale_size: factor = min(long / max(h, w), short / min(h, w)); new size int(x * f + 0.5)."""
    predictor.test_size = (1333, 800)
    assert predictor.core.resize_factor(427, 640) == pytest.approx(800 / 427)
    _, sizes = predictor.core.prepare([_image(427, 640)])
    assert sizes == [(800, int(640 * 800 / 427 + 0.5))] == [(800, 1199)]


def test_post_processing_runs_at_the_original_size_by_default(predictor):
    """The released fusion head upsamples every query's mask logits to the original size (bilinear), then
    post-processes (omgseg_fusionhead.py predict, rescale=True); ``postprocess_at="input"`` keeps the cheaper
    option (id maps upscaled nearest)."""
    from omg.inference.postprocess import panoptic_inference

    image = _image(100, 150, seed=5)
    state = predictor.set_image(image)  # test size 128: resized to 85 x 128, padded to 96 x 128
    got = predictor.predict("panoptic")
    obj = predictor.images.objects(state)
    logits = predictor.core.class_logits(
        obj.embed[:1],
        obj.masks[:1, :, None],
        state.features.clip_features[:1],
        predictor.training_vocabulary,
        False,
    )[0]
    up = torch.nn.functional.interpolate(obj.masks[:1].float(), size=(96, 128), mode="bilinear")[0][:, :85, :128]
    full = torch.nn.functional.interpolate(up[None], size=(100, 150), mode="bilinear")[0]
    ref, segs = panoptic_inference(logits, full, torch.tensor(predictor.training_vocabulary.isthing))
    assert np.array_equal(got.panoptic, ref.numpy()) and len(segs) == len(got.segments)
    cheap = OMGPredictor(predictor.model, predictor.metadata, postprocess_at="input")
    cheap.set_image(image)
    assert cheap.predict("panoptic").panoptic.shape == (100, 150)
    with pytest.raises(ValueError, match="postprocess_at"):
        OMGPredictor(predictor.model, predictor.metadata, postprocess_at="somewhere")


def test_a_video_instance_score_is_the_mean_over_frames(predictor):
    """FH.instance_postprocess scores each frame (class score x mean probability inside that frame's mask, 0 where
    it is empty) and the YouTube-VIS metric averages an instance's frames; a track seen in 1 of 2 frames at
    probability 0.9 scores 0.45 x its class score, not 0.9 x (pooled over the video)."""
    state = predictor.set_video(np.zeros((2, 32, 32, 3), np.uint8))
    decoded = predictor.videos.decoded(state, "vis")
    q = decoded.clips[0].masks.shape[0]
    crafted = torch.full((2, q, 32, 32), -5.0)
    crafted[0, :, :8, :8] = math.log(0.9 / 0.1)  # every query: a mask in frame 0 only, probability 0.9

    predictor.videos.frame_logits = lambda clip, t, queries=None: crafted[t] if queries is None else crafted[t][queries]
    vis = predictor.predict("vis", topk=100)
    with torch.no_grad():
        job = predictor.videos.job("vis", None, "auto")
        probs = predictor.videos.decide(decoded.evidence, job).logits.float().softmax(-1)[:, :-1]
    top = probs.flatten().topk(100)
    thing = torch.tensor(predictor.training_vocabulary.isthing)[top.indices % probs.shape[1]]
    assert len(vis.scores) == int(thing.sum()) > 0
    assert sorted(vis.scores.tolist()) == pytest.approx(sorted((top.values[thing] * 0.9 / 2).tolist()), rel=1e-4)


def test_vocabulary_parsing():
    train = Vocabulary.of([["circle"], ["sky", "clouds"]], [True, False])
    v = Vocabulary.parse(["clouds", "thing:lake", "stuff:road, street", {"names": ["kite"], "isthing": False}], train)
    assert v.names == (("clouds",), ("lake",), ("road", "street"), ("kite",)) and v.isthing == (
        False,
        True,
        False,
        False,
    )


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
    assert (
        main(
            [
                "predict",
                "--checkpoint",
                checkpoint,
                "--input",
                str(val),
                "--task",
                "panoptic",
                "--out",
                str(out),
                "--dataset",
                "omg-shapes",
            ]
        )
        == 0
    )
    report = validate_files(
        "coco_panoptic",
        images=str(val),
        panoptic_json=str(out / "panoptic.json"),
        panoptic_masks=str(out / "panoptic"),
        check_images=False,
    )
    assert report.ok, [str(p) for p in report.problems]
    doc = json.loads((out / "panoptic.json").read_text())
    cats = {c["id"] for c in doc["categories"]}
    assert cats == {1, 2, 3, 4, 11, 12, 13, 14}, "the dataset's own category ids"
    assert len(list((out / "overlays").glob("*.png"))) == len(list(val.glob("*.jpg")))

    out = tmp_path / "inst"
    assert (
        main(["predict", "--checkpoint", checkpoint, "--input", str(val), "--task", "instance", "--out", str(out)]) == 0
    )
    recs = json.loads((out / "instances_results.json").read_text())
    assert recs and all(set(r) == {"image_id", "category_id", "segmentation", "bbox", "score"} for r in recs)
    assert rle_decode(recs[0]["segmentation"]).shape == (64, 64)

    video = Path(tiny_shapes) / "videos/val/JPEGImages/val_0000"
    out = tmp_path / "vps"
    assert main(["predict", "--checkpoint", checkpoint, "--input", str(video), "--task", "vps", "--out", str(out)]) == 0
    report = validate_files(
        "vipseg",
        "video",
        frames=str(video.parent),
        panoptic_masks=str(out / "panoptic"),
        panoptic_json=str(out / "panoptic.json"),
        check_images=False,
    )
    assert report.ok, [str(p) for p in report.problems]

    out = tmp_path / "vis"
    assert main(["predict", "--checkpoint", checkpoint, "--input", str(video), "--task", "vis", "--out", str(out)]) == 0
    recs = json.loads((out / "results.json").read_text())
    n_frames = len(list(video.glob("*.jpg")))
    assert recs and all(len(r["segmentations"]) == n_frames for r in recs)

    out = tmp_path / "vos"
    first = Path(tiny_shapes) / "videos/val/Annotations/val_0000/00000.png"
    assert (
        main(
            [
                "predict",
                "--checkpoint",
                checkpoint,
                "--input",
                str(video),
                "--task",
                "vos",
                "--out",
                str(out),
                "--first-frame-masks",
                str(first),
            ]
        )
        == 0
    )
    pngs = sorted((out / "Annotations/val_0000").glob("*.png"))
    assert [p.stem for p in pngs] == [p.stem for p in sorted(video.glob("*.jpg"))]
    assert all(Image.open(p).mode == "P" and Image.open(p).size == (64, 64) for p in pngs), "DAVIS palette PNGs"

    out = tmp_path / "int"
    image = next(val.glob("*.jpg"))
    assert (
        main(
            [
                "predict",
                "--checkpoint",
                checkpoint,
                "--input",
                str(image),
                "--task",
                "interactive",
                "--points",
                "20,30",
                "--boxes",
                "0,0,40,40",
                "--label",
                "--vocabulary",
                "circle",
                "--vocabulary",
                "stuff:sky",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    recs = json.loads((out / "interactive" / f"{image.stem}.json").read_text())
    assert len(recs) == 2 and recs[0]["name"] in ("circle", "sky")
    assert Image.open(out / "interactive" / f"{image.stem}.png").size == (64, 64)
    capsys.readouterr()
    assert (
        main(["predict", "--checkpoint", checkpoint, "--input", str(image), "--task", "interactive", "--out", str(out)])
        == 2
    )
    assert "needs --points" in capsys.readouterr().err


def test_interactive_prompts_as_the_released_evaluation(predictor):
    """ovsam_preprocessor.py (use_point_pseudo_box, test time): the centre of the mask rescaled to the network's input
    size, an integer pixel there, and the pseudo-box point -+ 3 px, not clipped to the image."""
    from omg.evaluation.evaluators import centre_prompts
    from omg.evaluation.interactive import center_point
    from omg.modeling.prompts import Prompts

    gt = np.zeros((1, 100, 150), bool)
    gt[0, 10:60, 20:140] = True
    predictor.test_size = (128, 128)  # 100 x 150 -> 85 x 128 at the input
    ((x, y),) = centre_prompts(predictor, gt)
    rh, rw = predictor.input_size(100, 150)
    assert (rh, rw) == (85, 128)
    xi, yi = x * rw / 150, y * rh / 100
    assert xi == pytest.approx(round(xi), abs=1e-9) and yi == pytest.approx(round(yi), abs=1e-9), "an input pixel"
    small = gt[0][np.minimum((np.arange(85) * 100 / 85).astype(int), 99)][
        :, np.minimum((np.arange(128) * 150 / 128).astype(int), 149)
    ]
    assert (round(xi), round(yi)) == center_point(small)
    corner = Prompts.from_lists([torch.tensor([[1.0, 0.0]])], [None], [(64, 64)])
    assert corner.boxes[0, 0].tolist() == [-2.0, -3.0, 4.0, 3.0], "the pseudo-box is not clipped"


def test_prompted_masks_are_labelled_by_the_best_matching_object_query(predictor, monkeypatch):
    """prompt_labels="queries": the object query whose mask best matches a prompted mask (IoU at stride 4 x the
    query's top class probability) gives its class and that probability; a mask no query overlaps keeps the frozen
    CLIP's label (source "clip")."""
    from omg.inference.image_tasks import ObjectQueries

    state = predictor.set_image(_image())  # 96 x 128: stride-4 masks of 24 x 32
    vocab = predictor.vocabulary(None)
    c = len(vocab)
    logits = torch.full((1, 3, c + 1), -10.0)
    logits[0, 0, 0] = 10.0  # query 0: circle, sure
    logits[0, 1, 4] = 10.0  # query 1: sky, sure
    logits[0, 2, 1] = logits[0, 2, c] = 0.0  # query 2: square at 50 %, void at 50 %
    masks = torch.full((1, 3, 24, 32), -10.0)
    masks[0, 0, :, :16] = 10.0  # circle: the left half
    masks[0, 1, :12, 16:] = 10.0  # sky: the top right quarter
    masks[0, 2, :6, :8] = 10.0  # square: the top left corner, inside the circle's mask
    state.objects = ObjectQueries(masks, torch.zeros(1, 3, 8), torch.zeros(1, 3))
    monkeypatch.setattr(predictor.core, "class_logits", lambda *a: logits)
    m = torch.full((4, 24, 32), -10.0)
    m[0, 12:24, 0:16] = 10.0  # the circle's bottom half: IoU 0.5 with it
    m[1, 0:6, 0:8] = 10.0  # the square's corner exactly (IoU 1 x 0.5) vs the circle (IoU 0.125 x 1)
    m[2, 12:24, 16:32] = 10.0  # the bottom right: no query there
    m[3, 0:12, 8:24] = 10.0  # 96 px on the circle and 96 on the sky: IoU 1/5 with the circle, 1/3 with the sky
    labels, scores, matched = predictor.images.prompt_labels_by_queries(state, 0, m, vocab)
    assert [labels[k].item() for k in (0, 1, 3)] == [0, 1, 4] and matched.tolist() == [True, True, False, True]
    assert scores[0] == pytest.approx(1.0, abs=1e-3) and scores[1] == pytest.approx(0.5, abs=1e-3)
    # through interactive(): every label says where it came from
    monkeypatch.undo()
    for mode, sources in (("queries", {"queries", "clip"}), ("clip", {"clip"})):
        predictor.prompt_labels = mode
        predictor.set_image(_image())
        r = predictor.interactive(points=[[10, 10], [100, 20], [100, 80]], vocabulary=vocab.display)
        assert len(r.label_sources) == 3 and set(r.label_sources) <= sources
        assert all(0.0 <= s <= 1.0 for s in r.label_scores)
    with pytest.raises(ValueError, match="prompt_labels must be one of queries, clip"):
        OMGPredictor(predictor.model, predictor.metadata, prompt_labels="panoptic")


def test_a_misspelt_predict_argument_is_an_error(predictor):
    """predict() used to swallow unknown keyword arguments: vocabluary=[...] silently ran the training vocabulary."""
    predictor.set_image(_image())
    with pytest.raises(TypeError, match="vocabluary"):
        predictor.predict("panoptic", vocabluary=["circle"])
    with pytest.raises(TypeError, match="task 'semantic' takes no argument 'topk'; it takes: vocabulary, open_vocab"):
        predictor.predict("semantic", topk=5)  # an argument of another task is not ignored either
    a, b = predictor.predict("instance", topk=3), predictor.instance(topk=3)
    assert type(a) is type(b) and np.array_equal(a.masks, b.masks) and len(a.labels) <= 3


def test_typed_entry_points_return_their_result_types(predictor):
    predictor.set_image(_image())
    assert isinstance(predictor.panoptic(), PanopticResult) and isinstance(predictor.semantic(), SemanticResult)
    assert isinstance(predictor.interactive(points=[[10, 10]]), InteractiveResult)
    with pytest.raises(ValueError, match="needs points and / or boxes"):
        predictor.interactive()
    predictor.set_video(np.zeros((3, 32, 32, 3), np.uint8))
    assert isinstance(predictor.vis(), VideoInstanceResult) and isinstance(predictor.vss(), VideoSemanticResult)
    assert isinstance(predictor.vps(track_ids="stable"), VideoPanopticResult)


def test_predict_takes_positive_and_negative_clicks_on_one_object(tmp_path, capsys):
    """``omg predict --points X,Y,L ...``: the clicks of one object (1 positive, 0 negative), answered as the
    predictor answers them clicked one at a time; a model without refinement says what it takes."""
    from omg.inference.objects import ObjectPrompt
    from tests.helpers import tiny_checkpoint, write_jpg

    image = tmp_path / "photo.jpg"
    write_jpg(image, (48, 64))
    refined = tiny_checkpoint(tmp_path / "refine.pt", refinement=True)
    out = tmp_path / "out"
    args = ["predict", "--input", str(image), "--task", "interactive", "--out", str(out), "--no-overlays"]
    assert main([*args, "--checkpoint", refined, "--points", "20,30,1", "40,20,0", "--points", "10,10,1"]) == 0
    got = json.loads((out / "interactive" / "photo.json").read_text())
    pred = OMGPredictor.from_checkpoint(refined)
    pred.set_image(np.asarray(Image.open(image).convert("RGB")))
    want = pred.interactive(objects=[ObjectPrompt([[20, 30], [40, 20], [10, 10]], [1, 0, 1])])
    assert len(got) == 1 and np.array_equal(rle_decode(got[0]["segmentation"]), want.masks[0])

    released = tiny_checkpoint(tmp_path / "released.pt")
    capsys.readouterr()
    assert main([*args, "--checkpoint", released, "--points", "20,30,1", "40,20,0"]) == 2
    assert "model.refinement: true" in capsys.readouterr().err.strip().splitlines()[-1]
    for bad, words in ((["20,30,1", "40,20"], "every point as X,Y"), (["20,30,2"], "the label L of X,Y,L")):
        assert main([*args, "--checkpoint", refined, "--points", *bad]) == 2
        assert words in capsys.readouterr().err


def test_the_clip_naming_tool_scores_every_ground_truth_segment_once(predictor, tiny_shapes):
    """tools/clip_mask_naming.py (the CLIP branch alone on ground-truth masks): each non-crowd segment of the first
    images is named once, against the split's classes, from its own mask on the stride-4 grid."""
    import importlib.util

    root = Path(__file__).resolve().parents[2]
    spec = importlib.util.spec_from_file_location("clip_mask_naming", root / "tools/clip_mask_naming.py")
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    doc = json.loads((Path(tiny_shapes) / "annotations/panoptic_val_ov.json").read_text())
    names, confusion = tool.name_segments(predictor, Path(tiny_shapes), "val_ov", 2)
    segments = [s for a in doc["annotations"][:2] for s in a["segments_info"] if not s.get("iscrowd")]
    assert sorted(names) == sorted(c["name"] for c in doc["categories"])
    assert sum(confusion.values()) == len(segments)
    truth = {c["id"]: c["name"] for c in doc["categories"]}
    named_as_truth = sorted(a for (a, _), n in confusion.items() for _ in range(n))
    assert named_as_truth == sorted(truth[s["category_id"]] for s in segments)
    ids = np.zeros((8, 12), dtype=np.int64)
    ids[4:8, 4:12] = 5  # the resized image fills the top-left of the padded input; the grid is its stride 4
    grid = tool.segment_masks(ids, [{"id": 5}], (16, 24), (8, 12))[0, 0, 0]
    assert grid.shape == (4, 6) and (grid > 0).nonzero().tolist() == [[1, 1], [1, 2]]


def test_a_mask_of_the_whole_image_pools_to_the_clips_own_embedding_the_naming_tools_ceiling(predictor, monkeypatch):
    """tools/clip_mask_naming.py --closeups names close-ups by the CLIP's global embedding as the ceiling of mask
    pooling: the open-vocabulary branch's pooling of a mask that covers the whole input is that embedding."""
    import importlib.util

    import torch.nn.functional as F

    from omg.data.synthetic import THING_CLASSES

    model = predictor.core.model
    x = torch.randn(2, 3, 128, 128, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        own = model.backbone.clip.encode_image(x)
        own = own[0] if isinstance(own, tuple) else own
        feats = model.extract(x * model.backbone.pixel_std + model.backbone.pixel_mean).clip_features
        pooled, nonempty = ov.clip_pooled(feats, torch.full((2, 1, 1, 32, 32), 10.0))
        pooled = model.backbone.clip_image_head(pooled)[:, 0]
    assert nonempty.all() and float((F.normalize(own, dim=-1) - F.normalize(pooled, dim=-1)).abs().max()) < 1e-5
    root = Path(__file__).resolve().parents[2]
    spec = importlib.util.spec_from_file_location("clip_mask_naming", root / "tools/clip_mask_naming.py")
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    clip = model.backbone.clip
    seen = []
    encode = clip.encode_image
    monkeypatch.setattr(clip, "encode_image", lambda x, *a, **k: seen.append(tuple(x.shape[-2:])) or encode(x, *a, **k))
    for size in (None, 64):  # the captions' 128 px, or resized (--closeup-size)
        named = tool.name_closeups(predictor, 12, size)
        assert sorted(named) == sorted(c.name for c in THING_CLASSES) and all(0 <= v <= 100 for v in named.values())
    assert seen == [(128, 128), (64, 64)], "the close-ups reach the CLIP at the captions' size, or at --closeup-size"
