"""build-live-samples: the 4:1 user split, train-only group edges, parts, manifest, errors, CLI."""

import argparse
import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from rliv_ray import schema as S
from rliv_ray.cli import CLIError, _parse_override
from rliv_ray.cli_live import add_live_parsers
from rliv_ray.data import io
from rliv_ray.data.live_build import TEST_DIR, TRAIN_DIR, build_live_samples
from rliv_ray.data.live_config import LiveWorldConfig
from rliv_ray.data.live_generate import generate_live_world
from rliv_ray.data.live_samples import group_edges, user_watch_3w
from rliv_ray.data.validate import LogValidationError
from rliv_ray.ope.split import split_users

TINY = LiveWorldConfig(n_users=200, days=1, seed=11)


@pytest.fixture(scope="module")
def logs(tmp_path_factory):
    out = tmp_path_factory.mktemp("live_build") / "world"
    generate_live_world(out, TINY, n_files=3, progress=False)
    return out


@pytest.fixture(scope="module")
def built(logs, tmp_path_factory):
    out = tmp_path_factory.mktemp("live_build_out") / "samples"
    manifest = build_live_samples(logs, out, groups=5, seed=1, progress=False)
    return out, manifest


def _users(table: pa.Table) -> np.ndarray:
    return np.unique(table[S.USER_ID].to_numpy())


def test_train_and_test_users_are_disjoint_and_split_four_to_one(logs, built):
    out, _ = built
    train = _users(pq.read_table(out / TRAIN_DIR))
    test = _users(pq.read_table(out / TEST_DIR))
    assert len(np.intersect1d(train, test)) == 0
    assert len(train) + len(test) == TINY.n_users
    assert 0.1 < len(test) / TINY.n_users < 0.3
    _, expected_test = split_users(np.arange(TINY.n_users), test_share=0.2, seed=1)
    np.testing.assert_array_equal(test, np.flatnonzero(expected_test))


def test_edges_come_from_the_train_users_only(logs, built):
    _, manifest = built
    log = pq.read_table(logs / io.LOG_DIR)
    train_mask, _ = split_users(log[S.USER_ID].to_numpy(), test_share=0.2, seed=1)
    train_log = log.filter(pa.array(train_mask))
    expected = group_edges(user_watch_3w(train_log), 5)
    np.testing.assert_allclose(manifest["edges"], expected)


def test_held_out_users_do_not_move_the_edges(logs, built, tmp_path):
    (tmp_path / "log").mkdir()
    for file in sorted((logs / io.LOG_DIR).glob("*.parquet")):
        table = pq.read_table(file)
        _, test = split_users(table[S.USER_ID].to_numpy(), test_share=0.2, seed=1)
        watch = np.where(test, 1e6, table[S.LIVE_WATCH_3W_S].to_numpy()).astype(np.float32)
        index = table.schema.get_field_index(S.LIVE_WATCH_3W_S)
        pq.write_table(table.set_column(index, table.schema.field(S.LIVE_WATCH_3W_S),
                                        pa.array(watch)), tmp_path / "log" / file.name)
    manifest = build_live_samples(tmp_path / "log", tmp_path / "out", groups=5, seed=1,
                                  progress=False)
    np.testing.assert_allclose(manifest["edges"], built[1]["edges"])
    assert (pq.read_table(tmp_path / "out" / TEST_DIR)[S.LIVE_WATCH_3W_S].to_numpy() == 1e6).all()


def test_train_parts_are_transitions_and_test_parts_raw_rows(logs, built):
    out, _ = built
    train, test = pq.read_table(out / TRAIN_DIR), pq.read_table(out / TEST_DIR)
    for name in S.NEXT_STATE_COLUMNS:
        assert S.next_column(name) in train.column_names
    assert train.schema.field(S.DONE).type == pa.bool_()
    assert set(train[S.USER_GROUP].to_numpy()) <= set(range(5))
    log_schema = pq.read_schema(sorted((logs / io.LOG_DIR).glob("*.parquet"))[0])
    assert test.schema.equals(log_schema, check_metadata=True)
    assert (sorted(p.name for p in (out / TRAIN_DIR).iterdir())
            == [io.part_name(i) for i in range(3)])


def test_manifest_records_split_groups_counts_and_source(logs, built):
    out, manifest = built
    on_disk = json.loads((out / io.MANIFEST).read_text())
    assert on_disk == manifest
    assert (manifest["groups"], manifest["test_share"], manifest["seed"]) == (5, 0.2, 1)
    assert len(manifest["edges"]) == 4 and manifest["files"] == 3
    for split in (TRAIN_DIR, TEST_DIR):
        parts = sorted((out / split).glob("*.parquet"))
        assert manifest[split]["parts"] == len(parts)
        assert manifest[split]["rows"] == sum(pq.read_metadata(p).num_rows for p in parts)
    assert manifest["train"]["rows"] + manifest["test"]["rows"] == io.read_manifest(logs)["rows"]
    assert manifest["train"]["users"] + manifest["test"]["users"] == TINY.n_users
    assert LiveWorldConfig.from_dict(manifest["source"]["world"]) == TINY


