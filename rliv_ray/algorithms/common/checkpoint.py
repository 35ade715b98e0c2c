"""Training checkpoints in our own format, read back without unpickling (never RLlib's).

    OUT/checkpoints/iter_NNNNNN/module.pt    the RLModule's state_dict (online and target nets)
    OUT/checkpoints/iter_NNNNNN/state.pt     the rest of the learner state and the counters:
        learner    RLlib ``Learner.get_state`` without its module and metrics: ``optimizer``
                   ({name: {"module_id", "state": optimizer.state_dict()}}), ``target_updates``
                   and whatever else our learners add
        rows       NUM_ENV_STEPS_SAMPLED_LIFETIME, the timesteps the learner is given
        rng        this process's torch, NumPy and Python RNG states; ``learner_rng``, one per
                   remote learner rank
    OUT/checkpoints/iter_NNNNNN/state.json   format, iteration, updates, metrics, the module
                   (class name, spaces, model_config), its fingerprint, the data's
                   fingerprint (:func:`data_fingerprint`), versions

Both ``.pt`` files hold only tensors and plain values (:mod:`rliv_ray.tensor_files`) and are
read with ``weights_only=True`` (:func:`read_state`, before Ray starts). Resuming builds the
algorithm afresh from its config, then sets the module weights, optimizer state and counters
through ``learner_group.set_state`` and the RNG states (:func:`apply_state`), and, on the same
data with at most one learner, moves the reader past the batches already trained on
(:meth:`~rliv_ray.algorithms.common.offline.TargetUpdatingLearner.resume_reader`): a resumed run
then updates exactly as the uninterrupted one, to the bit.
The module is rebuilt for export from ``state.json`` with a class of :func:`module_classes`
only: no class or function named by a file is ever imported.
"""

from __future__ import annotations

import hashlib
import json
import random
from pathlib import Path
from typing import Any

import numpy as np

from rliv_ray.tensor_files import DataFileError, load_tensors, save_tensors, to_json

FORMAT = "rliv-checkpoint/1"
MODULE_FILE, STATE_FILE, META_FILE = "module.pt", "state.pt", "state.json"
MODULE_ID = "default_policy"
SKIPPED = ("rl_module", "metrics_logger", "should_module_be_updated")
"""Learner-state keys not in state.pt: the module (module.pt), metrics, a config echo."""


def module_classes() -> dict[str, type]:
    """The RLModule classes a checkpoint may name: the only ones ever built from a file."""
    from rliv_ray.algorithms.rliv_ua.module import RLIVUAModule
    from rliv_ray.algorithms.sl_mgac.module import SLMGACModule
    from rliv_ray.algorithms.td3.module import TD3Module

    return {c.__name__: c for c in (RLIVUAModule, SLMGACModule, TD3Module)}


def module_description(config) -> dict[str, Any]:
    """What rebuilds the config's module: class name, spaces and model_config (JSON)."""
    obs, act = config.observation_space, config.action_space
    description = {"class": config.get_default_rl_module_spec().module_class.__name__,
                   "obs_dim": int(obs.shape[0]), "n_actions": int(act.n),
                   "model_config": config.model_config}
    return json.loads(to_json(description))  # tuples to lists, as read back


def fingerprint(description: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(description, sort_keys=True).encode()).hexdigest()[:16]


def data_fingerprint(files) -> str:
    """What tells the training data apart without reading it: each file's name, size and last
    4 KiB (a Parquet file's footer: its schema, row groups and statistics); a file that is not
    local (a URI) by its name only."""
    digest = hashlib.sha256()
    for file in files or ():
        path = Path(file)
        if not path.is_file():
            digest.update(f"{file}\0".encode())
            continue
        size = path.stat().st_size
        digest.update(f"{path.name}\0{size}\0".encode())
        with path.open("rb") as f:
            f.seek(max(0, size - 4096))
            digest.update(f.read())
    return digest.hexdigest()[:16]


def build_module(description: dict[str, Any]):
    """A fresh (not inference-only) module from :func:`module_description`'s dict."""
    import gymnasium as gym
    from ray.rllib.core.rl_module.rl_module import RLModuleSpec

    classes = module_classes()
    name = description.get("class")
    if name not in classes:
        raise DataFileError(f"module class {name!r} is not one of {sorted(classes)}")
    return RLModuleSpec(
        module_class=classes[name],
        observation_space=gym.spaces.Box(-np.inf, np.inf, (description["obs_dim"],), np.float32),
        action_space=gym.spaces.Discrete(description["n_actions"]),
        model_config=description["model_config"], inference_only=False).build()


# --- RNG states as tensors ---------------------------------------------------------------------

