"""The end of a sweep: the trials table, the regret of the estimator's pick, the plots.

The estimator's pick is the trial with the best *last reported* metric (Tune's
``get_best_result(scope="last")``; trials ASHA stopped early count with their last report); the
truth's pick is the trial with the best true value. The regret is the truth's pick's true
value minus the estimator's pick's, in the units of the true value and as a share of it: 0 when
the estimator picked the best configuration. Pure functions apart from the plots (matplotlib).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class TrialRow:
    trial_id: str
    params: dict[str, Any]
    status: str
    """``finished``, ``stopped early`` (by the scheduler), ``error`` or ``unfinished``."""
    iterations: int
    """Training iterations at the last report."""
    metric: float
    """The last reported value of the sweep's metric (nan without a report)."""
    truth: float = math.nan
    policy: str | None = None
    extra: dict[str, float] = field(default_factory=dict)
    """Other final figures (truth interval, ESS, ...), for the JSON summary."""


def pick(rows: Sequence[TrialRow], attr: str) -> TrialRow | None:
    """The row with the highest finite ``attr`` (first one on ties), None if there is none."""
    scored = [r for r in rows if math.isfinite(getattr(r, attr))]
    return max(scored, key=lambda r: getattr(r, attr)) if scored else None


def _scored(rows: Sequence[TrialRow], key: str) -> list[TrialRow]:
    """The rows with ``metric`` set to their last reported ``key`` (nan without it)."""
    return [replace(r, metric=float(r.extra.get(key, math.nan))) for r in rows]


def regrets(rows: Sequence[TrialRow], keys: Sequence[str]) -> dict[str, dict[str, Any]]:
    """:func:`regret` with each of ``keys`` (``eval/<name>`` of ``TrialRow.extra``) as the
    selection metric."""
    return {key: regret(_scored(rows, key)) for key in keys}


def regret(rows: Sequence[TrialRow]) -> dict[str, Any]:
    """The estimator's and the truth's picks and the regret of the former (nan if unknown)."""
    chosen, best = pick(rows, "metric"), pick(rows, "truth")
    if chosen is None or best is None or not math.isfinite(chosen.truth):
        return {"estimator_pick": chosen and chosen.trial_id,
                "truth_pick": best and best.trial_id, "regret": math.nan,
                "relative_regret": math.nan}
    gap = best.truth - chosen.truth
    return {"estimator_pick": chosen.trial_id, "truth_pick": best.trial_id,
            "estimator_pick_truth": chosen.truth, "best_truth": best.truth, "regret": gap,
            "relative_regret": gap / abs(best.truth) if best.truth else math.nan}


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return "nan" if math.isnan(value) else f"{value:.4g}"
    return str(value)


def summary_markdown(rows: Sequence[TrialRow], result: Mapping[str, Any], *, metric: str,
                     names: Sequence[str], note: str = "",
                     by_metric: Mapping[str, Mapping[str, Any]] | None = None) -> str:
    """The trials, best metric first, with the picks marked, then the regret in words."""
    chosen, best = result.get("estimator_pick"), result.get("truth_pick")
    head = ["trial", *names, "iterations", "status", metric, "truth/value", "pick"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    order = sorted(rows, key=lambda r: -r.metric if math.isfinite(r.metric) else math.inf)
    for r in order:
        mark = " + ".join(w for w, t in (("estimator", chosen), ("truth", best))
                          if t == r.trial_id)
        cells = [r.trial_id, *(r.params.get(n, "") for n in names), r.iterations, r.status,
                 r.metric, r.truth, mark]
        lines.append("| " + " | ".join(_cell(c) for c in cells) + " |")
    lines += ["", regret_line(result, metric)]
    if by_metric:
        lines += ["", *regret_table(by_metric, metric)]
    if note:
        lines += ["", note]
    return "\n".join(lines)


def regret_line(result: Mapping[str, Any], metric: str) -> str:
    if not math.isfinite(result.get("regret", math.nan)):
        return "regret: not available (no trial has both a metric and a true value)"
    return (f"{metric} picks trial {result['estimator_pick']} (true value "
            f"{result['estimator_pick_truth']:.4g}); the truth picks {result['truth_pick']} "
            f"({result['best_truth']:.4g}): regret {result['regret']:.4g} "
            f"({100 * result['relative_regret']:.1f}% of the best true value)")


def regret_table(by_metric: Mapping[str, Mapping[str, Any]], metric: str) -> list[str]:
    """One row per selection metric: the trial it picks, that trial's true value, the regret."""
    lines = ["| selection by | picks | its true value | regret | share of the best |",
             "|---|---|---|---|---|"]
    for key, r in by_metric.items():
        name = f"{key} (the sweep's)" if key == metric else key
        if math.isfinite(r.get("regret", math.nan)):
            cells = [name, r["estimator_pick"], _cell(r["estimator_pick_truth"]),
                     _cell(r["regret"]), f"{100 * r['relative_regret']:.1f}%"]
        else:
            cells = [name, r.get("estimator_pick") or "-", "nan", "nan", "-"]
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    return lines


def plot_sweep(rows: Sequence[TrialRow], names: Sequence[str], metric: str, path: Path) -> Path:
    """The metric (top row) and the true value (bottom row) of every trial against each
    hyperparameter; categorical values (bin names) are spread over the axis in their order."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(names) or ["trial"]
    fig, axes = plt.subplots(2, len(names), figsize=(3.6 * len(names), 5.6), squeeze=False,
                             sharey="row")
    for column, name in enumerate(names):
        raw = [r.params.get(name, r.trial_id) for r in rows]
        numeric = all(isinstance(v, int | float) for v in raw)
        labels = sorted(set(map(str, raw)))
        x = raw if numeric else [labels.index(str(v)) for v in raw]
        for row_index, (attr, label) in enumerate((("metric", metric),
                                                   ("truth", "truth/value"))):
            ax = axes[row_index][column]
            ax.scatter(x, [getattr(r, attr) for r in rows], color=f"C{row_index}")
            if not numeric:
                ax.set_xticks(range(len(labels)), labels, rotation=30)
            if column == 0:
                ax.set_ylabel(label)
        axes[1][column].set_xlabel(name)
    fig.suptitle("sweep: each trial's evaluation metric and true value")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def plot_curves(histories: Mapping[str, Sequence[Mapping[str, float]]], keys: Sequence[str],
                path: Path, title: str) -> Path:
    """Learning curves: one panel per key, one line per trial, against the iteration."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(keys), figsize=(4.5 * len(keys), 3.4), squeeze=False)
    for ax, key in zip(axes[0], keys, strict=True):
        for trial, history in histories.items():
            points = [(h["iteration"], h[key]) for h in history if key in h]
            if points:
                ax.plot(*zip(*points, strict=True), marker=".", label=trial)
        ax.set_xlabel("iteration")
        ax.set_title(key, fontsize=9)
    if len(histories) <= 12:
        axes[0][0].legend(fontsize=7)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
