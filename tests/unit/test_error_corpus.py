"""One line for every error (issue 17, section 5): a corpus of broken inputs, built here, for
every ``rliv`` command.

Each case runs the CLI in-process (``rliv_ray.cli.main``) and asserts:

- exactly one line on stderr (file descriptor 2, so anything Ray, a C library or a warning
  writes counts), of the form ``rliv COMMAND: error: ...`` and naming what is wrong;
- the exit status: 1 when the input data is missing or invalid, 2 for bad arguments,
  settings, output locations and environment (tracking URI, cluster);
- no partial output: every file and folder of the case's directory is as it was (an OUT that
  did not exist is still absent; one that existed is unchanged);
- that no Ray runtime was started: every case fails at validation, before Ray.

A few cases also run as a real process (``python -m rliv_ray.cli``) to show the same line
without pytest's capturing in between. The cases that need a Ray runtime are in
``tests/integration/test_error_corpus_ray.py``.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from rliv_ray import schema as S
from rliv_ray.cli import EXIT_INVALID, EXIT_USAGE, main
from rliv_ray.data.live_config import LiveWorldConfig
from rliv_ray.data.live_generate import generate_live_world
from tests.logtables import make_log_table, write_log
from tests.sampleshards import write_shards

REPO = Path(__file__).resolve().parents[2]
WORLD = ["--users", "20", "--days", "2", "--quiet"]
TINY_LIVE = LiveWorldConfig(n_users=24, days=1, seed=3, history_length=16)
TINY_SL_MGAC = {"id_buckets": 64, "embedding_dim": 4, "attention_hidden": (4,),
                "shared_hidden": (8,), "actor_hidden": (4,), "rpn_hidden": (4,),
                "qrn_hidden": (4,)}


# --- shared, valid inputs (read-only for the cases) ------------------------------------------

@dataclass(frozen=True)
class Inputs:
    root: Path
    log: Path  # a valid user-author log (dataset directory with log/)
    world: Path  # a `rliv generate` output
    shards: Path  # RLIV-UA sample shards (build-samples layout)
    live: Path  # a `rliv generate-live` output
    live_samples: Path  # a `rliv build-live-samples` output
    policy: Path  # an SL-MGAC policy.pt (untrained)
    ua_run: Path  # a folder holding an RLIV-UA checkpoint


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> Inputs:
    root = tmp_path_factory.mktemp("corpus_inputs")
    log = root / "log"
    write_log(make_log_table(n_users=4, requests_per_user=10), log)
    assert main(["generate", str(root / "world"), *WORLD]) == 0
    shards = write_shards(root / "shards", rows=64, files=1)
    generate_live_world(root / "live", TINY_LIVE, n_files=1, progress=False)
    assert main(["build-live-samples", str(root / "live"), str(root / "live_samples"),
                 "--groups", "2", "--quiet"]) == 0
    return Inputs(root, log, root / "world", shards, root / "live", root / "live_samples",
                  _policy_file(root / "run_sl_mgac" / "policy.pt"), _ua_run(root / "run_ua",
                                                                          shards))


def _policy_file(path: Path) -> Path:
    import torch

    from rliv_ray.algorithms.sl_mgac.network import SLMGACNetwork, SLMGACSpec

    path.parent.mkdir(parents=True)
    schema = pq.read_schema(next((path.parents[1] / "live_samples" / "train").glob("*.parquet")))
    spec = SLMGACSpec(user_dim=schema.field(S.USER_FEATURES).type.list_size,
                      live_dim=schema.field(S.LIVE_FEATURES).type.list_size, groups=2,
                      **TINY_SL_MGAC)
    from dataclasses import asdict

    meta = {"spec": asdict(spec), "edges": [0.0], "groups": 2, "method": "SL-MGAC"}
    torch.save({"meta": json.dumps(meta), "state_dict": SLMGACNetwork(spec).state_dict()}, path)
    return path


def _ua_run(out: Path, shards: Path) -> Path:
    """A training output holding one RLIV-UA checkpoint, as `rliv train rliv-ua` writes it."""
    from rliv_ray.algorithms.common.checkpoint import build_module, module_description, write_module
    from rliv_ray.algorithms.rliv_ua.train import TrainSettings, build_config
    from rliv_ray.offline.shards import inspect_shards
    from rliv_ray.train_loop import CHECKPOINTS, LATEST

    small = {"hidden": (8,), "embedding_dim": 4, "id_buckets": 64, "id_rows_per_id": 0}
    config = build_config(inspect_shards(shards), TrainSettings(training=small))
    path = out / CHECKPOINTS / "iter_000002"
    description = module_description(config)
    write_module(build_module(description), path, description)
    meta = json.loads((path / "state.json").read_text())
    (path / "state.json").write_text(json.dumps({**meta, "iteration": 2, "updates": 6,
                                                 "metrics": {}}))
    (out / CHECKPOINTS / LATEST).write_text(path.name + "\n")
    return out


# --- broken inputs ---------------------------------------------------------------------------

def set_value(table: pa.Table, column: str, row: int, value) -> pa.Table:
    """``table`` with ``column[row] = value`` (the column keeps its type)."""
    values = table[column].to_pylist()
    values[row] = value
    index = table.schema.get_field_index(column)
    field_ = table.schema.field(index)
    return table.set_column(index, field_, pa.array(values, type=field_.type))


def ua_table(**kwargs) -> pa.Table:
    return make_log_table(n_users=4, requests_per_user=10, **kwargs)


def ua_log(tmp: Path, change: Callable[[pa.Table], pa.Table] = lambda t: t) -> Path:
    """A user-author log (dataset directory) with one change."""
    write_log(change(ua_table()), tmp / "bad_log")
    return tmp / "bad_log"


def live_log(tmp: Path, inputs: Inputs, change: Callable[[pa.Table], pa.Table]) -> Path:
    """The live-stream log of ``inputs`` with one change."""
    source = next((inputs.live / "log").glob("*.parquet"))
    out = tmp / "bad_live" / "log"
    out.mkdir(parents=True)
    pq.write_table(change(pq.read_table(source)), out / source.name)
    return tmp / "bad_live"


def shards_with(tmp: Path, change: Callable[[pa.Table], pa.Table]) -> Path:
    from tests.sampleshards import sample_table

    out = tmp / "bad_shards" / "samples"
    out.mkdir(parents=True)
    pq.write_table(change(sample_table(64, 0)), out / "part-00000.parquet")
    return tmp / "bad_shards"


def truncated(tmp: Path, source: Path, name: str = "bad_log") -> Path:
    """A copy of the log at ``source`` whose first file lost its second half."""
    files = sorted(source.rglob("*.parquet"))
    out = tmp / name / files[0].parent.name
    out.mkdir(parents=True)
    data = files[0].read_bytes()
    (out / files[0].name).write_bytes(data[: len(data) // 2])
    return tmp / name


def not_parquet(tmp: Path, name: str = "bad_log", subdir: str = "log") -> Path:
    out = tmp / name / subdir
    out.mkdir(parents=True)
    (out / "part-00000.parquet").write_text("user_id,author_id\n1,2\n")
    return tmp / name


def empty_dir(tmp: Path, name: str = "empty") -> Path:
    (tmp / name).mkdir()
    return tmp / name


def a_file(tmp: Path, name: str = "a_file", text: str = "not a folder\n") -> Path:
    (tmp / name).write_text(text)
    return tmp / name


def kuairand_src(tmp: Path, *, log_header: str | None = None, log_row: str | None = None,
                 user_header: str | None = None) -> Path:
    """A tiny KuaiRand-Pure release: one log, the user table and the video table."""
    from rliv_ray.data import kuairand as K

    src = tmp / "kuairand"
    src.mkdir()
    log_cols = list(K.CSV_COLUMNS)
    header = log_header or ",".join(log_cols)
    row = log_row or ",".join("1" for _ in log_cols)
    (src / "log_standard_4_08_to_4_21_pure.csv").write_text(f"{header}\n{row}\n")
    users = list(K.USER_TABLE_COLUMNS)
    (src / "user_features_pure.csv").write_text(
        (user_header or ",".join(users)) + "\n"
        + ",".join("full_active" if c == K.ACTIVE_DEGREE else "1" for c in users) + "\n")
    videos = list(K.VIDEO_TABLE_COLUMNS)
    (src / "video_features_basic_pure.csv").write_text(
        ",".join(videos) + "\n" + ",".join("1" for _ in videos) + "\n")
    return src


def sl_mgac_run_with(tmp: Path, content: bytes) -> Path:
    run = tmp / "run"
    run.mkdir()
    (run / "policy.pt").write_bytes(content)
    return run


# --- the corpus ------------------------------------------------------------------------------

@dataclass(frozen=True)
class Case:
    id: str
    code: int
    says: str
    """A fragment of the error line (case-sensitive)."""
    argv: Callable[[Path, Inputs], list]
    env: dict[str, str] = field(default_factory=dict)


def case(id_, code, says, argv, **env) -> Case:
    return Case(id_, code, says, argv, env)


U, D = EXIT_USAGE, EXIT_INVALID
NAN, INF = float("nan"), float("inf")

CORPUS = [
    # ope-grade
    case("ope-grade-seeds-0", U, "argument --seeds: must be >= 1",
         lambda t, i: ["ope-grade", "--seeds", "0", "--out", t / "o"]),
    case("ope-grade-unknown-world", U, "--worlds must name some of",
         lambda t, i: ["ope-grade", "--worlds", "mars", "--out", t / "o"]),
    case("ope-grade-gamma-above-1", U, "argument --live-gamma: must be in [0, 1]",
         lambda t, i: ["ope-grade", "--live-gamma", "1.5", "--out", t / "o"]),
    case("ope-grade-unknown-estimator", U, "unknown estimators ['bogus']",
         lambda t, i: ["ope-grade", "--estimators", "bogus", "--out", t / "o"]),
    case("ope-grade-missing-policy", D, "no such file or directory",
         lambda t, i: ["ope-grade", "--policy", f"X={t / 'missing'}", "--out", t / "o"]),
    # generate
    case("generate-files-0", U, "argument --files: must be >= 1",
         lambda t, i: ["generate", t / "o", "--files", "0", *WORLD]),
    case("generate-rows-negative", U, "argument --rows: must be >= 1",
         lambda t, i: ["generate", t / "o", "--rows", "-5", *WORLD]),
    case("generate-users-0", U, "argument --users: must be >= 1",
         lambda t, i: ["generate", t / "o", "--users", "0", "--days", "2", "--quiet"]),
    case("generate-unknown-field", U, "unknown UAWorldConfig fields: ['no_such_field']",
         lambda t, i: ["generate", t / "o", "--set", "no_such_field=1", *WORLD]),
    case("generate-nan-setting", U, "click_rate",
         lambda t, i: ["generate", t / "o", "--set", "click_rate=NaN", *WORLD]),
    case("generate-wrong-type-setting", U, "click_rate",
         lambda t, i: ["generate", t / "o", "--set", 'click_rate="high"', *WORLD]),
    case("generate-config-missing", U, "--config",
         lambda t, i: ["generate", t / "o", "--config", t / "nope.json", *WORLD]),
    case("generate-config-not-json", U, "--config",
         lambda t, i: ["generate", t / "o", "--config", a_file(t, "c.json", "{oops"), *WORLD]),
    case("generate-days-not-int", U, "argument --days: expected an integer, got 'two'",
         lambda t, i: ["generate", t / "o", "--users", "20", "--days", "two"]),
    case("generate-seed-negative", U, "argument --seed: must be >= 0",
         lambda t, i: ["generate", t / "o", "--seed", "-1", *WORLD]),
    case("generate-out-under-a-file", U, "is a file, not a directory",
         lambda t, i: ["generate", a_file(t) / "o", *WORLD]),
    case("generate-out-is-a-file", U, "is a file, not a directory",
         lambda t, i: ["generate", a_file(t), "--overwrite", *WORLD]),
    case("generate-out-in-proc", U, "cannot write",
         lambda t, i: ["generate", "/proc/self/rliv_out", *WORLD]),
    case("generate-out-exists", U, "already exists",
         lambda t, i: ["generate", empty_dir(t, "o"), *WORLD]),
    # generate-live
    case("generate-live-files-0", U, "argument --files: must be >= 1",
         lambda t, i: ["generate-live", t / "o", "--files", "0", "--users", "10", "--quiet"]),
    case("generate-live-unknown-field", U, "unknown LiveWorldConfig fields",
         lambda t, i: ["generate-live", t / "o", "--set", "bogus=2", "--quiet"]),
    case("generate-live-users-negative", U, "argument --users: must be >= 1",
         lambda t, i: ["generate-live", t / "o", "--users", "-3", "--quiet"]),
    case("generate-live-inf-setting", U, "beta",
         lambda t, i: ["generate-live", t / "o", "--set", "beta=Infinity", "--quiet"]),
    # convert-kuairand
    case("convert-kuairand-src-missing", D, "no such directory",
         lambda t, i: ["convert-kuairand", t / "nope", t / "o", "--quiet"]),
    case("convert-kuairand-src-empty", D, "no KuaiRand log files",
         lambda t, i: ["convert-kuairand", empty_dir(t), t / "o", "--quiet"]),
    case("convert-kuairand-wrong-log-header", D, "missing column(s)",
         lambda t, i: ["convert-kuairand", kuairand_src(t, log_header="a,b,c"), t / "o",
                       "--quiet"]),
    case("convert-kuairand-wrong-user-header", D, "user_features_pure.csv: missing column(s)",
         lambda t, i: ["convert-kuairand", kuairand_src(t, user_header="user_id,x"), t / "o",
                       "--quiet"]),
    case("convert-kuairand-not-a-number", D, "log_standard_4_08_to_4_21_pure.csv",
         lambda t, i: ["convert-kuairand", kuairand_src(t, log_row="x," * 7 + "x"), t / "o",
                       "--quiet"]),
    case("convert-kuairand-buckets-0", U, "argument --buckets: must be >= 1",
         lambda t, i: ["convert-kuairand", kuairand_src(t), t / "o", "--buckets", "0"]),
    case("convert-kuairand-chunk-rows-0", U, "argument --chunk-rows: must be >= 1",
         lambda t, i: ["convert-kuairand", kuairand_src(t), t / "o", "--chunk-rows", "0"]),
    # validate: every class of invalid log
    case("validate-missing", D, "no such file or directory",
         lambda t, i: ["validate", t / "nope", "--quiet"]),
    case("validate-empty-dir", D, "no Parquet files found",
         lambda t, i: ["validate", empty_dir(t), "--quiet"]),
    case("validate-truncated", D, "not a readable Parquet file",
         lambda t, i: ["validate", truncated(t, i.log), "--quiet"]),
    case("validate-not-parquet", D, "not a readable Parquet file",
         lambda t, i: ["validate", not_parquet(t), "--quiet"]),
    case("validate-wrong-dtype", D, "column 'user_id': expected int64, got string",
         lambda t, i: ["validate", ua_log(t, lambda x: x.set_column(
             x.schema.get_field_index(S.USER_ID), pa.field(S.USER_ID, pa.string()),
             x[S.USER_ID].cast(pa.string()))), "--quiet"]),
    case("validate-nan-watch-time", D, "column 'watch_time_s', row 3: NaN value",
         lambda t, i: ["validate", ua_log(t, lambda x: set_value(x, S.WATCH_TIME_S, 3, NAN)),
                       "--quiet"]),
    case("validate-inf-feature", D, "infinite value",
         lambda t, i: ["validate", ua_log(t, lambda x: set_value(
             x, S.USER_FEATURES, 2, [INF, 0.0, 0.0])), "--quiet"]),
    case("validate-negative-id", D, "column 'author_id', row 1: negative value -4",
         lambda t, i: ["validate", ua_log(t, lambda x: set_value(x, S.AUTHOR_ID, 1, -4)),
                       "--quiet"]),
    case("validate-label-2", D, "label value 2, expected 0 or 1",
         lambda t, i: ["validate", ua_log(t, lambda x: set_value(x, S.CLICK, 0, 2)), "--quiet"]),
    case("validate-propensity-0", D, "behavior_prob 0, expected in (0, 1]",
         lambda t, i: ["validate", ua_log(t, lambda x: set_value(x, S.BEHAVIOR_PROB, 0, 0.0)),
                       "--quiet"]),
    case("validate-propensity-above-1", D, "behavior_prob 1.5, expected in (0, 1]",
         lambda t, i: ["validate", ua_log(t, lambda x: set_value(x, S.BEHAVIOR_PROB, 0, 1.5)),
                       "--quiet"]),
    case("validate-request-id-goes-back", D, "request_id goes back",
         lambda t, i: ["validate", ua_log(t, lambda x: set_value(
             x, S.REQUEST_ID, 5, x[S.REQUEST_ID][0].as_py())), "--quiet"]),
    case("validate-duplicate-row", D, "appears twice in request",
         lambda t, i: ["validate", ua_log(t, lambda x: pa.concat_tables(
             [x.slice(0, 1), x.slice(0, 1), x.slice(2)])), "--quiet"]),
    case("validate-missing-column", D, "column 'gift': missing column",
         lambda t, i: ["validate", ua_log(t, lambda x: x.drop_columns([S.GIFT])), "--quiet"]),
    # summary
    case("summary-truncated", D, "not a readable Parquet file",
         lambda t, i: ["summary", truncated(t, i.log), "--quiet"]),
    case("summary-inf", D, "infinite value",
         lambda t, i: ["summary", ua_log(t, lambda x: set_value(x, S.WATCH_TIME_S, 0, INF)),
                       "--quiet"]),
    case("summary-sequence-length-0", U, "argument --sequence-length: must be >= 1",
         lambda t, i: ["summary", i.log, "--sequence-length", "0", "--quiet"]),
    case("summary-tracking-uri-scheme", U, "--tracking-uri nonsense://x",
         lambda t, i: ["summary", i.log, "--tracking-uri", "nonsense://x", "--quiet"]),
    case("summary-tracking-env-under-a-file", U, "$RLIV_TRACKING_URI",
         lambda t, i: ["summary", i.log, "--quiet"],
         RLIV_TRACKING_URI="sqlite:////proc/version/mlflow.db"),
    case("summary-corrupt-manifest", D, "manifest.json",
         lambda t, i: ["summary", _with_manifest(t, "{broken"), "--quiet"]),
    # check-world
    case("check-world-seeds-0", U, "argument --seeds: must be >= 2",
         lambda t, i: ["check-world", "--seeds", "0", *WORLD]),
    case("check-world-days-0", U, "days",
         lambda t, i: ["check-world", "--users", "20", "--days", "0", "--quiet"]),
    # build-samples and asa-report
    case("build-samples-truncated", D, "not a readable Parquet file",
         lambda t, i: ["build-samples", truncated(t, i.log), t / "o", "--quiet"]),
    case("build-samples-truncated-ray-path", D, "not a readable Parquet file",
         lambda t, i: ["build-samples", truncated(t, i.log), t / "o", "--workers", "2",
                       "--quiet"]),
    case("build-samples-not-parquet", D, "not a readable Parquet file",
         lambda t, i: ["build-samples", not_parquet(t), t / "o", "--quiet"]),
    case("build-samples-nan", D, "NaN value",
         lambda t, i: ["build-samples", ua_log(t, lambda x: set_value(x, S.WATCH_TIME_S, 7, NAN)),
                       t / "o", "--quiet", "--workers", "0"]),
    case("build-samples-empty-dir", D, "no .parquet files found",
         lambda t, i: ["build-samples", empty_dir(t), t / "o", "--quiet"]),
    case("build-samples-workers-200", U, "--workers 200",
         lambda t, i: ["build-samples", i.log, t / "o", "--workers", "200", "--quiet"]),
    case("build-samples-sequence-length-0", U, "argument --sequence-length: must be >= 1",
         lambda t, i: ["build-samples", i.log, t / "o", "--sequence-length", "0", "--quiet"]),
    case("build-samples-window-negative", U, "argument --window-ms: must be >= 0",
         lambda t, i: ["build-samples", i.log, t / "o", "--window-ms", "-1", "--quiet"]),
    case("build-samples-asa-epochs-0", U, "argument --asa-epochs: must be >= 1",
         lambda t, i: ["build-samples", i.log, t / "o", "--asa-epochs", "0", "--quiet"]),
    case("build-samples-bad-tracking-uri", U, "--tracking-uri",
         lambda t, i: ["build-samples", i.log, t / "o", "--tracking-uri", "mlruns", "--quiet"]),
    case("build-samples-tracking-server-down", U, "cannot reach",
         lambda t, i: ["build-samples", i.log, t / "o", "--tracking-uri", "http://127.0.0.1:9",
                       "--quiet"]),
    case("build-samples-out-inside-log", U, "lies inside the input",
         lambda t, i: ["build-samples", i.log, i.log / "samples", "--quiet"]),
    case("build-samples-live-log", D, "missing column",
         lambda t, i: ["build-samples", i.live, t / "o", "--quiet", "--workers", "0"]),
    case("asa-report-empty-dir", D, "no .parquet files found",
         lambda t, i: ["asa-report", empty_dir(t), "--quiet"]),
    case("asa-report-max-tuples-0", U, "argument --max-train-tuples: must be >= 1",
         lambda t, i: ["asa-report", i.log, "--max-train-tuples", "0", "--quiet"]),
    # train rliv-ua
    case("train-unknown-field", U, "unknown training field 'unknown_field'",
         lambda t, i: ["train", "rliv-ua", i.shards, "--out", t / "o", "--set",
                       "unknown_field=1", "--quiet"]),
    case("train-gamma-1.5", U, "gamma must be in [0, 1), got 1.5",
         lambda t, i: ["train", "rliv-ua", i.shards, "--out", t / "o", "--set", "gamma=1.5",
                       "--quiet"]),
    case("train-tau-0", U, "tau must be in (0, 1], got 0",
         lambda t, i: ["train", "rliv-ua", i.shards, "--out", t / "o", "--set", "tau=0",
                       "--quiet"]),
    case("train-wrong-type", U, "lr",
         lambda t, i: ["train", "rliv-ua", i.shards, "--out", t / "o", "--set", 'lr="fast"',
                       "--quiet"]),
    case("train-iterations-0", U, "argument --iterations: must be >= 1",
         lambda t, i: ["train", "rliv-ua", i.shards, "--out", t / "o", "--iterations", "0"]),
    case("train-checkpoint-every-0", U, "argument --checkpoint-every: must be >= 1",
         lambda t, i: ["train", "rliv-ua", i.shards, "--out", t / "o", "--checkpoint-every",
                       "0"]),
    case("train-updates-0", U, "argument --updates-per-iteration: must be >= 1",
         lambda t, i: ["train", "rliv-ua", i.shards, "--out", t / "o",
                       "--updates-per-iteration", "0"]),
    case("train-num-learners-negative", U, "argument --num-learners: must be >= 0",
         lambda t, i: ["train", "rliv-ua", i.shards, "--out", t / "o", "--num-learners", "-1"]),
    case("train-num-learners-200", U, "CPUs",
         lambda t, i: ["train", "rliv-ua", i.shards, "--out", t / "o", "--num-learners",
                       "200", "--quiet"]),
    case("train-inf-reward", D, "infinite",
         lambda t, i: ["train", "rliv-ua", shards_with(t, lambda x: set_value(
             x, S.reward_column(S.CLICK), 3, INF)), "--out", t / "o", "--quiet"]),
    case("train-nan-state", D, "NaN",
         lambda t, i: ["train", "rliv-ua", shards_with(t, lambda x: set_value(
             x, S.STATE, 5, [NAN] * len(x[S.STATE][0].as_py()))), "--out", t / "o",
                       "--quiet"]),
    case("train-negative-user", D, "negative",
         lambda t, i: ["train", "rliv-ua", shards_with(t, lambda x: set_value(
             x, S.USER_ID, 0, -1)), "--out", t / "o", "--quiet"]),
    case("train-action-outside-grid", D, "outside the grid",
         lambda t, i: ["train", "rliv-ua", shards_with(t, lambda x: set_value(
             x, S.ACTION, 0, 99)), "--out", t / "o", "--quiet"]),
    case("train-samples-empty", D, "no Parquet sample shards",
         lambda t, i: ["train", "rliv-ua", empty_dir(t), "--out", t / "o", "--quiet"]),
    case("train-samples-missing", D, "no such sample directory",
         lambda t, i: ["train", "rliv-ua", t / "nope", "--out", t / "o", "--quiet"]),
    case("train-samples-not-parquet", D, "not a readable Parquet file",
         lambda t, i: ["train", "rliv-ua", not_parquet(t, "s", "samples"), "--out", t / "o",
                       "--quiet"]),
    case("train-samples-are-a-log", D, "no feature names",
         lambda t, i: ["train", "rliv-ua", i.log / "log", "--out", t / "o", "--quiet"]),
    case("train-resume-nothing", U, "no checkpoint to resume from",
         lambda t, i: ["train", "rliv-ua", i.shards, "--out", t / "o", "--resume", "--quiet"]),
    case("train-bad-tracking-uri", U, "--tracking-uri",
         lambda t, i: ["train", "rliv-ua", i.shards, "--out", t / "o", "--tracking-uri",
                       "ftp://x/y", "--quiet"]),
    case("train-bad-tracking-env", U, "$RLIV_TRACKING_URI",
         lambda t, i: ["train", "rliv-ua", i.shards, "--out", t / "o", "--quiet"],
         RLIV_TRACKING_URI="sqlite:///relative/mlflow.db"),
    case("train-address-http", U, "an http:// dashboard address is for `rliv submit`",
         lambda t, i: ["train", "rliv-ua", i.shards, "--out", t / "o", "--address",
                       "http://127.0.0.1:8265", "--quiet"]),
    case("train-out-under-a-file", U, "is a file, not a directory",
         lambda t, i: ["train", "rliv-ua", i.shards, "--out", a_file(t) / "o", "--quiet"]),
    case("train-online-unknown-field", U, "unknown training field 'bogus'",
         lambda t, i: ["train", "rliv-ua-online", i.world, "--out", t / "o", "--set",
                       "bogus=1", "--quiet"]),
    # train sl-mgac
    case("train-sl-mgac-checkpoint-of-another-algorithm", D, "another algorithm",
         lambda t, i: ["train", "sl-mgac", i.live_samples, "--out", _copy(i.ua_run, t / "o"),
                       "--resume", "--quiet", *_tiny_sl_mgac()]),
    case("train-sl-mgac-not-live-samples", D, "not a `rliv build-live-samples` output",
         lambda t, i: ["train", "sl-mgac", i.shards, "--out", t / "o", "--quiet"]),
    case("train-sl-mgac-groups", U, "built with K=2 user groups, not 3",
         lambda t, i: ["train", "sl-mgac", i.live_samples, "--out", t / "o", "--set",
                       "groups=3", "--quiet"]),
    case("train-sl-mgac-bins-decreasing", U, "bin boundaries must be strictly increasing",
         lambda t, i: ["train", "sl-mgac", i.live_samples, "--out", t / "o", "--set",
                       "live_bins=[0,30,10]", "--quiet"]),
    case("train-sl-mgac-gamma", U, "gamma",
         lambda t, i: ["train", "sl-mgac", i.live_samples, "--out", t / "o", "--set",
                       "gamma=-0.5", "--quiet"]),
    case("train-sl-mgac-method", U, "bogus",
         lambda t, i: ["train", "sl-mgac", i.live_samples, "--out", t / "o", "--method",
                       "bogus", "--quiet"]),
    # rerank
    case("rerank-not-a-model", D, "not an RLIV-UA scorer",
         lambda t, i: ["rerank", a_file(t, "scorer.pt"), i.shards]),
    case("rerank-missing-model", D, "scorer.pt",
         lambda t, i: ["rerank", t / "scorer.pt", i.shards]),
    case("rerank-a-policy-of-another-algorithm", D, "an SL-MGAC policy",
         lambda t, i: ["rerank", i.policy, i.shards]),
    case("rerank-epsilon-2", U, "argument --epsilon: must be in [0, 1]",
         lambda t, i: ["rerank", a_file(t, "scorer.pt"), i.shards, "--epsilon", "2"]),
    case("rerank-top-k-0", U, "argument --top-k: must be >= 1",
         lambda t, i: ["rerank", a_file(t, "scorer.pt"), i.shards, "--top-k", "0"]),
    case("rerank-tower-weight", U, "--tower",
         lambda t, i: ["rerank", a_file(t, "scorer.pt"), i.shards, "--tower", "follow=lots"]),
    # evaluate-ope
    case("evaluate-ope-not-a-model", D, "policy.pt",
         lambda t, i: ["evaluate-ope", i.live_samples, sl_mgac_run_with(t, b"hello"),
                       "--quiet"]),
    case("evaluate-ope-run-of-another-algorithm", D, "policy.pt",
         lambda t, i: ["evaluate-ope", i.live_samples, i.ua_run, "--quiet"]),
    case("evaluate-ope-seeds-0", U, "argument --seeds: must be >= 1",
         lambda t, i: ["evaluate-ope", i.live_samples, i.policy.parent, "--seeds", "0"]),
    case("evaluate-ope-epsilon", U, "argument --epsilon: must be in [0, 1]",
         lambda t, i: ["evaluate-ope", i.live_samples, i.policy.parent, "--epsilon", "1.5"]),
    case("evaluate-ope-cap", U, "--cap",
         lambda t, i: ["evaluate-ope", i.live_samples, i.policy.parent, "--cap", "lots"]),
    case("evaluate-ope-samples-are-a-ua-log", D, "its manifest does not name the world",
         lambda t, i: ["evaluate-ope", i.log, i.policy.parent, "--quiet"]),
    # ope
    case("ope-tau-0", U, "tau",
         lambda t, i: ["ope", i.live, "--policy", i.policy, "--tau", "0", "--quiet"]),
    case("ope-gamma", U, "gamma",
         lambda t, i: ["ope", i.live, "--policy", i.policy, "--gamma", "1.5", "--quiet"]),
    case("ope-epsilon", U, "epsilon",
         lambda t, i: ["ope", i.live, "--policy", i.policy, "--epsilon", "-0.1", "--quiet"]),
    case("ope-estimator", U, "bogus",
         lambda t, i: ["ope", i.live, "--policy", i.policy, "--estimators", "ips,bogus"]),
    case("ope-bootstrap-negative", U, "bootstrap",
         lambda t, i: ["ope", i.live, "--policy", i.policy, "--bootstrap", "-1"]),
    case("ope-inf-reward", D, "infinite value",
         lambda t, i: ["ope", live_log(t, i, lambda x: set_value(x, S.VIDEO_WATCH_S, 4, INF)),
                       "--policy", i.policy, "--beta", "0.5", "--workers", "0", "--quiet"]),
    case("ope-duplicate-request", D, "request_id",
         lambda t, i: ["ope", live_log(t, i, lambda x: pa.concat_tables(
             [x.slice(0, 2), x.slice(1)])), "--policy", i.policy, "--beta", "0.5",
                       "--workers", "0", "--quiet"]),
    case("ope-propensity-above-1", D, "behavior_prob",
         lambda t, i: ["ope", live_log(t, i, lambda x: set_value(x, S.BEHAVIOR_PROB, 0, 1.5)),
                       "--policy", i.policy, "--beta", "0.5", "--workers", "0", "--quiet"]),
    case("ope-policy-not-a-model", D, "not",
         lambda t, i: ["ope", i.live, "--policy", a_file(t, "policy.pt"), "--workers", "0",
                       "--quiet"]),
    case("ope-workers-200", U, "--workers 200",
         lambda t, i: ["ope", i.live, "--policy", i.policy, "--workers", "200", "--quiet"]),
    case("ope-out-under-a-file", U, "is a file, not a directory",
         lambda t, i: ["ope", i.live, "--policy", i.policy, "--out", a_file(t) / "o",
                       "--workers", "0", "--quiet"]),
    # evaluate and fit-simulator
    case("evaluate-world-missing", D, "no such directory",
         lambda t, i: ["evaluate", t / "nope", "--quiet"]),
    case("evaluate-seeds-0", U, "argument --seeds: must be >= 1",
         lambda t, i: ["evaluate", i.world, "--seeds", "0", "--quiet"]),
    case("evaluate-buckets-0", U, "argument --buckets: must be >= 1",
         lambda t, i: ["evaluate", i.world, "--buckets", "0", "--quiet"]),
    case("evaluate-workers-200", U, "--workers 200",
         lambda t, i: ["evaluate", i.world, "--workers", "200", "--quiet"]),
    case("evaluate-epsilon", U, "argument --epsilon: must be in [0, 1]",
         lambda t, i: ["evaluate", i.world, "--epsilon", "3", "--quiet"]),
    case("evaluate-policy-not-a-model", D, "scorer.pt",
         lambda t, i: ["evaluate", i.world, "--policy", "RankingModel", "--policy",
                       f"UA=rliv:{a_file(t, 'scorer.pt')}", "--seeds", "1", "--quiet"]),
    case("evaluate-out-under-a-file", U, "is a file, not a directory",
         lambda t, i: ["evaluate", i.world, "--out", a_file(t) / "o", "--quiet"]),
    case("fit-simulator-epochs-0", U, "epochs",
         lambda t, i: ["fit-simulator", i.log, "--out", t / "o", "--epochs", "0", "--quiet"]),
    case("fit-simulator-holdout", U, "holdout",
         lambda t, i: ["fit-simulator", i.log, "--out", t / "o", "--holdout-share", "1.5",
                       "--quiet"]),
    case("fit-simulator-truncated", D, "not a readable Parquet file",
         lambda t, i: ["fit-simulator", truncated(t, i.log), "--out", t / "o", "--quiet"]),
    # live data
    case("build-live-samples-groups-0", U, "argument --groups: must be >= 1",
         lambda t, i: ["build-live-samples", i.live, t / "o", "--groups", "0", "--quiet"]),
    case("build-live-samples-test-share", U, "argument --test-share: must be in (0, 1)",
         lambda t, i: ["build-live-samples", i.live, t / "o", "--test-share", "1.5"]),
    case("build-live-samples-terminal", U, "terminal",
         lambda t, i: ["build-live-samples", i.live, t / "o", "--terminal", "bogus"]),
    case("build-live-samples-ua-log", D, "missing column",
         lambda t, i: ["build-live-samples", i.log, t / "o", "--quiet"]),
    case("build-live-samples-nan", D, "NaN value",
         lambda t, i: ["build-live-samples", live_log(t, i, lambda x: set_value(
             x, S.LIVE_WATCH_S, 2, NAN)), t / "o", "--quiet"]),
    case("build-live-samples-label", D, "live_click 3, expected 0 or 1",
         lambda t, i: ["build-live-samples", live_log(t, i, lambda x: set_value(
             x, S.LIVE_CLICK, 2, 3)), t / "o", "--quiet"]),
    case("validate-live-log-duplicate-request", D, "request_id",
         lambda t, i: ["validate", live_log(t, i, lambda x: pa.concat_tables(
             [x.slice(0, 2), x.slice(1)])), "--quiet"]),
    case("check-live-world-gamma", U, "argument --gamma: must be in [0, 1)",
         lambda t, i: ["check-live-world", "--gamma", "1.5", "--quiet"]),
    case("check-live-world-seeds-1", U, "argument --seeds: must be >= 2",
         lambda t, i: ["check-live-world", "--seeds", "1", "--quiet"]),
    case("check-live-world-out-under-a-file", U, "is a file, not a directory",
         lambda t, i: ["check-live-world", "--out", a_file(t) / "o", "--users", "10",
                       "--quiet"]),
    # sweep, ui, submit
    case("sweep-config-missing", U, "nope.yaml",
         lambda t, i: ["sweep", t / "nope.yaml"]),
    case("sweep-config-not-yaml", U, "c.yaml",
         lambda t, i: ["sweep", a_file(t, "c.yaml", "a: [unclosed\n")]),
    case("ui-port-negative", U, "argument --port: must be in [0, 65535]",
         lambda t, i: ["ui", "--port", "-1"]),
    case("ui-remote-host", U, "--allow-remote",
         lambda t, i: ["ui", "--host", "0.0.0.0"]),
    case("submit-unknown-command", U, "bogus",
         lambda t, i: ["submit", "--", "bogus"]),
    case("submit-missing-argument", U, "train",
         lambda t, i: ["submit", "--", "train", "rliv-ua"]),
    case("unknown-command", U, "invalid choice: 'bogus'",
         lambda t, i: ["bogus"]),
]


def _with_manifest(tmp: Path, text: str) -> Path:
    data = tmp / "data"
    write_log(ua_table(), data)
    (data / "manifest.json").write_text(text)
    return data


def _copy(src: Path, dst: Path) -> Path:
    import shutil

    shutil.copytree(src, dst)
    return dst


def _tiny_sl_mgac() -> list[str]:
    return [x for k, v in TINY_SL_MGAC.items() for x in ("--set", f"{k}={json.dumps(v)}")]


def snapshot(*roots: Path) -> dict[str, tuple[int, bytes | None]]:
    """Every path under ``roots`` with its mode and (for files) content."""
    seen = {}
    for root in roots:
        for path in [root, *sorted(root.rglob("*"))]:
            stat = path.lstat()
            seen[str(path)] = (stat.st_mode, path.read_bytes() if path.is_file() else None)
    return seen


def _show_warning(message, category, filename, lineno, file=None, line=None):
    sys.stderr.write(warnings.formatwarning(message, category, filename, lineno, line))


def run_in_process(argv: list[str], capfd) -> tuple[int, str]:
    """``rliv ARGV`` in this process; (exit status, everything written to fd 2). Warnings are
    printed as a plain run prints them."""
    capfd.readouterr()
    with warnings.catch_warnings():
        warnings.simplefilter("default")
        warnings.showwarning = _show_warning
        try:
            code = main(argv)
        except SystemExit as exit_:  # argparse
            code = exit_.code
    return code, capfd.readouterr().err


def test_the_corpus_is_large_and_covers_every_command():
    from rliv_ray.cli import build_parser

    commands = set(build_parser()._subparsers._group_actions[0].choices)
    covered = {c.id.split("-")[0] for c in CORPUS}
    named = {c for c in commands if any(x.id.startswith(c) for x in CORPUS)}
    assert len(CORPUS) >= 60 and named == commands, (commands - named, covered)
    assert len({c.id for c in CORPUS}) == len(CORPUS)


@pytest.mark.parametrize("bad", CORPUS, ids=[c.id for c in CORPUS])
def test_one_line_right_status_no_partial_output(bad: Case, inputs, tmp_path, capfd,
                                                 monkeypatch):
    monkeypatch.delenv("RLIV_TRACKING_URI", raising=False)
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    for name, value in bad.env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.chdir(tmp_path)
    argv = [str(a) for a in bad.argv(tmp_path, inputs)]
    before = snapshot(tmp_path, inputs.root)
    code, err = run_in_process(argv, capfd)
    lines = err.splitlines()
    assert len(lines) == 1, f"{argv}: {err}"
    command = "" if argv[0] in ("bogus", "submit") else f" {argv[0]}"  # submit: its command's
    assert re.match(rf"rliv{command}( [\w-]+)*: error: ", lines[0]), lines[0]
    assert bad.says in lines[0], lines[0]
    assert code == bad.code, lines[0]
    assert snapshot(tmp_path, inputs.root) == before, f"{argv} left something: {lines[0]}"
    if "ray" in sys.modules:
        import ray

        assert not ray.is_initialized(), f"{argv} started Ray"


SUBPROCESS = ["validate-truncated", "generate-out-in-proc", "train-unknown-field",
              "build-samples-truncated", "summary-tracking-env-under-a-file"]


@pytest.mark.parametrize("name", SUBPROCESS)
def test_the_same_line_from_a_real_process(name, inputs, tmp_path):
    bad = next(c for c in CORPUS if c.id == name)
    argv = [str(a) for a in bad.argv(tmp_path, inputs)]
    env = {k: v for k, v in os.environ.items() if k not in ("RLIV_TRACKING_URI", "RAY_ADDRESS")}
    env.update(bad.env, PYTHONPATH=str(REPO))
    before = snapshot(tmp_path)
    done = subprocess.run([sys.executable, "-m", "rliv_ray.cli", *argv], capture_output=True,
                          text=True, env=env, cwd=tmp_path, timeout=300)
    assert done.returncode == bad.code, (done.returncode, done.stderr)
    assert len(done.stderr.splitlines()) == 1 and bad.says in done.stderr, done.stderr
    assert snapshot(tmp_path) == before


def test_an_error_rliv_does_not_know_is_one_line_too(monkeypatch, capfd, tmp_path):
    """A bug still gives one line (status 70); RLIV_DEBUG=1 shows its traceback."""
    import rliv_ray.cli as cli

    def broken(args):
        raise RuntimeError("something nobody foresaw\nwith a second line")

    monkeypatch.setattr(cli, "cmd_validate", broken)
    monkeypatch.delenv("RLIV_DEBUG", raising=False)
    code, err = run_in_process(["validate", str(tmp_path)], capfd)
    assert code == 70 and err.count("\n") == 1, err
    assert "unexpected RuntimeError: something nobody foresaw with a second line" in err
    monkeypatch.setenv("RLIV_DEBUG", "1")
    with pytest.raises(RuntimeError, match="nobody foresaw"):
        main(["validate", str(tmp_path)])


def test_errors_that_ray_wraps_keep_their_status_and_line():
    from rliv_ray.checks import EXIT_BUG, classify
    from rliv_ray.offline.prelearner import ShardError

    class RayTaskError(Exception):  # what Ray raises for an error in a worker
        pass

    wrapped = RayTaskError("ray::MapBatches() (pid=1)\n  File ...\nrliv_ray.offline.prelearner."
                           "ShardError: column 'state', row 3: NaN or infinite value")
    assert classify(wrapped) == (EXIT_INVALID, "column 'state', row 3: NaN or infinite value")
    try:
        raise RayTaskError("a wrapper") from ShardError("f.parquet: column 'action', row 0")
    except RayTaskError as err:
        assert classify(err) == (EXIT_INVALID, "f.parquet: column 'action', row 0")
    assert classify(RuntimeError("?")) is None and EXIT_BUG == 70
