"""Released OMG-Seg checkpoints -> our model (omg/modeling/official.py, `omg convert-official`).

The source state dicts here are written from the official module definitions, name by name, with the file each
name comes from; the conversion must use every tensor, fill every model tensor, and put chosen tensors where they
belong. (Numerical parity with the official forward pass is the harness in tools/parity/, outside CI.)
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch

from omg.modeling.model import ModelConfig, build_model
from omg.modeling.official import ConversionError, config_from_official, convert_official, load_official_state_dict
from tests import ROOT

# the tiny test size: D hidden, Q queries, H heads, L levels, P points, 2 encoder / 3 decoder layers
D, Q, H, L, P, ENC, ENC_F, DEC, DEC_F = 64, 20, 4, 3, 4, 2, 128, 3, 128


def _linear(sd, name, out, inp, bias=True):
    sd[f"{name}.weight"] = torch.randn(out, inp)
    if bias:
        sd[f"{name}.bias"] = torch.randn(out)


def _norm(sd, name, dim=D):
    sd[f"{name}.weight"] = torch.randn(dim)
    sd[f"{name}.bias"] = torch.randn(dim)


def official_state_dict(
    clip_visual: dict[str, torch.Tensor], channels=(40, 80, 160, 320), embed_dim=128, box_query=True
) -> dict[str, torch.Tensor]:
    """A state dict with the released model's names and shapes, at the tiny size."""
    sd: dict[str, torch.Tensor] = {}
    # OMG-Seg seg/models/backbones/openclip_backbone.py L119-176: stem = trunk.stem, layer{i+1} = trunk.stages[i],
    # head = Sequential(trunk.head, visual.head) (ConvNeXt)
    for k, v in clip_visual.items():
        for ours, theirs in (("trunk.stem.", "stem."), ("trunk.head.", "head.0."), ("head.", "head.1.")):
            if k.startswith(ours):
                sd["backbone." + theirs + k[len(ours) :]] = torch.randn_like(v)
                break
        else:
            if k.startswith("trunk.stages."):
                i, rest = k[len("trunk.stages.") :].split(".", 1)
                sd[f"backbone.layer{int(i) + 1}.{rest}"] = torch.randn_like(v)
    pd = "panoptic_head.pixel_decoder"
    # mmdet msdeformattn_pixel_decoder.py: input_convs (ConvModule conv + gn) from the lowest resolution up
    for i, c in enumerate(channels[1:][::-1]):
        _linear(sd, f"{pd}.input_convs.{i}.conv", D, c)
        sd[f"{pd}.input_convs.{i}.conv.weight"] = sd[f"{pd}.input_convs.{i}.conv.weight"][..., None, None]
        _norm(sd, f"{pd}.input_convs.{i}.gn")
    # mmdet deformable_detr_layers.py encoder layer: MultiScaleDeformableAttention, FFN(layers.0.0, layers.1), norms
    for layer in range(ENC):
        a = f"{pd}.encoder.layers.{layer}.self_attn"
        _linear(sd, f"{a}.sampling_offsets", H * L * P * 2, D)
        _linear(sd, f"{a}.attention_weights", H * L * P, D)
        _linear(sd, f"{a}.value_proj", D, D)
        _linear(sd, f"{a}.output_proj", D, D)
        _linear(sd, f"{pd}.encoder.layers.{layer}.ffn.layers.0.0", ENC_F, D)
        _linear(sd, f"{pd}.encoder.layers.{layer}.ffn.layers.1", D, ENC_F)
        for k in range(2):
            _norm(sd, f"{pd}.encoder.layers.{layer}.norms.{k}")
    sd[f"{pd}.level_encoding.weight"] = torch.randn(L, D)
    sd[f"{pd}.lateral_convs.0.conv.weight"] = torch.randn(D, channels[0], 1, 1)  # bias=False under GN
    _norm(sd, f"{pd}.lateral_convs.0.gn")
    sd[f"{pd}.output_convs.0.conv.weight"] = torch.randn(D, D, 3, 3)
    _norm(sd, f"{pd}.output_convs.0.gn")
    _linear(sd, f"{pd}.mask_feature", D, D)
    sd[f"{pd}.mask_feature.weight"] = sd[f"{pd}.mask_feature.weight"][..., None, None]
    # mmdet mask2former_layers.py decoder layer: cross_attn.attn, self_attn.attn (nn.MultiheadAttention), ffn, norms
    td = "panoptic_head.transformer_decoder"
    for layer in range(DEC):
        for att in ("cross_attn", "self_attn"):
            sd[f"{td}.layers.{layer}.{att}.attn.in_proj_weight"] = torch.randn(3 * D, D)
            sd[f"{td}.layers.{layer}.{att}.attn.in_proj_bias"] = torch.randn(3 * D)
            _linear(sd, f"{td}.layers.{layer}.{att}.attn.out_proj", D, D)
        _linear(sd, f"{td}.layers.{layer}.ffn.layers.0.0", DEC_F, D)
        _linear(sd, f"{td}.layers.{layer}.ffn.layers.1", D, DEC_F)
        for k in range(3):
            _norm(sd, f"{td}.layers.{layer}.norms.{k}")
    _norm(sd, f"{td}.post_norm")
    # OMG-Seg seg/models/heads/mask2former_vid.py L125-246
    h = "panoptic_head"
    sd[f"{h}.query_embed.weight"] = torch.randn(Q, D)
    sd[f"{h}.query_feat.weight"] = torch.randn(Q, D)
    sd[f"{h}.level_embed.weight"] = torch.randn(L, D)
    for mlp, last in (("mask_embed", D), ("iou_embed", 1), ("cls_proj", embed_dim)):
        _linear(sd, f"{h}.{mlp}.0", D, D)
        _linear(sd, f"{h}.{mlp}.2", D, D)
        _linear(sd, f"{h}.{mlp}.4", last, D)
    _norm(sd, f"{h}.mask_pooling_proj.0")
    _linear(sd, f"{h}.mask_pooling_proj.1", D, D)
    if box_query:
        sd[f"{h}.mask_tokens.weight"] = torch.randn(1, D)
        sd[f"{h}.pb_embedding.weight"] = torch.randn(2, D)
        _linear(sd, f"{h}.pos_linear", D, 2 * D)
    return sd