def rng_state() -> dict[str, Any]:
    """This process's torch, NumPy (global) and Python ``random`` states, as plain values."""
    import torch

    _, keys, pos, has_gauss, cached = np.random.get_state()  # noqa: NPY002 - global RNG
    version, internal, gauss = random.getstate()
    return {"torch": torch.get_rng_state(), "numpy_keys": torch.from_numpy(keys.astype(np.int64)),
            "numpy_pos": int(pos), "numpy_has_gauss": int(has_gauss),
            "numpy_cached": float(cached), "python_version": int(version),
            "python": torch.tensor(internal, dtype=torch.int64), "python_gauss": gauss}


def set_rng_state(state: dict[str, Any]) -> None:
    import torch

    torch.set_rng_state(state["torch"])
    np.random.set_state(("MT19937", state["numpy_keys"].numpy().astype(np.uint32),  # noqa: NPY002
                         state["numpy_pos"], state["numpy_has_gauss"], state["numpy_cached"]))
    random.setstate((state["python_version"], tuple(int(x) for x in state["python"].tolist()),
                     state["python_gauss"]))


def _rank() -> int:
    import torch.distributed as dist

    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def _learner_rng(learner) -> tuple[int, dict]:
    return _rank(), rng_state()


def _module_keys(learner) -> list[str]:
    return list(learner.module[MODULE_ID].unwrapped().state_dict())  # without DDP's prefix


def _set_learner_rng(learner, states: dict) -> None:
    if _rank() in states:
        set_rng_state(states[_rank()])


# --- save and restore --------------------------------------------------------------------------

def _plain(value):
    """NumPy arrays and scalars to tensors and Python numbers, recursively."""
    import torch

    if isinstance(value, np.ndarray):  # a read-only array (from Ray's object store) is copied
        writable = value.flags.writeable and value.flags.c_contiguous
        return torch.from_numpy(value if writable else np.array(value, order="C"))
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(_plain(v) for v in value)
    return value


def split_learner_state(learner: dict[str, Any]) -> tuple[dict, dict]:
    """A ``Learner.get_state()`` as (module weights, the rest), plain values only (NumPy to
    tensors), without the metrics logger: what ``module.pt`` and ``state.pt`` hold."""
    module = _plain(dict(learner["rl_module"][MODULE_ID]))
    return module, _plain({k: v for k, v in learner.items() if k not in SKIPPED})


def join_learner_state(module: dict, rest: dict) -> dict[str, Any]:
    """The inverse of :func:`split_learner_state`: a state for ``Learner.set_state``."""
    return {**rest, "rl_module": {MODULE_ID: module}}


def write_module(module, path: Path, description: dict[str, Any]) -> None:
    """``module.pt`` and the module part of ``state.json`` (enough for :func:`load_module`)."""
    path.mkdir(parents=True, exist_ok=True)
    save_tensors(_plain(dict(module.state_dict())), path / MODULE_FILE)
    meta = {"format": FORMAT, "module": description, "fingerprint": fingerprint(description)}
    (path / META_FILE).write_text(to_json(meta, indent=2) + "\n")


def save_state(algo, path: Path, config) -> dict[str, Any]:
    """Write ``module.pt`` and ``state.pt`` of ``algo`` into ``path``; return the fields that
    ``state.json`` adds (the caller writes it with the iteration and metrics)."""
    import ray
    import torch
    from ray.rllib.utils.metrics import NUM_ENV_STEPS_SAMPLED_LIFETIME

    group = algo.learner_group
    module, rest = split_learner_state(
        group.get_state(not_components=["learner/metrics_logger"])["learner"])
    description = module_description(config)
    path.mkdir(parents=True, exist_ok=True)
    save_tensors(module, path / MODULE_FILE)
    learner_rng = {} if group.is_local else dict(
        r.get() for r in group.foreach_learner(_learner_rng))
    state = {"learner": rest,
             "rows": int(algo.metrics.peek(NUM_ENV_STEPS_SAMPLED_LIFETIME, default=0)),
             "rng": rng_state(), "learner_rng": learner_rng}
    save_tensors(state, path / STATE_FILE)
    return {"format": FORMAT, "module": description, "fingerprint": fingerprint(description),
            "data": data_fingerprint(_input_files(config)),
            "versions": {"ray": ray.__version__, "torch": torch.__version__,
                         "rliv_ray": _version()}}


def _input_files(config) -> list[str]:
    files = config.input_
    return [files] if isinstance(files, str | Path) else list(files or [])


def _version() -> str:
    from rliv_ray import __version__

    return __version__


def read_meta(checkpoint: str | Path) -> dict[str, Any]:
    """``state.json`` of a checkpoint; DataFileError if it is not one of ours."""
    file = Path(checkpoint) / META_FILE
    if not file.exists():
        old = (Path(checkpoint) / "algorithm_state.pkl").exists()
        raise DataFileError(
            f"{checkpoint}: " + ("an RLlib checkpoint of an earlier rliv-ray, which is not read "
                                 "(its pickles could run code): train again with --overwrite"
                                 if old else f"not a training checkpoint (no {META_FILE})"))
    try:
        meta = json.loads(file.read_text())
        if meta.get("format") != FORMAT or not isinstance(meta.get("module"), dict):
            raise ValueError(f"format {meta.get('format')!r} is not {FORMAT!r}")
    except (ValueError, AttributeError) as err:
        raise DataFileError(f"{file}: not a checkpoint's metadata ({err})") from err
    return meta


