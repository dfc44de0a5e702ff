"""Golden tests: every toy case of docs/metrics.md reproduces the official outputs given there."""

from __future__ import annotations

import math

import numpy as np
import pytest
from PIL import Image

from omg.evaluation.panoptic import PQEvaluator, pq_from_files
from tests.evaluation.metric_toys import PQ_CATEGORIES, pq_toy
from tests.helpers import write_pq_files

# ------------------------------------------------------------------------------ 1. PQ


def test_pq_golden():
    gt_pan, gt_segs, pred_pan, pred_segs = pq_toy()
    ev = PQEvaluator(PQ_CATEGORIES)
    for k in (1, 2):
        ev.process(gt_pan[k], gt_segs[k], pred_pan[k], pred_segs[k])
    r = ev.evaluate()
    s = r.summary
    assert s["All"]["pq"] == pytest.approx(0.605762, abs=1e-6) and s["All"]["n"] == 5
    assert s["All"]["sq"] == pytest.approx(0.836659, abs=1e-6) and s["All"]["rq"] == pytest.approx(0.733333, abs=1e-6)
    assert s["Things"]["pq"] == pytest.approx(0.557630, abs=1e-6) and s["Stuff"]["pq"] == pytest.approx(
        0.677960, abs=1e-6
    )
    pc = r.per_class
    assert (pc[1]["tp"], pc[1]["fp"], pc[1]["fn"]) == (1, 0, 0) and pc[1]["pq"] == pytest.approx(0.818182, abs=1e-6)
    assert (pc[2]["tp"], pc[2]["fp"], pc[2]["fn"]) == (1, 1, 1) and pc[2]["pq"] == pytest.approx(0.428571, abs=1e-6)
    assert pc[3]["pq"] == pytest.approx(0.426136, abs=1e-6) and pc[10]["pq"] == pytest.approx(0.599553, abs=1e-6)
    assert pc[11]["pq"] == pytest.approx(0.756368, abs=1e-6) and pc[11]["sq"] == pytest.approx(0.756368, abs=1e-6)


def test_pq_from_official_files(tmp_path):
    write_pq_files(tmp_path, *pq_toy())
    r = pq_from_files(
        str(tmp_path / "gt.json"), str(tmp_path / "gt"), str(tmp_path / "pred.json"), str(tmp_path / "pred")
    )
    assert r.summary["All"]["pq"] == pytest.approx(0.605762, abs=1e-6)
    assert "PQ" in r.table() and "60.576" in r.table()


def test_pq_malformed_inputs_name_file_and_id(tmp_path):
    gt_pan, gt_segs, pred_pan, pred_segs = pq_toy()
    del pred_segs[1][24]
    write_pq_files(tmp_path, gt_pan, gt_segs, pred_pan, pred_segs)
    with pytest.raises(
        ValueError, match=r"pred/000000000001.png \(image_id 1\): segment id 24 is in the prediction PNG"
    ):
        pq_from_files(
            str(tmp_path / "gt.json"), str(tmp_path / "gt"), str(tmp_path / "pred.json"), str(tmp_path / "pred")
        )
    gt_pan, gt_segs, pred_pan, pred_segs = pq_toy()
    pred_segs[2][34]["category_id"] = 99
    ev = PQEvaluator(PQ_CATEGORIES)
    with pytest.raises(ValueError, match="segment id 34 has category 99"):
        ev.process(gt_pan[2], gt_segs[2], pred_pan[2], pred_segs[2], where="img2")
    pred_segs[2][77] = {"id": 77, "category_id": 1}
    with pytest.raises(ValueError, match=r"\[77\] are in the prediction JSON but not in its PNG"):
        PQEvaluator(PQ_CATEGORIES).process(
            gt_pan[2], gt_segs[2], pred_pan[2], {**pred_segs[2], 34: {"id": 34, "category_id": 10}}
        )


def test_pq_empty_split_is_nan_not_an_error():
    ev = PQEvaluator({1: {"id": 1, "isthing": 1}})
    gt = np.zeros((4, 4), np.int64)
    gt[:2] = 5
    ev.process(gt, {5: {"category_id": 1, "iscrowd": 0, "area": 8}}, gt.copy(), {5: {"category_id": 1}})
    r = ev.evaluate()
    assert r.summary["Things"]["pq"] == 1.0 and math.isnan(r.summary["Stuff"]["pq"]) and r.summary["Stuff"]["n"] == 0


