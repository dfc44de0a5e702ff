"""Contrastive pretraining of the tiny CLIPs on omg-shapes captions: open_clip's loss trains both towers, and the
saved weights are what ``model.pretrained`` loads."""

from __future__ import annotations

import pytest
import torch

from omg.data.captions import CaptionOptions, generate_captions
from omg.training.clip_pretrain import (
    CaptionPairs,
    ClipPretrainConfig,
    lr_at,
    pretrain,
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


def test_bad_input_is_named(captions, tmp_path):
    with pytest.raises(FileNotFoundError, match="omg data captions --root"):
        CaptionPairs(str(tmp_path), "train", "tiny_convnext")
    with pytest.raises(ValueError, match="global batch of 64"):
        pretrain(ClipPretrainConfig(steps=1, batch_size=64), captions)
    with pytest.raises(ValueError, match="tiny variants"):
        CaptionPairs(captions, "train", "convnext_large_d_320")
    with pytest.raises(ValueError, match="negatives"):
        ClipPretrainConfig(batch_size=1)
    config = ClipPretrainConfig(steps=100, lr=1.0, warmup_steps=10)
    assert (
        lr_at(0, config) == pytest.approx(0.1) and lr_at(10, config) == pytest.approx(1.0) and lr_at(99, config) < 0.01
    )
