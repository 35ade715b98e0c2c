"""KuaiRand CSV files (variants Pure, 1K, 27K) -> an interaction-log dataset directory.

Streams the logs in two passes inside one :func:`atomic_output_dir`:

1. every log CSV is read in chunks of ``chunk_rows`` and each chunk's rows are appended to one
   scratch Parquet file per user bucket (:func:`user_bucket`), so all rows of a user meet;
2. one bucket at a time is cleaned, sorted, joined to the user and video tables, given the pair
   features known before each exposure and written as ``log/part-<bucket>.parquet``.

Quirks of the published files (``../shared/data/kuairand-pure/README.md``) handled here: exact
duplicate log rows are dropped, ``duration_ms = 0`` means unknown, replays (watch time far above
the duration) are kept, ``author_id`` lives only in the video table, ``is_live_streamer = -124``
means unknown, one-hot codes may be NaN, ``user_active_degree`` has 9 values. KuaiRand has no
gift label, no ranker score and no logging propensity: those columns are declared absent.
"""

from __future__ import annotations

import re
import shutil
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from rliv_ray import schema as S
from rliv_ray.actions import ActionGrid
from rliv_ray.checks import InvalidInput, one_line
from rliv_ray.data.io import LOG_DIR, atomic_output_dir, part_name, user_bucket, write_manifest
from rliv_ray.progress import Progress

# --- the source's own column names ---------------------------------------------------------
VIDEO_ID, TIME_MS, IS_CLICK, LONG_VIEW, IS_FOLLOW = (
    "video_id", "time_ms", "is_click", "long_view", "is_follow")
PLAY_TIME_MS, DURATION_MS = "play_time_ms", "duration_ms"
CSV_COLUMNS: tuple[str, ...] = (
    S.USER_ID, VIDEO_ID, "date", "hourmin", TIME_MS, IS_CLICK, "is_like", IS_FOLLOW, "is_comment",
    "is_forward", "is_hate", LONG_VIEW, PLAY_TIME_MS, DURATION_MS, "profile_stay_time",
    "comment_stay_time", "is_profile_enter", "is_rand", "tab",
)
"""The 19 int64 columns of every KuaiRand log CSV, in file order."""
LABEL_SOURCE = {S.CLICK: IS_CLICK, S.EFFECTIVE_VIEW: LONG_VIEW, S.FOLLOW: IS_FOLLOW}
ACTIVE_DEGREE, LIVE_STREAMER = "user_active_degree", "is_live_streamer"
LOWACTIVE, VIDEO_AUTHOR = "is_lowactive_period", "is_video_author"
VIDEO_DURATION, VIDEO_TYPE, TAG = "video_duration", "video_type", "tag"

ACTIVITY_GROUPS: dict[str, int] = {
    "UNKNOWN": 0, "single_low_active": 1, "low_active": 2, "day_new": 3, "2_14_day_new": 4,
    "30day_retention": 5, "middle_active": 6, "high_active": 7, "full_active": 8,
}
"""``user_active_degree`` -> ``user_group``, in order of activity; any other value -> 0."""
LIVE_STREAMER_UNKNOWN = -124
LOG1P_USER_COLUMNS = ("follow_user_num", "fans_user_num", "friend_user_num", "register_days")
ONEHOT_COLUMNS = tuple(f"onehot_feat{i}" for i in range(18))
USER_FEATURE_NAMES: list[str] = [
    LOWACTIVE, LIVE_STREAMER, f"{LIVE_STREAMER}_unknown", VIDEO_AUTHOR,
    *(f"log1p_{c}" for c in LOG1P_USER_COLUMNS), *ONEHOT_COLUMNS,
]
AUTHOR_FEATURE_NAMES: list[str] = [
    "log1p_n_videos", "mean_duration_s", "missing_duration_share", "normal_share", "mean_n_tags",
]
VIDEO_TABLE_COLUMNS = (VIDEO_ID, S.AUTHOR_ID, VIDEO_TYPE, VIDEO_DURATION, TAG)
USER_TABLE_COLUMNS = (S.USER_ID, ACTIVE_DEGREE, LIVE_STREAMER, LOWACTIVE, VIDEO_AUTHOR,
                      *LOG1P_USER_COLUMNS, *ONEHOT_COLUMNS)

