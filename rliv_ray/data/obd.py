"""The Open Bandit Dataset sample inside obp 0.4.1's wheel: fetch, locate and read it.

The Open Bandit Dataset (OBD; Saito, Aihara, Matsutani & Narita, "Open Bandit Dataset and
Pipeline: Towards Realistic and Reproducible Off-Policy Evaluation", NeurIPS 2021 Datasets and
Benchmarks) is a week of ZOZOTOWN fashion-recommendation logs: in each campaign ("all", "men",
"women") a uniform-random policy and a Bernoulli Thompson Sampling (BTS) policy each filled
three positions, and every impression was logged with its item, position, click and the
logging policy's propensity. The ``obp`` package's wheel ships a 10,000-row sample of each log.

We never install obp (it pins old libraries). ``make obd`` downloads its wheel with pip
(``py3-none-any``, nothing to build), and :func:`extract_wheel` checks the wheel's SHA-256 and
copies out only what the OBD check needs, into ``.cache/obd/obp-0.4.1`` (gitignored):

    obd/{random,bts}/{all,men,women}/*.csv   the logs and item tables
    prior_bts.yaml                            the Beta(alpha, beta) prior per item of the BTS
                                              policy at the start of the collection period:
                                              it *is* the evaluation policy
    LICENSE                                   obp's licence (Apache 2.0)
    SOURCE.txt                                where it came from (written last)

:func:`load_log` reads one log's columns into an :class:`ObdLog`, sorted by time as obp's
``OpenBanditDataset`` sorts it; :func:`load_prior` reads the prior. Set ``RLIV_OBD_DIR`` to read
another copy.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from rliv_ray.data.io import atomic_output_dir

__all__ = ["CAMPAIGNS", "ENV_DIR", "LEN_LIST", "N_ITEMS", "OBP_VERSION", "POLICIES",
           "WHEEL_NAME", "WHEEL_SHA256", "ObdLog", "extract_wheel", "is_available",
           "load_log", "load_prior", "obd_dir"]

OBP_VERSION = "0.4.1"
WHEEL_NAME = f"obp-{OBP_VERSION}-py3-none-any.whl"
WHEEL_SHA256 = "87dec9caf4283c25ab13036532e0a24566f1c7bdcad1653a8ded43b2f5ef8208"
"""SHA-256 of the wheel on PyPI (https://pypi.org/project/obp/0.4.1/#files)."""
ENV_DIR = "RLIV_OBD_DIR"
DEFAULT_DIR = Path(__file__).resolve().parents[2] / ".cache" / "obd" / f"obp-{OBP_VERSION}"
POLICIES = ("random", "bts")
CAMPAIGNS = ("all", "men", "women")
N_ITEMS = {"all": 80, "men": 34, "women": 46}
LEN_LIST = 3
"""Positions per impression list (OBD logs them as 1, 2, 3)."""

# --- the source's own column names ---------------------------------------------------------
TIMESTAMP, ITEM_ID, POSITION, CLICK, PROPENSITY = (
    "timestamp", "item_id", "position", "click", "propensity_score")
LOG_COLUMNS = (TIMESTAMP, ITEM_ID, POSITION, CLICK, PROPENSITY)

# --- what is taken from the wheel, and where it goes ----------------------------------------
_DATA_PREFIX = "obp/dataset/obd/"
_PRIOR_MEMBER = "obp/policy/conf/prior_bts.yaml"
_LICENSE_MEMBER = f"obp-{OBP_VERSION}.dist-info/LICENSE"
PRIOR_FILE, LICENSE_FILE, SOURCE_FILE, DATA_DIR = (
    "prior_bts.yaml", "LICENSE", "SOURCE.txt", "obd")


def obd_dir(root: str | os.PathLike | None = None) -> Path:
    """The extracted folder: ``root``, else ``$RLIV_OBD_DIR``, else ``.cache/obd/obp-0.4.1``."""
    if root is not None:
        return Path(root)
    return Path(os.environ[ENV_DIR]) if os.environ.get(ENV_DIR) else DEFAULT_DIR


def is_available(root: str | os.PathLike | None = None) -> bool:
    """True when the extraction finished (its last file, SOURCE.txt, exists)."""
    return (obd_dir(root) / SOURCE_FILE).is_file()


def _require(root: str | os.PathLike | None, relative: str) -> Path:
    path = obd_dir(root) / relative
    if not path.is_file():
        raise FileNotFoundError(f"Open Bandit Dataset file {path} not found: run `make obd` "
                                f"(or set {ENV_DIR} to an extracted copy)")
    return path


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _wanted(name: str) -> str | None:
    """Where a wheel member goes under the extracted folder, or None to leave it."""
    if name.startswith(_DATA_PREFIX) and name.endswith(".csv"):
        return f"{DATA_DIR}/{name[len(_DATA_PREFIX):]}"
    return {_PRIOR_MEMBER: PRIOR_FILE, _LICENSE_MEMBER: LICENSE_FILE}.get(name)


def extract_wheel(wheel: str | os.PathLike, dest: str | os.PathLike | None = None) -> Path:
    """Check ``wheel``'s SHA-256, then extract the OBD CSVs, the BTS prior and the licence into
    ``dest`` (replaced whole, atomically); returns ``dest``."""
    wheel, dest = Path(wheel), obd_dir(dest)
    digest = _sha256(wheel)
    if digest != WHEEL_SHA256:
        raise ValueError(f"{wheel} has SHA-256 {digest}, expected {WHEEL_SHA256}: a corrupt "
                         f"or different download; delete it and run `make obd` again")
    with zipfile.ZipFile(wheel) as archive, atomic_output_dir(dest, overwrite=True) as tmp:
        taken = []
        for member in archive.namelist():
            target = _wanted(member)
            if target is None:
                continue
            path = tmp / target
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(archive.read(member))
            taken.append(target)
        missing = {PRIOR_FILE, LICENSE_FILE} - set(taken)
        if missing or not any(t.startswith(DATA_DIR) for t in taken):
            raise ValueError(f"{wheel} lacks {sorted(missing) or 'the OBD CSVs'}")
        (tmp / SOURCE_FILE).write_text(
            f"Extracted from {WHEEL_NAME} (PyPI, sha256 {WHEEL_SHA256}) by `make obd`:\n"
            f"the Open Bandit Dataset sample (Saito et al. 2021) and the ZOZOTOWN BTS prior\n"
            f"(obp/policy/conf/prior_bts.yaml, the evaluation policy), under obp's LICENSE.\n"
            + "".join(f"  {t}\n" for t in sorted(taken)))
    return dest


@dataclass(frozen=True)
class ObdLog:
    """One OBD log, one row per impression, sorted by time."""

    policy: str  # "random" or "bts": the logging policy
    campaign: str  # "all", "men" or "women"
    n_items: int  # items of the campaign: actions 0 .. n_items - 1
    item: np.ndarray  # (n,) int64, the item shown
    position: np.ndarray  # (n,) int64 in [0, LEN_LIST): OBD's position 1, 2, 3 minus one
    click: np.ndarray  # (n,) float64 in {0, 1}
    propensity: np.ndarray  # (n,) float64 in (0, 1]: P(item at that position) under the
    # logging policy at that time
    timestamp: np.ndarray  # (n,) datetime64[ns] (UTC)

    @property
    def n(self) -> int:
        return len(self.item)


def _check_log(frame: pd.DataFrame, path: Path, n_items: int) -> None:
    checks = (
        (frame[ITEM_ID].between(0, n_items - 1), f"{ITEM_ID} outside 0..{n_items - 1}"),
        (frame[POSITION].between(1, LEN_LIST), f"{POSITION} outside 1..{LEN_LIST}"),
        (frame[CLICK].isin((0, 1)), f"{CLICK} not 0/1"),
        (frame[PROPENSITY].gt(0) & frame[PROPENSITY].le(1), f"{PROPENSITY} outside (0, 1]"),
    )
    for ok, what in checks:
        if not ok.all():
            raise ValueError(f"{path}: {what} on {int((~ok).sum())} rows")


def load_log(policy: str, campaign: str = "all",
             root: str | os.PathLike | None = None) -> ObdLog:
    """The ``policy`` log of ``campaign``, checked (columns, ranges) and sorted by timestamp."""
    if policy not in POLICIES:
        raise ValueError(f"policy must be one of {POLICIES}, got {policy!r}")
    if campaign not in CAMPAIGNS:
        raise ValueError(f"campaign must be one of {CAMPAIGNS}, got {campaign!r}")
    path = _require(root, f"{DATA_DIR}/{policy}/{campaign}/{campaign}.csv")
    header = pd.read_csv(path, nrows=0).columns
    absent = [c for c in LOG_COLUMNS if c not in header]
    if absent:
        raise ValueError(f"{path} lacks columns {absent}")
    frame = pd.read_csv(path, usecols=list(LOG_COLUMNS))
    _check_log(frame, path, N_ITEMS[campaign])
    frame[TIMESTAMP] = pd.to_datetime(frame[TIMESTAMP], utc=True)
    frame = frame.sort_values(TIMESTAMP, kind="stable")
    return ObdLog(policy, campaign, N_ITEMS[campaign],
                  frame[ITEM_ID].to_numpy(np.int64), frame[POSITION].to_numpy(np.int64) - 1,
                  frame[CLICK].to_numpy(np.float64), frame[PROPENSITY].to_numpy(np.float64),
                  frame[TIMESTAMP].dt.tz_localize(None).to_numpy("datetime64[ns]"))


def load_prior(campaign: str = "all",
               root: str | os.PathLike | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(alpha, beta), each (n_items,) float64 > 0: the ZOZOTOWN BTS prior of ``campaign``."""
    import yaml

    if campaign not in CAMPAIGNS:
        raise ValueError(f"campaign must be one of {CAMPAIGNS}, got {campaign!r}")
    path = _require(root, PRIOR_FILE)
    prior = yaml.safe_load(path.read_text())[campaign]
    alpha = np.asarray(prior["alpha"], dtype=np.float64)
    beta = np.asarray(prior["beta"], dtype=np.float64)
    n_items = N_ITEMS[campaign]
    if alpha.shape != (n_items,) or beta.shape != (n_items,):
        raise ValueError(f"{path}: {campaign} prior has {alpha.shape} alpha and {beta.shape} "
                         f"beta, expected {n_items} items")
    if not (np.all(alpha > 0) and np.all(beta > 0)):
        raise ValueError(f"{path}: {campaign} prior must be > 0")
    return alpha, beta


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m rliv_ray.data.obd",
                                     description="Extract the OBD sample from obp's wheel.")
    commands = parser.add_subparsers(dest="command", required=True)
    extract = commands.add_parser("extract", help="check the wheel's SHA-256 and extract")
    extract.add_argument("wheel", type=Path)
    extract.add_argument("dest", type=Path, nargs="?", default=None)
    args = parser.parse_args(argv)
    print(f"extracted the Open Bandit Dataset sample into {extract_wheel(args.wheel, args.dest)}")


if __name__ == "__main__":
    main()