# ------------------------------------------------------------------------------ 2. COCO mask AP


def test_coco_mask_ap_golden():
    from omg.evaluation.coco_ap import coco_segm
    from tests.evaluation.metric_toys import coco_ap_toy

    gt, dets = coco_ap_toy()
    assert [d["score"] for d in dets] == [0.6787, 0.7935, 0.7159, 0.676, 0.5923, 0.7457]
    r = coco_segm(gt, dets)
    expect = {
        "AP": 0.367987,
        "AP50": 0.501650,
        "AP75": 0.501650,
        "APs": 0.633333,
        "APm": 0.0,
        "APl": -1,
        "AR1": 0.266667,
        "AR10": 0.5,
        "AR100": 0.5,
        "ARs": 0.766667,
        "ARm": 0.0,
        "ARl": -1,
    }
    for k, v in expect.items():
        assert r.stats[k] == pytest.approx(v, abs=1e-6), k
    assert r.per_class == pytest.approx({1: 0.7, 2: 0.201980, 3: 0.201980}, abs=1e-6)


def test_coco_mask_ap_edge_cases_as_pycocotools():
    """A result of a category the GT does not list is not evaluated (pycocotools: params.catIds = the GT's
    categories), counted, and fails only with strict; a category without GT has per-class AP NaN (mmdet's
    CocoMetric / detectron2's class-wise tables); the recalls are named after the maxDets they use."""
    import copy
    import math

    from omg.evaluation.coco_ap import coco_segm
    from tests.evaluation.metric_toys import coco_ap_toy

    gt, dets = coco_ap_toy()
    base = coco_segm(gt, dets)
    stray = coco_segm(gt, dets + [{**dets[0], "category_id": 9}, {**dets[1], "category_id": 9}])
    assert stray.stats == base.stats and stray.per_class == base.per_class and stray.ignored == 2
    with pytest.raises(ValueError, match="result 6: category_id 9 is not in the ground truth's categories"):
        coco_segm(gt, dets + [{**dets[0], "category_id": 9}], strict=True)
    gt4 = copy.deepcopy(gt)
    gt4["categories"].append({"id": 4, "name": "unlabelled", "supercategory": "x"})
    r4 = coco_segm(gt4, dets)
    assert math.isnan(r4.per_class[4]) and r4.per_class[1] == pytest.approx(0.7, abs=1e-6)
    wide = coco_segm(gt, dets, (100, 300, 1000))
    assert list(wide.stats)[6:9] == ["AR100", "AR300", "AR1000"]
    assert wide.stats["AR100"] == pytest.approx(base.stats["AR100"]) and wide.stats["AP"] == pytest.approx(
        base.stats["AP"]
    )
    with pytest.raises(ValueError, match="including 100"):
        coco_segm(gt, dets, (1, 10, 50))


# ------------------------------------------------------------------------------ 4. YouTube-VIS AP


def test_ytvis_ap_golden():
    from omg.evaluation.ytvis import ytvis_ap
    from tests.evaluation.metric_toys import ytvis_toy

    gt, res = ytvis_toy()
    r = ytvis_ap(gt, res)
    expect = {
        "AP": 0.205116,
        "AP50": 0.721122,
        "AP75": 0.221122,
        "APs": 0.205116,
        "APm": -1,
        "APl": -1,
        "AR1": 0.15,
        "AR10": 0.316667,
        "AR100": 0.316667,
        "ARs": 0.316667,
        "ARm": -1,
        "ARl": -1,
    }
    for k, v in expect.items():
        assert r.stats[k] == pytest.approx(v, abs=1e-6), k


# ------------------------------------------------------------------------------ 3. mIoU and 6. VSPW


