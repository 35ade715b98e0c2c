"""Column names and Arrow schemas: the one place where the data contracts live.

Three tables flow through rliv-ray (``../shared/DESIGN.md``, "Data contracts"):

* **interaction log**: one row per exposure of an item to a user at a request;
* **user behaviour sequence**: the events a user's fixed-length, truncated behaviour list keeps;
* **RL sample shard**: ``(s, a, r_*, s_hat')`` rows built from the log by the MDP layer.

Feature groups are fixed-size ``list<float32>`` columns (one column per group, not one per
scalar: fastest to read into tensors); their per-element names travel in the Parquet schema
metadata under :data:`META_USER_FEATURES` / :data:`META_AUTHOR_FEATURES`.

A column listed in the :data:`META_ABSENT` metadata is *absent* from the source (KuaiRand has no
gift label and no ranker score): it is present in the file but entirely null, so nobody
mistakes "unknown" for "zero".
"""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa

# --- interaction log -------------------------------------------------------------------------
REQUEST_ID = "request_id"  # int64, unique per request, increasing in time
USER_REQUEST_IDX = "user_request_idx"  # int64, the user's own request counter 0, 1, 2, ...
TS_MS = "ts_ms"  # int64, milliseconds since the Unix epoch
USER_ID = "user_id"
AUTHOR_ID = "author_id"
ITEM_ID = "item_id"
RANK_SCORE = "rank_score"  # float, the base ranker's score (before the RL weight)
ACTION = "action"  # int16, index into the action grid
ACTION_WEIGHT = "action_weight"  # float, the grid value: the weight a in Eq. 1
BEHAVIOR_PROB = "behavior_prob"  # float in (0, 1], logging policy's P(logged action)
CLICK = "click"
EFFECTIVE_VIEW = "effective_view"
FOLLOW = "follow"
GIFT = "gift"
WATCH_TIME_S = "watch_time_s"
DURATION_S = "duration_s"  # null where the source does not know it
USER_GROUP = "user_group"  # int16 activity group, 0 = least active
USER_FEATURES = "user_features"  # fixed-size list<float32>
AUTHOR_FEATURES = "author_features"  # fixed-size list<float32>
# User-author pair features known *before* this exposure (the dynamic part f_ua of the state).
UA_EXPOSURE_COUNT = "ua_exposure_count"
UA_CLICK_COUNT = "ua_click_count"
UA_EFFECTIVE_VIEW_COUNT = "ua_effective_view_count"
UA_FOLLOW_COUNT = "ua_follow_count"
UA_GIFT_COUNT = "ua_gift_count"
UA_DAYS_SINCE_FIRST = "ua_days_since_first"  # 0 at first contact

LABELS: tuple[str, ...] = (CLICK, EFFECTIVE_VIEW, FOLLOW, GIFT)
"""The label set C = {click, effective view, follow, gift} of RLIV-UA Eq. 2, in tower order."""

PAIR_COUNT_BY_LABEL: dict[str, str] = {
    CLICK: UA_CLICK_COUNT,
    EFFECTIVE_VIEW: UA_EFFECTIVE_VIEW_COUNT,
    FOLLOW: UA_FOLLOW_COUNT,
    GIFT: UA_GIFT_COUNT,
}
PAIR_FEATURES: tuple[str, ...] = (
    UA_EXPOSURE_COUNT,
    *PAIR_COUNT_BY_LABEL.values(),
    UA_DAYS_SINCE_FIRST,
)

# Columns a source may declare absent (all null); every other column must be non-null.
ABSENTABLE: frozenset[str] = frozenset(
    {RANK_SCORE, BEHAVIOR_PROB, GIFT, UA_GIFT_COUNT, DURATION_S}
)
# Columns that may hold nulls row by row even when present (a source that knows some values).
NULLABLE: frozenset[str] = frozenset({DURATION_S})

# --- schema metadata keys ------------------------------------------------------------------
META_USER_FEATURES = b"rliv.user_feature_names"
META_AUTHOR_FEATURES = b"rliv.author_feature_names"
META_ABSENT = b"rliv.absent_columns"
META_SOURCE = b"rliv.source"
META_ACTION_GRID = b"rliv.action_grid"

