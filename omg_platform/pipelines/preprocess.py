"""Preprocess a catalog dataset into Parquet shards with Ray Data.

    python -m omg_platform.pipelines.preprocess --dataset omg-shapes --out runs/shards
    ray job submit --address http://127.0.0.1:8265 --working-dir . -- \
        python -m omg_platform.pipelines.preprocess --dataset coco-panoptic --split val --root s3://bucket/coco --out s3://bucket/shards

For each split, the format reader lists the records on the driver; a Ray Data job loads
them in parallel (one task per shard of ``--shard-size`` records), validates them, and
writes ``<out>/<dataset>/<split>/``:

- ``shards/part-NNNNN.parquet``: encoded bytes (JPEG/PNG frames, PNG/RLE masks), never tensors (none for a
  shard whose every record was quarantined);
- ``shards/part-NNNNN.json``: a receipt (rows, sha256) written after its shard (the record that it is done);
- ``quarantine/part-NNNNN.parquet``: records that failed, with the reason (file, record, field);
- ``manifest.json``: written last and atomically (shard paths, row counts, sha256s, the schema
  and code versions, the digest of the source listing, the dataset's classes).

Idempotent (the same input gives byte-identical shards and manifest) and resumable (a rerun
after an interruption builds only the shards without a receipt). ``--fail-on-bad`` makes
a bad record fatal instead of quarantining it.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import io
import json
import sys
import threading
import time

import pyarrow as pa
import pyarrow.parquet as pq

import omg
from omg.data.catalog import DatasetEntry, get_entry, load_catalog
from omg.data.formats import get_reader
from omg.data.records import ARROW_SCHEMA, QUARANTINE_SCHEMA, SCHEMA_VERSION, BadRecord, json_digest
from omg.env import apply_env_defaults, runs_dir
from omg.utils import io as uio
from omg.utils.log import get_logger, interrupted
from omg.utils.log import setup as setup_logging
from omg.utils.progress import Progress
from omg_platform.errors import TaskFailed, describe, fail, interruptible, usage_error
from omg_platform.pipelines.cluster import init_ray, shared_location, shutdown_ray

logger = get_logger(__name__)

PARQUET_OPTIONS = dict(
    compression="zstd",
    compression_level=3,
    use_dictionary=["dataset", "split", "modality", "mask_kind"],
    write_statistics=False,
)


def parquet_bytes(table: pa.Table) -> bytes:
    buf = io.BytesIO()
    pq.write_table(table, buf, **PARQUET_OPTIONS)
    return buf.getvalue()


def split_dir(out: str, dataset: str, split: str) -> str:
    return uio.join(out, dataset, split)


# ----------------------------------------------------------------------------- the Ray Data task

#: records of a shard loaded at once when the source is on object storage: each mostly waits on its GETs (on a
#: local disk they are read one after another)
IO_THREADS = 8


def build_shard(spec: dict, entry: DatasetEntry, split: str, root: str | None, out_dir: str, fail_on_bad: bool) -> dict:
    """Load one shard's records, write its Parquet file, quarantine table and receipt; return the receipt."""
    from collections import Counter

    items = json.loads(spec["items_json"])
    source = root or entry.resolve_root()
    threads = IO_THREADS if uio.is_remote(uio.fs_and_path(source)[0]) else 1
    local, readers = threading.local(), []

    def load(item: dict) -> tuple[dict | None, dict | None]:
        if not hasattr(local, "reader"):  # a reader per thread (cheap: the annotation file was read by items())
            local.reader = get_reader(entry, split, root)
            readers.append(local.reader)
        try:
            return local.reader.load(item).to_row(), None
        except BadRecord as err:
            if fail_on_bad:
                raise
            return None, {
                "dataset": entry.name,
                "split": split,
                "key": str(item.get("key")),
                "source": err.source,
                "field": err.field,
                "reason": str(err),
            }

    if threads == 1:
        loaded = [load(item) for item in items]
    else:
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(threads, thread_name_prefix="omg-shard-io") as pool:
            loaded = list(pool.map(load, items))  # in the items' order: the same shard bytes either way
    rows = [row for row, _ in loaded if row is not None]
    bad = [b for _, b in loaded if b is not None]
    dropped = sum((r.dropped for r in readers), Counter())
    name = f"part-{spec['index']:05d}"
    receipt = {
        "index": spec["index"],
        "path": None,
        "rows": 0,
        "bytes": 0,
        "sha256": None,
        "quarantined": len(bad),
        "plan": spec["plan"],
        "dropped": dict(sorted(dropped.items())),
    }
    if rows:  # a shard whose every record was quarantined writes no Parquet file (its receipt says so)
        data = parquet_bytes(pa.Table.from_pylist(rows, schema=ARROW_SCHEMA))
        uio.write_bytes(uio.join(out_dir, "shards", f"{name}.parquet"), data)
        receipt.update(
            path=f"shards/{name}.parquet", rows=len(rows), bytes=len(data), sha256=hashlib.sha256(data).hexdigest()
        )
    if bad:
        receipt["quarantine_path"] = f"quarantine/{name}.parquet"
        uio.write_bytes(
            uio.join(out_dir, receipt["quarantine_path"]),
            parquet_bytes(pa.Table.from_pylist(bad, schema=QUARANTINE_SCHEMA)),
        )
    uio.write_json(uio.join(out_dir, "shards", f"{name}.json"), receipt)
    return receipt