@pytest.fixture(scope="module")
def clip_file(tmp_path_factory) -> str:
    """The CLIP weights the released file lacks (the text tower): a random tiny open_clip model's state dict."""
    torch.manual_seed(1)
    model = build_model(ModelConfig.tiny())
    path = str(tmp_path_factory.mktemp("clip") / "open_clip_tiny.pt")
    torch.save(model.backbone.clip.state_dict(), path)
    return path


@pytest.fixture(scope="module")
def official(clip_file) -> dict[str, torch.Tensor]:
    torch.manual_seed(2)
    visual = {
        k[len("visual.") :]: v for k, v in torch.load(clip_file, weights_only=True).items() if k.startswith("visual.")
    }
    return official_state_dict(visual)


def test_every_tensor_lands_where_it_belongs(official, clip_file):
    model, report = convert_official(official, "tiny_convnext", clip_file, nheads=H)
    c = report.config
    assert (c.hidden_dim, c.num_queries, c.enc_layers, c.enc_ffn_dim, c.enc_points, c.dec_layers, c.dec_ffn_dim) == (
        D,
        Q,
        ENC,
        ENC_F,
        P,
        DEC,
        DEC_F,
    )
    own = model.state_dict()
    assert report.mapped == len(official), "every source tensor used"
    assert report.from_pretrained and all(
        k.startswith("backbone.clip.") and not k.startswith("backbone.clip.visual.trunk")
        for k in report.from_pretrained
    ), "only the CLIP parts the release lacks"
    spots = {
        "panoptic_head.transformer_decoder.layers.1.cross_attn.attn.in_proj_weight": (
            "decoder.layers.1.cross_attn.in_proj_weight"
        ),
        "panoptic_head.transformer_decoder.layers.2.norms.1.weight": "decoder.layers.2.norm2.weight",
        "panoptic_head.pixel_decoder.input_convs.2.conv.weight": "pixel_decoder.input_proj.2.0.weight",
        "panoptic_head.pixel_decoder.encoder.layers.1.ffn.layers.1.bias": "pixel_decoder.layers.1.ffn.2.bias",
        "panoptic_head.pixel_decoder.level_encoding.weight": "pixel_decoder.level_embed",
        "panoptic_head.pb_embedding.weight": "location_encoder.pb_embedding.weight",
        "panoptic_head.iou_embed.4.weight": "decoder.objectness.layers.2.weight",
        "panoptic_head.mask_pooling_proj.0.weight": "decoder.classifier.maskpool_proj.0.weight",
        "backbone.layer3.blocks.0.conv_dw.weight": "backbone.clip.visual.trunk.stages.2.blocks.0.conv_dw.weight",
    }
    for theirs, ours in spots.items():
        assert torch.equal(own[ours], official[theirs]), f"{theirs} -> {ours}"
    text = torch.load(clip_file, weights_only=True)["token_embedding.weight"]
    assert torch.equal(own["backbone.clip.token_embedding.weight"], text), "the text tower from --pretrained"


