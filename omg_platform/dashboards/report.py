"""MLflow runs -> a static HTML report and CSV tables shaped like the paper's.

    omg dashboard --grid cpu                       # runs/dashboard/index.html (+ CSV)
    omg dashboard --grid cpu --run <run id> --out runs/report

Rows are settings (the trials of an ablation grid, or named runs), columns are tasks (PQ, instance
AP, semantic mIoU, VIS AP, VPQ, VOS J&F, interactive mIoU, open-vocabulary PQ), read from the
``eval/<dataset>/<metric>`` metrics that ``omg_platform/pipelines/evaluate.py`` logs. For a grid: one table of every
trial with deltas against the baseline, then one table per axis (the baseline and the trials that
differ from it on that axis only, like the paper's ablation tables), a bar chart per task, training
curves (loss and periodic validation against step) and an overlay gallery. Charts are inline SVG,
so the report is one self-contained folder: ``index.html``, ``*.csv``, ``gallery/*.png``.
"""

from __future__ import annotations

import csv
import math
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from html import escape
from pathlib import Path

from omg.utils import io as uio
from omg.utils.log import get_logger
from omg_platform.dashboards.svg import PALETTE, bar_chart, line_chart

log = get_logger(__name__)

#: (metric name, column title) in display order; a column appears for every dataset that logged it
TASK_COLUMNS: tuple[tuple[str, str], ...] = (
    ("PQ", "PQ"),
    ("AP", "AP"),
    ("mIoU", "mIoU"),
    ("VPQ", "VPQ"),
    ("STQ", "STQ"),
    ("JF-Mean", "J&F"),
    ("NoC_85", "NoC@85"),
    ("OV_PQ", "open-vocab PQ (all classes)"),
    ("OV_PQ_heldout", "open-vocab PQ (held-out)"),
    ("OVD_PQ_heldout", "open-vocab PQ (held-out, described)"),
    ("label_acc", "prompt labels"),
    ("OV_label_acc_heldout", "prompt labels (held-out)"),
)
LOWER_IS_BETTER = {"NoC_85", "NoC_90"}
#: training curves: the loss and every periodic validation metric
CURVE_PREFIXES = ("train/loss_total", "val/")
#: evaluation curves: the interactive mIoU after each simulated click (omg/evaluation/interactive.py), x = click
CLICK_CURVE = "/mIoU_by_click"


@dataclass
class Row:
    name: str
    run_id: str
    axes: dict[str, str] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)  # "<dataset>/<metric>"
    status: str = ""
    metric_keys: list[str] = field(default_factory=list)  # every MLflow metric key of the run


def _row(run, name: str) -> Row:
    axes = {k[len("omg.axis.") :]: v for k, v in run.data.tags.items() if k.startswith("omg.axis.")}
    metrics = {k[len("eval/") :]: v for k, v in run.data.metrics.items() if k.startswith("eval/")}
    stopped = run.data.tags.get("omg.stopped")  # a trial a Tune scheduler stopped early (omg ablate --scheduler)
    status = f"stopped early ({stopped})" if stopped else run.info.status
    return Row(name, run.info.run_id, axes, metrics, status, sorted(run.data.metrics))


@dataclass
class GridRun:
    """One run of an ablation grid: its MLflow parent run, its trials and its baseline trial."""

    parent: object
    rows: list[Row]
    baseline: str
    definition: dict = field(default_factory=dict)  # the grid as it ran (grid.json of the parent run)

    @property
    def clip_weights(self) -> str:
        """The ``--clip-weights`` it ran with (``VARIANT=PATH;...``; empty: the trials' own CLIPs)."""
        return self.parent.data.tags.get("omg.clip_weights", "")

    @property
    def clip_label(self) -> str:
        if not self.clip_weights:
            return "the trials' own CLIPs"
        return "pretrained " + ", ".join(
            f"{v.partition('=')[0]} ({Path(v.partition('=')[2]).name})" for v in self.clip_weights.split(";")
        )


