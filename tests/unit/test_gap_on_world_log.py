"""Delta on a real log: the gap features of the built states against a plain loop.

The synthetic world's log (rliv_ray/data/ua_generate.py) goes through ``samples.prepare``, as
``rliv build-samples`` does. Delta of an interaction is the number of the user's own requests
since the pair's interaction in an earlier request, 0 for a first contact (EQUATIONS 2.1(i));
here it is recomputed by walking each user's rows in ``user_request_idx`` order.
"""

import itertools
from collections import defaultdict

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from rliv_ray import schema as S
from rliv_ray.algorithms.rliv_ua.network import NetworkSpec, RLIVUANetwork
from rliv_ray.data import io
from rliv_ray.data.ua_config import UAWorldConfig
from rliv_ray.data.ua_generate import generate_ua_world
from rliv_ray.mdp import samples as SM
from rliv_ray.mdp.state import StateLayout, gap_bucket

WORLD = UAWorldConfig(n_users=12, n_authors=100, days=3, exposures_per_request=3, seed=5)
"""Several exposures per request, so the user's requests and log rows differ."""


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    out = tmp_path_factory.mktemp("world") / "ua"
    generate_ua_world(out, WORLD, n_files=1, progress=False)
    table = pq.read_table(out / io.LOG_DIR)
    return SM.prepare(table, SM.SampleConfig()), StateLayout.from_schema(table.schema)


def loop_gaps(user, author, request) -> np.ndarray:
    """Delta per row: each user's rows in request order, remembering per author the request of
    the pair's last interaction (a pair seen twice in one request counts its earlier request)."""
    gaps = np.zeros(len(user), dtype=np.int64)
    rows_of = defaultdict(list)
    for row, u in enumerate(user):
        rows_of[u].append(row)
    for rows in rows_of.values():
        last: dict[int, int] = {}
        rows.sort(key=lambda row: request[row])
        for req, group in itertools.groupby(rows, key=lambda row: request[row]):
            group = list(group)
            for row in group:
                gaps[row] = req - last[author[row]] if author[row] in last else 0
            for row in group:
                last[author[row]] = req
    return gaps


def test_state_gap_features_match_a_plain_loop(prepared):
    prep, layout = prepared
    table = prep.table
    expected = loop_gaps(table[S.USER_ID].to_pylist(), table[S.AUTHOR_ID].to_pylist(),
                         table[S.USER_REQUEST_IDX].to_pylist())
    assert (expected == 0).any() and (expected > 1).any()  # first contacts and longer gaps

    log1p_gap, first = prep.states[:, layout.gap].T
    np.testing.assert_array_equal(prep.gap, expected)
    np.testing.assert_array_equal(np.rint(np.expm1(log1p_gap.astype(np.float64))), expected)
    np.testing.assert_array_equal(first, (expected == 0).astype(np.float32))

    # the network's gap bucket, read back from the state, is the bucket of that Delta
    spec = NetworkSpec(state_dim=layout.dim, gap_index=layout.gap.start, n_actions=5,
                       id_buckets=8)
    buckets = RLIVUANetwork(spec).gap_bucket(torch.from_numpy(prep.states)).numpy()
    np.testing.assert_array_equal(buckets, gap_bucket(expected, spec.max_gap_bucket))
