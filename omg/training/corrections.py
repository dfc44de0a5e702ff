"""Simulated corrections for training the interactive refinement (docs/model.md §7.3), as RITM trains
(SamsungLabs/ritm_interactive_segmentation ``isegm/model/is_model.py`` / ``isegm/engine/trainer.py``: a random
number of click rounds without gradient before the supervised pass, each adding a click on the current error).

A round takes the model's last masks of every location query, compares each with its target on the mask grid and
adds one click at the interior centre of the larger error: positive in a miss, negative in a spill, chosen as the
evaluation's clicker chooses (the larger distance-transform maximum; :mod:`omg.utils.clicks`). The masks become
the objects' previous masks, binary (:func:`~omg.modeling.refine.binary_prev`), as a user holds them. An object
predicted exactly gets no click that round. Unlike the evaluation's clicker, a round does not exclude the cells
clicked in earlier rounds (each round's clicker is new; at most 3 rounds, on the coarser mask grid).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from omg.losses.criterion import Target
from omg.modeling.model import OMGOutput
from omg.modeling.prompts import Prompts
from omg.modeling.refine import binary_prev, clicks_of
from omg.utils.clicks import Clicker


def targets_on_grid(targets: list[Target], num_prompts: int, grid: tuple[int, int]) -> torch.Tensor:
    """Each image's first ``num_prompts`` target masks (first frame; prompt i is target i, padding none) on the mask
    grid: N x P x h x w bool (a cell is in the object when at least half of it is)."""
    out = torch.zeros(len(targets), num_prompts, *grid, dtype=torch.bool)
    for b, t in enumerate(targets):
        m = t.masks[:num_prompts, 0].float().cpu()
        if len(m):
            out[b, : len(m)] = F.interpolate(m[:, None], size=grid, mode="area")[:, 0] >= 0.5
    return out


class ClickSimulator:
    """``prompts = simulator(output, prompts)``: one round of corrections against ``targets`` (see the module
    docstring). ``stride``: input pixels per cell of the mask grid."""

    def __init__(self, targets: list[Target], stride: int = 4):
        self.targets = targets
        self.stride = stride
        self._gts: np.ndarray | None = None  # the targets on the mask grid, made at the first round

    def __call__(self, out: OMGOutput, prompts: Prompts) -> Prompts:
        masks = out.pred_masks[:, :, 0].detach()  # N x P x h x w logits
        n, p, h, w = masks.shape
        if self._gts is None:
            self._gts = targets_on_grid(self.targets, p, (h, w)).numpy()
        gts = self._gts
        preds = (masks > 0).cpu().numpy()
        valid = prompts.valid.cpu().numpy()
        clicks, labels = clicks_of(prompts)
        new_xy = torch.zeros(n, p, 1, 2, dtype=clicks.dtype)
        new_label = torch.full((n, p, 1), -1, dtype=torch.long)
        for b in range(n):
            for i in range(p):
                if not valid[b, i] or not gts[b, i].any():
                    continue
                gt, pred = gts[b, i], preds[b, i]
                if np.array_equal(gt, pred):
                    continue
                c = Clicker(gt.astype(np.int32)).next_click(pred)
                new_xy[b, i, 0] = torch.tensor([(c.x + 0.5) * self.stride, (c.y + 0.5) * self.stride])
                new_label[b, i, 0] = int(c.positive)
        device = clicks.device
        return Prompts(
            prompts.boxes,
            prompts.valid,
            prompts.image_sizes,
            prompts.is_point,
            torch.cat([clicks, new_xy.to(device)], 2),
            torch.cat([labels, new_label.to(device)], 2),
            binary_prev(masks),
        )
