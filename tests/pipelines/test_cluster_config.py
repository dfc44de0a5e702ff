"""ray_cluster.yaml is a valid Ray cluster launcher config (the JSON schema shipped inside ray)."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import yaml

from tests import ROOT


def test_ray_cluster_yaml_matches_rays_schema():
    import ray.autoscaler

    cfg = yaml.safe_load((ROOT / "ray_cluster.yaml").read_text())
    schema = json.loads((Path(ray.autoscaler.__file__).parent / "ray-schema.json").read_text())
    jsonschema.validate(cfg, schema)
    assert cfg["head_node_type"] in cfg["available_node_types"]
    workers = cfg["available_node_types"]["gpu_worker"]
    assert workers["min_workers"] <= workers["max_workers"] <= cfg["max_workers"]
    starts = " ".join(cfg["head_start_ray_commands"] + cfg["worker_start_ray_commands"])
    assert "RAY_AUTH_MODE=disabled" in starts and "RAY_USAGE_STATS_ENABLED=0" in starts
    assert any("requirements.txt" in c for c in cfg["setup_commands"])