def _row_task(row: dict, **kwargs) -> dict:
    """One shard; a fatal error comes back as words (file, record, field; errno, path), since Ray Data would
    hand the driver only "UDF failed to process a data block"."""
    try:
        return {"receipt": json.dumps(build_shard(row, **kwargs)), "error": ""}
    except Exception as err:  # noqa: BLE001 - reported by the driver
        return {"receipt": "", "error": describe(err)}


# ----------------------------------------------------------------------------- the driver


def plan_shards(items: list[dict], shard_size: int, plan_key: str) -> list[dict]:
    return [
        {"index": i, "items_json": json.dumps(items[s : s + shard_size], sort_keys=True), "plan": plan_key}
        for i, s in enumerate(range(0, len(items), shard_size))
    ]


def _intact(out_dir: str, path: str, size: int, sha256: str) -> bool:
    """The file exists with the recorded size and sha256 (a receipt or manifest is trusted no further)."""
    uri = uio.join(out_dir, path)
    try:
        data = uio.read_bytes(uri)
    except (FileNotFoundError, OSError):
        return False
    return len(data) == size and hashlib.sha256(data).hexdigest() == sha256


def read_receipt(out_dir: str, index: int, plan_key: str) -> dict | None:
    """The receipt of a shard built for this plan whose file is intact; else None (the shard is (re)built)."""
    uri = uio.join(out_dir, "shards", f"part-{index:05d}.json")
    if not uio.exists(uri):
        return None
    try:
        receipt = uio.read_json(uri)
    except (ValueError, OSError):
        return None
    if receipt.get("plan") != plan_key:
        return None
    if receipt["path"] is not None and not _intact(out_dir, receipt["path"], receipt["bytes"], receipt["sha256"]):
        return None
    if receipt.get("quarantine_path") and not uio.exists(uio.join(out_dir, receipt["quarantine_path"])):
        return None
    return receipt


def damaged_shards(manifest: dict, out_dir: str) -> list[str]:
    """Shard paths of a manifest whose file is missing, truncated or has another sha256."""
    return [s["path"] for s in manifest["shards"] if not _intact(out_dir, s["path"], s["bytes"], s["sha256"])]


