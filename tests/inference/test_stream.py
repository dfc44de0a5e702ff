"""Streaming video inference (OMGPredictor.stream), video files in and out, and the frame-by-frame writers: the
streamed results equal the whole-video path on short videos; memory holds a bounded number of frames."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from omg.inference import writers
from omg.inference.media import VideoSource, VideoWriter
from omg.inference.predictor import VIDEO_TASKS, OMGPredictor
from omg.inference.results import VideoInstanceResult, VideoPanopticResult, VideoSemanticResult, VOSResult
from omg.inference.video import clip_length, split_clips, stream_clips
from omg.utils import io as uio
from omg_platform.cli import main
from tests.helpers import tiny_checkpoint

CONCAT = {"vis": VideoInstanceResult, "vps": VideoPanopticResult, "vss": VideoSemanticResult, "vos": VOSResult}


@pytest.fixture(scope="module")
def predictor(tmp_path_factory) -> OMGPredictor:
    return OMGPredictor.from_checkpoint(tiny_checkpoint(tmp_path_factory.mktemp("stream") / "tiny.pt", seed=3))


def _video(num_frames: int, h: int = 48, w: int = 64, seed: int = 0) -> list[np.ndarray]:
    """A moving pattern: smooth colours plus a square that drifts right (frames differ, deterministically)."""
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 255, (h // 8, w // 8, 3)).repeat(8, 0).repeat(8, 1).astype(np.uint8)
    frames = []
    for t in range(num_frames):
        f = base.copy()
        x = (3 * t) % (w - 16)
        f[16:32, x : x + 16] = (250, 40, 40)
        frames.append(f)
    return frames


def _first_frame(frames: list[np.ndarray]) -> np.ndarray:
    ids = np.zeros(frames[0].shape[:2], np.uint8)
    ids[16:32, 0:16] = 1
    ids[0:8, 40:64] = 2
    return ids


def _equal(a, b) -> None:
    """Two video results of the same type are identical (arrays exactly, scores to float32)."""
    assert type(a) is type(b)
    for name in a.__dataclass_fields__:
        x, y = getattr(a, name), getattr(b, name)
        if isinstance(x, np.ndarray):
            assert x.shape == y.shape and np.array_equal(x, y), name
        else:
            assert x == y, name


@pytest.mark.parametrize(
    "task,frames,options",
    [
        ("vis", 20, {}),
        ("vps", 16, {}),
        ("vps", 18, {"track_ids": "stable"}),
        ("vss", 16, {}),
        ("vos", 19, {}),
        ("vis", 7, {}),
    ],
)
def test_a_short_video_streams_to_the_whole_video_result(predictor, task, frames, options):
    """Within ``lookahead + 1`` clips the stream decides with the whole video's evidence: the frames it yields, put
    together, are exactly set_video + the task (20 frames of VIS = 4 clips of 5; VPS 16 = 8 clips of 2, 18 = 9 with
    stable ids; 7 frames = 3 clips of the short length 3)."""
    video = _video(frames)
    kwargs = {"first_frame_masks": _first_frame(video)} if task == "vos" else dict(options)
    state = predictor.set_video(video)
    whole = predictor.predict(task, **kwargs)
    streamed = list(predictor.stream(iter(video), task, **kwargs))
    assert [f.index for f in streamed] == list(range(frames))
    assert all(f.image is video[f.index] for f in streamed)
    _equal(CONCAT[task].concat([f.result for f in streamed]), whole)
    # deciding at the end is exact whatever the length; the predictor's own video is left as it was
    _equal(CONCAT[task].concat([f.result for f in predictor.stream(video, task, lookahead=None, **kwargs)]), whole)
    assert predictor.predict(task, **kwargs) is not None, "the predictor's video is still set"
    assert len(state.frames) == frames and state.decoded, "and its decoded clips still kept"


def test_the_stream_holds_a_bounded_number_of_frames(predictor):
    """The source is pulled lazily: when frame k comes out, at most (lookahead + 1) clips plus the clip splitter's
    hold-back are in memory, whatever the video's length (80 frames here, clips of 5, lookahead 2)."""
    pulled = 0

    def source():
        nonlocal pulled
        for f in _video(80):
            pulled += 1
            yield f

    lag = []
    for f in predictor.stream(source(), "vis", lookahead=2):
        lag.append(pulled - f.index)
    length = clip_length("vis", 80)
    assert max(lag) <= (2 + 1) * length + (length + 2) * length
    assert lag[0] < 80 // 2, "the first frames come out long before the video ends"
    # lookahead 0 decides each clip as soon as it is decoded (MinVIS-style online)
    assert sum(1 for _ in predictor.stream(_video(23), "vps", lookahead=0)) == 23


