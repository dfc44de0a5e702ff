"""OMGPredictor: one model, every task, features computed once.

    predictor = OMGPredictor.from_checkpoint("runs/demo/model.pt")      # any path or fsspec URI
    predictor.set_image(image)                                         # H x W x 3 uint8 RGB (or a list)
    pan = predictor.panoptic()                                         # training vocabulary
    ov = predictor.panoptic(vocabulary=["hexagon, six-sided shape", "stuff:sky"])
    clicks = predictor.interactive(points=[[40, 52]], boxes=[[10, 10, 60, 60]],
                                   vocabulary=["circle", "square"])    # masks + open-vocabulary labels
    predictor.set_video(frames)                                        # T x H x W x 3 uint8 (or a list)
    tracks = predictor.vis()                                           # also .vps(), .vss(), .vos(first_frame_masks)
    for f in predictor.stream(VideoSource.open("long.mp4").frames(), task="vps"):  # any length, bounded memory
        f.index, f.image, f.result                                     # this frame's VideoPanopticResult (T = 1)

One typed entry point per task (``panoptic``, ``instance``, ``semantic``, ``interactive``; ``vis``, ``vps``,
``vss``, ``vos``), each returning its result type; ``predict(task, **kwargs)`` dispatches to them and rejects
an argument the task does not take. Boxes are XYXY in pixels of the original image (the one box convention
in code; COCO's XYWH appears only in the files :mod:`omg.inference.writers` writes and the readers read).

``set_image`` runs the backbone and pixel decoder once and returns the image's :class:`ImageState`; every task
after it reuses the features (the current image's, or the ``state=`` given). ``set_video`` returns a
:class:`VideoState` the same way (its frames; the first video task decodes them clip by clip and keeps what every
video task needs on the state). A caller that works on several images or videos at once holds their states and
passes ``state=`` (sam2's ``init_state``): nothing is saved or restored on the predictor. ``stream`` runs one video
task over frames as they arrive, holding a bounded number of clips.

The predictor is a thin front: :class:`~omg.inference.core.PredictorCore` holds the model and the settings
(test-time resize, where post-processing runs: ``postprocess_at``, how prompted masks are labelled:
``prompt_labels``), :class:`~omg.inference.image_tasks.ImageTasks` the image tasks and
:class:`~omg.inference.video_tasks.VideoTasks` the video tasks.
"""

from __future__ import annotations

import inspect
from typing import Any, Iterable, Iterator, Sequence

import numpy as np
import torch

from omg.inference.core import PredictorCore, zoom_setting
from omg.inference.image_tasks import ImageState, ImageTasks
from omg.inference.objects import ObjectPrompt
from omg.inference.results import (
    InstanceResult,
    InteractiveResult,
    PanopticResult,
    SemanticResult,
    VideoFrame,
    VideoInstanceResult,
    VideoPanopticResult,
    VideoSemanticResult,
    VOSResult,
)
from omg.inference.tasks import IMAGE_TASKS, POSTPROCESS_AT, PROMPT_LABELS, VIDEO_TASKS
from omg.inference.video_tasks import LOOKAHEAD, VideoState, VideoTasks
from omg.modeling.checkpoint import load_checkpoint
from omg.modeling.model import OMGSeg
from omg.utils.vocabulary import Vocabulary
from omg.utils.zoom import ZoomIn

__all__ = [
    "IMAGE_TASKS",
    "LOOKAHEAD",
    "POSTPROCESS_AT",
    "PROMPT_LABELS",
    "VIDEO_TASKS",
    "ImageState",
    "OMGPredictor",
    "ObjectPrompt",
    "VideoState",
]

Vocab = Sequence[Any] | Vocabulary | None


def _given_or_current(task: str, given, current, what: str, setter: str):
    """The state a task runs on: the one given, else the current one (said missing in words)."""
    if given is not None:
        return given
    if current is None:
        raise ValueError(f"task {task!r} needs {what}: call {setter}() first, or pass state=")
    return current