def test_semantic_miou_golden():
    from omg.evaluation.semantic import SemSegEvaluator
    from tests.evaluation.metric_toys import vspw_toy

    ev = SemSegEvaluator(124)
    for (_, _), (_, red, pred) in vspw_toy().items():
        ev.process(red, pred)
    r = ev.evaluate()
    assert 100 * r.miou == pytest.approx(91.375775, abs=1e-6)
    assert 100 * r.fwiou == pytest.approx(90.116592, abs=1e-6)
    assert 100 * r.macc == pytest.approx(94.104348, abs=1e-6) and 100 * r.pacc == pytest.approx(94.522727, abs=1e-6)
    assert r.miou == pytest.approx(0.9137577519, abs=1e-10), "VSPW evaluator_test.py"
    assert r.iou[0] == pytest.approx(0.907059, abs=1e-6) and r.iou[123] == pytest.approx(0.975, abs=1e-9)
    assert np.isnan(r.iou[28]), "predicted-only class skipped"
    mm = ev.evaluate("union")
    assert round(100 * mm.miou, 2) == 73.10 and mm.iou[28] == 0.0
    with pytest.raises(ValueError, match="predicted values outside 0..123"):
        ev.process(np.zeros((2, 2), np.uint8), np.full((2, 2), 200, np.uint8))


def test_vspw_mvc_golden():
    from omg.evaluation.vspw import mean_vc
    from tests.evaluation.metric_toys import vspw_toy

    toy = vspw_toy()
    videos = []
    for name in ("toy_vid_a", "toy_vid_b"):
        videos.append((np.stack([toy[name, t][1] for t in range(20)]), np.stack([toy[name, t][2] for t in range(20)])))
    assert mean_vc(videos, 16) == pytest.approx(0.8064024390, abs=1e-10)
    assert mean_vc(videos, 8) == pytest.approx(0.8676956301, abs=1e-10)
    raw = [
        (np.stack([toy[name, t][0] for t in range(20)]), p) for name, (_, p) in zip(("toy_vid_a", "toy_vid_b"), videos)
    ]
    assert mean_vc(raw, 16) == pytest.approx(0.8064024390, abs=1e-10), "VC identical with raw GT on this toy"


# ------------------------------------------------------------------------------ 5. VPQ and STQ

VIPSEG_THINGS = None


def _vipseg_categories():
    from omg.data.catalog import get_entry

    return {c.id: {"id": c.id, "name": c.name, "isthing": int(c.isthing)} for c in get_entry("vipseg").classes}


def test_vpq_golden():
    from omg.evaluation.vps import vpq
    from tests.evaluation.metric_toys import vps_toy

    gt, pred = vps_toy()
    r = vpq(gt, pred, _vipseg_categories())
    expect = {
        1: (62.977453, 69.841270, 58.401576),
        2: (48.908135, 34.865900, 58.269624),
        4: (46.542586, 28.888889, 58.311718),
        6: (44.066315, 22.735043, 58.287163),
        8: (41.176104, 15.555556, 58.256470),
    }
    for k, (a, th, st) in expect.items():
        s = r.per_k[k].summary
        assert 100 * s["All"]["pq"] == pytest.approx(a, abs=1e-6), k
        assert 100 * s["Things"]["pq"] == pytest.approx(th, abs=1e-6) and 100 * s["Stuff"]["pq"] == pytest.approx(
            st, abs=1e-6
        )
    pc = r.per_k[2].per_class
    assert (pc[60]["tp"], pc[60]["fp"], pc[60]["fn"]) == (13, 2, 1) and (pc[48]["tp"], pc[48]["fp"], pc[48]["fn"]) == (
        0,
        7,
        7,
    )
    final = r.mean()
    assert 100 * final["All"] == pytest.approx(48.7341, abs=1e-4) and 100 * final["Things"] == pytest.approx(
        34.3773, abs=1e-4
    )
    omg = r.mean((1, 2, 4, 6))
    assert 100 * omg["All"] == pytest.approx(50.6236, abs=1e-4) and 100 * omg["Stuff"] == pytest.approx(
        58.3175, abs=1e-4
    )


def test_stq_golden():
    from omg.evaluation.vps import stq
    from tests.evaluation.metric_toys import vps_toy

    gt, pred = vps_toy()
    cats = _vipseg_categories()
    r = stq(gt, pred, 124, {c for c, i in cats.items() if i["isthing"]})
    assert r.stq == pytest.approx(0.5001782346, abs=1e-10)
    assert r.aq == pytest.approx(0.4188036326, abs=1e-10) and r.sq == pytest.approx(0.5973641271, abs=1e-10)
    assert [r.per_sequence[v]["stq"] for v in ("001_toyvideo", "002_toyvideo")] == pytest.approx(
        [0.46036497, 0.66137444], abs=1e-8
    )
    assert [r.per_sequence[v]["aq"] for v in ("001_toyvideo", "002_toyvideo")] == pytest.approx(
        [0.28792767, 0.68055556], abs=1e-8
    )


