"""Training ingest: label merging on real class lists, balanced sampling, augmentation, prompts,
determinism, and the same batches through plain PyTorch and through Ray Data."""

from __future__ import annotations

import hashlib
from collections import Counter

import numpy as np
import pytest
import torch

from omg.data.catalog import Sampling, get_entry, load_catalog
from omg.data.ingest import BatchBuilder, DatasetSpec, IngestConfig, PlanDataset
from omg.data.labels import IGNORE, DatasetClasses, LabelSpace, merge_label_spaces
from omg.data.sampling import epoch_plan, worker_plan
from omg.data.transforms import Augment, augment, clip_indices, sample_prompts
from omg.training.inputs import to_model_inputs
from omg_platform.pipelines.preprocess import preprocess_split

# ------------------------------------------------------------------------------ label space


def test_merged_label_space_of_the_paper():
    """COCO + YT-VIS 19 + VIPSeg + Cityscapes = 136 things + 101 stuff; with YT-VIS 21: 139 + 101
    (docs/model.md §8.2)."""

    def merged(names):
        return merge_label_spaces([DatasetClasses.from_entry(get_entry(n)) for n in names])

    four = merged(["coco-panoptic", "youtube-vis-2019", "vipseg", "cityscapes-panoptic"])
    assert (four.num_things, four.num_classes - four.num_things) == (136, 101)
    five = merged(["coco-panoptic", "youtube-vis-2019", "youtube-vis-2021", "vipseg", "cityscapes-panoptic"])
    assert (five.num_things, five.num_classes - five.num_things) == (139, 101)
    # synonym matching: YouTube-VIS "person", Cityscapes "person" and COCO "person" are one class
    person = five.map("coco-panoptic", 1)
    assert five.map("youtube-vis-2019", 1) == five.map("cityscapes-panoptic", 11) == person
    assert five.map("youtube-vis-2021", 26) == person
    # things and stuff stay apart: Cityscapes' stuff "traffic light" is not COCO's thing "traffic light"
    assert five.map("cityscapes-panoptic", 6) != five.map("coco-panoptic", 10)
    assert not five.vocabulary.isthing[five.map("cityscapes-panoptic", 6)]
    assert all(five.vocabulary.isthing[:139]) and not any(five.vocabulary.isthing[139:])
    again = LabelSpace.from_dict(five.to_dict())
    assert again == five


def test_class_agnostic_and_heldout():
    cat = load_catalog()
    ls = merge_label_spaces(
        [DatasetClasses.from_entry(cat[n]) for n in ("omg-shapes", "omg-shapes-sam", "omg-shapes-vps")]
    )
    assert ls.num_classes == 8, "hexagon and cross are held out of the training vocabulary"
    assert ls.map("omg-shapes-sam", 3) == IGNORE
    with pytest.raises(KeyError, match="category 5 of dataset 'omg-shapes'"):
        ls.map("omg-shapes", 5)


# ------------------------------------------------------------------------------ sampling


def test_sampler_proportions_match_repeat_factors():
    sizes = {"coco": 1000, "ytvis": 100, "city": 60}
    repeat = {"coco": 1.0, "ytvis": 15.0, "city": 2.5}
    counts = Counter()
    for epoch in range(4):
        for item in epoch_plan(sizes, repeat, batch_size=1, seed=0, epoch=epoch):
            counts[item.dataset] += 1
    expected = {k: 4 * sizes[k] * repeat[k] for k in sizes}
    for k in sizes:
        assert counts[k] == pytest.approx(expected[k], rel=0.02), (k, counts[k], expected[k])


def test_plan_is_deterministic_and_split_over_workers():
    sizes, repeat = {"a": 50, "b": 20}, {"a": 1.0, "b": 2.0}
    p1 = epoch_plan(sizes, repeat, 2, seed=3, epoch=1)
    assert p1 == epoch_plan(sizes, repeat, 2, seed=3, epoch=1)
    assert p1 != epoch_plan(sizes, repeat, 2, seed=3, epoch=2)
    assert all(len(set(it.indices)) >= 1 and all(it.dataset == it.dataset for _ in it.indices) for it in p1)
    w0, w1 = worker_plan(p1, 0, 2), worker_plan(p1, 1, 2)
    assert len(w0) == len(w1) == len(p1) // 2 and not set(map(id, w0)) & set(map(id, w1))
    with pytest.raises(ValueError):
        worker_plan(p1, 2, 2)


# ------------------------------------------------------------------------------ transforms


def test_augment_shares_resize_and_flip_across_frames():
    frames = np.zeros((2, 40, 60, 3), np.uint8)
    masks = np.zeros((1, 2, 40, 60), bool)
    masks[0, :, 10:20, 5:15] = True
    frames[:, 10:20, 5:15] = 255
    rng = np.random.default_rng(0)
    f, m, valid = augment(frames, masks, Augment((32, 48), (0.5, 1.5)), rng)
    assert f.shape == (2, 32, 48, 3) and m.shape == (1, 2, 32, 48)
    assert np.array_equal(m[0, 0], m[0, 1]) and np.array_equal(f[0], f[1])
    assert np.array_equal(m[0, 0], f[0, ..., 0] > 127), "masks stay aligned with the pixels"
    assert not f[:, valid[0] :].any() and not f[:, :, valid[1] :].any(), "padding is zero"