ABSENT: tuple[str, ...] = (S.GIFT, S.UA_GIFT_COUNT, S.RANK_SCORE, S.BEHAVIOR_PROB)
"""Columns KuaiRand does not have: written entirely null and declared absent."""
DAY_MS = 86_400_000
SCRATCH_DIR = "_scratch"
_LOG_NAME = re.compile(r"^log_(standard|random)_.*_(pure|1k|27k)(?:_part\d+)?\.csv$", re.I)


@dataclass(frozen=True)
class KuaiRandFiles:
    """The input files of one KuaiRand variant."""

    variant: str
    logs: tuple[Path, ...]
    users: Path
    videos: Path


@dataclass(frozen=True)
class _Lookup:
    """Per-user and per-video tables built once; row -1 of the user arrays is the missing user."""

    videos: pd.Index
    video_author: np.ndarray  # (n_videos,) int64
    video_duration_ms: np.ndarray  # (n_videos,) float64, NaN where unknown
    users: pd.Index
    user_group: np.ndarray  # (n_users + 1,) int16
    user_matrix: np.ndarray  # (n_users + 1, n_user_features) float32
    authors: pd.Index
    author_matrix: np.ndarray  # (n_authors, n_author_features) float32


def _natural_key(path: Path) -> list:
    """Sort key that puts ``_part2`` before ``_part10``."""
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", path.name.lower())]


def find_kuairand_files(src_dir, *, include_random: bool = False) -> KuaiRandFiles:
    """Find the logs and tables in ``src_dir``; the variant is read from the log file names.

    Standard logs come first (in natural name order, so 27K's ``_part1, _part2, ...`` stay in
    order), then random logs if asked for.
    """
    src = Path(src_dir)
    if not src.is_dir():
        raise FileNotFoundError(f"{src}: no such directory")
    kinds = ("standard", "random") if include_random else ("standard",)
    logs = [p for kind in kinds for p in sorted(src.glob(f"log_{kind}_*.csv"), key=_natural_key)]
    if not logs:
        raise FileNotFoundError(f"{src}: no KuaiRand log files (log_standard_*.csv) found")
    variants = {m[2].lower() if (m := _LOG_NAME.match(p.name)) else None for p in logs}
    if len(variants) != 1 or None in variants:
        raise InvalidInput(f"{src}: cannot tell one KuaiRand variant (pure, 1k, 27k) from the "
                         f"log names {[p.name for p in logs]}")
    variant = variants.pop()
    users = src / f"user_features_{variant}.csv"
    videos = src / f"video_features_basic_{variant}.csv"
    for table in (users, videos):
        if not table.is_file():
            raise FileNotFoundError(f"{src}: missing KuaiRand table {table.name}")
    return KuaiRandFiles(variant, tuple(logs), users, videos)


def _read_csv(path: Path, columns: tuple[str, ...], **kwargs):
    """``pd.read_csv`` of the named columns only, in that order (a reader if ``chunksize``);
    a header without one of them is a ValueError naming the file and the columns."""
    check_header(path, columns)
    try:
        return pd.read_csv(path, usecols=list(columns), **kwargs)
    except (ValueError, pd.errors.ParserError) as err:
        raise InvalidInput(f"{path}: not a KuaiRand table ({one_line(str(err), 300)})") from None


def check_header(path: Path, columns: tuple[str, ...]) -> None:
    """InvalidInput (one line naming the file) unless the CSV's header has ``columns``."""
    try:
        header = pd.read_csv(path, nrows=0).columns
    except (OSError, ValueError, pd.errors.ParserError) as err:
        raise InvalidInput(f"{path}: not a readable CSV file ({one_line(str(err), 300)})") from None
    missing = [c for c in columns if c not in header]
    if missing:
        raise InvalidInput(f"{path}: missing column(s) {missing}")


