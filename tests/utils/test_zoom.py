"""RITM's zoom-in rules (omg/utils/zoom.py; SamsungLabs/ritm_interactive_segmentation at b9b4460,
isegm/inference/transforms/zoom_in.py L30-67 and L131-175, isegm/utils/misc.py L36-79), on hand-computed cases."""

from __future__ import annotations

import numpy as np
import pytest

from omg.config import load_config
from omg.utils.typed import SchemaError
from omg.utils.zoom import Roi, ZoomIn, clicks_in, paste, roi_iou


def _mask(h=100, w=200, rows=(40, 49), cols=(60, 79)) -> np.ndarray:
    m = np.zeros((h, w), bool)
    m[rows[0] : rows[1] + 1, cols[0] : cols[1] + 1] = True
    return m


def test_the_crop_is_the_expanded_box_of_the_mask_and_the_positive_clicks():
    zoom = ZoomIn(expansion=1.4, min_crop=0.1)
    # box rows 40..49, cols 60..79: centre (44.5, 69.5), 10 x 20 -> 14 x 28 (min 0.1 x 200 = 20): rows
    # round(44.5 - 10) = 34 .. round(44.5 + 10) = 54 (height max(14, 20)), cols round(69.5 - 14) = 56 .. 84 (Python's
    # round, as RITM's: half to even)
    assert zoom.object_roi(_mask(), np.zeros((0, 2))) == Roi(34, 54, 56, 84)
    # a positive click at (x 99.5, y 45.5) widens the box to cols 60..99: centre 79.5, width 56 -> round(51.5) = 52
    # .. round(107.5) = 108
    assert zoom.object_roi(_mask(), np.array([[99.5, 45.5]])) == Roi(34, 54, 52, 108)
    # min_crop 0.4 of the longer side (200): at least 80 x 80, clamped to the image (rows 0..99)
    assert ZoomIn(min_crop=0.4).object_roi(_mask(), np.zeros((0, 2))) == Roi(4, 84, 30, 110)
    assert ZoomIn(min_crop=1.0).object_roi(_mask(), np.zeros((0, 2))) == Roi(0, 99, 0, 170)


def test_the_crop_is_kept_while_the_clicks_stay_inside_and_it_overlaps_enough():
    zoom = ZoomIn(min_crop=0.1)
    mask, none = _mask(), np.zeros((0, 2))
    assert zoom.next_roi(1, mask, none, None) is None, "the first click sees the whole image (skip_clicks 1)"
    assert zoom.next_roi(2, None, none, None) is None and zoom.next_roi(2, ~np.ones_like(mask), none, None) is None
    first = zoom.next_roi(2, mask, none, None)
    assert first == Roi(34, 54, 56, 84)
    grown = _mask(rows=(40, 50), cols=(60, 80))  # a slightly larger mask: the new crop overlaps the kept one
    assert zoom.next_roi(3, grown, np.array([[70.5, 45.5]]), first) == first
    # a positive click on the kept crop's last row is outside it (RITM's check_object_roi: row < bottom)
    assert zoom.next_roi(3, grown, np.array([[70.5, 54.5]]), first) != first
    moved = _mask(rows=(10, 19), cols=(150, 169))
    assert zoom.next_roi(3, moved, none, first) == zoom.object_roi(moved, none), "overlap below 0.5: a new crop"
    assert ZoomIn(min_crop=0.1, skip_clicks=0).next_roi(1, mask, none, None) == first


def test_roi_iou_is_the_product_of_the_row_and_column_overlaps():
    a, b = Roi(0, 9, 0, 9), Roi(5, 14, 0, 19)
    assert roi_iou(a, b) == pytest.approx((5 / 15) * (10 / 20))  # not the area IoU (50 / 250)
    assert roi_iou(a, Roi(20, 29, 0, 9)) == 0.0


def test_clicks_and_masks_move_between_the_image_and_the_crop():
    roi = Roi(10, 29, 40, 79)  # rows 10..29, columns 40..79: 20 x 40
    assert roi.box == (40, 10, 80, 30)
    pts, labels = clicks_in(roi, np.array([[45.5, 12.5], [5.5, 5.5], [80.0, 30.0]]), np.array([1, 0, 0]))
    assert pts.tolist() == [[5.5, 2.5], [40.0, 20.0]] and labels.tolist() == [1, 0]
    crop = np.zeros((20, 40), bool)
    crop[0, 0] = crop[19, 39] = True
    full = paste(crop, roi, (50, 100))
    assert full.sum() == 2 and full[10, 40] and full[29, 79]


def test_settings_are_checked_with_the_config_key():
    for bad in ({"expansion": 0.5}, {"min_crop": 0.0}, {"skip_clicks": -1}, {"recompute_iou": 2}):
        with pytest.raises(ValueError):
            ZoomIn(**bad)
    with pytest.raises(SchemaError, match=r"data\.zoom_in\.min_crop.*\(0, 1\]"):
        load_config(None, ["data.zoom_in.min_crop=2"])
    assert load_config(None, ["data.zoom_in={}"]).data.zoom_in == ZoomIn()
    assert load_config(None).data.zoom_in is None, "off by default: the released model has no corrections"
