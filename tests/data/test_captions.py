"""The captioned companion of omg-shapes (CLIP pretraining pairs): deterministic, open_clip's CSV layout, and the
rule that they draw and name every shape, the held-out ones included (or, ``shapes="train"``, never them)."""

from __future__ import annotations

import json
import re

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from omg.data.captions import HUE_WORDS, PATTERN_WORDS, CaptionOptions, generate_captions, sample, sample_rng
from omg.data.masks import rgb2id
from omg.data.synthetic import HELDOUT_THINGS, THING_CLASSES, THING_HUES, THING_PATTERNS
from omg_platform.cli import main


def _samples(opts: CaptionOptions, n: int = 300):
    texts, looks = [], []
    for i in range(n):
        image, text, lk, _ = sample(sample_rng(0, "train", i), opts)
        assert image.shape == (opts.image_size, opts.image_size, 3) and image.dtype == np.uint8
        texts.append(text.lower())
        looks.append(lk)
    return texts, looks


def _words(text: str) -> set[str]:
    return set(re.findall(r"[a-z-]+", text))


#: the words that name only a held-out shape ("shape" and "sign" name others too)
HELD_OUT_WORDS = {w for c in HELDOUT_THINGS for s in c.synonyms for w in _words(s)} - {"shape", "sign"}


def test_the_corpus_draws_and_names_all_six_shapes_by_default():
    """The web-CLIP analogy: the captions know every concept, the held-out hexagon and cross included (the
    segmentation training never holds them: tests/data/test_synthetic.py)."""
    opts = CaptionOptions(image_size=48, max_things=3)
    texts, per_image = _samples(opts)
    looks = [lk for lks in per_image for lk in lks]
    closeups = sum(len(lk) == 1 and lk[0].size == "large" and lk[0].position == "in the middle" for lk in per_image)
    assert 0.4 < closeups / 300 < 0.65, "about half are close-ups of one large shape (closeup 0.5)"
    assert {lk.shape for lk in looks} == {c.name for c in THING_CLASSES}
    for c in HELDOUT_THINGS:
        drawn = [t for t, lks in zip(texts, per_image) if any(lk.shape == c.name for lk in lks)]
        assert len(drawn) > 30, c.name
        # every caption that draws the shape names it, by one of its synonyms (plural when counted together)
        assert all(any(syn.split()[0] in t for syn in c.synonyms) for t in drawn), c.name
        used = {syn for syn in c.synonyms for t in drawn if syn in t}
        assert len(used) >= 2, f"{c.name}: its synonyms vary ({used})"
    own = sum(lk.hue == THING_HUES[lk.shape] and lk.pattern == THING_PATTERNS[lk.shape] for lk in looks) / len(looks)
    assert 0.4 < own < 0.75, "about half keep their class's own look (free_look 0.5, plus chance matches)"


def test_shapes_train_never_draws_or_names_a_held_out_shape_but_their_looks():
    """``shapes="train"``: captions version 2's world, a CLIP that never heard of a hexagon (the ablation)."""
    texts, per_image = _samples(CaptionOptions(image_size=48, max_things=3, shapes="train"))
    looks = [lk for lks in per_image for lk in lks]
    assert not [t for t in texts if HELD_OUT_WORDS & _words(t)], "a held-out shape word in a caption"
    assert {lk.shape for lk in looks} == {"circle", "square", "triangle", "star"}
    for c in HELDOUT_THINGS:  # the held-out classes' hue band and pattern, on training shapes, in words
        hue, pattern = THING_HUES[c.name], THING_PATTERNS[c.name]
        assert sum(lk.hue == hue for lk in looks) > 20 and sum(lk.pattern == pattern for lk in looks) > 20
        assert any(any(w in t for w in HUE_WORDS[hue]) for t in texts)
        assert any(any(w in t for w in PATTERN_WORDS[pattern]) for t in texts)
    with pytest.raises(ValueError, match="shapes must be one of all, train"):
        CaptionOptions(shapes="held-out")


def test_shape_only_close_ups_are_captioned_by_the_shape_alone():
    """``shape_only``: a close-up's caption is its shape's name and nothing else (a batch of those differs in the
    shape alone); other images keep their full captions, and the pictures are the same."""
    for closeup in (1.0, 0.0):
        only = CaptionOptions(image_size=48, closeup=closeup, shape_only=1.0)
        full = CaptionOptions(image_size=48, closeup=closeup)
        for i in range(30):
            image, text, looks, _ = sample(sample_rng(0, "train", i), only)
            ref_image, ref_text, _, _ = sample(sample_rng(0, "train", i), full)
            assert np.array_equal(image, ref_image), "the same picture"
            if closeup:
                synonyms = next(c.synonyms for c in THING_CLASSES if c.name == looks[0].shape)
                assert len(looks) == 1 and text in {p + s for p in ("a ", "a photo of a ") for s in synonyms}, text
            else:
                assert text == ref_text
    with pytest.raises(ValueError, match="shape_only"):
        CaptionOptions(shape_only=1.5)


def test_generation_is_deterministic_idempotent_and_in_open_clips_csv_layout(tmp_path, capsys):
    a, b = tmp_path / "a", tmp_path / "b"
    args = ["--num-train", "12", "--num-val", "4", "--image-size", "40", "--quiet"]
    assert main(["data", "captions", "--root", str(a), *args]) == 0
    assert main(["data", "captions", "--root", str(b), *args]) == 0
    files = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    assert len(files) == 2 * (12 + 4) + 5  # images and their panoptic PNGs; 2 CSVs, 2 panoptic JSONs, meta
    assert all((a / f).read_bytes() == (b / f).read_bytes() for f in files), "byte-identical for the same seed"
    df = pd.read_csv(a / "captions/train.csv", sep="\t")
    assert list(df.columns) == ["filepath", "title"] and len(df) == 12
    assert Image.open(a / "captions" / df.filepath[0]).size == (40, 40)
    assert "omg-shapes captions at" in capsys.readouterr().out
    # grounded: COCO panoptic annotations of every image, its segments where the generator drew them
    pan = json.loads((a / "captions/panoptic_train.json").read_text())
    assert [im["file_name"] for im in pan["images"]] == list(df.filepath)
    cats = {c["id"]: c for c in pan["categories"]}
    assert {c.name for c in THING_CLASSES} <= {c["name"] for c in cats.values()}
    assert cats[5]["synonyms"] == ["hexagon", "six-sided shape", "honeycomb cell"]
    for i, ann in enumerate(pan["annotations"]):
        ids = rgb2id(np.asarray(Image.open(a / "captions/panoptic_train" / ann["file_name"]).convert("RGB")))
        drawn = sample(sample_rng(0, "train", i), CaptionOptions(num_train=12, num_val=4, image_size=40))
        assert [(s["category_id"], s["area"]) for s in ann["segments_info"]] == [
            (seg.category_id, int(seg.mask.sum())) for seg in drawn.segments
        ]
        for info, seg in zip(ann["segments_info"], drawn.segments):
            assert np.array_equal(ids == info["id"], seg.mask)
    # a complete companion is left as it is; another seed or options is an error naming the file
    assert main(["data", "captions", "--root", str(a), *args]) == 0
    with pytest.raises(FileExistsError, match="captions/meta.json"):
        generate_captions(str(a), seed=1, opts=CaptionOptions(num_train=12, num_val=4, image_size=40), progress=False)
    with pytest.raises(ValueError, match="free_look"):
        CaptionOptions(free_look=2.0)
    with pytest.raises(ValueError, match="closeup"):
        CaptionOptions(closeup=-0.1)
