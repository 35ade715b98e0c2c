"""Target policies of `rliv ope` on a live-stream allocation log, from one spec string.

Every target gives, per logged request, its distribution over the request's two actions
(0: no live stream injected, 1: inject), (n, 2). Where no live stream is on air
(``live_id = -1``) the world forces a = 0 for every policy, so the target's P(a = 1) is 0
there (as in :func:`rliv_ray.ope.ncis.evaluate_policy_ncis`). A spec is one of

    RUN                  a `rliv train sl-mgac` output (its policy.pt; its train.json gives the
                         reward scale of a w/o-DD reward model)
    FILE.pt              a policy.pt written by `rliv train sl-mgac` (tensors + JSON: loaded
                         with ``weights_only=True``, no code is unpickled)
    CHECKPOINT           a checkpoint of such a run (``RUN/checkpoints/iter_N``: tensors +
                         JSON, no code unpickled); the group edges come from the samples named
                         in RUN/train.json
    torchscript:FILE     forward(user_features (B, U) float32, live_features (B, L) float32)
                         -> (B, 2) probabilities of (no inject, inject); ``torch.jit.load``
                         runs no Python code of the file
    onnx:FILE            the same contract as ONNX, inputs in that order (onnxruntime)
    python:MODULE:FUNC   FUNC(obs) -> (B, 2), obs the log's columns as NumPy arrays
                         (``observation_from_log``). This imports and runs MODULE: user code
                         by design, as trusted as any script you run

SL-MGAC policies (and every Table 1-2 baseline trained by `rliv train sl-mgac`) act by Eq. 16:
greedy on the method's P(a = 1 | s) with exploration ``epsilon`` (``NetworkPolicy``), or the
method's probability itself with ``greedy=False``. Their reward model for DM/DR is the
policy's own reward-prediction network R_psi (Eq. 10), averaged over the critics:
q(s, 1) = T_hat^l(s) - beta T_hat^v(s) / n, q(s, 0) = 0 (Eq. 5: no reward without an
inject). Methods without one (w/o SL, L2R, DQN, BC, ...) or whose R_psi reads the logged bin
(``bin_source="logged"``, an outcome) have none: DM/DR are skipped with a line saying so.

RLIV-UA scorers are refused with one line: they choose a ranking weight per exposed candidate
of a user-author log (another action space), and per-row OPE on those exposure-selected logs
is biased for every target but the logging policy (``estimators.py``).
"""

from __future__ import annotations

import functools
import importlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from rliv_ray import schema as S
from rliv_ray.algorithms.common.checkpoint import META_FILE as CHECKPOINT_META

__all__ = ["NetworkTarget", "OPEInputError", "TargetSpec", "load_target", "reward_model_note"]

N_ACTIONS = 2
POLICY_FILE = "policy.pt"
SCORER_FILE = "scorer.pt"
CHUNK_ROWS = 8192
"""Rows per reward-model forward call."""


class OPEInputError(ValueError):
    """The log or the policy cannot be evaluated (invalid input: exit status 1)."""


@dataclass(frozen=True)
class TargetSpec:
    """What to evaluate; hashable and picklable, so Ray tasks rebuild the target themselves."""

    spec: str
    epsilon: float = 0.2
    """Eq. 16's exploration of trained SL-MGAC policies (0.2: the paper's)."""
    greedy: bool = True
    """Trained policies: greedy on their P(a = 1 | s) (Eq. 16), else that probability."""

    def __post_init__(self):
        if not 0.0 <= self.epsilon <= 1.0:
            raise ValueError(f"epsilon must be in [0, 1], got {self.epsilon}")


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def _refuse_rliv_ua(where: str, n_actions: int | str = "several") -> OPEInputError:
    return OPEInputError(
        f"{where} is an RLIV-UA scorer: it picks one of {n_actions} ranking weights for each "
        f"exposed candidate of a user-author log, not whether to inject a live stream into a "
        f"request (2 actions): a policy over another action space; and per-row OPE on "
        f"RLIV-UA's exposure-selected logs is biased for every target but the logging policy "
        f"(README, 'RLIV-UA's exposure-selected logs')")


