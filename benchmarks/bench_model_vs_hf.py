"""Forward and forward+backward time of OMG-Seg vs Hugging Face transformers' Mask2Former.

Baseline: ``transformers.Mask2FormerForUniversalSegmentation`` with a ConvNeXt trunk of the
same size as our variant's (ConvNeXt-L: depths 3-3-27-3, widths 192-384-768-1536), the same
number of queries (300), decoder layers (9 + the initial prediction) and pixel-decoder
encoder layers (6), random init — measured in the same process, on the same input.

Both backbones are frozen (OMG-Seg's default; for the baseline, ``requires_grad=False``),
so forward+backward trains the same parts. The backward pass starts from a scalar made of
every prediction set's mask and class logits (no matcher, so only network compute counts).

    pip install transformers==5.24.0     # the comparator (benchmarks/requirements.txt)
    python benchmarks/bench_model_vs_hf.py --size 512 --repeats 3

Prints a table and the ratio ours / theirs (below 1.0 = we are faster); ``--json-out``
writes the figures.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys

import torch
from common import seconds


def build_ours(variant: str, num_classes: int):
    from omg.modeling.model import ModelConfig, build_model

    model = build_model(ModelConfig(variant=variant))
    embed = model.backbone.variant.embed_dim
    text = torch.nn.functional.normalize(torch.randn(num_classes, 1, embed), dim=-1)

    def forward(x):
        nonlocal text
        if text.device != x.device:  # the model was moved after it was built
            text = text.to(x.device)
        return model(x, text)

    def scalar(out):
        return sum(p.masks.float().mean() + p.logits[..., :-1].float().mean() for p in out.predictions)

    return model, forward, scalar


def build_hf(variant: str, num_classes: int):
    from transformers import ConvNextConfig, Mask2FormerConfig, Mask2FormerForUniversalSegmentation

    from omg.modeling.variants import get_variant

    v = get_variant(variant)
    depths = {(192, 384, 768, 1536): [3, 3, 27, 3], (128, 256, 512, 1024): [3, 3, 27, 3]}
    if v.kind != "convnext" or tuple(v.channels) not in depths:
        raise SystemExit(f"the HF baseline is defined for the ConvNeXt-L/B variants, not {variant}")
    backbone = ConvNextConfig(
        depths=depths[tuple(v.channels)],
        hidden_sizes=list(v.channels),
        out_features=["stage1", "stage2", "stage3", "stage4"],
    )
    cfg = Mask2FormerConfig(
        backbone_config=backbone,
        num_queries=300,
        decoder_layers=10,
        encoder_layers=6,
        num_labels=num_classes,
        use_auxiliary_loss=True,
    )
    model = Mask2FormerForUniversalSegmentation(cfg)
    for p in model.model.pixel_level_module.encoder.parameters():
        p.requires_grad_(False)

    def forward(x):
        return model(pixel_values=x, output_auxiliary_logits=True)

    def scalar(out):
        total = out.masks_queries_logits.float().mean() + out.class_queries_logits.float().mean()
        for aux in out.auxiliary_logits or []:
            total = total + aux["masks_queries_logits"].float().mean() + aux["class_queries_logits"].float().mean()
        return total

    return model, forward, scalar


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--variant", default="convnext_large_d_320")
    p.add_argument("--size", type=int, default=512)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=torch.get_num_threads())
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--json-out")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    dev = torch.device(args.device)
    x = torch.rand(1, 3, args.size, args.size, device=dev) * 255
    x_hf = (x / 255 - 0.45) / 0.225  # HF takes normalised input; the value range does not change the cost
    results = {}
    for name, builder, inp in (("omg", build_ours, x), ("hf_mask2former", build_hf, x_hf)):
        model, forward, scalar = builder(args.variant, 133)
        model.to(dev)
        n_queries = 300
        model.eval()

        def fwd():
            with torch.no_grad():
                forward(inp)
            if dev.type == "cuda":
                torch.cuda.synchronize()

        def fwd_bwd(model=model):  # (the model of this iteration; it is deleted below)
            model.train()
            model.zero_grad(set_to_none=True)
            scalar(forward(inp)).backward()
            if dev.type == "cuda":
                torch.cuda.synchronize()

        f = seconds(fwd, args.repeats)
        fb = seconds(fwd_bwd, args.repeats)
        trainable = sum(q.numel() for q in model.parameters() if q.requires_grad)
        results[name] = {
            "forward_s": statistics.median(f),
            "forward_backward_s": statistics.median(fb),
            "forward_all": f,
            "forward_backward_all": fb,
            "trainable_params": trainable,
            "queries": n_queries,
        }
        print(
            f"{name:16s} forward {statistics.median(f):7.3f} s   forward+backward {statistics.median(fb):7.3f} s   "
            f"trainable {trainable / 1e6:.2f} M",
            flush=True,
        )
        del model
    ours, theirs = results["omg"], results["hf_mask2former"]
    ratio_f = ours["forward_s"] / theirs["forward_s"]
    ratio_fb = ours["forward_backward_s"] / theirs["forward_backward_s"]
    print(f"ratio ours/theirs: forward {ratio_f:.3f}x, forward+backward {ratio_fb:.3f}x (target forward <= 1.0x)")
    doc = {
        "variant": args.variant,
        "size": args.size,
        "device": str(dev),
        "threads": args.threads,
        "machine": f"{platform.machine()} {platform.processor() or ''}".strip(),
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "results": results,
        "ratio_forward": ratio_f,
        "ratio_forward_backward": ratio_fb,
    }
    if args.json_out:
        with open(args.json_out, "w") as fh:
            json.dump(doc, fh, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