def test_id_maps_pad_with_the_ignore_value():
    from omg.data.transforms import AugmentParams, apply

    p = AugmentParams(size=(4, 4), flip=False, offsets=((0, 0),), valid=(4, 4))
    ids = np.zeros((1, 1, 4, 4), np.int64)  # class 0 everywhere (a semantic map)
    _, m = apply(p, (6, 6), np.zeros((1, 4, 4, 3), np.uint8), ids, fill=255)
    assert (m[0, 0, :4, :4] == 0).all() and (m[0, 0, 4:] == 255).all() and (m[0, 0, :, 4:] == 255).all()


def test_the_random_resize_keeps_the_ratio_as_mmcv():
    """mmcv RandomResize(scale=(1280, 736), keep_ratio=True): long side <= s x 1280 and short side <= s x 736, for a
    portrait image too (it used to be fit into the landscape 736 x 1280 box: ~25 % smaller)."""
    from omg.data.transforms import draw

    aug = Augment((736, 1280), (1.0, 1.0))
    portrait = draw(aug, (1000, 600), 1, np.random.default_rng(0))
    landscape = draw(aug, (600, 1000), 1, np.random.default_rng(0))
    assert portrait.size == (1227, 736) and landscape.size == (736, 1227)


def test_pseudo_video_crops_are_independent():
    frames = np.random.default_rng(0).integers(0, 255, (2, 64, 64, 3), dtype=np.uint8)
    frames[1] = frames[0]
    f, _, _ = augment(
        frames, np.zeros((0, 2, 64, 64), bool), Augment((32, 32), (2.0, 2.0), 0.0, True), np.random.default_rng(1)
    )
    assert not np.array_equal(f[0], f[1])


def test_clip_indices_and_prompts():
    rng = np.random.default_rng(0)
    for _ in range(20):
        idx = clip_indices(10, 2, 2, rng)
        assert idx[1] - idx[0] == 2 and 0 <= idx[0] and idx[1] < 10
    assert clip_indices(3, 2, 2, rng) == [0, 2], "the interval is kept (the released VideoClipSample)"
    with pytest.raises(ValueError, match="needs 3 frames, the video has 2"):
        clip_indices(2, 2, 2, rng)
    masks = np.zeros((3, 20, 20), bool)
    masks[0, :5, :5] = masks[1, 10:, 10:] = masks[2, 5:8, 12:18] = True
    boxes, is_point, order = sample_prompts(masks, 7, rng)
    assert order.tolist() == [0, 1, 2, 0, 1, 2, 0], "fewer segments than prompts: the list repeats"
    for b, k in zip(boxes, order):
        x, y = int(b[0]), int(b[1])
        assert masks[k, y, x], "a point lies inside its segment"
    boxes, is_point, _ = sample_prompts(masks, 3, rng, box_prob=1.0)
    assert not is_point.any() and boxes[1].tolist() == [10, 10, 20, 20]


# ------------------------------------------------------------------------------ batches from shards


@pytest.fixture(scope="module")
def shard_root(ray_local, tiny_shapes, tmp_path_factory):
    out = tmp_path_factory.mktemp("shards")
    catalog = load_catalog()
    for name in ("omg-shapes", "omg-shapes-sam", "omg-shapes-vis", "omg-shapes-vps"):
        preprocess_split(
            catalog[name], "train", str(out), tiny_shapes, shard_size=8, progress=False, log=lambda _: None
        )
    return out


def _config(root, **kw) -> IngestConfig:
    base = dict(
        crop_size=(64, 64),
        batch_size=2,
        num_prompts=6,
        seed=0,
        datasets=(
            DatasetSpec("omg-shapes", str(root / "omg-shapes/train"), Sampling(1.0, "pseudo_video")),
            DatasetSpec("omg-shapes-sam", str(root / "omg-shapes-sam/train"), Sampling(1.0, "image", (0.5, 2.0))),
            DatasetSpec("omg-shapes-vis", str(root / "omg-shapes-vis/train"), Sampling(2.0, "clip")),
            DatasetSpec("omg-shapes-vps", str(root / "omg-shapes-vps/train"), Sampling(2.0, "clip")),
        ),
    )
    base.update(kw)
    return IngestConfig(**base)


