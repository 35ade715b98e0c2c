"""Plain-text tables of a sample-building run: stitching rates, paper Table 4, epsilon."""

from __future__ import annotations


def _pct(x) -> str:
    return "n/a" if x is None else f"{100 * x:.1f}%"


def format_report(report: dict) -> str:
    """Stitching success, ASA vs rule-based on held-out tuples (Table 4), and epsilon."""
    st = report["stitching"]
    cfg = report["sample_config"]["stitch"]
    lines = [f"stitching (L={cfg['sequence_length']}, {cfg['content']}, window "
             f"±{cfg['window_ms']} ms): {st['stitched']:,} of {st['rows']:,} interactions = "
             f"{_pct(st['success_rate'])} (paper: 47%)"]
    for name, rate in st["success_rate_by_history"].items():
        lines.append(f"  pair history {name:<13} {_pct(rate):>7} of "
                     f"{st['rows_by_history'][name]:,}")
    t4 = report["table4"]
    lines += ["", f"Table 4: next-state approximation on held-out users' stitched tuples "
              f"({t4['validation_tuples']:,} tuples; train {t4['train_tuples']:,})",
              f"  {'method':<12} {'MSE loss':>10} {'cosine loss':>12}   (paper: ASA 0.502 / "
              "0.630, rule 0.718 / 0.743)"]
    for method in ("asa", "rule_based"):
        m = t4[method]
        lines.append(f"  {method:<12} {m['mse']:>10.4f} {m['cosine_loss']:>12.4f}")
    eps = report["epsilon"]
    if eps:
        norm = eps["all"]["asa"]["norm"]
        lines += ["", f"epsilon = ||s_hat' - s'|| ({norm}) against each pair's true next "
                  "interaction"]
        lines.append(f"  {'subset':<26} {'method':<12} {'rows':>10} {'mean':>8} {'max':>8} "
                     f"{'MSE':>8}")
        for subset, label in (("all", "all with a next"), ("unreachable", "stitching can't reach")):
            for method, m in eps.get(subset, {}).items():
                lines.append(f"  {label:<26} {method:<12} {m['rows']:>10,} {m['eps_mean']:>8.3f} "
                             f"{m['eps_max']:>8.3f} {m['mse']:>8.4f}")
    return "\n".join(lines)
