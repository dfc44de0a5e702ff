"""The exported graphs and ``omg export``.

Three graphs, SAM-style, so that a click or a new vocabulary never re-runs the backbone:

========================  =====================================================  =====================================
graph                     inputs                                                 outputs
========================  =====================================================  =====================================
``image_encoder``         ``image`` 1 x 3 x H x W float32, RGB 0..255, padded    ``mask_features`` 1 x D x H/4 x W/4,
                          with the pixel mean (the predictor's ``_prepare``)     ``mem_s32`` / ``mem_s16`` / ``mem_s8``
                                                                                 1 x D x H/s x W/s, ``clip_features``
                                                                                 1 x C5 x H/32 x W/32
``object_decoder``        the encoder's 4 first outputs, ``text`` C x K x E      ``masks`` 1 x Q x H/4 x W/4 (logits),
                          (unit vectors; any vocabulary)                         ``class_embed`` 1 x Q x E,
                                                                                 ``objectness`` 1 x Q (logits),
                                                                                 ``query_embed`` 1 x Q x D,
                                                                                 ``logits`` 1 x Q x (C + 1)
``prompt_decoder``        same + ``boxes`` 1 x P x 4 (XYXY, input pixels; a      ``masks`` 1 x P x H/4 x W/4,
                          point is a ±3 px box), ``valid`` 1 x P bool,           ``class_embed`` 1 x P x E,
                          ``image_sizes`` 1 x 2 int64 (the resized, unpadded     ``objectness`` 1 x P
                          input's height, width); a model with refinement also
                          ``clicks`` 1 x P x K x 2, ``click_labels`` 1 x P x K
                          int64 (1, 0, -1 none), ``prev_masks`` 1 x P x H/4 x
                          W/4 (NaN: none; docs/model.md §7.3)
========================  =====================================================  =====================================

Dynamic axes: C and K of ``text``, P of the prompts and K of the clicks. The image size is fixed per export
(``--image-size``): the deformable encoder's level sizes are Python integers in the traced graph (``torch.export``
bakes them as constants), so an export serves inputs up to that size and the runtime pads smaller ones to it (see
:mod:`omg.export.runtime`). Batch size 1 (the runtime loops over a batch).

``export.json`` records the format, the variant, the image size, each graph's inputs and outputs with shapes,
the normalisation (inside the encoder: ImageNet mean/std on RGB), the padding value (the pixel mean), the
strides, the checkpoint's test size and training vocabulary, and the versions that wrote it.
"""

from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch import nn

from omg.modeling.model import Features, OMGSeg
from omg.modeling.prompts import Prompts
from omg.utils.vocabulary import Vocabulary

FORMATS = ("onnx", "torch-export")
GRAPHS = ("image_encoder", "object_decoder", "prompt_decoder")
OPSET = 18
#: upper bounds of the dynamic axes (torch.export needs them finite)
MAX_CLASSES, MAX_SYNONYMS, MAX_PROMPTS, MAX_CLICKS = 8192, 256, 4096, 256


def features_of(
    mask_features: torch.Tensor,
    mem_s32: torch.Tensor,
    mem_s16: torch.Tensor,
    mem_s8: torch.Tensor,
    clip_features: torch.Tensor | None,
    image_size: tuple[int, int],
) -> Features:
    """Graph tensors (no time axis) -> the model's :class:`Features` of one image (T = 1)."""
    clip = clip_features[:, :, None] if clip_features is not None else mask_features[:, :1, None]
    return Features(
        mask_features[:, :, None], [mem_s32[:, :, None], mem_s16[:, :, None], mem_s8[:, :, None]], clip, image_size
    )


class ImageEncoder(nn.Module):
    """Backbone + pixel decoder of one padded image."""

    OUTPUTS = ("mask_features", "mem_s32", "mem_s16", "mem_s8", "clip_features")

    def __init__(self, model: OMGSeg):
        super().__init__()
        self.model = model

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, ...]:
        f = self.model.extract(image)
        return (
            f.mask_features[:, :, 0],
            f.memories[0][:, :, 0],
            f.memories[1][:, :, 0],
            f.memories[2][:, :, 0],
            f.clip_features[:, :, 0],
        )


