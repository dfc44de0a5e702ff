"""The command lines of docs/ and of the README's blocks that tests/test_cli.py does not run: each one is read by the
parser of the program it names, as the program would read it (flags, choices, the files of this checkout it names,
a training config and its overrides, a hook), so a flag, module, grid or file that is renamed fails here. The
README's "Using a model" and "Your own data" commands are run as written by tests/test_cli.py; the cluster walk of
docs/cluster.md by tests/pipelines/test_cluster.py."""

from __future__ import annotations

import argparse
import functools
import importlib
import importlib.util
import re
import shlex

import pytest

from tests import ROOT
from tests.helpers import README_SECTIONS, readme_commands

#: programs that are not ours, whose lines the docs show for context (a shell, curl, MLflow's and Ray's own CLIs)
NOT_OURS = ("export", "curl", "mlflow", "cd", "sudo", "pip", "make", "git", "ray up", "ray dashboard", "open")
#: values for the placeholders and settings the docs write as words
FILL = {
    "$OMG_DATA_DIR": "s3://bucket/omg/data",
    "$OMG_RUNS_DIR": "s3://bucket/omg/runs",
    "$RAY_JOBS": "http://127.0.0.1:8265",
    "$PWD": "/srv/omg",
}


def doc_blocks() -> list[tuple[str, str]]:
    """(where, code) of every ```bash block of docs/*.md and of the README outside the sections test_cli runs."""
    out = []
    for path in sorted((ROOT / "docs").glob("*.md")):
        out += [(path.name, code) for code in re.findall(r"```bash\n(.*?)```", path.read_text(), re.S)]
    sections = re.split(r"\n## ", (ROOT / "README.md").read_text())
    for section in sections:
        if section.split("\n", 1)[0].strip() not in README_SECTIONS:
            out += [("README.md", code) for code in re.findall(r"```bash\n(.*?)```", section, re.S)]
    return out


def doc_commands() -> list[tuple[str, str]]:
    """(where, command) for each command of those blocks: lines joined, comments, ``VAR=value`` prefixes, cron
    schedules, redirections and ``ray job submit ... --`` removed; ``a && b`` is two commands."""
    out = []
    for where, code in doc_blocks():
        for line in readme_commands(code):
            line = re.sub(r"^(\S+ ){5}(?=cd )", "", line)  # a crontab line: its schedule
            for command in line.split("&&"):
                command = re.sub(r"\s+\d?>>?\s*\S+", "", command).strip()
                command = re.sub(r"^([A-Z_]+=\S+\s+)+", "", command)
                command = re.sub(r"^ray job submit .*? -- ", "", command)
                command = re.sub(r"^\S*/python ", "python ", command)
                if command:
                    out.append((where, command))
    return out


#: the commands of ours (the others are shown for context)
COMMANDS = [(where, command) for where, command in doc_commands() if not command.startswith(NOT_OURS)]


def _parse(parser: argparse.ArgumentParser, args: list[str], capsys, intermixed: bool = True) -> argparse.Namespace:
    """``args`` as the program reads them: a job's ``KEY=VALUE`` and ``--options`` in any order (joint_train's
    ``parse_intermixed_args``), the ``omg`` command's subcommands with ``parse_args``."""
    try:
        return parser.parse_intermixed_args(args) if intermixed else parser.parse_args(args)
    except SystemExit:
        pytest.fail(f"the parser refuses it: {capsys.readouterr().err.strip().splitlines()[-1]}")


def _repo_paths(args: list[str]) -> None:
    """Every argument that names a file of this checkout names one that exists."""
    for arg in args:
        for value in arg.split("=")[-1:] + [arg]:
            if value.startswith(("omg_platform/", "omg/", "tests/", "docs/", "benchmarks/")):
                assert (ROOT / value).exists(), f"{value}: no such file in the checkout"


def test_the_docs_show_commands():
    """The extraction finds what the docs teach (a change of fences or layout does not silently empty the test)."""
    ours = [c.split() for _, c in COMMANDS if c.startswith(("omg ", "python -m "))]
    programs = {words[0] if words[0] == "omg" else words[2] for words in ours}
    assert {"omg", "omg_platform.pipelines.joint_train", "omg_platform.pipelines.nightly"} <= programs, programs
    assert len(COMMANDS) >= 40, len(COMMANDS)


