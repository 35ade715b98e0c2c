"""A trained scorer as one TorchScript file, for serving without rliv_ray (a deployment
artefact: rliv-ray never reads one back, since a TorchScript file holds code).

:func:`export_torchscript` traces the module that :func:`rliv_ray.serving.read_meta` rebuilds
(same signature, same scores) and stores the serving metadata (``format_version`` 2, the
fields of :func:`rliv_ray.serving.scorer_meta`) as the extra file ``rliv_meta.json``::

    import json, torch
    extra = {"rliv_meta.json": ""}
    module = torch.jit.load(path, map_location="cpu", _extra_files=extra)
    meta = json.loads(extra["rliv_meta.json"])
    with torch.inference_mode():
        q = module(user_ids, author_ids, states, torch.arange(len(meta["towers"])))

Load only files you made: ``torch.jit.load`` runs the code inside. ``torch.jit`` is deprecated
from torch 2.13 (it still works; ``torch.export`` is its successor).
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import torch
from torch import nn

from rliv_ray.actions import ActionGrid
from rliv_ray.serving import check_export, scorer_meta, scoring_module
from rliv_ray.tensor_files import to_json

TORCHSCRIPT_VERSION = 2
META_FILE = "rliv_meta.json"
TRACE_CANDIDATES = (7, 1, 13)
"""Candidate counts the export traces with (first) and checks the trace against (others)."""


def _trace_inputs(net: nn.Module, n_towers: int) -> list[tuple[torch.Tensor, ...]]:
    """Inputs to trace with (the first) and to check the trace against: other candidate
    counts and tower subsets, first contacts and repeat pairs, so every gap path runs."""
    tower_sets = (torch.arange(n_towers), torch.tensor([n_towers - 1]),
                  torch.arange(n_towers).flip(0))
    inputs = []
    for n, tower_index in zip(TRACE_CANDIDATES, tower_sets, strict=True):
        g = torch.Generator().manual_seed(n)
        state = torch.randn(n, net.spec.state_dim, generator=g)
        state[:, net.spec.gap_index] = torch.log1p(torch.arange(n, dtype=torch.float32))
        state[:, net.spec.gap_index + 1] = (torch.arange(n) == 0).float()
        inputs.append((torch.full((n,), 3, dtype=torch.int64), torch.arange(n) * 7919, state,
                       tower_index))
    return inputs


def export_torchscript(net: nn.Module, path: str | os.PathLike, *, gamma: float,
                       grid: ActionGrid, serving_tower: str, epsilon: float,
                       towers: tuple[str, ...] | None = None,
                       scoring: str = "tower_q") -> Path:
    """Write ``net``'s serving scores of ``towers`` (default: all) as one TorchScript file.

    The trace is checked against eager outputs at other candidate counts and tower subsets, so
    no shape is baked in; a ``TracerWarning`` is an error. Arguments as for
    :func:`rliv_ray.serving.export_scorer`."""
    towers = check_export(net, gamma=gamma, grid=grid, serving_tower=serving_tower,
                          epsilon=epsilon, towers=towers)
    module = scoring_module(scoring, net, gamma, towers)
    examples = _trace_inputs(net, len(towers))
    meta = scorer_meta(net, gamma=gamma, grid=grid, serving_tower=serving_tower,
                       epsilon=epsilon, towers=towers, version=TORCHSCRIPT_VERSION)
    was_training = net.training
    net.eval()
    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("error", torch.jit.TracerWarning)
            warnings.filterwarnings("ignore", message=r"`torch\.jit\.\w+` is deprecated",
                                    category=DeprecationWarning)
            traced = torch.jit.trace(module, examples[0], check_inputs=examples)
            path = Path(path)
            torch.jit.save(traced, str(path), _extra_files={META_FILE: to_json(meta)})
    finally:
        net.train(was_training)
    return path
