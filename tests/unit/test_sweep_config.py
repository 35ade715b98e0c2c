"""Sweep YAML parsing and validation, the sample-build cache key, the regret (no Ray)."""

import copy
import math
from pathlib import Path

import pytest
import yaml

from rliv_ray.sweep.config import load_sweep, parse_sweep
from rliv_ray.sweep.report import TrialRow, regret, summary_markdown
from rliv_ray.sweep.space import data_key, data_points, data_settings, training_fields

TUNE = Path(__file__).resolve().parents[2] / "tune"
BASE = {
    "algorithm": "sl-mgac",
    "data": {"generate": {"users": 100, "days": 1}, "samples": {"test_share": 0.2}},
    "training": {"iterations": 2, "set": {"train_batch_size_per_learner": 64}},
    "bins": {"paper": [0, 6, 15, 30, 60, 100, 600, 1200], "coarse": [0, 30, 1200]},
    "search": {"gamma": {"grid": [0.0, 0.9]}, "groups": {"grid": [2, 3]},
               "lr": {"loguniform": [1e-4, 1e-2]}, "live_bins": {"choice": ["paper", "coarse"]}},
}


def config_with(**changes):
    data = copy.deepcopy(BASE)
    for path, value in changes.items():
        *parents, last = path.split("__")
        node = data
        for key in parents:
            node = node.setdefault(key, {})
        if value is None:
            node.pop(last)
        else:
            node[last] = value
    return data


def error_of(data) -> str:
    with pytest.raises(ValueError) as info:
        parse_sweep(data)
    message = str(info.value)
    assert "\n" not in message
    return message


@pytest.mark.parametrize("name", sorted(p.stem for p in TUNE.glob("*.yaml")))
def test_shipped_configs_parse(name):
    config = load_sweep(TUNE / f"{name}.yaml")
    assert config.name == name
    assert config.metric.startswith("eval/")
    assert config.search


def test_the_default_sweep_has_four_trials_over_gamma_and_k():
    config = load_sweep(TUNE / "sl_mgac_small.yaml")
    grid = {d.name: d.values for d in config.search if d.kind == "grid"}
    assert {"gamma", "groups"} <= set(grid)
    assert math.prod(len(v) for v in grid.values()) * config.num_samples >= 4
    assert config.resources.max_concurrent_trials * 3 <= config.resources.ray_cpus


def test_a_valid_config():
    config = parse_sweep(BASE, default_name="x")
    assert config.name == "x" and config.algorithm == "sl-mgac"
    assert config.metric == "eval/ncis"
    dims = {d.name: d for d in config.search}
    assert dims["lr"].kind == "loguniform" and dims["lr"].values == (1e-4, 1e-2)
    assert config.bins["coarse"] == (0.0, 30.0, 1200.0)


