"""Text embeddings: shapes, synonyms, normalisation, and the content-addressed cache."""

from __future__ import annotations

import pytest
import torch

from omg.modeling.backbone import CLIPBackbone
from omg.modeling.text import VILD_TEMPLATES, TextEmbedder
from omg.modeling.variants import get_variant
from omg.utils.vocabulary import Vocabulary, normalize_class_name


@pytest.fixture(scope="module")
def backbone():
    torch.manual_seed(0)
    return CLIPBackbone(get_variant("tiny_convnext"))


def test_normalisation_follows_omg_seg():
    assert normalize_class_name("handrail_or_fence") == ["handrail", "fence"]
    assert normalize_class_name("Playground_slide") == ["playground slide"]
    assert normalize_class_name("tv/monitor, TV") == ["tv", "monitor"]
    v = Vocabulary.of(["circle, disc", ["square", "Box", "square"]], [True, False])
    assert v.names == (("circle", "disc"), ("square", "box")) and v.isthing == (True, False)
    assert Vocabulary.of(["a"]).isthing == (True,), "things unless told"
    with pytest.raises(ValueError, match="vocabulary is empty"):
        Vocabulary.of([])
    with pytest.raises(ValueError, match="class 1 of the vocabulary has no name"):
        Vocabulary.of(["a", " , "])
    with pytest.raises(ValueError, match="2 classes but 1 thing/stuff flags"):
        Vocabulary((("a",), ("b",)), (True,))
    assert Vocabulary.from_dict(v.to_dict()) == v
    with pytest.raises(TypeError, match="embed takes a Vocabulary"):
        TextEmbedder.embed(None, ["circle"])


def test_embeddings_shape_norm_and_synonym_padding(backbone, tmp_path, monkeypatch):
    monkeypatch.setenv("OMG_CACHE_DIR", str(tmp_path))
    assert len(VILD_TEMPLATES) == 14
    emb = TextEmbedder(backbone).embed(Vocabulary.of(["circle, disc, round shape", "square"]))
    assert emb.shape == (2, 3, 128)
    assert torch.allclose(emb.norm(dim=-1), torch.ones(2, 3), atol=1e-5)
    assert torch.equal(emb[1, 1], emb[1, 0]) and torch.equal(emb[1, 2], emb[1, 0]), "padded with the first synonym"
    assert not torch.allclose(emb[0, 0], emb[0, 1])
    # a synonym's embedding does not depend on the rest of the vocabulary
    alone = TextEmbedder(backbone).embed(Vocabulary.of(["square"]))
    assert torch.allclose(alone[0, 0], emb[1, 0], atol=1e-6)


def test_cache_in_memory_and_on_disk(backbone, tmp_path, monkeypatch):
    monkeypatch.setenv("OMG_CACHE_DIR", str(tmp_path))
    embedder = TextEmbedder(backbone)
    calls = []
    original = embedder.compute

    def counting(vocab):
        calls.append(vocab)
        return original(vocab)

    embedder.compute = counting
    a = embedder.embed(Vocabulary.of(["star", "triangle"]))
    b = embedder.embed(Vocabulary.of(["star", "triangle"]))
    assert len(calls) == 1 and torch.equal(a, b)
    files = list((tmp_path / "text_embeddings").glob("*.pt"))
    assert len(files) == 1
    fresh = TextEmbedder(backbone)
    fresh.compute = counting
    assert torch.equal(fresh.embed(Vocabulary.of(["star", "triangle"])), a) and len(calls) == 1, "served from disk"
    fresh.embed(Vocabulary.of(["star", "hexagon"]))
    assert len(calls) == 2, "a new vocabulary is computed"


def test_cache_key_depends_on_the_weights(backbone, tmp_path, monkeypatch):
    monkeypatch.setenv("OMG_CACHE_DIR", str(tmp_path))
    torch.manual_seed(5)
    other = CLIPBackbone(get_variant("tiny_convnext"))
    k1 = TextEmbedder(backbone).key(Vocabulary.of(["circle"]))
    k2 = TextEmbedder(other).key(Vocabulary.of(["circle"]))
    assert k1 != k2
    assert TextEmbedder(backbone).key(Vocabulary.of(["circle"])) == k1