def read_state(checkpoint: Path, config) -> dict[str, Any]:
    """A checkpoint's module weights and training state (read before Ray starts, so that a bad
    file fails at once): DataFileError if they are not ours, ValueError if the checkpoint's
    module differs from the one ``config`` builds."""
    meta = check_checkpoint(checkpoint, config)
    module = load_tensors(checkpoint / MODULE_FILE, "a checkpoint's module weights")
    state = load_tensors(checkpoint / STATE_FILE, "a checkpoint's training state")
    if not isinstance(module, dict) or not isinstance(state, dict):
        raise DataFileError(f"{checkpoint}: its state files do not hold dicts")
    return {"module": module, "state": state, "checkpoint": str(checkpoint), "meta": meta}


def check_checkpoint(checkpoint: Path, config) -> dict[str, Any]:
    """DataFileError unless ``checkpoint`` is one of ours of the algorithm ``config`` trains;
    ValueError if its network differs from the one ``config`` builds (other settings). Its
    metadata (:func:`read_meta`) if it is."""
    meta = read_meta(checkpoint)
    description = module_description(config)
    if meta["module"].get("class") != description["class"]:
        raise DataFileError(f"{checkpoint}: a checkpoint of another algorithm (its module is "
                            f"{meta['module'].get('class')}, this run trains "
                            f"{description['class']}): give another --out, or --overwrite")
    if meta.get("fingerprint") != fingerprint(description):
        theirs, ours = meta["module"].get("model_config", {}), description["model_config"]
        fields = sorted(k for k in {*theirs, *ours} if theirs.get(k) != ours.get(k))
        raise ValueError(f"{checkpoint} was trained with another network than these settings "
                         f"(differing: {fields or 'spaces or class'}); resume with the same "
                         "settings, or --overwrite to start again")
    return meta


def _resume_reader(learner) -> int:
    return learner.resume_reader()


def apply_state(algo, saved: dict[str, Any]) -> None:
    """Set ``algo`` (built afresh from the config) to a :func:`read_state`: module weights,
    optimizer state and learner counters through ``learner_group.set_state``, the sampled-rows
    counter, and the RNG states of this process and of each remote learner. On the data the
    checkpoint was trained on, with at most one learner, the reader goes on where it was."""
    from ray.rllib.utils.metrics import NUM_ENV_STEPS_SAMPLED_LIFETIME

    module, state = saved["module"], saved["state"]
    group = algo.learner_group
    expected = set(next(iter(group.foreach_learner(_module_keys))).get())
    if set(module) != expected:  # RLlib's set_state would skip what is missing
        raise DataFileError(f"{saved['checkpoint']}: its module weights do not fit this "
                            f"module (missing {sorted(expected - set(module))[:5]}, unexpected "
                            f"{sorted(set(module) - expected)[:5]})")
    try:
        group.set_state({"learner": join_learner_state(module, state["learner"])})
        algo.metrics.log_value(NUM_ENV_STEPS_SAMPLED_LIFETIME, int(state["rows"]),
                               reduce="lifetime_sum")
        if not group.is_local:
            group.foreach_learner(_set_learner_rng, states=state["learner_rng"])
        set_rng_state(state["rng"])
        same_data = saved.get("meta", {}).get("data") == data_fingerprint(
            _input_files(algo.config))
        if same_data and algo.config.num_learners <= 1:  # several: a streaming split
            group.foreach_learner(_resume_reader)
    except (KeyError, TypeError, ValueError, RuntimeError) as err:
        raise DataFileError(f"{saved['checkpoint']}: its training state does not fit this "
                            f"algorithm ({type(err).__name__}: "
                            f"{str(err).splitlines()[0][:200]})") from err


def load_module(checkpoint: str | Path):
    """The trained RLModule of a checkpoint, without Ray or an Algorithm: built from
    ``state.json`` (a class of :func:`module_classes`), weights from ``module.pt``."""
    checkpoint = Path(checkpoint)
    meta = read_meta(checkpoint)
    import torch

    try:
        with torch.random.fork_rng(devices=[]):  # building draws initial weights: no side effect
            module = build_module(meta["module"])
    except (KeyError, TypeError, ValueError) as err:
        raise DataFileError(f"{checkpoint}: its module cannot be rebuilt ({err})") from err
    weights = load_tensors(checkpoint / MODULE_FILE, "a checkpoint's module weights")
    try:
        module.load_state_dict(weights, strict=True)
    except (RuntimeError, TypeError, AttributeError) as err:
        raise DataFileError(f"{checkpoint}: its weights do not fit its module "
                            f"({str(err).splitlines()[0][:200]})") from err
    return module
