"""The ``omg`` command: every subcommand is registered by its own module (its flags next to the code that reads
them); this file lists the modules and runs the one asked for.

The library's commands (:mod:`omg.commands`) need only the core install; the platform's (Ray pipelines, MLflow
dashboards) need the ``platform`` extra and import it only when they run, so ``omg --help`` stays fast.
A checkpoint given as an MLflow ``models:/...`` or ``runs:/...`` URI is resolved to a local file on this node before
any command runs (:func:`omg_platform.tracking.resolve_model_uri`).
"""

from __future__ import annotations

import argparse
import importlib
import sys

from omg import __version__
from omg.env import apply_env_defaults
from omg.utils import log as logs
from omg.utils.errors import describe

#: the modules whose ``register(subparsers)`` adds the subcommands, in the order ``omg --help`` lists them
COMMANDS = (
    "omg.commands.data",
    "omg.commands.model",
    "omg.commands.predict",
    "omg.commands.export",
    "omg.commands.metric",
    "omg_platform.pipelines.commands",
    "omg_platform.dashboards.cli",
    "omg.commands.serve",
)


#: what the ``platform`` extra installs (pyproject.toml): a command that needs it says so when it is missing
PLATFORM_PACKAGES = ("ray", "mlflow")


def _leaves(parser: argparse.ArgumentParser):
    """Every parser under ``parser`` that runs a command (has no subcommands of its own)."""
    subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not subs:
        yield parser
    for action in subs:
        for child in dict.fromkeys(action.choices.values()):
            yield from _leaves(child)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="omg",
        description="OMG-Seg: one model for image, video, open-vocabulary and interactive segmentation.",
    )
    p.add_argument("--version", action="version", version=f"omg {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        importlib.import_module(name).register(sub)
    for leaf in _leaves(p):
        leaf.set_defaults(prog=leaf.prog)  # what prefixes the command's warnings and errors: "omg metric pq"
    return p


def _resolve_model(args: argparse.Namespace) -> None:
    """An MLflow model or run URI in ``--checkpoint`` -> the local file it names (this node's cache)."""
    uri = getattr(args, "checkpoint", None)
    if uri and str(uri).startswith(("models:/", "runs:/")):
        from omg_platform.tracking import resolve_model_uri

        args.checkpoint = resolve_model_uri(uri)


def main(argv: list[str] | None = None) -> int:
    apply_env_defaults()
    parser = build_parser()
    args = parser.parse_args(argv)
    if not hasattr(args, "func"):
        # a group without its subcommand: print that group's help
        if args.command in ("data", "catalog", "metric"):
            parser.parse_args([args.command, "--help"])
        parser.print_help()
        return 2
    logs.setup(args.prog)
    log = logs.get_logger("omg_platform.cli")
    try:
        _resolve_model(args)
        return int(args.func(args) or 0)
    except (KeyError, ValueError, FileExistsError, FileNotFoundError) as err:
        msg = err.args[0] if isinstance(err, KeyError) and err.args else err
        if isinstance(err, FileNotFoundError) and err.errno is not None:
            msg = describe(err)
        log.error(msg)
        return 2
    except OSError as err:  # a full or read-only disk, a device, object storage: errno (operation) and path
        log.error(describe(err))
        return 1
    except ImportError as err:  # a URI whose protocol needs a package (MissingDependency says which, and how)
        if (getattr(err, "name", None) or "").split(".")[0] in PLATFORM_PACKAGES:
            log.error(
                f"{describe(err)}: this command needs the platform extra: pip install '.[platform]' in the checkout"
            )
        else:
            log.error(describe(err))
        return 2


if __name__ == "__main__":
    sys.exit(main())
