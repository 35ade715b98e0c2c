"""Write the synthetic live-stream world's allocation log as a bucketed Parquet dataset.

Users are split into files by a hash of their id (each file holds whole users) and simulated one
file at a time under the logging policy, so memory holds one bucket, never the whole log. Each
bucket has its own random stream derived from ``(seed, bucket)``: the output is deterministic by
seed. Rows of a file are sorted by user, then time.
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from rliv_ray import schema as S
from rliv_ray.data import io
from rliv_ray.data.live_config import LiveWorldConfig
from rliv_ray.data.live_policies import logging_policy
from rliv_ray.data.live_world import (
    LIVE_FEATURE_NAMES,
    USER_FEATURE_NAMES,
    LivePopulation,
    LiveSimulation,
    simulate_live_users,
)
from rliv_ray.progress import Progress

SOURCE = "synthetic-live"
ROWS_PER_FILE = 200_000
"""Target rows per bucket file (a bucket's columns are held in memory while it is simulated)."""
_BUCKET_STREAM = 1


def live_log_schema_for_world(config: LiveWorldConfig) -> pa.Schema:
    return S.live_log_schema(list(USER_FEATURE_NAMES), list(LIVE_FEATURE_NAMES),
                             history_length=config.history_length, source=SOURCE)


def expected_rows(config: LiveWorldConfig) -> int:
    """A rough count of requests (sessions times 1 / quit_rate), to size the buckets."""
    per_session = min(1.0 / config.quit_rate, config.max_session_requests)
    return math.ceil(config.n_users * config.days * config.sessions_per_day * per_session)


def generate_live_world(out: str | Path, config: LiveWorldConfig, *, n_files: int | None = None,
                        overwrite: bool = False, progress: bool = True) -> dict:
    """Simulate every user under the logging policy; write ``out/log/`` and the manifest.

    ``n_files`` user buckets (default: about :data:`ROWS_PER_FILE` rows each); returns the
    manifest (config, rows, users, files, injection and live-supply shares).
    """
    expected = expected_rows(config)
    n_files = n_files if n_files is not None else max(1, math.ceil(expected / ROWS_PER_FILE))
    if n_files < 1:
        raise ValueError(f"n_files must be >= 1, got {n_files}")
    started = time.perf_counter()
    pop = LivePopulation.build(config)
    buckets = io.user_bucket(np.arange(config.n_users), n_files)
    schema = live_log_schema_for_world(config)
    rows = users = injected = with_live = 0
    with io.atomic_output_dir(out, overwrite=overwrite) as tmp, \
            Progress(expected, "generate", unit="rows", enabled=progress) as bar:
        (tmp / io.LOG_DIR).mkdir()
        for bucket in range(n_files):
            members = np.flatnonzero(buckets == bucket)
            if len(members) == 0:
                continue
            path = tmp / io.LOG_DIR / io.part_name(bucket)
            n, n_injected, n_with_live = _write_bucket(config, pop, members, bucket, schema, path)
            rows, users = rows + n, users + len(members)
            injected, with_live = injected + n_injected, with_live + n_with_live
            bar.update(n)
        manifest = {
            "source": SOURCE,
            "world": config.to_dict(),
            "rows": rows,
            "users": users,
            "files": n_files,
            "injection_share": injected / max(rows, 1),
            "live_supply_share": with_live / max(rows, 1),
            "seconds": round(time.perf_counter() - started, 2),
        }
        io.write_manifest(tmp, manifest)
    return manifest


def _write_bucket(config: LiveWorldConfig, pop: LivePopulation, members: np.ndarray,
                  bucket: int, schema: pa.Schema, path: Path) -> tuple[int, int, int]:
    """Simulate one bucket's users and write its file; returns (rows, injected, with a live).

    A function of its own so the bucket's arrays are freed before the next bucket starts."""
    rng = np.random.default_rng(np.random.SeedSequence([config.seed, _BUCKET_STREAM, bucket]))
    result = simulate_live_users(config, pop, members, logging_policy(config), rng)
    cols = result.columns
    stats = result.rows, int(cols[S.ACTION].sum()), int((cols[S.LIVE_ID] >= 0).sum())
    pq.write_table(bucket_table(result, schema), path)
    return stats


def bucket_table(result: LiveSimulation, schema: pa.Schema) -> pa.Table:
    """The simulation's columns as a log table sorted by (user, request).

    Consumes ``result.columns`` (each column is dropped once converted, to bound memory)."""
    cols = result.columns
    order = np.lexsort((cols[S.USER_REQUEST_IDX], cols[S.USER_ID]))
    arrays = []
    for field in schema:
        value = cols.pop(field.name)[order]
        if pa.types.is_fixed_size_list(field.type) and field.type.value_type == pa.int32():
            arrays.append(S.ids_to_arrow(value))
        elif pa.types.is_fixed_size_list(field.type):
            arrays.append(S.vectors_to_arrow(value))
        else:
            arrays.append(pa.array(value, type=field.type))
    return pa.Table.from_arrays(arrays, schema=schema)
