"""The off-policy estimators graded against the truth at the scale of the README's tables
(issue 16, section 3): `rliv ope-grade` with larger settings, one world per run, and a merge
of the runs into one report and figure.

    python benchmarks/ope_grade.py live --out /tmp/og_live_a                   # seeds 0, 1
    python benchmarks/ope_grade.py live --first-seed 2 --out /tmp/og_live_b    # seeds 2, 3
    python benchmarks/ope_grade.py rliv-ua --out /tmp/og_ua_0                  # seed 0
    python benchmarks/ope_grade.py rliv-ua --first-seed 1 --out /tmp/og_ua_1   # seed 1 ...
    python benchmarks/ope_grade.py --merge /tmp/og /tmp/og_live_a /tmp/og_live_b /tmp/og_ua_0 \
        --figure benchmarks/figures/ope_grade.png

Any further option goes to `rliv ope-grade` and overrides the defaults below (e.g. ``--seeds
2`` or ``--policy SL=runs/sl``). The merged directory holds grade.md, grade.json and
grade.png, as one `rliv ope-grade` run over both worlds would.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import sys
from pathlib import Path

DEFAULTS = {
    "live": ["--live-users", "1000", "--live-days", "2", "--seeds", "2", "--bootstrap", "200",
             "--fqe-iterations", "40", "--fqe-steps", "30", "--fqe-hidden", "32"],
    "rliv-ua": ["--ua-users", "400", "--ua-days", "5", "--seeds", "1", "--bootstrap", "200"],
}
"""Each run fits in ~15 minutes at nice 10 on two shared cores; more seeds come from more runs
(``--first-seed``) merged afterwards. FQE runs without bootstrap refits (each refit is a full
fit): it is graded on its error and ranking, not its interval."""


def merge(out: Path, runs: list[Path], figure: Path | None) -> None:
    """One report from the grade.json of several runs (different worlds)."""
    from rliv_ray.data import io
    from rliv_ray.ope.grade import Graded, summarise
    from rliv_ray.ope.grade_report import format_markdown, plot

    records, facts, headlines, settings, seconds = [], [], {}, [], 0.0
    for run in runs:
        data = json.loads((run / "grade.json").read_text())
        for e in data["estimates"]:
            fields = {k: (float("nan") if v is None else v) for k, v in e.items()
                      if k not in ("relative_error", "covered")}
            records.append(Graded(**fields))
        facts += data["policies"]
        headlines.update(data["headlines"])
        settings.append(data["settings"])
        seconds += data["seconds"]
    summary = summarise(records)
    for world in headlines:  # the seeds of every run, not the last run's
        seeds = sorted({r.seed for r in records if r.world == world})
        headlines[world] = re.sub(r"seeds \d+\.\.\d+", f"seeds {seeds}", headlines[world])
        headlines[world] = re.sub(r"; \d+s$", f"; {len(runs)} runs merged", headlines[world])
    with io.atomic_output_dir(out, overwrite=True, inputs=runs) as tmp:
        (tmp / "grade.md").write_text(format_markdown(summary, records, facts, headlines))
        (tmp / "grade.json").write_text(json.dumps(
            {"settings": settings, "seconds": seconds, "headlines": headlines,
             "summary": summary, "policies": facts,
             "estimates": [r.to_dict() for r in records]}, indent=2, default=str) + "\n")
        plot(summary, records, tmp / "grade.png")
    if figure is not None:
        shutil.copyfile(out / "grade.png", figure)
    print(f"merged {len(runs)} runs into {out}" + (f"; figure {figure}" if figure else ""))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("world", nargs="?", choices=sorted(DEFAULTS))
    parser.add_argument("--merge", nargs="+", metavar="DIR",
                        help="OUT RUN [RUN ...]: merge the runs' grade.json into OUT")
    parser.add_argument("--figure", type=Path, help="with --merge: copy grade.png here")
    args, rest = parser.parse_known_args()
    if args.merge:
        if len(args.merge) < 2:
            parser.error("--merge needs OUT and at least one run directory")
        merge(Path(args.merge[0]), [Path(p) for p in args.merge[1:]], args.figure)
        return 0
    if args.world is None:
        parser.error("name a world (live or rliv-ua), or --merge")
    from rliv_ray.cli import main as rliv

    return rliv(["ope-grade", "--worlds", args.world, *DEFAULTS[args.world], *rest])


if __name__ == "__main__":
    sys.exit(main())
