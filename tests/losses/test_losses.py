"""Matching and losses on hand-made cases, and a tiny model that overfits omg-shapes."""

from __future__ import annotations

import itertools
import json
import math
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from omg.data.masks import rgb2id
from omg.losses.criterion import Criterion, Target, dice_loss, sigmoid_focal_loss
from omg.losses.matcher import HungarianMatcher, bce_cost, class_cost, dice_cost, solve
from omg.losses.point_sampling import point_sample, uncertain_points
from omg.modeling.model import ModelConfig, build_model
from omg.modeling.transformer_decoder import PredictionSet

# ------------------------------------------------------------------------------ matcher


@pytest.mark.parametrize("q,m,seed", [(3, 3, 0), (5, 3, 1), (6, 4, 2), (4, 4, 3)])
def test_solve_is_optimal_against_brute_force(q, m, seed):
    cost = torch.rand(q, m, generator=torch.Generator().manual_seed(seed))
    rows, cols = solve(cost)
    best = min(sum(cost[r, c].item() for r, c in zip(perm, range(m))) for perm in itertools.permutations(range(q), m))
    assert len(rows) == m and sorted(cols.tolist()) == list(range(m))
    assert sum(cost[r, c].item() for r, c in zip(rows, cols)) == pytest.approx(best)


def test_solve_handles_non_finite_costs():
    cost = torch.tensor([[0.0, float("inf")], [float("nan"), 1.0]])
    rows, cols = solve(cost)
    assert list(zip(rows.tolist(), cols.tolist())) == [(0, 0), (1, 1)]


def test_greedy_would_be_wrong_here():
    """Row 0's cheapest column is 0, but the optimum gives it column 1."""
    cost = torch.tensor([[1.0, 2.0], [1.5, 10.0]])
    rows, cols = solve(cost)
    assert dict(zip(rows.tolist(), cols.tolist())) == {0: 1, 1: 0}


def test_cost_terms_by_hand():
    logits = torch.tensor([[math.log(3.0), 0.0, 0.0]])  # softmax = [0.6, 0.2, 0.2]
    assert class_cost(logits, torch.tensor([0, 1, -1]))[0].tolist() == pytest.approx([-0.6, -0.2, 0.0])
    pred = torch.tensor([[0.0, 0.0]])  # sigmoid 0.5 everywhere
    tgt = torch.tensor([[1.0, 0.0], [1.0, 1.0]])
    assert bce_cost(pred, tgt)[0].tolist() == pytest.approx([math.log(2), math.log(2)])
    # dice: p = 0.5, 0.5; g = (1, 0): 1 - (2*0.5 + 1) / (1 + 1 + 1) = 1/3; g = (1, 1): 1 - (2 + 1) / (1 + 2 + 1) = 1/4
    assert dice_cost(pred, tgt)[0].tolist() == pytest.approx([1 / 3, 1 / 4])


def test_matcher_recovers_a_permutation():
    """Predictions are the targets in another order (as confident logits): the matcher undoes it."""
    masks = torch.zeros(4, 1, 16, 16, dtype=torch.bool)
    masks[0, 0, :8, :8] = masks[1, 0, 8:, :8] = masks[2, 0, :8, 8:] = masks[3, 0, 8:, 8:] = True
    labels = torch.tensor([0, 1, 2, 0])
    perm = torch.tensor([2, 0, 3, 1, 1])  # 5 predictions; the last is a duplicate
    pred_masks = masks[perm].float() * 20 - 10
    pred_masks[4] = -10  # empty
    logits = torch.full((5, 4), -5.0)
    logits[torch.arange(5), torch.cat([labels[perm[:4]], torch.tensor([3])])] = 5.0
    rows, cols = HungarianMatcher(num_points=512).match(logits, pred_masks, labels, masks)
    assert dict(zip(rows.tolist(), cols.tolist())) == {0: 2, 1: 0, 2: 3, 3: 1}


# ------------------------------------------------------------------------------ loss terms


