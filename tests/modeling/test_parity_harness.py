"""The parity harness's own accounting (tools/parity/parity.py), without the official code: what it holds to the
tolerance, what counts as a rounding flip, and that holding our model to recorded binary masks feeds it exactly
those masks. (The harness itself runs against lxtGH/OMG-Seg outside CI: docs/parity.md.)"""

from __future__ import annotations

import importlib.util
import math
import sys

import pytest
import torch

from omg.modeling.model import ModelConfig, build_model
from tests import ROOT


@pytest.fixture(scope="module")
def parity():
    spec = importlib.util.spec_from_file_location("parity_harness", ROOT / "tools/parity/parity.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.modules.pop(spec.name, None)


def test_every_value_is_held_to_atol_plus_rtol(parity):
    tol = parity.Tolerance(1e-5, 1e-4)
    b = torch.tensor([0.0, 1.0, 100.0])
    assert parity.compare("x", b.clone(), b, tol).worst == 0
    within = parity.compare("x", b + torch.tensor([0.9e-5, 1.05e-4, 0.0100]), b, tol)
    assert within.ok and within.worst == pytest.approx(1.0, abs=0.05)
    beyond = parity.compare("x", b + torch.tensor([0.0, 0.0, 0.02]), b, tol)
    assert not beyond.ok and beyond.worst == pytest.approx(2.0, rel=0.01)
    assert parity.compare("x", b[:2], b, tol).worst == math.inf, "a shape mismatch fails"
    assert parity.compare("x", b * math.nan, b * math.nan, tol).worst == math.inf, "NaN fails, even on both sides"


def test_a_threshold_flip_counts_only_where_the_logits_round(parity):
    th = parity.Thresholds(parity.Tolerance(1e-5, 1e-4))
    theirs = torch.tensor([[0.5e-5, -2.0, 3.0]])
    th._flip("rounding", torch.tensor([[-0.5e-5, -2.0, 3.0]]) > 0, theirs > 0, torch.tensor([[-0.5e-5, -2, 3]]), theirs)
    assert th.flips["rounding"] == 1 and not th.bad
    th._flip("real", torch.tensor([[0.5e-5, 0.1, 3.0]]) > 0, theirs > 0, torch.tensor([[0.5e-5, 0.1, 3.0]]), theirs)
    assert th.flips["real"] == 1 and th.bad and th.bad[0].startswith("real: a threshold differs")


def test_panoptic_pixels_may_differ_only_on_a_rounding_tie(parity):
    tol = parity.Tolerance(1e-5, 1e-4)
    logits = torch.tensor([[4.0, 0.0, 0.0], [4.0, 0.0, 0.0]])  # two kept queries, the same score
    tie = torch.tensor([[[2.0, 5.0]], [[2.0, -5.0]]])  # pixel 0: equal scores x sigmoid, pixel 1: query 0 wins
    where = torch.tensor([[True, False]])
    assert parity.rounding_ties(logits, tie, where, tol)
    assert not parity.rounding_ties(logits, tie, torch.tensor([[False, True]]), tol)
    assert parity.rounding_ties(logits, tie, torch.zeros(1, 2, dtype=torch.bool), tol)


def _recorded(model, features, text, th) -> list:
    """Our own decode's binary masks, recorded as the harness records the official side's."""
    out = model.decode(features, text)
    sizes = [m.shape[-2:] for m in features.memories]
    for k, pred in enumerate(out.predictions):
        m = pred.masks
        th.attn.append(model.decoder.attn_mask(m, sizes[k % len(sizes)]))
        th.pool.append(m[:, :, 0] > 0)
        th.logits.append(m[:, :, 0])
    return out.predictions


def test_holding_our_model_to_recorded_masks_feeds_it_exactly_those(parity):
    torch.manual_seed(0)
    model = build_model(ModelConfig.tiny()).eval()
    text = torch.nn.functional.normalize(torch.randn(3, 1, model.backbone.variant.embed_dim), dim=-1)
    th = parity.Thresholds(parity.Tolerance(1e-5, 1e-4))
    with torch.no_grad():
        features = model.extract(torch.rand(1, 3, 64, 64) * 255)
        plain = _recorded(model, features, text, th)
        with th.hold_ours(model, "same") as calls:
            held = model.decode(features, text).predictions
        assert calls == {"attn": len(plain) - 1, "pool": len(plain), "clip": 0}
        assert all(torch.equal(a.masks, b.masks) and torch.equal(a.logits, b.logits) for a, b in zip(plain, held))
        assert not any(th.flips.values()) and not th.bad
        # "their" logit of one pixel of set 2 on the other side of 0, far from it (a real difference, not
        # rounding): reported, and their pooling mask reaches the class logits of that query (the held mask is used)
        q, y, x = (th.logits[2][0].abs() > 0.1).nonzero()[0].tolist()
        th.logits[2] = th.logits[2].clone()
        th.logits[2][0, q, y, x] = -th.logits[2][0, q, y, x]
        th.pool[2] = th.logits[2] > 0
        with th.hold_ours(model, "changed"):
            changed = model.decode(features, text).predictions
    assert th.flips["changed/set2/pool"] == 1 and th.bad
    assert not torch.equal(changed[2].logits[0, q], plain[2].logits[0, q])
    assert torch.equal(changed[2].masks, plain[2].masks), "the pooling mask changes the class branch only"
    assert model.decoder.attn_mask.__func__ is type(model.decoder).attn_mask, "the method is back after holding"
