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
#: never import higher ones. ``commands`` (the library's subcommands, the top) and the package root may import
#: anything of omg.
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
PLATFORM_DIR = OMG_DIR.parent / "omg_platform"
#: the same for the platform (any of omg below it): the MLflow glue and the error path at the bottom, the dashboards
#: on them, the pipelines on the dashboards (the demo builds the report), the ``omg`` command on top of everything
PLATFORM_LAYERS = {
    "errors": set(),
    "tracking": set(),
    "dashboards": {"tracking", "errors"},
    "pipelines": {"dashboards", "tracking", "errors"},
    "cli": {"pipelines", "dashboards", "tracking", "errors"},
}


def _imports(path: Path) -> list[tuple[int, str]]:
    """(line, module) of every absolute import in ``path``, also inside functions."""
    out = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.append((node.lineno, node.module))
    return out


def _layer_offenders(root: Path, package: str, layers: dict[str, set[str]], allowed: set[str]) -> list[str]:
    offenders = []
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root)
        part = rel.parts[0] if len(rel.parts) > 1 else rel.stem
        if part not in layers:
            continue
        for line, name in _imports(path):
            parts = name.split(".")
            if parts[0] != package or len(parts) < 2:
                continue
            if parts[1] != part and parts[1] not in layers[part] | allowed:
                offenders.append(f"{package}/{rel}:{line} ({part}) imports {name}")
    return offenders


def test_lower_layers_never_import_higher_ones():
    """Static check of every import of both packages (also inside functions): in omg, data and modeling do not
    import each other, losses take nothing from data, inference/evaluation/serve never reach training or the
    commands; in omg_platform, the dashboards never reach the pipelines, nothing but the command reaches it."""
    offenders = _layer_offenders(OMG_DIR, "omg", LAYERS, {"env"})  # env: the process defaults
    offenders += _layer_offenders(PLATFORM_DIR, "omg_platform", PLATFORM_LAYERS, set())
    assert not offenders, "\n".join(offenders)


def test_the_library_never_imports_the_platform():
    """omg is installable and usable alone (``pip install omg``): no module of it imports omg_platform."""
    offenders = [
        f"{path.relative_to(OMG_DIR.parent)}:{line} imports {name}"
        for path in sorted(OMG_DIR.rglob("*.py"))
        for line, name in _imports(path)
        if name.split(".")[0] == "omg_platform"
    ]
    assert not offenders, "\n".join(offenders)


def test_the_layer_tables_name_every_part():
    """A new part of either package is placed in its layer table (else the checks above would skip it)."""
    for root, layers, extra in (
        (OMG_DIR, LAYERS, {"commands", "__init__"}),
        (PLATFORM_DIR, PLATFORM_LAYERS, {"__init__"}),
    ):
        parts = {
            p.name if p.is_dir() else p.stem
            for p in root.iterdir()
            if p.suffix == ".py" or (p / "__init__.py").exists()
        }
        assert parts - set(layers) - extra == set(), (
            f"{root.name}: parts without a layer: {parts - set(layers) - extra}"
        )


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
        [sys.executable, "-c", "import sys, omg, omg_platform.cli; print('torch' in sys.modules)"],
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
