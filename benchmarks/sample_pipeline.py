"""Throughput and peak memory of `rliv build-samples`: in-process path vs Ray Data per worker count.

For each log size, generates a synthetic log once (kept in --workdir), then runs the real
command in a child process once per ``--workers`` value and round: ``0`` (single-process
vectorised path, no Ray), ``N`` (Ray Data, N tasks at a time) and ``auto`` (the default: the
path printed by the command). Rounds are interleaved (every variant of a size once, then
again, the order rotated each round) so a busy spell on the machine hits all variants alike;
ratios to the in-process path are paired within a round. Peak memory is the largest sum of PSS
(proportional set size: shared pages split between the processes that map them) over the
child's whole process tree (driver, Ray's GCS/raylet/agents and workers), sampled every 0.5 s;
the 1-minute load average at each run's start is recorded too.

    python benchmarks/sample_pipeline.py --rows 500000 2000000 4000000 --workers 0 1 2 auto
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

IN_PROCESS = "0"


def tree_pss(proc: psutil.Process) -> int:
    total = 0
    for p in [proc, *proc.children(recursive=True)]:
        try:
            total += p.memory_full_info().pss
        except psutil.Error:
            pass
    return total


def run(cmd: list[str]) -> tuple[float, int]:
    """Wall seconds and peak tree PSS (bytes) of a command."""
    started = time.perf_counter()
    child = subprocess.Popen(cmd, stdout=subprocess.DEVNULL)
    proc = psutil.Process(child.pid)
    peak = 0
    while child.poll() is None:
        peak = max(peak, tree_pss(proc))
        time.sleep(0.5)
    if child.returncode:
        raise SystemExit(f"{' '.join(cmd)} failed with {child.returncode}")
    return time.perf_counter() - started, peak


def build_once(rliv: str, logs: Path, out: Path, rows: int, workers: str, asa_epochs: int,
               round_: int) -> dict:
    load = os.getloadavg()[0]  # others' work on a shared machine shows here
    seconds, peak = run([rliv, "build-samples", str(logs), str(out), "--workers", workers,
                         "--asa-epochs", str(asa_epochs), "--quiet", "--overwrite"])
    manifest = json.loads((out / "manifest.json").read_text())
    shutil.rmtree(out)
    phases = manifest["seconds"]
    without_asa = seconds - phases["asa_train_s"]
    return {"rows": rows, "workers": workers, "round": round_,
            "path": manifest.get("sample_path", {}).get("engine", "?"),
            "tasks": manifest["workers"], "wall_s": round(seconds, 1),
            "rows_per_s": round(rows / seconds),
            "rows_per_s_without_asa_training": round(rows / without_asa),
            "validate_stitch_rows_per_s": round(rows / phases["validate_stitch_s"]),
            "predict_write_rows_per_s": round(rows / phases["predict_write_s"]),
            "peak_tree_pss_mb": round(peak / 2**20), "load_1m_at_start": round(load, 1),
            **phases}


def rotated(items: list[str], by: int) -> list[str]:
    by %= len(items)
    return items[by:] + items[:by]


def print_runs(results: list[dict]) -> None:
    print("\n| rows | --workers | path (tasks) | round | wall s | rows/s | rows/s w/o ASA "
          "training | validate+stitch rows/s | predict+write rows/s | ASA train s | "
          "peak PSS (tree) | load |")
    print("| ---: | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for r in results:
        print(f"| {r['rows']:,} | {r['workers']} | {r['path']} ({r['tasks']}) | {r['round']} | "
              f"{r['wall_s']} | {r['rows_per_s']:,} | {r['rows_per_s_without_asa_training']:,} "
              f"| {r['validate_stitch_rows_per_s']:,} | {r['predict_write_rows_per_s']:,} | "
              f"{r['asa_train_s']} | {r['peak_tree_pss_mb']:,} MB | {r['load_1m_at_start']} |")


def print_ratios(results: list[dict], sizes: list[int], variants: list[str]) -> None:
    """Per size and variant: median rows/s, and rows/s over the same round's in-process run."""
    by = {(r["rows"], r["workers"], r["round"]): r for r in results}
    print("\n| rows | --workers | path (tasks) | median rows/s | vs in-process: median "
          "(min-max) | w/o ASA training: median | peak PSS (max) |")
    print("| ---: | ---: | --- | ---: | ---: | ---: | ---: |")
    for rows in sizes:
        for workers in variants:
            runs = [r for r in results if (r["rows"], r["workers"]) == (rows, workers)]
            if not runs:
                continue
            ratio, ratio_wo = [], []
            for r in runs:
                ref = by.get((rows, IN_PROCESS, r["round"]))
                if ref:
                    ratio.append(r["rows_per_s"] / ref["rows_per_s"])
                    ratio_wo.append(r["rows_per_s_without_asa_training"]
                                    / ref["rows_per_s_without_asa_training"])
            span = (f"{statistics.median(ratio):.2f}x ({min(ratio):.2f}-{max(ratio):.2f})"
                    if ratio else "-")
            wo = f"{statistics.median(ratio_wo):.2f}x" if ratio_wo else "-"
            print(f"| {rows:,} | {workers} | {runs[0]['path']} ({runs[0]['tasks']}) | "
                  f"{round(statistics.median(r['rows_per_s'] for r in runs)):,} | {span} | "
                  f"{wo} | {max(r['peak_tree_pss_mb'] for r in runs):,} MB |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[1_000_000, 4_000_000, 10_000_000])
    parser.add_argument("--workers", nargs="+", default=[IN_PROCESS, "2"],
                        help="--workers values to compare: 0 (in-process), N (Ray Data), auto")
    parser.add_argument("--rounds", type=int, default=1,
                        help="interleaved rounds per size (default 1)")
    parser.add_argument("--asa-epochs", type=int, default=2)
    parser.add_argument("--workdir", default=None)
    args = parser.parse_args()
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="rliv-samples-bench-"))
    rliv = str(Path(sys.executable).with_name("rliv"))
    results = []
    for rows in args.rows:
        logs = workdir / f"log-{rows}"
        if not logs.exists():
            subprocess.run([rliv, "generate", str(logs), "--rows", str(rows), "--quiet"],
                           check=True, stdout=subprocess.DEVNULL)
        for round_ in range(args.rounds):
            for workers in rotated(args.workers, round_):
                result = build_once(rliv, logs, workdir / f"samples-{rows}-{workers}", rows,
                                    workers, args.asa_epochs, round_)
                results.append(result)
                print(json.dumps(result), flush=True)
    print_runs(results)
    print_ratios(results, args.rows, args.workers)


if __name__ == "__main__":
    main()
