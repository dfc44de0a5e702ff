"""What several test modules (and a benchmark) share: the tiny omg-shapes options, a random tiny checkpoint with the
omg-shapes label space, the trained interactive checkpoint's recipe, and writers of small official-format files.
Fixtures stay in conftest.py; this module holds plain functions and constants, imported where they are used."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
from PIL import Image

from omg.data.masks import id2rgb
from tests import ROOT

#: a small omg-shapes: every split and format, a few seconds to generate
TINY_SHAPES = dict(
    image_size=64,
    num_train_images=16,
    num_val_images=6,
    num_val_ov_images=4,
    num_train_videos=3,
    num_val_videos=2,
    min_frames=8,
    max_frames=10,
    crowd_prob=0.4,
    void_prob=0.4,
)


def train_interactive(tiny_shapes: str, tmp: Path) -> None:
    """A tiny OMG-Seg with interactive refinement (docs/model.md §7.3) trained for 150 CPU steps on tiny omg-shapes
    (interactive prompts, half of them boxes, + panoptic), so that a click or a box lands a mask on the right shape
    and a negative click takes pixels out of it: the serve, browser and export tests' model (deterministic, ~28 s;
    on the browser test's sample a click's IoU with the shape is 0.48 and a box's 0.39, the tests ask > 0.3. Boxes
    are fragile at this size: with a quarter of the prompts boxes, that box fell to 0.0)."""
    import random

    import torch

    from omg.config import OptimConfig
    from omg.data.catalog import Sampling, load_catalog
    from omg.data.ingest import BatchBuilder, DatasetSpec, IngestConfig, PlanDataset
    from omg.losses.criterion import Criterion
    from omg.modeling.checkpoint import save_checkpoint
    from omg.modeling.model import ModelConfig, build_model
    from omg.modeling.text import TextEmbedder
    from omg.training.optim import build_optimizer, build_scheduler
    from omg.training.step import train_step
    from omg_platform.pipelines.preprocess import preprocess_split

    catalog = load_catalog()
    for name in ("omg-shapes", "omg-shapes-sam"):
        preprocess_split(
            catalog[name], "train", str(tmp / "shards"), tiny_shapes, shard_size=8, progress=False, log=lambda _: None
        )
    ingest = IngestConfig(
        crop_size=(64, 64),
        batch_size=4,
        num_prompts=6,
        box_prompt_prob=0.5,
        datasets=(
            DatasetSpec("omg-shapes", str(tmp / "shards/omg-shapes/train"), Sampling(0.5, "pseudo_video")),
            DatasetSpec(
                "omg-shapes-sam", str(tmp / "shards/omg-shapes-sam/train"), Sampling(2.0, "image", (0.75, 1.5))
            ),
        ),
    )
    builder = BatchBuilder(ingest)
    torch.manual_seed(0)
    random.seed(0)  # the refinement's correction rounds are drawn with Python's random (omg/training/step.py)
    model = build_model(
        ModelConfig.tiny(
            "tiny_convnext_learned",
            location_content="sampled",
            hidden_dim=64,
            num_queries=20,
            dec_layers=3,
            enc_layers=1,
            dec_ffn_dim=128,
            enc_ffn_dim=128,
            nheads=4,
            refinement=True,
        )
    )
    text = TextEmbedder(model.backbone).embed(builder.label_space.vocabulary)
    optim = OptimConfig(
        lr=1e-3,
        base_batch=4,
        grad_clip=1.0,
        warmup_iters=20,
        max_steps=100000,
        epochs=12,
        milestones=(11, 12),
        num_points=1024,
    )
    opt = build_optimizer(model, optim, 4, 1.0)
    sched = build_scheduler(opt, optim, 1000, 100000)
    criterion = Criterion(num_points=optim.num_points)
    steps, epoch = 0, 0
    model.train()
    # the weights depend on PyTorch's thread count (the order of float sums): always 2, the one the tests' clicks
    # were checked on, whatever the machine's cores or the pytest process's share of them (with 1 thread the served
    # click of test_serve lands at IoU 0.05 instead of 0.45; the 15 val shapes' mean IoU 0.25 instead of 0.33)
    threads = torch.get_num_threads()
    torch.set_num_threads(INTERACTIVE_THREADS)
    try:
        while steps < INTERACTIVE_STEPS:
            plan = PlanDataset(builder, epoch)
            for i in range(len(plan)):
                train_step(model, plan[i], text, criterion, opt, sched, optim.grad_clip, "cpu", refine_rounds=3)
                steps += 1
                if steps >= INTERACTIVE_STEPS:
                    break
            epoch += 1
    finally:
        torch.set_num_threads(threads)
    save_checkpoint(
        model, str(tmp / "interactive.pt"), {"label_space": builder.label_space.to_dict(), "test_size": [64, 64]}
    )


INTERACTIVE_STEPS = 150
INTERACTIVE_THREADS = 2


#: the omg-shapes training label space of a random tiny checkpoint (LabelSpace.to_dict form)
LABEL_SPACE = {
    "names": [["circle", "disc"], ["square"], ["triangle"], ["star"], ["sky"], ["grass"], ["water"], ["sand"]],
    "isthing": [True] * 4 + [False] * 4,
    "mappings": {
        "omg-shapes": {"1": 0, "2": 1, "3": 2, "4": 3, "11": 4, "12": 5, "13": 6, "14": 7},
        "omg-shapes-vps": {"1": 0, "2": 1, "3": 2, "4": 3, "11": 4, "12": 5, "13": 6, "14": 7},
    },
    "class_agnostic": [],
}


def write_jpg(path: Path, size: tuple[int, int], seed: int = 0) -> None:
    """A random RGB JPEG of ``size`` (height, width) at ``path`` (folders made)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 255, (*size, 3), dtype=np.uint8)).save(path, quality=95)