def preprocess_split(
    entry: DatasetEntry,
    split: str,
    out: str,
    root: str | None = None,
    shard_size: int = 256,
    fail_on_bad: bool = False,
    concurrency: int | None = None,
    progress: bool = True,
    limit: int | None = None,
    log=None,
) -> dict:
    """Shard one split; return its manifest (``log``: where its lines go, this module's logger by default). Requires
    ``ray.init()`` to have been called."""
    log = log or logger.info
    import ray

    out_dir = split_dir(out, entry.name, split)
    reader = get_reader(entry, split, root)
    t0 = time.monotonic()
    items = reader.items()
    if limit is not None:
        items = items[:limit]
    listing = json_digest(items)
    code_version = omg.__version__
    plan_key = json_digest(
        {
            "listing": listing,
            "shard_size": shard_size,
            "schema": SCHEMA_VERSION,
            "code": code_version,
            "entry": dataclasses.asdict(dataclasses.replace(entry, source="")),
            "fail_on_bad": fail_on_bad,
        }
    )
    manifest_uri = uio.join(out_dir, "manifest.json")
    if uio.exists(manifest_uri):
        old = uio.read_json(manifest_uri)
        if old.get("plan") == plan_key:
            damaged = damaged_shards(old, out_dir)
            if not damaged:
                log(
                    f"[preprocess {entry.name}/{split}] up to date: {old['rows']} rows in {len(old['shards'])} "
                    f"shards ({old['quarantined']} quarantined, every shard's sha256 checked) at {out_dir}"
                )
                return old
            log(
                f"[preprocess {entry.name}/{split}] {len(damaged)} shard(s) missing or damaged (size or sha256 "
                f"differs from the manifest), rebuilding: {', '.join(damaged[:3])}{' ...' if len(damaged) > 3 else ''}"
            )
    specs = plan_shards(items, shard_size, plan_key)
    receipts = {s["index"]: read_receipt(out_dir, s["index"], plan_key) for s in specs}
    todo = [s for s in specs if receipts[s["index"]] is None]
    log(
        f"[preprocess {entry.name}/{split}] {len(items)} records -> {len(specs)} shards of <= {shard_size} "
        f"({len(specs) - len(todo)} already done) at {out_dir}"
    )
    if todo:
        ds = ray.data.from_items(todo, override_num_blocks=len(todo))
        ds = ds.map(
            _row_task,
            fn_kwargs=dict(entry=entry, split=split, root=root, out_dir=out_dir, fail_on_bad=fail_on_bad),
            num_cpus=1,
            concurrency=concurrency,
        )
        done_rows = quarantined = 0
        with Progress(f"preprocess {entry.name}/{split}", total=len(todo), unit="shard", enabled=progress) as prog:
            for row in ds.iter_rows():
                if row["error"]:
                    raise TaskFailed(row["error"])
                r = json.loads(row["receipt"])
                receipts[r["index"]] = r
                done_rows += r["rows"]
                quarantined += r["quarantined"]
                prog.update(extra=f"{done_rows} rows, {quarantined} quarantined")
    ordered = [receipts[s["index"]] for s in specs]
    manifest = {
        "schema_version": SCHEMA_VERSION,
        "code_version": code_version,
        "dataset": entry.name,
        "split": split,
        "format": entry.format,
        "modality": entry.modality,
        "source_root": entry.resolve_root(root),
        "listing_digest": listing,
        "plan": plan_key,
        "num_source_records": len(items),
        "rows": sum(r["rows"] for r in ordered),
        "quarantined": sum(r["quarantined"] for r in ordered),
        "shards": [
            {"path": r["path"], "rows": r["rows"], "bytes": r["bytes"], "sha256": r["sha256"]}
            for r in ordered
            if r["path"] is not None
        ],  # a shard of quarantined records only has no file
        "quarantine": [r["quarantine_path"] for r in ordered if r.get("quarantine_path")],
        "dropped": _sum_counts(r.get("dropped", {}) for r in ordered),
        "class_agnostic": entry.class_agnostic,
        "classes": [dataclasses.asdict(c) for c in entry.classes],
    }
    uio.write_json(manifest_uri, manifest)
    log(
        f"[preprocess {entry.name}/{split}] {manifest['rows']} rows, {manifest['quarantined']} quarantined, "
        f"{len(manifest['shards'])} shards [{time.monotonic() - t0:.1f}s]"
    )
    for reason, n in manifest["dropped"].items():
        log(f"  dropped on purpose: {n} x {reason} (documented in the reader; not a bad record)")
    if manifest["quarantined"]:
        for q in manifest["quarantine"][:3]:
            table = pq.read_table(io.BytesIO(uio.read_bytes(uio.join(out_dir, q))))
            for reason in table.column("reason").to_pylist()[:3]:
                log(f"  quarantined: {reason}")
    return manifest


def _sum_counts(counts) -> dict[str, int]:
    total: dict[str, int] = {}
    for c in counts:
        for k, v in c.items():
            total[k] = total.get(k, 0) + int(v)
    return dict(sorted(total.items()))