def test_too_many_groups_names_k_and_the_users(logs, tmp_path):
    with pytest.raises(ValueError, match=r"group count K=1000 is larger than the number of "
                       r"users with live watch time \(\d+\), among the \d+ train users"):
        build_live_samples(logs, tmp_path / "out", groups=1000, progress=False)
    assert not (tmp_path / "out").exists()


def test_existing_output_is_refused(logs, tmp_path):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "keep.txt").write_text("mine")
    with pytest.raises(io.OutputExistsError, match="already exists"):
        build_live_samples(logs, tmp_path / "out", progress=False)
    assert (tmp_path / "out" / "keep.txt").read_text() == "mine"
    build_live_samples(logs, tmp_path / "out", groups=3, overwrite=True, progress=False)
    assert not (tmp_path / "out" / "keep.txt").exists()
    assert (tmp_path / "out" / io.MANIFEST).exists()


def test_a_bad_row_raises_and_leaves_no_output(logs, tmp_path):
    bad_dir = tmp_path / "bad"
    bad_dir.mkdir()
    files = sorted((logs / io.LOG_DIR).glob("*.parquet"))
    for file in files[:-1]:
        (bad_dir / file.name).write_bytes(file.read_bytes())
    table = pq.read_table(files[-1])
    row = int(np.flatnonzero(table[S.LIVE_ID].to_numpy() >= 0)[3])
    action = table[S.ACTION].to_numpy().copy()
    action[row] = 2
    index = table.schema.get_field_index(S.ACTION)
    pq.write_table(table.set_column(index, table.schema.field(S.ACTION),
                                    pa.array(action, pa.int8())), bad_dir / files[-1].name)
    with pytest.raises(LogValidationError, match="action 2, expected 0 or 1") as err:
        build_live_samples(bad_dir, tmp_path / "out", groups=3, progress=False)
    assert (err.value.column, err.value.row) == (S.ACTION, row)
    assert not (tmp_path / "out").exists()
    assert not list(tmp_path.glob("out.tmp-*"))


def test_a_bad_watch_time_is_named_by_the_first_pass(logs, tmp_path):
    table = pq.read_table(sorted((logs / io.LOG_DIR).glob("*.parquet"))[0])
    watch = table[S.LIVE_WATCH_3W_S].to_numpy().copy()
    watch[5] = np.nan
    index = table.schema.get_field_index(S.LIVE_WATCH_3W_S)
    path = tmp_path / "one.parquet"
    pq.write_table(table.set_column(index, table.schema.field(S.LIVE_WATCH_3W_S),
                                    pa.array(watch, pa.float32())), path)
    with pytest.raises(LogValidationError, match="NaN") as err:
        build_live_samples(path, tmp_path / "out", groups=3, progress=False)
    assert err.value.column == S.LIVE_WATCH_3W_S


def _parser() -> argparse.ArgumentParser:
    """A parser whose ``add`` mirrors ``rliv_ray.cli.build_parser``'s."""
    parser = argparse.ArgumentParser(prog="rliv")
    sub = parser.add_subparsers(dest="command", required=True)

    def add(name, func, help_text):
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.set_defaults(func=func)
        p.add_argument("--quiet", action="store_true")
        return p

    add_live_parsers(add, _parse_override)
    return parser


def _run(argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    return args.func(args)


def test_cli_generates_and_builds_end_to_end(tmp_path, capsys):
    world, samples = tmp_path / "world", tmp_path / "samples"
    assert _run(["generate-live", str(world), "--users", "60", "--days", "1", "--seed", "2",
                 "--files", "2", "--set", "beta=0.4", "--quiet"]) == 0
    said = capsys.readouterr().out
    assert "of 60 users" in said and "injected one into" in said
    world_config = io.read_manifest(world)["world"]
    assert (world_config["n_users"], world_config["beta"]) == (60, 0.4)
    assert _run(["build-live-samples", str(world), str(samples), "--groups", "3",
                 "--quiet"]) == 0
    said = capsys.readouterr().out
    assert "3 activity groups, edges [0.0, " in said
    assert io.read_manifest(samples)["groups"] == 3


def test_cli_bad_world_setting_and_too_many_groups(logs, tmp_path):
    with pytest.raises(CLIError, match="invalid world setting: quit_rate must be in"):
        _run(["generate-live", str(tmp_path / "w"), "--set", "quit_rate=2", "--quiet"])
    with pytest.raises(CLIError, match="invalid world setting: unknown LiveWorldConfig"):
        _run(["generate-live", str(tmp_path / "w"), "--set", "click_rate=0.1", "--quiet"])
    assert not (tmp_path / "w").exists()
    with pytest.raises(ValueError, match="group count K=500 is larger"):
        _run(["build-live-samples", str(logs), str(tmp_path / "s"), "--groups", "500",
              "--quiet"])
