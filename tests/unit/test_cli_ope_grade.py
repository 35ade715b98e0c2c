"""``rliv ope-grade`` in-process on tiny worlds: both worlds end to end with a trained policy of
each algorithm, what the report holds, and each kind of bad input as one line."""

import json
import math

import pytest

from rliv_ray.cli import EXIT_INVALID, EXIT_USAGE, main
from rliv_ray.ope.grade_suite import LONG_TERM, PER_DECISION
from rliv_ray.ope.grade_ua import AS_LOGGED, AS_LOGGED_ESTIMATORS
from tests.unit.test_cli_ope import write_policy
from tests.unit.test_world_eval import _exported

TINY = ["--live-users", "30", "--live-days", "1", "--ua-users", "16", "--ua-days", "1",
        "--bootstrap", "10", "--fqe-iterations", "3", "--fqe-steps", "3", "--quiet"]


def run(capsys, *argv):
    code = main(["ope-grade", *map(str, argv)])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    """One tiny grading of both worlds with an SL-MGAC run and an RLIV-UA scorer."""
    root = tmp_path_factory.mktemp("grade")
    sl = write_policy(root / "policy.pt")
    ua = _exported(root / "scorer.pt", 18)
    out = root / "out"
    code = main(["ope-grade", *TINY, "--policy", f"SL={sl}", "--policy", f"UA=rliv:{ua}",
                 "--out", str(out)])
    return code, out


def test_both_worlds_are_graded_with_every_estimator(graded, one_thread):
    code, out = graded
    assert code == 0
    assert {p.name for p in out.iterdir()} == {"grade.md", "grade.json", "grade.png"}
    assert (out / "grade.png").read_bytes()[:4] == b"\x89PNG"
    report = json.loads((out / "grade.json").read_text())
    names = {w: [r["estimator"] for r in report["summary"] if r["world"] == w]
             for w in ("live", "rliv-ua")}
    assert names["live"] == list(PER_DECISION + LONG_TERM)
    assert names["rliv-ua"] == [*PER_DECISION, *LONG_TERM,
                                *(e + AS_LOGGED for e in AS_LOGGED_ESTIMATORS)]
    policies = {w: [p["policy"] for p in report["policies"] if p["world"] == w]
                for w in ("live", "rliv-ua")}
    assert policies["live"][0] == "logging" and policies["live"][-1] == "SL"
    assert policies["rliv-ua"][0] == "Logging" and policies["rliv-ua"][-1] == "UA"
    assert "immediate oracle" in policies["live"] and "Oracle" in policies["rliv-ua"]
    # FQE ran in the live world, not in the user-author world, and says why
    fqe = {r["world"]: r for r in report["summary"] if r["estimator"] == "fqe"}
    assert fqe["live"]["estimates"] == len(policies["live"])
    assert fqe["rliv-ua"]["estimates"] == 0
    assert any("FQE" in e["note"] for e in report["estimates"]
               if e["world"] == "rliv-ua" and e["estimator"] == "fqe")
    md = (out / "grade.md").read_text()
    assert "## live" in md and "## rliv-ua" in md and "true J" in md


def test_every_estimate_stands_beside_its_truth(graded):
    _, out = graded
    report = json.loads((out / "grade.json").read_text())
    truths = {(p["world"], p["policy"]): p for p in report["policies"]}
    for e in report["estimates"]:
        fact = truths[(e["world"], e["policy"])]
        key = "truth_per_decision" if e["question"] == "per-decision" else "truth_long_term"
        assert e["truth"] == pytest.approx(fact[key])
        assert e["truth_long_term"] == pytest.approx(fact["truth_long_term"])
    # the logging policy's weights are all 1: IPS, SNIPS and NCIS are the log's mean reward
    logged = {e["estimator"]: e["value"] for e in report["estimates"]
              if e["world"] == "live" and e["policy"] == "logging"}
    assert logged["ips"] == pytest.approx(logged["snips"]) == pytest.approx(logged["ncis"])
    assert all(e["relative_error"] is None or math.isfinite(e["relative_error"])
               for e in report["estimates"])


def test_printed_tables_name_both_worlds(tmp_path, capsys, one_thread):
    code, out, _ = run(capsys, *TINY, "--worlds", "live", "--live-users", "20", "--no-fqe",
                       "--estimators", "ips,snips,ncis_stepwise")
    assert code == 0
    assert "live: live-stream world" in out and "rliv-ua" not in out
    assert "ncis_stepwise" in out and "Spearman" in out


@pytest.mark.parametrize("argv, words", [
    (["--worlds", "mars"], "--worlds must name some of live, rliv-ua"),
    (["--mix", "1.5"], "--mix rates must lie in (0, 1)"),
    (["--estimators", "ips,oracle"], "unknown estimators ['oracle']"),
    (["--policy", "noequals"], "--policy expects NAME=SPEC"),
    (["--worlds", "live", "--policy", "X=rliv:/no/scorer"], "which --worlds leaves out"),
    (["--ua-set", "exposures_per_request=2"], "exposures_per_request = 1"),
])
def test_bad_arguments_are_one_line_and_exit_2(capsys, argv, words):
    code, _, err = run(capsys, *TINY, *argv)
    assert code == EXIT_USAGE
    assert words in err and len(err.strip().splitlines()) == 1


def test_a_missing_policy_is_invalid_data(capsys):
    code, _, err = run(capsys, *TINY, "--policy", "X=/no/such/run")
    assert code == EXIT_INVALID
    assert "no such file or directory" in err and len(err.strip().splitlines()) == 1


def test_a_crafted_policy_file_is_invalid_data(tmp_path, capsys):
    bad = tmp_path / "policy.pt"
    bad.write_bytes(b"not a policy at all")
    code, _, err = run(capsys, *TINY, "--policy", f"X={bad}")
    assert code == EXIT_INVALID and len(err.strip().splitlines()) == 1


def test_a_scorer_of_another_width_is_refused(tmp_path, capsys):
    scorer = _exported(tmp_path / "scorer.pt", 12)
    code, _, err = run(capsys, *TINY, "--policy", f"X=rliv:{scorer}")
    assert code == EXIT_USAGE and "width 12" in err and len(err.strip().splitlines()) == 1


def test_an_existing_out_is_refused_before_any_work(tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    code, _, err = run(capsys, *TINY, "--out", out)
    assert code == EXIT_USAGE and "--overwrite" in err
    assert (out / "keep.txt").read_text() == "mine"
