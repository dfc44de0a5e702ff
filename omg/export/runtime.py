"""Run exported graphs behind the predictor: ``OMGPredictor(ExportedModel(...), metadata)``.

:class:`ExportedModel` answers the two calls :class:`~omg.inference.predictor.OMGPredictor` makes of a model,
``extract`` (the ``image_encoder`` graph) and ``decode`` (``object_decoder`` or ``prompt_decoder``), with ONNX
Runtime (``format: onnx``) or a loaded ``torch.export`` program (``torch-export``). Everything else — resizing,
padding, post-processing, open-vocabulary ensemble, writers — is the PyTorch path's own code, so the two
runtimes differ only by the graphs' numerics.

Two pieces stay in PyTorch, from the checkpoint the export was made from: the CLIP *text* tower (a vocabulary is
an input tensor of the graphs, embedded once and cached, so a new vocabulary needs no re-export) and the CLIP
image head used by the open-vocabulary ensemble (a two-layer MLP on mask-pooled features).

An input smaller than the export's ``image_size`` is padded further (bottom/right, with the pixel mean) up to it,
and the predictor then post-processes from that canvas exactly as it does from its own padding: the results
are those of the PyTorch predictor on an input padded to ``image_size`` (identical when the input's padded size
is the export's; the deformable encoder sees the extra padding otherwise, as the released code's batch padding
does). A larger input is refused naming both sizes. Video tasks need clips (T > 1 frames per forward), which the
exported graphs do not take: they are refused too.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from omg.export.graphs import ExportSpec
from omg.modeling.heads import class_logits
from omg.modeling.model import Features, OMGOutput, OMGSeg
from omg.modeling.prompts import Prompts
from omg.modeling.refine import clicks_of

RUNTIMES = ("torch", "onnx", "torch-export")


class _Graph:
    """One exported graph: call with tensors, get tensors (CPU float32 in, on ``device`` out)."""

    def __init__(self, folder: Path, file: str, fmt: str, threads: int | None):
        self.fmt = fmt
        path = folder / file
        if not path.exists():
            raise FileNotFoundError(f"{path}: missing (export.json lists it)")
        if fmt == "onnx":
            import onnxruntime as ort

            opts = ort.SessionOptions()
            opts.log_severity_level = 3
            if threads:
                opts.intra_op_num_threads = threads
            self.session = ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])
            self.names = [i.name for i in self.session.get_inputs()]
        else:
            self.module = torch.export.load(str(path)).module()

    def __call__(self, *tensors: torch.Tensor) -> list[torch.Tensor]:
        if self.fmt == "onnx":
            feed = {n: t.detach().cpu().numpy() for n, t in zip(self.names, tensors)}
            return [torch.from_numpy(np.asarray(o)) for o in self.session.run(None, feed)]
        with torch.no_grad():
            return list(self.module(*[t.detach().cpu() for t in tensors]))


class ExportedModel(nn.Module):
    """A stand-in for :class:`OMGSeg` whose ``extract`` / ``decode`` run the exported graphs of ``folder``.

    ``model`` is the checkpoint's PyTorch model: its text tower, CLIP image head, configuration and logit scale
    are used as they are; its backbone, pixel decoder and decoder are not run.
    """

    def __init__(self, model: OMGSeg, folder: str | Path, threads: int | None = None):
        super().__init__()
        self.folder = Path(folder)
        self.spec = ExportSpec.read(self.folder)
        if self.spec.variant != model.backbone.variant.name:
            raise ValueError(
                f"{self.folder}: exported from a {self.spec.variant} model, the checkpoint is "
                f"{model.backbone.variant.name}"
            )
        self.config = model.config
        self.refinement = model.refinement  # not run: says the prompt graph takes clicks and previous masks
        self.backbone = model.backbone
        self.decoder = model.decoder
        self.graphs = {
            name: _Graph(self.folder, g.file, self.spec.format, threads) for name, g in self.spec.graphs.items()
        }
        self.stats = {"graph_calls": 0}

    @property
    def size_divisibility(self) -> int:
        return self.backbone.variant.size_divisibility

    # ------------------------------------------------------------------ the OMGSeg interface
    def extract(self, images: torch.Tensor) -> Features:
        if images.dim() == 5:
            if images.shape[1] != 1:
                raise ValueError(
                    f"the exported graphs take single images, not clips of {images.shape[1]} frames: "
                    "run video tasks with the PyTorch runtime"
                )
            images = images[:, 0]
        n, _, h, w = images.shape
        eh, ew = self.spec.image_size
        if h > eh or w > ew:
            raise ValueError(
                f"the input is {h}x{w} (padded) but {self.folder} was exported for at most {eh}x{ew}: "
                f"export again with --image-size {max(h, eh)} {max(w, ew)}"
            )
        mean = torch.tensor(self.spec.pixel_mean, dtype=torch.float32).view(1, 3, 1, 1)
        outs = []
        for i in range(n):
            canvas = mean.repeat(1, 1, eh, ew)
            canvas[:, :, :h, :w] = images[i : i + 1].float().cpu()
            outs.append(self.graphs["image_encoder"](canvas))
            self.stats["graph_calls"] += 1
        device = self.backbone.pixel_mean.device
        mf, m32, m16, m8, clip = [torch.cat([o[k] for o in outs]).to(device)[:, :, None] for k in range(5)]
        return Features(mf, [m32, m16, m8], clip, (eh, ew))

    def decode(self, features: Features, text_embeddings: torch.Tensor, prompts: Prompts | None = None) -> OMGOutput:
        if features.num_frames != 1:
            raise ValueError("the exported graphs take single images: run video tasks with the PyTorch runtime")
        if tuple(features.image_size) != tuple(self.spec.image_size):
            raise ValueError(f"features of a {features.image_size} input; the graphs take {self.spec.image_size}")
        device = features.mask_features.device
        text = text_embeddings.float().cpu()
        outs = []
        for i in range(features.mask_features.shape[0]):
            maps = [t[i : i + 1, :, 0].float().cpu() for t in (features.mask_features, *features.memories)]
            if prompts is None:
                outs.append(self.graphs["object_decoder"](*maps, text))
            else:
                outs.append(self.graphs["prompt_decoder"](*maps, text, *self._prompt_inputs(prompts, i, maps[0])))
            self.stats["graph_calls"] += 1
        masks = torch.cat([o[0] for o in outs]).to(device)
        class_embed, objectness = (torch.cat([o[k] for o in outs]).to(device) for k in (1, 2))
        if prompts is None:
            query_embed, logits = (torch.cat([o[k] for o in outs]).to(device) for k in (3, 4))
        else:
            query_embed = torch.zeros(*class_embed.shape[:2], self.config.hidden_dim, device=device)
            logits = class_logits(class_embed, text_embeddings.to(device), self.decoder.classifier.logit_scale.exp())
        return OMGOutput(
            logits, masks[:, :, None], objectness[..., None], class_embed, [], query_embed, prompts is not None
        )

    def _prompt_inputs(self, prompts: Prompts, i: int, mask_features: torch.Tensor) -> list[torch.Tensor]:
        """Image i's prompt inputs of the prompt graph: the released ones, then (a model with refinement) every
        click and the previous masks (NaN planes where an object has none)."""
        out = [
            prompts.boxes[i : i + 1].float().cpu(),
            prompts.valid[i : i + 1].cpu(),
            prompts.image_sizes[i : i + 1].to(torch.int64).cpu(),
        ]
        if self.refinement is None:
            prompts.check_released()
            return out
        clicks, labels = clicks_of(prompts)
        prev = prompts.prev_masks
        if prev is None:
            prev = torch.full((*prompts.boxes.shape[:2], *mask_features.shape[-2:]), float("nan"))
        return out + [clicks[i : i + 1].float().cpu(), labels[i : i + 1].cpu(), prev[i : i + 1].float().cpu()]

    def forward(self, images: torch.Tensor, text_embeddings: torch.Tensor, prompts: Prompts | None = None) -> OMGOutput:
        return self.decode(self.extract(images), text_embeddings, prompts)


def load_predictor(args):
    """``omg predict``'s predictor for ``--runtime onnx`` / ``torch-export``: the graphs of ``--exported`` behind the
    checkpoint's predictor (``--runtime torch`` never comes here)."""
    from omg.inference.predictor import IMAGE_TASKS, OMGPredictor
    from omg.modeling.checkpoint import load_checkpoint

    runtime = args.runtime
    if not args.exported:
        raise ValueError(f"--runtime {runtime} needs --exported DIR (the folder omg export wrote)")
    if args.task not in IMAGE_TASKS:
        raise ValueError(
            f"--runtime {runtime} runs the image tasks ({', '.join(IMAGE_TASKS)}); {args.task} needs --runtime torch"
        )
    model, metadata = load_checkpoint(args.checkpoint)
    exported = ExportedModel(model, args.exported)
    if exported.spec.format != runtime:
        raise ValueError(f"{args.exported} holds {exported.spec.format} graphs, not {runtime}")
    return OMGPredictor(exported, metadata, device=args.device)