# --- ground truth sidecar (synthetic worlds only) -------------------------------------------
TRUE_AFFINITY = "true_affinity"  # the pair's latent potential
TRUE_BOND_BEFORE = "true_bond_before"  # latent relationship depth before this exposure
TRUE_BOND_AFTER = "true_bond_after"  # ... and right after it
TRUE_NEXT_USER_REQUEST_IDX = "true_next_user_request_idx"  # pair's next exposure, -1 if none
TRUE_RETURN_PREFIX = "true_return_"  # + label: realised discounted return along the pair chain


def true_return_column(label: str) -> str:
    """Name of the realised-return column for ``label`` in the truth sidecar."""
    return f"{TRUE_RETURN_PREFIX}{label}"


# --- RL sample shard ------------------------------------------------------------------------
STATE = "state"
NEXT_STATE = "next_state"
TRUE_NEXT_STATE = "true_next_state"
STITCHED = "stitched"
GAP = "gap"
REWARD_PREFIX = "reward_"


def reward_column(label: str) -> str:
    """Name of the per-label reward column of an RL sample shard (``reward_click``, ...)."""
    return f"{REWARD_PREFIX}{label}"


def feature_vector(n: int) -> pa.DataType:
    """The Arrow type of a feature-group column holding ``n`` floats."""
    return pa.list_(pa.float32(), n)


def log_schema(
    user_feature_names: list[str],
    author_feature_names: list[str],
    *,
    absent: tuple[str, ...] = (),
    source: str = "unknown",
    action_grid: tuple[float, ...] = (),
) -> pa.Schema:
    """The interaction-log schema for a dataset with the given feature-group names."""
    unknown = set(absent) - ABSENTABLE
    if unknown:
        raise ValueError(f"columns {sorted(unknown)} cannot be declared absent")
    fields = [
        pa.field(REQUEST_ID, pa.int64(), nullable=False),
        pa.field(USER_REQUEST_IDX, pa.int64(), nullable=False),
        pa.field(TS_MS, pa.int64(), nullable=False),
        pa.field(USER_ID, pa.int64(), nullable=False),
        pa.field(AUTHOR_ID, pa.int64(), nullable=False),
        pa.field(ITEM_ID, pa.int64(), nullable=False),
        pa.field(RANK_SCORE, pa.float32(), nullable=True),
        pa.field(ACTION, pa.int16(), nullable=False),
        pa.field(ACTION_WEIGHT, pa.float32(), nullable=False),
        pa.field(BEHAVIOR_PROB, pa.float32()),
        *(pa.field(label, pa.int8(), nullable=label in ABSENTABLE) for label in LABELS),
        pa.field(WATCH_TIME_S, pa.float32(), nullable=False),
        pa.field(DURATION_S, pa.float32()),
        pa.field(USER_GROUP, pa.int16(), nullable=False),
        pa.field(USER_FEATURES, feature_vector(len(user_feature_names)), nullable=False),
        pa.field(AUTHOR_FEATURES, feature_vector(len(author_feature_names)), nullable=False),
        *(pa.field(name, pa.int32(), nullable=name in ABSENTABLE) for name in PAIR_FEATURES[:-1]),
        pa.field(UA_DAYS_SINCE_FIRST, pa.float32(), nullable=False),
    ]
    metadata = {
        META_USER_FEATURES: json.dumps(list(user_feature_names)),
        META_AUTHOR_FEATURES: json.dumps(list(author_feature_names)),
        META_ABSENT: json.dumps(sorted(absent)),
        META_SOURCE: source,
        META_ACTION_GRID: json.dumps(list(action_grid)),
    }
    return pa.schema(fields, metadata=metadata)


LOG_COLUMNS: tuple[str, ...] = tuple(log_schema([], []).names)
"""Every column of the interaction log, in file order."""


def absent_columns(schema: pa.Schema) -> frozenset[str]:
    """Columns the file declares absent (entirely null), read from its metadata."""
    raw = (schema.metadata or {}).get(META_ABSENT)
    return frozenset(json.loads(raw)) if raw else frozenset()