def test_stq_void_column_trap():
    """deeplab2: a 4x4 all-class-0 frame with one unlabelled prediction pixel has IoU 0.46875, not 0.9375."""
    from omg.evaluation.vps import stq

    g = np.full((4, 4), 1, np.int64)
    p = g.copy()
    p[0, 0] = 0
    gt = {"v": [(g, {1: {"category_id": 0, "iscrowd": 0, "area": 16}})]}
    pred = {"v": [(p, {1: {"category_id": 0, "area": 15}})]}
    assert stq(gt, pred, 124, set()).sq == pytest.approx(0.46875)


# ------------------------------------------------------------------------------ 7. interactive


def _noc_masks():
    a = np.zeros((64, 64), np.int32)
    a[10:40, 8:30] = 1
    b = np.zeros((64, 64), np.int32)
    b[5:55, 40:50] = 1
    b[45:55, 20:50] = 1
    c = np.zeros((64, 64), np.int32)
    c[20:30, 5:15] = 1
    c[40:60, 30:60] = 1
    d = np.ones((64, 64), np.int32)
    d[0:3, :] = -1
    return {"a": a, "b": b, "c": c, "d": d}


def _standin(gt):
    from scipy.ndimage import binary_dilation

    reach = binary_dilation(gt == 1, structure=np.ones((3, 3), bool))
    yy, xx = np.mgrid[0:64, 0:64]

    def predict(clicks):
        prob = np.zeros((64, 64))
        for c in clicks:
            if c.positive:
                prob[((yy - c.y) ** 2 + (xx - c.x) ** 2 <= 144) & reach] = 1.0
        for c in clicks:
            if not c.positive:
                prob[(yy - c.y) ** 2 + (xx - c.x) ** 2 <= 16] = 0.0
        return prob

    return predict


def test_noc_golden():
    from omg.evaluation.interactive import evaluate_sample, noc

    masks = _noc_masks()
    all_ious, clicks = {}, {}
    for name, gt in masks.items():
        clicks[name], all_ious[name] = evaluate_sample(gt, _standin(gt), max_iou_thr=0.90, pred_thr=0.49)
    r = noc(list(all_ious.values()), (0.85, 0.90))
    assert r[0.85] == {"noc": 13.0, "over_max": 2} and r[0.90] == {"noc": 17.75, "over_max": 3}
    first = {n: [(c.y, c.x, "+" if c.positive else "-") for c in cl[:6]] for n, cl in clicks.items()}
    assert first["a"] == [(20, 18, "+"), (35, 25, "+"), (33, 10, "+"), (11, 28, "+"), (11, 9, "+"), (9, 7, "-")]
    assert first["b"] == [(48, 44, "+"), (9, 44, "+"), (26, 44, "+"), (49, 24, "+"), (4, 39, "-"), (6, 41, "+")]
    assert first["c"] == [(49, 39, "+"), (24, 9, "+"), (44, 55, "+"), (57, 50, "+"), (19, 4, "-"), (21, 6, "+")]
    assert first["d"] == [(33, 30, "+"), (16, 49, "+"), (49, 50, "+"), (15, 12, "+"), (50, 12, "+"), (55, 31, "+")]
    assert all_ious["a"][:4] == pytest.approx([0.6186, 0.8042, 0.8649, 0.8632], abs=1e-4)
    assert all_ious["d"][:4] == pytest.approx([0.1130, 0.2259, 0.3389, 0.4518], abs=1e-4)


def test_an_iou_of_exactly_090_stops_the_clicks():
    """RITM's get_iou divides numpy integers (float64): 9 of 10 pixels is exactly 0.90 and ends the simulation after
    one click. In float32 it is 0.8999999762 < 0.90 and would ask for a second click."""
    from omg.evaluation.interactive import evaluate_sample, noc_metrics

    gt = np.zeros((8, 8), np.int32)
    gt[2, :] = 1
    gt[3, :2] = 1  # 10 object pixels
    calls = []

    def predict(clicks):
        calls.append(len(clicks))
        prob = (gt == 1).astype(np.float64)
        prob[3, 1] = 0.0  # 9 of the 10
        return prob

    clicks, ious = evaluate_sample(gt, predict)
    assert len(clicks) == 1 and calls == [1] and ious.tolist() == [0.9]
    assert float(np.float32(9) / np.float32(10)) < 0.9, "the float32 quotient the old code compared"
    m = noc_metrics([ious, np.array([0.5] * 20), np.array([0.5, 0.82, 0.86, 0.95])])
    assert m == {
        "NoC@80": (1 + 20 + 2) / 3,
        "NoC@85": (1 + 20 + 3) / 3,
        "NoC@90": (1 + 20 + 4) / 3,
        "NoC>=20@85": 1.0,
        "NoC>=20@90": 1.0,
    }