@pytest.mark.parametrize("task", VIDEO_TASKS)
def test_stream_clips_are_the_official_split(task):
    """stream_clips over a stream of unknown length yields exactly split_clips(T, clip_length(task, T)) (the
    released ``video_split``), for every length up to 70."""
    for num_frames in range(1, 71):
        got = [(start, len(frames), frames[0]) for start, frames in stream_clips(iter(range(num_frames)), task)]
        want = [(c.start, len(c), c.start) for c in split_clips(num_frames, clip_length(task, num_frames))]
        assert got == want, num_frames
    with pytest.raises(ValueError, match="no frames"):
        list(stream_clips(iter([]), task))


def test_vos_from_prompts_on_the_first_frame(predictor):
    """VOS from clicks / boxes on the first frame = VOS from the masks those prompts give there (interactive)."""
    video = _video(10)
    predictor.set_image(video[0])
    masks = predictor.interactive(points=[[8, 24]], boxes=[[40, 0, 63, 8]]).masks
    predictor.set_video(video)
    want = predictor.vos(first_frame_masks=masks)
    got = predictor.vos(points=[[8, 24]], boxes=[[40, 0, 63, 8]])
    _equal(got, want)
    streamed = VOSResult.concat(
        [f.result for f in predictor.stream(video, "vos", points=[[8, 24]], boxes=[[40, 0, 63, 8]])]
    )
    _equal(streamed, want)
    with pytest.raises(ValueError, match="not both"):
        predictor.vos(first_frame_masks=masks, points=[[8, 24]])
    with pytest.raises(ValueError, match="first_frame_masks"):
        next(predictor.stream(video, "vos"))


def test_stream_rejects_bad_input(predictor):
    video = _video(6)
    with pytest.raises(ValueError, match="frame 3 is 32x48"):
        list(predictor.stream(video[:3] + [np.zeros((48, 32, 3), np.uint8)] + video[4:], "vss"))
    with pytest.raises(ValueError, match="frame 0: expected an H x W x 3"):
        list(predictor.stream([np.zeros((48, 64), np.uint8)], "vss"))
    with pytest.raises(ValueError, match="lookahead"):
        next(predictor.stream(video, "vss", lookahead=-1))
    with pytest.raises(ValueError, match="unknown video task"):
        next(predictor.stream(video, "panoptic"))
    with pytest.raises(ValueError, match="no first-frame masks or prompts"):
        next(predictor.stream(video, "vis", points=[[1, 1]]))


def test_the_frame_writers_write_the_whole_video_files(predictor, tmp_path):
    """YouTube-VIS and VIPSeg files written frame by frame (spooled) equal the files of the whole result."""
    video = _video(12)
    predictor.set_video(video)
    vis = predictor.vis()
    writers.write_ytvis(str(tmp_path / "a"), [(7, vis)])
    assert (tmp_path / "a/results.json").read_bytes() == uio.dumps_json(writers.ytvis_records(7, vis))
    w = writers.YtvisWriter(str(tmp_path / "b"))
    for f in predictor.stream(video, "vis"):
        w.add(7, f.result)
    w.close()
    assert (tmp_path / "b/results.json").read_bytes() == (tmp_path / "a/results.json").read_bytes()

    vps = predictor.vps()
    names = [f"{t:05d}" for t in range(12)]
    isthing = predictor.training_vocabulary.isthing
    writers.write_vipseg(
        str(tmp_path / "c"),
        [
            ("v1", names, vps),
            ("v2", names[:3], VideoPanopticResult.concat([writers.frame_of(vps, t) for t in range(3)])),
        ],
        isthing,
    )
    doc = json.loads((tmp_path / "c/panoptic.json").read_text())
    assert [v["video_id"] for v in doc["videos"]] == ["v1", "v2"] and len(doc["videos"][0]["images"]) == 12
    ann = doc["annotations"][0]["annotations"]
    assert [a["image_id"] for a in ann] == [f"v1_{t}" for t in range(12)]
    for t, a in enumerate(ann):
        assert [s["id"] for s in a["segments_info"]] == vps.frame_segments[t]
        assert all(s["area"] == int((vps.panoptic[t] == s["id"]).sum()) for s in a["segments_info"])
    assert doc["annotations"][1]["annotations"] == [dict(a, image_id=f"v2_{t}") for t, a in enumerate(ann[:3])]
    assert [c["name"] for c in doc["categories"]] == vps.vocabulary