def reward_model_note(spec, method: str, reward_scale: float | None) -> str | None:
    """Why a trained network of ``method`` (its SLMGACSpec, or a config with the same fields)
    has no usable reward model for DM/DR, or None when it has one."""
    if not spec.supervised_split:
        return (f"{method} has no reward model (its critics predict Q, the "
                "discounted return, not the one-step reward)")
    if spec.discretise and spec.bin_source == "logged":
        return ("its reward model reads the logged watch-time bin (bin_source='logged'), "
                "an outcome, so it cannot predict the reward of an action not taken")
    if not spec.discretise and reward_scale is None:
        return ("its reward model predicts reward_scale x seconds and a bare policy file "
                "does not record reward_scale (give the run directory)")
    return None


class NetworkTarget:
    """A trained SL-MGAC-shaped network (any method of Tables 1-2) as the target."""

    def __init__(self, trained, *, epsilon: float, greedy: bool, label: str,
                 reward_scale: float | None = None):
        from rliv_ray.algorithms.sl_mgac.baselines import method
        from rliv_ray.ope.evaluate import NetworkPolicy

        self.net, self.edges, self.method = trained.net, trained.edges, trained.method
        self.policy = NetworkPolicy(self.net, self.edges, epsilon=epsilon, greedy=greedy,
                                    probability=method(self.method).probability)
        rule = f"greedy, epsilon {epsilon:g}" if greedy else "its own probabilities"
        self.label = f"{label} ({self.method}; {rule})"
        self.reward_scale = reward_scale
        self.reward_note = self._reward_note()

    def _reward_note(self) -> str | None:
        return reward_model_note(self.net.spec, self.method, self.reward_scale)

    def check_widths(self, user_dim: int, live_dim: int) -> None:
        spec = self.net.spec
        for name, want, have in ((S.USER_FEATURES, spec.user_dim, user_dim),
                                 (S.LIVE_FEATURES, spec.live_dim, live_dim)):
            if want != have:
                raise OPEInputError(f"the policy reads {name} of width {want}, this log's are "
                                    f"{have} wide: a log of another world (or feature set)")

    def probabilities(self, obs: dict[str, np.ndarray]) -> np.ndarray:
        self.policy.reset_sessions()  # a batch holds whole users: their sessions start here
        p = self.policy.inject_probability(obs)
        return np.stack([1.0 - p, p], axis=1)

    def reward_model(self, obs: dict[str, np.ndarray], n_videos: np.ndarray,
                     beta: float) -> np.ndarray:
        """q_hat (n, 2): [0, T_hat^l - beta T_hat^v / n] from R_psi, mean over the critics."""
        import torch

        from rliv_ray.algorithms.sl_mgac.objective import forward_state
        from rliv_ray.data.live_samples import SessionClock
        from rliv_ray.ope.evaluate import batch_from_observation, observed_session_state

        spec = self.net.spec
        if spec.session_state:
            obs = {**obs, **observed_session_state(obs, SessionClock())}
        n = len(n_videos)
        live, video = np.zeros(n), np.zeros(n)
        with torch.no_grad():
            for lo in range(0, n, CHUNK_ROWS):
                part = {k: v[lo:lo + CHUNK_ROWS] for k, v in obs.items()}
                out = forward_state(self.net, batch_from_observation(part, self.edges),
                                    actor=False, critics=True)
                live[lo:lo + CHUNK_ROWS] = out.live.predicted_seconds(spec.live_bins).mean(0)
                video[lo:lo + CHUNK_ROWS] = out.video.predicted_seconds(spec.video_bins).mean(0)
        if not spec.discretise:
            live, video = live / self.reward_scale, video / self.reward_scale
        per_video = video if spec.video_time == "per_video" else video / np.maximum(n_videos, 1)
        return np.stack([np.zeros(n), live - beta * per_video], axis=1)


