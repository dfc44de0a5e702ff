"""Videos in and out, one frame at a time: what ``omg predict`` streams from and the overlay video it writes.

A video source is a video file (anything FFmpeg decodes through PyAV: mp4, webm, mkv, mov, avi ...), a folder of
frame images (sorted by name), or a glob of frame images (``"clips/cat/*.jpg"``). Frames are decoded lazily, so a
source of any length costs one frame of memory; sizes are checked against ``max_pixels`` before a frame is decoded
(from the container's stream header, or the image header).

PyAV is the decoder and encoder because it wraps FFmpeg's own demuxers and codecs (the reference for every
container) with frame-level access, as a wheel that bundles FFmpeg, so no system FFmpeg is needed.
"""

from __future__ import annotations

import contextlib
import io
import os
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import BinaryIO, Iterator

import numpy as np

from omg.utils import io as uio

IMAGE_EXT = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
VIDEO_EXT = (".mp4", ".webm", ".mkv", ".mov", ".avi", ".m4v", ".mpg", ".mpeg", ".ogv")


def list_images(folder: str) -> list[str]:
    names = sorted(n for n in uio.listdir(folder) if n.lower().endswith(IMAGE_EXT))
    if not names:
        raise ValueError(f"{folder}: no image files ({', '.join(IMAGE_EXT)})")
    return [uio.join(folder, n) for n in names]


def load_image(path: str, max_pixels: int = uio.MAX_PIXELS) -> np.ndarray:
    """H x W x 3 uint8; more than ``max_pixels`` is refused from the header, before decoding."""
    return uio.decode_rgb(uio.read_bytes(path), path, max_pixels)


def _av():
    try:
        import av
    except ImportError:
        raise ValueError(
            "reading and writing video files needs PyAV (`pip install av`, in requirements.txt); "
            "or pass a folder of frames"
        ) from None
    return av


@contextlib.contextmanager
def _open(av, uri: str) -> Iterator:
    """A container on a local path, or on any fsspec URI (read through a file object, closed with it)."""
    if "://" in uri and not uri.startswith("file://"):
        fs, path = uio.fs_and_path(uri)
        with fs.open(path, "rb") as f, av.open(f) as container:
            yield container
    else:
        with av.open(uri[len("file://") :] if uri.startswith("file://") else uri) as container:
            yield container


@dataclass
class VideoSource:
    """``VideoSource.open(uri)``; ``for name, frame in source: ...`` (H x W x 3 uint8 RGB), or ``source.frames()``."""

    uri: str
    files: list[str] | None  # frame images (a folder or glob); None for a video file
    num_frames: int | None  # exact for frames; the container's count for a file (None when it does not say)
    fps: float  # the file's average rate; 25 for frames (the overlay video's rate)
    max_pixels: int = uio.MAX_PIXELS

    @property
    def name(self) -> str:
        """The video's name: the file's or the folder's stem (a glob: its folder's)."""
        base = self.uri.rstrip("/")
        if any(c in base for c in "*?["):
            base = os.path.dirname(base)
        return Path(base).stem or "video"

    @classmethod
    def open(cls, uri: str, max_pixels: int = uio.MAX_PIXELS) -> "VideoSource":
        if any(c in uri for c in "*?["):
            files = [f for f in uio.expand(uri) if f.lower().endswith(IMAGE_EXT)]
            if not files:
                raise ValueError(f"{uri}: the glob matches no image files ({', '.join(IMAGE_EXT)})")
            return cls(uri, files, len(files), 25.0, max_pixels)
        if uri.endswith("/") or uio.isdir(uri):
            files = list_images(uri)
            return cls(uri, files, len(files), 25.0, max_pixels)
        if not uio.exists(uri):
            raise FileNotFoundError(f"{uri}: no such video file or frame folder")
        if not uri.lower().endswith(VIDEO_EXT):
            raise ValueError(f"{uri}: not a video file ({', '.join(VIDEO_EXT)}), a frame folder or a glob of frames")
        av = _av()
        try:
            with _open(av, uri) as container:
                if not container.streams.video:
                    raise ValueError(f"{uri}: the file has no video stream")
                stream = container.streams.video[0]
                w, h = stream.codec_context.width, stream.codec_context.height
                rate = float(stream.average_rate) if stream.average_rate else 25.0
                frames = int(stream.frames) or None
        except av.error.FFmpegError as err:
            raise ValueError(f"{uri}: not a video PyAV can read ({err})") from None
        if w * h > max_pixels:
            raise ValueError(f"{uri}: frames of {w}x{h} exceed the limit of {max_pixels} pixels (--max-pixels)")
        return cls(uri, None, frames, rate, max_pixels)

    def frames(self) -> Iterator[np.ndarray]:
        """The frames alone (what :meth:`OMGPredictor.stream` takes)."""
        return (frame for _, frame in self)

    def __iter__(self) -> Iterator[tuple[str, np.ndarray]]:
        if self.files is not None:
            for f in self.files:
                yield Path(f).stem, load_image(f, self.max_pixels)
            return
        av = _av()
        t = -1
        try:
            with _open(av, self.uri) as container:
                stream = container.streams.video[0]
                stream.thread_type = "AUTO"
                for t, frame in enumerate(container.decode(stream)):
                    yield f"{t:05d}", frame.to_ndarray(format="rgb24")
        except av.error.FFmpegError as err:
            raise ValueError(f"{self.uri}: frame {t + 1}: the video cannot be decoded ({err})") from None
        if t < 0:
            raise ValueError(f"{self.uri}: no frames decoded")


