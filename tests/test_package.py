"""The package imports, and omg/ stays free of orchestration (no ray, no mlflow)."""

from __future__ import annotations

import ast
import importlib
import pkgutil
import subprocess
import sys
from pathlib import Path

import omg

OMG_DIR = Path(omg.__file__).parent
FORBIDDEN = ("ray", "mlflow")


def _omg_modules() -> list[str]:
    return sorted(m.name for m in pkgutil.walk_packages([str(OMG_DIR)], prefix="omg."))


def test_version():
    assert omg.__version__.count(".") == 2


def test_every_module_imports():
    for name in _omg_modules():
        importlib.import_module(name)


def test_no_ray_or_mlflow_imports_in_source():
    """Static check of every import statement, including ones inside functions."""
    offenders = []
    for path in sorted(OMG_DIR.rglob("*.py")):
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module]
            for n in names:
                if n.split(".")[0] in FORBIDDEN:
                    offenders.append(f"{path.relative_to(OMG_DIR.parent)}:{node.lineno} imports {n}")
    assert not offenders, "\n".join(offenders)


#: what each part of omg may import (besides itself and ``omg.env``, the process-wide defaults): lower layers
#: never import higher ones. cli (the top) and the package root may import anything.
LAYERS = {
    "utils": set(),
    "env": set(),
    "data": {"utils"},
    "modeling": {"utils"},
    "losses": {"modeling", "utils"},
    "inference": {"data", "modeling", "losses", "utils"},
    "evaluation": {"data", "modeling", "losses", "inference", "utils"},
    "config": {"data", "modeling", "utils"},
    "training": {"config", "data", "modeling", "losses", "utils"},
    "serve": {"data", "modeling", "inference", "utils"},
    "export": {"data", "modeling", "inference", "utils"},
}


def test_lower_layers_never_import_higher_ones():
    """Static check of every omg import (also inside functions): data and modeling do not import each other,
    losses take nothing from data, inference/evaluation/serve never reach training or the CLI."""
    offenders = []
    for path in sorted(OMG_DIR.rglob("*.py")):
        rel = path.relative_to(OMG_DIR)
        part = rel.parts[0] if len(rel.parts) > 1 else rel.stem
        if part not in LAYERS:
            continue
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            names = (
                [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else [node.module]
                if isinstance(node, ast.ImportFrom) and node.module and node.level == 0
                else []
            )
            for n in names:
                target = n.split(".")[1] if n.startswith("omg.") and n.count(".") >= 1 else None
                if target and target != part and target not in LAYERS[part] | {"env"}:  # env: the process defaults
                    offenders.append(f"omg/{rel}:{node.lineno} ({part}) imports {n}")
    assert not offenders, "\n".join(offenders)


def test_importing_omg_loads_no_ray_or_mlflow():
    """At run time too: importing every omg module in a fresh interpreter loads neither."""
    code = (
        "import importlib, sys\n"
        f"for m in {_omg_modules()!r}: importlib.import_module(m)\n"
        "bad = sorted(k for k in sys.modules if k.split('.')[0] in ('ray', 'mlflow'))\n"
        "print(','.join(bad))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_import_omg_is_cheap():
    out = subprocess.run(
        [sys.executable, "-c", "import sys, omg, omg.cli; print('torch' in sys.modules)"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert out.stdout.strip() == "False"


def test_env_defaults_set_once_and_respect_user_values():
    from omg.env import DEFAULTS, apply_env_defaults

    env = {"RAY_AUTH_MODE": "token"}
    applied = apply_env_defaults(env)
    assert env["RAY_AUTH_MODE"] == "token" and "RAY_AUTH_MODE" not in applied
    assert env["HF_HUB_OFFLINE"] == "1" and env["RAY_USAGE_STATS_ENABLED"] == "0"
    assert set(applied) == set(DEFAULTS) - {"RAY_AUTH_MODE"}
    assert apply_env_defaults(env) == {}
