"""KuaiRand converter over the real Pure user/video tables and hand-written log rows."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from rliv_ray import schema as S
from rliv_ray.data import kuairand
from rliv_ray.data.io import LOG_DIR, MANIFEST, OutputExistsError, read_manifest
from rliv_ray.data.kuairand import AUTHOR_FEATURE_NAMES, USER_FEATURE_NAMES, convert_kuairand

CSV_HEADER = [
    "user_id", "video_id", "date", "hourmin", "time_ms", "is_click", "is_like", "is_follow",
    "is_comment", "is_forward", "is_hate", "long_view", "play_time_ms", "duration_ms",
    "profile_stay_time", "comment_stay_time", "is_profile_enter", "is_rand", "tab",
]
LOG_NAME = "log_standard_4_08_to_4_21_pure.csv"
USERS, VIDEOS = "user_features_pure.csv", "video_features_basic_pure.csv"
DEGREES = {  # written out independently of the module's own mapping
    "UNKNOWN": 0, "single_low_active": 1, "low_active": 2, "day_new": 3, "2_14_day_new": 4,
    "30day_retention": 5, "middle_active": 6, "high_active": 7, "full_active": 8,
}
T0, HOUR, DAY = 1_649_412_000_000, 3_600_000, 86_400_000
MISSING_USER, UNKNOWN_VIDEO, N_DUPLICATES = 999_999, 10_000_000, 5


def _row(user, video, t, click=0, long_view=0, follow=0, play=5_000, duration=20_000):
    values = dict.fromkeys(CSV_HEADER, 0)
    values.update(user_id=user, video_id=video, date=20220408, hourmin=1000, time_ms=t,
                  is_click=click, long_view=long_view, is_follow=follow, play_time_ms=play,
                  duration_ms=duration, tab=1)
    return values


def _write_log(path: Path, rows: list[dict] | pd.DataFrame) -> None:
    pd.DataFrame(rows, columns=CSV_HEADER).to_csv(path, index=False)


@pytest.fixture(scope="module")
def tables(kuairand_pure_dir):
    users = pd.read_csv(kuairand_pure_dir / USERS)
    videos = pd.read_csv(kuairand_pure_dir / VIDEOS, dtype={"tag": str})
    return users, videos


@pytest.fixture(scope="module")
def case(tables):
    """The log rows, plus the ids the tests look at."""
    users, videos = tables
    rng = np.random.default_rng(7)
    picked = {deg: int(users.loc[users.user_active_degree == deg, "user_id"].iloc[0])
              for deg in DEGREES}
    nan_onehot = int(users.loc[users.onehot_feat12.isna(), "user_id"].iloc[0])
    live = int(users.loc[users.is_live_streamer == 1, "user_id"].iloc[0])
    dead = int(users.loc[users.is_live_streamer == -124, "user_id"].iloc[0])
    per_author = videos.groupby("author_id").video_duration.agg(["size", lambda s: s.isna().all()])
    author = int(per_author[(per_author["size"] >= 3) & per_author.iloc[:, 1]].index[0])
    v1, v2, v3 = videos.loc[videos.author_id == author, "video_id"].iloc[:3].astype(int)
    known = videos.loc[videos.video_duration.notna() & (videos.author_id != author)]
    nan_video = int(videos.loc[videos.video_duration.isna() & (videos.author_id != author),
                               "video_id"].iloc[0])
    pair_user = picked["full_active"]
    rows, plays = [], iter(rng.permutation(10**6) + 1_000)
    for user in sorted({*picked.values(), nan_onehot, live, dead, MISSING_USER}):
        picks, steps = rng.choice(known.video_id, 25), rng.integers(0, 40, 25)
        for video, step in zip(picks, steps, strict=True):
            duration = int(known.set_index("video_id").video_duration[video])
            rows.append(_row(user, int(video), T0 + DAY + int(step) * 60_000,
                             *rng.integers(0, 2, 3), play=int(next(plays)),
                             duration=duration if step % 5 else 0))
    rng.shuffle(rows)
    fallback_video = int(known.video_id.iloc[0])
    special = [  # (user, video, t, click, long_view, follow, play, duration)
        _row(pair_user, v1, T0 + int(2.5 * DAY), 1, 0, 0),
        _row(pair_user, v2, T0 + HOUR, 0, 1, 0),
        _row(dead, fallback_video, T0 + 7, duration=0),
        _row(dead, nan_video, T0 + 8, duration=0),
        _row(dead, fallback_video, T0 + 9, play=100 * 20_000, duration=20_000),
        _row(dead, UNKNOWN_VIDEO, T0 + 10),
        _row(pair_user, v1, T0, 1, 0, 0),
        _row(pair_user, v3, T0 + HOUR, 1, 1, 1),  # same request as v2, after it in the file
    ]
    rows = rows[:100] + special[:2] + rows[100:200] + special[2:] + rows[200:]
    rows += [dict(r) for r in rows[300:300 + N_DUPLICATES]]
    return dict(rows=rows, picked=picked, nan_onehot=nan_onehot, live=live, dead=dead,
                author=author, pair=(pair_user, author, (v1, v2, v3)), nan_video=nan_video,
                fallback_video=fallback_video)


def _source(tmp: Path, src: Path, variant="pure", tables=(USERS, VIDEOS)) -> Path:
    tmp.mkdir(parents=True, exist_ok=True)
    for name in tables:
        (tmp / name.replace("pure", variant)).symlink_to(src / name)
    return tmp


def _read(out: Path) -> pa.Table:
    return pa.concat_tables(pq.read_table(f) for f in sorted((out / LOG_DIR).glob("*.parquet")))


@pytest.fixture(scope="module")
def converted(tmp_path_factory, kuairand_pure_dir, case):
    src = _source(tmp_path_factory.mktemp("src"), kuairand_pure_dir)
    _write_log(src / LOG_NAME, case["rows"])
    out = tmp_path_factory.mktemp("data") / "kuairand"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        manifest = convert_kuairand(src, out, n_buckets=4, chunk_rows=50, progress=False)
    table = _read(out)
    frame = table.to_pandas()
    return dict(src=src, out=out, manifest=manifest, table=table, frame=frame,
                warnings=[str(w.message) for w in caught])


def _at(frame, user, item, ts):
    hit = frame[(frame.user_id == user) & (frame.item_id == item) & (frame.ts_ms == ts)]
    assert len(hit) == 1
    return hit.iloc[0]


def test_manifest_counts(converted, case):
    m = converted["manifest"]
    assert m == read_manifest(converted["out"])
    assert m["source"] == "kuairand-pure" and m["variant"] == "pure"
    assert m["files_read"] == [LOG_NAME, USERS, VIDEOS]
    assert m["rows_read"] == len(case["rows"])
    assert m["duplicates_dropped"] == N_DUPLICATES
    assert m["unknown_video_rows_dropped"] == 1
    assert m["users_missing_from_user_table"] == 1
    assert m["unknown_activity_degree_users"] == 0
    assert m["rows_written"] == len(case["rows"]) - N_DUPLICATES - 1 == converted["table"].num_rows
    assert m["users"] == converted["frame"].user_id.nunique()
    assert m["authors"] == converted["frame"].author_id.nunique()
    assert m["absent_columns"] == sorted([S.GIFT, S.UA_GIFT_COUNT, S.RANK_SCORE, S.BEHAVIOR_PROB])
    assert sorted(p.name for p in converted["out"].iterdir()) == [LOG_DIR, MANIFEST]
    assert any("not in the video table" in w for w in converted["warnings"])
    assert any("missing from the user table" in w for w in converted["warnings"])


def test_schema_and_absent_columns(converted):
    expected = S.log_schema(USER_FEATURE_NAMES, AUTHOR_FEATURE_NAMES,
                            absent=(S.GIFT, S.UA_GIFT_COUNT, S.RANK_SCORE, S.BEHAVIOR_PROB),
                            source="kuairand-pure", action_grid=(0.0, 0.25, 0.5, 0.75, 1.0))
    for path in (converted["out"] / LOG_DIR).glob("*.parquet"):
        schema = pq.read_schema(path)
        assert schema.equals(expected)
        assert all(schema.metadata[k] == v for k, v in expected.metadata.items())
        assert S.absent_columns(schema) == {S.GIFT, S.UA_GIFT_COUNT, S.RANK_SCORE, S.BEHAVIOR_PROB}
    table = converted["table"]
    for name in (S.GIFT, S.UA_GIFT_COUNT, S.RANK_SCORE, S.BEHAVIOR_PROB):
        assert table[name].null_count == table.num_rows
    frame = converted["frame"]
    assert (frame.action == 0).all() and (frame.action_weight == 0.0).all()
    assert len(USER_FEATURE_NAMES) == 26 and len(AUTHOR_FEATURE_NAMES) == 5


def test_requests_dense_per_user_and_sorted(converted):
    frame = converted["frame"]
    dense = frame.groupby("user_id").ts_ms.rank(method="dense").astype(np.int64) - 1
    np.testing.assert_array_equal(frame.user_request_idx, dense)
    expected_ids = S.make_request_id(frame.ts_ms.to_numpy(), frame.user_id.to_numpy())
    np.testing.assert_array_equal(frame.request_id, expected_ids)
    for _, part in frame.groupby("user_id"):
        assert part.user_request_idx.is_monotonic_increasing
    assert frame.groupby("user_id").ts_ms.nunique().sum() == frame.request_id.nunique()


def test_each_user_in_exactly_one_file(converted):
    seen = {}
    for path in (converted["out"] / LOG_DIR).glob("*.parquet"):
        for user in pq.read_table(path, columns=[S.USER_ID])[S.USER_ID].unique().to_pylist():
            assert user not in seen, f"user {user} in {seen.get(user)} and {path.name}"
            seen[user] = path.name
    manifest = converted["manifest"]
    assert len(seen) == manifest["users"] and len(manifest["buckets_written"]) > 1


def test_pair_counts_before_exposure(converted, case):
    user, author, (v1, v2, v3) = case["pair"]
    pair = converted["frame"].query("user_id == @user and author_id == @author")
    assert pair.item_id.tolist() == [v1, v2, v3, v1]  # v2 before v3: stable tie order
    # Rows 1 and 2 share a request: both see only the pair's earlier requests.
    assert pair.ua_exposure_count.tolist() == [0, 1, 1, 3]
    assert pair.ua_click_count.tolist() == [0, 1, 1, 2]
    assert pair.ua_effective_view_count.tolist() == [0, 0, 0, 2]
    assert pair.ua_follow_count.tolist() == [0, 0, 0, 1]
    np.testing.assert_allclose(pair.ua_days_since_first, [0, 1 / 24, 1 / 24, 2.5], rtol=1e-6)
    assert pair.user_request_idx.tolist()[:3] == [0, 1, 1] and pair.user_request_idx.iloc[3] > 1
    assert pair.click.tolist() == [1, 0, 1, 1] and pair.follow.tolist() == [0, 0, 1, 0]
    firsts = converted["frame"].groupby(["user_id", "author_id"]).head(1)
    assert (firsts.ua_exposure_count == 0).all() and (firsts.ua_days_since_first == 0).all()


def test_duration_fallback_and_replays(converted, case, tables):
    frame, dead, videos = converted["frame"], case["dead"], tables[1].set_index("video_id")
    fallback = _at(frame, dead, case["fallback_video"], T0 + 7)
    assert fallback.duration_s == pytest.approx(videos.video_duration[case["fallback_video"]] / 1e3)
    assert pd.isna(_at(frame, dead, case["nan_video"], T0 + 8).duration_s)
    replay = _at(frame, dead, case["fallback_video"], T0 + 9)
    assert replay.watch_time_s == pytest.approx(2000.0) and replay.duration_s == pytest.approx(20.0)
    assert converted["table"][S.DURATION_S].null_count >= 1
    assert not (frame.item_id == UNKNOWN_VIDEO).any()


def test_user_groups_and_features(converted, case, tables):
    frame, users = converted["frame"], tables[0].set_index("user_id")
    for degree, user in case["picked"].items():
        assert (frame.loc[frame.user_id == user, "user_group"] == DEGREES[degree]).all()
    assert set(frame.user_group) == set(range(9))
    idx = {name: i for i, name in enumerate(USER_FEATURE_NAMES)}
    features = {u: f for u, f in zip(frame.user_id, frame.user_features, strict=True)}
    assert features[case["live"]][idx["is_live_streamer"]] == 1
    assert features[case["live"]][idx["is_live_streamer_unknown"]] == 0
    assert features[case["dead"]][idx["is_live_streamer"]] == 0
    assert features[case["dead"]][idx["is_live_streamer_unknown"]] == 1
    row = users.loc[case["nan_onehot"]].drop(["user_active_degree", "follow_user_num_range",
                                              "fans_user_num_range", "friend_user_num_range",
                                              "register_days_range"]).astype(float)
    expected = [row.is_lowactive_period, row.is_live_streamer == 1, row.is_live_streamer == -124,
                row.is_video_author, *np.log1p(row[["follow_user_num", "fans_user_num",
                                                     "friend_user_num", "register_days"]]),
                *row[[f"onehot_feat{i}" for i in range(18)]].fillna(-1)]
    np.testing.assert_allclose(features[case["nan_onehot"]], np.array(expected, float), rtol=1e-6)
    assert features[case["nan_onehot"]][idx["onehot_feat12"]] == -1
    missing = frame[frame.user_id == MISSING_USER]
    assert len(missing) and (missing.user_group == 0).all()
    assert all((f == 0).all() for f in missing.user_features)


def test_author_features(converted, tables):
    videos = tables[1]
    n_tags = videos.tag.fillna("").map(lambda t: len([x for x in t.split(",") if x.strip()]))
    expected = pd.DataFrame({
        "n": np.log1p(videos.groupby("author_id").size()),
        "dur": videos.groupby("author_id").video_duration.mean().fillna(0) / 1000,
        "miss": videos.video_duration.isna().groupby(videos.author_id).mean(),
        "normal": (videos.video_type == "NORMAL").groupby(videos.author_id).mean(),
        "tags": n_tags.groupby(videos.author_id).mean(),
    })
    frame = converted["frame"]
    got = np.stack(frame.author_features.to_numpy())
    np.testing.assert_allclose(got, expected.loc[frame.author_id].to_numpy(), rtol=1e-5)


def test_two_parts_read_together(tmp_path, kuairand_pure_dir, case, converted):
    src = _source(tmp_path / "src", kuairand_pure_dir, variant="27k")
    rows = case["rows"]
    _write_log(src / "log_standard_4_08_to_4_21_27k_part2.csv", rows[150:])
    _write_log(src / "log_standard_4_08_to_4_21_27k_part1.csv", rows[:150])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        m = convert_kuairand(src, tmp_path / "out", n_buckets=4, progress=False)
    assert m["variant"] == "27k" and m["source"] == "kuairand-27k"
    assert m["files_read"][:2] == ["log_standard_4_08_to_4_21_27k_part1.csv",
                                   "log_standard_4_08_to_4_21_27k_part2.csv"]
    assert m["rows_read"] == len(rows) and m["duplicates_dropped"] == N_DUPLICATES
    got = _read(tmp_path / "out").replace_schema_metadata(None)
    assert got.equals(converted["table"].replace_schema_metadata(None))


def test_chunking_and_buckets_do_not_change_rows(tmp_path, converted):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        convert_kuairand(converted["src"], tmp_path / "one", n_buckets=1, chunk_rows=7,
                         progress=False)
    keys = [(S.USER_ID, "ascending"), (S.USER_REQUEST_IDX, "ascending")]
    assert _read(tmp_path / "one").equals(converted["table"].sort_by(keys))


def test_random_logs_only_on_request(tmp_path, kuairand_pure_dir, case):
    src = _source(tmp_path / "src", kuairand_pure_dir)
    _write_log(src / LOG_NAME, case["rows"][:40])
    user = case["picked"]["high_active"]
    _write_log(src / "log_random_4_22_to_5_08_pure.csv", [_row(user, 1, T0 + 5 * DAY)])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        plain = convert_kuairand(src, tmp_path / "a", progress=False)
        both = convert_kuairand(src, tmp_path / "b", include_random=True, progress=False)
    assert plain["rows_read"] == 40 and both["rows_read"] == 41
    assert both["files_read"][1] == "log_random_4_22_to_5_08_pure.csv"


def test_unknown_activity_degree(tmp_path, kuairand_pure_dir, case, tables):
    src = _source(tmp_path / "src", kuairand_pure_dir, tables=(VIDEOS,))
    users = tables[0].copy()
    user = case["picked"]["middle_active"]
    users.loc[users.user_id == user, "user_active_degree"] = "weekend_active"
    users.to_csv(src / USERS, index=False)
    _write_log(src / LOG_NAME, [_row(user, 1, T0), _row(case["live"], 2, T0)])
    with pytest.warns(UserWarning, match="user_active_degree"):
        m = convert_kuairand(src, tmp_path / "out", progress=False)
    assert m["unknown_activity_degree_users"] == 1
    frame = _read(tmp_path / "out").to_pandas().set_index("user_id")
    live_degree = tables[0].set_index("user_id").user_active_degree[case["live"]]
    assert frame.user_group[user] == 0 and frame.user_group[case["live"]] == DEGREES[live_degree]


@pytest.mark.parametrize("missing", [USERS, VIDEOS])
def test_missing_table_is_a_clear_error(tmp_path, kuairand_pure_dir, missing):
    src = _source(tmp_path / "src", kuairand_pure_dir, tables=({USERS, VIDEOS} - {missing}))
    _write_log(src / LOG_NAME, [_row(0, 0, T0)])
    with pytest.raises(FileNotFoundError, match=missing):
        convert_kuairand(src, tmp_path / "out", progress=False)
    assert not (tmp_path / "out").exists()


def test_no_logs_and_bad_header(tmp_path, kuairand_pure_dir):
    src = _source(tmp_path / "src", kuairand_pure_dir)
    with pytest.raises(FileNotFoundError, match="log_standard"):
        convert_kuairand(src, tmp_path / "out", progress=False)
    pd.DataFrame([_row(0, 0, T0)]).drop(columns="tab").to_csv(src / LOG_NAME, index=False)
    with pytest.raises(ValueError, match=f"{LOG_NAME}.*'tab'"):
        convert_kuairand(src, tmp_path / "out", progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["src"]


def test_failure_in_pass_two_leaves_nothing(tmp_path, monkeypatch, converted):
    def boom(*args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(kuairand, "_to_table", boom)
    with pytest.raises(RuntimeError, match="boom"):
        convert_kuairand(converted["src"], tmp_path / "out", progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_existing_output_needs_overwrite(tmp_path, converted):
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(OutputExistsError):
        convert_kuairand(converted["src"], out, progress=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        m = convert_kuairand(converted["src"], out, overwrite=True, progress=False)
    assert json.loads((out / MANIFEST).read_text())["rows_written"] == m["rows_written"] > 0


def test_file_discovery_order_and_mixed_variants(tmp_path):
    for name in ("log_standard_x_27k_part10.csv", "log_standard_x_27k_part2.csv",
                 "log_random_x_27k.csv", "log_standard_x_27k_part1.csv",
                 "user_features_27k.csv", "video_features_basic_27k.csv"):
        (tmp_path / name).touch()
    files = kuairand.find_kuairand_files(tmp_path, include_random=True)
    assert files.variant == "27k" and files.users.name == "user_features_27k.csv"
    assert [p.name for p in files.logs] == [
        "log_standard_x_27k_part1.csv", "log_standard_x_27k_part2.csv",
        "log_standard_x_27k_part10.csv", "log_random_x_27k.csv"]
    (tmp_path / "log_standard_x_pure.csv").touch()
    with pytest.raises(ValueError, match="variant"):
        kuairand.find_kuairand_files(tmp_path)