@pytest.mark.parametrize("changes, expected", [
    ({"search__momentum": {"grid": [0.1]}}, "unknown hyperparameter 'momentum' for sl-mgac"),
    ({"search__sequence_length": {"grid": [10]}}, "unknown hyperparameter 'sequence_length'"),
    ({"bins__bad": [0, 30, 20]}, "bins.bad must increase strictly, got [0, 30, 20]"),
    ({"bins__bad": [0, 30, 30]}, "bins.bad must increase strictly"),
    ({"bins__bad": [5, 30]}, "bins.bad must start at 0"),
    ({"bins__bad": [0]}, "bins.bad needs at least 2 boundaries"),
    ({"bins__bad": "0,30"}, "bins.bad must be a list of numbers"),
    ({"bins__bad": [0, "a"]}, "bins.bad must be a list of numbers"),
    ({"search__live_bins": {"choice": ["paper", "nope"]}}, "'nope' is not a bin vector named"),
    ({"search__groups": {"grid": [2, 500]}}, "groups K=500 is larger than the 100 users"),
    ({"data__samples__groups": 101, "search__groups": None}, "groups K=101 is larger than"),
    ({"search__groups": {"uniform": [2, 5]}}, "search.groups takes grid or choice"),
    ({"search__gamma": {"grid": [0.5, 1.0]}}, "gamma must be in [0, 1), got 1.0"),
    ({"search__lr": {"loguniform": [1e-2, 1e-4]}}, "low < high"),
    ({"search__tau": {"grid": [0.0]}}, "tau must be in (0, 1], got 0.0"),
    ({"search__gamma": {"between": [0, 1]}}, "search.gamma must be one of"),
    ({"search__gamma": {"grid": []}}, "search.gamma.grid must be a non-empty list"),
    ({"algorithm": "ppo"}, "algorithm must be one of ('rliv-ua', 'sl-mgac'), got 'ppo'"),
    ({"learning_rate": 1}, "sweep config: unknown key 'learning_rate'"),
    ({"training__epochs": 3}, "training: unknown key 'epochs'"),
    ({"training__iterations": 0}, "training.iterations must be >= 1"),
    ({"training__set__gamma": 0.5}, "gamma: both searched and fixed in training.set"),
    ({"training__set__groups": 3, "search__groups": None}, "set it under data.samples"),
    ({"data__path": "x"}, "data needs exactly one of 'path'"),
    ({"scheduler": {"type": "pbt"}}, "scheduler.type must be one of"),
    ({"evaluation": {"ncis_kind": "stepwise"}}, "evaluation.ncis_kind is gone: name the NCIS"),
    ({"evaluation": {"estimators": ["ncis", "magic_8"]}},
     "evaluation.estimators: unknown estimator 'magic_8' (choose from ips, snips, dm, dr"),
    ({"evaluation": {"estimators": ["fqe"]}}, "evaluation.estimators: 'fqe' needs the whole"),
    ({"evaluation": {"estimators": []}}, "evaluation.estimators: name at least one"),
    ({"evaluation": {"estimators": "ncis"}}, None),  # one name is fine
    ({"evaluation": {"estimators": {"a": 1}}}, "evaluation.estimators must be a list"),
    ({"evaluation": {"metric": "eval/dr"}}, None),  # the default estimators have dr
    ({"evaluation": {"metric": "eval/ips"}},
     "evaluation.metric eval/ips: ips is not among the estimators ['ncis', 'snips', 'dr']"),
    ({"evaluation": {"metric": "train/loss/total"}}, "evaluation.metric must be one of eval/ncis"),
    ({"evaluation": {"metric": "eval/ncis_lo", "bootstrap": 0}}, "bootstrap is 0 (no interval)"),
    ({"evaluation": {"metric": 3}}, "evaluation.metric must be a metric name"),
    ({"evaluation": {"bootstrap": -1}}, "evaluation.bootstrap must be >= 0"),
    ({"evaluation": {"clip": 0}}, "evaluation.clip must be a number > 0"),
    ({"evaluation": {"gamma": 0}}, "evaluation.gamma must be in (0, 1], got 0"),
    ({"name": "a b"}, "name must hold only"),
])
def test_bad_configs_get_one_line(changes, expected):
    if expected is None:
        parse_sweep(config_with(**changes))
    else:
        assert expected in error_of(config_with(**changes))


def test_the_sweep_optimises_the_chosen_estimator():
    config = parse_sweep(config_with(evaluation={"estimators": ["dr", "ncis", "snips"],
                                                 "metric": "eval/snips_lo", "cap": 5,
                                                 "clip": 20, "bootstrap": 50}))
    assert config.metric == "eval/snips_lo" and config.estimators == ("dr", "ncis", "snips")
    settings = config.evaluation.ope_settings()
    assert (settings.ncis_cap, settings.clip, settings.bootstrap) == (5, 20, 50)
    assert parse_sweep(config_with(evaluation={"estimators": ["pdis", "ncis"]})).metric == \
        "eval/pdis"  # default: the first estimator's
    assert parse_sweep(BASE).estimators == ("ncis", "snips", "dr")


