"""Errors and exit statuses of ``rliv``: the small validation layer every command goes through.

Every failure of a command is one line on stderr, ``rliv COMMAND: error: MESSAGE``, and one of
two exit statuses:

- **1, invalid data** (:data:`EXIT_INVALID`): an input the command reads is missing, empty,
  unreadable or breaks its schema: a log, sample shards, KuaiRand CSV files, a manifest, a
  model or checkpoint file (:class:`InvalidInput` and the readers' own errors:
  ``LogValidationError``, ``ShardError``, ``DataFileError``, ``OPEInputError``; a training
  loss that became NaN).
- **2, bad arguments** (:data:`EXIT_USAGE`): an option out of range, an unknown setting, a
  settings file that cannot be read, an OUT that cannot be written (exists, locked, is an
  input, lies under a file), a tracking URI that cannot be used, a cluster that cannot be
  reached or has too few CPUs (:class:`CLIError` and ``OutputError``, ``ClusterUnreachable``).

A command stopped by Ctrl-C (SIGINT) or SIGTERM exits 128 + the signal, 130 or 143, as a shell
reports a process the signal ended, with one line saying what was kept (:func:`interrupted`).

The checks run in this order, so that a bad run fails in a second and leaves nothing:
arguments (argparse types below, then :func:`preflight`: tracking URI, OUT location, cluster
address), then the input data (each reader validates what it reads), then cluster resources,
and only then is OUT created and Ray started. :func:`classify` maps an exception to its
status and line, also when Ray wraps it; anything it does not know is a bug, reported in one
line too (``RLIV_DEBUG=1`` shows the traceback), with status :data:`EXIT_BUG`.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
from collections.abc import Callable
from typing import Any

EXIT_INVALID = 1  # the input data is invalid
EXIT_USAGE = 2  # bad arguments or settings
EXIT_BUG = 70  # an error rliv does not know (EX_SOFTWARE): please report it
DEBUG_ENV = "RLIV_DEBUG"


class CLIError(Exception):
    """A user-facing error: printed as one line, exit status ``code``."""

    def __init__(self, message: str, code: int = EXIT_USAGE):
        super().__init__(message)
        self.code = code

    def __reduce__(self):  # picklable (Ray ships exceptions between processes)
        return type(self), (str(self), self.code)


class InvalidInput(ValueError):
    """An input file or folder that is missing, empty or not what the command reads
    (exit status 1)."""


# --- argparse types ----------------------------------------------------------------------------

class Parser(argparse.ArgumentParser):
    """argparse with its error on one line (no usage block): ``PROG: error: MESSAGE``."""

    def error(self, message: str):
        self.exit(EXIT_USAGE, f"{self.prog}: error: {one_line(message)} (see {self.prog} "
                  "--help)\n")


def integer(low: int, high: int | None = None) -> Callable[[str], int]:
    """An argparse type: an integer in ``[low, high]``."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < low or (high is not None and value > high):
            raise argparse.ArgumentTypeError(f"must be {_range(low, high)}, got {value}")
        return value

    return parse


def number(low: float = -math.inf, high: float = math.inf, *, low_open: bool = False,
           high_open: bool = False, allow_inf: bool = False) -> Callable[[str], float]:
    """An argparse type: a finite number (``inf`` too with ``allow_inf``) in the interval
    ``[low, high]``, ``(low, ...`` with ``low_open``, ``..., high)`` with ``high_open``."""
    interval = (("(" if low_open else "[") + f"{low:g}, {high:g}" + (")" if high_open else "]"))
    below = (lambda v: v <= low) if low_open else (lambda v: v < low)
    above = (lambda v: v >= high) if high_open else (lambda v: v > high)

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        if math.isnan(value) or (math.isinf(value) and not allow_inf):
            raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
        if below(value) or above(value):
            where = (f"in {interval}" if math.isfinite(low) and math.isfinite(high) else
                     f"{'>' if low_open else '>='} {low:g}" if math.isfinite(low) else
                     f"{'<' if high_open else '<='} {high:g}")
            raise argparse.ArgumentTypeError(f"must be {where}, got {value:g}")
        return value

    return parse


