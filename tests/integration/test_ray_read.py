"""The generated log is what Ray Data's Parquet reader expects (ray tier)."""

import numpy as np
import pyarrow as pa
import pytest

from rliv_ray import schema as S
from rliv_ray.data import io
from rliv_ray.data.ua_config import UAWorldConfig
from rliv_ray.data.ua_generate import generate_ua_world
from rliv_ray.data.ua_population import USER_FEATURE_NAMES

pytestmark = pytest.mark.ray


def test_ray_data_reads_the_bucketed_log(local_ray, tmp_path):
    config = UAWorldConfig(n_users=40, n_authors=200, days=3, seed=1)
    manifest = generate_ua_world(tmp_path / "w", config, n_files=2, progress=False)
    ds = local_ray.data.read_parquet(str(tmp_path / "w" / io.LOG_DIR))
    assert ds.count() == manifest["rows"]
    batch = next(iter(ds.iter_batches(batch_size=256, batch_format="pyarrow")))
    features = batch[S.USER_FEATURES]
    assert pa.types.is_fixed_size_list(features.type)
    assert features.type.list_size == len(USER_FEATURE_NAMES)
    flat = features.combine_chunks().flatten().to_numpy()
    assert flat.reshape(-1, len(USER_FEATURE_NAMES)).shape[0] == batch.num_rows
    assert np.isfinite(flat).all()
    labels = ds.select_columns([S.CLICK]).sum(S.CLICK)
    assert labels > 0
