"""Off-policy estimates as run metrics (rliv_ray.ope.metrics): the metric dict from a hand-checked
tiny log, the estimator and metric names, and the held-out scoring that training runs and sweep
trials share, equal to `rliv ope`'s on the same users."""

import math

import numpy as np
import pytest

from rliv_ray.ope.common import OPEEstimate
from rliv_ray.ope.metrics import (
    DEFAULT_RUN_ESTIMATORS,
    ESTIMATORS,
    OPEMetricSettings,
    check_metric,
    held_out_metrics,
    metric_keys,
    network_target,
    ope_metrics,
    parse_estimators,
)
from rliv_ray.ope.streaming import StreamSettings, block_stats, finalize
from tests.unit.test_cli_ope import CONFIG, write_policy


def test_the_metric_dict_of_a_three_row_log_by_hand():
    # w = pi(a|x) / mu(a|x) = 1/0.5, 0.5/0.5, 0.5/0.25 = 2, 1, 2; r = 1, 0, 2
    settings = StreamSettings(estimators=("ips", "snips", "dr"), n_bootstrap=0)
    stats = block_stats(np.array([1, 0, 1]), np.array([0.5, 0.5, 0.25]),
                        np.array([[0.0, 1.0], [0.5, 0.5], [0.5, 0.5]]), np.array([1.0, 0.0, 2.0]),
                        row_keys=np.arange(3), settings=settings)
    result = finalize(stats, settings, has_model=False)
    metrics = ope_metrics(result.estimates, ("ips", "snips", "dr"))
    assert list(metrics) == metric_keys(("ips", "snips", "dr"))
    assert metrics["eval/ips"] == pytest.approx((2 * 1 + 1 * 0 + 2 * 2) / 3)  # 2.0
    assert metrics["eval/snips"] == pytest.approx(6 / 5)  # sum w r / sum w
    assert metrics["eval/ips_ess"] == metrics["eval/snips_ess"] == pytest.approx(25 / 9)
    assert math.isnan(metrics["eval/ips_lo"]) and math.isnan(metrics["eval/ips_hi"])  # B = 0
    assert all(math.isnan(metrics[f"eval/dr{s}"]) for s in ("", "_lo", "_hi", "_ess"))
    assert result.skipped == {"dr": "no reward model"}


def test_every_estimate_gives_four_metrics_in_the_order_asked():
    estimates = [OPEEstimate("ncis", 3.0, 2.5, 3.5, 40.0, 50, "trajectories"),
                 OPEEstimate("snips", 0.2, 0.1, 0.3, 900.0, 1000, "rows")]
    metrics = ope_metrics(estimates, ("snips", "ncis"), prefix="x/")
    assert metrics == {"x/snips": 0.2, "x/snips_lo": 0.1, "x/snips_hi": 0.3,
                       "x/snips_ess": 900.0, "x/ncis": 3.0, "x/ncis_lo": 2.5,
                       "x/ncis_hi": 3.5, "x/ncis_ess": 40.0}


@pytest.mark.parametrize("value, words", [
    ("ncis,bogus", "unknown estimator 'bogus' (choose from ips, snips"),
    ("fqe", "'fqe' needs the whole log in memory"),
    ("wpdis", "use `rliv ope-grade`"),
    ("ncis,snips,ncis", "'ncis' is named twice"),
    (" , ", "name at least one of"),
    ([1, 2], "must be estimator names"),
])
def test_bad_estimator_lists_are_one_line(value, words):
    with pytest.raises(ValueError) as err:
        parse_estimators(value, "--ope")
    assert words in str(err.value) and "\n" not in str(err.value)
    assert str(err.value).startswith("--ope")


def test_estimator_names_and_selection_metrics():
    assert parse_estimators("ncis, dr") == ("ncis", "dr")
    assert set(DEFAULT_RUN_ESTIMATORS) <= set(ESTIMATORS)
    assert check_metric("eval/dr", ("ncis", "dr"), bootstrap=0) == "eval/dr"
    assert check_metric("eval/dr_lo", ("ncis", "dr"), bootstrap=10) == "eval/dr_lo"
    for metric, words in (("eval/snips", "snips is not among the estimators"),
                          ("eval/dr_hi", "must be one of eval/ncis, eval/dr"),
                          ("dr", "must be one of"),
                          ("eval/loss", "must be one of")):
        with pytest.raises(ValueError, match=words):
            check_metric(metric, ("ncis", "dr"), bootstrap=10)
    with pytest.raises(ValueError, match="bootstrap is 0"):
        check_metric("eval/dr_lo", ("dr",), bootstrap=0)