def read_quarantine(manifest: dict, out_dir: str) -> list[dict]:
    rows = []
    for q in manifest["quarantine"]:
        rows += pq.read_table(io.BytesIO(uio.read_bytes(uio.join(out_dir, q)))).to_pylist()
    return rows


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="preprocess",
        description="Turn a catalog dataset (official format, any fsspec URI) into Parquet shards + manifest with Ray "
        "Data: OUT/<dataset>/<split>/{shards,quarantine,manifest.json}. Idempotent and resumable.",
    )
    p.add_argument(
        "--dataset",
        required=True,
        action="append",
        help="catalog entry (omg catalog list); repeat it to process several datasets",
    )
    p.add_argument("--split", action="append", help="split to process (repeatable; default: every split)")
    p.add_argument("--root", help="dataset root URI (overrides the catalog's root and $OMG_ROOT_<NAME>)")
    p.add_argument("--out", default=runs_dir("shards"), help="output URI (default $OMG_RUNS_DIR/shards, runs/shards)")
    p.add_argument("--shard-size", type=int, default=256, help="records per shard (default 256)")
    p.add_argument(
        "--fail-on-bad", action="store_true", help="a bad record aborts the job instead of being quarantined"
    )
    p.add_argument(
        "--allow-empty",
        action="store_true",
        help="a split named with --split that gives 0 rows is not an error (by default it is: exit status 1, "
        "after every split; an empty split of a dataset's every split is a warning)",
    )
    p.add_argument("--num-workers", type=int, help="concurrent shard tasks (default: as Ray resources allow)")
    p.add_argument("--num-cpus", type=int, help="CPUs of a local Ray started by this script")
    p.add_argument("--smoke-test", action="store_true", help="only the first 2 shards' worth of records per split")
    p.add_argument("--quiet", action="store_true", help="no progress output")
    return p


def main(argv: list[str] | None = None) -> int:
    setup_logging("preprocess")
    apply_env_defaults()
    args = build_parser().parse_args(argv)
    if args.shard_size < 1:
        logger.error("--shard-size must be >= 1")
        return 2
    try:
        catalog = load_catalog()
        jobs = []
        for name in args.dataset:
            entry = get_entry(name, catalog)
            splits = args.split or list(entry.splits)
            unknown = [s for s in splits if s not in entry.splits]
            if unknown:
                raise ValueError(f"{entry.name} has no split {unknown[0]!r} (splits: {', '.join(entry.splits)})")
            # the driver's view of where the data is and where the shards go, for every node's tasks
            root = shared_location(entry.resolve_root(args.root), f"the root of {entry.name}")
            jobs += [(entry, split, root) for split in splits]
        args.out = shared_location(args.out, "--out")
    except KeyError as err:
        return usage_error("preprocess", err.args[0])
    except ValueError as err:  # a malformed catalog file (SchemaError names file and key), a bad split
        return usage_error("preprocess", err)
    limit = 2 * args.shard_size if args.smoke_test else None
    say = (lambda m: None) if args.quiet else logger.info
    owned = False
    with interruptible():
        try:
            owned = init_ray(args.num_cpus)
            empty = []  # (entry, split, why) of the splits that gave no row: every split is reached first
            for entry, split, root in jobs:
                m = preprocess_split(
                    entry,
                    split,
                    args.out,
                    root,
                    args.shard_size,
                    args.fail_on_bad,
                    args.num_workers,
                    progress=not args.quiet,
                    limit=limit,
                    log=say,
                )
                print(
                    json.dumps(
                        {
                            "dataset": entry.name,
                            "split": split,
                            "rows": m["rows"],
                            "quarantined": m["quarantined"],
                            "shards": len(m["shards"]),
                            "manifest": uio.join(split_dir(args.out, entry.name, split), "manifest.json"),
                        }
                    )
                )
                if m["rows"] == 0 and not args.allow_empty:
                    why = (
                        f"all {m['quarantined']} records were quarantined (reasons under "
                        f"{split_dir(args.out, entry.name, split)}/quarantine/; `omg data validate --dataset "
                        f"{entry.name}` lists them)"
                        if m["quarantined"]
                        else f"the split lists no record (check the catalog paths or --root: {m['source_root']})"
                    )
                    empty.append((entry, split, why))
        except KeyboardInterrupt:
            shutdown_ray(owned)
            interrupted(
                logger, "the shards written so far are kept, and rerunning the same command builds only the rest"
            )
            return 130
        except Exception as err:  # noqa: BLE001 - Ray wraps worker errors: the cause (file, record, field; errno, path) last
            shutdown_ray(owned)
            return fail("preprocess", err)
    shutdown_ray(owned)
    # an empty split the user named (--split) is an error; one of "every split" is said and the others stand
    named = [(e, s, why) for e, s, why in empty if args.split]
    for entry, split, why in empty:
        if not args.split:
            logger.warning(
                f"{entry.name}/{split} gave 0 rows: {why}; its manifest is empty (name it with --split to make this "
                "an error)"
            )
    for entry, split, why in named:
        logger.error(f"{entry.name}/{split} gave 0 rows: {why}; --allow-empty accepts an empty split")
    return 1 if named else 0


if __name__ == "__main__":
    sys.exit(main())
