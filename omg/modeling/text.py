"""Class-name text embeddings for the CLIP classifier (docs/model.md §8.1).

``TextEmbedder(backbone).embed(vocabulary)`` turns a :class:`~omg.utils.vocabulary.Vocabulary` into a
C x K x E tensor of unit vectors: per synonym, the 14 ViLD prompt templates are encoded by
the CLIP text tower, L2-normalised, averaged and normalised again; short synonym lists
are padded with copies of their first synonym (so a max over K needs no mask).

Results are cached by a content digest of (CLIP architecture, text-tower weights,
templates, names): in memory (the last vocabularies, and every synonym's vector, so a
vocabulary that changes one class encodes only that class), and on disk under
``$OMG_CACHE_DIR/text_embeddings`` (default ``~/.cache/omg``). Any vocabulary works at any
time; there is no generation step.
"""

from __future__ import annotations

import hashlib
import io
import json
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Sequence

import torch

from omg.utils import io as uio
from omg.utils.vocabulary import Vocabulary

#: the 14 ViLD templates, as used by FC-CLIP and OMG-Seg
VILD_TEMPLATES: tuple[str, ...] = (
    "a photo of a {}.",
    "This is a photo of a {}",
    "There is a {} in the scene",
    "There is the {} in the scene",
    "a photo of a {} in the scene",
    "a photo of a small {}.",
    "a photo of a medium {}.",
    "a photo of a large {}.",
    "This is a photo of a small {}.",
    "This is a photo of a medium {}.",
    "This is a photo of a large {}.",
    "There is a small {} in the scene.",
    "There is a medium {} in the scene.",
    "There is a large {} in the scene.",
)


def cache_dir() -> Path:
    from omg.env import cache_dir as node_cache

    return Path(node_cache("text_embeddings"))


def tensor_digest(tensors: dict[str, torch.Tensor]) -> str:
    h = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name].detach().to("cpu").contiguous().reshape(-1)
        h.update(name.encode())
        h.update(str(t.dtype).encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


class TextEmbedder:
    """Embeds vocabularies with a backbone's CLIP text tower, with a content-addressed cache."""

    #: vocabularies and synonym vectors kept in memory (least recently used go first)
    MAX_VOCABULARIES = 32
    MAX_SYNONYMS = 20000

    def __init__(
        self, backbone, templates: Sequence[str] = VILD_TEMPLATES, use_disk_cache: bool = True, batch_size: int = 256
    ):
        import open_clip

        self.backbone = backbone
        self.templates = tuple(templates)
        self.use_disk_cache = use_disk_cache
        self.batch_size = batch_size
        self.tokenizer = open_clip.get_tokenizer(backbone.variant.clip_model)
        self._memory: OrderedDict[str, torch.Tensor] = OrderedDict()
        self._synonyms: OrderedDict[str, torch.Tensor] = OrderedDict()
        self._lock = threading.Lock()  # the caches' bookkeeping (embed may run in several threads)
        self._weights_digest: str | None = None

    def weights_digest(self) -> str:
        """Digest of the text-tower weights (computed once; the tower is frozen)."""
        if self._weights_digest is None:
            state = {k: v for k, v in self.backbone.clip.state_dict().items() if not k.startswith("visual.")}
            self._weights_digest = tensor_digest(state)
        return self._weights_digest

    def key(self, vocab: Vocabulary) -> str:
        doc = {
            "model": self.backbone.variant.clip_model,
            "weights": self.weights_digest(),
            "templates": list(self.templates),
            "names": [list(n) for n in vocab.names],
        }
        return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()

    @torch.no_grad()
    def embed(self, vocab: Vocabulary) -> torch.Tensor:
        """-> C x K x E unit vectors on the backbone's device (K: the most synonyms of a class)."""
        if not isinstance(vocab, Vocabulary):
            raise TypeError(
                f"embed takes a Vocabulary (Vocabulary.of(names) for plain names), not {type(vocab).__name__}"
            )
        key = self.key(vocab)
        device = self.backbone.pixel_mean.device
        with self._lock:
            if key in self._memory:
                self._memory.move_to_end(key)
                return self._memory[key].to(device)
        path = cache_dir() / f"{key}.pt"
        if self.use_disk_cache and path.exists():
            emb = torch.load(path, map_location="cpu", weights_only=True)
        else:
            emb = self.compute(vocab)
            if self.use_disk_cache:
                buf = io.BytesIO()
                torch.save(emb, buf)
                uio.write_bytes(str(path), buf.getvalue())
        with self._lock:
            self._memory[key] = emb
            while len(self._memory) > self.MAX_VOCABULARIES:
                self._memory.popitem(last=False)
        return emb.to(device)

    def compute(self, vocab: Vocabulary) -> torch.Tensor:
        """The vocabulary's embeddings from the text tower (synonyms already embedded are reused), uncached:
        :meth:`embed` is what callers use."""
        synonyms = sorted({s for syns in vocab.names for s in syns})
        with self._lock:
            vectors = {s: self._synonyms[s] for s in synonyms if s in self._synonyms}
        todo = [s for s in synonyms if s not in vectors]
        if todo:
            prompts = [t.format(s) for s in todo for t in self.templates]
            device = self.backbone.pixel_mean.device
            feats = []
            was_training = self.backbone.clip.training
            self.backbone.clip.eval()
            try:
                for i in range(0, len(prompts), self.batch_size):
                    tokens = self.tokenizer(prompts[i : i + self.batch_size]).to(device)
                    feats.append(self.backbone.encode_text(tokens).float().cpu())
            finally:
                self.backbone.clip.train(was_training)
            per_prompt = torch.cat(feats).view(len(todo), len(self.templates), -1)
            per_synonym = torch.nn.functional.normalize(per_prompt.mean(1), dim=-1)
            vectors.update(zip(todo, per_synonym))
        with self._lock:
            for s in synonyms:
                self._synonyms[s] = vectors[s]
                self._synonyms.move_to_end(s)
            while len(self._synonyms) > self.MAX_SYNONYMS:
                self._synonyms.popitem(last=False)
        k = max(len(s) for s in vocab.names)
        out = torch.empty(len(vocab), k, next(iter(vectors.values())).shape[-1])
        for c, syns in enumerate(vocab.names):
            out[c] = torch.stack([vectors[s] for s in syns] + [vectors[syns[0]]] * (k - len(syns)))
        return out
