"""The web demo in a real browser: headless Chromium driven by Selenium (the Debian packages `chromium` and
`chromium-driver`; nothing is downloaded). Starts `omg serve` itself on a free loopback port, clicks a
point on a known shape, checks the mask against the ground truth, drags a box, switches modes, undoes,
and saves screenshots to ``tests/artifacts/`` (``$OMG_TEST_ARTIFACTS`` overrides)."""

from __future__ import annotations

import base64
import contextlib
import io
import json
import os
import re
import shutil
import subprocess
import sys
import time
import urllib.parse
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests import ROOT
from tests.helpers import gt_segment

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
INSTALL = "install it with: sudo apt-get install -y chromium chromium-driver (Debian/Ubuntu)"
ARTIFACTS = Path(os.environ.get("OMG_TEST_ARTIFACTS", ROOT / "tests" / "artifacts"))

if not (CHROMIUM and CHROMEDRIVER) and os.environ.get("OMG_REQUIRE_BROWSER") == "1":
    raise RuntimeError(f"OMG_REQUIRE_BROWSER=1 but headless Chromium + chromedriver are not installed; {INSTALL}")
pytestmark = pytest.mark.skipif(
    not (CHROMIUM and CHROMEDRIVER), reason=f"headless Chromium + chromedriver not found; {INSTALL}"
)


@contextlib.contextmanager
def serving(checkpoint: str, samples: str):
    """`omg serve` in a subprocess (its own process group) on a free loopback port -> its URL; stopped afterwards."""
    env = dict(os.environ, OMG_DATA_DIR=str(Path(samples).parent))
    cmd = [sys.executable, "-m", "omg_platform.cli", "serve", "--checkpoint", checkpoint, "--samples", samples]
    proc = subprocess.Popen(
        [*cmd, "--port", "0", "--quiet"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        deadline, url, seen = time.monotonic() + 120, None, []
        while time.monotonic() < deadline and url is None:
            line = proc.stdout.readline()
            if not line and proc.poll() is not None:
                break
            seen.append(line)
            if " at http://127.0.0.1:" in line:
                url = line.split(" at ", 1)[1].split()[0]
        assert url, "omg serve did not start:\n" + "".join(seen)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()


@pytest.fixture(scope="module")
def served(interactive_checkpoint, tiny_shapes):
    with serving(interactive_checkpoint, tiny_shapes) as url:
        yield url


@pytest.fixture(scope="module")
def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--window-size=1200,900",
        "--no-proxy-server",
        "--disable-extensions",
        "--disable-background-networking",
    ):
        opts.add_argument(arg)
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=opts)
    try:
        yield driver
    finally:
        driver.quit()


def _wait(driver, condition, what: str, timeout: float = 60):
    from selenium.webdriver.support.ui import WebDriverWait

    try:
        return WebDriverWait(driver, timeout).until(lambda d: condition(d))
    except Exception:  # noqa: BLE001 - selenium's timeout, or the driver gone: said with the page's status
        status = driver.find_element("id", "status").text
        raise AssertionError(f"timed out waiting for {what}; page status: {status!r}") from None


def _ready(driver) -> int:
    """How many results the page has shown (body[data-ready]) once no request is in flight."""
    _wait(driver, lambda d: d.execute_script("return (document.body.dataset.busy || '0') === '0'"), "idle")
    return int(driver.execute_script("return document.body.dataset.ready || '0'"))


def _result_ready(driver, after: int) -> int:
    """Wait until a result newer than number ``after`` is on screen and nothing is in flight."""
    _wait(
        driver,
        lambda d: (
            d.execute_script(
                "return (document.body.dataset.busy || '0') === '0' && Number(document.body.dataset.ready || 0)"
            )
            > after
        ),
        "a result",
    )
    return _ready(driver)


def _label_map(driver) -> np.ndarray:
    href = driver.find_element("id", "download-png").get_attribute("href")
    assert href.startswith("data:image/png;base64,")
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(href.split(",", 1)[1]))))


def _at(driver, canvas, x: float, y: float) -> tuple[int, int]:
    """Offset from the canvas centre (what Selenium's move_to_element_with_offset takes) of image pixel (x, y)."""
    w, h = canvas.size["width"], canvas.size["height"]
    iw, ih = driver.execute_script("const c = document.getElementById('canvas'); return [c.width, c.height]")
    s = w / iw
    x, y = min(max(x, 0.5), iw - 0.5), min(max(y, 0.5), ih - 0.5)  # stay on the canvas
    return int(round(x * s - w / 2)), int(round(y * s - h / 2))