def test_rliv_ua_selects_on_a_world_metric_and_has_no_estimators():
    data = {"algorithm": "rliv-ua", "data": {"path": "w"},
            "search": {"gamma": {"grid": [0.8]}},
            "evaluation": {"metric": "eval/session_length"}}
    assert parse_sweep(data).metric == "eval/session_length"
    assert parse_sweep(data).estimators == ()
    data["evaluation"] = {"metric": "eval/ncis"}
    assert "must be eval/<one of ltv" in error_of(data)
    data["evaluation"] = {"estimators": ["ncis"]}
    assert "RLIV-UA has no off-policy estimator on its logs" in error_of(data)


def test_the_trials_are_planned_the_same_way_every_time():
    from rliv_ray.sweep.space import plan_trials, trial_index

    data = config_with(num_samples=2, search__tau={"uniform": [0.001, 0.02]})
    plan = plan_trials(parse_sweep(data))
    assert len(plan) == 2 * 2 * 2  # gamma x groups grids, twice; choice and draws per trial
    assert list(plan) == [f"trial_{i:05d}" for i in range(8)]
    assert plan == plan_trials(parse_sweep(copy.deepcopy(data)))  # same config: same trials
    assert [trial_index(t) for t in plan] == list(range(8))
    points = list(plan.values())
    assert [(p["gamma"], p["groups"]) for p in points[:4]] == [(0.0, 2), (0.0, 3), (0.9, 2),
                                                               (0.9, 3)]
    assert points[:4] != points[4:]  # the second sample draws anew ...
    assert [(p["gamma"], p["groups"]) for p in points[4:]] == [(p["gamma"], p["groups"])
                                                               for p in points[:4]]
    for p in points:
        assert 1e-4 <= p["lr"] <= 1e-2 and 0.001 <= p["tau"] <= 0.02
        assert p["live_bins"] in ("paper", "coarse")
    reseeded = plan_trials(parse_sweep(config_with(training__seed=7)))
    assert [p["lr"] for p in reseeded.values()] != [p["lr"] for p in points[:4]]


def test_trial_records_read_back_only_as_json(tmp_path):
    from rliv_ray.sweep.records import finished_trials, read_record, report_entry, write_record

    point = {"gamma": 0.9, "groups": 2}
    entry = report_entry({"iteration": 2, "eval/ncis": 1.5, "eval/dr": math.nan,
                          "train/loss/total": 0.3, "policy": "p.pt", "time_total_s": 9.0,
                          "done": False})
    assert entry == {"iteration": 2, "eval/ncis": 1.5, "eval/dr": None,
                     "train/loss/total": 0.3, "policy": "p.pt"}
    for trial_id, status in (("trial_00000", "finished"), ("trial_00001", "running"),
                             ("trial_00002", "stopped early"), ("trial_00003", "error")):
        write_record(tmp_path, {"trial_id": trial_id, "point": point, "status": status,
                                "reports": [entry], "error": None})
    plan = {f"trial_{i:05d}": point for i in range(5)}
    assert sorted(finished_trials(tmp_path, plan)) == ["trial_00000", "trial_00002"]
    plan["trial_00000"] = {"gamma": 0.5, "groups": 2}  # another point: not that trial's record
    assert sorted(finished_trials(tmp_path, plan)) == ["trial_00002"]
    (tmp_path / "trial_00002" / "trial.json").write_text('{"trial_id": "trial_00002"')
    assert read_record(tmp_path, "trial_00002") is None
    assert not list(tmp_path.glob("*/*.tmp-*"))