class OMGPredictor:
    def __init__(
        self,
        model: OMGSeg,
        metadata: dict | None = None,
        device: str | torch.device | None = None,
        test_size: tuple[int, int] | None = None,
        postprocess_at: str = "original",
        prompt_labels: str = "queries",
        zoom: ZoomIn | bool | None = None,
    ):
        self.core = PredictorCore(model, metadata, device, test_size, postprocess_at, prompt_labels, zoom)
        self.images = ImageTasks(self.core)
        self.videos = VideoTasks(self.core, self.images)
        self._image: ImageState | None = None  # what set_image set: the image tasks' default state
        self._video: VideoState | None = None  # what set_video set: the video tasks' default state

    @classmethod
    def from_checkpoint(cls, uri: str, device: str | torch.device | None = None, **kwargs) -> "OMGPredictor":
        model, metadata = load_checkpoint(uri, device=device or "cpu")
        return cls(model, metadata, device=device, **kwargs)

    # ------------------------------------------------------------------ the core's model and settings
    model = property(lambda self: self.core.model)
    device = property(lambda self: self.core.device)
    metadata = property(lambda self: self.core.metadata)
    embedder = property(lambda self: self.core.embedder)
    #: backbone and decoder calls so far (what the caches save is visible)
    stats = property(lambda self: self.core.stats)
    training_vocabulary = property(lambda self: self.core.training_vocabulary)
    test_size = property(
        lambda self: self.core.test_size, lambda self, v: setattr(self.core, "test_size", tuple(v)), doc="(long, short)"
    )
    postprocess_at = property(
        lambda self: self.core.postprocess_at,
        lambda self, v: setattr(self.core, "postprocess_at", v),
        doc="where post-processing runs (POSTPROCESS_AT)",
    )
    prompt_labels = property(
        lambda self: self.core.prompt_labels,
        lambda self, v: setattr(self.core, "prompt_labels", v),
        doc="how a prompted mask gets its label (PROMPT_LABELS)",
    )
    zoom = property(
        lambda self: self.core.zoom,
        # set: a ZoomIn, True (its defaults), None or False (off); only the constructor reads the checkpoint's
        lambda self, v: setattr(self.core, "zoom", zoom_setting(False if v is None else v, {})),
        doc="zoom-in of a refinement model's corrections (omg.utils.zoom.ZoomIn; None: off)",
    )

    @property
    def clip_pretrained(self) -> bool:
        """Whether the model's CLIP started from pretrained weights (``model.pretrained``): without them the CLIP's
        labels of prompted masks and its open-vocabulary scores are arbitrary."""
        from omg.modeling.checkpoint import clip_weights

        return clip_weights(self.model.config, self.metadata) is not None

    def vocabulary(self, items: Vocab) -> Vocabulary:
        """``items`` parsed (:meth:`Vocabulary.parse`); the training vocabulary when None."""
        return self.core.vocabulary(items)

    def input_size(self, h: int, w: int) -> tuple[int, int]:
        """(height, width) an h x w image has at the network's input (before padding)."""
        return self.core.input_size(h, w)

    # ------------------------------------------------------------------ states
    def set_image(self, image: np.ndarray | Sequence[np.ndarray]) -> ImageState:
        """Compute the image features once (H x W x 3 RGB uint8, or a list of such images); the state is the image
        tasks' default from now on, and returned to hold."""
        self._image, self._video = self.images.init_state(image), None
        return self._image

    def set_video(self, frames: np.ndarray | Iterable[np.ndarray]) -> VideoState:
        """Keep the frames (T x H x W x 3 uint8 RGB, or an iterable of H x W x 3 frames); the state is the video
        tasks' default from now on, and returned to hold. For a video too long to hold, :meth:`stream` it."""
        self._video, self._image = self.videos.init_state(frames), None
        return self._video

    def _image_state(self, task: str, state: ImageState | None) -> ImageState:
        return _given_or_current(task, state, self._image, "an image", "set_image")

    def _video_state(self, task: str, state: VideoState | None) -> VideoState:
        return _given_or_current(task, state, self._video, "a video", "set_video")

    # ------------------------------------------------------------------ image tasks
    def panoptic(
        self, vocabulary: Vocab = None, open_vocab: bool | str = "auto", state: ImageState | None = None
    ) -> PanopticResult | list[PanopticResult]:
        """Panoptic segmentation of the image(s) (a list when ``set_image`` got a list).

        ``vocabulary``: class names (see :meth:`Vocabulary.parse`), the training vocabulary when None;
        ``open_vocab``: True / False / "auto" (the CLIP ensemble when a class is unseen in training);
        ``state``: an image's state (:meth:`set_image`), the current image's when None."""
        return self.images.panoptic(self._image_state("panoptic", state), vocabulary, open_vocab)

    def instance(
        self,
        vocabulary: Vocab = None,
        open_vocab: bool | str = "auto",
        topk: int = 100,
        state: ImageState | None = None,
    ) -> InstanceResult | list[InstanceResult]:
        """Instance segmentation (things only, the ``topk`` best query-class pairs, by score)."""
        return self.images.instance(self._image_state("instance", state), vocabulary, open_vocab, topk)

    def semantic(
        self, vocabulary: Vocab = None, open_vocab: bool | str = "auto", state: ImageState | None = None
    ) -> SemanticResult | list[SemanticResult]:
        """Semantic segmentation: a label map over ``vocabulary``."""
        return self.images.semantic(self._image_state("semantic", state), vocabulary, open_vocab)

    def interactive(
        self,
        points=None,
        boxes=None,
        vocabulary: Vocab = None,
        state: ImageState | None = None,
        objects: Sequence[ObjectPrompt] | None = None,
    ) -> InteractiveResult | list[InteractiveResult]:
        """One mask per prompt: ``points`` (K x 2, x y) and / or ``boxes`` (K x 4, XYXY), in pixels of the original
        image (per image when batched), one object each; or one mask per :class:`ObjectPrompt` of ``objects``
        (positive and negative clicks, a box, the previous mask: a model with ``refinement``). With a
        ``vocabulary`` each mask gets a label, by :attr:`prompt_labels` (:data:`PROMPT_LABELS`)."""
        return self.images.interactive(self._image_state("interactive", state), points, boxes, vocabulary, objects)

    # ------------------------------------------------------------------ video tasks
    def vos(
        self,
        first_frame_masks=None,
        object_ids: Sequence[int] | None = None,
        points=None,
        boxes=None,
        state: VideoState | None = None,
    ) -> VOSResult:
        """Video object segmentation from the first frame's masks (K x H x W bool, or an H x W id map whose
        non-zero values other than 255 are the objects; ``object_ids`` name the K masks, 1..K by default), or from
        ``points`` / ``boxes`` on the first frame (one object per prompt, as :meth:`interactive`)."""
        return self.videos.vos(self._video_state("vos", state), first_frame_masks, object_ids, points, boxes)

    def vis(
        self,
        vocabulary: Vocab = None,
        open_vocab: bool | str = "auto",
        topk: int = 100,
        state: VideoState | None = None,
    ) -> VideoInstanceResult:
        """Video instance segmentation: the ``topk`` best (query, thing class) pairs, tracked over the video."""
        return self.videos.vis(self._video_state("vis", state), vocabulary, open_vocab, topk)

    def vss(
        self, vocabulary: Vocab = None, open_vocab: bool | str = "auto", state: VideoState | None = None
    ) -> VideoSemanticResult:
        """Video semantic segmentation: one label map per frame."""
        return self.videos.vss(self._video_state("vss", state), vocabulary, open_vocab)

    def vps(
        self,
        vocabulary: Vocab = None,
        open_vocab: bool | str = "auto",
        track_ids: str = "released",
        state: VideoState | None = None,
    ) -> VideoPanopticResult:
        """Video panoptic segmentation. ``track_ids``: "released" (the fusion head's per-frame counter over
        things) or "stable" (query-based ids that survive a vanishing segment)."""
        return self.videos.vps(self._video_state("vps", state), vocabulary, open_vocab, track_ids)

    def predict(self, task: str, **kwargs):
        """``getattr(self, task)(**kwargs)`` for a task of :data:`IMAGE_TASKS` or :data:`VIDEO_TASKS`, rejecting an
        argument that task does not take (a misspelt or misplaced one is an error, never ignored)."""
        if task not in IMAGE_TASKS + VIDEO_TASKS:
            raise ValueError(
                f"unknown task {task!r}; image tasks: {', '.join(IMAGE_TASKS)}; video tasks: {', '.join(VIDEO_TASKS)}"
            )
        entry = getattr(self, task)
        takes = list(inspect.signature(entry).parameters)
        unknown = [k for k in kwargs if k not in takes]
        if unknown:
            if task in IMAGE_TASKS and {"points", "boxes"} & set(unknown):
                raise ValueError(f"task {task!r} takes no prompts (use task='interactive')")
            raise TypeError(
                f"task {task!r} takes no argument {', '.join(map(repr, unknown))}; "
                f"it takes: {', '.join(takes) or 'nothing'}"
            )
        return entry(**kwargs)

    def stream(self, frames: Iterable[np.ndarray], task: str, **options) -> Iterator[VideoFrame]:
        """A video task on any iterable of H x W x 3 RGB frames (a file's decoder, a folder, a generator, a camera),
        in bounded memory: yields a :class:`VideoFrame` per frame, in order, as soon as its clip is decided.

        The video is split into the official clips as it arrives (:func:`omg.inference.video.stream_clips`) and decoded
        clip by clip with query association, as :meth:`set_video`; what is kept is the association's state (the
        last clip's query embeddings) and running sums of the class evidence (class logits, objectness, CLIP features
        pooled over the masks), never the frames or masks of decided clips. A clip is decided, with the evidence of
        every clip decoded so far, once ``lookahead`` more clips have been decoded (or the video ended), so at most
        ``lookahead + 1`` clips are held. A video of at most ``lookahead + 1`` clips is decided with the whole video's
        evidence, and its frames' results are exactly those of :meth:`set_video` + the task (``concat`` them);
        ``lookahead=None`` holds every clip and decides at the end (exact for any length, memory grows with it).
        ``options``: ``lookahead`` (default :data:`LOOKAHEAD`) and the task's own (``vocabulary``, ``open_vocab``,
        ``topk``, ``track_ids``; VOS: ``first_frame_masks``, ``object_ids``, ``points``, ``boxes``; see :meth:`vis`,
        :meth:`vps`, :meth:`vss`, :meth:`vos` and :meth:`VideoTasks.stream`, which rejects any other). The predictor's
        current image or video is left as it was."""
        return self.videos.stream(frames, task, **options)