def find_grids(grid: str, experiment: str = "ablations") -> list[GridRun]:
    """The newest run of ``grid`` for each ``--clip-weights`` setting it ran with (the trials' own CLIPs first)."""
    import mlflow

    exp = mlflow.get_experiment_by_name(experiment)
    if exp is None:
        raise LookupError(
            f"no MLflow experiment {experiment!r} at {mlflow.get_tracking_uri()}: run the grid first "
            f"(omg ablate --grid {grid})"
        )
    parents = mlflow.search_runs(
        [exp.experiment_id],
        filter_string=f"tags.`omg.grid` = '{grid}' and tags.`omg.kind` = 'ablation-grid'",
        order_by=["start_time DESC"],
        output_format="list",
    )
    if not parents:
        raise LookupError(f"no ablation grid {grid!r} in experiment {experiment!r}: run omg ablate --grid {grid}")
    newest: dict[str, object] = {}
    for p in parents:
        newest.setdefault(p.data.tags.get("omg.clip_weights", ""), p)
    out = []
    for _, parent in sorted(newest.items(), key=lambda kv: (kv[0] != "", kv[0])):
        children = mlflow.search_runs(
            [exp.experiment_id], output_format="list", filter_string=f"tags.mlflow.parentRunId = '{parent.info.run_id}'"
        )
        order = parent.data.params.get("trials", "").split(",")
        rows = [_row(c, c.data.tags.get("omg.trial", c.info.run_name)) for c in children]
        rows.sort(key=lambda r: order.index(r.name) if r.name in order else len(order))
        baseline = parent.data.tags.get("omg.baseline", rows[0].name if rows else "")
        out.append(GridRun(parent, rows, baseline, _grid_definition(parent.info.run_id)))
    return out


def _grid_definition(run_id: str) -> dict:
    """The grid.json the parent run logged ({} for a run that has none)."""
    import mlflow

    try:
        return mlflow.artifacts.load_dict(f"runs:/{run_id}/grid.json")
    except Exception as err:  # noqa: BLE001 - a grid run from before grid.json, or an artifact store away
        log.warning(f"grid run {run_id}: its grid.json cannot be read ({err}); no paper figures or noise band shown")
        return {}


@dataclass
class Section:
    """A part of the report: a table of rows (with deltas against ``baseline``), and unless ``table_only`` the
    per-axis tables (a grid's), charts, training curves and overlays; ``slug`` names its CSV files."""

    title: str
    rows: list[Row]
    baseline: str | None = None
    parent: object | None = None  # the grid's MLflow parent run
    slug: str = "models"
    table_only: bool = False
    paper: dict | None = None  # the grid's PaperReference: the paper's figures per axis value
    noise: dict | None = None  # the grid's Noise: metric -> seed-to-seed standard deviation


def find_runs(specs: list[str]) -> list[Row]:
    """``NAME=RUN_ID`` or ``RUN_ID`` -> rows."""
    import mlflow

    rows = []
    for spec in specs:
        name, _, run_id = spec.rpartition("=")
        run = mlflow.get_run(run_id)
        rows.append(_row(run, name or run.info.run_name))
    return rows


def columns(rows: list[Row]) -> list[tuple[str, str]]:
    """(metric key "<dataset>/<metric>", title) for every task column some row has."""
    have = {k for r in rows for k in r.metrics}
    datasets = sorted({k.split("/")[0] for k in have})
    out = []
    for metric, title in TASK_COLUMNS:
        for d in datasets:
            if f"{d}/{metric}" in have:
                out.append((f"{d}/{metric}", f"{title} · {d}"))
    return out


def delta_text(value: float | None, base: float | None, metric: str, noise: float | None = None) -> tuple[str, str]:
    """('+1.20', 'better'|'worse'|'same') or ('', ''); a difference within twice the metric's seed-to-seed
    standard deviation ``noise`` is ('+1.20 ~noise', 'same')."""
    if value is None or base is None or not (math.isfinite(value) and math.isfinite(base)):
        return "", ""
    d = value - base
    if abs(d) < 0.005:
        return "±0.00", "same"
    if noise and abs(d) < 2 * noise:
        return f"{d:+.2f} ~noise", "same"
    better = (d < 0) if metric in LOWER_IS_BETTER else (d > 0)
    return f"{d:+.2f}", "better" if better else "worse"


def axis_groups(rows: list[Row], baseline: str) -> dict[str, list[Row]]:
    """axis -> [baseline, trials that differ from the baseline on that axis only]."""
    base = next((r for r in rows if r.name == baseline), None)
    if base is None:
        return {}
    groups = {}
    for axis in base.axes:
        others = [
            r
            for r in rows
            if r is not base
            and r.axes.get(axis) != base.axes[axis]
            and all(r.axes.get(a) == v for a, v in base.axes.items() if a != axis)
        ]
        if others:
            groups[axis] = [base, *others]
    return groups