def _names_exist(parsed: argparse.Namespace) -> None:
    """The names a command looks up exist: a grid of ablations.yaml, a catalog dataset."""
    from omg.data.catalog import load_catalog
    from omg_platform.pipelines.ablations import load_grids

    if getattr(parsed, "grid", None):
        assert parsed.grid in load_grids(), f"--grid {parsed.grid}: not a grid of ablations.yaml"
    names = getattr(parsed, "dataset", None) or []
    catalog = set(load_catalog())
    for name in [names] if isinstance(names, str) else names:
        if not name.startswith("my-"):  # the docs' own catalog additions
            assert name in catalog, f"--dataset {name}: not in the catalog"


@functools.cache
def _parser(module_name: str) -> argparse.ArgumentParser:
    """The parser of the ``omg`` command (``omg_platform.cli``) or of a pipeline job, built once."""
    return importlib.import_module(module_name).build_parser()


def _check_job(module_name: str, argv: list[str], capsys) -> None:
    """A pipeline job's command line, read by its own parser; a training run's config and overrides by the config
    loader, its hooks by the hook parser."""
    parsed = _parse(_parser(module_name), argv, capsys)
    _repo_paths(argv)
    _names_exist(parsed)
    if module_name.endswith(".joint_train"):
        from omg.config import load_config
        from omg_platform.pipelines.train_hooks import parse_hook

        load_config(ROOT / parsed.config, list(parsed.overrides))  # every override names a config key
        for hook in parsed.hook:
            parse_hook(hook)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # pydantic's, as Ray Serve is imported
@pytest.mark.parametrize("where,command", COMMANDS, ids=[f"{w}:{c[:60]}" for w, c in COMMANDS])
def test_a_documented_command_is_read_as_written(where, command, capsys):
    for k, v in FILL.items():
        command = command.replace(k, v)
    command = re.sub(r"<[^>]+>", "RUN", command)  # <run>, <head>, ...
    args = shlex.split(command)
    if args[0] == "omg":
        parsed = _parse(_parser("omg_platform.cli"), args[1:], capsys, intermixed=False)
        if hasattr(parsed, "pipeline"):  # `omg eval`, `omg ablate` ...: the pipeline module's own flags
            _check_job(f"omg_platform.pipelines.{parsed.pipeline}", parsed.rest, capsys)
        else:
            _names_exist(parsed)
            _repo_paths(args[1:])
    elif args[:2] == ["python", "-m"]:
        assert args[2].startswith("omg_platform.pipelines."), f"{where}: {command}: not one of our jobs"
        _check_job(args[2], args[3:], capsys)
    elif args[:2] == ["serve", "run"]:  # Ray Serve's CLI: an application (module:attribute) or a config file
        target = args[2]
        if ":" in target:
            name, attr = target.split(":")
            assert hasattr(importlib.import_module(name), attr), f"{target}: no such application"
        else:
            assert (ROOT / target).exists(), f"{target}: no such file"
    else:
        pytest.fail(f"{where}: {command!r}: a command this test does not know (add it to NOT_OURS, or read it here)")


def test_the_parity_page_is_what_the_harness_measured():
    """docs/parity.md is written from the parity harness's JSON files by tools/parity/report.py (the harness itself
    needs the official code and runs outside CI): an edit of the page's figures, or new results without the page,
    fails here."""
    spec = importlib.util.spec_from_file_location("parity_report", ROOT / "tools/parity/report.py")
    report = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(report)
    docs = report.load(sorted(report.RESULTS.glob("*.json")))
    assert {(d["settings"]["variant"], d["settings"]["size"]) for d in docs if d["ok"]} >= {
        ("convnext_large_d_320", 128),
        ("convnext_large_d_320", 256),
        ("tiny_convnext", 128),
        ("tiny_convnext", 256),
    }, "the four runs the page reports pass"
    assert [d["ok"] for d in docs if d["settings"]["inject_error"] is not None] == [False], "the injected error fails"
    assert (ROOT / "docs/parity.md").read_text() == report.render(docs)
