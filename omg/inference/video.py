"""Video inference pieces (docs/model.md §11.4 and §11.6): clips, query association, VOS.

A video is split into consecutive non-overlapping clips (the released ``video_split``); each clip is decoded with tube
queries; clip k's queries are matched to clip k-1's (already re-ordered) by Hungarian
matching on the cosine distance of their raw query embeddings, so query i means the same
object in every clip. Video-level class logits are the mean over clips.
"""

from __future__ import annotations

from typing import Iterable, Iterator, TypeVar

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


T = TypeVar("T")


def stream_clips(frames: Iterable[T], task: str) -> Iterator[tuple[int, list[T]]]:
    """(start, frames) of each clip of a stream of unknown length, exactly the clips ``split_clips(T, clip_length(task,
    T))`` gives for the whole video, yielded as soon as they are certain.

    The clip length needs to know whether the video has more than 15 frames: the first 16 are held until then. After
    that, with n frames seen (so T >= n) and clip length L, the official split shortens only the last ``diff`` clips
    (``diff`` = ceil(T / L) L - T < L; or, when there are fewer clips than that, the last one alone), so clip j is
    [jL, (j+1)L) in every video of T >= n frames when j < ceil(n / L) - L. At most (L + 2) L frames are held; at the
    end of the stream the remaining clips are the official split's."""
    it = iter(frames)
    held: list[T] = []
    for f in it:
        held.append(f)
        if len(held) > 15:
            break
    if not held:
        raise ValueError("the video has no frames")
    length = clip_length(task, len(held))
    seen, start, emitted = len(held), 0, 0

    def certain() -> Iterator[tuple[int, list[T]]]:
        nonlocal held, start, emitted
        while emitted < -(-seen // length) - length:
            yield start, held[:length]
            held, start, emitted = held[length:], start + length, emitted + 1

    yield from certain()
    for f in it:
        held.append(f)
        seen += 1
        yield from certain()
    clips = split_clips(seen, length)
    assert all(c == range(j * length, (j + 1) * length) for j, c in enumerate(clips[:emitted])), (seen, length, emitted)
    for c in clips[emitted:]:
        yield c.start, held[c.start - start : c.stop - start]


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


def vos_from_proposals(
    masks: np.ndarray, objectness: np.ndarray, first_frame: np.ndarray, object_ids: list[int], topk: int = 25
) -> tuple[np.ndarray, dict[int, int]]:
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
    matched = vos_match(masks[order, 0], first_frame, object_ids)  # {object id: proposal rank}
    out = np.stack([vos_paint(masks[order, t], matched) for t in range(masks.shape[1])])
    return out, {obj: int(order[p]) for obj, p in matched.items()}


def vos_match(first: np.ndarray, given: np.ndarray, object_ids: list[int]) -> dict[int, int]:
    """P x H x W bool proposals on the first frame (highest score first) and the K x H x W given masks ->
    {object id: proposal index}: Hungarian matching on IoU (every object gets a proposal when there are enough)."""
    rows, cols = solve(torch.as_tensor(-mask_iou(first, given)))
    return {object_ids[int(c)]: int(r) for r, c in zip(rows, cols)}


def vos_paint(props: np.ndarray, matched: dict[int, int]) -> np.ndarray:
    """One frame: P x H x W bool proposals (highest score first) -> H x W uint8 object ids; only the matched
    proposals are painted, from the lowest score to the highest (a higher score paints over)."""
    out = np.zeros(props.shape[1:], dtype=np.uint8)
    for obj, p in sorted(matched.items(), key=lambda kv: -kv[1]):
        out[props[p]] = obj
    return out
