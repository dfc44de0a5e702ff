"""Contrastive pretraining of the tiny CLIPs on omg-shapes captions: open_clip's loss trains both towers, and the
saved weights are what ``model.pretrained`` loads."""

from __future__ import annotations

import pytest
import torch

from omg.data.captions import CaptionOptions, generate_captions
from omg.training.clip_pretrain import (
    CaptionPairs,
    CaptionRegions,
    ClipPretrainConfig,
    build_clip,
    lr_at,
    pretrain,
    region_loss,
    region_texts,
    retrieval_accuracy,
    save_weights,
)


@pytest.fixture(scope="module")
def captions(tmp_path_factory) -> str:
    root = str(tmp_path_factory.mktemp("captions"))
    generate_captions(root, opts=CaptionOptions(num_train=48, num_val=16), progress=False)
    return root


def test_a_few_steps_train_both_towers_and_the_weights_load_as_pretrained(captions, tmp_path):
    from omg.modeling.backbone import CLIPBackbone
    from omg.modeling.variants import get_variant

    config = ClipPretrainConfig(steps=4, batch_size=12, warmup_steps=1)
    seen = []
    model, tokenizer, losses = pretrain(config, captions, on_step=lambda s, loss: seen.append(s))
    assert seen == [1, 2, 3, 4] and len(losses) == 4 and all(torch.isfinite(torch.tensor(losses)))
    fresh = CLIPBackbone(get_variant("tiny_convnext"))
    before = {k: v.clone() for k, v in fresh.clip.state_dict().items()}
    changed = [k for k, v in model.state_dict().items() if not torch.equal(v, before[k])]
    assert any(k.startswith("visual.") for k in changed) and any(k.startswith("transformer.") for k in changed)
    save_weights(model, str(tmp_path / "clip.pt"))
    assert "checkpoint" in fresh.load_pretrained(str(tmp_path / "clip.pt"))
    tokens = tokenizer(["a small red striped square on the left"])
    with torch.no_grad():
        model.eval()
        assert torch.allclose(
            fresh.encode_text(tokens), torch.nn.functional.normalize(model.encode_text(tokens), dim=-1), atol=1e-6
        ), "the segmentation backbone now embeds text as the pretrained CLIP"
    acc = retrieval_accuracy(model, tokenizer, CaptionPairs(captions, "val", "tiny_convnext"))
    assert acc["n"] == 16 and 0.0 <= acc["image_to_text"] <= 1.0


def test_the_region_loss_pools_a_segment_as_the_open_vocabulary_branch_pools_a_mask(captions):
    """A segment's region embedding is the open-vocabulary branch's for that mask (``clip_logits``, the released
    mechanism), and a mask of the whole image pools to the CLIP's own global embedding; a few steps with the region
    loss train the CLIP."""
    import numpy as np
    import torch.nn.functional as F

    from omg.inference.open_vocab import clip_logits
    from omg.modeling.backbone import CLIPBackbone
    from omg.modeling.variants import get_variant

    pairs = CaptionPairs(captions, "train", "tiny_convnext")
    regions = CaptionRegions(captions, "train", pairs)
    assert [name for _, name, _ in regions.classes][4:6] == ["hexagon", "cross"], "the held-out shapes too"
    clip, tokenizer = build_clip("tiny_convnext")
    clip.eval()
    backbone = CLIPBackbone.wrapping(clip, get_variant("tiny_convnext"))
    texts = region_texts(regions, np.random.default_rng(0))
    from omg.modeling.text import VILD_TEMPLATES

    assert len(texts) == len(regions.classes)
    assert texts[4] in {t.format(syn) for t in VILD_TEMPLATES for syn in regions.classes[4][2]}, "a ViLD prompt"
    text = F.normalize(clip.encode_text(tokenizer(texts)), dim=-1)
    with torch.no_grad():
        loss, right = region_loss(backbone, regions, [0, 1], pairs.pixels([0, 1], 128), 256, text, 100.0)
        # by hand, through the inference's own function: image 0 at 256, its segments as stride-4 mask logits
        labels, masks = regions.segments(0)
        feats = backbone(pairs.pixels([0], 256))[-1]
        m = F.interpolate(F.interpolate(masks[:, None], size=(256, 256), mode="nearest"), size=(64, 64), mode="area")
        logits, nonempty = clip_logits(backbone, feats[:, :, None], (m * 20 - 10)[None], text[:, None], 100.0)
        ce = F.cross_entropy(logits[0][nonempty[0]], labels[nonempty[0]], reduction="sum")
        # the whole image: the global embedding (at the CLIP's input size, its cells all pooled)
        whole = torch.full((1, 1, 1, 32, 32), 10.0)
        feats128 = backbone(pairs.pixels([0], 128))[-1]
        pooled, _ = clip_logits(backbone, feats128[:, :, None], whole, text[:, None], 1.0)
        glob = F.normalize(clip.encode_image(pairs.images([0])), dim=-1) @ text.T
    assert torch.allclose(pooled[0, 0], glob[0], atol=1e-5)
    n0 = int(nonempty[0].sum())
    assert n0 >= 2 and 0.0 <= right <= 1.0 and torch.isfinite(loss)
    with torch.no_grad():
        loss0, _ = region_loss(backbone, regions, [0], pairs.pixels([0], 128), 256, text, 100.0)
    assert torch.allclose(loss0 * n0, ce, rtol=1e-4), "the region loss of image 0 is the branch's logits' CE"
    # a segment smaller than a cell pools nothing: no loss from it, and no NaN
    speck = torch.zeros(1, 128, 128)
    speck[0, 5, 5] = 1.0
    tiny = type("Tiny", (), {"segments": lambda self, i: (torch.tensor([4]), speck)})()
    nothing, right = region_loss(backbone, tiny, [0], pairs.pixels([0], 128), 256, text.detach(), 100.0)
    assert nothing.item() == 0.0 and right == 0.0 and nothing.requires_grad
    config = ClipPretrainConfig(steps=2, batch_size=12, warmup_steps=1, region_weight=1.0, region_images=2)
    model, _, losses = pretrain(config, captions)
    assert len(losses) == 2 and all(torch.isfinite(torch.tensor(losses)))


def test_bad_input_is_named(captions, tmp_path):
    with pytest.raises(FileNotFoundError, match="omg data captions --root"):
        CaptionPairs(str(tmp_path), "train", "tiny_convnext")
    with pytest.raises(ValueError, match="global batch of 64"):
        pretrain(ClipPretrainConfig(steps=1, batch_size=64), captions)
    with pytest.raises(ValueError, match="tiny variants"):
        CaptionPairs(captions, "train", "convnext_large_d_320")
    with pytest.raises(ValueError, match="negatives"):
        ClipPretrainConfig(batch_size=1)
    with pytest.raises(ValueError, match="region_size a multiple of 32"):
        ClipPretrainConfig(region_size=100)
    with pytest.raises(FileNotFoundError, match="captions without regions"):
        CaptionRegions(str(tmp_path), "train", CaptionPairs(captions, "train", "tiny_convnext"))
    config = ClipPretrainConfig(steps=100, lr=1.0, warmup_steps=10)
    assert (
        lr_at(0, config) == pytest.approx(0.1) and lr_at(10, config) == pytest.approx(1.0) and lr_at(99, config) < 0.01
    )