def test_focal_and_dice_by_hand():
    x = torch.tensor([0.0, 0.0])
    t = torch.tensor([1.0, 0.0])
    # p = 0.5: alpha_t (0.25 / 0.75) * 0.5^2 * ln 2
    assert sigmoid_focal_loss(x, t).tolist() == pytest.approx([0.25 * 0.25 * math.log(2), 0.75 * 0.25 * math.log(2)])
    assert dice_loss(torch.tensor([[0.0, 0.0]]), torch.tensor([[1.0, 0.0]])).tolist() == pytest.approx([1 / 3])
    big = torch.tensor([[20.0, -20.0]])
    assert dice_loss(big, torch.tensor([[1.0, 0.0]])).item() == pytest.approx(0.0, abs=1e-6)


def test_point_sample_and_uncertainty():
    m = torch.arange(16.0).view(1, 4, 4)
    # the centre of pixel (y=1, x=2) is ((2 + .5) / 4, (1 + .5) / 4)
    assert point_sample(m, torch.tensor([[2.5 / 4, 1.5 / 4]])).item() == pytest.approx(6.0)
    logits = torch.full((1, 8, 8), 10.0)
    logits[0, :, 4] = 0.0  # uncertain column
    torch.manual_seed(0)
    pts = uncertain_points(logits, num_points=400, oversample_ratio=3.0, importance_sample_ratio=0.75)
    assert pts.shape == (1, 400, 2)
    chosen = point_sample(logits, pts[:, :300]).abs().mean()
    uniform = point_sample(logits, torch.rand(1, 300, 2)).abs().mean()
    assert chosen < 0.6 * uniform, "importance-sampled points gather where |logit| is small"


def _one_set(logits, masks, obj):
    return PredictionSet(logits=logits, masks=masks, objectness=obj)


def test_criterion_terms_on_a_hand_made_case():
    """1 image, 2 queries, 1 target of class 0; query 0 is the obvious match."""
    crit = Criterion(num_points=256)
    tgt_mask = torch.zeros(1, 1, 8, 8, dtype=torch.bool)
    tgt_mask[0, 0, :, :4] = True
    target = Target(torch.tensor([0]), tgt_mask)
    logits = torch.tensor([[[0.0, 0.0, 0.0], [0.0, 0.0, 0.0]]])  # C = 2, + background
    masks = torch.zeros(1, 2, 1, 8, 8)  # logit 0 everywhere
    masks[0, 0, 0, :, :4] = 0.0
    obj = torch.zeros(1, 2, 1)
    out = crit([_one_set(logits, masks, obj)], [target])
    # class: query 0 -> class 0 (w 1), query 1 -> background (w 0.1); CE = ln 3 for both
    assert out.terms["cls"].item() == pytest.approx(2.0 * math.log(3), rel=1e-5)
    # mask: BCE at logit 0 is ln 2 whatever the target, one matched mask
    assert out.terms["mask"].item() == pytest.approx(5.0 * math.log(2), rel=1e-5)
    # objectness: focal at p = 0.5 on 1 positive + 1 negative, normalised by the class weights (1.1)
    expected_obj = (0.25 + 0.75) * 0.25 * math.log(2) / 1.1
    assert out.terms["obj"].item() == pytest.approx(2.0 * expected_obj, rel=1e-5)
    assert 0 < out.terms["dice"].item() < 5.0
    assert out.total.item() == pytest.approx(sum(v.item() for v in out.terms.values()))


def test_criterion_location_batch_is_one_to_one_without_class_or_objectness():
    crit = Criterion(num_points=128)
    masks = torch.zeros(2, 1, 8, 8, dtype=torch.bool)
    masks[0, 0, :4] = True
    masks[1, 0, 4:] = True
    target = Target(torch.tensor([-1, -1]), masks)
    good = (masks.float() * 20 - 10)[None]  # query i == target i
    swapped = good[:, [1, 0]]
    logits = torch.randn(1, 2, 3)
    obj = torch.randn(1, 2, 1)
    valid = torch.tensor([[True, True]])
    a = crit([_one_set(logits, good, obj)], [target], location=True, valid=valid)
    b = crit([_one_set(logits, swapped, obj)], [target], location=True, valid=valid)
    assert a.terms["cls"].item() == 0.0 and a.terms["obj"].item() == 0.0
    # bilinear sampling at the (importance-sampled) boundary keeps even a perfect mask's loss above 0
    assert b.terms["mask"].item() > 3 * a.terms["mask"].item(), "no re-matching: the swapped queries pay"


