"""Train/test split of a log by user (SL-MGAC section 4.1: 4:1 by user, EQUATIONS.md 1.19).

A user goes to the test set iff a hash of their id, read as a number u in [0, 1), is below
``test_share``. The hash is :func:`~rliv_ray.data.io.mix64` salted with ``seed`` and a fixed
split stream, so the split depends on the user id alone: it is the same in every file, bucket
and run, and independent of the file bucketing (:func:`~rliv_ray.data.io.user_bucket`).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa

from rliv_ray import schema as S
from rliv_ray.data.io import mix64

__all__ = ["DEFAULT_TEST_SHARE", "split_table", "split_users"]

DEFAULT_TEST_SHARE = 0.2
"""Train:test = 4:1 by user (SL-MGAC section 4.1)."""
_SPLIT_STREAM = 0x5B1D  # salt: keeps the split independent of user_bucket's unsalted hash


def split_users(user_ids, *, test_share: float = DEFAULT_TEST_SHARE,
                seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(train_mask, test_mask), bool arrays of the shape of ``user_ids`` (integer ids)."""
    if not 0 < test_share < 1:
        raise ValueError(f"test_share must be in (0, 1), got {test_share}")
    ids = np.asarray(user_ids)
    if not np.issubdtype(ids.dtype, np.integer):
        raise ValueError(f"user_ids must be integers, got dtype {ids.dtype}")
    if seed < 0:
        raise ValueError(f"seed must be >= 0, got {seed}")
    bits = mix64(ids, _SPLIT_STREAM + seed) >> np.uint64(11)  # 53 uniform bits
    test = bits.astype(np.float64) * 2.0**-53 < test_share
    return ~test, test


def split_table(table: pa.Table | pd.DataFrame, *, test_share: float = DEFAULT_TEST_SHARE,
                seed: int = 0) -> tuple[pa.Table | pd.DataFrame, pa.Table | pd.DataFrame]:
    """(train, test) rows of a log table (Arrow or pandas) by :func:`split_users` on USER_ID."""
    users = (table[S.USER_ID].to_numpy() if isinstance(table, pa.Table)
             else np.asarray(table[S.USER_ID]))
    train, test = split_users(users, test_share=test_share, seed=seed)
    if isinstance(table, pa.Table):
        return table.filter(pa.array(train)), table.filter(pa.array(test))
    return table[train], table[test]
