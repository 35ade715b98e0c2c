"""Tables and the figure of ``rliv ope-grade`` (from :mod:`rliv_ray.ope.grade` records)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from rliv_ray.ope.grade import Graded, relative_error

__all__ = ["format_markdown", "format_text", "plot"]

SUMMARY_HEADER = ("estimator", "question", "rel. error", "abs. rel. error", "95% CI holds truth",
                  "Spearman", "Kendall", "regret", "ESS (median)")


def _pct(x: float) -> str:
    return "-" if not math.isfinite(x) else f"{100 * x:+.1f}%"


def _num(x: float, digits: int = 2) -> str:
    return "-" if not math.isfinite(x) else f"{x:+.{digits}f}"


def _value(x: float) -> str:
    if not math.isfinite(x):
        return "-"
    return f"{x:.4g}" if abs(x) < 1 else f"{x:,.1f}" if abs(x) < 10_000 else f"{x:,.0f}"


def summary_cells(row: dict) -> list[str]:
    if not row["estimates"]:
        return [row["estimator"], row["question"], "not estimated", "", "", "", "", "", ""]
    covered = (f"{row['covered']}/{row['intervals']}" if row["intervals"] else "no interval")
    regret = ("-" if not math.isfinite(row["relative_regret"])
              else f"{100 * row['relative_regret']:.1f}%")
    ess = "-" if not math.isfinite(row["median_ess"]) else f"{row['median_ess']:,.0f}"
    failed = f" ({row['failed']} failed)" if row["failed"] else ""
    return [row["estimator"], row["question"], _pct(row["mean_relative_error"]) + failed,
            _pct(row["mean_abs_relative_error"]).lstrip("+"), covered, _num(row["spearman"]),
            _num(row["kendall"]), regret, ess]


def _aligned(header: Sequence[str], rows: list[list[str]]) -> str:
    table = [list(header), *rows]
    widths = [max(len(r[i]) for r in table) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) if i < 2 else c.rjust(w)
                       for i, (c, w) in enumerate(zip(r, widths, strict=True))).rstrip()
             for r in table]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def format_text(summary: list[dict], world: str) -> str:
    """The summary of one world as an aligned text table."""
    return _aligned(SUMMARY_HEADER, [summary_cells(r) for r in summary if r["world"] == world])


def _markdown(header: Sequence[str], rows: list[list[str]], left: int = 1) -> list[str]:
    align = ["---" if i < left else "---:" for i in range(len(header))]
    return (["| " + " | ".join(header) + " |", "| " + " | ".join(align) + " |"]
            + ["| " + " | ".join(r) + " |" for r in rows])


def _policy_table(records: list[Graded], facts: list[dict], world: str,
                  question: str) -> list[str]:
    """Mean estimate over seeds of each policy (rows) by each estimator of the question
    (columns), beside the mean true value."""
    group = [r for r in records if r.world == world and r.question == question]
    estimators = list(dict.fromkeys(r.estimator for r in group))
    policies = list(dict.fromkeys(f["policy"] for f in facts if f["world"] == world))
    key = "truth_per_decision" if question == "per-decision" else "truth_long_term"
    rows = []
    for policy in policies:
        truth = np.mean([f[key] for f in facts if (f["world"], f["policy"]) == (world, policy)])
        cells = [policy, _value(float(truth))]
        for estimator in estimators:
            values = [r.value for r in group if (r.policy, r.estimator) == (policy, estimator)]
            finite = [v for v in values if math.isfinite(v)]
            cells.append(_value(float(np.mean(finite))) if finite else "-")
        rows.append(cells)
    truth_name = "true per request" if question == "per-decision" else "true J"
    return _markdown(["policy", truth_name, *estimators], rows)


def format_markdown(summary: list[dict], records: list[Graded], facts: list[dict],
                    headlines: dict[str, str]) -> str:
    """Per world: its headline, the summary table, and the estimates beside the truth."""
    out = ["# rliv ope-grade", ""]
    for world, headline in headlines.items():
        out += [f"## {world}", "", headline, "",
                *_markdown(SUMMARY_HEADER, [summary_cells(r) for r in summary
                                            if r["world"] == world], left=2), ""]
        for question in ("per-decision", "long-term"):
            if any(r.world == world and r.question == question for r in records):
                out += [f"Mean {question} estimate over seeds, beside the truth:", "",
                        *_policy_table(records, facts, world, question), ""]
        notes = sorted({f"{r.estimator}: {r.note}" for r in records
                        if r.world == world and r.note})
        if notes:
            out += ["Not estimated:", "", *(f"- {n}" for n in notes), ""]
    return "\n".join(out)


def plot(summary: list[dict], records: list[Graded], path: Path,
         titles: dict[str, str] | None = None) -> None:
    """One row per world: relative error of every estimate (filled: its interval holds the
    truth; clipped to [-100%, +200%]), Spearman and Kendall against the long-term truth, and
    the relative regret of choosing by each estimator."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    worlds = list(dict.fromkeys(r["world"] for r in summary))
    fig, axes = plt.subplots(len(worlds), 3, figsize=(18, 5.5 * len(worlds)), squeeze=False,
                             gridspec_kw={"width_ratios": [2.2, 1, 1]})
    for row, world in zip(axes, worlds, strict=True):
        rows = [r for r in summary if r["world"] == world and r["estimates"]]
        names = [r["estimator"] for r in rows]
        y = np.arange(len(names))
        ax = row[0]
        for i, name in enumerate(names):
            group = [r for r in records if (r.world, r.estimator) == (world, name)
                     and math.isfinite(r.value)]
            err = np.clip(np.atleast_1d(relative_error([r.value for r in group],
                                                       [r.truth for r in group])), -1.0, 2.0)
            held = np.array([r.covered == 1.0 for r in group])
            jitter = np.linspace(-0.25, 0.25, len(group)) if len(group) > 1 else np.zeros(1)
            colour = "tab:blue" if group and group[0].question == "per-decision" else "tab:red"
            ax.scatter(100 * err[held], i + jitter[held], s=14, color=colour)
            ax.scatter(100 * err[~held], i + jitter[~held], s=14, facecolors="none",
                       edgecolors=colour)
        ax.axvline(0, color="black", lw=0.8)
        ax.set(yticks=y, yticklabels=names, xlabel="relative error, % (clipped at -100, +200)",
               title=f"{(titles or {}).get(world, world)}: estimate vs truth per policy and "
                     "seed\n(filled: 95% interval holds the truth; blue per-decision, red "
                     "long-term)")
        ax.invert_yaxis()
        ax = row[1]
        ax.barh(y - 0.2, [r["spearman"] for r in rows], 0.4, label="Spearman")
        ax.barh(y + 0.2, [r["kendall"] for r in rows], 0.4, label="Kendall")
        ax.axvline(0, color="black", lw=0.8)
        ax.set(yticks=y, yticklabels=[], xlim=(-1, 1),
               title="rank correlation with the long-term truth")
        ax.invert_yaxis()
        ax.legend(loc="lower left", fontsize=8)
        ax = row[2]
        ax.barh(y, [100 * r["relative_regret"] for r in rows], 0.6, color="tab:gray")
        ax.set(yticks=y, yticklabels=[], xlabel="% of the best policy's true J",
               title="regret of choosing the estimator's best policy")
        ax.invert_yaxis()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
