"""The demo (`make demo`, `omg demo`): the whole platform end to end on omg-shapes, on one machine.

    python -m omg_platform.pipelines.demo [--runs-dir runs] [--quick]

Stages, each resumable (a rerun skips finished stages and the tools resume unfinished ones):

1. ``data``      generate omg-shapes (seed 0) under ``<data-dir>/omg-shapes`` and validate every format, and its
                 captioned companion (``captions/``, the CLIP pretraining pairs)
2. ``clip``      Ray Train: contrastive pretraining of the tiny ConvNeXt CLIP on the captions
                 (``omg_platform/pipelines/clip_pretrain.py``, open_clip's loss), tracked in MLflow
3. ``shards``    Ray Data: the training splits of omg-shapes, -sam and -vps -> Parquet shards
4. ``train``     Ray Train, 2 workers: the demo model (``omg_platform/pipelines/configs/shapes_demo.yaml``:
                 the pretrained CLIP,
                 frozen as in the paper) jointly on images (as pseudo-videos), interactive prompts and video clips
5. ``evaluate``  the fan-out (one Ray task per dataset and task): panoptic PQ, instance AP, semantic mIoU,
                 open-vocabulary PQ on the held-out classes (by name and by description), prompt-label accuracy,
                 VIS AP, VPQ, VOS J&F, interactive mIoU
6. ``ablate``    the fine-tuning grid: the demo model trained further with its CLIP frozen vs learned (does fine-tuning
                 the CLIP lose the open vocabulary?); the paper's other ablations: ``omg ablate --grid cpu``
7. ``dashboard`` the static report from MLflow (tables with deltas, curves, bar charts, overlay gallery)

Everything goes under ``--runs-dir`` (default ``runs/``): ``data/`` (unless ``--data-dir`` or ``$OMG_DATA_DIR``),
``clip/``, ``shards/``, ``train/``, ``eval/``, ``ablations/``, ``dashboard/index.html``, ``mlflow.db`` and
``demo/state.json`` (finished stages).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from omg.env import DEMO_DATASETS, apply_env_defaults, runs_dir
from omg.utils.log import get_logger
from omg.utils.log import setup as setup_logging
from omg.utils.progress import format_duration

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]  # the repository

TRAIN_CONFIG = HERE / "configs" / "shapes_demo.yaml"
SHARDED = ("omg-shapes", "omg-shapes-sam", "omg-shapes-vps")
EVALUATED = ("omg-shapes", "omg-shapes-sam", "omg-shapes-vis", "omg-shapes-vps", "omg-shapes-vos")
#: the learning floors of the demo model (issue: "the model must learn"), checked and printed at the end
FLOORS = {"omg-shapes/PQ": 50.0, "omg-shapes-vis/AP": 40.0, "omg-shapes-vps/VPQ": 40.0, "omg-shapes-sam/mIoU": 70.0}
#: the headline figure of every evaluated (dataset, split, task), for the summary
HEADLINES = (
    ("omg-shapes", "val", "panoptic", "PQ"),
    ("omg-shapes", "val", "instance", "AP"),
    ("omg-shapes", "val", "semantic", "mIoU"),
    ("omg-shapes", "val_ov", "open_vocab", "OV_PQ_heldout"),
    ("omg-shapes", "val_ov", "open_vocab_described", "OVD_PQ_heldout"),
    ("omg-shapes", "val", "prompt_label", "label_acc"),
    ("omg-shapes", "val_ov", "open_vocab_prompt_label", "OV_label_acc_heldout"),  # a click on a hexagon says "hexagon"
    ("omg-shapes-vis", "val", "vis", "AP"),
    ("omg-shapes-vps", "val", "vps", "VPQ"),
    ("omg-shapes-vps", "val", "vss", "mIoU"),
    ("omg-shapes-vos", "val", "vos", "J&F-Mean"),
    ("omg-shapes-sam", "val", "interactive", "mIoU"),
    ("omg-shapes-sam", "val", "interactive", "NoC@85"),  # clicks to IoU 0.85: the refinement (docs/model.md §7.3)
    ("omg-shapes-sam", "val", "interactive", "NoC@90"),
)
#: --quick: a small omg-shapes (every split and format) so the plumbing runs in a couple of minutes
QUICK_DATA = dict(
    image_size=64,
    num_train_images=16,
    num_val_images=4,
    num_val_ov_images=4,
    num_train_videos=3,
    num_val_videos=2,
    min_frames=8,
    max_frames=10,
)
#: the demo's ablation grid (configs/ablations.yaml: its baseline and one other trial) and what the summary shows
ABLATE_GRID = "finetune"
ABLATE_SHOWN = ("omg-shapes/OV_PQ_heldout", "omg-shapes/OV_PQ", "omg-shapes/PQ")
#: the CLIP pretraining of the demo (steps of 64 captions) and of --quick (a few steps: plumbing only)
CLIP_STEPS, CLIP_STEPS_QUICK = 400, 4
#: the weight of its region loss (omg/training/clip_pretrain.py; docs/experiments.md, "Grounded captions")
CLIP_REGION_WEIGHT = 1.0
#: --quick: a few captions at the CLIP's input size (128)
QUICK_CAPTIONS = dict(num_train=32, num_val=8)
#: seconds of each stage of the full demo on 2 CPU cores (the ETAs printed between stages, times this machine's
#: pace: :class:`Pace`): measured on the faster 2-core AMD EPYC (2026-12-07, clean clone, the test size 256); train,
#: evaluate and ablate since validation every 425 steps, the grid at 128 px and zoom-in: a clean clone's run on a
#: machine 1.39x slower (its data, clip and shards stages over these), divided by 1.39 (benchmarks/RESULTS.md);
#: clip since the region loss: its 884 s on a machine that ran the other stages 1.72x slower, divided by 1.72; ablate
#: since the fine-tuning grid: its 137 s on a machine that ran the other stages 1.24x slower, divided by 1.24
EXPECTED = {"data": 21, "clip": 515, "shards": 6, "train": 418, "evaluate": 53, "ablate": 110, "dashboard": 3}
EXPECTED_QUICK = {"data": 1, "clip": 22, "shards": 3, "train": 28, "evaluate": 16, "ablate": 40, "dashboard": 2}


log = get_logger(__name__)


class Pace:
    """This machine's pace against the one that measured ``EXPECTED``: the seconds of the stages finished in this run
    over what they were expected to take. The stage and demo ETAs are the expected seconds times that ratio, so that
    on a slower CPU (a 2-core Intel Xeon ran the first stages 1.6x slower than the EPYC that measured them) they say
    what this machine will take, from the first stage on."""

    def __init__(self) -> None:
        self.expected = self.actual = 0.0

    def finished(self, expected: float, actual: float) -> None:
        self.expected, self.actual = self.expected + expected, self.actual + actual

    @property
    def ratio(self) -> float:
        return self.actual / self.expected if self.expected > 0 else 1.0

    def scale(self, seconds: float) -> float:
        return seconds * self.ratio

    def note(self) -> str:
        """Said when this machine is more than 10 % off the reference pace."""
        r = self.ratio
        return "" if abs(r - 1.0) <= 0.1 else f"; this machine runs at x{r:.2f} the reference's time"


class Demo:
    def __init__(self, runs: Path, data_dir: Path, quick: bool, seed: int):
        self.runs, self.quick, self.seed = runs, quick, seed
        self.data = data_dir / DEMO_DATASETS[1 if quick else 0]
        self.shards = runs / ("shards-quick" if quick else "shards")
        self.state_path = runs / "demo" / "state.json"
        self.state = json.loads(self.state_path.read_text()) if self.state_path.exists() else {}
        self.env = dict(
            os.environ,
            PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""),
            OMG_RUNS_DIR=str(runs),
            MLFLOW_TRACKING_URI=os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{runs / 'mlflow.db'}",
        )
        from omg.data.catalog import load_catalog

        for name in EVALUATED:  # every omg-shapes view reads the one generated root
            self.env[load_catalog()[name].env_var()] = str(self.data)

    def adopt_env(self) -> None:
        """The in-process stages (report, evaluation summaries) see the roots and tracking URI the subprocesses get."""
        os.environ.update({k: v for k, v in self.env.items() if k.startswith(("OMG_", "MLFLOW_"))})

    # ------------------------------------------------------------------ bookkeeping
    def save(self) -> None:
        from omg.utils import io as uio

        uio.write_bytes(str(self.state_path), json.dumps(self.state, indent=1, sort_keys=True).encode())

    def run(self, cmd: list[str], log_name: str) -> None:
        """A pipeline as a subprocess (on the demo's Ray, :meth:`start_ray`), output to runs/demo/<log_name>.log and
        our stderr."""
        path = self.runs / "demo" / f"{log_name}.log"
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a") as f:
            f.write(f"\n$ {' '.join(cmd)}\n")
            f.flush()
            proc = subprocess.Popen(
                cmd, cwd=ROOT, env=self.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1
            )
            for line in proc.stdout:
                f.write(line)
                shown = _strip_ray_prefix(line)
                if _worth_showing(shown):
                    sys.stderr.write("    " + shown)
            if proc.wait() != 0:
                raise RuntimeError(f"{Path(cmd[1]).name} exited with {proc.returncode}; full log: {path}")

    # ------------------------------------------------------------------ stages
    def stage_data(self) -> dict:
        from omg.data.captions import CaptionOptions, generate_captions
        from omg.data.synthetic import SynthOptions, generate
        from omg.data.validate import validate_omg_shapes

        generate(
            str(self.data),
            seed=self.seed,
            opts=SynthOptions(**QUICK_DATA) if self.quick else None,
            progress=True,
            log=log.info,
        )
        reports = validate_omg_shapes(str(self.data), progress=True)
        bad = [r for r in reports if r.num_problems]
        if bad:
            raise RuntimeError(f"the generated omg-shapes has problems: {bad[0].summary()}: {bad[0].problems[:3]}")
        try:
            generate_captions(
                str(self.data),
                seed=self.seed,
                opts=CaptionOptions(**QUICK_CAPTIONS) if self.quick else None,
                progress=True,
                log=log.info,
            )
        except FileExistsError as err:  # captions of another version or seed under the same root
            raise RuntimeError(str(err)) from None
        return {"root": str(self.data)}

    def stage_clip(self) -> dict:
        """The tiny ConvNeXt CLIP pretrained on the captions (``model.pretrained`` of the demo model)."""
        out = self.runs / "clip" / ("tiny_convnext-quick.pt" if self.quick else "tiny_convnext.pt")
        cmd = [
            sys.executable,
            str(HERE / "clip_pretrain.py"),
            "--root",
            str(self.data),
            "--variant",
            "tiny_convnext",
            "--steps",
            str(CLIP_STEPS_QUICK if self.quick else CLIP_STEPS),
            "--seed",
            str(self.seed),
            "--region-weight",  # the grounded captions' region loss: pooled features that name small shapes
            str(CLIP_REGION_WEIGHT),
            "--out",
            str(out),
        ]
        if self.quick:  # the plumbing of a distributed pretraining too: 2 DDP workers
            cmd += ["--batch-size", "8", "--workers", "2", "--cpus-per-worker", "1"]
        self.run(cmd, "clip")
        record = json.loads(Path(f"{out}.json").read_text())
        return {
            "weights": str(out),
            "val_before": record["val_before"],
            "val_after": record["val_after"],
            "mlflow_run_id": record.get("mlflow_run_id"),
        }

    def stage_shards(self) -> dict:
        datasets = [a for name in SHARDED for a in ("--dataset", name)]  # one job: one process, one connection to Ray
        self.run(
            [
                sys.executable,
                str(HERE / "preprocess.py"),
                *datasets,
                "--split",
                "train",
                "--root",
                str(self.data),
                "--out",
                str(self.shards),
            ],
            "shards",
        )
        return {"shards": str(self.shards)}

    def train_overrides(self) -> list[str]:
        out = [
            f"data.shards={self.shards}",
            f"checkpoint.storage_path={self.runs / 'train'}",
            f"seed={self.seed}",
            f"model.pretrained={self.state['clip']['weights']}",
        ]
        if self.quick:
            out += ["optim.max_steps=6", "checkpoint.every_steps=6", "validation.every_steps=6", "validation.limit=2"]
        return out

    def stage_train(self) -> dict:
        self.run(
            [sys.executable, str(HERE / "joint_train.py"), "--config", str(TRAIN_CONFIG), *self.train_overrides()],
            "train",
        )
        from omg.config import load_config

        name = load_config(str(TRAIN_CONFIG), self.train_overrides()).run_name(TRAIN_CONFIG.stem)
        info = json.loads((self.runs / "train" / name / "run.json").read_text())
        return {
            "run": name,
            "model": info["model"],
            "mlflow_run_id": info.get("mlflow_run_id"),
            "step": info.get("step"),
            "registered_model": info.get("registered_model"),
        }

    def stage_evaluate(self) -> dict:
        train = self.state["train"]
        cmd = [
            sys.executable,
            str(HERE / "evaluate.py"),
            "--checkpoint",
            train["model"],
            "--out",
            str(self.runs / "eval"),
        ]
        cmd += [a for d in EVALUATED for a in ("--dataset", d)]
        if train.get("mlflow_run_id"):
            cmd += ["--run-id", train["mlflow_run_id"]]
        self.run(cmd, "evaluate")
        from omg_platform.pipelines.evaluate import checkpoint_digest

        # this model's results only: runs/eval/ keeps every earlier model's too (a demo retrained on a new config)
        return {"metrics": collect_eval_by_split(self.runs / "eval" / checkpoint_digest(train["model"])[:12])}

    def stage_ablate(self) -> dict:
        """The fine-tuning grid (``configs/ablations.yaml`` ``finetune``): the demo model trained further with its
        CLIP frozen or learned, evaluated on the closed-set tasks and the held-out shapes by name."""
        from omg_platform.pipelines.ablations import load_grids

        grid = load_grids()[ABLATE_GRID]
        cmd = [
            sys.executable,
            str(HERE / "ablations.py"),
            "--grid",
            grid.name,
            "--storage",
            str(self.runs / "ablations"),
            "--set",
            f"data.shards={self.shards}",
            "--set",
            f"model.init_from={self.state['train']['model']}",
        ]
        if self.quick:  # the plumbing: two steps each
            cmd += ["--set", "optim.max_steps=2", "--set", "optim.warmup_iters=1", "--set", "checkpoint.every_steps=2"]
        self.run(cmd, "ablate")
        trials = [grid.baseline, *(t for t in grid.trials if t != grid.baseline)]  # the baseline first
        records = {t: json.loads((self.runs / "ablations" / grid.name / t / "trial.json").read_text()) for t in trials}
        return {"grid": grid.name, "metrics": {t: r.get("metrics", {}) for t, r in records.items()}}

    def stage_dashboard(self) -> dict:
        from omg_platform.dashboards.report import build_report

        runs = (
            [f"demo model={self.state['train']['mlflow_run_id']}"] if self.state["train"].get("mlflow_run_id") else []
        )
        path = build_report(
            self.runs / "dashboard",
            grid=self.state["ablate"]["grid"],
            runs=runs,
            tracking_uri=self.env["MLFLOW_TRACKING_URI"],
        )
        return {"report": str(path)}

    STAGES = ("data", "clip", "shards", "train", "evaluate", "ablate", "dashboard")
    RAY_STAGES = ("clip", "shards", "train", "evaluate", "ablate")

    def main(self) -> int:
        t0 = time.monotonic()
        expected = EXPECTED_QUICK if self.quick else EXPECTED
        todo = [s for s in self.STAGES if not self.state.get(s, {}).get("done")]
        log.info(
            f"== demo: {len(self.STAGES)} stages, {len(todo)} to run, everything under {self.runs}/ "
            f"(expected about {format_duration(sum(expected[s] for s in todo))} on 2 CPU cores)"
        )
        owned = self.start_ray(todo)
        try:
            return self.run_stages(todo, expected, t0)
        finally:
            if owned:
                from omg_platform.pipelines.cluster import shutdown_ray

                shutdown_ray(True)

    def start_ray(self, todo: list[str]) -> bool:
        """One local Ray for every stage that needs one (each would otherwise start and stop its own, ~8 s each on
        2 cores); the stages' subprocesses join it through RAY_ADDRESS. True when started here."""
        if not set(todo) & set(self.RAY_STAGES) or self.env.get("RAY_ADDRESS"):
            return False
        import ray

        from omg_platform.pipelines.cluster import LOCAL_TRAIN_ENV, init_ray

        owned = init_ray(None)
        self.env["RAY_ADDRESS"] = ray.get_runtime_context().gcs_address
        self.env.setdefault(*LOCAL_TRAIN_ENV)  # the stages join a local Ray: as if each had started it
        return owned

    def run_stages(self, todo: list[str], expected: dict, t0: float) -> int:
        pace = Pace()
        for i, stage in enumerate(self.STAGES, 1):
            if stage not in todo:
                log.info(
                    f"== demo {i}/{len(self.STAGES)} {stage}: done earlier "
                    f"({format_duration(self.state[stage].get('seconds', 0))}), skipped"
                )
                continue
            left = pace.scale(sum(expected[s] for s in todo[todo.index(stage) :]))
            log.info(
                f"== demo {i}/{len(self.STAGES)} {stage}: {_DESCRIPTIONS[stage]} "
                f"(about {format_duration(pace.scale(expected[stage]))}; demo ETA {format_duration(left)}, "
                f"elapsed {format_duration(time.monotonic() - t0)}{pace.note()})"
            )
            s0 = time.monotonic()
            try:
                result = getattr(self, f"stage_{stage}")()
            except RuntimeError as err:
                log.info(f"demo FAILED in stage {stage}: {err}\n(rerun `make demo` to resume from this stage)")
                return 1
            took = time.monotonic() - s0
            self.state[stage] = dict(result, done=True, seconds=round(took, 1))
            pace.finished(expected[stage], took)
            self.save()
            log.info(f"== demo {i}/{len(self.STAGES)} {stage}: finished in {format_duration(took)}")
        self.summary(time.monotonic() - t0)
        return 0

    def summary(self, seconds: float) -> None:
        metrics = self.state["evaluate"]["metrics"]
        print(
            f"\nOMG-Seg demo finished ({format_duration(seconds)} this run). The demo model "
            f"({self.state['train']['run']}, step {self.state['train'].get('step')}) on omg-shapes validation:"
        )
        for ds, split, task, key in HEADLINES:
            v = metrics.get(f"{ds}/{split}/{task}", {}).get(key)
            floor = FLOORS.get(f"{ds}/{key}") if split == "val" and not self.quick else None
            mark = (
                ""
                if floor is None
                else (f"  (floor {floor:g}: {'met' if v is not None and v >= floor else 'NOT met'})")
            )
            print(f"  {task:23s} {ds + '/' + split:20s} {key:20s} {'-' if v is None else f'{v:6.2f}'}{mark}")
        if self.quick:
            print(
                "  (--quick: a few training steps on a tiny dataset check the plumbing; the learning floors are "
                "for the full demo)"
            )
        clip = self.state.get("clip", {})
        if clip.get("val_after"):
            after, before = clip["val_after"], clip["val_before"]
            print(
                f"  CLIP (tiny ConvNeXt pretrained here on the captions, frozen in the model): val image->caption "
                f"top-1 {100 * after['image_to_text']:.1f}% (random init {100 * before['image_to_text']:.1f}%, "
                f"chance {100 / after['n']:.1f}%)"
            )
        print(
            "  (open-vocabulary PQ names the held-out hexagon and cross by name: the captions name them, the "
            "segmentation training never sees them; the CLIP's region loss on the grounded captions makes its "
            "mask-pooled features name a small shape, not the stuff around it: docs/experiments.md)"
        )
        ablate = self.state["ablate"]
        trials = list(ablate.get("metrics", {}).items())  # the grid's baseline first
        if ablate["grid"] == ABLATE_GRID and len(trials) == 2 and all(m for _, m in trials):
            (base, a), (other, b) = trials
            moves = ", ".join(f"{k.split('/')[1]} {a[k]:.2f} -> {b[k]:.2f}" for k in ABLATE_SHOWN if k in a and k in b)
            print(f"  the model trained further with its CLIP {other} (grid {ABLATE_GRID}; {base} -> {other}): {moves}")
        print(
            f"\nreport:      {self.state['dashboard']['report']}\n"
            f"model:       {self.state['train']['model']}\n"
            f"MLflow UI:   omg mlflow-ui   (then open the address it prints)\n"
            f"predict:     omg predict --checkpoint {self.state['train']['model']} --input "
            f"{self.data}/images/val --task panoptic --out runs/predict"
        )
        registered = self.state["train"].get("registered_model")
        if registered:
            from omg_platform.tracking import tracking_uri

            print(
                f"registered:  {registered}\n"
                f"serve it:    MLFLOW_TRACKING_URI={tracking_uri()} mlflow models serve -m {registered} "
                "--env-manager local -h 127.0.0.1 -p 5001"
            )


def collect_eval_by_split(out_dir: Path) -> dict[str, dict[str, float]]:
    """``{"<dataset>/<split>/<task>": metrics}`` from the result.json files of one checkpoint's evaluate.py output
    (``<out>/<checkpoint digest>/``)."""
    out: dict[str, dict[str, float]] = {}
    for path in sorted(out_dir.glob("*/*/*/result.json")):
        r = json.loads(path.read_text())
        out[f"{r['dataset']}/{r['split']}/{r['task']}"] = {
            k: float(v) for k, v in r["metrics"].items() if v is not None and v == v
        }
    return out


_DESCRIPTIONS = {
    "data": "generate and validate omg-shapes and its captions",
    "clip": "Ray Train: pretrain the tiny CLIP on the captions (open_clip's contrastive loss)",
    "shards": "Ray Data preprocessing to Parquet shards",
    "train": "Ray Train, 2 workers, joint training on the frozen pretrained CLIP: images, interactive prompts, videos",
    "evaluate": "evaluation fan-out, one Ray task per dataset and task",
    "ablate": "the fine-tuning ablation grid: the demo model trained further, its CLIP frozen vs learned",
    "dashboard": "the report from MLflow",
}
_NOISE = (
    "INFO ",
    "WARNING ",
    "Failed to query Ray Train Controller",
    "PlacementGroupCleaner",
    "core_worker.cc",
    "SADeprecationWarning",
    "configure_mappers",
    "Creating initial MLflow",
    "Updating database tables",
    "resolved config",
    "Moving model to device",
    "Setting up process group",
)


def _worth_showing(line: str) -> bool:
    """Progress and results yes, Ray's own chatter no (the full output is in the stage's log). ``line`` has
    Ray's ``(RayTrainWorker pid=...)`` prefix removed already (:func:`_strip_ray_prefix`)."""
    s = line.strip()
    return (
        bool(s)
        and s.startswith(("[", "(", "MLflow", "omg-", "FAILED", "error", "joint_train", "evaluate", "Traceback"))
        and not any(n in s for n in _NOISE)
    )


def _strip_ray_prefix(line: str) -> str:
    """'\\x1b[36m(RayTrainWorker pid=1)\\x1b[0m [train] ...' -> '[train] ...'."""
    if line.startswith("\x1b[36m(") and "\x1b[0m " in line:
        return line.split("\x1b[0m ", 1)[1]
    return line


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="omg demo",
        description=__doc__.split("\n\n")[0],
        epilog="Stages: " + "; ".join(f"{k}: {v}" for k, v in _DESCRIPTIONS.items()),
    )
    p.add_argument(
        "--runs-dir", default=runs_dir(), help="everything the demo writes goes here (default: $OMG_RUNS_DIR or runs)"
    )
    p.add_argument("--data-dir", help="where omg-shapes is generated (default: $OMG_DATA_DIR or RUNS_DIR/data)")
    p.add_argument("--seed", type=int, default=0, help="omg-shapes and training seed (default 0)")
    p.add_argument(
        "--quick",
        action="store_true",
        help="a few training steps, evaluation on 2 samples, two steps of each grid trial: checks the plumbing in "
        "minutes (the model does not learn)",
    )
    p.add_argument("--restart", action="store_true", help="forget finished stages (files are kept and reused)")
    return p


def main(argv: list[str] | None = None) -> int:
    setup_logging("demo")
    apply_env_defaults()
    args = build_parser().parse_args(argv)
    runs = Path(args.runs_dir).resolve()
    data_dir = Path(args.data_dir or os.environ.get("OMG_DATA_DIR") or runs / "data").resolve()
    demo = Demo(runs, data_dir, args.quick, args.seed)
    demo.adopt_env()
    if args.restart:
        demo.state = {}
    if demo.state.get("quick", args.quick) != args.quick:
        log.info(f"demo: {runs} holds a {'--quick' if demo.state['quick'] else 'full'} demo; starting the stages over")
        demo.state = {}
    demo.state["quick"] = args.quick
    return demo.main()


if __name__ == "__main__":
    sys.exit(main())