def tiny_checkpoint(path, seed: int = 0, refinement: bool = False) -> str:
    """A random tiny OMG-Seg checkpoint with the omg-shapes label space (``LABEL_SPACE``), test size 64, at ``path``
    (outputs depend on ``seed`` only): for tests of serving and tracking, where the weights do not matter.
    ``refinement``: the model takes positive and negative clicks (docs/model.md §7.3)."""
    import torch

    from omg.modeling.checkpoint import save_checkpoint
    from omg.modeling.model import ModelConfig, build_model

    torch.manual_seed(seed)
    model = build_model(ModelConfig.tiny(refinement=refinement))
    save_checkpoint(model, str(path), {"label_space": LABEL_SPACE, "test_size": [64, 64]})
    return str(path)


def write_pq_files(tmp_path, gt_pan, gt_segs, pred_pan, pred_segs):
    """Official COCO panoptic files (gt/ and pred/ PNGs + JSONs) of the PQ toy under ``tmp_path``."""
    from tests.evaluation.metric_toys import PQ_CATEGORIES

    for role, pans, segs in (("gt", gt_pan, gt_segs), ("pred", pred_pan, pred_segs)):
        (tmp_path / role).mkdir()
        anns = []
        for k in pans:
            Image.fromarray(id2rgb(pans[k])).save(tmp_path / role / f"{k:012d}.png")
            anns.append({"image_id": k, "file_name": f"{k:012d}.png", "segments_info": list(segs[k].values())})
        doc = {
            "annotations": anns,
            "categories": list(PQ_CATEGORIES.values()),
            "images": [{"id": k, "file_name": f"{k:012d}.jpg", "height": 96, "width": 128} for k in pans],
        }
        (tmp_path / f"{role}.json").write_text(json.dumps(doc))


def gt_segment(root: str, sample: str, min_area: int = 120, category: int | None = None):
    """(mask, centroid) of the largest thing segment (of ``category`` if given) of a ``val`` or ``val_ov`` sample,
    from the COCO panoptic ground truth."""
    from omg.data.masks import rgb2id

    split = "val_ov" if (Path(root) / "images" / "val_ov" / f"{sample}.jpg").exists() else "val"
    doc = json.loads((Path(root) / "annotations" / f"panoptic_{split}.json").read_text())
    ann = next(a for a in doc["annotations"] if a["file_name"].startswith(sample))
    png = Path(root) / "annotations" / f"panoptic_{split}" / ann["file_name"]
    ids = rgb2id(np.asarray(Image.open(png).convert("RGB")))
    things = {c["id"] for c in doc["categories"] if c["isthing"]} if category is None else {category}
    segs = [
        s for s in ann["segments_info"] if s["category_id"] in things and not s.get("iscrowd") and s["area"] >= min_area
    ]
    if not segs:
        return None
    seg = max(segs, key=lambda s: s["area"])
    m = ids == seg["id"]
    ys, xs = np.nonzero(m)
    # a pixel of the shape near its centroid (the centroid of a star may fall outside it)
    k = int(np.argmin((xs - xs.mean()) ** 2 + (ys - ys.mean()) ** 2))
    return m, (float(xs[k]) + 0.5, float(ys[k]) + 0.5)


#: the README sections whose commands a newcomer runs after `make demo`
README_SECTIONS = ("Using a model", "Your own data in four commands")


def readme_blocks(heading: str) -> list[tuple[str, str]]:
    """(language, code) of the fenced blocks of the README's section ``## heading``."""
    text = (ROOT / "README.md").read_text()
    assert f"\n## {heading}\n" in text, f"README has no section {heading!r}"
    section = text.split(f"\n## {heading}\n", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```(bash|python)\n(.*?)```", section, re.S)


def readme_commands(code: str) -> list[str]:
    """A bash block's commands: continuation lines joined, comments removed."""
    joined = re.sub(r"\\\n\s*", " ", code)
    return [c for c in (re.sub(r"(^|\s+)#(\s.*)?$", "", line).strip() for line in joined.splitlines()) if c]
