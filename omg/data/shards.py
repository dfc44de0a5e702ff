"""Reading preprocessed shards: a manifest -> random access to its rows as :class:`Sample` records."""

from __future__ import annotations

import io
from collections import OrderedDict

import pyarrow as pa
import pyarrow.parquet as pq

from omg.data.records import SCHEMA_VERSION, Sample
from omg.utils import io as uio


def split_uri(manifest_uri: str) -> str:
    return manifest_uri.rsplit("/", 1)[0]


def read_manifest(uri: str) -> dict:
    """Read and check a shard manifest (``<out>/<dataset>/<split>/manifest.json``, or its folder)."""
    if not uri.endswith(".json"):
        uri = uio.join(uri, "manifest.json")
    if not uio.exists(uri):
        raise FileNotFoundError(
            f"{uri}: no manifest (preprocessing incomplete, or a wrong path); run "
            f"`omg preprocess --dataset NAME --out ...` first"
        )
    m = uio.read_json(uri)
    if m.get("schema_version") != SCHEMA_VERSION:
        raise ValueError(
            f"{uri}: shard schema version {m.get('schema_version')} != {SCHEMA_VERSION} of this code; "
            f"preprocess the dataset again"
        )
    m["_uri"] = uri
    return m


class ShardReader:
    """Random access over one manifest's shards; keeps the ``cache_shards`` most recently used tables."""

    def __init__(self, manifest: dict | str, cache_shards: int = 4, verify: bool = False):
        self.manifest = read_manifest(manifest) if isinstance(manifest, str) else manifest
        self.base = split_uri(self.manifest["_uri"])
        self.offsets = []
        total = 0
        for s in self.manifest["shards"]:
            self.offsets.append(total)
            total += s["rows"]
        self.length = total
        self.cache_shards = cache_shards
        self.verify = verify
        self._cache: OrderedDict[int, pa.Table] = OrderedDict()

    @property
    def dataset(self) -> str:
        return self.manifest["dataset"]

    def __len__(self) -> int:
        return self.length

    def _table(self, k: int) -> pa.Table:
        if k in self._cache:
            self._cache.move_to_end(k)
            return self._cache[k]
        shard = self.manifest["shards"][k]
        data = uio.read_bytes(uio.join(self.base, shard["path"]))
        if self.verify:
            import hashlib

            if hashlib.sha256(data).hexdigest() != shard["sha256"]:
                raise ValueError(f"{uio.join(self.base, shard['path'])}: sha256 does not match the manifest")
        table = pq.read_table(io.BytesIO(data))
        self._cache[k] = table
        while len(self._cache) > self.cache_shards:
            self._cache.popitem(last=False)
        return table

    def __getitem__(self, i: int) -> Sample:
        if not 0 <= i < self.length:
            raise IndexError(f"row {i} out of range for {self.dataset} ({self.length} rows)")
        lo, hi = 0, len(self.offsets) - 1
        while lo < hi:  # last shard whose offset <= i
            mid = (lo + hi + 1) // 2
            if self.offsets[mid] <= i:
                lo = mid
            else:
                hi = mid - 1
        table = self._table(lo)
        row = table.slice(i - self.offsets[lo], 1).to_pylist()[0]
        return Sample.from_row(row)