def test_regret_per_estimator_on_the_same_trials():
    from rliv_ray.sweep.report import regret_table, regrets

    rows = [TrialRow("a", {}, "finished", 4, 1.0, truth=50.0,
                     extra={"eval/ncis": 1.0, "eval/dr": 9.0}),
            TrialRow("b", {}, "finished", 4, 2.0, truth=40.0,
                     extra={"eval/ncis": 2.0, "eval/dr": 3.0}),
            TrialRow("c", {}, "finished", 4, 0.5, truth=45.0, extra={"eval/ncis": 0.5})]
    by = regrets(rows, ["eval/ncis", "eval/dr", "eval/snips"])
    assert by["eval/ncis"]["estimator_pick"] == "b" and by["eval/ncis"]["regret"] == 10.0
    assert by["eval/dr"]["estimator_pick"] == "a" and by["eval/dr"]["regret"] == 0.0
    assert math.isnan(by["eval/snips"]["regret"])  # no trial reported it
    table = regret_table(by, "eval/ncis")
    assert "| eval/ncis (the sweep's) | b | 40 | 10 | 20.0% |" in table
    assert "| eval/dr | a | 50 | 0 | 0.0% |" in table
    assert "| eval/snips | - | nan | nan | - |" in table


def test_cpu_budgets_that_would_hang_are_refused():
    parse_sweep(BASE).resources.check_fits()
    config = parse_sweep(config_with(resources={"ray_cpus": 4, "max_concurrent_trials": 2}))
    with pytest.raises(ValueError, match="2 trials at once need 6 logical CPUs"):
        config.resources.check_fits()


def test_rliv_ua_has_its_own_knobs():
    data = {"algorithm": "rliv-ua", "data": {"path": "w"},
            "search": {"gamma": {"grid": [0.8]}, "sequence_length": {"grid": [10, 30]}}}
    config = parse_sweep(data)
    assert config.metric == "eval/ltv"
    data["search"]["groups"] = {"grid": [2]}
    assert "unknown hyperparameter 'groups' for rliv-ua" in error_of(data)


def test_load_sweep_names_the_file(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(config_with(search__momentum={"grid": [1]})))
    with pytest.raises(ValueError, match=r"s\.yaml: search: unknown hyperparameter"):
        load_sweep(path)
    path.write_text("search: [unclosed")
    with pytest.raises(ValueError, match="not valid YAML"):
        load_sweep(path)


def test_trials_sharing_data_settings_share_one_build():
    config = parse_sweep(BASE)
    points = data_points(config)
    assert [p["groups"] for p in points] == [2, 3]  # gamma, lr and bins do not change the data
    a = data_settings(config, {"gamma": 0.0, "groups": 2, "lr": 1e-3, "live_bins": "paper"})
    b = data_settings(config, {"gamma": 0.9, "groups": 2, "lr": 5e-3, "live_bins": "coarse"})
    c = data_settings(config, {"gamma": 0.0, "groups": 3, "lr": 1e-3, "live_bins": "paper"})
    assert data_key(a) == data_key(b) != data_key(c)
    assert data_key(a).startswith("groups2_") and "/" not in data_key(a)


def test_cache_key_changes_with_any_data_setting():
    config = parse_sweep(BASE)
    key = data_key(data_settings(config, {"groups": 2}))
    other_world = parse_sweep(config_with(data__generate__seed=1))
    other_split = parse_sweep(config_with(data__samples__test_share=0.3))
    assert data_key(data_settings(other_world, {"groups": 2})) != key
    assert data_key(data_settings(other_split, {"groups": 2})) != key
    assert data_key(data_settings(config, {"groups": 2})) == key  # stable


def test_training_fields_resolve_bin_names_and_drop_data_settings():
    config = parse_sweep(BASE)
    fields = training_fields(config, {"gamma": 0.9, "groups": 3, "live_bins": "coarse"})
    assert fields == {"train_batch_size_per_learner": 64, "gamma": 0.9,
                      "live_bins": [0.0, 30.0, 1200.0]}


