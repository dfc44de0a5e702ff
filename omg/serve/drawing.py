"""Drawing the web app's answers: masks as an RGBA overlay with outlines, label maps, PNG as base64."""

from __future__ import annotations

import base64
import colorsys
import io

import numpy as np
from PIL import Image


def png_b64(array: np.ndarray) -> str:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG", optimize=False)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def palette(n: int) -> np.ndarray:
    """``n`` distinct saturated colours (golden-ratio hues), n x 3 uint8."""
    out = np.zeros((max(n, 1), 3), dtype=np.uint8)
    for i in range(n):
        out[i] = np.array(colorsys.hsv_to_rgb((i * 0.618033988749895 + 0.08) % 1.0, 0.85, 0.95)) * 255
    return out


#: the opacity of a mask's fill in the overlays (0-255); outlines are opaque. The page draws the legend's swatches so.
ALPHA = 140


def overlay(label_map: np.ndarray, colors: np.ndarray, alpha: int = ALPHA) -> np.ndarray:
    """H x W label map (0 = none, k = colors[k - 1]) -> RGBA overlay with outlines drawn opaque."""
    h, w = label_map.shape
    rgba = np.zeros((h, w, 4), dtype=np.uint8)
    on = label_map > 0
    rgba[on, :3] = colors[label_map[on] - 1]
    rgba[on, 3] = alpha
    edge = np.zeros_like(on)
    edge[1:, :] |= label_map[1:, :] != label_map[:-1, :]
    edge[:, 1:] |= label_map[:, 1:] != label_map[:, :-1]
    edge &= on
    rgba[edge, 3] = 255
    return rgba