PROBABILITY = number(0.0, 1.0)
POSITIVE = number(0.0, low_open=True)


def _range(low: int, high: int | None) -> str:
    return f">= {low}" if high is None else f"in [{low}, {high}]"


def local_workers(workers, option: str = "--workers", address: str | None = None) -> None:
    """A local Ray gets as many CPUs as ``--workers`` asks for: more than this machine has
    only oversubscribes it (a cluster, ``--address`` or ``$RAY_ADDRESS``, places the tasks)."""
    if not isinstance(workers, int) or address or os.environ.get("RAY_ADDRESS"):
        return
    affinity = getattr(os, "sched_getaffinity", None)
    cpus = len(affinity(0)) if affinity else os.cpu_count() or 1
    if workers > cpus:
        raise CLIError(f"{option} {workers}: this machine has {cpus} CPUs for Ray tasks; ask "
                       f"for at most {cpus} (or 'auto'), or give --address of a cluster")


def check_field_type(name: str, value: Any, default: Any) -> None:
    """ValueError unless a settings value (``--set``, ``--config``) has the type of the field's
    default: a finite number for a number, a list for a sequence, a string for a string; None
    and fields without a default are not judged here."""
    if value is None:
        return
    number = isinstance(value, int | float) and not isinstance(value, bool)
    if isinstance(default, bool):
        ok = isinstance(value, bool)
    elif isinstance(default, int | float):
        ok = number
        if ok and not math.isfinite(value):
            raise ValueError(f"field '{name}' must be finite, got {value}")
    elif isinstance(default, str):
        ok = isinstance(value, str)
    elif isinstance(default, list | tuple):
        ok = isinstance(value, list | tuple)
    else:
        return
    if not ok:
        raise ValueError(f"field '{name}' expects a {type(default).__name__} like "
                         f"{json.dumps(default, default=str)}, got {json.dumps(value)}")


def check_dataclass_fields(cls, data: dict) -> None:
    """:func:`check_field_type` for each value of ``data`` against the defaults of the
    dataclass ``cls`` (unknown names are the caller's to report)."""
    import dataclasses

    defaults = {f.name: (f.default if f.default is not dataclasses.MISSING else
                         f.default_factory() if f.default_factory is not dataclasses.MISSING
                         else None) for f in dataclasses.fields(cls)}
    for name, value in data.items():
        if name in defaults:
            check_field_type(name, value, defaults[name])


# --- before any work ---------------------------------------------------------------------------

OUT_OPTIONS = ("out",)
"""Namespace attributes that name an output folder of a command."""
NO_TRACKING_CHECK = ("ui", "sweep")
"""Commands with their own default store (their URI is checked where it is used)."""


def preflight(args: argparse.Namespace) -> None:
    """The checks of a command's environment before any work: the tracking URI (resolved from
    ``$RLIV_TRACKING_URI`` too; ``args.tracking_uri`` is set to it), the output folder's
    location and the Ray address. CLIError, OutputError or ClusterUnreachable if one fails."""
    from rliv_ray.outdir import check_out_location
    from rliv_ray.ray_address import check_ray_address
    from rliv_ray.tracking import check_tracking_uri

    if hasattr(args, "tracking_uri") and args.command not in NO_TRACKING_CHECK:
        args.tracking_uri = check_tracking_uri(args.tracking_uri)
    if hasattr(args, "workers") and args.command != "ui":
        local_workers(args.workers, address=getattr(args, "address", None))
    for name in OUT_OPTIONS:
        out = getattr(args, name, None)
        if isinstance(out, str) and out:
            check_out_location(out)
    try:
        check_ray_address(getattr(args, "address", None))
    except ValueError as err:
        raise CLIError(str(err)) from err


# --- one line and a status for every exception -------------------------------------------------

