"""Generation speed and peak memory of `rliv generate --rows N` (issue: Foundation).

Runs the real command in a child process and reads the child's peak RSS from the kernel
(``getrusage(RUSAGE_CHILDREN).ru_maxrss``), so the figure is the whole process, Python included.

    python benchmarks/generate_memory.py --rows 10000000
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def run(rows: int, workdir: Path) -> dict:
    out = workdir / f"world-{rows}"
    rliv = Path(sys.executable).with_name("rliv")
    started = time.perf_counter()
    subprocess.run([str(rliv), "generate", str(out), "--rows", str(rows), "--quiet"], check=True)
    seconds = time.perf_counter() - started
    peak_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    manifest = json.loads((out / "manifest.json").read_text())
    size_mb = sum(p.stat().st_size for p in out.rglob("*.parquet")) / 2**20
    shutil.rmtree(out)
    return {"rows": manifest["rows"], "users": manifest["users"], "files": manifest["files"],
            "seconds": round(seconds, 1), "rows_per_s": round(manifest["rows"] / seconds),
            "peak_rss_mb": round(peak_mb), "parquet_mb": round(size_mb)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--workdir", default=None, help="scratch folder (default: a temp dir)")
    args = parser.parse_args()
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="rliv-bench-"))
    result = run(args.rows, workdir)
    print(json.dumps(result))
    print(f"{result['rows']:,} rows in {result['seconds']}s = {result['rows_per_s']:,} rows/s, "
          f"peak RSS {result['peak_rss_mb']:,} MB, {result['parquet_mb']} MB of Parquet")


if __name__ == "__main__":
    main()
