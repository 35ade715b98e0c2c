"""Real-data path: KuaiRand CSV -> converted log -> RL samples (no gift, no propensities)."""

import json

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from rliv_ray import schema as S
from rliv_ray.data.kuairand import convert_kuairand
from rliv_ray.mdp.asa import ASAConfig
from rliv_ray.mdp.pipeline import build_samples
from rliv_ray.mdp.samples import META_ABSENT_REWARDS, SampleConfig
from tests.unit.test_kuairand import CSV_HEADER, LOG_NAME, USERS, VIDEOS, _row


def test_converted_kuairand_builds_samples(tmp_path, kuairand_pure_dir):
    rng = np.random.default_rng(3)
    users = pd.read_csv(kuairand_pure_dir / USERS, usecols=["user_id"]).user_id.to_numpy()[:20]
    videos = pd.read_csv(kuairand_pure_dir / VIDEOS, usecols=["video_id", "author_id"])
    few_authors = videos[videos.author_id.isin(videos.author_id.unique()[:6])].video_id
    rows = [_row(int(u), int(rng.choice(few_authors)), 1_649_412_000_000 + 60_000 * k,
                 click=int(rng.random() < 0.3), long_view=int(rng.random() < 0.2))
            for u in users for k in range(30)]
    src = tmp_path / "src"
    src.mkdir()
    for name in (USERS, VIDEOS):
        (src / name).symlink_to(kuairand_pure_dir / name)
    pd.DataFrame(rows, columns=CSV_HEADER).to_csv(src / LOG_NAME, index=False)
    convert_kuairand(src, tmp_path / "kr", n_buckets=2, progress=False)

    report = build_samples(tmp_path / "kr", tmp_path / "samples", config=SampleConfig(),
                           asa_config=ASAConfig(epochs=2), workers=0, progress=False)
    shards = pq.read_table(tmp_path / "samples" / "samples")
    assert shards.num_rows == len(rows)
    assert json.loads(shards.schema.metadata[META_ABSENT_REWARDS]) == [S.GIFT]
    assert (shards[S.reward_column(S.GIFT)].to_numpy() == 0).all()
    assert shards[S.reward_column(S.CLICK)].to_numpy().sum() > 0
    assert shards[S.RANK_SCORE].null_count == len(rows)  # KuaiRand logs no base rank score
    assert report["stitching"]["success_rate"] > 0.5  # 6 authors, 30 requests per user