class _Queries(nn.Module):
    """The parts of :class:`OMGSeg` its ``decode`` uses (queries, location encoder, refinement, decoder): a decoder
    graph holds these weights only, not the backbone's."""

    decode = OMGSeg.decode

    def __init__(self, model: OMGSeg):
        super().__init__()
        self.config = model.config
        self.query_feat, self.query_embed = model.query_feat, model.query_embed
        self.location_encoder, self.decoder = model.location_encoder, model.decoder
        self.refinement = model.refinement


class ObjectDecoder(nn.Module):
    """The learned object queries against the encoder's outputs and a vocabulary's text embeddings."""

    OUTPUTS = ("masks", "class_embed", "objectness", "query_embed", "logits")

    def __init__(self, model: OMGSeg, image_size: tuple[int, int]):
        super().__init__()
        self.model, self.image_size = _Queries(model), tuple(image_size)

    def forward(self, mask_features, mem_s32, mem_s16, mem_s8, text) -> tuple[torch.Tensor, ...]:
        out = self.model.decode(features_of(mask_features, mem_s32, mem_s16, mem_s8, None, self.image_size), text)
        return out.pred_masks[:, :, 0], out.class_embed, out.pred_objectness[..., 0], out.query_embed, out.pred_logits


class PromptDecoder(nn.Module):
    """Location queries from box prompts (points as pseudo-boxes) against the encoder's outputs."""

    OUTPUTS = ("masks", "class_embed", "objectness")

    def __init__(self, model: OMGSeg, image_size: tuple[int, int]):
        super().__init__()
        self.model, self.image_size = _Queries(model), tuple(image_size)

    def forward(
        self,
        mask_features,
        mem_s32,
        mem_s16,
        mem_s8,
        text,
        boxes,
        valid,
        image_sizes,
        clicks=None,
        click_labels=None,
        prev_masks=None,
    ) -> tuple[torch.Tensor, ...]:
        prompts = Prompts(boxes, valid, image_sizes, torch.zeros_like(valid), clicks, click_labels, prev_masks)
        out = self.model.decode(
            features_of(mask_features, mem_s32, mem_s16, mem_s8, None, self.image_size), text, prompts
        )
        return out.pred_masks[:, :, 0], out.class_embed, out.pred_objectness[..., 0]


@dataclass(frozen=True)
class TensorSpec:
    name: str
    shape: list  # ints, or names of dynamic axes
    dtype: str
    meaning: str


@dataclass(frozen=True)
class GraphSpec:
    file: str
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]


@dataclass(frozen=True)
class ExportSpec:
    """``export.json``: what the exported graphs are and how to feed them."""

    format: str
    variant: str
    image_size: tuple[int, int]  # (H, W) of the padded input every graph was traced for
    dynamic_axes: dict[str, str]
    pixel_mean: tuple[float, float, float]
    pixel_std: tuple[float, float, float]
    padding: str
    strides: dict[str, int]
    test_size: tuple[int, int]
    training_vocabulary: dict | None
    text_embeddings: str | None  # an .npy of the --vocabulary's C x K x E embeddings, if written
    vocabulary: dict | None
    graphs: dict[str, GraphSpec]
    versions: dict[str, str]
    checkpoint: str

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @staticmethod
    def read(folder: str | Path) -> "ExportSpec":
        path = Path(folder) / "export.json"
        if not path.exists():
            raise FileNotFoundError(f"{folder}: no export.json (write one with omg export)")
        d = json.loads(path.read_text())
        graphs = {
            k: GraphSpec(g["file"], [TensorSpec(**t) for t in g["inputs"]], [TensorSpec(**t) for t in g["outputs"]])
            for k, g in d.pop("graphs").items()
        }
        d["image_size"], d["test_size"] = tuple(d["image_size"]), tuple(d["test_size"])
        d["pixel_mean"], d["pixel_std"] = tuple(d["pixel_mean"]), tuple(d["pixel_std"])
        return ExportSpec(graphs=graphs, **d)