def _delta(value: float | None, base: Row, key: str, noise: dict | None) -> tuple[str, str]:
    """:func:`delta_text` of a table cell: ``key``'s value against the baseline row's, with the grid's noise band."""
    std = (noise or {}).get("std", {}).get(key)
    return delta_text(value, base.metrics.get(key), key.split("/")[-1], std)


def table_rows(
    rows: list[Row], cols: list[tuple[str, str]], baseline: str | None, noise: dict | None = None
) -> list[dict]:
    base = next((r for r in rows if r.name == baseline), None)
    out = []
    for r in rows:
        d = {"setting": r.name, **r.axes, "status": r.status, "run_id": r.run_id}
        for key, _ in cols:
            v = r.metrics.get(key)
            d[key] = None if v is None else round(v, 3)
            if base is not None and r is not base:
                d[f"{key} delta"] = _delta(v, base, key, noise)[0] or None
        out.append(d)
    return out


def write_csv(path: Path, records: list[dict]) -> None:
    keys = []
    for rec in records:
        keys += [k for k in rec if k not in keys]
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=keys)
        w.writeheader()
        w.writerows(records)


def html_table(
    rows: list[Row], cols: list[tuple[str, str]], baseline: str | None, axes: list[str], noise: dict | None = None
) -> str:
    head = "".join(f"<th>{escape(a)}</th>" for a in axes) + "".join(f"<th>{escape(t)}</th>" for _, t in cols)
    body = []
    base = next((r for r in rows if r.name == baseline), None)
    for r in rows:
        cells = "".join(f"<td>{escape(r.axes.get(a, ''))}</td>" for a in axes)
        for key, _ in cols:
            v = r.metrics.get(key)
            if v is None:
                cells += "<td class=na>–</td>"
                continue
            txt, cls = ("", "") if r is base or base is None else _delta(v, base, key, noise)
            cells += f"<td>{v:.2f}" + (f" <span class={cls}>({txt})</span>" if txt else "") + "</td>"
        mark = " <span class=base>baseline</span>" if r is base else ""
        body.append(f"<tr><td><b>{escape(r.name)}</b>{mark}</td>{cells}</tr>")
    return f"<table><tr><th>setting</th>{head}</tr>{''.join(body)}</table>"


def paper_table(axis: str, group: list[Row], cols: list[tuple[str, str]], paper: dict) -> str:
    """The paper's figures for the settings of ``group`` on ``axis`` (its first row the baseline's), in the columns
    of the tasks they stand for, each with its delta against the baseline setting's: "" when the paper has none."""
    figures = paper.get("axes", {}).get(axis, {})
    values = [r.axes.get(axis) for r in group]
    if not any(v in figures for v in values):
        return ""
    shown = [(k, t) for k, t in cols if any(k in figures.get(v, {}) for v in values)]
    base = figures.get(values[0], {})
    body = []
    for v in values:
        cells = ""
        for key, _ in shown:
            x = figures.get(v, {}).get(key)
            if x is None:
                cells += "<td class=na>–</td>"
                continue
            txt, cls = ("", "") if v == values[0] else delta_text(x, base.get(key), key.split("/")[-1])
            cells += f"<td>{x:.1f}" + (f" <span class={cls}>({txt})</span>" if txt else "") + "</td>"
        body.append(f"<tr><td>the paper: <b>{escape(str(v))}</b></td>{cells}</tr>")
    head = "".join(f"<th>{escape(t)}</th>" for _, t in shown)
    return (
        f"<table class=paper><tr><th>{escape(axis)}</th>{head}</tr>{''.join(body)}</table>"
        f"<p class=source>{escape(paper.get('source', ''))}</p>"
    )