def test_the_cli_default_is_the_modules():
    from rliv_ray.cli_models import OPE_DEFAULT

    assert OPE_DEFAULT == DEFAULT_RUN_ESTIMATORS


@pytest.fixture(scope="module")
def samples(tmp_path_factory):
    from rliv_ray.data.live_build import build_live_samples
    from rliv_ray.data.live_generate import generate_live_world

    root = tmp_path_factory.mktemp("metrics")
    generate_live_world(root / "live", CONFIG, n_files=2, progress=False)
    build_live_samples(root / "live", root / "samples", groups=3, progress=False)
    return root / "samples"


def test_held_out_metrics_are_rliv_opes_estimates(samples, tmp_path):
    """The held-out scoring of training runs and sweep trials gives what `rliv ope` gives on
    the same held-out users (the same code: streaming sums of the same files)."""
    from rliv_ray.ope.metrics import held_out_files
    from rliv_ray.ope.scan import scan
    from rliv_ray.ope.targets import TargetSpec

    policy = write_policy(tmp_path / "policy.pt")
    settings = OPEMetricSettings(estimators=("ncis", "snips", "dr", "pdis"), bootstrap=30)
    target = network_target(policy, epsilon=0.2, reward_scale=0.01)
    metrics, skipped = held_out_metrics(samples, target, settings, beta=CONFIG.beta)
    assert skipped == {} and list(metrics) == metric_keys(settings.estimators)

    stream = settings.stream_settings()
    stats = scan(held_out_files(samples), TargetSpec(policy), stream, beta=CONFIG.beta)
    expected = ope_metrics(finalize(stats, stream).estimates, settings.estimators)
    assert metrics == pytest.approx(expected, rel=1e-12)
    for name in settings.estimators:
        assert metrics[f"eval/{name}_lo"] <= metrics[f"eval/{name}"] <= metrics[
            f"eval/{name}_hi"]


def test_a_policy_without_a_reward_model_reports_nan_for_the_dr_family(samples, tmp_path):
    policy = write_policy(tmp_path / "l2r.pt", supervised_split=False)
    target = network_target(policy, epsilon=0.2, reward_scale=0.01)
    metrics, skipped = held_out_metrics(samples, target, OPEMetricSettings(bootstrap=0),
                                        beta=CONFIG.beta)
    assert math.isfinite(metrics["eval/ncis"]) and math.isfinite(metrics["eval/snips"])
    assert math.isnan(metrics["eval/dr"]) and "has no reward model" in skipped["dr"]


def test_a_sweep_trial_reports_every_chosen_estimator(samples, tmp_path):
    """What rliv_ray.sweep.trainable reports to Tune at a checkpoint (report_metrics)."""
    from rliv_ray.sweep.config import parse_sweep
    from rliv_ray.sweep.evaluate import report_metrics

    config = parse_sweep({"algorithm": "sl-mgac", "data": {"path": str(samples.parent / "live")},
                          "evaluation": {"estimators": ["snips", "ncis_trajectory", "dr"],
                                         "metric": "eval/snips_lo", "bootstrap": 20}})
    assert config.metric == "eval/snips_lo"
    policy = write_policy(tmp_path / "policy.pt")
    got = report_metrics(config, str(samples), str(samples.parent / "live"), policy,
                         {"reward_scale": 0.01})
    assert list(got) == metric_keys(("snips", "ncis_trajectory", "dr"))
    assert all(math.isfinite(v) for v in got.values())
    assert config.metric in got


@pytest.mark.parametrize("argv, words", [
    (["--ope", "ncis,bogus"], "--ope: unknown estimator 'bogus'"),
    (["--ope", "magic"], "--ope: 'magic' needs the whole log in memory"),
    (["--ope-bootstrap", "-1"], "--ope-bootstrap must be >= 0"),
])
def test_train_refuses_bad_ope_settings_before_anything_runs(tmp_path, capsys, argv, words):
    from rliv_ray.cli import main

    code = main(["train", "sl-mgac", str(tmp_path / "samples"), "--out", str(tmp_path / "out"),
                 *argv])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and words in err
    assert err.startswith("rliv train: error: ") and not (tmp_path / "out").exists()


def test_sweep_refuses_an_unknown_estimator_with_one_line(tmp_path, capsys):
    import yaml

    from rliv_ray.cli import main

    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump({"algorithm": "sl-mgac", "data": {"path": "w"},
                                    "evaluation": {"estimators": ["ncis", "dros"]}}))
    assert main(["sweep", str(path), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "evaluation.estimators: unknown estimator 'dros'" in err
    assert not (tmp_path / "out").exists()