def check_headers(files: KuaiRandFiles) -> None:
    """Every input file's header, before anything is read or written."""
    for path in files.logs:
        check_header(path, CSV_COLUMNS)
    check_header(files.users, USER_TABLE_COLUMNS)
    check_header(files.videos, VIDEO_TABLE_COLUMNS)


def user_feature_matrix(users: pd.DataFrame) -> tuple[np.ndarray, np.ndarray, int]:
    """``(user_group (n,) int16, features (n, len(USER_FEATURE_NAMES)) float32, n_unknown)``.

    ``is_live_streamer`` 1 -> 1, anything else (-124 = unknown) -> 0, plus an ``_unknown``
    flag where -124; counts go through ``log1p`` (clipped at 0); NaN one-hot codes -> -1.
    Unrecognised activity degrees -> group 0, counted in ``n_unknown``.
    """
    group = users[ACTIVE_DEGREE].map(ACTIVITY_GROUPS)
    n_unknown = int(group.isna().sum())
    live = users[LIVE_STREAMER].to_numpy()
    features = np.column_stack([
        users[LOWACTIVE].fillna(0), live == 1, live == LIVE_STREAMER_UNKNOWN,
        users[VIDEO_AUTHOR].fillna(0),
        *(np.log1p(users[c].fillna(0).clip(lower=0)) for c in LOG1P_USER_COLUMNS),
        *(users[c].fillna(-1) for c in ONEHOT_COLUMNS),
    ]).astype(np.float32)
    return group.fillna(0).to_numpy(np.int16), features, n_unknown


def author_feature_matrix(videos: pd.DataFrame) -> tuple[pd.Index, np.ndarray]:
    """Per author (sorted ids): log1p(#videos), mean known duration in s (0 if none), share of
    videos with unknown duration, share of ``video_type == "NORMAL"``, mean number of tags
    (``tag`` is a comma list of ids; empty or NaN counts as 0 tags)."""
    duration_s = videos[VIDEO_DURATION].where(videos[VIDEO_DURATION] > 0) / 1000.0
    frame = pd.DataFrame({
        S.AUTHOR_ID: videos[S.AUTHOR_ID].to_numpy(),
        "duration_s": duration_s.to_numpy(),
        "missing": duration_s.isna().to_numpy(float),
        "normal": (videos[VIDEO_TYPE] == "NORMAL").to_numpy(float),
        "tags": videos[TAG].fillna("").astype(str).str.count(r"[^,\s]+").to_numpy(float),
    })
    g = frame.groupby(S.AUTHOR_ID, sort=True)
    stats = pd.DataFrame({
        "n": np.log1p(g.size()), "duration": g["duration_s"].mean().fillna(0.0),
        "missing": g["missing"].mean(), "normal": g["normal"].mean(), "tags": g["tags"].mean(),
    })
    return stats.index, stats.to_numpy(np.float32)


def _build_lookup(files: KuaiRandFiles) -> tuple[_Lookup, int]:
    """Read both tables and build the lookups; also returns the count of unknown degrees."""
    videos = _read_csv(files.videos, VIDEO_TABLE_COLUMNS, dtype={TAG: str})
    videos = videos.drop_duplicates(VIDEO_ID, keep="first")
    users = _read_csv(files.users, USER_TABLE_COLUMNS).drop_duplicates(S.USER_ID)
    group, features, n_unknown = user_feature_matrix(users)
    if n_unknown:
        warnings.warn(f"{files.users.name}: {n_unknown} users with an unknown "
                      f"{ACTIVE_DEGREE} -> user_group 0", stacklevel=3)
    authors, author_matrix = author_feature_matrix(videos)
    lookup = _Lookup(
        videos=pd.Index(videos[VIDEO_ID]), video_author=videos[S.AUTHOR_ID].to_numpy(np.int64),
        video_duration_ms=videos[VIDEO_DURATION].to_numpy(np.float64),
        users=pd.Index(users[S.USER_ID]), user_group=np.append(group, np.int16(0)),
        user_matrix=np.vstack([features, np.zeros((1, features.shape[1]), np.float32)]),
        authors=authors, author_matrix=author_matrix,
    )
    return lookup, n_unknown