def default_image_size(test_size: Sequence[int], divisibility: int) -> tuple[int, int]:
    """The padded canvas of a landscape image at the test size: (short side, long side) rounded up."""
    long_side, short_side = max(test_size), min(test_size)
    up = lambda x: -(-int(x) // divisibility) * divisibility  # noqa: E731
    return up(short_side), up(long_side)


def example_inputs(
    model: OMGSeg,
    image_size: tuple[int, int],
    num_classes: int = 3,
    num_synonyms: int = 2,
    num_prompts: int = 2,
    seed: int = 0,
) -> dict[str, tuple[torch.Tensor, ...]]:
    """Random inputs of every graph (the image in 0..255; text unit vectors; prompts inside the image)."""
    g = torch.Generator().manual_seed(seed)
    h, w = image_size
    image = torch.rand(1, 3, h, w, generator=g) * 255
    with torch.no_grad():
        enc = ImageEncoder(model)(image)
    e = model.backbone.variant.embed_dim
    text = nn.functional.normalize(torch.randn(num_classes, num_synonyms, e, generator=g), dim=-1)
    xy = torch.rand(1, num_prompts, 2, generator=g) * torch.tensor([w * 0.5, h * 0.5])
    wh = torch.rand(1, num_prompts, 2, generator=g) * torch.tensor([w * 0.4, h * 0.4]) + 6
    boxes = torch.cat([xy, xy + wh], -1)
    valid = torch.ones(1, num_prompts, dtype=torch.bool)
    sizes = torch.tensor([[h, w]], dtype=torch.int64)
    prompts = (boxes, valid, sizes)
    if model.config.refinement:  # each prompt: a positive click at its box's centre and a negative one; the
        centre = (boxes[..., :2] + boxes[..., 2:]) / 2  # first prompt without a previous mask
        clicks = torch.stack([centre, centre + torch.tensor([w * 0.1, h * 0.1])], 2)
        labels = torch.tensor([1, 0]).expand(1, num_prompts, 2).clone()
        prev = torch.randn(1, num_prompts, h // 4, w // 4, generator=g)
        prev[:, 0] = float("nan")
        prompts += (clicks, labels, prev)
    return {
        "image_encoder": (image,),
        "object_decoder": (*enc[:4], text),
        "prompt_decoder": (*enc[:4], text, *prompts),
    }


def graph_modules(model: OMGSeg, image_size: tuple[int, int]) -> dict[str, nn.Module]:
    return {
        "image_encoder": ImageEncoder(model).eval(),
        "object_decoder": ObjectDecoder(model, image_size).eval(),
        "prompt_decoder": PromptDecoder(model, image_size).eval(),
    }


#: the prompt decoder's inputs of a model with refinement, after the released ones
REFINEMENT_INPUTS = ("clicks", "click_labels", "prev_masks")


def _input_names(graph: str, refinement: bool = False) -> list[str]:
    return {
        "image_encoder": ["image"],
        "object_decoder": ["mask_features", "mem_s32", "mem_s16", "mem_s8", "text"],
        "prompt_decoder": ["mask_features", "mem_s32", "mem_s16", "mem_s8", "text", "boxes", "valid", "image_sizes"]
        + (list(REFINEMENT_INPUTS) if refinement else []),
    }[graph]


def _dynamic_shapes(graph: str, refinement: bool = False):
    c = torch.export.Dim("classes", min=1, max=MAX_CLASSES)
    k = torch.export.Dim("synonyms", min=1, max=MAX_SYNONYMS)
    p = torch.export.Dim("prompts", min=1, max=MAX_PROMPTS)
    if graph == "image_encoder":
        return None
    text = {0: c, 1: k}
    if graph == "object_decoder":
        return (None, None, None, None, text)
    shapes = (None, None, None, None, text, {1: p}, {1: p}, None)
    if refinement:
        clicks = torch.export.Dim("clicks", min=1, max=MAX_CLICKS)
        shapes += ({1: p, 2: clicks}, {1: p, 2: clicks}, {1: p})
    return shapes


def _spec_of(model: OMGSeg, graph: str, file: str, image_size: tuple[int, int]) -> GraphSpec:
    v, cfg = model.backbone.variant, model.config
    h, w = image_size
    d, e, q = cfg.hidden_dim, v.embed_dim, cfg.num_queries
    c5 = v.channels[-1]
    mems = [
        TensorSpec("mask_features", [1, d, h // 4, w // 4], "float32", "pixel-decoder mask features, stride 4"),
        TensorSpec("mem_s32", [1, d, h // 32, w // 32], "float32", "pixel-decoder memory, stride 32"),
        TensorSpec("mem_s16", [1, d, h // 16, w // 16], "float32", "pixel-decoder memory, stride 16"),
        TensorSpec("mem_s8", [1, d, h // 8, w // 8], "float32", "pixel-decoder memory, stride 8"),
    ]
    text = TensorSpec(
        "text",
        ["classes", "synonyms", e],
        "float32",
        "class-name text embeddings, unit vectors (omg.modeling.text.TextEmbedder), padded with the first synonym",
    )
    if graph == "image_encoder":
        return GraphSpec(
            file,
            [
                TensorSpec(
                    "image",
                    [1, 3, h, w],
                    "float32",
                    "RGB 0..255, resized keep-ratio, padded bottom/right with the pixel mean",
                )
            ],
            mems
            + [
                TensorSpec(
                    "clip_features",
                    [1, c5, h // 32, w // 32],
                    "float32",
                    "the frozen CLIP backbone's stride-32 level (open-vocabulary pooling)",
                )
            ],
        )
    outputs = [
        TensorSpec(
            "masks",
            [1, q if graph == "object_decoder" else "prompts", h // 4, w // 4],
            "float32",
            "mask logits at stride 4 of the padded input",
        ),
        TensorSpec(
            "class_embed",
            [1, q if graph == "object_decoder" else "prompts", e],
            "float32",
            "unit class embeddings: logits = exp(4.6052) * max over synonyms of the cosine with text",
        ),
        TensorSpec("objectness", [1, q if graph == "object_decoder" else "prompts"], "float32", "objectness logits"),
    ]
    if graph == "object_decoder":
        outputs += [
            TensorSpec("query_embed", [1, q, d], "float32", "last-layer queries before the post-norm"),
            TensorSpec("logits", [1, q, "classes + 1"], "float32", "class logits, background last (0)"),
        ]
        return GraphSpec(file, mems + [text], outputs)
    prompts = [
        TensorSpec(
            "boxes", [1, "prompts", 4], "float32", "XYXY in pixels of the resized input (a point: [x-3, y-3, x+3, y+3])"
        ),
        TensorSpec("valid", [1, "prompts"], "bool", "False for padding prompts"),
        TensorSpec("image_sizes", [1, 2], "int64", "(height, width) of the resized, unpadded input"),
    ]
    if cfg.refinement:
        prompts += [
            TensorSpec("clicks", [1, "prompts", "clicks", 2], "float32", "every click on the object, XY input pixels"),
            TensorSpec("click_labels", [1, "prompts", "clicks"], "int64", "1 positive, 0 negative, -1 no click"),
            TensorSpec(
                "prev_masks",
                [1, "prompts", h // 4, w // 4],
                "float32",
                "the previous binary mask as logits +-3.89 at stride 4; a NaN plane: none",
            ),
        ]
    return GraphSpec(file, mems + [text] + prompts, outputs)


def export_graphs(
    model: OMGSeg, out_dir: str | Path, fmt: str, image_size: tuple[int, int], progress=None
) -> dict[str, str]:
    """Write the three graphs of ``model`` in ``fmt`` under ``out_dir``; -> graph -> file name."""
    if fmt not in FORMATS:
        raise ValueError(f"format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    d = model.size_divisibility
    if image_size[0] % d or image_size[1] % d:
        raise ValueError(
            f"--image-size {image_size[0]} {image_size[1]}: both must be multiples of {d} "
            f"({model.backbone.variant.name})"
        )
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    model = model.eval()
    inputs = example_inputs(model, image_size)
    files = {}
    for name, module in graph_modules(model, image_size).items():
        t0 = time.monotonic()
        file = f"{name}.onnx" if fmt == "onnx" else f"{name}.pt2"
        with torch.no_grad():
            if fmt == "onnx":
                _quiet_onnx_export(
                    module,
                    inputs[name],
                    out_dir / file,
                    _input_names(name, model.config.refinement),
                    list(module.OUTPUTS),
                    _dynamic_shapes(name, model.config.refinement),
                )
            else:
                shapes = _dynamic_shapes(name, model.config.refinement)
                ep = torch.export.export(module, inputs[name], dynamic_shapes=shapes)
                torch.export.save(ep, str(out_dir / file))
        files[name] = file
        if progress:
            progress(
                f"{name}: {file} ({(out_dir / file).stat().st_size / 2**20:.1f} MiB) [{time.monotonic() - t0:.1f}s]"
            )
    return files


def _quiet_onnx_export(module, args, path, input_names, output_names, dynamic_shapes) -> None:
    """torch.onnx's dynamo exporter, its progress chatter and warnings silenced (errors still raise)."""
    import contextlib
    import io
    import logging
    import warnings

    buf = io.StringIO()
    with warnings.catch_warnings(), contextlib.redirect_stdout(buf):
        warnings.simplefilter("ignore")
        for name in ("torch.onnx", "onnxscript"):
            logging.getLogger(name).setLevel(logging.ERROR)
        program = torch.onnx.export(
            module,
            args,
            input_names=input_names,
            output_names=output_names,
            dynamic_shapes=dynamic_shapes,
            opset_version=OPSET,
            dynamo=True,
            external_data=False,
        )
        program.save(str(path))


def export(
    model: OMGSeg,
    metadata: dict,
    out_dir: str | Path,
    fmt: str,
    image_size: tuple[int, int] | None = None,
    vocabulary=None,
    checkpoint: str = "",
    progress=None,
) -> ExportSpec:
    """``omg export``: the graphs, the vocabulary's text embeddings (if any) and ``export.json``."""
    from omg.modeling.text import TextEmbedder

    test_size = tuple(metadata.get("test_size") or (1333, 800))
    image_size = tuple(image_size or default_image_size(test_size, model.size_divisibility))
    files = export_graphs(model, out_dir, fmt, image_size, progress)
    out_dir = Path(out_dir)
    text_file = None
    if vocabulary is not None:
        text_file = "text_embeddings.npy"
        np.save(out_dir / text_file, TextEmbedder(model.backbone).embed(vocabulary).cpu().numpy())
    v = model.backbone.variant
    ls = metadata.get("label_space")
    training = Vocabulary.from_dict(ls) if ls else None
    spec = ExportSpec(
        format=fmt,
        variant=v.name,
        image_size=image_size,
        dynamic_axes={
            "classes": "text axis 0",
            "synonyms": "text axis 1",
            "prompts": "boxes / valid axis 1",
            **({"clicks": "clicks / click_labels axis 2"} if model.config.refinement else {}),
        },
        pixel_mean=tuple(v.pixel_mean),
        pixel_std=tuple(v.pixel_std),
        padding="bottom/right with the pixel mean (0 after the encoder's normalisation), to image_size",
        strides={"mask_features": 4, "mem_s32": 32, "mem_s16": 16, "mem_s8": 8, "clip_features": 32},
        test_size=test_size,
        training_vocabulary=training.to_dict() if training else None,
        text_embeddings=text_file,
        vocabulary=vocabulary.to_dict() if vocabulary is not None else None,
        graphs={g: _spec_of(model, g, f, image_size) for g, f in files.items()},
        versions={"torch": torch.__version__, "onnx_opset": str(OPSET), "onnx": _version("onnx")},
        checkpoint=checkpoint,
    )
    (out_dir / "export.json").write_text(json.dumps(spec.to_dict(), indent=1))
    return spec


def _version(module: str) -> str:
    try:
        return __import__(module).__version__
    except ImportError:
        return "not installed"