class ExternalTarget:
    """A foreign model: ``fn(obs) -> (B, 2)``, checked on every batch."""

    reward_note = "an external policy brings no reward model"

    def __init__(self, label: str, fn: Callable[[dict[str, np.ndarray]], np.ndarray]):
        self.label, self.fn = label, fn

    def check_widths(self, user_dim: int, live_dim: int) -> None:
        """Nothing to check up front: the model itself meets the widths on the first block,
        and a mismatch fails there with both widths named."""

    def probabilities(self, obs: dict[str, np.ndarray]) -> np.ndarray:
        n = len(obs[S.LIVE_ID])
        try:
            out = np.asarray(self.fn(obs), dtype=np.float64)
        except Exception as err:  # noqa: BLE001 - any failure of a foreign model is its input's
            u, v = obs[S.USER_FEATURES].shape[1], obs[S.LIVE_FEATURES].shape[1]
            raise OPEInputError(f"{self.label} fails on this log's requests ({S.USER_FEATURES} "
                                f"width {u}, {S.LIVE_FEATURES} width {v}): "
                                f"{_first_line(err)}") from err
        if out.ndim != 2 or out.shape[0] != n:
            raise OPEInputError(f"{self.label} returns shape {out.shape} for {n} requests; "
                                f"expected ({n}, 2): P(no inject), P(inject) per request")
        if out.shape[1] != N_ACTIONS:
            raise OPEInputError(f"{self.label} returns {out.shape[1]} probabilities per request: "
                                "a policy over another action space (a live-stream log's "
                                "decision has 2 actions: no inject, inject)")
        no_live = np.asarray(obs[S.LIVE_ID]) == S.NO_LIVE
        out[no_live] = (1.0, 0.0)
        return out

    def reward_model(self, obs, n_videos, beta):  # never called: reward_note is set
        raise NotImplementedError


def _torchscript(target: str) -> ExternalTarget:
    import torch

    from rliv_ray.serving_torchscript import META_FILE

    extra = {META_FILE: ""}
    try:
        module = torch.jit.load(target, map_location="cpu", _extra_files=extra).eval()
    except (RuntimeError, ValueError, FileNotFoundError) as err:
        raise OPEInputError(f"torchscript:{target}: cannot load a TorchScript model "
                            f"({_first_line(err)})") from err
    if extra[META_FILE]:
        meta = json.loads(extra[META_FILE])
        raise _refuse_rliv_ua(f"torchscript:{target}", meta.get("n_actions", "several"))

    def fn(obs):
        with torch.inference_mode():
            return module(torch.as_tensor(obs[S.USER_FEATURES], dtype=torch.float32),
                          torch.as_tensor(obs[S.LIVE_FEATURES], dtype=torch.float32)).numpy()

    return ExternalTarget(f"torchscript:{target}", fn)


def _onnx(target: str) -> ExternalTarget:
    try:
        import onnxruntime
    except ImportError as err:
        raise OPEInputError("onnx policies need onnxruntime: pip install onnxruntime") from err
    try:
        session = onnxruntime.InferenceSession(target, providers=["CPUExecutionProvider"])
    except Exception as err:  # noqa: BLE001 - onnxruntime raises its own exception types
        raise OPEInputError(f"onnx:{target}: cannot load ({_first_line(err)})") from err
    names = [i.name for i in session.get_inputs()]
    if len(names) != 2:
        raise OPEInputError(f"onnx:{target}: the model takes {len(names)} inputs; expected 2 "
                            f"({S.USER_FEATURES}, {S.LIVE_FEATURES})")

    def fn(obs):
        feeds = {name: np.ascontiguousarray(obs[column], np.float32)
                 for name, column in zip(names, (S.USER_FEATURES, S.LIVE_FEATURES),
                                         strict=True)}
        return session.run(None, feeds)[0]

    return ExternalTarget(f"onnx:{target}", fn)


