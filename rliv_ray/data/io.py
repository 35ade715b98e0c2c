"""Parquet IO shared by every command: dataset layout, atomic outputs, user bucketing.

A *dataset directory* written by rliv-ray looks like::

    OUT/
      log/part-00000.parquet ...     interaction log, each file holds whole users
      truth/part-00000.parquet ...   simulator ground truth, row-aligned with log/ (synthetic only)
      manifest.json                  how it was made (config, counts)

Every command that writes data writes into ``OUT.tmp-<pid>`` and renames it to ``OUT`` at the
very end, so a failure (bad input, Ctrl-C, crash) leaves no partial output behind; see
:mod:`rliv_ray.outdir` for the rest of what an output directory guarantees.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np

from rliv_ray.data import uris
from rliv_ray.outdir import OutputExistsError, atomic_out  # noqa: F401 - re-exported

LOG_DIR = "log"
TRUTH_DIR = "truth"
MANIFEST = "manifest.json"


def part_name(index: int) -> str:
    """File name of the ``index``-th part of a directory of Parquet parts."""
    return f"part-{index:05d}.parquet"


@contextlib.contextmanager
def atomic_output_dir(path: str | os.PathLike, *, overwrite: bool = False,
                      inputs: Iterable[str | os.PathLike | None] = ()) -> Iterator[Path]:
    """Yield a temporary directory that becomes ``path`` only if the block succeeds.

    On any exception (KeyboardInterrupt included) the temporary directory is removed and
    ``path`` is left exactly as it was. ``path`` may not be, lie inside or hold one of
    ``inputs``; one writer at a time; with ``overwrite`` the old output is deleted only after
    the new one is in place (:func:`rliv_ray.outdir.atomic_out`).
    """
    with atomic_out(path, overwrite=overwrite, inputs=inputs) as tmp:
        yield tmp


def write_manifest(directory: Path, manifest: dict) -> None:
    """Write ``manifest.json`` (how a dataset was made) into ``directory``."""
    (directory / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")


def read_manifest(path: str | os.PathLike) -> dict:
    """The manifest of a dataset directory, or ``{}`` if it has none."""
    if uris.is_uri(path):
        text = uris.read_text(uris.join(str(path), MANIFEST))
        return json.loads(text) if text else {}
    file = Path(path) / MANIFEST
    if not file.exists():
        return {}
    try:
        manifest = json.loads(file.read_text())
    except (OSError, ValueError) as err:
        from rliv_ray.checks import InvalidInput

        raise InvalidInput(f"{file}: not a readable manifest ({err})") from None
    if not isinstance(manifest, dict):
        from rliv_ray.checks import InvalidInput

        raise InvalidInput(f"{file}: not a manifest (expected a JSON object)")
    return manifest


def log_files(path: str | os.PathLike) -> list[Path] | list[str]:
    """The Parquet files of an interaction log, sorted.

    ``path`` may be a dataset directory (its ``log/`` is used), a directory of Parquet files
    (searched recursively, hidden and ``_``-prefixed entries skipped), or one Parquet file;
    a local path or a URI (:mod:`rliv_ray.data.uris`; the files are then URIs too).
    """
    if uris.is_uri(path):
        return _log_uris(str(path))
    root = Path(path)
    if not root.exists():
        raise FileNotFoundError(f"{root}: no such file or directory")
    if root.is_file():
        return [root]
    if (root / LOG_DIR).is_dir():
        root = root / LOG_DIR
    files = sorted(
        p
        for p in root.rglob("*.parquet")
        if not any(part.startswith((".", "_")) for part in p.relative_to(root).parts)
    )
    if not files:
        raise FileNotFoundError(f"{root}: no .parquet files found")
    return files


def _log_uris(uri: str) -> list[str]:
    found = uris.kind(uri)
    if found is None:
        raise FileNotFoundError(f"{uri}: no such file or directory")
    if found == "file":
        return [uri]
    if uris.kind(uris.join(uri, LOG_DIR)) == "dir":
        uri = uris.join(uri, LOG_DIR)
    files = uris.parquet_files(uri, recursive=True)
    if not files:
        raise FileNotFoundError(f"{uri}: no .parquet files found")
    return files


def path_exists(path: str | os.PathLike) -> bool:
    """A local path or URI names something."""
    return uris.kind(str(path)) is not None if uris.is_uri(path) else Path(path).exists()


def mix64(values: np.ndarray, seed: int = 0) -> np.ndarray:
    """A stable, well-spread uint64 hash of int64 values (splitmix64 of value + seed * gamma)."""
    offset = np.uint64(seed * 0x9E3779B97F4A7C15 % 2**64)
    z = np.asarray(values).astype(np.int64).view(np.uint64) + offset
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def user_bucket(user_ids: np.ndarray, n_buckets: int) -> np.ndarray:
    """Bucket of each user id: :func:`mix64` modulo ``n_buckets``.

    Log stores bucket users by a hash of the id so that each file holds whole users; the same
    function is used by the generator, the converter and the sample pipeline.
    """
    return (mix64(user_ids) % np.uint64(n_buckets)).astype(np.int64)
