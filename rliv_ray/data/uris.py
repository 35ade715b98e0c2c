"""Input paths given as URIs (``s3://bucket/logs``, ``gs://...``, ``file:///...``), listed
and read with ``pyarrow.fs``: the filesystems Ray Data reads too, with the same credentials
(``AWS_*`` variables, ``AWS_ENDPOINT_URL`` for an S3-compatible store, instance roles...).

Inputs only: LOGS of ``build-samples``, ``validate`` and ``summary``, SAMPLES of
``train rliv-ua``. An output (OUT) stays a local or mounted path, because it is committed by
a rename and guarded by a lock file, which object stores do not offer (cluster/README.md).
"""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import urlsplit

import pyarrow as pa
import pyarrow.fs as pafs


def is_uri(path: str | os.PathLike) -> bool:
    return "://" in str(path)


def _filesystem(uri: str) -> tuple[pafs.FileSystem, str]:
    try:
        return pafs.FileSystem.from_uri(uri)
    except (pa.ArrowInvalid, OSError) as err:
        raise FileNotFoundError(f"{uri}: cannot open ({err})") from None


def _uri(template: str, path: str) -> str:
    """``path`` of the filesystem of ``template``, as a URI with the template's scheme and
    query (``s3://b/k?endpoint_override=...``)."""
    parts = urlsplit(template)
    return f"{parts.scheme}://{path}" + (f"?{parts.query}" if parts.query else "")


def join(uri: str, name: str) -> str:
    parts = urlsplit(uri)
    return _uri(uri, f"{parts.netloc}{parts.path.rstrip('/')}/{name}")


def kind(uri: str) -> str | None:
    """``"file"``, ``"dir"`` or None (nothing there)."""
    fs, path = _filesystem(uri)
    try:
        found = fs.get_file_info(path).type
    except OSError as err:
        raise FileNotFoundError(f"{uri}: cannot open ({err})") from None
    return {pafs.FileType.File: "file", pafs.FileType.Directory: "dir"}.get(found)


def parquet_files(uri: str, *, recursive: bool) -> list[str]:
    """The ``*.parquet`` files under ``uri`` as URIs, sorted; entries whose path below ``uri``
    has a part starting with ``.`` or ``_`` are skipped."""
    fs, root = _filesystem(uri)
    infos = fs.get_file_info(pafs.FileSelector(root, recursive=recursive, allow_not_found=True))
    found = []
    for info in infos:
        below = info.path[len(root):].strip("/").split("/")
        if (info.type == pafs.FileType.File and info.path.endswith(".parquet")
                and not any(part.startswith((".", "_")) for part in below)):
            found.append(_uri(uri, info.path))
    return sorted(found)


def filesystem_and_paths(files: list[str]) -> tuple[pafs.FileSystem | None, list[str]]:
    """``(None, files)`` for local paths; for URIs the filesystem of the first and every
    file's path within it (Ray Data resolves only its first URI's options, such as an
    ``endpoint_override``, and would look the others up as plain keys)."""
    if not files or not is_uri(files[0]):
        return None, files
    filesystem = _filesystem(files[0])[0]
    return filesystem, [_filesystem(file)[1] for file in files]


def read_text(uri: str) -> str | None:
    """The file's text, or None if there is none."""
    if kind(uri) != "file":
        return None
    fs, path = _filesystem(uri)
    with fs.open_input_stream(path) as stream:
        return stream.read().decode()


def name(path: str | os.PathLike) -> str:
    """The last part of a local path or URI, without the URI's query (run names, messages)."""
    text = urlsplit(str(path)).path if is_uri(path) else str(path)
    return text.rstrip("/").rsplit("/", 1)[-1]


def absolute(path: str | os.PathLike) -> str:
    """A URI as given, a local path resolved (what a run records as its input)."""
    return str(path) if is_uri(path) else str(Path(path).resolve())