def _estimate_rows(files: tuple[Path, ...]) -> int:
    """Row count guessed from file sizes and the line length of each file's first 64 KiB."""
    total = 0
    for path in files:
        with path.open("rb") as f:
            head = f.read(1 << 16)
        total += int(path.stat().st_size / max(len(head) / max(head.count(b"\n"), 1), 1.0))
    return total


def _append_chunk(chunk: pd.DataFrame, scratch: Path, n_buckets: int, writers: dict) -> None:
    """Append each user bucket's rows of ``chunk`` to ``scratch/part-<bucket>.parquet``."""
    table = pa.table({c: chunk[c].to_numpy(np.int64) for c in CSV_COLUMNS})
    bucket = user_bucket(chunk[S.USER_ID].to_numpy(), n_buckets)
    order = np.argsort(bucket, kind="stable")  # keeps file order within a bucket
    ids, starts = np.unique(bucket[order], return_index=True)
    for b, lo, hi in zip(ids.tolist(), starts, [*starts[1:], len(order)], strict=True):
        if b not in writers:
            writers[b] = pq.ParquetWriter(scratch / part_name(b), table.schema)
        writers[b].write_table(table.take(order[lo:hi]))


def _split_logs(files, scratch: Path, n_buckets: int, chunk_rows: int, progress: bool) -> int:
    """Pass 1: stream every log CSV in chunks into the per-bucket scratch files; rows read."""
    writers: dict[int, pq.ParquetWriter] = {}
    dtypes = dict.fromkeys(CSV_COLUMNS, np.int64)
    try:
        with Progress(_estimate_rows(files), "kuairand pass 1", unit="rows",
                      enabled=progress) as bar:
            for path in files:
                with _read_csv(path, CSV_COLUMNS, dtype=dtypes, chunksize=chunk_rows) as chunks:
                    try:
                        for chunk in chunks:
                            _append_chunk(chunk, scratch, n_buckets, writers)
                            bar.update(len(chunk))
                    except (ValueError, pd.errors.ParserError) as err:
                        raise InvalidInput(f"{path}: not a KuaiRand log from about row "
                                           f"{bar.done:,} ({one_line(str(err), 300)})") from None
            bar.total = bar.done
    finally:
        for writer in writers.values():
            writer.close()
    return bar.done


def _clean(raw: pd.DataFrame, lookup: _Lookup, counts: dict) -> tuple[pd.DataFrame, np.ndarray]:
    """Drop exact duplicate rows and rows of videos missing from the video table (both counted),
    then sort by (user_id, time_ms), stably so ties keep file order. Returns rows, video rows."""
    n = len(raw)
    raw = raw.drop_duplicates()
    counts["duplicates_dropped"] += n - len(raw)
    video_pos = lookup.videos.get_indexer(raw[VIDEO_ID].to_numpy())
    known = video_pos >= 0
    counts["unknown_video_rows_dropped"] += int((~known).sum())
    raw, video_pos = raw[known], video_pos[known]
    order = np.lexsort((raw[TIME_MS].to_numpy(), raw[S.USER_ID].to_numpy()))
    return raw.iloc[order].reset_index(drop=True), video_pos[order]


def _request_columns(user: np.ndarray, ts: np.ndarray) -> dict[str, np.ndarray]:
    """``user_request_idx`` = dense rank of ts within the user (rows sorted by user, ts)."""
    if len(user) and user.max() > S.MAX_USER_ID:
        raise ValueError(f"user ids above {S.MAX_USER_ID} do not fit make_request_id")
    new_user = np.r_[True, user[1:] != user[:-1]]
    new_request = new_user | np.r_[True, ts[1:] != ts[:-1]]
    running = np.cumsum(new_request)
    first_of_user = np.maximum.accumulate(np.where(new_user, running, 0))
    return {S.USER_REQUEST_IDX: running - first_of_user, S.TS_MS: ts,
            S.REQUEST_ID: S.make_request_id(ts, user)}


