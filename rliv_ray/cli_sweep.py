"""``rliv sweep``: a Ray Tune sweep of RLIV-UA or SL-MGAC from a YAML file, tracked in MLflow.

    rliv sweep CONFIG.yaml [--out DIR] [--resume | --overwrite] [--tracking-uri URI]
                           [--address ADDR]

See :mod:`rliv_ray.sweep` and ``tune/README.md``.
"""

from __future__ import annotations

import argparse
import sys


def add_sweep_parsers(add) -> None:
    """Register ``rliv sweep`` with ``add(name, func, help_text) -> ArgumentParser``."""
    p = add("sweep", cmd_sweep,
            "Run a Ray Tune sweep defined by a YAML file (tune/*.yaml): build the samples once "
            "per distinct data setting, train each trial with `rliv train`'s entry point, "
            "report an evaluation (SL-MGAC: the chosen off-policy estimators on held-out users; "
            "RLIV-UA: the world's true value on a few users) to ASHA, then measure every "
            "trial's true value and print the trials table and the regret of each estimator's "
            "pick. Logs a parent MLflow "
            "run with a child run per trial.")
    p.add_argument("config", help="the sweep's YAML file (see tune/README.md)")
    p.add_argument("--out", help="sweep directory (default: sweeps/<name>)")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--resume", action="store_true", help="continue an interrupted sweep in "
                      "OUT from its own trial records (JSON): finished trials are kept, "
                      "unfinished and failed ones start again")
    mode.add_argument("--overwrite", action="store_true", help="start again, replacing OUT")
    p.add_argument("--tracking-uri", help="MLflow store (default: $RLIV_TRACKING_URI, else "
                   "$MLFLOW_TRACKING_URI, else sqlite:///$PWD/mlflow.db); a server that cannot "
                   "be reached gets one warning and the sweep goes on")
    p.add_argument("--address", help="Ray cluster address (default: $RAY_ADDRESS, else a "
                   "private local Ray with the config's resources.ray_cpus)")


def cmd_sweep(args: argparse.Namespace) -> int:
    from rliv_ray.checks import interrupted
    from rliv_ray.cli import CLIError
    from rliv_ray.sweep.run import run_sweep

    try:
        return run_sweep(args.config, args.out, resume=args.resume, overwrite=args.overwrite,
                         tracking_uri=args.tracking_uri, address=args.address)
    except (FileExistsError, FileNotFoundError, ValueError) as err:
        raise CLIError(str(err)) from err
    except KeyboardInterrupt as err:  # outside Tune's handler (data, truth): what is done is kept
        code, _ = interrupted(err)  # 130 for Ctrl-C, 143 for SIGTERM
        print("rliv sweep: interrupted; continue with --resume (finished trials and sample "
              "builds are kept)", file=sys.stderr)
        return code
