"""docs/parity.md, written from the parity harness's JSON files (tools/parity/results/*.json), so that the page's
figures and its account of which sets flipped cannot drift from what the harness measured.

    python tools/parity/report.py            # rewrites docs/parity.md
    python tools/parity/report.py --check    # exit 1 when docs/parity.md is not what the JSON files give

tests/test_docs.py runs the check in CI (it needs nothing of the official code).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from pathlib import Path

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
PAGE = HERE.parent.parent / "docs" / "parity.md"

VARIANTS = {
    "convnext_large_d_320": "the released ConvNeXt-L (`OpenCLIPBackbone`, official)",
    "tiny_convnext": "our tiny ConvNeXt, the same features into both heads",
}


def group_of(name: str) -> tuple[str, str]:
    """'batch/objects/set3/mask_logits' -> ('batch', 'objects: mask logits'); 'square/backbone/res2' ->
    ('square', 'backbone')."""
    parts = name.split("/")
    case, part = parts[0], parts[1]
    if "postprocess" in parts:
        on = "the model's scores and masks" if part == "model" else "blob masks"
        return case, f"fusion head on {on}: {parts[-1].replace('_', ' ')}"
    if part in ("objects", "prompts"):
        return case, f"{part}: {parts[-1].replace('_', ' ')}"
    if part == "open_vocab":
        return case, "open vocabulary: fused log-probabilities"
    return case, part.replace("_", " ")


def command(settings: dict) -> str:
    flags = f"--variant {settings['variant']} --size {settings['size']} --seed {settings['seed']}"
    if settings.get("inject_error") is not None:
        flags += f" --inject-error {settings['inject_error']}"
    return f"`{flags}`"


def flip_summary(doc: dict) -> str:
    """Where a threshold flipped, and for how many elements, in words."""
    parts = [f"{where} ({n} element{'s' if n > 1 else ''})" for where, n in doc["flips"].items() if n]
    return "; ".join(parts) if parts else "no flip"


def backbone_sentence(docs: list[dict]) -> str:
    """What the runs with the released backbone measured on its features and CLIP head."""
    values = [t["max_abs"] for d in docs for t in d["tensors"] if group_of(t["name"])[1] == "backbone"]
    if not values:
        return ""
    if max(values) == 0:
        return "The backbone features and the CLIP image head are bit-identical (both sides run open_clip's modules)."
    return f"The backbone features and the CLIP image head differ by at most {max(values):.2e}."


def run_table(docs: list[dict]) -> list[str]:
    lines = [
        "| Command (`python tools/parity/parity.py --omgseg <checkout> ...`) | Backbone | Inputs | Tensors | "
        "Worst / tolerance | Max abs difference (values) | Thresholded elements flipped | Result |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for doc in docs:
        s, tensors = doc["settings"], doc["tensors"]
        worst = max(tensors, key=lambda t: t["worst"])
        largest = max(t["max_abs"] for t in tensors if not t["name"].endswith("panoptic_ids"))  # pixel counts
        shapes = "; ".join(f"{case}: " + ", ".join(f"{h}x{w}" for h, w in hw) for case, hw in s["shapes"].items())
        flipped = sum(doc["flips"].values())
        result = "**pass**" if doc["ok"] else f"**fail** ({sum(t['worst'] > 1 for t in tensors)} tensors)"
        lines.append(
            f"| {command(s)} | {VARIANTS.get(s['variant'], s['variant'])} | {shapes} | {len(tensors)} | "
            f"{worst['worst']:.3f} ({worst['name']}) | {largest:.2e} | {flipped} | {result} |"
        )
    return lines


def group_table(doc: dict) -> list[str]:
    groups: dict[tuple[str, str], list[dict]] = defaultdict(list)
    for t in doc["tensors"]:
        groups[group_of(t["name"])].append(t)
    lines = [
        "| Input | Tensor group | Tensors | Max abs difference | Worst / tolerance | What they held |",
        "|---|---|---|---|---|---|",
    ]
    for (case, group), ts in groups.items():
        notes = "; ".join(t["note"] for t in ts if t.get("note"))
        lines.append(
            f"| {case} | {group} | {len(ts)} | {max(t['max_abs'] for t in ts):.2e} | "
            f"{max(t['worst'] for t in ts):.3f} | {notes} |"
        )
    return lines


def render(docs: list[dict]) -> str:
    runs = [d for d in docs if d["settings"].get("inject_error") is None]
    injected = [d for d in docs if d["settings"].get("inject_error") is not None]
    s0 = runs[0]["settings"]
    out = [
        "# Parity with the released OMG-Seg forward pass",
        "",
        "<!-- written by tools/parity/report.py from tools/parity/results/*.json: edit those or the script -->",
        "",
        "Measured with `tools/parity/parity.py` (how to run it: `tools/parity/README.md`) on "
        f"{s0.get('machine', 'an unnamed machine')}; torch {s0['torch']}, "
        + ", ".join(f"{k} {v}" for k, v in s0.get("libraries", {}).items())
        + f", OMG-Seg at `{s0.get('omgseg_commit', 'unknown')}`. Both models: random weights (the official model's "
        "own initialisation, converted with `omg.modeling.official`), the released head's sizes (256-d, 300 "
        "queries, 6 encoder and 9 decoder layers, 8 heads, 4 sampling points), three classes' text embeddings "
        "(one of them unseen in training, so both branches of the open-vocabulary ensemble run), float32 on the "
        "CPU. Each run feeds two inputs: one square image, and a batch of two non-square images of different "
        "sizes padded to a common size (the released preprocessor normalises, then pads with 0; ours pads with the "
        "pixel mean, which normalises to the same 0).",
        "",
        "Compared for each input: the four backbone features and the CLIP image head (released backbone only), the "
        "pixel decoder's mask features and three memories, every prediction set's mask logits, class logits and "
        "objectness for object queries under the released panoptic evaluation config "
        "(`seg/configs/m2ov_val/models/m2_convl_300q.py`, `enable_box_query` off) and for a point and a box prompt "
        "under its point-prompt evaluation config (`eval_m2_convl_ov_coco_pan_point.py` L11, `enable_box_query=True`; "
        "a point is its released ±3 px box), and the open-vocabulary path end to end: the fused class "
        "log-probabilities of the released `Mask2formerVideo.open_voc_inference` (`seg/models/detectors/"
        "mask2former_vid.py` L272-318: the head's `predict`, mask pooling of the frozen CLIP's last stage, "
        "alpha 0.4 / beta 0.8) against our predictor's `class_logits` with the ensemble on; then the released "
        "fusion head (`OMGFusionHead.predict`, `seg/models/fusion_head/omgseg_fusionhead.py`, under the released "
        "test_cfg) on those scores and masks against our `panoptic_inference` (released segment ids) and "
        "`instance_inference`: panoptic maps equal pixel for pixel, instances matched one to one by label and mask "
        "with their scores within the tolerance. Random weights leave few panoptic segments (each query wins "
        "too little of its own mask for `iou_thr` 0.8; the counts are in the tables), so the same post-processing "
        'also runs on blob-shaped masks with peaked class scores, where more survive ("blob masks" below). The '
        "number of prediction sets, "
        "levels, memories and thresholds of the two sides must agree too.",
        "",
        "## Runs",
        "",
        *run_table(runs),
        "",
        f"Tolerance, per element: `|ours - theirs| <= atol + rtol * |theirs|` with atol {s0['atol']:g} and rtol "
        f'{s0["rtol"]:g} (torch.isclose\'s rule); "worst / tolerance" is the largest difference over what the '
        "tolerance allows there (at most 1 passes). " + backbone_sentence(runs),
        "",
        "## Threshold flips, held in step",
        "",
        "Three places turn logits into binary masks at 0: the class branch pools the mask features under "
        "`logit > 0` (`mask_pool`), the next decoder layer's cross-attention mask is `sigmoid(bilinear(logit)) < "
        "0.5` (ours: `bilinear(logit) < 0`), and the open-vocabulary branch pools the CLIP features under "
        "`bilinear(logit) > 0` at stride 32. The two implementations agree to float32 rounding (differently ordered "
        "sums: our attention is `scaled_dot_product_attention`, theirs `nn.MultiheadAttention`; our deformable "
        "attention samples each level with one `grid_sample`, as theirs does, in another order), so a logit within "
        "that distance of 0 can land on either side, and what follows it would then differ by more than rounding. "
        "The harness records the official side's binary masks at all three places; ours computes its own (its "
        "code runs, and every element where the two differ is counted below) and goes on with the official ones. "
        "Each such element must be a rounding flip: the two sides' logits there within the tolerance of each "
        "other, or the run fails. Nothing is excused: every value of every set, before and after a flip, is held "
        "to the tolerance. The post-processing cannot be held in step the same way (it is the released fusion "
        "head, run whole), so there a panoptic pixel may go to another segment only on a rounding tie (the two "
        "largest `score x sigmoid(mask logit)` within the tolerance, or a logit within it of 0), and an instance "
        "mask may differ only in pixels where our logit is within it of 0; the tables say how many.",
        "",
    ]
    for doc in runs:
        out.append(f"- {command(doc['settings'])}: {flip_summary(doc)}.")
    out += ["", "## Figures per tensor group", ""]
    for doc in runs:
        out += [f"### {command(doc['settings'])}", "", *group_table(doc), ""]
    if injected:
        out += ["## The harness fails on a real difference", ""]
        for doc in injected:
            s = doc["settings"]
            failed = [t for t in doc["tensors"] if t["worst"] > 1]
            first = min(failed, key=lambda t: doc["tensors"].index(t))["name"] if failed else "none"
            out.append(
                f"- {command(s)} (a fixed 1e-3 x N(0, 1) error added to the output of our decoder layer "
                f"{s['inject_error']}, the last, after every flip listed above for the same settings): "
                + (
                    f"**fails**, {len(failed)} tensors beyond the tolerance (the first {first}, the worst "
                    f"{max(t['worst'] for t in failed if t['worst'] != float('inf')):.1f} x it; "
                    f"{sum(t['worst'] == float('inf') for t in failed)} post-processing results that do not match), "
                    f"and {len(doc['count_errors'])} thresholds on the other side of 0 where the logits differ by "
                    "more than rounding."
                    if failed
                    else "**passes: the harness missed it**."
                )
            )
        out.append("")
    out += [
        "## What this does not cover",
        "",
        "- The released weights themselves (not downloadable where this was built): the converter is tested on "
        "state dicts written from the official module definitions and on a file saved by mmengine's own checkpoint "
        "code (`tests/modeling/test_official_checkpoint.py`).",
        "- CUDA kernels: mmcv's compiled deformable attention was not built; on the CPU mmcv runs its pure-PyTorch "
        "path.",
        "- The text tower: both sides get the same text embeddings (ours); the tower itself is open_clip's module "
        "on both sides of a real deployment.",
        "- Video (clips of several frames, the tracker) and semantic post-processing (the released fusion head has "
        "none: `semantic_postprocess` raises `NotImplementedError`).",
        "",
    ]
    return "\n".join(out)


def load(paths: list[Path]) -> list[dict]:
    docs = [json.loads(p.read_text()) for p in paths]
    order = {"convnext_large_d_320": 0, "tiny_convnext": 1}
    return sorted(docs, key=lambda d: (order.get(d["settings"]["variant"], 2), d["settings"]["size"]))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--check", action="store_true", help="exit 1 when docs/parity.md differs from what it would write")
    args = p.parse_args(argv)
    paths = sorted(RESULTS.glob("*.json"))
    if not paths:
        print(
            f"no parity results in {RESULTS}: run tools/parity/parity.py with --json-out there first "
            '(tools/parity/README.md, "Run it")',
            file=sys.stderr,
        )
        return 2
    text = render(load(paths))
    if args.check:
        if PAGE.read_text() != text:
            print(f"{PAGE} is not what {RESULTS}/*.json give: run python tools/parity/report.py", file=sys.stderr)
            return 1
        return 0
    PAGE.write_text(text)
    print(f"wrote {PAGE} from {len(paths)} result file(s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
