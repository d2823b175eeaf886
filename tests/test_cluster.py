"""cluster.yaml is a valid Ray cluster-launcher config that is safe to share."""

import json
from pathlib import Path

import yaml

CLUSTER = Path(__file__).resolve().parents[1] / "cluster.yaml"


def load() -> dict:
    return yaml.safe_load(CLUSTER.read_text())


def test_valid_against_ray_schema():
    """Against the JSON schema the installed Ray ships for cluster configs
    (ray/autoscaler/ray-schema.json), as read and through the launcher's own check."""
    import jsonschema
    import ray.autoscaler
    from ray.autoscaler._private.util import prepare_config, validate_config

    schema = json.loads((Path(ray.autoscaler.__file__).parent / "ray-schema.json").read_text())
    config = load()
    jsonschema.validate(config, schema)
    validate_config(config)
    validate_config(prepare_config(config))  # with the launcher's defaults filled in


def test_head_and_gpu_worker_types():
    config = load()
    types = config["available_node_types"]
    assert config["head_node_type"] in types
    workers = [t for name, t in types.items() if name != config["head_node_type"]]
    assert any(t["node_config"]["InstanceType"].startswith(("g", "p")) for t in workers)


def test_installs_project_and_keeps_dashboard_private():
    config = load()
    assert any("pip install" in c and "harness" in c for c in config["setup_commands"])
    head_start = " ".join(config["head_start_ray_commands"])
    assert "--dashboard-host=127.0.0.1" in head_start
    assert "0.0.0.0" not in CLUSTER.read_text()


def test_no_credentials_in_file():
    text = CLUSTER.read_text().lower()
    for word in ("aws_access_key", "aws_secret", "secret_access", "password", "ssh_private_key"):
        assert word not in text
