"""Property tests (hypothesis) for metric invariants: a perfect prediction scores 1; permuting
segment ids changes nothing; a prediction segment that lies entirely on VOID changes nothing."""

from __future__ import annotations

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from omg.evaluation.panoptic import PQEvaluator
from omg.evaluation.semantic import SemSegEvaluator
from omg.evaluation.vps import stq, vpq

CATS = {1: {"id": 1, "isthing": 1}, 2: {"id": 2, "isthing": 1}, 7: {"id": 7, "isthing": 0}, 8: {"id": 8, "isthing": 0}}


@st.composite
def panoptic_scene(draw):
    """A random 12 x 16 id map of rectangles, its segments, and a VOID region."""
    h, w = 12, 16
    ids = np.zeros((h, w), np.int64)
    segs = {}
    n = draw(st.integers(1, 5))
    for k in range(n):
        y0, x0 = draw(st.integers(0, h - 2)), draw(st.integers(0, w - 2))
        y1, x1 = draw(st.integers(y0 + 1, h)), draw(st.integers(x0 + 1, w))
        sid = 100 + k
        ids[y0:y1, x0:x1] = sid
        segs[sid] = draw(st.sampled_from(sorted(CATS)))
    present = {int(i) for i in np.unique(ids)} - {0}
    segs = {
        sid: {"category_id": c, "iscrowd": 0, "area": int((ids == sid).sum())}
        for sid, c in segs.items()
        if sid in present
    }
    return ids, segs


SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _pq(gt, gs, pred, ps):
    ev = PQEvaluator(CATS)
    ev.process(gt, gs, pred, {k: {"category_id": v["category_id"]} for k, v in ps.items()})
    return ev.evaluate()


@SETTINGS
@given(panoptic_scene())
def test_perfect_prediction_scores_one(scene):
    ids, segs = scene
    if not segs:
        return
    r = _pq(ids, segs, ids.copy(), segs)
    assert r.summary["All"]["pq"] == 1.0 and r.summary["All"]["sq"] == 1.0 and r.summary["All"]["rq"] == 1.0
    sem = SemSegEvaluator(10)
    lab = np.full(ids.shape, 255)
    for sid, s in segs.items():
        lab[ids == sid] = s["category_id"]
    sem.process(lab, np.where(lab == 255, 0, lab))
    assert sem.evaluate().miou == 1.0


@SETTINGS
@given(panoptic_scene(), panoptic_scene(), st.randoms(use_true_random=False))
def test_permuting_segment_ids_changes_nothing(gt_scene, pred_scene, rnd):
    gt, gs = gt_scene
    pred, ps = pred_scene
    if not gs:
        return
    a = _pq(gt, gs, pred, ps)
    new_ids = list(range(5000, 5000 + len(ps)))
    rnd.shuffle(new_ids)
    mapping = dict(zip(sorted(ps), new_ids))
    pred2 = np.zeros_like(pred)
    for old, new in mapping.items():
        pred2[pred == old] = new
    ps2 = {mapping[k]: v for k, v in ps.items()}
    b = _pq(gt, gs, pred2, ps2)
    assert a.per_class == b.per_class


@SETTINGS
@given(panoptic_scene(), panoptic_scene())
def test_a_void_only_prediction_changes_nothing(gt_scene, pred_scene):
    gt, gs = gt_scene
    pred, ps = pred_scene
    if not gs or (gt != 0).all():
        return
    gt = gt.copy()
    gt[:, -2:] = 0  # a VOID strip in the ground truth
    gs = {k: {**v, "area": int((gt == k).sum())} for k, v in gs.items() if (gt == k).any()}
    if not gs:
        return
    extra = pred.copy()
    extra[:, -2:] = 9999  # a new prediction segment exactly on the VOID strip
    ps2 = {k: v for k, v in ps.items() if (extra == k).any()}
    ps2[9999] = {"category_id": 1}
    # segments the strip overwrote are re-scored without it, so compare with that prediction minus the strip
    ref_pred = pred.copy()
    ref_pred[:, -2:] = 0
    ref_ps = {k: v for k, v in ps.items() if (ref_pred == k).any()}
    assert _pq(gt, gs, extra, ps2).per_class == _pq(gt, gs, ref_pred, ref_ps).per_class


@SETTINGS
@given(st.lists(panoptic_scene(), min_size=2, max_size=3))
def test_video_metrics_perfect(frames):
    video = [(ids, segs) for ids, segs in frames]
    if not any(s for _, s in video):
        return
    gt = {"v": video}
    r = vpq(gt, gt, CATS, windows=(1, 2))
    assert all(res.summary["All"]["pq"] == 1.0 for res in r.per_k.values())
    s = stq(
        gt,
        {"v": [(ids, {k: {"category_id": v["category_id"]} for k, v in segs.items()}) for ids, segs in video]},
        10,
        {1, 2},
    )
    assert s.sq == 1.0 and s.aq in (0.0, 1.0)