@pytest.mark.slow
def test_click_drag_switch_undo_and_download_in_chromium(served, browser, tiny_shapes):
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.support.ui import Select

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    d = browser
    d.get(served)
    _wait(d, lambda d: d.execute_script("return document.body.dataset.loaded") == "1", "the page to load")
    info_vocabulary = d.find_element("id", "vocab").get_attribute("value")  # the model's, from /api/info
    names = [o.get_attribute("value") for o in d.find_elements("css selector", "#sample option")]
    assert names, "the page lists omg-shapes samples"
    # the sample with the largest thing segment
    best = max(((n, gt_segment(tiny_shapes, n)) for n in names), key=lambda t: -1 if t[1] is None else t[1][0].sum())
    name, (gt, (x, y)) = best
    Select(d.find_element("id", "sample")).select_by_value(name)
    d.find_element("id", "load-sample").click()
    _wait(d, lambda d: d.execute_script("return document.body.dataset.image || ''") != "", "the image features")
    ready = _result_ready(d, 0)  # the empty interactive view of the new image

    # click a point on the shape
    marks = d.find_element("id", "marks")
    ActionChains(d).move_to_element_with_offset(marks, *_at(d, marks, x, y)).click().perform()
    ready = _result_ready(d, ready)
    # in the page: mouse-up -> request -> decoder -> overlay drawn
    click_ms = float(d.execute_script("return document.body.dataset.roundTripMs"))
    pred = _label_map(d) == 1
    iou = (pred & gt).sum() / max((pred | gt).sum(), 1)
    assert iou > 0.3, f"click at ({x:.0f}, {y:.0f}): mask IoU {iou:.2f} with the shape"
    rows = d.find_elements("css selector", "#results li")
    assert len(rows) == 1 and "#1" in rows[0].text and "%" in rows[0].text
    # the legend's swatch is the mask as drawn (its fill at the overlay's opacity, its outline opaque), not a colour
    # the image never shows
    fill, outline = d.execute_script(
        "const s = getComputedStyle(document.querySelector('#results li .swatch'));"
        "return [s.backgroundColor, s.borderTopColor];"
    )
    drawn = d.execute_script(
        "const c = document.getElementById('overlay'), a = c.getContext('2d').getImageData(0, 0, c.width, c.height)"
        ".data; for (let i = 3; i < a.length; i += 4)"
        "  if (a[i] > 0 && a[i] < 255) return Array.from(a.slice(i - 3, i + 1));"
    )
    fill, outline = [[float(v) for v in re.findall(r"[\d.]+", c)] for c in (fill, outline)]
    assert np.allclose(fill[:3], drawn[:3], atol=2) and abs(fill[3] - drawn[3] / 255) < 0.01, (fill, drawn)
    assert np.allclose(outline, drawn[:3], atol=2), (outline, drawn)
    # a label from the object queries shows their class probability; one from the tests' randomly initialised
    # CLIP is shown as a guess, not with a confident score
    doc = json.loads(urllib.parse.unquote(d.find_element("id", "download-json").get_attribute("href").split(",", 1)[1]))
    source = doc["masks"][0]["label_source"]
    assert source in ("queries", "clip")
    assert ("CLIP not pretrained: a guess" in rows[0].text) == (source == "clip"), rows[0].text
    d.save_screenshot(str(ARTIFACTS / "serve_click.png"))

    # correct it: a negative click (shift-click) where the mask spills over the shape (else on the mask, as far from
    # the first click as it reaches): the mask no longer covers that pixel and shrinks; undo brings it back
    from selenium.webdriver.common.keys import Keys

    spill = pred & ~gt
    ys, xs = np.nonzero(spill if spill.any() else pred)
    k = int(np.argmax((xs - x) ** 2 + (ys - y) ** 2))
    nx, ny = int(xs[k]), int(ys[k])
    ActionChains(d).key_down(Keys.SHIFT).move_to_element_with_offset(
        marks, *_at(d, marks, nx + 0.5, ny + 0.5)
    ).click().key_up(Keys.SHIFT).perform()
    ready = _result_ready(d, ready)
    corrected = _label_map(d) == 1
    assert not corrected[ny, nx] and corrected.sum() < pred.sum(), (
        f"negative click at ({nx}, {ny}): mask {pred.sum()} px -> {corrected.sum()} px, still there: "
        f"{bool(corrected[ny, nx])}"
    )
    assert len(d.find_elements("css selector", "#results li")) == 1, "a correction, not a new object"
    d.save_screenshot(str(ARTIFACTS / "serve_negative_click.png"))
    d.find_element("id", "undo").click()
    ready = _result_ready(d, ready)
    assert np.array_equal(_label_map(d) == 1, pred), "undo: the mask of the first click again"

    # drag a box around the shape: a second mask
    ys, xs = np.nonzero(gt)
    x0, y0, x1, y1 = xs.min() - 1, ys.min() - 1, xs.max() + 2, ys.max() + 2
    ActionChains(d).move_to_element_with_offset(marks, *_at(d, marks, x0, y0)).click_and_hold().move_by_offset(
        5, 5
    ).move_to_element_with_offset(marks, *_at(d, marks, x1, y1)).release().perform()
    ready = _result_ready(d, ready)
    assert len(d.find_elements("css selector", "#results li")) == 2
    box_mask = _label_map(d) == 2
    assert (box_mask & gt).sum() / max((box_mask | gt).sum(), 1) > 0.3
    doc = json.loads(
        __import__("urllib.parse").parse.unquote(
            d.find_element("id", "download-json").get_attribute("href").split(",", 1)[1]
        )
    )
    # the served model takes corrections: the click is an object's list of clicks
    assert [("clicks" in p, "box" in p) for p in doc["prompts"]] == [(True, False), (False, True)]
    d.save_screenshot(str(ARTIFACTS / "serve_box.png"))

    # undo the box
    d.find_element("id", "undo").click()
    ready = _result_ready(d, ready)
    assert len(d.find_elements("css selector", "#results li")) == 1

    # switch modes: a legend of segments each time
    for mode in ("panoptic", "instance", "semantic"):
        d.find_element("id", f"mode-{mode}").click()
        ready = _result_ready(d, ready)
        assert mode in d.find_element("id", "status").text
        # the click's mark belongs to the interactive view: not drawn over panoptic / instance / semantic
        assert d.execute_script(
            "const c = document.getElementById('marks'); const a = c.getContext('2d')"
            ".getImageData(0, 0, c.width, c.height).data; for (let i = 3; i < a.length; i += 4) if (a[i]) return false;"
            " return true;"
        ), f"prompt marks drawn in {mode} mode"
        d.save_screenshot(str(ARTIFACTS / f"serve_{mode}.png"))
    legend = [li.text for li in d.find_elements("css selector", "#results li")]
    assert legend and all("px" in t for t in legend)

    # clear all
    d.find_element("id", "mode-interactive").click()
    ready = _result_ready(d, ready)
    d.find_element("id", "clear").click()
    assert d.find_elements("css selector", "#results li") == []

    # a short video: upload an mp4, the page plays back the tracked overlay (a VP9 WebM) with its legend
    from omg.inference.media import VideoWriter

    folder = Path(tiny_shapes) / "videos/val/JPEGImages/val_0000"
    clip = ARTIFACTS / "serve_clip.mp4"
    with VideoWriter(str(clip), fps=5) as w:
        for f in sorted(folder.glob("*.jpg")):
            w.add(np.asarray(Image.open(f).convert("RGB")))
    d.find_element("id", "video-upload").send_keys(str(clip))
    _wait(d, lambda d: d.execute_script("return document.body.dataset.video || ''") != "", "the video's overlay")
    assert int(d.execute_script("return document.body.dataset.video")) == len(list(folder.glob("*.jpg")))
    _wait(
        d,
        lambda d: d.execute_script(
            "const v = document.getElementById('video-result'); return v.readyState >= 2 && v.videoWidth === 64"
        ),
        "Chromium to play it",
    )
    assert d.find_elements("css selector", "#video-legend li"), "a legend of tracks"
    d.save_screenshot(str(ARTIFACTS / "serve_video.png"))
    # the video panel has its own state: its own vocabulary (the model's by default, not the image panel's), a task
    # change runs again, and a failed run leaves nothing stale playing
    assert d.find_element("id", "video-vocab").get_attribute("value") == info_vocabulary
    d.find_element("id", "vocab").clear()
    d.find_element("id", "vocab").send_keys("person\ncar")  # the image panel's: the video does not use it
    Select(d.find_element("id", "video-task")).select_by_value("vis")
    _wait(d, lambda d: d.execute_script("return document.body.dataset.videoTask || ''") == "vis", "the task re-run")
    assert d.find_elements("css selector", "#video-legend li")
    assert not any(
        "person" in li.text or "car" in li.text for li in d.find_elements("css selector", "#video-legend li")
    )
    d.find_element("id", "video-vocab").clear()
    d.find_element("id", "video-vocab").send_keys(",")  # a class without a name: the server refuses it
    d.find_element("id", "video-run").click()
    _wait(d, lambda d: "no name" in d.find_element("id", "status").text, "the error")
    assert d.execute_script("return document.body.dataset.video === undefined")
    assert d.find_element("id", "video-result").get_attribute("hidden") is not None, "the old result does not play"
    clip.unlink()
    (ARTIFACTS / "serve_latency.json").write_text(json.dumps({"click_round_trip_ms": round(click_ms, 1)}))


