"""Contrastive pretraining of the tiny CLIPs on omg-shapes captions: open_clip's loss trains both towers, and the
saved weights are what ``model.pretrained`` loads."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from omg.data.captions import CaptionOptions, generate_captions
from omg.training.clip_pretrain import (
    CaptionPairs,
    ClipPretrainConfig,
    ShapeBatches,
    lr_at,
    pretrain,
    retrieval_accuracy,
    save_weights,
)


@pytest.fixture(scope="module")
def captions(tmp_path_factory) -> str:
    root = str(tmp_path_factory.mktemp("captions"))
    generate_captions(root, opts=CaptionOptions(num_train=48, num_val=16, num_shapes=24), progress=False)
    return root


def test_a_few_steps_train_both_towers_and_the_weights_load_as_pretrained(captions, tmp_path):
    from omg.modeling.backbone import CLIPBackbone
    from omg.modeling.variants import get_variant

    config = ClipPretrainConfig(steps=4, batch_size=12, warmup_steps=1, shape_steps=1)
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


def test_shape_batches_follow_each_caption_batch_and_name_each_close_ups_shape(captions):
    """``shape_steps``: each caption batch is followed by that many shape batches (close-ups of captions/shapes.csv at
    ``shape_size``), whose texts are one caption per shape and whose targets are the images' own shapes."""
    from omg.data.synthetic import THING_CLASSES

    config = ClipPretrainConfig(batch_size=8, shape_steps=2, shape_size=48)
    assert [config.stream(s) for s in range(7)] == [
        ("captions", 0),
        ("shapes", 0),
        ("shapes", 1),
        ("captions", 1),
        ("shapes", 2),
        ("shapes", 3),
        ("captions", 2),
    ]
    assert [ClipPretrainConfig(shape_steps=0).stream(s) for s in range(3)] == [("captions", n) for n in range(3)]
    shapes = ShapeBatches(captions, config, 0, 1)
    pairs = CaptionPairs(captions, "shapes", "tiny_convnext")
    synonyms = {c.name: c.synonyms for c in THING_CLASSES}
    assert shapes.classes == sorted(synonyms)
    every = pairs.images(range(len(pairs)), 48)
    seen = []
    for n in range(3):  # 24 close-ups, 8 a batch: one epoch, each close-up once
        images, labels, texts = shapes.batch(n)
        assert images.shape == (8, 3, 48, 48) and len(texts) == len(shapes.classes)
        assert all(any(t.endswith(s) for s in synonyms[c]) for t, c in zip(texts, shapes.classes)), texts
        for image, label in zip(images, labels.tolist()):
            row = next(i for i in range(len(pairs)) if torch.equal(every[i], image))
            assert shapes.classes[label] == pairs.labels[row], "the target is the close-up's own shape"
            seen.append(row)
    assert sorted(seen) == list(range(24)), "an epoch of shape batches shows every close-up once"
    # rank 1 of 2 takes the other half of the same order
    other = ShapeBatches(captions, dataclasses.replace(config, batch_size=4), 1, 2).batch(0)[0]
    first = ShapeBatches(captions, dataclasses.replace(config, batch_size=4), 0, 2).batch(0)[0]
    assert not any(torch.equal(a, b) for a in other for b in first)


def test_shape_batch_input_errors_name_the_file(captions, tmp_path):
    import shutil

    root = tmp_path / "r"
    shutil.copytree(captions, root)
    csv = root / "captions" / "shapes.csv"
    with pytest.raises(ValueError, match="global batch of 64.*--num-shapes"):
        ShapeBatches(str(root), ClipPretrainConfig(), 0, 1)
    csv.write_text("\n".join(line.rsplit("\t", 1)[0] for line in csv.read_text().splitlines()) + "\n")
    with pytest.raises(ValueError, match="shapes.csv: expected a 'shape' column"):
        ShapeBatches(str(root), ClipPretrainConfig(batch_size=4), 0, 1)
    csv.unlink()
    with pytest.raises(FileNotFoundError, match="shapes.csv: no captions"):
        ShapeBatches(str(root), ClipPretrainConfig(batch_size=4), 0, 1)
    with pytest.raises(ValueError, match="shape_steps must be >= 0"):
        ClipPretrainConfig(shape_steps=-1)