def curves(rows: list[Row]) -> dict[str, dict[str, list[tuple[float, float]]]]:
    """metric key -> row name -> [(step, value)] for the loss and every validation metric that changes (a constant
    series, such as the number of evaluated segments, says nothing as a curve: it stays in the tables)."""
    import mlflow

    client = mlflow.MlflowClient()
    keys = sorted({k for r in rows for k in r.metric_keys if k.startswith(CURVE_PREFIXES) or k.endswith(CLICK_CURVE)})
    out: dict[str, dict[str, list]] = {}
    for key in keys:
        for r in rows:
            if key in r.metric_keys:
                hist = client.get_metric_history(r.run_id, key)
                out.setdefault(key, {})[r.name] = [(m.step, m.value) for m in hist]
    return {k: v for k, v in out.items() if len({y for points in v.values() for _, y in points}) > 1}


def gallery(rows: list[Row], out_dir: Path, per_task: int = 2) -> dict[str, list[tuple[str, str]]]:
    """row name -> [(caption, relative image path)]: the first overlays of every evaluated task."""
    import mlflow

    client = mlflow.MlflowClient()
    result: dict[str, list[tuple[str, str]]] = {}
    for r in rows:
        items = []
        for ds in client.list_artifacts(r.run_id, "eval"):
            for split in client.list_artifacts(r.run_id, ds.path):
                for task in client.list_artifacts(r.run_id, split.path):
                    pngs = [
                        a for a in client.list_artifacts(r.run_id, f"{task.path}/overlays") if a.path.endswith(".png")
                    ]
                    for a in pngs[:per_task]:
                        dst = out_dir / "gallery" / r.run_id  # trial names repeat across grid runs
                        dst.mkdir(parents=True, exist_ok=True)
                        with tempfile.TemporaryDirectory() as tmp:
                            local = mlflow.artifacts.download_artifacts(
                                run_id=r.run_id, artifact_path=a.path, dst_path=tmp
                            )
                            name = a.path.replace("eval/", "").replace("/overlays/", "-").replace("/", "-")
                            shutil.copyfile(local, dst / name)
                        items.append((task.path[len("eval/") :], f"gallery/{r.run_id}/{name}"))
        result[r.name] = items
    return result


STYLE = """body{font-family:sans-serif;margin:24px;color:#222;max-width:1400px}
table{border-collapse:collapse;margin:8px 0 20px}
td,th{border:1px solid #ddd;padding:4px 8px;text-align:right;font-size:13px}
th{background:#f4f4f4}td:first-child,th:first-child{text-align:left}.better{color:#1a7f37}.worse{color:#c62828}
.same{color:#888}.na{color:#bbb}.base{font-size:11px;color:#666;border:1px solid #bbb;border-radius:3px;padding:0 3px}
.charts{display:flex;flex-wrap:wrap;gap:12px}.gallery{display:flex;flex-wrap:wrap;gap:10px}
figure{margin:0;font-size:12px;text-align:center}figure img{width:192px;image-rendering:pixelated;border:1px solid #ccc}
h2{border-bottom:1px solid #ddd;padding-bottom:4px;margin-top:32px}code{background:#f4f4f4;padding:1px 4px}
table.paper td{font-style:italic;background:#fafafa}.source{font-size:12px;color:#666;margin-top:-12px}"""


def build_report(
    out_dir: str | Path,
    grid: str | None = None,
    runs: list[str] | None = None,
    experiment: str = "ablations",
    tracking_uri: str | None = None,
    with_gallery: bool = True,
) -> str:
    """Write ``<out_dir>/index.html``, the CSV tables and the gallery; return the HTML's path. ``out_dir`` may be
    a URI (e.g. ``$OMG_RUNS_DIR/dashboard`` on object storage): the report is built in a local folder, then
    copied there."""
    fs, _ = uio.fs_and_path(str(out_dir))
    if uio.is_remote(fs):
        with tempfile.TemporaryDirectory(prefix="omg-report-") as tmp:
            _build(Path(tmp), grid, runs, experiment, tracking_uri, with_gallery)
            uio.put_tree(tmp, str(out_dir))
        return uio.join(str(out_dir), "index.html")
    return str(_build(Path(out_dir).resolve(), grid, runs, experiment, tracking_uri, with_gallery))


