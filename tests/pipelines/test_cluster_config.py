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


def test_ray_cluster_yaml_runs_the_team_setup_of_the_readme():
    """Every node gets the locations on object storage and the tracking server's URI; the head runs MLflow on
    PostgreSQL with S3 artifacts, on its cluster-network address only (what tests/pipelines/test_cluster.py runs
    in miniature)."""
    cfg = yaml.safe_load((ROOT / "ray_cluster.yaml").read_text())
    setup = " ".join(cfg["setup_commands"])
    assert "OMG_DATA_DIR=s3://" in setup and "OMG_RUNS_DIR=s3://" in setup and "OMG_MLFLOW_ARTIFACTS=s3://" in setup
    head, workers = " ".join(cfg["head_start_ray_commands"]), " ".join(cfg["worker_start_ray_commands"])
    server = next(c for c in cfg["head_start_ray_commands"] if "setsid nohup mlflow server" in c)
    assert "--backend-store-uri postgresql://" in server and "--artifacts-destination $OMG_MLFLOW_ARTIFACTS" in server
    assert "--host $HEAD_IP" in server and "0.0.0.0" not in server, "the cluster network only"
    for start in (head, workers):
        assert ". ~/omg.env" in start and "export MLFLOW_TRACKING_URI=http://" in start and ":5000" in start
    assert any("createdb -O omg mlflow" in c for c in cfg["head_setup_commands"])
    reqs = (ROOT / "requirements.txt").read_text()
    assert all(f"\n{p}==" in reqs for p in ("s3fs", "boto3", "psycopg[binary]")), "the cluster extra is pinned"