#: a finished demo's runs folder (after `make demo`: runs): the held-out test serves its model, whose CLIP was
#: pretrained on the captions that name hexagons (the tests' models never read a caption); unset, it is skipped
DEMO_RUNS = os.environ.get("OMG_DEMO_RUNS")


@pytest.mark.slow
@pytest.mark.skipif(not DEMO_RUNS, reason="needs a finished demo's model: OMG_DEMO_RUNS=runs (after make demo)")
def test_typing_hexagon_finds_the_held_out_shape(browser):
    """Open vocabulary in the page: on a val_ov image, the panoptic view names no hexagon with the model's own classes
    (segmentation never saw one); typing "hexagon" as one more class finds the shape by that name, and a click on it
    is labelled hexagon."""
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.support.ui import Select

    from omg.data.catalog import get_entry
    from omg.serve import default_checkpoint

    runs = Path(DEMO_RUNS)
    data = runs / "data" / "omg-shapes"
    checkpoint = default_checkpoint(str(runs))
    assert checkpoint and (data / "images" / "val_ov").is_dir(), f"{runs}: no demo model or omg-shapes val_ov"
    hexagon = next(c.id for c in get_entry("omg-shapes").classes if c.name == "hexagon" and c.heldout)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with serving(checkpoint, str(data)) as url:
        d = browser
        d.get(url)
        _wait(d, lambda d: d.execute_script("return document.body.dataset.loaded") == "1", "the page to load")
        vocab = d.find_element("id", "vocab")
        assert "hexagon" not in vocab.get_attribute("value"), "the model's own classes: the training ones"
        names = [o.get_attribute("value") for o in d.find_elements("css selector", "#sample option")]
        shapes = [(n, gt_segment(str(data), n, category=hexagon)) for n in names]
        name, (gt, (x, y)) = max(((n, g) for n, g in shapes if g is not None), key=lambda t: t[1][0].sum())
        Select(d.find_element("id", "sample")).select_by_value(name)
        d.find_element("id", "load-sample").click()
        _wait(d, lambda d: d.execute_script("return document.body.dataset.image || ''") != "", "the image features")
        ready = _result_ready(d, 0)

        def found() -> tuple[list[str], float]:
            doc = json.loads(
                urllib.parse.unquote(d.find_element("id", "download-json").get_attribute("href").split(",", 1)[1])
            )
            labels = _label_map(d)
            named = [s["id"] for s in doc["legend"] if s["name"] == "hexagon"]
            iou = max(((labels == k) & gt).sum() / ((labels == k) | gt).sum() for k in named) if named else 0.0
            return [s["name"] for s in doc["legend"]], float(iou)

        d.find_element("id", "mode-panoptic").click()
        ready = _result_ready(d, ready)
        legend, _ = found()
        assert "hexagon" not in legend, legend
        vocab.send_keys("\nhexagon")
        d.find_element("id", "apply-vocab").click()
        ready = _result_ready(d, ready)
        legend, iou = found()
        d.execute_script("window.scrollTo(0, 0)")
        d.save_screenshot(str(ARTIFACTS / "serve_hexagon.png"))
        assert "hexagon" in legend and iou > 0.5, f"{name}: legend {legend}, the hexagon's IoU {iou:.2f}"

        # a click on it, with hexagon in the classes: its mask is labelled hexagon
        d.find_element("id", "mode-interactive").click()
        ready = _result_ready(d, ready)
        marks = d.find_element("id", "marks")
        ActionChains(d).move_to_element_with_offset(marks, *_at(d, marks, x, y)).click().perform()
        ready = _result_ready(d, ready)
        rows = d.find_elements("css selector", "#results li")
        assert len(rows) == 1 and "hexagon" in rows[0].text, [r.text for r in rows]