def test_the_converted_model_runs_every_task_in_omg_predict(official, clip_file, tmp_path):
    from PIL import Image

    from omg.modeling.checkpoint import save_checkpoint
    from omg_platform.cli import main
    from tests.helpers import LABEL_SPACE

    model, _ = convert_official(official, "tiny_convnext", clip_file, nheads=H)
    ckpt = str(tmp_path / "c.pt")
    save_checkpoint(model, ckpt, {"label_space": LABEL_SPACE, "test_size": [64, 64]})  # loaded strictly by predict
    rng = np.random.default_rng(0)
    frames = tmp_path / "video"
    frames.mkdir()
    for t in range(4):
        Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(frames / f"{t:05d}.jpg")
    first = np.zeros((64, 64), np.uint8)
    first[:20, :20] = 1
    Image.fromarray(first).save(tmp_path / "first.png")
    image = str(frames / "00000.jpg")
    runs = {
        "panoptic": [image],
        "instance": [image],
        "semantic": [image],
        "interactive": [image, "--points", "20,20"],
        "vis": [str(frames)],
        "vps": [str(frames)],
        "vss": [str(frames)],
        "vos": [str(frames), "--first-frame-masks", str(tmp_path / "first.png")],
    }
    for task, (inp, *extra) in runs.items():
        out = tmp_path / f"out-{task}"
        assert (
            main(
                [
                    "predict",
                    "--checkpoint",
                    ckpt,
                    "--input",
                    inp,
                    "--task",
                    task,
                    "--out",
                    str(out),
                    "--no-overlays",
                    *extra,
                ]
            )
            == 0
        ), task
        assert any(p.is_file() for p in out.rglob("*")), f"{task} wrote nothing"


def test_incomplete_or_foreign_sources_are_refused_with_the_names(official, clip_file):
    with pytest.raises(ConversionError, match="text tower is not in the released file"):
        convert_official(official, "tiny_convnext", None, nheads=H)
    # a truncated file (a stage of the image tower missing) is not quietly completed from the CLIP weights
    truncated = {k: v for k, v in official.items() if not k.startswith("backbone.layer3.blocks.0.")}
    with pytest.raises(ConversionError, match=r"lacks part of it.*backbone\.clip\.visual\.trunk\.stages\.2\.blocks\.0"):
        convert_official(truncated, "tiny_convnext", clip_file, nheads=H)
    _, report = convert_official(truncated, "tiny_convnext", clip_file, nheads=H, fill_image_tower=True)
    filled = {k for k in report.from_pretrained if k.startswith("backbone.clip.visual.")}
    assert filled and all(k.startswith("backbone.clip.visual.trunk.stages.2.blocks.0.") for k in filled), filled
    no_box = {
        k: v
        for k, v in official.items()
        if not k.startswith(("panoptic_head.pb_embedding", "panoptic_head.pos_linear", "panoptic_head.mask_tokens"))
    }
    with pytest.raises(ConversionError, match="location_encoder.pos_linear.weight"):
        convert_official(no_box, "tiny_convnext", clip_file, nheads=H)
    extra = dict(official, **{"panoptic_head.some_new_head.weight": torch.zeros(3)})
    with pytest.raises(
        ConversionError, match="1 source tensor.* no place in the model: panoptic_head.some_new_head.weight"
    ):
        convert_official(extra, "tiny_convnext", clip_file, nheads=H)
    with pytest.raises(ConversionError, match="sampling_offsets has 96 outputs: not 5 heads"):
        config_from_official(official, "tiny_convnext", nheads=5)  # the head count is not in the weights
    wrong = dict(official, **{"panoptic_head.query_embed.weight": torch.zeros(Q, D + 1)})
    with pytest.raises(ConversionError, match="query_embed.weight .* another shape|another shape.*query_embed"):
        convert_official(wrong, "tiny_convnext", clip_file, nheads=H)