def test_a_video_too_short_for_the_clip_is_replaced_by_another(shard_root):
    """The released VideoClipSample returns None for a video shorter than length + (length - 1)(interval - 1) and
    mmengine refetches a random index: the clip comes from a long enough video, with the interval kept."""
    vis = str(shard_root / "omg-shapes-vis/train")
    frames = {i: BatchBuilder(_config(shard_root)).reader("omg-shapes-vis")[i].num_frames for i in range(3)}
    need = max(frames.values())
    short = min(frames, key=frames.get)
    assert frames[short] < need, frames
    interval = 2 if need % 2 else 1
    length = (need - 1) // interval + 1  # spans exactly `need` frames: only the longest videos qualify
    builder = BatchBuilder(
        _config(
            shard_root,
            datasets=(
                DatasetSpec("omg-shapes-vis", vis, Sampling(1.0, "clip", clip_length=length, clip_interval=interval)),
            ),
        )
    )
    index, sample = builder.long_enough(
        "omg-shapes-vis", short, builder.reader("omg-shapes-vis")[short], np.random.default_rng(0)
    )
    assert index != short and sample.num_frames >= need
    assert builder.example("omg-shapes-vis", short, seed=3)["images"].shape[0] == length
    never = BatchBuilder(
        _config(
            shard_root,
            datasets=(
                DatasetSpec("omg-shapes-vis", vis, Sampling(1.0, "clip", clip_length=need + 1, clip_interval=1)),
            ),
        )
    )
    never.MAX_REFETCH = 20
    with pytest.raises(ValueError, match=f"omg-shapes-vis: no video of at least {need + 1} frames"):
        never.example("omg-shapes-vis", 0, seed=0)


def test_batches_have_the_promised_shapes(shard_root):
    builder = BatchBuilder(_config(shard_root))
    seen = {}
    for item in builder.plan(0):
        batch = builder.build(item)
        seen.setdefault(batch["dataset"], batch)
    assert set(seen) == {"omg-shapes", "omg-shapes-sam", "omg-shapes-vis", "omg-shapes-vps"}
    img = seen["omg-shapes"]
    assert img["images"].shape == (2, 2, 64, 64, 3) and img["kind"] == "object"
    assert img["masks"].shape[1:] == (2, 64, 64) and img["counts"].sum() == len(img["labels"]) == len(img["masks"])
    assert set(img["labels"].tolist()) <= set(range(8))
    sam = seen["omg-shapes-sam"]
    assert sam["kind"] == "location" and sam["boxes"].shape == (2, 6, 4) and (sam["labels"] == IGNORE).all()
    assert sam["masks"].shape == (12, 1, 64, 64) and (sam["masks"].reshape(12, -1).sum(1) >= 32).all()
    images, targets, prompts = to_model_inputs(sam)
    assert images.shape == (2, 1, 3, 64, 64) and prompts.boxes.shape == (2, 6, 4) and len(targets) == 2
    assert (prompts.boxes[..., 2] - prompts.boxes[..., 0] <= 6.0 + 1e-6)[prompts.is_point].all(), (
        "points -> ±3 px boxes"
    )
    vid = seen["omg-shapes-vis"]
    assert vid["images"].shape[1] == 2 and vid["masks"].shape[1] == 2
    assert set(vid["labels"].tolist()) <= {0, 1, 2, 3}, "YouTube-VIS things map into the merged space"


def test_ingest_is_deterministic_per_seed_and_rank(shard_root):
    a = PlanDataset(BatchBuilder(_config(shard_root)), epoch=0, rank=0, world=2)
    b = PlanDataset(BatchBuilder(_config(shard_root)), epoch=0, rank=0, world=2)
    c = PlanDataset(BatchBuilder(_config(shard_root)), epoch=0, rank=1, world=2)
    for i in range(4):
        x, y = a[i], b[i]
        assert x["dataset"] == y["dataset"] and np.array_equal(x["images"], y["images"])
        assert np.array_equal(x["masks"], y["masks"])
    assert [it.to_dict() for it in a.items] != [it.to_dict() for it in c.items]


def test_torch_dataloader_path(shard_root):
    ds = PlanDataset(BatchBuilder(_config(shard_root)), epoch=0)
    loader = torch.utils.data.DataLoader(ds, batch_size=None, num_workers=0)
    n = 0
    for batch in loader:
        images, targets, prompts = to_model_inputs(batch)
        assert images.dim() == 5 and (prompts is not None) == (batch["kind"] == "location")
        n += 1
        if n == 6:
            break
    assert n == 6


def test_ray_data_path_yields_the_plan(shard_root, ray_local):
    from omg_platform.pipelines.ingest import iter_shard_batches, plan_rows, ray_training_dataset

    cfg = _config(shard_root)
    builder = BatchBuilder(cfg)
    ds = ray_training_dataset(cfg, builder.label_space, epochs=1, concurrency=1)

    def fingerprint(b):
        return (
            b["dataset"],
            hashlib.sha256(np.ascontiguousarray(b["images"]).tobytes()).hexdigest(),
            hashlib.sha256(np.ascontiguousarray(b["masks"]).tobytes()).hexdigest(),
        )

    expected = Counter(fingerprint(builder.build(r)) for r in plan_rows(builder, 1))
    got = Counter()
    shapes = set()
    for batch in iter_shard_batches(ds):  # order is Ray's; content is the plan's
        got[fingerprint(batch)] += 1
        images, targets, prompts = to_model_inputs(batch)
        shapes.add(tuple(images.shape[2:]))
    assert got == expected and shapes == {(3, 64, 64)}
