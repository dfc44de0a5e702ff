"""omg/utils/log.py: warnings and errors prefixed with the program, the level from OMG_LOG_LEVEL, one copy of each
progress line in a distributed job (rank 0), and the library's commands working without the platform installed."""

from __future__ import annotations

import logging
import subprocess
import sys

import pytest

from omg.utils import log as logs


@pytest.fixture()
def fresh(monkeypatch):
    monkeypatch.delenv("OMG_LOG_LEVEL", raising=False)
    yield
    for name in logs.ROOTS:  # leave no handler behind for the next test
        logger = logging.getLogger(name)
        for h in list(logger.handlers):
            logger.removeHandler(h)
        logger.setLevel(logging.NOTSET)
        logger.propagate = True


def test_levels_are_said_with_the_program(fresh, capsys):
    logs.setup("omg predict")
    log = logs.get_logger("omg.commands.predict")
    log.debug("not shown at INFO")
    log.info("[predict] 3/3 img (100%)")
    log.warning("no sample images")
    logs.interrupted(log, "the shards written so far are kept")
    log.error("image.png: not an image", extra={"prog": "omg predict --runtime onnx"})
    assert capsys.readouterr().err.splitlines() == [
        "[predict] 3/3 img (100%)",
        "omg predict: warning: no sample images",
        "omg predict: interrupted; the shards written so far are kept",
        "omg predict --runtime onnx: error: image.png: not an image",
    ]
    assert capsys.readouterr().out == "", "results go to stdout, logs never"


def test_the_level_comes_from_the_environment(fresh, monkeypatch, capsys):
    monkeypatch.setenv("OMG_LOG_LEVEL", "warning")
    logs.setup("preprocess")
    log = logs.get_logger("omg_platform.pipelines.preprocess")
    log.info("[preprocess] progress")
    log.warning("0 rows")
    assert capsys.readouterr().err == "preprocess: warning: 0 rows\n"
    monkeypatch.setenv("OMG_LOG_LEVEL", "chatty")
    with pytest.raises(ValueError, match="OMG_LOG_LEVEL='CHATTY'"):
        logs.setup("preprocess")


def test_a_worker_other_than_rank_0_says_only_warnings_and_errors(fresh, capsys):
    log = logs.get_logger("omg_platform.pipelines.train_hooks")
    logs.setup("joint_train", rank=0)
    log.info("[train] step 1/6")
    logs.setup("joint_train", rank=1)  # a second setup replaces the first: one handler, one copy of each line
    log.info("[train] step 1/6")
    log.warning("fault injection: rank 1 dies at step 3")
    assert capsys.readouterr().err.splitlines() == [
        "[train] step 1/6",
        "(rank 1) joint_train: warning: fault injection: rank 1 dies at step 3",
    ]
    assert sum(isinstance(h, logging.StreamHandler) for h in logging.getLogger("omg").handlers) == 1


def test_the_library_commands_run_without_the_platform():
    """`pip install .` without [platform]: with ray and mlflow unimportable, `omg --help`, the library's
    subcommands and their help work; a platform subcommand fails only when it runs, naming what is missing."""
    code = (
        "import sys\n"
        "class Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] in ('ray', 'mlflow'):\n"
        "            raise ModuleNotFoundError(f'No module named {name!r}', name=name)\n"
        "sys.meta_path.insert(0, Block())\n"
        "from omg_platform.cli import main\n"
        "rc = [main(a) for a in (['catalog', 'list'],)]\n"
        "for a in (['--help'], ['predict', '--help'], ['metric', 'pq', '--help'], ['serve', '--help']):\n"
        "    try:\n"
        "        main(a)\n"
        "    except SystemExit as e:\n"
        "        rc.append(e.code)\n"
        "rc.append(main(['dashboard', '--grid', 'g', '--out', '/nonexistent/report']))\n"
        "print('rcs', rc)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert "rcs [0, 0, 0, 0, 0, 2]" in out.stdout, out.stdout[-2000:] + out.stderr[-2000:]
    assert "coco-panoptic" in out.stdout and "--checkpoint" in out.stdout
    assert out.stderr.splitlines()[-1] == (
        "omg dashboard: error: ModuleNotFoundError: No module named 'mlflow': this command needs the platform extra: "
        "pip install '.[platform]' in the checkout"
    ), out.stderr