def _python(target: str) -> ExternalTarget:
    module_name, _, func = target.rpartition(":")
    try:
        fn = getattr(importlib.import_module(module_name), func)
    except (ImportError, AttributeError, ValueError) as err:
        raise OPEInputError(f"python:{target}: cannot import {func!r} from "
                            f"{module_name!r}") from err
    return ExternalTarget(f"python:{target}", fn)


def _run_of(path: Path) -> Path | None:
    """The training run directory (holding train.json) at or above ``path``."""
    for folder in (path, *path.parents):
        if (folder / "train.json").is_file():
            return folder
    return None


def _reward_scale(run: Path | None) -> float | None:
    if run is None:
        return None
    return json.loads((run / "train.json").read_text()).get("config", {}).get("reward_scale")


def _from_checkpoint(path: Path):
    """TrainedPolicy of a training checkpoint, with the edges of the run's samples."""
    from rliv_ray.algorithms.common.driver import load_module
    from rliv_ray.algorithms.sl_mgac.train import TrainedPolicy
    from rliv_ray.data.io import read_manifest

    run = _run_of(path)
    samples = json.loads((run / "train.json").read_text()).get("samples") if run else None
    manifest = read_manifest(samples) if samples else {}
    if "edges" not in manifest:
        raise OPEInputError(f"{path}: a checkpoint, but its run's train.json does not "
                            "lead to the samples' group edges (give RUN/policy.pt instead)")
    module = load_module(path)
    return TrainedPolicy(module.net.eval(), np.asarray(manifest["edges"], np.float64),
                         module.model_config["method"])


def _trained(spec: TargetSpec, path: Path) -> NetworkTarget:
    from rliv_ray.algorithms.sl_mgac.train import load_policy

    if path.is_dir() and (path / CHECKPOINT_META).is_file():
        trained, run = _from_checkpoint(path), _run_of(path)
    elif path.is_dir():
        if not (path / POLICY_FILE).is_file():
            if (path / SCORER_FILE).is_file():
                raise _refuse_rliv_ua(str(path))
            raise OPEInputError(f"{path}: no {POLICY_FILE} (a `rliv train sl-mgac` output) and "
                                "not a training checkpoint")
        trained, run = load_policy(path / POLICY_FILE), path
    else:
        try:
            trained = load_policy(path)
        except ValueError as err:
            _refuse_if_scorer(path)
            raise OPEInputError(str(err)) from err
        run = path.parent if (path.parent / "train.json").is_file() else None
    return NetworkTarget(trained, epsilon=spec.epsilon, greedy=spec.greedy, label=str(path),
                         reward_scale=_reward_scale(run))


def _refuse_if_scorer(path: Path) -> None:
    from rliv_ray.serving import read_meta

    try:
        _, meta = read_meta(path)
    except (ValueError, RuntimeError, KeyError):
        return
    raise _refuse_rliv_ua(str(path), meta.get("n_actions", "several"))


@functools.lru_cache(maxsize=2)
def load_target(spec: TargetSpec) -> NetworkTarget | ExternalTarget:
    """The target a spec names (module docstring), loaded once per process; OPEInputError or
    FileNotFoundError with one line when it cannot be."""
    kind, sep, rest = spec.spec.partition(":")
    loaders = {"torchscript": _torchscript, "onnx": _onnx, "python": _python}
    if sep and kind == "rliv":
        raise _refuse_rliv_ua(spec.spec)
    if sep and kind in loaders:
        if not rest:
            raise OPEInputError(f"policy {spec.spec!r} names no file or function")
        return loaders[kind](rest)
    path = Path(spec.spec)
    if not path.exists():
        raise FileNotFoundError(f"--policy {spec.spec}: no such file or directory (a run, a "
                                "policy.pt, a checkpoint, or torchscript:/onnx:/python:)")
    return _trained(spec, path)
