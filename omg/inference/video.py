"""Video inference pieces (model spec section 11.4 and 11.6): clips, query association, VOS.

A video is split into consecutive non-overlapping clips; each clip is decoded with tube
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
    if num_frames < 1:
        raise ValueError("a video needs at least one frame")
    return [range(s, min(s + length, num_frames)) for s in range(0, num_frames, length)]


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
    """Semi-supervised VOS by first-frame association (spec 11.6).

    masks: Q x T x H x W bool proposals (video-level query order); objectness: Q scores;
    first_frame: K x H x W bool given object masks with ids ``object_ids``.
    The ``topk`` proposals by objectness are painted per frame from the lowest to the highest
    score; on frame 0 they are matched to the given masks by IoU (Hungarian); a matched
    proposal carries its object's id through the whole video. -> (T x H x W uint8 ids, {object id: query}).
    """
    order = np.argsort(-objectness, kind="stable")[:topk]
    props = masks[order]  # P x T x H x W, highest score first
    t, h, w = masks.shape[1:]
    iou = mask_iou(props[:, 0], first_frame)
    rows, cols = solve(torch.as_tensor(-iou))
    prop_to_obj = {int(r): object_ids[int(c)] for r, c in zip(rows, cols) if iou[r, c] > 0}
    out = np.zeros((t, h, w), dtype=np.uint8)
    for p in range(len(order) - 1, -1, -1):  # lowest score first; higher scores paint over
        value = prop_to_obj.get(p, 0)
        out[props[p]] = value
    return out, {obj: int(order[p]) for p, obj in prop_to_obj.items()}
