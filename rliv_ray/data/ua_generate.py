"""Write the synthetic user-author world's interaction log as a bucketed Parquet dataset.

Users are split into files by a hash of their id (each file holds whole users, as industrial
log stores bucket them) and simulated one file at a time, so memory holds one bucket, never the
whole log. Each bucket has its own random stream, derived from ``(seed, bucket)``: the output is
deterministic by seed. The truth sidecar (``truth/``) is row-aligned with ``log/``.
"""

from __future__ import annotations

import dataclasses
import math
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from rliv_ray import schema as S
from rliv_ray.data import io
from rliv_ray.data.ua_config import UAWorldConfig
from rliv_ray.data.ua_policies import EpsilonLoggingPolicy
from rliv_ray.data.ua_population import AUTHOR_FEATURE_NAMES, USER_FEATURE_NAMES, Population
from rliv_ray.data.ua_truth import discounted_returns, next_in_group, pair_order
from rliv_ray.data.ua_world import SimulationResult, simulate_users
from rliv_ray.grouping import group_starts
from rliv_ray.progress import Progress

SOURCE = "synthetic-ua"
ROWS_PER_FILE = 500_000
PILOT_USERS = 200
TRUTH_GAMMA = 0.9  # discount of the truth sidecar's realised returns (RLIV-UA Table 3 gamma)
_BUCKET_STREAM, _PILOT_STREAM = 1, 2


def log_schema_for_world(config: UAWorldConfig) -> pa.Schema:
    return S.log_schema(list(USER_FEATURE_NAMES), list(AUTHOR_FEATURE_NAMES), source=SOURCE,
                        action_grid=config.action_grid.weights)


def logging_policy(config: UAWorldConfig) -> EpsilonLoggingPolicy:
    return EpsilonLoggingPolicy(config.action_grid, config.logging_epsilon,
                                config.logging_default_action)


def estimate_rows_per_user(config: UAWorldConfig) -> float:
    """Mean exposures per user under the logging policy, from a small pilot simulation."""
    pilot = dataclasses.replace(config, n_users=max(PILOT_USERS, config.n_user_groups))
    rng = np.random.default_rng(np.random.SeedSequence([config.seed, _PILOT_STREAM]))
    result = simulate_users(pilot, Population.build(pilot), np.arange(pilot.n_users),
                            logging_policy(pilot), rng)
    return result.rows / pilot.n_users


def config_for_rows(config: UAWorldConfig, rows: int) -> UAWorldConfig:
    """The config with enough users (10% spare) for ``rows`` exposures."""
    per_user = estimate_rows_per_user(config)
    return dataclasses.replace(config, n_users=max(1, math.ceil(1.1 * rows / per_user)))


def generate_ua_world(out: str | Path, config: UAWorldConfig, *, rows: int | None = None,
                      n_files: int | None = None, overwrite: bool = False,
                      progress: bool = True) -> dict:
    """Simulate the world under its logging policy and write ``out/{log,truth}/`` + manifest.

    With ``rows``, the number of users is derived from a pilot run (10% spare) and the log stops
    at exactly ``rows`` exposures, keeping whole users (see :func:`bucket_tables`); otherwise
    every one of ``config.n_users`` users lives through ``config.days`` days.
    """
    if rows is not None:
        if rows < 1:
            raise ValueError(f"rows must be >= 1, got {rows}")
        config = config_for_rows(config, rows)
    expected = rows or int(config.n_users * estimate_rows_per_user(config))
    n_files = n_files or max(1, math.ceil(expected / ROWS_PER_FILE))
    if n_files < 1:
        raise ValueError(f"n_files must be >= 1, got {n_files}")
    started = time.perf_counter()
    pop = Population.build(config)
    buckets = io.user_bucket(np.arange(config.n_users), n_files)
    written, label_sums, users_written = 0, dict.fromkeys(S.LABELS, 0), 0
    with io.atomic_output_dir(out, overwrite=overwrite) as tmp, \
            Progress(expected, "generate", unit="rows", enabled=progress) as bar:
        (tmp / io.LOG_DIR).mkdir()
        (tmp / io.TRUTH_DIR).mkdir()
        for bucket in range(n_files):
            budget = None if rows is None else rows - written
            if budget == 0:
                break
            rng = np.random.default_rng(np.random.SeedSequence([config.seed, _BUCKET_STREAM,
                                                                bucket]))
            users = np.flatnonzero(buckets == bucket)
            result = simulate_users(config, pop, users, logging_policy(config), rng)
            if result.rows == 0:
                continue
            log, truth = bucket_tables(config, result, budget)
            pq.write_table(log, tmp / io.LOG_DIR / io.part_name(bucket))
            pq.write_table(truth, tmp / io.TRUTH_DIR / io.part_name(bucket))
            written += log.num_rows
            users_written += len(np.unique(log[S.USER_ID].to_numpy()))
            for label in S.LABELS:
                label_sums[label] += int(np.sum(log[label].to_numpy()))
            bar.update(log.num_rows)
        manifest = {
            "source": SOURCE,
            "world": config.to_dict(),
            "rows": written,
            "users": users_written,
            "files": n_files,
            "truth_gamma": TRUTH_GAMMA,
            "label_rates": {k: v / max(written, 1) for k, v in label_sums.items()},
            "seconds": round(time.perf_counter() - started, 2),
        }
        io.write_manifest(tmp, manifest)
    return manifest


def bucket_tables(config: UAWorldConfig, result: SimulationResult,
                  budget: int | None) -> tuple[pa.Table, pa.Table]:
    """Sort by (user, request), add the truth, and keep at most ``budget`` rows.

    The budget keeps whole users in id order (the last one kept loses the tail of its history,
    cut at a request boundary), so a ``--rows`` log is made of complete lives, not of
    truncated ones.
    """
    cols = result.columns
    order = np.lexsort((cols[S.USER_REQUEST_IDX], cols[S.USER_ID]))
    cols = {key: value[order] for key, value in cols.items()}
    cols.update(_truth_columns(cols))
    if budget is not None and result.rows > budget:
        k = config.exposures_per_request
        keep = max(k, budget // k * k)
        cols = {key: value[:keep] for key, value in cols.items()}
    return _table(cols, log_schema_for_world(config)), _table(cols, S.truth_schema())


def _truth_columns(cols: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Next interaction and realised discounted returns along each pair's chain."""
    order = pair_order(cols[S.USER_ID], cols[S.AUTHOR_ID], cols[S.USER_REQUEST_IDX])
    starts = group_starts(cols[S.USER_ID][order], cols[S.AUTHOR_ID][order])
    out = {}
    nxt = next_in_group(cols[S.USER_REQUEST_IDX][order], starts)
    out[S.TRUE_NEXT_USER_REQUEST_IDX] = _unsort(nxt, order)
    for label in S.LABELS:
        ret = discounted_returns(cols[label][order], starts, TRUTH_GAMMA)
        out[S.true_return_column(label)] = _unsort(ret.astype(np.float32), order)
    return out



def _unsort(values: np.ndarray, order: np.ndarray) -> np.ndarray:
    out = np.empty_like(values)
    out[order] = values
    return out


def _table(cols: dict[str, np.ndarray], schema: pa.Schema) -> pa.Table:
    arrays = []
    for field in schema:
        value = cols[field.name]
        if pa.types.is_fixed_size_list(field.type):
            arrays.append(S.vectors_to_arrow(value))
        else:
            arrays.append(pa.array(value, type=field.type))
    return pa.Table.from_arrays(arrays, schema=schema)