def feature_names(schema: pa.Schema, key: bytes) -> list[str]:
    """Per-element names of a feature-group column, read from the schema metadata."""
    raw = (schema.metadata or {}).get(key)
    return list(json.loads(raw)) if raw else []


def truth_schema() -> pa.Schema:
    """Ground truth a simulator knows, aligned row by row with its log files."""
    fields = [
        pa.field(REQUEST_ID, pa.int64(), nullable=False),
        pa.field(USER_ID, pa.int64(), nullable=False),
        pa.field(AUTHOR_ID, pa.int64(), nullable=False),
        pa.field(TRUE_AFFINITY, pa.float32(), nullable=False),
        pa.field(TRUE_BOND_BEFORE, pa.float32(), nullable=False),
        pa.field(TRUE_BOND_AFTER, pa.float32(), nullable=False),
        pa.field(TRUE_NEXT_USER_REQUEST_IDX, pa.int64(), nullable=False),
        *(pa.field(true_return_column(label), pa.float32(), nullable=False) for label in LABELS),
    ]
    return pa.schema(fields)


USER_SEQUENCE_SCHEMA = pa.schema(
    [
        pa.field(USER_ID, pa.int64(), nullable=False),
        pa.field(USER_REQUEST_IDX, pa.int64(), nullable=False),
        pa.field(TS_MS, pa.int64(), nullable=False),
        pa.field(REQUEST_ID, pa.int64(), nullable=False),
        pa.field(AUTHOR_ID, pa.int64(), nullable=False),
        pa.field(ITEM_ID, pa.int64(), nullable=False),
        pa.field(ACTION, pa.int16(), nullable=False),
        *(pa.field(label, pa.int8()) for label in LABELS),
    ]
)
"""One stored event of a user's behaviour sequence (what stitching may look at)."""


def rl_sample_schema(state_dim: int) -> pa.Schema:
    """An RL sample shard row: (s, a, r_click..r_gift, s_hat', stitched, s_true', gap, group),
    plus the log's rank score (serving's base score; null where the log has none, as KuaiRand's).
    Training ignores the rank score, so shards written without it still train."""
    return pa.schema(
        [
            pa.field(USER_ID, pa.int64(), nullable=False),
            pa.field(AUTHOR_ID, pa.int64(), nullable=False),
            pa.field(STATE, feature_vector(state_dim), nullable=False),
            pa.field(ACTION, pa.int16(), nullable=False),
            *(pa.field(reward_column(label), pa.float32(), nullable=False) for label in LABELS),
            pa.field(NEXT_STATE, feature_vector(state_dim), nullable=False),
            pa.field(STITCHED, pa.bool_(), nullable=False),
            # NaN where not stitched: pyarrow 25 cannot read back null fixed-size lists.
            pa.field(TRUE_NEXT_STATE, feature_vector(state_dim), nullable=False),
            pa.field(GAP, pa.int32(), nullable=False),
            pa.field(USER_GROUP, pa.int16(), nullable=False),
            pa.field(RANK_SCORE, pa.float32(), nullable=True),
        ]
    )


# --- request ids ----------------------------------------------------------------------------
REQUEST_EPOCH_MS = 1_577_836_800_000  # 2020-01-01T00:00:00Z
REQUEST_ID_USER_BITS = 24
MAX_USER_ID = (1 << REQUEST_ID_USER_BITS) - 1


def make_request_id(ts_ms, user_id):
    """A request id unique per (user, time) and increasing in time, for sources that lack one.

    ``((ts_ms - 2020-01-01) << 24) | user_id``: valid for user ids below 2**24 and timestamps
    up to 2037. Works on scalars and NumPy arrays of int64.
    """
    return ((ts_ms - REQUEST_EPOCH_MS) << REQUEST_ID_USER_BITS) | user_id