def _build(
    out: Path, grid: str | None, runs: list[str] | None, experiment: str, tracking_uri: str | None, with_gallery: bool
) -> Path:
    import mlflow

    from omg_platform.tracking import tracking_uri as default_uri

    mlflow.set_tracking_uri(default_uri(tracking_uri))
    out.mkdir(parents=True, exist_ok=True)
    html = [
        f"<!doctype html><html><head><meta charset=utf-8><title>OMG-Seg report</title><style>{STYLE}</style>"
        "</head><body>",
        "<h1>OMG-Seg experiment report</h1>",
        f"<p>Generated {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} from MLflow "
        f"<code>{escape(mlflow.get_tracking_uri())}</code>. "
        "Numbers are percentages (NoC: clicks; lower is better).</p>",
    ]
    sections = []
    if runs:
        sections.append(Section("Models", find_runs(runs)))
    if grid:
        grid_runs = find_grids(grid, experiment)
        for k, g in enumerate(grid_runs):
            title = f"Ablation grid “{grid}”" + (f", CLIP: {g.clip_label}" if len(grid_runs) > 1 else "")
            slug = f"grid-{grid}" + (f"-clip{k}" if k else "")
            paper, noise = g.definition.get("paper"), g.definition.get("noise")
            sections.append(Section(title, g.rows, g.baseline, g.parent, slug, paper=paper, noise=noise))
        if len(grid_runs) > 1:  # every trial under each CLIP setting, side by side
            side = [
                Row(f"{r.name} ({g.clip_label})", r.run_id, r.axes, r.metrics, r.status, r.metric_keys)
                for name in grid_runs[0].parent.data.params.get("trials", "").split(",")
                for g in grid_runs
                for r in g.rows
                if r.name == name
            ]
            sections.append(
                Section(
                    f"Ablation grid “{grid}”: the CLIPs side by side", side, slug=f"grid-{grid}-clips", table_only=True
                )
            )
    if not sections:
        raise ValueError("nothing to report: give a grid and/or runs")
    colours: dict[str, str] = {}
    for sec in sections:
        title, rows, baseline, parent, slug = sec.title, sec.rows, sec.baseline, sec.parent, sec.slug
        for r in rows:
            colours.setdefault(r.name, PALETTE[len(colours) % len(PALETTE)])
        cols = columns(rows)
        html.append(f"<h2>{escape(title)}</h2>")
        if parent is not None:
            html.append(
                f"<p>{escape(parent.data.params.get('description', ''))}<br>MLflow parent run "
                f"<code>{parent.info.run_id}</code> ({parent.info.status}); baseline "
                f"<b>{escape(baseline)}</b>; deltas are against it.</p>"
            )
        if not rows:
            html.append("<p>No runs yet.</p>")
            continue
        axes = sorted({a for r in rows for a in r.axes})
        if sec.noise:
            html.append(
                "<p class=source>A delta within twice the seed-to-seed standard deviation is marked ~noise: "
                f"{escape(sec.noise.get('source', ''))}</p>"
            )
        html.append(html_table(rows, cols, baseline, axes, sec.noise))
        write_csv(out / f"{slug}.csv", table_rows(rows, cols, baseline, sec.noise))
        if sec.table_only:  # its rows' charts and overlays are in their grids' sections
            continue
        if parent is not None:
            for axis, group in axis_groups(rows, baseline).items():
                html.append(f"<h3>Ablation: {escape(axis)}</h3>")
                html.append(html_table(group, cols, baseline, [axis], sec.noise))
                if sec.paper:
                    html.append(paper_table(axis, group, cols, sec.paper))
                write_csv(out / f"{slug}-{axis}.csv", table_rows(group, cols, baseline, sec.noise))
            html.append("<h3>Per task</h3><div class=charts>")
            for key, t in cols:
                html.append(bar_chart(t, {r.name: r.metrics.get(key) for r in rows}, baseline, colours=colours))
            html.append("</div>")
        html.append("<h3>Training curves</h3><div class=charts>")
        for key, series in curves(rows).items():
            html.append(line_chart(key, series, "click" if key.endswith(CLICK_CURVE) else "step", colours=colours))
        html.append("</div>")
        if with_gallery:
            html.append("<h3>Overlays</h3>")
            for name, items in gallery(rows, out).items():
                if items:
                    html.append(
                        f"<h4>{escape(name)}</h4><div class=gallery>"
                        + "".join(
                            f"<figure><img src='{escape(p)}'><figcaption>{escape(c)}</figcaption></figure>"
                            for c, p in items
                        )
                        + "</div>"
                    )
    html.append("</body></html>")
    path = out / "index.html"
    uio.write_bytes(str(path), "\n".join(html).encode())
    return path