def one_line(text: str, limit: int = 1000) -> str:
    """``text`` as one line (whitespace runs, newlines included, become one space)."""
    line = " ".join(str(text).split())
    return line if len(line) <= limit else line[: limit - 3] + "..."


def classify(err: BaseException) -> tuple[int, str] | None:
    """(exit status, message) of an exception a command raised, or None for one rliv does not
    know (a bug). Ray wraps errors raised in its workers: their causes and texts are
    searched for ours."""
    known = _known(err)
    if known is not None:
        return known
    seen = set()
    link = err
    while link is not None and id(link) not in seen:  # causes, then the texts of Ray's wrappers
        seen.add(id(link))
        known = _known(link) if link is not err else None
        if known is not None:
            return known
        found = _named_in_text(str(link))
        if found is not None:
            return found
        link = link.__cause__ or link.__context__
    return None


def interrupted(err: KeyboardInterrupt) -> tuple[int, str]:
    """(exit status, message) of a command stopped by SIGINT or SIGTERM: 128 + the signal, and
    what training kept (:class:`~rliv_ray.interrupts.TrainingInterrupted`'s own message) or
    that no partial output was kept."""
    from rliv_ray.interrupts import TrainingInterrupted, signal_of

    signum = signal_of(err)
    if isinstance(err, TrainingInterrupted):
        return 128 + signum, one_line(str(err))
    return 128 + signum, f"interrupted ({signum.name}); no partial output was kept"


def _invalid_types() -> tuple[type, ...]:
    from rliv_ray.data.validate import LogValidationError
    from rliv_ray.tensor_files import DataFileError

    types = [InvalidInput, LogValidationError, DataFileError]
    for module, name in (("rliv_ray.offline.prelearner", "ShardError"),
                         ("rliv_ray.ope.targets", "OPEInputError"),
                         ("rliv_ray.train_loop", "TrainingDiverged")):
        found = _loaded(module, name)
        if found is not None:
            types.append(found)
    return tuple(types)


def _loaded(module: str, name: str):
    """``module.name`` if the module is imported already (importing one may start Ray's)."""
    import sys

    return getattr(sys.modules.get(module), name, None)


def _known(err: BaseException) -> tuple[int, str] | None:
    from rliv_ray.outdir import OutputError
    from rliv_ray.ray_address import ClusterUnreachable

    if isinstance(err, CLIError):
        return err.code, one_line(str(err))
    if isinstance(err, _invalid_types()):
        return EXIT_INVALID, one_line(str(err))
    if isinstance(err, OutputError | ClusterUnreachable):
        return EXIT_USAGE, one_line(str(err))
    readers = tuple(t for t in (_loaded("pyarrow", "ArrowException"),
                                _loaded("pandas.errors", "ParserError")) if t is not None)
    if readers and isinstance(err, readers):  # a reader of an input failed on its content
        return EXIT_INVALID, one_line(str(err))
    if isinstance(err, FileNotFoundError):  # an input that is not there
        return EXIT_INVALID, one_line(_os_message(err))
    if isinstance(err, OSError) and err.filename is not None:  # where OUT cannot be written
        return EXIT_USAGE, one_line(_os_message(err))
    if isinstance(err, ValueError):  # a setting out of its range
        return EXIT_USAGE, one_line(str(err))
    return None


_WRAPPED = {"ShardError": EXIT_INVALID, "LogValidationError": EXIT_INVALID,
            "DataFileError": EXIT_INVALID, "OPEInputError": EXIT_INVALID,
            "InvalidInput": EXIT_INVALID}


def _named_in_text(text: str) -> tuple[int, str] | None:
    """One of our errors quoted in a Ray wrapper's text (``ShardError: message``)."""
    found = re.search(rf"\b({'|'.join(_WRAPPED)}): (.+)", text)
    if found is None:
        return None
    return _WRAPPED[found.group(1)], one_line(found.group(2))


def _os_message(err: OSError) -> str:
    if err.filename is None:
        return str(err)
    return f"{err.filename}: {err.strerror or type(err).__name__}".replace(
        "No such file or directory", "no such file or directory")
