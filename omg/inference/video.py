"""Video inference pieces (docs/model.md §11.4 and §11.6): clips, query association, VOS.

A video is split into consecutive non-overlapping clips (the released ``video_split``); each clip is decoded with tube
queries; clip k's queries are matched to clip k-1's (already re-ordered) by Hungarian
matching on the cosine distance of their raw query embeddings, so query i means the same
object in every clip. Video-level class logits are the mean over clips.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from omg.losses.matcher import solve


def clip_length(task: str, num_frames: int) -> int:
    """The released configs: VIPSeg (vps, vss) 2 if the video has more than 15 frames else 3;
    YouTube-VIS and DAVIS (vis, vos) 5 if more than 15 else 3."""
    if task in ("vps", "vss"):
        return 2 if num_frames > 15 else 3
    return 5 if num_frames > 15 else 3


def split_clips(num_frames: int, length: int) -> list[range]:
    """Consecutive clips as the released ``video_split`` (OMG-Seg ``seg/models/detectors/mask2former_vid_minvis.py``
    L18-46, overlap 0): ceil(T / length) clips whose ends are multiples of ``length``, the surplus taken one frame
    each from the last clips (17 frames at length 5: 5, 4, 4, 4); when the surplus exceeds the number of clips, the
    last clip alone is shortened (6 at 5: 5, 1)."""
    if num_frames < 1:
        raise ValueError("a video needs at least one frame")
    if length < 1:
        raise ValueError(f"clip length must be >= 1, got {length}")
    splits = -(-num_frames // length)
    ends = [(i + 1) * length for i in range(splits)]
    diff = ends[-1] - num_frames
    if diff < splits:
        for i in range(diff):
            ends[splits - 1 - i] -= diff - i
    else:
        ends[-1] -= diff
    return [range(a, b) for a, b in zip([0] + ends[:-1], ends)]


def associate(previous: torch.Tensor, current: torch.Tensor) -> torch.Tensor:
    """Q x D embeddings of the previous (re-ordered) clip and the current one -> a permutation
    ``perm`` such that ``current[perm]`` lines up with ``previous`` (cost 1 - cosine similarity)."""
    cost = 1 - F.normalize(previous.float(), dim=-1) @ F.normalize(current.float(), dim=-1).T
    rows, cols = solve(cost)
    perm = torch.empty(previous.shape[0], dtype=torch.long)
    perm[torch.as_tensor(rows)] = torch.as_tensor(cols)
    return perm


def mask_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """A x H x W and B x H x W bool -> A x B IoU."""
    a2 = a.reshape(len(a), -1).astype(np.float32)
    b2 = b.reshape(len(b), -1).astype(np.float32)
    inter = a2 @ b2.T
    union = a2.sum(1)[:, None] + b2.sum(1)[None, :] - inter
    return np.where(union > 0, inter / np.maximum(union, 1), 0.0)


def vos_from_proposals(masks: np.ndarray, objectness: np.ndarray, first_frame: np.ndarray, object_ids: list[int],
                       topk: int = 25) -> tuple[np.ndarray, dict[int, int]]:
    """Semi-supervised VOS by first-frame association, as the released code (OMG-Seg
    ``seg/models/detectors/mask2former_vid_minvis.py`` L226-244 with ``FH.proposal_postprocess``, DAVIS config
    ``num_proposals=25``).

    masks: Q x T x H x W bool proposals (video-level query order); objectness: Q scores;
    first_frame: K x H x W bool given object masks with ids ``object_ids``. The ``topk`` proposals by
    objectness are matched to the given masks on frame 0 by IoU (Hungarian over all of them: every object gets
    a proposal when there are enough, an IoU of 0 included); only the matched proposals are painted, in every
    frame, from the lowest score to the highest (a higher score paints over). Pixels of no matched proposal are
    background. -> (T x H x W uint8 ids, {object id: query}).
    """
    order = np.argsort(-objectness, kind="stable")[:topk]
    props = masks[order]  # P x T x H x W, highest score first
    t, h, w = masks.shape[1:]
    iou = mask_iou(props[:, 0], first_frame)
    rows, cols = solve(torch.as_tensor(-iou))
    prop_to_obj = {int(r): object_ids[int(c)] for r, c in zip(rows, cols)}
    out = np.zeros((t, h, w), dtype=np.uint8)
    for p in sorted(prop_to_obj, reverse=True):  # lowest score first; higher scores paint over
        out[props[p]] = prop_to_obj[p]
    return out, {obj: int(order[p]) for p, obj in prop_to_obj.items()}