def _pair_columns(frame: pd.DataFrame) -> dict[str, np.ndarray]:
    """Pair features known before each row, per (user, author) in time order: earlier
    exposures, label sums over earlier rows, days since the pair's first row. Two exposures of
    one pair in the same request (same ts) both see only the pair's earlier requests."""
    g = frame.groupby([S.USER_ID, S.AUTHOR_ID], sort=False)
    before = pd.DataFrame({S.UA_EXPOSURE_COUNT: g.cumcount()})
    for label in LABEL_SOURCE:
        before[S.PAIR_COUNT_BY_LABEL[label]] = g[label].cumsum() - frame[label]
    keys = [frame[S.USER_ID], frame[S.AUTHOR_ID], frame[S.TS_MS]]
    before = before.groupby(keys, sort=False).transform("first")
    out = {name: before[name].to_numpy(np.int32) for name in before.columns}
    first = g[S.TS_MS].transform("min").to_numpy()
    out[S.UA_DAYS_SINCE_FIRST] = ((frame[S.TS_MS].to_numpy() - first) / DAY_MS).astype(np.float32)
    return out


def _duration_s(duration_ms: np.ndarray, table_ms: np.ndarray) -> pa.Array:
    """``duration_ms = 0`` means unknown in the logs: fall back to the video table's
    ``video_duration`` (ms, NaN if unknown); null where neither is positive."""
    ms = np.where(duration_ms > 0, duration_ms, table_ms).astype(np.float64)
    known = ms > 0
    return pa.array(np.where(known, ms / 1000.0, 0.0).astype(np.float32), mask=~known)


def _bucket_columns(raw: pd.DataFrame, video_pos: np.ndarray, lookup: _Lookup,
                    counts: dict) -> dict:
    """Every present log column of one cleaned, sorted bucket. No RL weight was applied to
    KuaiRand's ranking: action 0, whose grid weight is 0."""
    user, n = raw[S.USER_ID].to_numpy(), len(raw)
    author = lookup.video_author[video_pos]
    user_pos = lookup.users.get_indexer(user)  # -1 -> the all-zero "missing user" row
    counts["users_missing_from_user_table"] += int(np.unique(user[user_pos < 0]).size)
    labels = {label: raw[src].to_numpy(np.int64) for label, src in LABEL_SOURCE.items()}
    pair = pd.DataFrame({S.USER_ID: user, S.AUTHOR_ID: author, S.TS_MS: raw[TIME_MS], **labels})
    author_rows = lookup.author_matrix[lookup.authors.get_indexer(author)]
    return {
        **_request_columns(user, raw[TIME_MS].to_numpy()), S.USER_ID: user, S.AUTHOR_ID: author,
        S.ITEM_ID: raw[VIDEO_ID].to_numpy(), S.ACTION: np.zeros(n, np.int16),
        S.ACTION_WEIGHT: np.full(n, ActionGrid().weights[0], np.float32),
        **{label: values.astype(np.int8) for label, values in labels.items()},
        S.WATCH_TIME_S: (raw[PLAY_TIME_MS].to_numpy() / 1000.0).astype(np.float32),
        S.DURATION_S: _duration_s(raw[DURATION_MS].to_numpy(), lookup.video_duration_ms[video_pos]),
        S.USER_GROUP: lookup.user_group[user_pos],
        S.USER_FEATURES: S.vectors_to_arrow(lookup.user_matrix[user_pos]),
        S.AUTHOR_FEATURES: S.vectors_to_arrow(author_rows), **_pair_columns(pair),
    }


def _to_table(columns: dict, n: int, schema: pa.Schema) -> pa.Table:
    """Assemble the columns in schema order; absent columns become all-null."""
    columns = {**columns, **{name: pa.nulls(n, schema.field(name).type) for name in ABSENT}}
    return pa.Table.from_arrays([pa.array(columns[f.name], type=f.type) for f in schema],
                                 schema=schema)


