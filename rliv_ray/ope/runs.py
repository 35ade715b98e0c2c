"""``rliv evaluate-ope``: trained SL-MGAC runs (and baselines) scored as Tables 1-2 do.

For every run directory (``rliv train sl-mgac ... --out RUN``): its ``policy.pt`` as an
epsilon-greedy policy (Eq. 16), NCIS (step-wise by default, see :mod:`rliv_ray.ope.ncis`) on
the held-out users' logged trajectories (``SAMPLES/test``), and, since the world is
synthetic, the true on-policy value of the same users. Runs of the same method (several
training seeds) form one table row with a Student-t interval over them. Reference rows: the
logging policy (NCIS weights are all 1) and the immediate-greedy oracle (true value only: it
reads the world's latent state).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from rliv_ray.algorithms.sl_mgac.baselines import method
from rliv_ray.checks import InvalidInput
from rliv_ray.data.io import read_manifest
from rliv_ray.data.live_config import LiveWorldConfig
from rliv_ray.data.live_policies import OraclePolicy, logging_policy
from rliv_ray.data.live_population import LivePopulation
from rliv_ray.ope.evaluate import EvalRow, NetworkPolicy, evaluate
from rliv_ray.ope.ncis import DEFAULT_KIND
from rliv_ray.ope.table import MethodSummary, summarise

TEST_DIR = "test"
POLICY_FILE = "policy.pt"


def world_of(samples: str | Path) -> tuple[LiveWorldConfig, pa.Table]:
    """The world config the samples' log came from and the held-out users' log rows."""
    root = Path(samples)
    source = read_manifest(root).get("source", {})
    if "world" not in source:
        raise InvalidInput(f"{root}: its manifest does not name the world it was generated from "
                         "(evaluate-ope needs a `rliv generate-live` log for the true values)")
    files = sorted((root / TEST_DIR).glob("*.parquet"))
    if not files:
        raise InvalidInput(f"{root}: no held-out users' log in {TEST_DIR}/")
    return (LiveWorldConfig.from_dict(source["world"]),
            pa.concat_tables(pq.read_table(f) for f in files))


def evaluate_runs(samples: str | Path, runs: Sequence[str | Path], *, seeds: Sequence[int],
                  epsilon: float, cap: float | str, kind: str = DEFAULT_KIND,
                  n_bootstrap: int = 200, references: bool = True) -> list[MethodSummary]:
    """One table row per method (runs of the same method are pooled), references first."""
    from rliv_ray.algorithms.sl_mgac.train import load_policy

    policies = []  # every run's policy first: a bad file fails before any evaluation
    for run in runs:
        path = Path(run) / POLICY_FILE
        if not path.exists():
            raise FileNotFoundError(f"{run}: no {POLICY_FILE} (is it a `rliv train sl-mgac` "
                                    "output?)")
        policies.append(load_policy(path))
    config, test_log = world_of(samples)
    population = LivePopulation.build(config)
    common = {"world_config": config, "seeds": tuple(seeds), "cap": cap, "kind": kind,
              "population": population, "n_bootstrap": n_bootstrap}
    results: dict[str, list[EvalRow]] = {}
    if references:
        results["logging policy"] = [evaluate(logging_policy(config), test_log=test_log,
                                              **common)]
        users = _users(test_log)
        results["oracle (immediate, truth only)"] = [evaluate(
            OraclePolicy(config.beta), test_log=None, users=users, **common)]
    for net, edges, name in policies:
        policy = NetworkPolicy(net, edges, epsilon=epsilon,
                               probability=method(name).probability)
        results.setdefault(name, []).append(evaluate(policy, test_log=test_log, **common))
    return summarise(results)


def _users(test_log: pa.Table):
    import numpy as np

    from rliv_ray import schema as S

    return np.unique(test_log[S.USER_ID].to_numpy())


def write_table(rows: list[MethodSummary], out: Path) -> None:
    from rliv_ray.ope.table import render_markdown, to_records

    out.mkdir(parents=True, exist_ok=True)
    (out / "table.md").write_text(render_markdown(rows) + "\n")
    (out / "table.json").write_text(json.dumps(to_records(rows), indent=2) + "\n")
