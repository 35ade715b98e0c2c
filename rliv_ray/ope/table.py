"""The layout of SL-MGAC's Tables 1-2 from evaluation rows (pure functions, no I/O).

Rows are methods; columns are the NCIS cumulative reward (J: mean Eq. 5 return per held-out
user) with its interval, the true on-policy value with its interval, the NCIS relative error
against the truth, the effective sample size of the NCIS weights, the injection ratio and the
mean 20-minute allocation-ratio amplitude (EQUATIONS.md 1.19); optionally the per-decision
NCIS estimate, and the true value's gain over a reference method paired by seed (the
difference is taken within each seed's world, so the world-to-world spread cancels, which
dominates the unpaired intervals). With several seeds (one
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
"""Always shown; "NCIS-PD J", "PD rel. err" and "true - <reference>" are added when present."""


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
    ncis_pd: float = math.nan  # per-decision NCIS, when evaluated
    ncis_pd_low: float = math.nan
    ncis_pd_high: float = math.nan
    pd_relative_error: float = math.nan  # mean over seeds of (NCIS-PD - true) / |true|
    gain: float = math.nan  # true - reference's true, paired by seed
    gain_low: float = math.nan
    gain_high: float = math.nan


def _nanmean(values: Sequence[float]) -> float:
    x = np.asarray(values, dtype=np.float64)
    return float(np.nanmean(x)) if np.isfinite(x).any() else math.nan


def _interval(values: Sequence[float], single: tuple[float, float],
              level: float) -> tuple[float, float, float]:
    """Over seeds when there are several, else the single row's own interval."""
    if len(values) == 1:
        return float(values[0]), *single
    return mean_interval(values, level)


def _estimates(name: str, estimates: list, level: float) -> tuple[float, float, float]:
    """Mean and interval of NCIS estimates (one per seed, or all None)."""
    present = [e for e in estimates if e is not None]
    if not present:
        return (math.nan,) * 3
    if len(present) != len(estimates):
        raise ValueError(f"method {name!r}: NCIS is missing for some seeds only")
    return _interval([e.value for e in present], (present[0].ci_low, present[0].ci_high), level)


def summarise_rows(name: str, rows: Sequence[EvalRow], level: float = 0.95,
                   reference: Sequence[EvalRow] | None = None) -> MethodSummary:
    """One method's rows (one per seed) as a table row; ``reference`` rows (same seeds, same
    order) give the paired gain of the true value."""
    if not rows:
        raise ValueError(f"method {name!r} has no evaluation rows")
    ncis = _estimates(name, [r.ncis for r in rows], level)
    pd_ = _estimates(name, [r.ncis_per_decision for r in rows], level)
    true = _interval([r.true_value for r in rows], (rows[0].true_low, rows[0].true_high), level)
    gain = (math.nan,) * 3
    if reference is not None:
        if len(reference) != len(rows):
            raise ValueError(f"method {name!r} has {len(rows)} seeds, the reference "
                             f"{len(reference)}")
        gain = mean_interval([r.true_value - b.true_value
                              for r, b in zip(rows, reference, strict=True)], level)
    return MethodSummary(
        name, len(rows), *ncis, *true,
        relative_error=_nanmean([r.ncis_relative_error for r in rows]),
        ess=_nanmean([r.ess for r in rows]),
        injection_ratio=_nanmean([r.injection_ratio for r in rows]),
        amplitude=_nanmean([r.amplitude for r in rows]),
        ncis_pd=pd_[0], ncis_pd_low=pd_[1], ncis_pd_high=pd_[2],
        pd_relative_error=_nanmean([r.per_decision_relative_error for r in rows]),
        gain=gain[0], gain_low=gain[1], gain_high=gain[2])


def summarise(results: Mapping[str, Sequence[EvalRow]], level: float = 0.95,
              reference: str | None = None) -> list[MethodSummary]:
    """Table rows in the order of ``results`` (method name -> one EvalRow per seed, seeds in
    the same order for every method); ``reference`` names the method of the paired gain."""
    if reference is not None and reference not in results:
        raise ValueError(f"reference {reference!r} is not among the methods {list(results)}")
    base = results[reference] if reference is not None else None
    return [summarise_rows(name, rows, level, base) for name, rows in results.items()]


def _value(mean: float, low: float, high: float, digits: int = 2) -> str:
    if math.isnan(mean):
        return "-"
    if math.isnan(low) or math.isnan(high):
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} ± {(high - low) / 2:.{digits}f}"


def _layout(rows: Sequence[MethodSummary], reference: str | None) -> list[list[str]]:
    """Header and one line of cells per method; optional columns only when present."""
    per_decision = any(not math.isnan(r.ncis_pd) for r in rows)
    paired = reference is not None and any(not math.isnan(r.gain) for r in rows)
    header = list(COLUMNS)
    if per_decision:
        header.insert(2, "NCIS-PD J")
        header.insert(header.index("NCIS rel. err") + 1, "PD rel. err")
    if paired:
        header.insert(header.index("true J") + 1, f"true - {reference}")

    def num(x: float, fmt: str) -> str:
        return "-" if math.isnan(x) else format(x, fmt)

    table = [header]
    for row in rows:
        cells = [row.method, _value(row.ncis, row.ncis_low, row.ncis_high),
                 _value(row.true, row.true_low, row.true_high), num(row.relative_error, "+.1%"),
                 num(row.ess, ".0f"), num(row.injection_ratio, ".1%"),
                 num(row.amplitude, ".3f"), str(row.seeds)]
        if per_decision:
            cells.insert(2, _value(row.ncis_pd, row.ncis_pd_low, row.ncis_pd_high))
        if paired:
            cells.insert(header.index("true J") + 1, _value(row.gain, row.gain_low,
                                                            row.gain_high))
        if per_decision:
            cells.insert(header.index("PD rel. err"), num(row.pd_relative_error, "+.1%"))
        table.append(cells)
    return table


def render_markdown(rows: Sequence[MethodSummary], reference: str | None = None) -> str:
    """A GitHub-markdown table, one line per method (``reference``: the paired-gain column's
    name, as given to :func:`summarise`)."""
    table = _layout(rows, reference)
    lines = ["| " + " | ".join(table[0]) + " |", "| --- |" + " ---: |" * (len(table[0]) - 1)]
    lines += ["| " + " | ".join(cells) + " |" for cells in table[1:]]
    return "\n".join(lines)


def render_text(rows: Sequence[MethodSummary], reference: str | None = None) -> str:
    """A plain-text table with aligned columns (method left, numbers right)."""
    table = _layout(rows, reference)
    widths = [max(len(line[i]) for line in table) for i in range(len(table[0]))]

    def line(cells: list[str]) -> str:
        return "  ".join(c.ljust(w) if i == 0 else c.rjust(w)
                         for i, (c, w) in enumerate(zip(cells, widths, strict=True)))

    rule = "  ".join("-" * w for w in widths)
    return "\n".join([line(table[0]), rule, *(line(cells) for cells in table[1:])])


def to_records(rows: Sequence[MethodSummary]) -> list[dict]:
    """Plain dicts for JSON, nan as None."""
    return [{k: None if isinstance(v, float) and math.isnan(v) else v
             for k, v in asdict(row).items()} for row in rows]