class VideoTooLarge(ValueError):
    """A video over a limit (frames, pixels): an upload's 413, where an undecodable file is a 415."""


def read_video_bytes(
    data: bytes, max_frames: int, max_pixels: int = uio.MAX_PIXELS, what: str = "video"
) -> tuple[list[np.ndarray], float]:
    """A short video file's bytes (an upload) -> (its frames, frames/s), bounded: the frame size from the stream's
    header before anything is decoded, and decoding stops with an error at frame ``max_frames + 1``.
    ``ValueError`` names what is wrong (an upload's 4xx)."""
    import io

    av = _av()
    frames: list[np.ndarray] = []
    try:
        with av.open(io.BytesIO(data)) as container:
            if not container.streams.video:
                raise ValueError(f"{what}: the file has no video stream")
            stream = container.streams.video[0]
            w, h = stream.codec_context.width, stream.codec_context.height
            if w * h > max_pixels:
                raise VideoTooLarge(f"{what}: frames of {w}x{h} exceed the limit of {max_pixels} pixels")
            rate = float(stream.average_rate) if stream.average_rate else 25.0
            for frame in container.decode(stream):
                if len(frames) == max_frames:
                    raise VideoTooLarge(f"{what}: more than {max_frames} frames (the limit of a video here)")
                frames.append(frame.to_ndarray(format="rgb24"))
    except av.error.FFmpegError as err:
        raise ValueError(f"{what}: not a video file FFmpeg can decode ({err})") from None
    if not frames:
        raise ValueError(f"{what}: no frames decoded")
    return frames, rate


def encode_video(frames: Iterator[np.ndarray] | list[np.ndarray], fps: float = 25.0, fmt: str = "webm") -> bytes:
    """RGB frames -> the bytes of a VP9 WebM (``webm``, what every browser plays) or an H.264 mp4 (``mp4``), made in
    memory."""
    buf = io.BytesIO()
    with VideoWriter(buf, fps, fmt) as w:
        for f in frames:
            w.add(f)
    return buf.getvalue()


class VideoWriter:
    """An H.264 (mp4) or VP9 (webm) video written frame by frame: ``with VideoWriter(path, fps) as w: w.add(rgb)``;
    ``target`` a local path (its suffix says the format) or a binary file object with ``fmt``. Frames are padded to
    even sizes (yuv420p needs them)."""

    def __init__(self, target: str | BinaryIO, fps: float = 25.0, fmt: str | None = None):
        av = _av()
        if isinstance(target, str):
            fmt = fmt or target.rsplit(".", 1)[-1].lower()
            os.makedirs(os.path.dirname(target) or ".", exist_ok=True)
        if fmt not in ("mp4", "webm"):
            raise ValueError(f"{target}: the overlay video is .mp4 (H.264) or .webm (VP9)")
        self.path = target if isinstance(target, str) else f"<{fmt} in memory>"
        self.container = av.open(target, mode="w", format=fmt)
        codec = "libvpx-vp9" if fmt == "webm" else "libx264"
        self.stream = self.container.add_stream(codec, rate=Fraction(fps).limit_denominator(1001))
        self.stream.pix_fmt = "yuv420p"
        # fast settings: an overlay to look at, written beside inference
        self.stream.options = (
            {"deadline": "realtime", "cpu-used": "8", "crf": "32", "b": "0"}
            if codec == "libvpx-vp9"
            else {"preset": "veryfast", "crf": "23"}
        )
        self.size: tuple[int, int] | None = None
        self.frames = 0

    def add(self, rgb: np.ndarray) -> None:
        av = _av()
        if self.size is None:
            h, w = rgb.shape[:2]
            self.size = (h + h % 2, w + w % 2)
            self.stream.height, self.stream.width = self.size
        h, w = self.size
        if rgb.shape[:2] != (h, w):
            padded = np.zeros((h, w, 3), np.uint8)
            padded[: rgb.shape[0], : rgb.shape[1]] = rgb[:h, :w]
            rgb = padded
        for packet in self.stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")):
            self.container.mux(packet)
        self.frames += 1

    def close(self) -> None:
        if self.container is not None:
            try:
                if self.frames:
                    for packet in self.stream.encode():
                        self.container.mux(packet)
            finally:
                self.container.close()
                self.container = None

    def __enter__(self) -> "VideoWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
