"""The layout of SL-MGAC's Tables 1-2 from evaluation rows (pure functions, no I/O).

Rows are methods; columns are the NCIS cumulative reward (J: mean Eq. 5 return per held-out
user) with its interval, the true on-policy value with its interval, the NCIS relative error
against the truth, the effective sample size of the NCIS weights, the injection ratio and the
mean 20-minute allocation-ratio amplitude (EQUATIONS.md 1.19). With several seeds (one
:class:`~rliv_ray.ope.evaluate.EvalRow` per seed: world, split and training) the intervals
are Student-t over the seeds; with one seed they are the row's own (NCIS: bootstrap over
trajectories; truth: see ``evaluate``). Cells show ``mean ± half-width`` with half-width =
(high - low) / 2, which is exact for the symmetric t intervals.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass

import numpy as np

from rliv_ray.ope.evaluate import EvalRow, mean_interval

__all__ = ["COLUMNS", "MethodSummary", "render_markdown", "render_text", "summarise",
           "summarise_rows", "to_records"]

COLUMNS = ("method", "NCIS J", "true J", "NCIS rel. err", "ESS", "inject ratio",
           "20-min amplitude", "seeds")


@dataclass(frozen=True)
class MethodSummary:
    """One table row: a method's results aggregated over seeds (nan where not measured)."""

    method: str
    seeds: int
    ncis: float
    ncis_low: float
    ncis_high: float
    true: float
    true_low: float
    true_high: float
    relative_error: float  # mean over seeds of (NCIS - true) / |true|
    ess: float
    injection_ratio: float
    amplitude: float


def _nanmean(values: Sequence[float]) -> float:
    x = np.asarray(values, dtype=np.float64)
    return float(np.nanmean(x)) if np.isfinite(x).any() else math.nan


def _interval(values: Sequence[float], single: tuple[float, float],
              level: float) -> tuple[float, float, float]:
    """Over seeds when there are several, else the single row's own interval."""
    if len(values) == 1:
        return float(values[0]), *single
    return mean_interval(values, level)


def summarise_rows(name: str, rows: Sequence[EvalRow], level: float = 0.95) -> MethodSummary:
    """One method's rows (one per seed) as a table row."""
    if not rows:
        raise ValueError(f"method {name!r} has no evaluation rows")
    with_ncis = [r for r in rows if r.ncis is not None]
    if with_ncis and len(with_ncis) != len(rows):
        raise ValueError(f"method {name!r}: NCIS is missing for some seeds only")
    ncis = (_interval([r.ncis.value for r in rows],
                      (rows[0].ncis.ci_low, rows[0].ncis.ci_high), level)
            if with_ncis else (math.nan,) * 3)
    true = _interval([r.true_value for r in rows], (rows[0].true_low, rows[0].true_high), level)
    return MethodSummary(
        name, len(rows), *ncis, *true,
        relative_error=_nanmean([r.ncis_relative_error for r in rows]),
        ess=_nanmean([r.ess for r in rows]),
        injection_ratio=_nanmean([r.injection_ratio for r in rows]),
        amplitude=_nanmean([r.amplitude for r in rows]))


def summarise(results: Mapping[str, Sequence[EvalRow]],
              level: float = 0.95) -> list[MethodSummary]:
    """Table rows in the order of ``results`` (method name -> one EvalRow per seed)."""
    return [summarise_rows(name, rows, level) for name, rows in results.items()]


def _value(mean: float, low: float, high: float, digits: int = 2) -> str:
    if math.isnan(mean):
        return "-"
    if math.isnan(low) or math.isnan(high):
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} ± {(high - low) / 2:.{digits}f}"


def _cells(row: MethodSummary) -> list[str]:
    def num(x: float, fmt: str) -> str:
        return "-" if math.isnan(x) else format(x, fmt)

    return [row.method, _value(row.ncis, row.ncis_low, row.ncis_high),
            _value(row.true, row.true_low, row.true_high), num(row.relative_error, "+.1%"),
            num(row.ess, ".0f"), num(row.injection_ratio, ".1%"), num(row.amplitude, ".3f"),
            str(row.seeds)]


def render_markdown(rows: Sequence[MethodSummary]) -> str:
    """A GitHub-markdown table, one line per method."""
    lines = ["| " + " | ".join(COLUMNS) + " |",
             "| --- |" + " ---: |" * (len(COLUMNS) - 1)]
    lines += ["| " + " | ".join(_cells(row)) + " |" for row in rows]
    return "\n".join(lines)


def render_text(rows: Sequence[MethodSummary]) -> str:
    """A plain-text table with aligned columns (method left, numbers right)."""
    table = [list(COLUMNS), *(_cells(row) for row in rows)]
    widths = [max(len(line[i]) for line in table) for i in range(len(COLUMNS))]

    def line(cells: list[str]) -> str:
        return "  ".join(c.ljust(w) if i == 0 else c.rjust(w)
                         for i, (c, w) in enumerate(zip(cells, widths, strict=True)))

    rule = "  ".join("-" * w for w in widths)
    return "\n".join([line(table[0]), rule, *(line(cells) for cells in table[1:])])


def to_records(rows: Sequence[MethodSummary]) -> list[dict]:
    """Plain dicts for JSON, nan as None."""
    return [{k: None if isinstance(v, float) and math.isnan(v) else v
             for k, v in asdict(row).items()} for row in rows]
