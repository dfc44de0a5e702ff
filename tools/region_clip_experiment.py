"""Experiment (docs/experiments.md, "Shape batches, and how fast the tiny ConvNeXt learns a silhouette"): the tiny
ConvNeXt CLIP pretrained on the captions' InfoNCE plus a RegionCLIP-style region loss (each shape's box pooled over
the stride-32 features, through the CLIP head, named among the six shapes and the four stuff words).

    python tools/region_clip_experiment.py ROOT OUT.pt STEPS WEIGHT     # ROOT: an omg-shapes root with captions/
"""
import sys, time, math, torch, numpy as np, torch.nn.functional as F
from omg.data import captions as C
from omg.data.synthetic import THING_CLASSES
from omg.training.clip_pretrain import ClipPretrainConfig, CaptionPairs, build_clip, _param_groups, lr_at, save_weights, retrieval_accuracy
from open_clip.loss import ClipLoss
torch.set_num_threads(2)
root, out, steps, wreg = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
opts = C.CaptionOptions()
rec = []
orig_place, orig_sample = C._place_things, C._sample_thing
def place(*a, **k):
    r = orig_place(*a, **k); rec.extend(r); return r
def samp(*a, **k):
    r = orig_sample(*a, **k); rec.append(r); return r
C._place_things, C._sample_thing = place, samp
pairs = CaptionPairs(root, "train", "tiny_convnext")
S = 128; G = 4
boxes = []  # per image: list of (label index, 4x4 weights)
names = [c.name for c in THING_CLASSES]
t0 = time.time()
for i in range(len(pairs)):
    rec.clear()
    C.sample(C.sample_rng(0, "train", i), opts)
    regs = []
    for th in rec:
        m = np.zeros((S, S), np.float32)
        x0, x1 = int(max(0, th.cx - th.r)), int(min(S, th.cx + th.r)); y0, y1 = int(max(0, th.cy - th.r)), int(min(S, th.cy + th.r))
        m[y0:y1, x0:x1] = 1
        w = torch.from_numpy(m)[None, None]; w = F.interpolate(w, size=(G, G), mode="area")[0, 0].flatten()
        regs.append((names.index(th.cls.name), w))
    boxes.append(regs)
print("regions", sum(map(len, boxes)), round(time.time() - t0), flush=True)
cfg = ClipPretrainConfig(steps=steps)
model, tok = build_clip(cfg.variant, 0)
v = model.visual
loss_fn = ClipLoss()
opt = torch.optim.AdamW(_param_groups(model, cfg.weight_decay), lr=cfg.lr, betas=(0.9, 0.98), eps=1e-6)
stuff_prompts = [C.STUFF_WORDS[s] for s in ("sky", "grass", "water", "sand")]
per_epoch = len(pairs) // cfg.batch_size
t0 = time.time()
for step in range(steps):
    epoch, k = divmod(step, per_epoch)
    idx = np.random.default_rng([0, epoch]).permutation(len(pairs))[k * 64:(k + 1) * 64]
    for g in opt.param_groups: g["lr"] = lr_at(step, cfg)
    x = pairs.images(idx)
    feats = v.trunk.forward_features(x)  # N x C x 4 x 4
    glob = F.normalize(v.head(v.trunk.forward_head(feats, pre_logits=True)), dim=-1)
    rng = np.random.default_rng([5, step])
    texts = [C.shape_caption(rng, n) for n in names] + ["a photo of " + w[int(rng.integers(len(w)))] for w in stuff_prompts]
    allt = F.normalize(model.encode_text(tok([pairs.titles[i] for i in idx] + texts)), dim=-1)
    ct, rt = allt[:64], allt[64:]
    scale = model.logit_scale.exp()
    loss_c = loss_fn(glob, ct, scale)
    W = [(n, w, b) for n, i in enumerate(idx) for (b, w) in boxes[i]]
    wts = torch.stack([w for _, w, _ in W]); wts = wts / wts.sum(1, keepdim=True).clamp(min=1e-6)
    ff = feats.flatten(2)[[n for n, _, _ in W]]  # R x C x 16
    pooled = torch.einsum("rcg,rg->rc", ff, wts)
    reg = F.normalize(v.head(v.trunk.head.norm(pooled[:, :, None, None]).flatten(1)), dim=-1)
    lab = torch.tensor([b for _, _, b in W])
    loss_r = F.cross_entropy(scale * reg @ rt.T, lab)
    loss = loss_c + wreg * loss_r
    opt.zero_grad(set_to_none=True); loss.backward(); opt.step()
    with torch.no_grad(): model.logit_scale.clamp_(0, math.log(100))
    if (step + 1) % 50 == 0:
        acc = float((reg @ rt.T).argmax(1).eq(lab).float().mean())
        print(step + 1, round(float(loss_c), 3), round(float(loss_r), 3), "region acc", round(acc, 3), round(time.time() - t0), flush=True)
with torch.no_grad():
    xx = pairs.images(range(4)); a = F.normalize(model.encode_image(xx), dim=-1); b = F.normalize(v.head(v.trunk.forward_head(v.trunk.forward_features(xx), pre_logits=True)), dim=-1)
    print("global path check", float((a - b).abs().max()))
print("val", retrieval_accuracy(model, tok, CaptionPairs(root, "val", "tiny_convnext")))
save_weights(model, out)
print("done", time.time() - t0)
