"""The d3rlpy side of ``peer_d3rlpy.py``: runs in ``.venv-peer`` and never imports the project.

    .venv-peer/bin/python benchmarks/peer_d3rlpy_worker.py SPEC_JSON    # prints one JSON line

SPEC names the shard files and columns, the algorithm (``double_dqn`` or ``discrete_cql``),
its settings and the mode: ``throughput`` (``fit`` for ``warmup`` + ``steps`` updates, timed
per block of ``block`` updates after the warm-up) or ``curve`` (``fitter`` for ``steps``
updates, the mean losses of every block of ``block`` updates). Dataset construction and model
building happen before any timing. :func:`read_transitions` and :func:`checksum` are shared
with the driver, which checks that d3rlpy trains on exactly the shard rows.
"""

from __future__ import annotations

import json
import statistics
import sys
import time

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

PEER_LOSS_KEYS = {"double_dqn": {"objective": "loss", "td": "loss"},
                  "discrete_cql": {"objective": "loss", "td": "td_loss"}}
"""d3rlpy's loss names: the objective it minimises and its TD term."""


def read_transitions(files: list[str], columns: dict) -> dict[str, np.ndarray]:
    """The shard rows as transitions (obs, actions, reward, new_obs, terminals), pyarrow only."""
    names = [columns["obs"], columns["new_obs"], columns["action"], *columns["rewards"]]
    table = pa.concat_tables(pq.read_table(f, columns=names) for f in files)

    def matrix(name: str) -> np.ndarray:  # fixed-size list column -> (N, d) float32
        array = table[name].combine_chunks()
        return array.flatten().to_numpy().astype(np.float32).reshape(len(array), -1)

    rewards = [table[name].to_numpy().astype(np.float32) for name in columns["rewards"]]
    return {"obs": matrix(columns["obs"]), "new_obs": matrix(columns["new_obs"]),
            "actions": table[columns["action"]].to_numpy().astype(np.int64),
            "reward": reward_sum(rewards), "terminals": np.zeros(table.num_rows, dtype=bool)}


def reward_sum(rewards: list[np.ndarray]) -> np.ndarray:
    """The scalar reward (N,): the label rewards added in float32, in label order."""
    total = np.zeros_like(rewards[0], dtype=np.float32)
    for reward in rewards:
        total += reward
    return total


def checksum(arrays: dict[str, np.ndarray]) -> dict[str, float]:
    """Row count and float64 sums of every array: what two readers of the same rows share."""
    return {"rows": len(arrays["actions"]),
            **{k: float(np.asarray(v, dtype=np.float64).sum()) for k, v in arrays.items()}}


class RowPicker:
    """d3rlpy TransitionPicker: transition i is shard row i with its own next state and terminal
    flag (d3rlpy's BasicTransitionPicker would take row i + 1 as the next state)."""

    def __init__(self, new_obs: np.ndarray, terminals: np.ndarray):
        from d3rlpy.dataset import Transition

        self.new_obs, self.terminals = new_obs, terminals.astype(np.float32)
        self.transition = Transition  # imported once: an import per row cost ~2 ms a batch

    def __call__(self, episode, index: int):
        action = episode.actions[index]
        return self.transition(observation=episode.observations[index], action=action,
                          reward=episode.rewards[index], next_observation=self.new_obs[index],
                          next_action=np.zeros_like(action), terminal=self.terminals[index],
                          interval=1, rewards_to_go=episode.rewards[index:index + 1])


def peer_dataset(arrays: dict[str, np.ndarray], n_actions: int):
    """One d3rlpy Episode over all rows, sampled row by row through :class:`RowPicker`."""
    from d3rlpy.constants import ActionSpace
    from d3rlpy.dataset import Episode, InfiniteBuffer, ReplayBuffer

    # terminated=True makes the episode's transition count its row count; RowPicker reads the
    # rows' own terminal flags.
    episode = Episode(observations=arrays["obs"], actions=arrays["actions"].reshape(-1, 1),
                      rewards=arrays["reward"].reshape(-1, 1), terminated=True)
    return ReplayBuffer(InfiniteBuffer(), episodes=[episode],
                        transition_picker=RowPicker(arrays["new_obs"], arrays["terminals"]),
                        action_space=ActionSpace.DISCRETE, action_size=n_actions)