def _convert_bucket(path: Path, lookup: _Lookup, schema: pa.Schema,
                    counts: dict) -> pa.Table | None:
    """One scratch bucket -> its final log table, or None if no row survives cleaning."""
    raw, video_pos = _clean(pq.read_table(path).to_pandas(), lookup, counts)
    if raw.empty:
        return None
    columns = _bucket_columns(raw, video_pos, lookup, counts)
    return _to_table(columns, len(raw), schema)


def _write_buckets(scratch: Path, log_dir: Path, n_buckets: int, lookup: _Lookup,
                   schema: pa.Schema, counts: dict, progress: bool) -> list[int]:
    """Pass 2: convert and write each non-empty bucket; returns the buckets written."""
    written, authors = [], np.empty(0, np.int64)
    with Progress(n_buckets, "kuairand pass 2", unit="buckets", enabled=progress) as bar:
        for bucket in range(n_buckets):
            path = scratch / part_name(bucket)
            table = _convert_bucket(path, lookup, schema, counts) if path.exists() else None
            if table is not None:
                pq.write_table(table, log_dir / part_name(bucket))
                counts["rows_written"] += table.num_rows
                counts["users"] += len(table[S.USER_ID].unique())
                authors = np.union1d(authors, table[S.AUTHOR_ID].unique().to_numpy())
                written.append(bucket)
            bar.update(1)
    counts["authors"] = int(authors.size)
    return written


def convert_kuairand(src_dir, out, *, n_buckets: int = 16, chunk_rows: int = 1_000_000,
                     include_random: bool = False, overwrite: bool = False,
                     progress: bool = True) -> dict:
    """Convert a KuaiRand release in ``src_dir`` to the dataset directory ``out``.

    Writes ``out/log/part-<bucket>.parquet`` (each file holds whole users, rows sorted by
    ``(user_id, user_request_idx)``) and ``out/manifest.json``; returns the manifest. Nothing is
    left at ``out`` if anything fails.
    """
    if n_buckets < 1 or chunk_rows < 1:
        raise ValueError(f"n_buckets and chunk_rows must be >= 1, got {n_buckets}, {chunk_rows}")
    files = find_kuairand_files(src_dir, include_random=include_random)
    check_headers(files)
    source, grid = f"kuairand-{files.variant}", ActionGrid()
    schema = S.log_schema(USER_FEATURE_NAMES, AUTHOR_FEATURE_NAMES, absent=ABSENT, source=source,
                          action_grid=grid.weights)
    counts = dict.fromkeys(("duplicates_dropped", "unknown_video_rows_dropped",
                            "users_missing_from_user_table", "rows_written", "users"), 0)
    with atomic_output_dir(out, overwrite=overwrite, inputs=[src_dir]) as tmp:
        lookup, counts["unknown_activity_degree_users"] = _build_lookup(files)
        scratch, log_dir = tmp / SCRATCH_DIR, tmp / LOG_DIR
        scratch.mkdir()
        log_dir.mkdir()
        rows_read = _split_logs(files.logs, scratch, n_buckets, chunk_rows, progress)
        written = _write_buckets(scratch, log_dir, n_buckets, lookup, schema, counts, progress)
        shutil.rmtree(scratch)
        _warn_dropped(counts)
        manifest = {
            "source": source, "variant": files.variant, "include_random": include_random,
            "files_read": [p.name for p in (*files.logs, files.users, files.videos)],
            "rows_read": rows_read, **counts, "n_buckets": n_buckets,
            "buckets_written": written, "absent_columns": sorted(ABSENT),
            "user_feature_names": USER_FEATURE_NAMES, "author_feature_names": AUTHOR_FEATURE_NAMES,
            "action_grid": list(grid.weights),
        }
        write_manifest(tmp, manifest)
    return manifest


def _warn_dropped(counts: dict) -> None:
    """Warn about log rows whose video or user the tables do not know."""
    if counts["unknown_video_rows_dropped"]:
        warnings.warn(f"dropped {counts['unknown_video_rows_dropped']} log rows whose video_id "
                      "is not in the video table", stacklevel=3)
    if counts["users_missing_from_user_table"]:
        warnings.warn(f"{counts['users_missing_from_user_table']} users are missing from the "
                      "user table: user_group 0 and zero user features", stacklevel=3)