# --- feature-vector columns <-> matrices ------------------------------------------------------
def vectors_to_arrow(matrix: np.ndarray, dtype=np.float32) -> pa.FixedSizeListArray:
    """An (n, k) matrix as a fixed-size ``list<dtype>`` array of n rows (no Python loop)."""
    matrix = np.asarray(matrix, dtype=dtype)
    if matrix.ndim != 2:
        raise ValueError(f"expected an (n, k) matrix, got shape {matrix.shape}")
    flat = pa.array(np.ascontiguousarray(matrix).ravel())
    return pa.FixedSizeListArray.from_arrays(flat, matrix.shape[1])


def arrow_to_matrix(column: pa.Array | pa.ChunkedArray, dtype=np.float32) -> np.ndarray:
    """A fixed-size list column as a writable (n, k) matrix of ``dtype``."""
    array = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    values = array.flatten().to_numpy(zero_copy_only=False)
    return values.reshape(len(array), array.type.list_size).astype(dtype, copy=True)


# --- Live-stream allocation log (SL-MGAC): one row per feed request ------------------------------
# Shared columns: REQUEST_ID, USER_REQUEST_IDX, TS_MS, USER_ID, USER_FEATURES, ACTION (0/1 here:
# 1 = a live stream was injected), BEHAVIOR_PROB (logging policy's P(logged action)).
LIVE_ID = "live_id"  # int64, the candidate live stream of this request (-1 when none is on air)
LIVE_FEATURES = "live_features"  # fixed-size list<float32>, the candidate's features
LIVE_HISTORY = "live_history"  # fixed-size list<int32>[50], last live streams watched, -1 = pad
VIDEO_HISTORY = "video_history"  # fixed-size list<int32>[50], last videos watched, -1 = pad
LIVE_WATCH_3W_S = "live_watch_3w_s"  # float32, live watch time over the past 3 weeks (groups)
LIVE_CLICK = "live_click"  # int8, the injected stream was clicked (0 when action = 0)
LIVE_WATCH_S = "live_watch_s"  # float32 >= 0, T^l (0 when action = 0)
VIDEO_WATCH_S = "video_watch_s"  # float32 >= 0, T^v: all video watch time of the request
N_VIDEOS = "n_videos"  # int16 >= 1, n: videos in the request
SESSION_END = "session_end"  # bool, the user left the app after this request
HISTORY_LENGTH = 50  # SL-MGAC section 4.1: the 50 most recent live and video items
NEXT_PREFIX = "next_"  # SL-MGAC samples: the user's next request, e.g. next_live_features


def next_column(column: str) -> str:
    """The column of an SL-MGAC sample holding ``column`` of the user's next request."""
    return f"{NEXT_PREFIX}{column}"


# --- Live-stream allocation log: schemas and helpers (SL-MGAC) ---------------------------------
META_LIVE_FEATURES = b"rliv.live_feature_names"
DONE = "done"  # bool, SL-MGAC samples: the transition ends the trajectory (live_samples terminal)
# SL-MGAC samples: where the request sits in the user's sessions (state inputs, live_samples)
SESSION_INDEX = "session_index_log1p"  # float32, log1p(sessions since the user's first request)
REQUEST_GAP = "request_gap_log1p_s"  # float32, log1p(seconds since the previous request), 0 first
NEXT_NEW_SESSION = "next_new_session"  # bool, the next request starts a session (True on last row)
SESSION_STATE_COLUMNS: tuple[str, ...] = (SESSION_INDEX, REQUEST_GAP)
NO_LIVE = -1  # LIVE_ID of a request with no live stream on air (action must be 0)
HISTORY_PAD = -1  # padding of LIVE_HISTORY / VIDEO_HISTORY
# Latent quantities a simulator hands to oracle policies (never logged).
TRUE_LIVE_AFFINITY = "true_live_affinity"  # the user's current latent live affinity
TRUE_EXPECTED_LIVE_WATCH_S = "true_expected_live_watch_s"  # E[T^l | inject]
TRUE_EXPECTED_VIDEO_WATCH_PER_VIDEO_S = "true_expected_video_watch_per_video_s"  # E[T^v/n | inject]

