"""Tables and plots of a world evaluation, in the paper's layout (rliv-ua.txt Tables 1 and 2).

A result maps each policy to ``{metric: {"mean", "low", "high", "values"}}`` (per-seed values,
95% t-intervals; :func:`rliv_ray.evaluation.world.evaluate_policies`). Every cell shows the mean
with its interval; margins are paired per seed against a baseline policy, so they carry
common random numbers' smaller intervals.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from rliv_ray.data.ua_lever import paired_margin

TABLE1 = ("session_length", "watch_time_min", "ctr", "diversity")
TABLE2 = ("ua_count", "gifted_users", "revenue", "new_fans")
LABELS = {
    "ltv": "LTV", "session_length": "Session Length", "watch_time_min": "Watch Time (min)",
    "ctr": "CTR", "diversity": "Diversity", "new_fans": "New Fans", "ua_count": "UA Count",
    "gifted_users": "Gifted Users", "revenue": "Revenue (gifts)", "requests": "Requests",
}


def _cell(stat: dict) -> str:
    return f"{stat['mean']:.4g} [{stat['low']:.4g}, {stat['high']:.4g}]"


def _margin(result: dict, name: str, baseline: str, metric: str) -> str:
    m = paired_margin(result, name, baseline, metric)
    if np.isnan(m["mean"]):
        return "n/a"
    return f"{100 * m['mean']:+.1f}% [{100 * m['low']:+.1f}, {100 * m['high']:+.1f}]"


def markdown_table(result: dict, metrics: tuple[str, ...], baseline: str) -> str:
    """Mean [95% CI] per policy and metric, then paired margins over ``baseline``."""
    head = "| Policy | " + " | ".join(LABELS[m] for m in metrics) + " |"
    rule = "|---" * (len(metrics) + 1) + "|"
    rows = [f"| {name} | " + " | ".join(_cell(values[m]) for m in metrics) + " |"
            for name, values in result.items()]
    rows += [f"| {name} vs {baseline} | " + " | ".join(
        _margin(result, name, baseline, m) for m in metrics) + " |"
        for name in result if name != baseline]
    return "\n".join([head, rule, *rows])


def write_csv(result: dict, path: Path, baseline: str) -> None:
    """One row per (policy, metric): mean, interval, per-seed values, margin over baseline."""
    with path.open("w", newline="") as f:
        out = csv.writer(f)
        out.writerow(["policy", "metric", "mean", "low", "high", "seeds", "margin_vs_" +
                      baseline, "margin_low", "margin_high", "values"])
        for name, values in result.items():
            for metric, stat in values.items():
                m = paired_margin(result, name, baseline, metric)
                out.writerow([name, metric, stat["mean"], stat["low"], stat["high"],
                              len(stat["values"]), m["mean"], m["low"], m["high"],
                              " ".join(f"{v:.6g}" for v in stat["values"])])


def plot_metrics(result: dict, metrics: tuple[str, ...], path: Path, title: str) -> None:
    """One bar chart per metric: policy means with their 95% intervals."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(result)
    cols = min(4, len(metrics))
    rows = -(-len(metrics) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 2.8 * rows), squeeze=False)
    for ax, metric in zip(axes.flat, metrics, strict=False):
        means = [result[n][metric]["mean"] for n in names]
        errs = [[m - result[n][metric]["low"] for n, m in zip(names, means, strict=True)],
                [result[n][metric]["high"] - m for n, m in zip(names, means, strict=True)]]
        ax.bar(range(len(names)), means, yerr=errs, capsize=3, color="tab:blue")
        ax.set_xticks(range(len(names)), names, rotation=40, ha="right", fontsize=7)
        ax.set_title(LABELS[metric], fontsize=9)
        low = min(result[n][metric]["low"] for n in names)
        high = max(result[n][metric]["high"] for n in names)
        pad = 0.15 * (high - low or abs(high) or 1.0)
        ax.set_ylim(low - pad, high + pad)
    for ax in list(axes.flat)[len(metrics):]:
        ax.axis("off")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_report(result: dict, out: Path, *, baseline: str, title: str) -> list[Path]:
    """``table.md`` (Tables 1 and 2 plus LTV), ``table.csv`` and ``metrics.png`` in ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    metrics = next(iter(result.values())).keys()
    other = tuple(m for m in metrics if m not in TABLE1 + TABLE2)
    md = [f"# {title}", "",
          "Mean [95% interval over seeds]; margins are paired per seed (common random numbers).",
          "", "## Table 1: user satisfaction", "", markdown_table(result, TABLE1, baseline),
          "", "## Table 2: user-author relationships", "",
          markdown_table(result, TABLE2, baseline), "", "## Other", "",
          markdown_table(result, other, baseline), ""]
    paths = [out / "table.md", out / "table.csv", out / "metrics.png"]
    paths[0].write_text("\n".join(md))
    write_csv(result, paths[1], baseline)
    known = tuple(m for m in (*TABLE1, *TABLE2, *other)  # a simulator has no UA count
                  if all(np.isfinite(values[m]["mean"]) for values in result.values()))
    plot_metrics(result, known, paths[2], title)
    return paths
