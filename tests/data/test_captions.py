"""The captioned companion of omg-shapes (CLIP pretraining pairs): deterministic, open_clip's CSV layout, and the
rule that the held-out shapes are never drawn or named while their hue bands and patterns are."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from omg.data.captions import HUE_WORDS, PATTERN_WORDS, CaptionOptions, generate_captions, sample, sample_rng
from omg.data.synthetic import HELDOUT_THINGS, THING_HUES, THING_PATTERNS
from omg_platform.cli import main


def test_the_held_out_shapes_are_never_named_but_their_looks_are():
    opts = CaptionOptions(image_size=48, max_things=3)
    texts, looks, closeups = [], [], 0
    for i in range(300):
        image, text, lk = sample(sample_rng(0, "train", i), opts)
        assert image.shape == (48, 48, 3) and image.dtype == np.uint8
        texts.append(text.lower())
        looks += lk
        closeups += len(lk) == 1 and lk[0].size == "large" and lk[0].position == "in the middle"
    assert 0.4 < closeups / 300 < 0.65, "about half are close-ups of one large shape (closeup 0.5)"
    banned = {w for c in HELDOUT_THINGS for s in c.synonyms for w in re.findall(r"[a-z-]+", s)} - {"shape", "sign"}
    assert not [t for t in texts if banned & set(re.findall(r"[a-z-]+", t))], "a held-out shape word in a caption"
    assert {lk.shape for lk in looks} == {"circle", "square", "triangle", "star"}
    for c in HELDOUT_THINGS:  # the held-out classes' hue band and pattern, on training shapes, in words
        hue, pattern = THING_HUES[c.name], THING_PATTERNS[c.name]
        assert sum(lk.hue == hue for lk in looks) > 20 and sum(lk.pattern == pattern for lk in looks) > 20
        assert any(any(w in t for w in HUE_WORDS[hue]) for t in texts)
        assert any(any(w in t for w in PATTERN_WORDS[pattern]) for t in texts)
    own = sum(lk.hue == THING_HUES[lk.shape] and lk.pattern == THING_PATTERNS[lk.shape] for lk in looks) / len(looks)
    assert 0.4 < own < 0.75, "about half keep their class's own look (free_look 0.5, plus chance matches)"


def test_generation_is_deterministic_idempotent_and_in_open_clips_csv_layout(tmp_path, capsys):
    a, b = tmp_path / "a", tmp_path / "b"
    args = ["--num-train", "12", "--num-val", "4", "--image-size", "40", "--quiet"]
    assert main(["data", "captions", "--root", str(a), *args]) == 0
    assert main(["data", "captions", "--root", str(b), *args]) == 0
    files = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    assert len(files) == 12 + 4 + 3
    assert all((a / f).read_bytes() == (b / f).read_bytes() for f in files), "byte-identical for the same seed"
    df = pd.read_csv(a / "captions/train.csv", sep="\t")
    assert list(df.columns) == ["filepath", "title"] and len(df) == 12
    assert Image.open(a / "captions" / df.filepath[0]).size == (40, 40)
    assert "omg-shapes captions at" in capsys.readouterr().out
    # a complete companion is left as it is; another seed or options is an error naming the file
    assert main(["data", "captions", "--root", str(a), *args]) == 0
    with pytest.raises(FileExistsError, match="captions/meta.json"):
        generate_captions(str(a), seed=1, opts=CaptionOptions(num_train=12, num_val=4, image_size=40), progress=False)
    with pytest.raises(ValueError, match="free_look"):
        CaptionOptions(free_look=2.0)
    with pytest.raises(ValueError, match="closeup"):
        CaptionOptions(closeup=-0.1)
