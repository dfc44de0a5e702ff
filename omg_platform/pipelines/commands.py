"""The ``omg`` subcommands that run a pipeline: each is that pipeline module's own ``main`` with the rest of the
command line (its flags live in the module, next to the code that reads them), imported only when it runs, so
``omg --help`` never imports Ray."""

from __future__ import annotations

import argparse
import importlib

#: (subcommand, module under omg_platform/pipelines/, what it does)
PIPELINES = (
    ("preprocess", "preprocess", "Ray Data job: a catalog dataset -> Parquet shards + manifest"),
    ("eval", "evaluate", "Ray fan-out: evaluate a checkpoint on (dataset, split, task) pairs, log to MLflow"),
    (
        "ablate",
        "ablations",
        "Ray Tune: an ablation grid or a sweep (per trial: training + evaluation, MLflow child run)",
    ),
    ("demo", "demo", "the platform end to end on omg-shapes: data, shards, training, evaluation, ablations, report"),
)


def cmd_pipeline(args: argparse.Namespace) -> int:
    return importlib.import_module(f"omg_platform.pipelines.{args.pipeline}").main(args.rest)


def register(sub) -> None:
    for name, module, help_text in PIPELINES:
        p = sub.add_parser(
            name,
            add_help=False,
            prefix_chars="\0",
            help=help_text,
            description=f"Same as `python -m omg_platform.pipelines.{module}`; see `omg {name} --help`.",
        )
        p.add_argument("rest", nargs=argparse.REMAINDER)
        p.set_defaults(func=cmd_pipeline, pipeline=module)
