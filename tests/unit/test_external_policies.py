"""External policies (python:, torchscript:, onnx:, rliv:) in the world: same users, clear errors.

A model that always scores action 0 highest is the RankingModel (weight 0 for every
candidate); with epsilon 0 no policy draws random numbers, so under common random numbers the
metrics must be *identical*, whichever way the model is supplied.
"""

import warnings

import numpy as np
import pytest
import torch
from torch import nn

from rliv_ray.algorithms.rliv_ua.network import NetworkSpec, RLIVUANetwork
from rliv_ray.data.ua_config import UAWorldConfig
from rliv_ray.evaluation.policies import REFERENCE, PolicyError, make_policy
from rliv_ray.evaluation.world import WorldEval, evaluate_policies, state_dim
from rliv_ray.serving import export_scorer

WORLD = UAWorldConfig(n_users=30, n_authors=200, days=2, seed=1)
DIM = state_dim(WORLD)
N_ACTIONS = WORLD.action_grid.size
SETUP = WorldEval(WORLD, seeds=(0,), buckets=2)


def always_zero(user_id: np.ndarray, author_id: np.ndarray, state: np.ndarray) -> np.ndarray:
    """python: policy: action 0 scores highest for every candidate."""
    scores = np.zeros((len(state), N_ACTIONS), np.float32)
    scores[:, 0] = 1.0
    return scores


def boost_even_authors(user_id: np.ndarray, author_id: np.ndarray,
                       state: np.ndarray) -> np.ndarray:
    """python: policy: the largest weight for even author ids, 0 for odd (reranks)."""
    scores = always_zero(user_id, author_id, state)
    scores[author_id % 2 == 0, -1] = 2.0
    return scores


def first_action_model(in_features: int = DIM, out_features: int = N_ACTIONS) -> nn.Module:
    """state (M, in) -> (M, out) scores, the first the highest (a Linear checks the width)."""
    linear = nn.Linear(in_features, out_features)
    with torch.no_grad():
        linear.weight.zero_()
        linear.bias.zero_()
        linear.bias[0] = 1.0
    return linear.eval()


def save_torchscript(model: nn.Module, path) -> str:
    torch.jit.save(torch.jit.script(model), str(path))
    return str(path)


def export_rliv(path, state_dim: int) -> str:
    spec = NetworkSpec(state_dim, state_dim - 2, n_actions=N_ACTIONS, hidden=(8,),
                       embedding_dim=4, id_buckets=64)
    torch.manual_seed(0)
    return str(export_scorer(RLIVUANetwork(spec), path, gamma=0.9, grid=WORLD.action_grid,
                             serving_tower="effective_view", epsilon=0.0))


def assert_same_metrics(specs: list[str], *, other: str | None = None) -> None:
    """Every spec's metrics equal the RankingModel's; ``other``'s do not (the check can fail)."""
    result = evaluate_policies(SETUP, ["RankingModel", *specs, *([other] if other else [])],
                               progress=False)
    assert result["RankingModel"]["requests"]["mean"] > 0
    for spec in specs:
        assert result[spec] == result["RankingModel"], spec
    if other:
        assert result[other] != result["RankingModel"]


def test_python_and_torchscript_policies_match_the_ranking_model(tmp_path):
    model = save_torchscript(first_action_model(), tmp_path / "first.pt")
    assert_same_metrics([f"python:{__name__}:always_zero", f"torchscript:{model}"],
                        other=f"python:{__name__}:boost_even_authors")


def test_onnx_policy_matches_the_ranking_model(tmp_path):
    pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    path = tmp_path / "first.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript-based exporter is deprecated
        torch.onnx.export(first_action_model(), (torch.zeros(3, DIM),), str(path), dynamo=False,
                          input_names=["state"], dynamic_axes={"state": {0: "n"}})
    assert_same_metrics([f"onnx:{path}"])


def test_torchscript_of_the_wrong_input_width_names_the_state_width(tmp_path):
    model = save_torchscript(first_action_model(in_features=DIM + 3), tmp_path / "wide.pt")
    with pytest.raises(PolicyError, match=f"states of width {DIM}"):
        make_policy(f"torchscript:{model}", WORLD, DIM)


def test_torchscript_of_the_wrong_output_width_is_refused(tmp_path):
    model = save_torchscript(first_action_model(out_features=N_ACTIONS + 1), tmp_path / "o.pt")
    with pytest.raises(PolicyError, match=rf"action grid needs \({N_ACTIONS},\)"):
        make_policy(f"torchscript:{model}", WORLD, DIM)


def test_unknown_policy_lists_the_known_names():
    with pytest.raises(PolicyError, match="unknown policy 'Optimal'") as err:
        make_policy("Optimal", WORLD, DIM)
    assert all(name in str(err.value) for name in (*REFERENCE, "rliv", "onnx", "python"))


def test_rliv_refuses_a_file_that_is_not_an_exported_scorer(tmp_path):
    path = tmp_path / "policy.pt"  # what SL-MGAC writes: a pickled spec and state dict
    torch.save({"spec": {}, "state_dict": {}}, path)
    with pytest.raises(PolicyError, match="not an exported RLIV-UA scorer"):
        make_policy(f"rliv:{path}", WORLD, DIM)


def test_rliv_refuses_a_scorer_of_another_state_width(tmp_path):
    path = export_rliv(tmp_path / "scorer.pt", DIM + 2)
    with pytest.raises(PolicyError, match=f"width {DIM + 2}, the world's are {DIM}"):
        make_policy(f"rliv:{path}", WORLD, DIM)


def test_rliv_accepts_its_folder_and_scores_the_grid(tmp_path):
    export_rliv(tmp_path / "scorer.pt", DIM)
    policy = make_policy(f"rliv:{tmp_path}", WORLD, DIM)
    scores = policy.q(np.arange(4), np.arange(4), np.zeros((4, DIM), np.float32))
    assert scores.shape == (4, N_ACTIONS) and np.isfinite(scores).all()