def peer_algo(spec: dict):
    """DoubleDQN or DiscreteCQL with the project's batch, hidden sizes, gamma and lr."""
    import d3rlpy

    kind = {"double_dqn": d3rlpy.algos.DoubleDQNConfig,
            "discrete_cql": d3rlpy.algos.DiscreteCQLConfig}[spec["algo"]]
    encoder = d3rlpy.models.VectorEncoderFactory(hidden_units=list(spec["hidden"]))
    return kind(batch_size=spec["batch_size"], learning_rate=spec["lr"], gamma=spec["gamma"],
                encoder_factory=encoder,
                target_update_interval=spec["target_update_interval"]).create(device="cpu:0")


def throughput(algo, dataset, spec: dict, quiet: dict) -> dict:
    """``fit`` for warm-up + steps updates; rows/s = batch x median updates/s of the blocks."""
    warmup, steps, block = spec["warmup"], spec["steps"], spec["block"]
    marks: list[float] = []

    def mark(_algo, _epoch, step: int) -> None:
        if step >= warmup and (step - warmup) % block == 0:
            marks.append(time.perf_counter())

    algo.fit(dataset, n_steps=warmup + steps, n_steps_per_epoch=warmup + steps,
             callback=mark, **quiet)
    rates = [block / (b - a) for a, b in zip(marks, marks[1:], strict=False)]
    steady = statistics.median(rates)
    return {"steps": steps, "seconds": marks[-1] - marks[0], "updates_per_s": steady,
            "rows_per_s": steady * spec["batch_size"],
            "per_block": [round(r, 2) for r in rates]}


def curve(algo, dataset, spec: dict, quiet: dict) -> list[dict]:
    """Mean objective and TD loss of every block of updates, with the elapsed time."""
    keys, started, points = PEER_LOSS_KEYS[spec["algo"]], time.perf_counter(), []
    for epoch, metrics in algo.fitter(dataset, n_steps=spec["steps"],
                                      n_steps_per_epoch=spec["block"], **quiet):
        points.append({"updates": epoch * spec["block"], "elapsed_s": time.perf_counter() - started,
                       **{name: float(metrics[key]) for name, key in keys.items()}})
    return points


def run(spec: dict) -> dict:
    """One d3rlpy run as a JSON-able dict."""
    import d3rlpy
    import torch
    from d3rlpy.logging import NoopAdapterFactory

    if spec["threads"]:
        torch.set_num_threads(spec["threads"])
    d3rlpy.seed(spec["seed"])
    began = time.perf_counter()
    arrays = read_transitions(spec["files"], spec["columns"])
    dataset = peer_dataset(arrays, spec["n_actions"])
    algo = peer_algo(spec)
    out = {"algo": spec["algo"], "checksum": checksum(arrays),
           "transitions": dataset.transition_count,
           "dataset_build_s": time.perf_counter() - began,
           "torch_threads": torch.get_num_threads(),
           "versions": {"d3rlpy": d3rlpy.__version__, "torch": torch.__version__,
                        "numpy": np.__version__, "pyarrow": pa.__version__}}
    quiet = {"show_progress": False, "logger_adapter": NoopAdapterFactory(),
             "save_interval": 1 << 30}
    if spec["mode"] == "throughput":
        out["throughput"] = throughput(algo, dataset, spec, quiet)
    else:
        out["curve"] = curve(algo, dataset, spec, quiet)
    return out


if __name__ == "__main__":
    print(json.dumps(run(json.loads(sys.argv[1]))), flush=True)
