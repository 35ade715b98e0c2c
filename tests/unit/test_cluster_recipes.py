"""The cluster recipes in ``cluster/`` parse and say what the code expects (not launched here).

The launcher YAMLs go through Ray's own ``prepare_config`` and ``validate_config`` (its JSON
schema, as ``ray up`` does before it contacts any machine); the RayJob and the runtime
environment are checked for the fields KubeRay and Ray read.
"""

import copy
from pathlib import Path

import pytest
import yaml

CLUSTER = Path(__file__).resolve().parents[2] / "cluster"


def load(name: str) -> dict:
    return yaml.safe_load((CLUSTER / name).read_text())


@pytest.mark.parametrize("name, provider", [("onprem.yaml", "local"), ("aws.yaml", "aws")])
def test_launcher_yamls_pass_rays_schema(name, provider):
    pytest.importorskip("jsonschema")
    from ray.autoscaler._private.util import prepare_config, validate_config

    config = load(name)
    assert config["provider"]["type"] == provider
    validate_config(prepare_config(copy.deepcopy(config)))
    head = " ".join(config["head_start_ray_commands"])
    workers = " ".join(config["worker_start_ray_commands"])
    assert "RAY_AUTH_MODE=token ray start --head" in head and "--dashboard-host=127.0.0.1" in head
    assert "RAY_AUTH_MODE=token ray start --address=$RAY_HEAD_IP:6379" in workers
    assert config["file_mounts"]["~/.ray/auth_token"] == "~/.ray/auth_token"


def test_rayjob_manifest():
    import ray

    job = load("rayjob.yaml")
    assert (job["apiVersion"], job["kind"]) == ("ray.io/v1", "RayJob")
    spec = job["spec"]
    assert spec["entrypoint"].startswith("python -m rliv_ray.cli train rliv-ua ")
    assert spec["shutdownAfterJobFinishes"] is True
    assert isinstance(yaml.safe_load(spec["runtimeEnvYAML"]), dict)
    cluster = spec["rayClusterSpec"]
    assert cluster["rayVersion"] == ray.__version__
    assert cluster["authOptions"]["mode"] == "token"
    groups = [cluster["headGroupSpec"], *cluster["workerGroupSpecs"]]
    images = {c["image"] for g in groups for c in g["template"]["spec"]["containers"]}
    assert images == {f"rayproject/ray:{ray.__version__}-py311-cpu"}


def test_runtime_env_file():
    env = load("runtime_env.yaml")
    assert set(env) <= {"env_vars", "pip", "py_modules", "working_dir", "excludes"}
    assert all(isinstance(v, str) for v in env["env_vars"].values())  # Ray wants strings