def test_regret_of_the_estimators_pick():
    rows = [TrialRow("a", {"gamma": 0.0}, "finished", 4, metric=10.0, truth=50.0),
            TrialRow("b", {"gamma": 0.9}, "finished", 4, metric=12.0, truth=40.0),
            TrialRow("c", {"gamma": 0.5}, "stopped early", 2, metric=5.0, truth=45.0)]
    result = regret(rows)
    assert result["estimator_pick"] == "b" and result["truth_pick"] == "a"
    assert result["regret"] == pytest.approx(10.0)
    assert result["relative_regret"] == pytest.approx(0.2)
    table = summary_markdown(rows, result, metric="eval/ncis", names=["gamma"])
    assert "| b | 0.9 | 4 | finished | 12 | 40 | estimator |" in table
    assert "| a | 0 | 4 | finished | 10 | 50 | truth |" in table
    assert "regret 10 (20.0% of the best true value)" in table
    same = regret(rows[:1])
    assert same["regret"] == 0.0 and same["estimator_pick"] == same["truth_pick"] == "a"
    assert math.isnan(regret([TrialRow("x", {}, "error", 0, math.nan)])["regret"])


def test_bad_config_is_one_line_and_exit_2_from_the_cli(tmp_path, capsys):
    from rliv_ray.cli import EXIT_USAGE, main

    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(config_with(search__groups={"grid": [2, 1000]})))
    assert main(["sweep", str(path), "--out", str(tmp_path / "out")]) == EXIT_USAGE
    err = capsys.readouterr().err
    assert err.startswith("rliv sweep: error: ") and err.count("\n") == 1
    assert "groups K=1000 is larger than the 100 users of the world" in err
    assert not (tmp_path / "out").exists()


def test_the_store_defaults_to_sqlite_in_the_working_directory(monkeypatch, tmp_path):
    from rliv_ray.sweep.tracking import sweep_tracking_uri

    for name in ("RLIV_TRACKING_URI", "MLFLOW_TRACKING_URI"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)
    assert sweep_tracking_uri(None) == f"sqlite:///{tmp_path.resolve()}/mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5001")
    assert sweep_tracking_uri(None) == "http://127.0.0.1:5001"
    monkeypatch.setenv("RLIV_TRACKING_URI", "sqlite:////tmp/a.db")
    assert sweep_tracking_uri(None) == "sqlite:////tmp/a.db"
    assert sweep_tracking_uri("sqlite:////tmp/b.db") == "sqlite:////tmp/b.db"


def test_an_unreachable_server_warns_once_and_tracking_stops(capsys):
    import socket

    from rliv_ray.sweep.tracking import SweepTracker

    with socket.socket() as s:  # a free loopback port: nothing listens there
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    tracker = SweepTracker(f"http://127.0.0.1:{port}")
    assert tracker.start_parent("s", {"gamma": 0.9}) is None
    assert tracker.child("t1", "sl-mgac__s__t1", {}) is None
    tracker.log("some-run", metrics={"eval/ncis": 1.0}, step=1)
    tracker.end("some-run")
    err = capsys.readouterr().err
    assert err.count("warning: MLflow at") == 1 and "the sweep goes on" in err
    assert not tracker.active


def test_a_resumed_asha_starts_with_the_finished_trials_reports():
    """ASHA's rungs record the finished trials' reports (report k at time k), so a re-run
    trial below the cutoff they set is stopped as in an uninterrupted sweep."""
    pytest.importorskip("ray.tune")
    from ray.tune.schedulers import TrialScheduler

    from rliv_ray.sweep.run import _asha

    config = parse_sweep(config_with(training__iterations=4, training__eval_every=1,
                                     scheduler={"type": "asha", "grace_period": 1,
                                                "reduction_factor": 2}))
    finished = [{"trial_id": f"trial_0000{i}", "reports": [
        {"iteration": k, "eval/ncis": 10.0 * i + k} for k in (1, 2, 3, 4)]} for i in (1, 2)]
    scheduler = _asha(config, finished)
    (bracket,) = scheduler._brackets
    first_rung = dict(bracket._rungs)[1]
    assert first_rung == {"finished:trial_00001": 11.0, "finished:trial_00002": 21.0}

    class Rerun:
        trial_id = "trial_00000"

    assert bracket.on_result(Rerun(), 1, 5.0) == TrialScheduler.STOP  # below both
