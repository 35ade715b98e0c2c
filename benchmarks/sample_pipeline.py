"""Throughput and peak memory of `rliv build-samples`: in-process reference vs Ray Data.

For each log size, generates a synthetic log once (kept in --workdir), then runs the real
command twice in a child process: ``--workers 0`` (single-process vectorised reference, no Ray)
and ``--workers 2`` (Ray Data, two tasks at a time). Peak memory is the largest sum of PSS
(proportional set size: shared pages split between the processes that map them) over the
child's whole process tree (driver, Ray's GCS/raylet/agents and workers), sampled every 0.5 s.

    python benchmarks/sample_pipeline.py --rows 1000000 4000000 10000000
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[1_000_000, 4_000_000, 10_000_000])
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 2])
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
        for workers in args.workers:
            out = workdir / f"samples-{rows}-{workers}"
            seconds, peak = run([rliv, "build-samples", str(logs), str(out), "--workers",
                                 str(workers), "--asa-epochs", str(args.asa_epochs), "--quiet",
                                 "--overwrite"])
            phases = json.loads((out / "manifest.json").read_text())["seconds"]
            shutil.rmtree(out)
            without_asa = seconds - phases["asa_train_s"]
            result = {"rows": rows, "workers": workers, "wall_s": round(seconds, 1),
                      "rows_per_s": round(rows / seconds),
                      "rows_per_s_without_asa_training": round(rows / without_asa),
                      "validate_stitch_rows_per_s": round(rows / phases["validate_stitch_s"]),
                      "predict_write_rows_per_s": round(rows / phases["predict_write_s"]),
                      "peak_tree_pss_mb": round(peak / 2**20), **phases}
            results.append(result)
            print(json.dumps(result), flush=True)
    print("\n| rows | workers | wall s | rows/s | rows/s w/o ASA training | "
          "validate+stitch rows/s | predict+write rows/s | ASA train s | peak PSS (tree) |")
    print("| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for r in results:
        print(f"| {r['rows']:,} | {r['workers']} | {r['wall_s']} | {r['rows_per_s']:,} | "
              f"{r['rows_per_s_without_asa_training']:,} | {r['validate_stitch_rows_per_s']:,} | "
              f"{r['predict_write_rows_per_s']:,} | {r['asa_train_s']} | "
              f"{r['peak_tree_pss_mb']:,} MB |")
    by = {(r["rows"], r["workers"]): r for r in results}
    for rows in args.rows:
        if (rows, 0) in by and (rows, 2) in by:
            ratio = by[(rows, 2)]["rows_per_s"] / by[(rows, 0)]["rows_per_s"]
            print(f"{rows:,} rows: Ray (2 workers) / reference = {ratio:.2f}x end to end")


if __name__ == "__main__":
    main()
