"""The Open Bandit Dataset helper (rliv_ray.data.obd): extraction from a wheel, and the real
sample that ``make obd`` extracts (tests with ``obd_root`` skip without it, fail under CI)."""

from __future__ import annotations

import hashlib
import zipfile

import numpy as np
import pandas as pd
import pytest

from rliv_ray.data import obd
from rliv_ray.data.obd import extract_wheel, load_log, load_prior


def test_loader_reads_both_logs(obd_root):
    header = pd.read_csv(obd_root / "obd" / "random" / "all" / "all.csv", nrows=0).columns
    assert set(obd.LOG_COLUMNS) <= set(header)
    assert any(c.startswith("user_feature") for c in header)
    for policy, clicks in (("random", 38), ("bts", 42)):
        log = load_log(policy, "all", obd_root)
        assert (log.policy, log.campaign, log.n, log.n_items) == (policy, "all", 10_000, 80)
        for column in (log.item, log.position, log.click, log.propensity, log.timestamp):
            assert column.shape == (10_000,)
        assert log.item.dtype == np.int64 and log.position.dtype == np.int64
        np.testing.assert_array_equal(np.unique(log.item), np.arange(80))
        np.testing.assert_array_equal(np.unique(log.position), [0, 1, 2])
        assert log.click.sum() == clicks
        assert np.all(np.diff(log.timestamp) >= np.timedelta64(0))
    random_log, bts_log = load_log("random", root=obd_root), load_log("bts", root=obd_root)
    np.testing.assert_array_equal(random_log.propensity, 1 / 80)
    assert bts_log.propensity.std() > 0.01  # BTS's propensities change over the week


def test_prior_is_one_beta_per_item(obd_root):
    alpha, beta = load_prior("all", obd_root)
    assert alpha.shape == beta.shape == (80,)
    assert np.all(alpha > 0) and np.all(beta > 0)
    assert load_prior("men", obd_root)[0].shape == (34,)


def test_missing_data_says_run_make_obd(tmp_path):
    assert not obd.is_available(tmp_path)
    with pytest.raises(FileNotFoundError, match="run `make obd`"):
        load_log("random", "all", tmp_path)
    with pytest.raises(FileNotFoundError, match="run `make obd`"):
        load_prior("all", tmp_path)
    with pytest.raises(ValueError, match="policy must be one of"):
        load_log("epsilon", "all", tmp_path)


def _write_log(root, frame):
    path = root / "obd" / "random" / "all" / "all.csv"
    path.parent.mkdir(parents=True)
    frame.to_csv(path)


def test_loader_rejects_bad_rows(tmp_path):
    frame = pd.DataFrame({"timestamp": ["2019-11-24 00:00:01+00:00"] * 2, "item_id": [0, 1],
                          "position": [1, 4], "click": [0, 1], "propensity_score": [0.1] * 2})
    _write_log(tmp_path, frame)
    with pytest.raises(ValueError, match="position outside 1..3 on 1 rows"):
        load_log("random", "all", tmp_path)


def test_loader_names_a_missing_column(tmp_path):
    frame = pd.DataFrame({"timestamp": ["2019-11-24 00:00:01+00:00"], "item_id": [0],
                          "position": [1], "click": [0]})
    _write_log(tmp_path, frame)
    with pytest.raises(ValueError, match="lacks columns \\['propensity_score'\\]"):
        load_log("random", "all", tmp_path)


def _fake_wheel(path):
    members = {"obp/dataset/obd/random/all/all.csv": "a,b\n1,2\n",
               "obp/dataset/obd/random/.DS_Store": "junk",
               "obp/policy/conf/prior_bts.yaml": "all: {}\n",
               "obp-0.4.1.dist-info/LICENSE": "Apache\n",
               "obp/policy/contextfree.py": "code\n"}
    with zipfile.ZipFile(path, "w") as archive:
        for name, text in members.items():
            archive.writestr(name, text)
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_extract_takes_only_the_data_prior_and_licence(tmp_path, monkeypatch):
    wheel = tmp_path / obd.WHEEL_NAME
    monkeypatch.setattr(obd, "WHEEL_SHA256", _fake_wheel(wheel))
    dest = tmp_path / "out"
    (dest / "stale").mkdir(parents=True)  # a previous extraction is replaced whole
    assert extract_wheel(wheel, dest) == dest
    found = sorted(str(p.relative_to(dest)) for p in dest.rglob("*") if p.is_file())
    assert found == ["LICENSE", "SOURCE.txt", "obd/random/all/all.csv", "prior_bts.yaml"]
    assert obd.is_available(dest)
    extract_wheel(wheel, dest)  # idempotent
    assert obd.is_available(dest)


def test_extract_rejects_a_wrong_checksum(tmp_path):
    wheel = tmp_path / obd.WHEEL_NAME
    _fake_wheel(wheel)
    with pytest.raises(ValueError, match="expected 87dec9ca.*delete it and run `make obd`"):
        extract_wheel(wheel, tmp_path / "out")
    assert not (tmp_path / "out").exists()