def _mmengine_file(official: dict, extra=None) -> bytes:
    """Bytes of an mmengine-style checkpoint: meta holding an mmengine object and numpy values, the state dict."""
    mod = types.ModuleType("mmengine.logging.history_buffer")

    class HistoryBuffer:
        def __init__(self):
            self.data = np.arange(3)

    HistoryBuffer.__module__ = mod.__name__
    HistoryBuffer.__qualname__ = "HistoryBuffer"
    mod.HistoryBuffer = HistoryBuffer
    names = ["mmengine", "mmengine.logging", "mmengine.logging.history_buffer"]
    saved = {n: sys.modules.get(n) for n in names}
    for n in names:
        sys.modules[n] = sys.modules.get(n) or types.ModuleType(n)
    sys.modules[mod.__name__] = mod
    try:
        buf = io.BytesIO()
        doc = {"meta": {"epoch": 12, "hist": HistoryBuffer(), "seed": np.int64(3)}, "state_dict": official}
        doc.update(extra or {})
        torch.save(doc, buf)
        return buf.getvalue()
    finally:
        for n, m in saved.items():
            if m is None:
                sys.modules.pop(n, None)
            else:
                sys.modules[n] = m


class _Evil:
    """Unpickled as itself, it would run a command that leaves a file."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_loading_is_safe(official, tmp_path):
    data = _mmengine_file(official)
    sd = load_official_state_dict(data, "omg_seg_convl.pth")
    assert set(sd) == set(official) and all(torch.equal(sd[k], official[k]) for k in list(official)[:5])
    # any other global is an inert stand-in (mmengine's, numpy's, builtins.getattr: the real file's test below);
    # one of the modules PyTorch's weights-only unpickler blocks outright is refused, named; nothing runs either way
    marker = tmp_path / "pwned"
    with pytest.raises(ConversionError, match=r"evil.pth: cannot be read safely \(.*GLOBAL (posix|os)\.system"):
        load_official_state_dict(_mmengine_file(official, {"x": _Evil(marker)}), "evil.pth")
    assert not marker.exists()
    with pytest.raises(ConversionError, match="not a PyTorch checkpoint"):
        load_official_state_dict(b"garbage bytes", "garbage.pth")
    buf = io.BytesIO()
    torch.save({"state_dict": {"backbone.conv.weight": torch.zeros(1)}}, buf)
    with pytest.raises(ConversionError, match="not an OMG-Seg checkpoint: no panoptic_head"):
        load_official_state_dict(buf.getvalue(), "resnet.pth")


def test_a_checkpoint_mmengine_itself_saved_loads():
    """tests/fixtures/official/mmengine/runner_checkpoint.pth: written by mmengine 0.8.5's own save_checkpoint, as its
    runner saves (meta, state_dict, message_hub with real HistoryBuffers, optimizer, param_schedulers; the command:
    tests/fixtures/official/README.md). Its message_hub pickles builtins.getattr, which a loader allow-listing
    mmengine's modules refused."""
    data = (ROOT / "tests" / "fixtures" / "official" / "mmengine" / "runner_checkpoint.pth").read_bytes()
    unsafe = torch.serialization.get_unsafe_globals_in_checkpoint(io.BytesIO(data))
    assert {"builtins.getattr", "mmengine.logging.history_buffer.HistoryBuffer"} <= set(unsafe)
    sd = load_official_state_dict(data, "runner_checkpoint.pth")
    assert {k: tuple(v.shape) for k, v in sd.items()} == {
        "panoptic_head.query_embed.weight": (4, 8),
        "panoptic_head.query_feat.weight": (4, 8),
    }


def test_the_cli_writes_a_checkpoint_that_predicts(official, clip_file, tmp_path):
    src = tmp_path / "omg_seg_tiny.pth"
    src.write_bytes(_mmengine_file(official))
    out = tmp_path / "converted.pt"
    cmd = [
        sys.executable,
        "-m",
        "omg_platform.cli",
        "convert-official",
        str(src),
        "--out",
        str(out),
        "--variant",
        "tiny_convnext",
        "--pretrained",
        clip_file,
        "--nheads",
        str(H),
        "--dataset",
        "omg-shapes",
    ]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert f"{len(official)} tensors converted" in r.stdout and "omg-shapes" in r.stdout
    from omg.modeling.checkpoint import load_checkpoint

    _, meta = load_checkpoint(str(out))
    assert meta["converted_from"]["tensors"] == len(official) and meta["label_space"]["names"]
    bad = subprocess.run(
        cmd[:4] + [str(tmp_path / "missing.pth")] + cmd[5:], capture_output=True, text=True, timeout=300
    )
    assert bad.returncode == 2 and "missing.pth" in bad.stderr.strip().splitlines()[-1]
