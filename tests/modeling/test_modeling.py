"""The OMG-Seg model: shapes on every variant, frozen vs learned, location queries, weights, bad inputs."""

from __future__ import annotations

import math

import pytest
import torch

from omg.modeling.backbone import CLIPBackbone
from omg.modeling.checkpoint import load_checkpoint, save_checkpoint
from omg.modeling.info import model_info, parameter_counts
from omg.modeling.model import ModelConfig, build_model
from omg.modeling.pixel_decoder import ms_deform_attn_core
from omg.modeling.position import coordinate_to_encoding, sine_2d, sine_3d
from omg.modeling.prompts import Prompts, location_self_attn_mask
from omg.modeling.variants import VARIANTS, get_variant
from omg.utils.typed import FieldError

TINY = [name for name, v in VARIANTS.items() if v.tiny]
BIG = [name for name, v in VARIANTS.items() if not v.tiny]


def _text(c: int = 5, k: int = 2, e: int = 128, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.nn.functional.normalize(torch.randn(c, k, e, generator=g), dim=-1)


def _images(n=2, t=None, s=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    shape = (n, 3, s, s) if t is None else (n, t, 3, s, s)
    return torch.rand(shape, generator=g) * 255


@pytest.fixture(scope="module")
def tiny_model():
    torch.manual_seed(0)
    return build_model(ModelConfig.tiny("tiny_convnext")).eval()


# ------------------------------------------------------------------------------ shapes


@pytest.mark.parametrize("variant", TINY)
def test_shapes_image_video_prompts_tiny(variant):
    torch.manual_seed(0)
    cfg = ModelConfig.tiny(variant)
    model = build_model(cfg).eval()
    text = _text(e=get_variant(variant).embed_dim)
    q, c = cfg.num_queries, text.shape[0]
    out = model(_images(2, s=64), text)
    assert out.pred_logits.shape == (2, q, c + 1)
    assert out.pred_masks.shape == (2, q, 1, 16, 16)
    assert out.pred_objectness.shape == (2, q, 1)
    assert len(out.predictions) == cfg.dec_layers + 1
    assert out.query_embed.shape == (2, q, cfg.hidden_dim) and not out.location
    assert torch.all(out.pred_logits[..., -1] == 0), "background logit is fixed at 0"
    vid = model(_images(1, t=3, s=64), text)
    assert vid.pred_masks.shape == (1, q, 3, 16, 16) and vid.pred_logits.shape == (1, q, c + 1)
    prompts = Prompts.from_lists(
        [torch.tensor([[5.0, 5.0], [40.0, 30.0], [60.0, 60.0]])], [torch.tensor([[0.0, 0.0, 20.0, 30.0]])], [(64, 64)]
    )
    loc = model(_images(1, s=64), text, prompts)
    assert loc.location and loc.pred_masks.shape == (1, 4, 1, 16, 16) and loc.pred_logits.shape == (1, 4, c + 1)


@pytest.mark.parametrize("variant", BIG)
def test_shapes_big_variants_on_meta(variant):
    """The paper's variants, built on the meta device (no memory, no weights): shapes of a forward pass."""
    v = get_variant(variant)
    model = build_model(ModelConfig(variant=variant), device="meta")
    s = 4 * v.size_divisibility
    text = torch.ones(7, 2, v.embed_dim, device="meta")
    feats = model.extract(torch.zeros(1, 3, s, s, device="meta"))
    assert [tuple(m.shape[-2:]) for m in feats.memories] == [(round(s / v.strides[i]),) * 2 for i in (3, 2, 1)]
    expected_s4 = round(s / v.strides[0])
    assert feats.mask_features.shape == (1, 256, 1, expected_s4, expected_s4)
    assert feats.clip_features.shape[1] == v.channels[3]
    out = model.decode(feats, text)
    assert out.pred_logits.shape == (1, 300, 8) and out.pred_masks.shape == (1, 300, 1, expected_s4, expected_s4)
    assert len(out.predictions) == 10


def test_paper_variant_parameter_counts_match_the_spec():
    """convnext_large_d_320: ~200 M frozen visual tower and ~21.0 M trainable (docs/model.md §6)."""
    info = model_info("convnext_large_d_320", flops=False)
    comps = {k: v["total"] / 1e6 for k, v in info["components"].items()}
    assert comps["backbone.image_tower"] == pytest.approx(196.23, abs=0.01)
    assert comps["backbone.clip_image_head"] == pytest.approx(3.54, abs=0.01)
    assert comps["pixel_decoder"] == pytest.approx(5.79, abs=0.01)
    assert comps["transformer_decoder"] == pytest.approx(14.21, abs=0.01)
    assert info["trainable"] / 1e6 == pytest.approx(21.0, abs=0.05)
    assert info["inference"] / 1e6 == pytest.approx(220.8, abs=0.1)


def test_model_info_counts_flops_for_tiny():
    info = model_info("tiny_convnext", height=128, width=128)
    assert info["gflops"] > 0 and info["gflops_input"] == [128, 128]
    assert info["total"] == info["trainable"] + info["frozen"]


# ------------------------------------------------------------------------------ frozen vs learned


def _grads(model, text):
    model.train()
    out = model(_images(1, s=64), text)
    (out.pred_masks.mean() + out.pred_logits[..., :-1].mean()).backward()
    return {n: p.grad for n, p in model.named_parameters()}


def test_frozen_backbone_gets_no_gradient_and_stays_in_eval():
    torch.manual_seed(0)
    model = build_model(ModelConfig.tiny("tiny_convnext"))
    grads = _grads(model, _text())
    assert all(g is None for n, g in grads.items() if n.startswith("backbone."))
    assert all(not p.requires_grad for p in model.backbone.parameters())
    assert grads["pixel_decoder.mask_features.weight"] is not None
    assert grads["decoder.classifier.cls_proj.layers.0.weight"] is not None
    model.train()
    assert not model.backbone.clip.training, "a frozen backbone stays in eval mode (drop-path off)"
    feats = model.backbone(_images(1, s=64))
    assert all(f.grad_fn is None and not f.requires_grad for f in feats), (
        "no autograd graph through the frozen backbone"
    )


def test_learned_backbone_gets_gradient():
    torch.manual_seed(0)
    model = build_model(ModelConfig.tiny("tiny_convnext_learned"))
    grads = _grads(model, _text())
    trunk = [g for n, g in grads.items() if n.startswith("backbone.clip.visual.trunk.stages")]
    assert trunk and all(g is not None for g in trunk)
    assert model.backbone.clip.training
    assert all(g is None for n, g in grads.items() if n.startswith("backbone.clip.transformer")), "text tower unused"


# ------------------------------------------------------------------------------ location queries


def test_location_mask_blocks_exactly_the_off_diagonal():
    valid = torch.tensor([[True, True, True], [True, True, False]])
    m = location_self_attn_mask(valid, "masked")
    assert m.shape == (2, 3, 3)
    assert torch.equal(m[0], ~torch.eye(3, dtype=torch.bool)) and torch.equal(m[1], ~torch.eye(3, dtype=torch.bool))
    full = location_self_attn_mask(valid, "full")
    assert not full[0].any()
    assert torch.equal(full[1], torch.tensor([[False, False, True], [False, False, True], [False, False, False]]))


def test_switch_changes_outputs_only_with_several_prompts(tiny_model):
    full = build_model(ModelConfig.tiny("tiny_convnext", interactive_self_attn="full")).eval()
    full.load_state_dict(tiny_model.state_dict())
    x, text = _images(1, s=64), _text()
    two = Prompts.from_lists([torch.tensor([[10.0, 10.0], [50.0, 40.0]])], [None], [(64, 64)])
    one = Prompts.from_lists([torch.tensor([[10.0, 10.0]])], [None], [(64, 64)])
    with torch.no_grad():
        a, b = tiny_model(x, text, two), full(x, text, two)
        assert not torch.allclose(a.pred_masks, b.pred_masks)
        a1, b1 = tiny_model(x, text, one), full(x, text, one)
        assert torch.allclose(a1.pred_masks, b1.pred_masks)
        # masked: a prompt's output does not depend on the other prompts
        assert torch.allclose(a.pred_masks[:, :1], a1.pred_masks, atol=1e-5)


def test_points_are_pseudo_boxes_and_padding_is_valid():
    p = Prompts.from_lists(
        [torch.tensor([[1.0, 10.0]]), None],
        [None, torch.tensor([[2.0, 2.0, 9.0, 9.0], [0.0, 0.0, 4.0, 4.0]])],
        [(32, 32), (32, 32)],
    )
    assert torch.equal(p.boxes[0, 0], torch.tensor([-2.0, 7.0, 4.0, 13.0])), (
        "x-3 is not clipped (released: points -+ 3)"
    )
    assert p.valid.tolist() == [[True, False], [True, True]] and p.is_point.tolist() == [[True, False], [False, False]]


# ------------------------------------------------------------------------------ building blocks


def test_deformable_attention_samples_exact_values_at_pixel_centres():
    n, m, dh = 1, 2, 3
    shapes = [(4, 5), (2, 3)]
    value = torch.randn(n, 4 * 5 + 2 * 3, m, dh)
    # query k looks at pixel centre (y=1, x=2) of level 0 with weight 1
    loc = torch.zeros(n, 1, m, 2, 1, 2)
    loc[..., 0, 0, :] = torch.tensor([(2 + 0.5) / 5, (1 + 0.5) / 4])
    w = torch.zeros(n, 1, m, 2, 1)
    w[..., 0, 0] = 1.0
    out = ms_deform_attn_core(value, shapes, loc, w)
    expected = value[0, 1 * 5 + 2].reshape(-1)
    assert torch.allclose(out[0, 0], expected, atol=1e-6)


def test_positional_encodings():
    p2 = sine_2d(4, 6, num_feats=8)
    assert p2.shape == (16, 4, 6)
    p3 = sine_3d(3, 4, 6, num_feats=8)
    assert p3.shape == (3, 16, 4, 6)
    assert not torch.allclose(p3[0], p3[1]), "frames differ through the t term"
    enc = coordinate_to_encoding(torch.tensor([[0.5, 0.25, 0.1, 0.2]]), num_feats=8)
    assert enc.shape == (1, 32)
    # order (y, x, w, h): the first sin term is sin(y * 2pi / 1)
    assert enc[0, 0].item() == pytest.approx(math.sin(0.25 * 2 * math.pi), abs=1e-6)
    assert enc[0, 8].item() == pytest.approx(math.sin(0.5 * 2 * math.pi), abs=1e-6)


# ------------------------------------------------------------------------------ weights


def test_checkpoint_roundtrip_reproduces_outputs(tmp_path, tiny_model):
    x, text = _images(1, s=64), _text()
    prompts = Prompts.from_lists([torch.tensor([[20.0, 20.0]])], [None], [(64, 64)])
    with torch.no_grad():
        ref, ref_p = tiny_model(x, text), tiny_model(x, text, prompts)
    for uri in (str(tmp_path / "m.pt"), "memory://omg-test/ckpt/m.pt"):
        save_checkpoint(tiny_model, uri, {"vocabulary": [["a"], ["b"]]})
        model, meta = load_checkpoint(uri)
        assert meta == {"vocabulary": [["a"], ["b"]], "clip_weights": None}, "a random CLIP is recorded as such"
        with torch.no_grad():
            out, out_p = model(x, text), model(x, text, prompts)
        assert torch.equal(out.pred_logits, ref.pred_logits) and torch.equal(out.pred_masks, ref.pred_masks)
        assert torch.equal(out_p.pred_masks, ref_p.pred_masks)


def test_a_checkpoint_records_where_its_clip_came_from_through_fine_tuning(tmp_path, tiny_model):
    """The file holds the weights, not their origin: ``clip_weights`` in the metadata says it (the web page shows a
    prompted mask's CLIP label as a guess when it is None), and a fine-tune from the checkpoint inherits it."""
    from omg.inference.predictor import OMGPredictor
    from omg.modeling.checkpoint import clip_weights, init_weights

    save_checkpoint(tiny_model, str(tmp_path / "random.pt"))
    assert not OMGPredictor.from_checkpoint(str(tmp_path / "random.pt")).clip_pretrained
    save_checkpoint(tiny_model, str(tmp_path / "clip.pt"), {"clip_weights": "runs/clip/tiny_convnext.pt"})
    assert OMGPredictor.from_checkpoint(str(tmp_path / "clip.pt")).clip_pretrained
    meta = init_weights(build_model(tiny_model.config), str(tmp_path / "clip.pt"))
    assert clip_weights(tiny_model.config, meta) == "runs/clip/tiny_convnext.pt"


def test_load_checkpoint_rejects_other_files(tmp_path):
    path = tmp_path / "x.pt"
    torch.save({"format": "something-else"}, path)
    with pytest.raises(ValueError, match="not an OMG-Seg checkpoint"):
        load_checkpoint(str(path))
    path.write_bytes(b"garbage")
    with pytest.raises(ValueError, match="not a readable checkpoint"):
        load_checkpoint(str(path))


def test_pretrained_weights_load_from_path_and_uri(tmp_path):
    """An open_clip checkpoint written by the test loads through the real loading path."""
    import fsspec

    torch.manual_seed(1)
    source = CLIPBackbone(get_variant("tiny_convnext"))
    path = tmp_path / "open_clip_tiny.pt"
    torch.save({"state_dict": {f"module.{k}": v for k, v in source.clip.state_dict().items()}}, path)
    torch.manual_seed(2)
    target = CLIPBackbone(get_variant("tiny_convnext"))
    assert not torch.equal(target.clip.visual.head.proj.weight, source.clip.visual.head.proj.weight)
    assert "checkpoint" in target.load_pretrained(str(path))
    for k, v in source.clip.state_dict().items():
        assert torch.equal(target.clip.state_dict()[k], v), k
    with fsspec.open("memory://omg-test/weights/tiny.pt", "wb") as f:
        f.write(path.read_bytes())
    torch.manual_seed(3)
    other = CLIPBackbone(get_variant("tiny_convnext"))
    other.load_pretrained("memory://omg-test/weights/tiny.pt")
    assert torch.equal(other.clip.visual.head.proj.weight, source.clip.visual.head.proj.weight)
    # through the model config, as a run would do it
    model = build_model(ModelConfig.tiny("tiny_convnext", pretrained=str(path)))
    assert torch.equal(model.backbone.clip.visual.head.proj.weight, source.clip.visual.head.proj.weight)


def test_pretrained_errors_are_clear(tmp_path):
    bb = CLIPBackbone(get_variant("tiny_convnext"))
    with pytest.raises(FileNotFoundError, match="neither an existing file nor an open_clip tag"):
        bb.load_pretrained(str(tmp_path / "missing.pt"))
    wrong = tmp_path / "wrong.pt"
    torch.save({"visual.something": torch.zeros(1)}, wrong)
    with pytest.raises(ValueError, match="not an open_clip omg_tiny_convnext checkpoint"):
        bb.load_pretrained(str(wrong))


def test_uncached_pretrained_tag_says_what_to_do(monkeypatch, tmp_path):
    import open_clip

    bb = CLIPBackbone(get_variant("tiny_convnext"))
    monkeypatch.setattr(open_clip, "list_pretrained_tags_by_model", lambda name: ["sometag"])
    monkeypatch.setattr(open_clip, "get_pretrained_cfg", lambda name, tag: {"hf_hub": "nobody/nothing/"})

    def offline(cfg, cache_dir=None):
        raise OSError("offline mode is enabled")

    monkeypatch.setattr(open_clip, "download_pretrained", offline)
    with pytest.raises(RuntimeError, match="not in the local cache.*pass the file's path or URI"):
        bb.load_pretrained("sometag")


# ------------------------------------------------------------------------------ bad inputs


def test_bad_inputs_raise_clear_errors(tiny_model):
    text = _text()
    with pytest.raises(ValueError, match="N x 3 x H x W or N x T x 3 x H x W"):
        tiny_model(torch.zeros(3, 64, 64), text)
    with pytest.raises(ValueError, match="float tensor"):
        tiny_model(torch.zeros(1, 3, 64, 64, dtype=torch.uint8), text)
    with pytest.raises(ValueError, match="multiple of 32"):
        tiny_model(torch.zeros(1, 3, 60, 64), text)
    with pytest.raises(ValueError, match="C x K x E with C >= 1"):
        tiny_model(_images(1, s=64), text[:0])
    with pytest.raises(ValueError, match="point 1 .* outside the 64x64 image"):
        Prompts.from_lists([torch.tensor([[1.0, 1.0], [70.0, 3.0]])], [None], [(64, 64)])
    with pytest.raises(ValueError, match="box 0 .* not an XYXY box"):
        Prompts.from_lists([None], [torch.tensor([[10.0, 10.0, 5.0, 20.0]])], [(64, 64)])
    with pytest.raises(ValueError, match="no prompt"):
        Prompts.from_lists([None], [None], [(64, 64)])
    with pytest.raises(FieldError, match="variant: unknown backbone variant"):
        ModelConfig(variant="resnet9000")
    with pytest.raises(ValueError, match="interactive_self_attn"):
        ModelConfig.tiny(interactive_self_attn="half")


def test_parameter_counts_cover_every_parameter(tiny_model):
    counts = parameter_counts(tiny_model)
    assert counts["total"] == sum(p.numel() for p in tiny_model.parameters())
    assert counts["components"]["backbone.text_tower"]["trainable"] == 0


def test_sampled_location_content_reads_the_pixels_under_the_prompt():
    """location_content="sampled": prompts at different places start from different content."""
    torch.manual_seed(0)
    model = build_model(ModelConfig.tiny("tiny_convnext", location_content="sampled")).eval()
    x = _images(1, s=64)
    feats = model.extract(x)
    prompts = Prompts.from_lists([torch.tensor([[5.0, 5.0], [50.0, 50.0]])], [None], [(64, 64)])
    content = model.location_encoder.sample_content(feats.mask_features[:, :, 0], prompts, feats.image_size)
    assert content.shape == (1, 2, 64) and not torch.allclose(content[0, 0], content[0, 1])
    assert build_model(ModelConfig.tiny("tiny_convnext")).location_encoder.content_proj is None, (
        "paper default unchanged"
    )
    with pytest.raises(ValueError, match="location_content"):
        ModelConfig.tiny(location_content="roi")


@pytest.mark.parametrize("variant", ["tiny_convnext_learned", "tiny_vit_learned"])
def test_a_learned_backbone_trains_exactly_the_parameters_the_losses_reach(variant):
    """DDP needs every trainable parameter in the graph: the learned image tower trains, the text tower and
    the CLIP image head (open-vocabulary branch only) stay frozen."""
    model = build_model(ModelConfig.tiny(variant))
    model.train()
    text = torch.nn.functional.normalize(torch.randn(3, 1, model.backbone.variant.embed_dim), dim=-1)
    out = model(torch.rand(1, 3, 64, 64) * 255, text)
    (out.pred_logits.sum() + out.pred_masks.sum() + out.pred_objectness.sum() + model.zero_touch()).backward()
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert any(n.startswith("backbone.clip.visual.") for n in trainable)
    assert not any(n.startswith("backbone.clip.") and not n.startswith("backbone.clip.visual.") for n in trainable)
    assert [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None] == []


def test_released_initialisation_and_logit_scale():
    """mmdet's MSDeformAttnPixelDecoder.init_weights (called from OMG-Seg mask2former_vid.py L259): Xavier-normal for
    every encoder parameter with dim > 1, the FFN included, then the deformable attention's own init; the class
    logit scale is the released 4.6052 (mask2former_vid.py L221-224)."""
    torch.manual_seed(0)
    model = build_model(ModelConfig.tiny())
    layer = model.pixel_decoder.layers[0]
    for lin in (layer.ffn[0], layer.ffn[2]):
        fan_out, fan_in = lin.weight.shape
        assert lin.weight.std().item() == pytest.approx(math.sqrt(2.0 / (fan_in + fan_out)), rel=0.1)
    assert layer.attn.sampling_offsets.weight.abs().sum() == 0 and layer.attn.attention_weights.weight.abs().sum() == 0
    assert model.decoder.classifier.logit_scale.item() == pytest.approx(4.6052)


def test_weight_decay_follows_the_released_keys():
    """schedule_12e.py custom_keys (query_embed, query_feat, level_embed: decay 0) matched as substrings, as mmengine
    does: the pixel decoder's level encoding (``level_encoding`` in the released model) is decayed."""
    from omg.config import OptimConfig
    from omg.training.optim import param_groups

    model = build_model(ModelConfig.tiny())
    groups = param_groups(model, OptimConfig(), 1e-4, 0.1)
    decay = {id(p) for g in groups if g["weight_decay"] > 0 for p in g["params"]}
    params = dict(model.named_parameters())
    assert id(params["pixel_decoder.level_embed"]) in decay
    for name in ("decoder.level_embed.weight", "query_feat.weight", "query_embed.weight"):
        assert id(params[name]) not in decay, name
    norms = [n for n in params if ".norm" in n or "post_norm" in n]
    assert norms and all(id(params[n]) not in decay for n in norms)


def test_registering_the_tiny_configs_leaves_no_folder_behind(tmp_path):
    """Every process registers the tiny open_clip configs; the folder they are written to must not outlive it
    (it used to stay in the temp dir, one per process: over a thousand after a few suite runs)."""
    import os
    import subprocess
    import sys

    code = (
        "from omg.modeling.variants import register_tiny_configs; register_tiny_configs(); "
        "import open_clip; assert {'omg_tiny_convnext', 'omg_tiny_vit'} <= set(open_clip.list_models())"
    )
    subprocess.run([sys.executable, "-c", code], check=True, env={**os.environ, "TMPDIR": str(tmp_path)})
    assert list(tmp_path.glob("omg-open-clip-configs-*")) == []