def test_the_miou_curve_by_click_keeps_a_stopped_objects_last_iou():
    from omg.evaluation.interactive import miou_by_click

    curve = miou_by_click([np.array([0.9]), np.array([0.5, 0.7, 0.95]), np.array([0.1] * 20)], max_clicks=4)
    assert curve == pytest.approx([(0.9 + 0.5 + 0.1) / 3, (0.9 + 0.7 + 0.1) / 3, (0.9 + 0.95 + 0.1) / 3] + [0.65])
    assert miou_by_click([]) == []


def test_single_point_miou_golden():
    from scipy.ndimage import label

    from omg.evaluation.interactive import PointMIoU, center_point

    masks = _noc_masks()
    ev = PointMIoU()
    points = {}
    for name in ("a", "b", "c"):
        gt = masks[name] == 1
        x, y = center_point(gt)
        points[name] = (x, y)
        comps, _ = label(gt, structure=np.ones((3, 3)))  # 8-connected component under the point
        ev.process(gt[None], (comps == comps[y, x])[None])
    assert points == {"a": (18, 20), "b": (44, 48), "c": (39, 49)}, "the exact-EDT points of the spec"
    r = ev.evaluate()
    assert r["miou"] == pytest.approx(0.952381, abs=1e-6) and r["count"] == 3


# ------------------------------------------------------------------------------ 8. DAVIS J&F


def test_davis_jf_golden(tmp_path):
    from omg.data.formats.davis import DAVIS_PALETTE
    from omg.evaluation.davis import davis_from_files

    for s, seq in enumerate(("toyseq-a", "toyseq-b")):
        for t in range(7):
            gt = np.zeros((60, 80), np.uint8)
            pr = np.zeros((60, 80), np.uint8)
            gt[10:40, 5 + 3 * t : 25 + 3 * t] = 1
            pr[11:40, 5 + 3 * t : 26 + 3 * t] = 1
            if s == 0:
                gt[35:55, 50:70] = 2
                if t < 4:
                    pr[37:55, 52:72] = 2
            for role, arr in (("Annotations", gt), ("results", pr)):
                (tmp_path / role / seq).mkdir(parents=True, exist_ok=True)
                img = Image.fromarray(arr)
                img.putpalette(DAVIS_PALETTE)
                img.save(tmp_path / role / seq / f"{t:05d}.png")
    (tmp_path / "val.txt").write_text("toyseq-a\ntoyseq-b\n")
    r = davis_from_files(str(tmp_path / "Annotations"), str(tmp_path / "results"), str(tmp_path / "val.txt"))
    s = r.summary
    expect = {
        "J&F-Mean": 0.745781,
        "J-Mean": 0.763356,
        "J-Recall": 0.866667,
        "J-Decay": 0.247706,
        "F-Mean": 0.728205,
        "F-Recall": 0.666667,
        "F-Decay": 0.102564,
    }
    for k, v in expect.items():
        assert s[k] == pytest.approx(v, abs=1e-6), k
    assert r.per_object["toyseq-a_2"]["J-Mean"] == pytest.approx(0.445872, abs=1e-6)
    assert r.per_object["toyseq-a_2"]["F-Mean"] == pytest.approx(0.184615, abs=1e-6)
    bad = np.array(Image.open(tmp_path / "results/toyseq-b/00003.png"))
    bad[0, 0] = 3
    img = Image.fromarray(bad)
    img.putpalette(DAVIS_PALETTE)
    img.save(tmp_path / "results/toyseq-b/00003.png")
    with pytest.raises(ValueError, match="sequence toyseq-b: the prediction has object id 3"):
        davis_from_files(str(tmp_path / "Annotations"), str(tmp_path / "results"), ["toyseq-b"])
