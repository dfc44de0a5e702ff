"""``omg export``: a checkpoint as ONNX or torch.export graphs; its flags and what reads them."""

from __future__ import annotations

import argparse
import time

from omg.utils.log import get_logger

log = get_logger(__name__)


def cmd_export(args: argparse.Namespace) -> int:
    from omg.export.graphs import export
    from omg.modeling.checkpoint import load_checkpoint
    from omg.utils.vocabulary import Vocabulary

    t0 = time.monotonic()
    model, metadata = load_checkpoint(args.checkpoint)
    vocab = None
    if args.vocabulary:
        ls = metadata.get("label_space")
        vocab = Vocabulary.parse(args.vocabulary, Vocabulary.from_dict(ls) if ls else None)
    size = tuple(args.image_size) if args.image_size else None
    spec = export(
        model,
        metadata,
        args.out,
        args.format,
        size,
        vocab,
        checkpoint=args.checkpoint,
        progress=lambda line: log.info(f"[export] {line}"),
    )
    h, w = spec.image_size
    print(
        f"{args.out}: {args.format} graphs of {spec.variant} for {h}x{w} inputs (dynamic: classes, synonyms, "
        f"prompts); export.json describes them [{time.monotonic() - t0:.1f}s]"
    )
    return 0


def register(sub) -> None:
    exp = sub.add_parser(
        "export",
        help="export a checkpoint as ONNX or torch.export graphs (image encoder, object and prompt decoders)",
        description="Write three graphs (omg/export/graphs.py): the image encoder (image -> backbone and pixel-decoder "
        "features), the object-query decoder and the prompt decoder (features + text embeddings [+ boxes] "
        "-> mask logits, class embeddings, objectness), with export.json saying what every input and "
        "output is. The vocabulary is an input tensor (dynamic classes and synonyms), as are the prompts; "
        "the image size is fixed per export. Run them with omg predict --runtime onnx|torch-export.",
    )
    exp.add_argument("--checkpoint", required=True, help="an OMG-Seg checkpoint (path or fsspec URI)")
    exp.add_argument("--format", required=True, choices=["onnx", "torch-export"])
    exp.add_argument("--out", required=True, help="output folder")
    exp.add_argument(
        "--image-size",
        type=int,
        nargs=2,
        metavar=("H", "W"),
        help="the padded input size the graphs take (multiples of the backbone's divisibility; default: "
        "the checkpoint's test size, landscape, rounded up)",
    )
    exp.add_argument(
        "--vocabulary",
        action="append",
        help="also write this vocabulary's text embeddings (text_embeddings.npy; repeat per class), for "
        "runtimes without the CLIP text tower",
    )
    exp.set_defaults(func=cmd_export)