def test_a_video_instance_overlay_labels_each_track_by_its_best_class_shown():
    """A query paired with two classes (the released top-k over query x class) is one track: drawn and labelled with
    the class above the threshold, not with the other pair's "0.00" that came last."""
    masks = np.zeros((3, 1, 8, 8), bool)
    masks[:2, 0, :4] = True  # query 5 as "circle" (0.9) and as "star" (0.01)
    masks[2, 0, 4:] = True  # query 2 as "square", below the threshold
    r = VideoInstanceResult(
        masks, np.array([0, 3, 1]), np.array([0.9, 0.01, 0.2]), np.array([5, 5, 2]), ["circle", "star", "square"], []
    )
    ids, labels = writers.overlay_ids(r, score_threshold=0.3)
    assert labels == {5: "circle 0.90"}
    assert set(np.unique(ids[0, :4])) == {5} and not ids[0, 4:].any()


def test_omg_predict_streams_a_video_file(predictor, tmp_path, capsys):
    """An mp4 in: the official files, an overlay mp4 with every frame, progress in frames/s; a 2-frame-lookahead
    stream gives the same files as the whole video here (a short video)."""
    video = _video(24, 64, 96)
    mp4 = str(tmp_path / "clip.mp4")
    with VideoWriter(mp4, fps=10) as w:
        for f in video:
            w.add(f)
    src = VideoSource.open(mp4)
    decoded = [f for _, f in src]
    assert len(decoded) == 24 and decoded[0].shape == (64, 96, 3) and src.fps == pytest.approx(10)
    assert np.abs(decoded[5].astype(int) - video[5]).mean() < 12, "H.264 round trip"
    uio.write_bytes("memory://videos/clip.mp4", open(mp4, "rb").read())  # any fsspec URI
    remote = VideoSource.open("memory://videos/clip.mp4")
    assert remote.name == "clip" and remote.num_frames == 24 and np.array_equal(next(remote.frames()), decoded[0])

    ckpt = str(tmp_path / "m.pt")
    tiny_checkpoint(ckpt, seed=3)
    out = tmp_path / "out"
    assert main(["predict", "--checkpoint", ckpt, "--input", mp4, "--task", "vps", "--out", str(out)]) == 0
    err = capsys.readouterr().err
    assert "frame/s" in err and "24/24" in err
    doc = json.loads((out / "panoptic.json").read_text())
    assert len(doc["annotations"][0]["annotations"]) == 24 and len(list((out / "panoptic/clip").glob("*.png"))) == 24
    overlay = VideoSource.open(str(out / "overlays/clip.mp4"))
    assert sum(1 for _ in overlay) == 24 and overlay.fps == pytest.approx(10)

    # a frame folder: overlay PNGs per frame; --lookahead -1 (decide at the end) gives the same files here
    frames = tmp_path / "frames"
    for t, f in enumerate(decoded):
        uio.write_bytes(str(frames / f"{t:05d}.png"), uio.encode_png(f))
    a, b = tmp_path / "a", tmp_path / "b"
    assert main(["predict", "--checkpoint", ckpt, "--input", str(frames), "--task", "vis", "--out", str(a)]) == 0
    assert (
        main(
            [
                "predict",
                "--checkpoint",
                ckpt,
                "--input",
                str(frames / "*.png"),
                "--task",
                "vis",
                "--out",
                str(b),
                "--lookahead",
                "-1",
            ]
        )
        == 0
    )
    assert (a / "results.json").read_bytes() == (b / "results.json").read_bytes()
    assert len(list((a / "overlays/frames").glob("*.png"))) == 24

    capsys.readouterr()
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"not a video at all" * 10)
    assert main(["predict", "--checkpoint", ckpt, "--input", str(bad), "--task", "vss", "--out", str(out)]) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1].startswith(f"omg predict: error: {bad}: not a video")
    assert (
        main(
            ["predict", "--checkpoint", ckpt, "--input", str(tmp_path / "none.mp4"), "--task", "vss", "--out", str(out)]
        )
        == 2
    )
    assert "no such video file" in capsys.readouterr().err
    # a frame that cannot be read part way: the error names it, and no results file looks complete
    (frames / "00020.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    broken = tmp_path / "broken"
    assert main(["predict", "--checkpoint", ckpt, "--input", str(frames), "--task", "vis", "--out", str(broken)]) == 2
    assert "00020.png" in capsys.readouterr().err.strip().splitlines()[-1]
    assert not (broken / "results.json").exists()


def test_predict_checks_its_input_before_loading_the_model(tmp_path, capsys):
    """A wrong input is said at once, before the model loads (the checkpoint here does not even exist, so an error
    about the input proves the order): a missing file, a text file named .jpg (in words, not a BytesIO repr), a video
    file given to an image task (pointing at the video tasks), an interactive call without prompts."""
    missing_ckpt = str(tmp_path / "no-model.pt")
    text = tmp_path / "notes.jpg"
    text.write_text("a text file, not an image")
    movie = tmp_path / "clip.mp4"
    movie.write_bytes(b"\x00\x00\x00\x18ftypmp42")
    cases = [
        (["--input", str(tmp_path / "none.jpg"), "--task", "panoptic"], "none.jpg"),
        (["--input", str(text), "--task", "semantic"], f"{text}: cannot read the image header: not a PNG, JPEG"),
        (["--input", str(movie), "--task", "panoptic"], f"{movie} is a video file: task panoptic takes images"),
        (["--input", str(text), "--task", "interactive"], "task interactive needs --points"),
    ]
    for args, words in cases:
        capsys.readouterr()
        assert main(["predict", "--checkpoint", missing_ckpt, "--out", str(tmp_path / "out"), *args]) == 2
        last = capsys.readouterr().err.strip().splitlines()[-1]
        assert last.startswith("omg predict: error: ") and words in last, (args, last)
        assert "BytesIO" not in last and "no-model.pt" not in last


def test_predict_post_processes_at_the_input_size_when_asked(tmp_path):
    """`omg predict --postprocess-at input` (a 4000 x 3000 photo: seconds and a fraction of the memory instead of
    300 full-size logit maps) gives the predictor's own option: the same panoptic PNG as the Python API with it."""
    from PIL import Image

    from omg.data.masks import rgb2id

    ckpt = tiny_checkpoint(tmp_path / "m.pt")
    image = np.random.default_rng(0).integers(0, 255, (96, 160, 3), dtype=np.uint8)  # resized to 38 x 64
    Image.fromarray(image).save(tmp_path / "photo.png")
    written_by = {}
    for at in ("original", "input"):
        out = tmp_path / at
        args = ["--input", str(tmp_path / "photo.png"), "--task", "panoptic", "--out", str(out), "--no-overlays"]
        assert main(["predict", "--checkpoint", ckpt, *args, "--postprocess-at", at]) == 0
        predictor = OMGPredictor.from_checkpoint(ckpt, postprocess_at=at)
        predictor.set_image(image)
        expected = predictor.panoptic().panoptic
        written = writers.read_png(str(out / "panoptic" / "photo.png"))
        assert written.shape[:2] == (96, 160)
        assert np.array_equal(rgb2id(written), expected), at
        written_by[at] = rgb2id(written)
    assert not np.array_equal(written_by["original"], written_by["input"]), "the option changes the result here"


def test_predict_writes_the_datasets_own_ids_so_its_results_score(tmp_path, tiny_shapes, monkeypatch, capsys):
    """`omg predict --dataset`: a split's images get the image ids of its annotation file (not 1..N), and a video its
    video id (not 1), so `omg metric` scores the results against the dataset's own files; a dataset the checkpoint
    was not trained on (omg-shapes-vis here) is predicted with its class names instead of being refused."""
    for name in ("omg-shapes", "omg-shapes-vis"):
        monkeypatch.setenv(f"OMG_ROOT_{name.upper().replace('-', '_')}", tiny_shapes)
    ckpt = tiny_checkpoint(tmp_path / "m.pt")
    pan = tmp_path / "pan"
    common = ["predict", "--checkpoint", ckpt, "--no-overlays"]
    assert main([*common, "--input", f"{tiny_shapes}/images/val", "--task", "panoptic", "--out", str(pan)]) == 0
    assert main([*common, "--input", f"{tiny_shapes}/images/val", "--task", "panoptic", "--out", str(tmp_path / "ds"),
                 "--dataset", "omg-shapes"]) == 0  # fmt: skip
    gt = json.loads(open(f"{tiny_shapes}/annotations/panoptic_val.json").read())
    written = json.loads((tmp_path / "ds/panoptic.json").read_text())
    assert sorted(a["image_id"] for a in written["annotations"]) == sorted(im["id"] for im in gt["images"])
    plain = json.loads((pan / "panoptic.json").read_text())
    assert sorted(a["image_id"] for a in plain["annotations"]) == list(range(1, len(gt["images"]) + 1))
    metric = ["metric", "pq", "--gt-json", f"{tiny_shapes}/annotations/panoptic_val.json"]
    metric += ["--gt-folder", f"{tiny_shapes}/annotations/panoptic_val"]
    metric += ["--pred-json", str(tmp_path / "ds/panoptic.json"), "--pred-folder", str(tmp_path / "ds/panoptic")]
    assert main(metric) == 0

    gt_vis = json.loads(open(f"{tiny_shapes}/videos/val/instances.json").read())
    video = gt_vis["videos"][1]
    folder = f"{tiny_shapes}/videos/val/JPEGImages/{Path(video['file_names'][0]).parent.name}"
    out = tmp_path / "vis"
    assert main([*common, "--input", folder, "--task", "vis", "--out", str(out), "--dataset", "omg-shapes-vis"]) == 0
    results = json.loads((out / "results.json").read_text())
    assert results and {r["video_id"] for r in results} == {video["id"]}
    assert {r["category_id"] for r in results} <= {c["id"] for c in gt_vis["categories"]}
    capsys.readouterr()
    assert main([*common, "--input", folder, "--task", "vis", "--out", str(out), "--dataset", "omg-shapes-vis",
                 "--split", "train"]) == 2  # fmt: skip
    assert "is not a video of omg-shapes-vis/train" in capsys.readouterr().err

    # the split's folder of videos: one results file with every video's id, scored against the split's own file
    out = tmp_path / "vis-all"
    assert main([*common, "--input", f"{tiny_shapes}/videos/val/JPEGImages", "--task", "vis", "--out", str(out),
                 "--dataset", "omg-shapes-vis"]) == 0  # fmt: skip
    results = json.loads((out / "results.json").read_text())
    assert {r["video_id"] for r in results} == {v["id"] for v in gt_vis["videos"]}
    assert f"{len(gt_vis['videos'])} videos" in capsys.readouterr().out
    score = ["metric", "ytvis", "--gt-json", f"{tiny_shapes}/videos/val/instances.json"]
    assert main([*score, "--results", str(out / "results.json")]) == 0


def test_a_folder_of_videos_is_each_of_them(tmp_path, capsys):
    """`--input FOLDER` of a video task: a folder of frames is one video; a folder of video files and frame folders
    is each of them (other files are said and left); two videos of one name, or several for vos or for one
    --overlay-video, are refused before the model loads."""
    from PIL import Image

    from omg.commands.predict import video_inputs
    from omg.inference.media import encode_video

    frames = [np.full((32, 32, 3), 40 * t, np.uint8) for t in range(3)]
    (tmp_path / "cam1.mp4").write_bytes(encode_video(frames, fps=5, fmt="mp4"))
    (tmp_path / "cam2").mkdir()
    for t, frame in enumerate(frames):
        Image.fromarray(frame).save(tmp_path / "cam2" / f"{t:05d}.jpg")
    (tmp_path / "notes.txt").write_text("not a video")
    assert video_inputs(str(tmp_path)) == [str(tmp_path / "cam1.mp4"), str(tmp_path / "cam2")]
    assert "notes.txt" in capsys.readouterr().err
    assert video_inputs(str(tmp_path / "cam2")) == [str(tmp_path / "cam2")]
    common = ["predict", "--checkpoint", str(tmp_path / "none.pt"), "--input", str(tmp_path), "--out", str(tmp_path)]
    assert main([*common, "--task", "vos", "--points", "3,3"]) == 2
    assert "holds 2 videos: task vos takes one" in capsys.readouterr().err
    assert main([*common, "--task", "vis", "--overlay-video", str(tmp_path / "o.mp4")]) == 2
    assert "--overlay-video names one file" in capsys.readouterr().err
    (tmp_path / "cam1").mkdir()
    Image.fromarray(frames[0]).save(tmp_path / "cam1" / "00000.jpg")
    assert main([*common, "--task", "vis"]) == 2
    assert "two videos named 'cam1'" in capsys.readouterr().err.strip().splitlines()[-1]