def test_deep_supervision_sums_every_set():
    crit = Criterion(num_points=64)
    target = Target(torch.tensor([0]), torch.ones(1, 1, 8, 8, dtype=torch.bool))
    s = _one_set(torch.zeros(1, 3, 3), torch.zeros(1, 3, 1, 8, 8), torch.zeros(1, 3, 1))
    three = crit([s, s, s], [target])
    assert len(three.per_set) == 3
    for key in ("cls", "mask", "obj"):  # the terms that do not depend on the random points' targets
        assert three.terms[key].item() == pytest.approx(3 * three.per_set[0][key].item(), rel=1e-5)
    assert three.total.item() == pytest.approx(sum(v.item() for d in three.per_set for v in d.values()), rel=1e-5)


def test_video_tubes_are_matched_as_a_whole():
    crit = Criterion(num_points=256)
    tube = torch.zeros(1, 2, 32, 32, dtype=torch.bool)
    tube[0, 0, :16] = True
    tube[0, 1, 16:] = True  # the object moves between the two frames
    target = Target(torch.tensor([0]), tube)
    right = (tube.float() * 20 - 10)[None]
    wrong = right.clone()
    wrong[:, :, 1] = right[:, :, 0]  # right in frame 0, wrong in frame 1
    logits = torch.zeros(1, 1, 2)
    obj = torch.zeros(1, 1, 1)
    a = crit([_one_set(logits, right, obj)], [target])
    b = crit([_one_set(logits, wrong, obj)], [target])
    assert b.terms["dice"].item() > 2 * a.terms["dice"].item()


# ------------------------------------------------------------------------------ learning


def _shapes_batch(root: str, n: int):
    doc = json.loads((Path(root) / "annotations/panoptic_train.json").read_text())
    cat_index = {c["id"]: i for i, c in enumerate(doc["categories"])}
    images, targets = [], []
    for ann in doc["annotations"][:n]:
        im = np.array(Image.open(Path(root) / "images/train" / ann["file_name"].replace(".png", ".jpg")))
        pan = rgb2id(np.array(Image.open(Path(root) / "annotations/panoptic_train" / ann["file_name"])))
        segs = [s for s in ann["segments_info"] if not s["iscrowd"]]
        masks = torch.stack([torch.from_numpy(pan == s["id"]) for s in segs])
        images.append(torch.from_numpy(im).permute(2, 0, 1).float())
        targets.append(Target(torch.tensor([cat_index[s["category_id"]] for s in segs]), masks))
    return torch.stack(images), targets, len(cat_index)


@pytest.mark.slow
def test_tiny_model_overfits_8_omg_shapes_images(tiny_shapes):
    torch.manual_seed(0)
    images, targets, num_classes = _shapes_batch(tiny_shapes, 8)
    model = build_model(ModelConfig.tiny("tiny_convnext"))
    text = F.normalize(torch.randn(num_classes, 1, 128, generator=torch.Generator().manual_seed(0)), dim=-1)
    crit = Criterion(num_points=1024)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=3e-4, weight_decay=0.05)
    losses = []
    t0 = time.monotonic()
    for _ in range(100):
        out = model(images, text)
        loss = crit(out.predictions, targets)
        opt.zero_grad()
        loss.total.backward()
        opt.step()
        losses.append(loss.total.item())
    first, last = np.mean(losses[:3]), np.mean(losses[-3:])
    assert first / last >= 5.0, f"loss {first:.2f} -> {last:.2f} in {len(losses)} steps ({time.monotonic() - t0:.0f}s)"