NEXT_STATE_COLUMNS: tuple[str, ...] = (
    USER_FEATURES, LIVE_FEATURES, LIVE_HISTORY, VIDEO_HISTORY, LIVE_ID, USER_GROUP,
    LIVE_WATCH_S, VIDEO_WATCH_S, N_VIDEOS, ACTION, *SESSION_STATE_COLUMNS,
)
"""Columns of the user's next request copied into an SL-MGAC sample as ``next_<column>``: the
next state, plus its logged action and watch times (the bins of EQUATIONS.md 1.12)."""


def id_vector(n: int) -> pa.DataType:
    """The Arrow type of a fixed-size list of ``n`` int32 ids (behaviour histories)."""
    return pa.list_(pa.int32(), n)


def live_log_schema(
    user_feature_names: list[str],
    live_feature_names: list[str],
    *,
    history_length: int = HISTORY_LENGTH,
    source: str = "unknown",
) -> pa.Schema:
    """The live-stream allocation log: one row per feed request (SL-MGAC Eq. 1-5 inputs)."""
    fields = [
        pa.field(REQUEST_ID, pa.int64(), nullable=False),
        pa.field(USER_REQUEST_IDX, pa.int64(), nullable=False),
        pa.field(TS_MS, pa.int64(), nullable=False),
        pa.field(USER_ID, pa.int64(), nullable=False),
        pa.field(USER_FEATURES, feature_vector(len(user_feature_names)), nullable=False),
        pa.field(LIVE_ID, pa.int64(), nullable=False),
        pa.field(LIVE_FEATURES, feature_vector(len(live_feature_names)), nullable=False),
        pa.field(LIVE_HISTORY, id_vector(history_length), nullable=False),
        pa.field(VIDEO_HISTORY, id_vector(history_length), nullable=False),
        pa.field(LIVE_WATCH_3W_S, pa.float32(), nullable=False),
        pa.field(ACTION, pa.int8(), nullable=False),
        pa.field(BEHAVIOR_PROB, pa.float32(), nullable=False),
        pa.field(LIVE_CLICK, pa.int8(), nullable=False),
        pa.field(LIVE_WATCH_S, pa.float32(), nullable=False),
        pa.field(VIDEO_WATCH_S, pa.float32(), nullable=False),
        pa.field(N_VIDEOS, pa.int16(), nullable=False),
        pa.field(SESSION_END, pa.bool_(), nullable=False),
    ]
    metadata = {
        META_USER_FEATURES: json.dumps(list(user_feature_names)),
        META_LIVE_FEATURES: json.dumps(list(live_feature_names)),
        META_SOURCE: source,
    }
    return pa.schema(fields, metadata=metadata)


LIVE_LOG_COLUMNS: tuple[str, ...] = tuple(live_log_schema([], []).names)
"""Every column of the live-stream allocation log, in file order."""


def live_sample_schema(log: pa.Schema) -> pa.Schema:
    """An SL-MGAC sample row: the log row, its user group, its session state, ``done``,
    ``next_new_session`` and the next request's :data:`NEXT_STATE_COLUMNS` as
    ``next_<column>`` (types of the log columns taken from the log schema ``log``)."""
    added = {USER_GROUP: pa.int16(), SESSION_INDEX: pa.float32(), REQUEST_GAP: pa.float32()}
    fields = [*(log.field(name) for name in LIVE_LOG_COLUMNS),
              *(pa.field(name, dtype, nullable=False) for name, dtype in added.items()),
              pa.field(DONE, pa.bool_(), nullable=False),
              pa.field(NEXT_NEW_SESSION, pa.bool_(), nullable=False)]
    for name in NEXT_STATE_COLUMNS:
        dtype = added[name] if name in added else log.field(name).type
        fields.append(pa.field(next_column(name), dtype, nullable=False))
    return pa.schema(fields, metadata=log.metadata)


def ids_to_arrow(matrix: np.ndarray) -> pa.FixedSizeListArray:
    """An (n, k) integer matrix as a fixed-size ``list<int32>`` array of n rows."""
    return vectors_to_arrow(matrix, np.int32)


def arrow_to_ids(column: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """A fixed-size ``list<int32>`` column as a writable (n, k) int32 matrix."""
    return arrow_to_matrix(column, np.int32)
