"""Interactive refinement (docs/model.md §7.3): the released computation stays the default and refuses corrections;
clicks and the previous mask reach the masks; the simulated training clicks follow the evaluation's click rule; the
predictor's object prompts are checked and their logits come back on the mask grid."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from omg.losses.criterion import Criterion, Target
from omg.modeling.model import ModelConfig, build_model
from omg.modeling.prompts import Prompts
from omg.modeling.refine import binary_prev, click_maps

SIZE = 64


def _model(refinement: bool):
    torch.manual_seed(0)
    return build_model(ModelConfig.tiny(refinement=refinement, location_content="sampled")).eval()


def _text(model) -> torch.Tensor:
    return torch.nn.functional.normalize(torch.randn(3, 1, model.backbone.variant.embed_dim), dim=-1)


def _image() -> torch.Tensor:
    return torch.rand(1, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(1)) * 255


def _prompts(clicks=None, labels=None, prev=None) -> Prompts:
    p = Prompts.from_lists([torch.tensor([[20.0, 20.0]])], [None], [(SIZE, SIZE)])
    return Prompts(p.boxes, p.valid, p.image_sizes, p.is_point, clicks, labels, prev)


def test_the_released_model_takes_one_click_and_refuses_corrections():
    model = _model(False)
    text, image = _text(model), _image()
    assert model.refinement is None and not any("refinement" in k for k in model.state_dict())
    plain = model(image, text, _prompts())
    one = model(image, text, _prompts(torch.tensor([[[[20.0, 20.0]]]]), torch.tensor([[[1]]])))
    assert torch.equal(plain.pred_masks, one.pred_masks), "one positive click as a click is the released prompt"
    for clicks, labels, prev in (
        (torch.tensor([[[[20.0, 20.0], [40.0, 40.0]]]]), torch.tensor([[[1, 1]]]), None),
        (torch.tensor([[[[20.0, 20.0], [40.0, 40.0]]]]), torch.tensor([[[1, 0]]]), None),
        (None, None, torch.zeros(1, 1, SIZE // 4, SIZE // 4)),
    ):
        with pytest.raises(ValueError, match="model.refinement: true"):
            model(image, text, _prompts(clicks, labels, prev))


def test_a_negative_click_and_a_previous_mask_reach_the_masks():
    model = _model(True)
    text, image = _text(model), _image()
    first = model(image, text, _prompts())
    neg = _prompts(torch.tensor([[[[20.0, 20.0], [50.0, 50.0]]]]), torch.tensor([[[1, 0]]]))
    assert not torch.equal(model(image, text, neg).pred_masks, first.pred_masks), "the click tokens reach the query"
    prev = binary_prev(first.pred_masks[:, :, 0])
    with_prev = model(image, text, _prompts(prev=prev))
    assert not torch.equal(with_prev.pred_masks, first.pred_masks), "the previous mask reaches the masks"
    missing = model(image, text, _prompts(prev=torch.full_like(prev, float("nan"))))
    assert torch.equal(missing.pred_masks, first.pred_masks), "a NaN plane is no previous mask"


def test_click_maps_peak_at_the_clicks_on_the_mask_grid():
    clicks = torch.tensor([[[[10.0, 30.0], [50.0, 6.0], [0.0, 0.0]]]])
    labels = torch.tensor([[[1, 0, -1]]])
    maps = click_maps(clicks, labels, (16, 16), 4.0)[0, 0]  # 2 x 16 x 16
    pos, neg = maps
    assert divmod(int(pos.argmax()), 16) == (7, 2) and divmod(int(neg.argmax()), 16) == (1, 12)
    assert float(pos.max()) > 0.9 and float(neg.max()) > 0.9


def test_simulated_corrections_click_the_larger_error_with_the_evaluation_rule():
    from omg.modeling.model import OMGOutput
    from omg.training.corrections import ClickSimulator
    from omg.utils.clicks import Clicker

    gt = torch.zeros(3, 1, SIZE, SIZE, dtype=torch.bool)
    gt[0, 0, 8:40, 8:40] = True  # predicted: only its top-left quarter -> a positive click in the miss
    gt[1, 0, 8:24, 8:24] = True  # predicted: a much larger square -> a negative click in the spill
    gt[2, 0, 40:56, 40:56] = True  # predicted exactly -> no click
    pred = torch.full((1, 3, 1, SIZE // 4, SIZE // 4), -5.0)
    pred[0, 0, 0, 2:6, 2:6] = 5.0
    pred[0, 1, 0, 2:14, 2:14] = 5.0
    pred[0, 2, 0, 10:14, 10:14] = 5.0
    out = OMGOutput(None, pred, None, None, [], None, True)
    p = Prompts.from_lists([torch.tensor([[10.0, 10.0], [10.0, 10.0], [45.0, 45.0]])], [None], [(SIZE, SIZE)])
    nxt = ClickSimulator([Target(torch.full((3,), -1), gt)])(out, p)
    assert nxt.click_labels.tolist() == [[[1, 1], [1, 0], [1, -1]]]
    assert torch.equal(nxt.prev_masks, binary_prev(pred[:, :, 0])), "the previous masks, binary"
    grid_gt = gt[0, 0, ::4, ::4].numpy().astype(np.int32)
    c = Clicker(grid_gt).next_click(pred[0, 0, 0].numpy() > 0)  # the rule of omg.evaluation.interactive
    assert nxt.clicks[0, 0, 1].tolist() == [(c.x + 0.5) * 4, (c.y + 0.5) * 4] and c.positive


def test_a_refinement_training_step_gives_every_parameter_a_gradient():
    from omg.training.step import train_step

    model = _model(True).train()
    text = _text(model)
    masks = np.zeros((2, 1, SIZE, SIZE), bool)
    masks[0, 0, 8:30, 8:30] = True
    masks[1, 0, 34:60, 20:50] = True
    batch = {
        "images": np.random.default_rng(0).integers(0, 255, (1, 1, SIZE, SIZE, 3), dtype=np.uint8),
        "image_sizes": np.array([[SIZE, SIZE]]),
        "counts": np.array([2]),
        "labels": np.full(2, -1),
        "masks": masks,
        "kind": "location",
        "boxes": np.array([[[20, 20, 20, 20], [20, 34, 50, 60]]], np.float32),
        "is_point": np.array([[True, False]]),
    }
    grads = {}

    class Spy(torch.optim.SGD):
        def step(self, closure=None):
            grads.update({id(p): p.grad for g in self.param_groups for p in g["params"]})
            return super().step(closure)

    trainable = [p for p in model.parameters() if p.requires_grad]
    opt = Spy(trainable, lr=0.0)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda _: 1.0)
    for seed in (1, 5):  # omg.training.step draws 0 rounds of simulated clicks with seed 1, 3 with seed 5
        random.seed(seed)
        train_step(model, batch, text, Criterion(num_points=256), opt, sched, 1.0, "cpu", refine_rounds=3)
        missing = [n for n, p in model.named_parameters() if p.requires_grad and grads.get(id(p)) is None]
        assert not missing, f"parameters without a gradient (DDP would fail): {missing[:5]}"


def test_object_prompts_are_checked_and_their_logits_come_back_on_the_mask_grid():
    from omg.inference.objects import ObjectPrompt
    from omg.inference.predictor import OMGPredictor

    image = np.random.default_rng(0).integers(0, 255, (50, 70, 3), dtype=np.uint8)
    released = OMGPredictor(_model(False), test_size=(64, 64))
    released.set_image(image)
    r = released.interactive(points=[[30, 20]])
    same = released.interactive(objects=[ObjectPrompt([[30, 20]])])
    assert np.array_equal(r.masks, same.masks) and r.logits.shape == (1, 16, 16)
    for corrected in (ObjectPrompt([[30, 20], [10, 10]], [1, 0]), ObjectPrompt([[30, 20]], box=[5, 5, 40, 40])):
        with pytest.raises(ValueError, match="model.refinement"):
            released.interactive(objects=[corrected])
    boxed = released.interactive(objects=[ObjectPrompt(box=[5, 5, 40, 40])])
    assert np.array_equal(boxed.masks, released.interactive(boxes=[[5, 5, 40, 40]]).masks)

    pred = OMGPredictor(_model(True), test_size=(64, 64))
    pred.set_image(image)
    first = pred.interactive(objects=[ObjectPrompt([[30, 20]])])
    again = pred.interactive(objects=[ObjectPrompt([[30, 20], [60, 40]], [1, 0], mask=first.logits[0])])
    assert again.masks.shape == (1, 50, 70)
    as_bool = pred.interactive(objects=[ObjectPrompt([[30, 20], [60, 40]], [1, 0], mask=first.masks[0])])
    assert as_bool.masks.shape == (1, 50, 70)
    for bad, message in (
        (ObjectPrompt([[30, 20]], [0]), "object 0: needs a positive click or a box"),
        (ObjectPrompt([[30, 20]], [2]), "object 0: labels must be 1"),
        (ObjectPrompt([[30, 20], [1, 1]], [1]), "object 0: 2 points but 1 labels"),
        (ObjectPrompt([[80, 20]]), "object 0: point 0 .* outside the 70x50 image"),
        (ObjectPrompt(box=[10, 10, 5, 20]), "object 0: box .* is not an XYXY box"),
        (ObjectPrompt([[30, 20]], mask=np.zeros((5, 5))), r"object 0: mask of shape \(5, 5\)"),
    ):
        with pytest.raises(ValueError, match=message):
            pred.interactive(objects=[bad])
    with pytest.raises(ValueError, match="not both"):
        pred.interactive(points=[[1, 1]], objects=[ObjectPrompt([[30, 20]])])


def test_clicks_without_a_previous_mask_are_replayed_one_at_a_time():
    """Several clicks and no mask: the answer a person gets clicking them in order (each pass given the previous
    answer's mask), as the NoC protocol drives the model — in one request, one decoder pass per click."""
    from omg.inference.objects import ObjectPrompt
    from omg.inference.predictor import OMGPredictor

    image = np.random.default_rng(0).integers(0, 255, (50, 70, 3), dtype=np.uint8)
    pred = OMGPredictor(_model(True), test_size=(64, 64))
    state = pred.set_image(image)
    clicks, labels = [[30, 20], [60, 40], [10, 5]], [1, 0, 1]
    mask = None
    for k in range(1, 4):  # by hand: click, answer, click again with the answer as the previous mask
        by_hand = pred.interactive(objects=[ObjectPrompt(clicks[:k], labels[:k], mask=mask)], state=state)
        mask = by_hand.logits[0]
    fresh = pred.set_image(image)  # no answers kept on it yet
    calls = pred.stats["decoder_calls"]
    other = ObjectPrompt([[5, 5]])  # a one-click object beside it: answered in the same passes
    replayed = pred.interactive(objects=[ObjectPrompt(clicks, labels), other], state=fresh)
    assert pred.stats["decoder_calls"] - calls == 3, "one decoder pass per click of the longest object"
    assert np.array_equal(replayed.masks[0], by_hand.masks[0])
    assert np.allclose(replayed.logits[0], by_hand.logits[0], atol=1e-5)
    alone = pred.interactive(objects=[other], state=state)
    assert np.array_equal(replayed.masks[1], alone.masks[0])


def test_the_next_click_on_an_object_costs_one_decoder_pass():
    """The answers of a replayed object are kept on the image's state: a request that adds a click to an object
    answered before replays from there (one pass), with the answer a fresh replay of every click gives."""
    from omg.inference.objects import ObjectPrompt
    from omg.inference.predictor import OMGPredictor

    image = np.random.default_rng(0).integers(0, 255, (50, 70, 3), dtype=np.uint8)
    pred = OMGPredictor(_model(True), test_size=(64, 64))
    clicks, labels = [[30, 20], [60, 40], [10, 5], [45, 12]], [1, 0, 1, 0]
    state = pred.set_image(image)
    for k in range(1, 5):  # the page's requests: the object's clicks so far, one more each time
        calls = pred.stats["decoder_calls"]
        answer = pred.interactive(objects=[ObjectPrompt(clicks[:k], labels[:k])], state=state)
        assert pred.stats["decoder_calls"] - calls == 1, f"click {k}: one decoder pass"
    fresh = pred.interactive(objects=[ObjectPrompt(clicks, labels)], state=pred.set_image(image))
    assert np.array_equal(answer.masks, fresh.masks) and np.array_equal(answer.logits, fresh.logits)
    undone = pred.interactive(objects=[ObjectPrompt(clicks[:2], labels[:2])], state=state)  # undo: kept too
    assert np.array_equal(undone.masks, pred.interactive(objects=[ObjectPrompt(clicks[:2], labels[:2])]).masks)


def test_zoom_in_answers_a_correction_on_a_crop_around_the_object(interactive_checkpoint, tiny_shapes, tmp_path):
    """With zoom-in (omg/utils/zoom.py) the first click sees the whole image; a correction runs on the crop around
    the last answer and the positive clicks (one backbone pass), its answer pasted back: the same as a predictor
    without zoom-in answering on that crop, given the clicks inside it and the last answer cropped. The crop is
    kept while the clicks stay inside it and overlap it (the next correction: no backbone pass). Clicks as the NoC
    protocol places them, on the trained tiny model's first val objects."""
    from omg.data.catalog import get_entry
    from omg.data.decode import decode_masks
    from omg.data.formats import get_reader
    from omg.inference.media import load_image
    from omg.inference.objects import ObjectPrompt
    from omg.inference.predictor import OMGPredictor
    from omg.modeling.checkpoint import load_checkpoint, save_checkpoint
    from omg.utils import io as uio
    from omg.utils.clicks import Clicker
    from omg.utils.zoom import ZoomIn, clicks_in, paste

    zoom = ZoomIn(min_crop=0.3)
    pred = OMGPredictor.from_checkpoint(interactive_checkpoint, zoom=zoom)
    plain = OMGPredictor.from_checkpoint(interactive_checkpoint, zoom=False)
    reader = get_reader(get_entry("omg-shapes-sam"), "val", tiny_shapes)
    zoomed = kept = 0
    for it in reader.items()[:3]:
        image = load_image(uio.join(reader.paths["images"], it["image"]))
        state, plain_state = pred.set_image(image), plain.set_image(image)
        for gt in decode_masks(reader.load(it))[:, 0]:
            clicker, answers, roi = Clicker(gt.astype(np.int32)), [], None
            for k in range(3):
                clicker.next_click(answers[-1].masks[0] if answers else np.zeros(gt.shape, bool))
                pts = np.array([[c.x + 0.5, c.y + 0.5] for c in clicker.clicks])
                labels = np.array([int(c.positive) for c in clicker.clicks])
                last = answers[-1].masks[0] if answers else None
                roi = None if last is None else zoom.next_roi(k + 1, last, pts[labels == 1], roi)
                calls = pred.stats["backbone_calls"], pred.stats["decoder_calls"]
                answers.append(pred.interactive(objects=[ObjectPrompt(pts, labels)], state=state))
                used = pred.stats["backbone_calls"] - calls[0], pred.stats["decoder_calls"] - calls[1]
                if roi is None:  # the whole image: the answer of the predictor without zoom-in
                    assert used == (0, 1)
                    by_hand = plain.interactive(objects=[ObjectPrompt(pts, labels)], state=plain_state).masks[0]
                    assert np.array_equal(answers[-1].masks[0], by_hand)
                    continue
                plain.set_image(roi.crop(image))
                inside, inside_labels = clicks_in(roi, pts, labels)
                crop = plain.interactive(objects=[ObjectPrompt(inside, inside_labels, mask=roi.crop(last))])
                assert np.array_equal(answers[-1].masks[0], paste(crop.masks[0], roi, gt.shape))
                assert answers[-1].scores[0] == pytest.approx(crop.scores[0])
                assert answers[-1].logits.shape == answers[0].logits.shape, "logits on the image's mask grid"
                assert used in ((0, 1), (1, 1)), used  # one decoder pass; a backbone pass on a new crop
                kept += used == (0, 1)  # the crop of the click before: its features kept
                zoomed += 1
    assert zoomed >= 3 and kept >= 1, (zoomed, kept)

    # a stateless client's correction (the object with its previous mask): a crop around that mask, not kept
    last, n = answers[-2].masks[0], len(pts)
    roi = zoom.next_roi(n, last, pts[labels == 1], None)
    assert roi is not None
    given = pred.interactive(objects=[ObjectPrompt(pts, labels, mask=last)], state=state)
    plain.set_image(roi.crop(image))
    inside, inside_labels = clicks_in(roi, pts, labels)
    crop = plain.interactive(objects=[ObjectPrompt(inside, inside_labels, mask=roi.crop(last))])
    assert np.array_equal(given.masks[0], paste(crop.masks[0], roi, gt.shape))
    # a box and clicks: the crop holds the box too, clipped into the crop's pixels
    h, w = gt.shape
    boxed = ObjectPrompt([[w - 1.5, h - 1.5], [2.5, 2.5]], [0, 0], box=[1, 1, w // 2, h // 2])
    answer = pred.interactive(objects=[boxed], state=state)
    assert answer.masks.shape == (1, h, w)

    uri = str(tmp_path / "zoomed.pt")  # a checkpoint records its zoom-in (the training config's data.zoom_in)
    save_checkpoint(load_checkpoint(interactive_checkpoint)[0], uri, {"zoom_in": {"min_crop": 0.3}})
    assert OMGPredictor.from_checkpoint(uri).zoom == zoom
    assert OMGPredictor.from_checkpoint(uri, zoom=False).zoom is None
