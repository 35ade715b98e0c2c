"""What a directory of RL sample shards holds, read from Parquet footers before Ray starts.

``rliv build-samples`` writes ``OUT/samples/part-*.parquet`` with the state's feature names,
the sample mode and the rewards the source lacks in the schema metadata. Training reads
those here, so a wrong directory or a foreign file fails at once with the file and column.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from rliv_ray import schema as S
from rliv_ray.data import uris
from rliv_ray.mdp.samples import META_ABSENT_REWARDS, META_MODE, META_STATE_NAMES
from rliv_ray.mdp.state import GAP_STATE_NAMES
from rliv_ray.offline.prelearner import ShardError, required_columns

GAP_STATE = f"gap/{GAP_STATE_NAMES[0]}"
SAMPLES_SUBDIR = "samples"


@dataclass(frozen=True)
class ShardInfo:
    files: tuple[Path, ...]
    state_names: tuple[str, ...]
    mode: str
    absent_rewards: tuple[str, ...]
    rows: int

    @property
    def state_dim(self) -> int:
        return len(self.state_names)

    @property
    def gap_index(self) -> int:
        return self.state_names.index(GAP_STATE)

    @property
    def labels(self) -> tuple[str, ...]:
        """The reward labels the source has (KuaiRand has no gift)."""
        return tuple(label for label in S.LABELS if label not in self.absent_rewards)


def shard_files(path: str | Path) -> list[Path] | list[str]:
    """``path/samples/*.parquet`` (a build-samples output), ``path/*.parquet``, or one file;
    a local path or a URI (:mod:`rliv_ray.data.uris`)."""
    if uris.is_uri(path):
        return _shard_uris(str(path))
    root = Path(path)
    if root.is_file():
        return [root]
    if not root.is_dir():
        raise ShardError(f"{root}: no such sample directory")
    base = root / SAMPLES_SUBDIR if (root / SAMPLES_SUBDIR).is_dir() else root
    files = sorted(p for p in base.glob("*.parquet") if not p.name.startswith((".", "_")))
    if not files:
        raise ShardError(f"{base}: no Parquet sample shards (run `rliv build-samples` first)")
    return files


def _shard_uris(uri: str) -> list[str]:
    found = uris.kind(uri)
    if found == "file":
        return [uri]
    if found is None:
        raise ShardError(f"{uri}: no such sample directory")
    if uris.kind(uris.join(uri, SAMPLES_SUBDIR)) == "dir":
        uri = uris.join(uri, SAMPLES_SUBDIR)
    files = uris.parquet_files(uri, recursive=False)
    if not files:
        raise ShardError(f"{uri}: no Parquet sample shards (run `rliv build-samples` first)")
    return files


def inspect_shards(path: str | Path, *, next_state: str = "asa") -> ShardInfo:
    """Check every shard's schema and agree on one state layout; raise ShardError if not."""
    files = shard_files(path)
    first: ShardInfo | None = None
    rows = 0
    for file in files:
        try:
            meta = pq.read_metadata(file)
        except (OSError, pa.ArrowInvalid) as exc:
            raise ShardError(f"{file}: not a readable Parquet file ({exc})") from None
        schema = meta.schema.to_arrow_schema()
        info = _info(file, schema)
        _check_columns(file, schema, info.state_dim, next_state)
        if first is not None and info.state_names != first.state_names:
            raise ShardError(f"{file}: column '{S.STATE}' has features {info.state_names}, but "
                             f"{uris.name(files[0])} has {first.state_names}")
        first = first or info
        rows += meta.num_rows
    return ShardInfo(tuple(files), first.state_names, first.mode, first.absent_rewards, rows)


def distinct_ids(info: ShardInfo) -> dict[str, int]:
    """How many distinct users and authors the shards hold (reads only those two columns)."""
    columns = (S.USER_ID, S.AUTHOR_ID)
    seen: dict[str, list[pa.Array]] = {column: [] for column in columns}
    for file in info.files:
        table = pq.read_table(file, columns=list(columns))
        for column in columns:
            seen[column].append(pc.unique(table.column(column)))
    return {column: len(pc.unique(pa.chunked_array(parts))) for column, parts in seen.items()}


def _info(file: Path, schema: pa.Schema) -> ShardInfo:
    metadata = schema.metadata or {}
    if META_STATE_NAMES not in metadata:
        raise ShardError(f"{file}: column '{S.STATE}' has no feature names in the schema "
                         "metadata (is it an rliv sample shard?)")
    names = tuple(json.loads(metadata[META_STATE_NAMES]))
    if GAP_STATE not in names:
        raise ShardError(f"{file}: column '{S.STATE}' lacks the gap feature '{GAP_STATE}'")
    absent = tuple(json.loads(metadata.get(META_ABSENT_REWARDS, b"[]")))
    return ShardInfo((file,), names, metadata.get(META_MODE, b"asa").decode(), absent, 0)


def _check_columns(file: Path, schema: pa.Schema, state_dim: int, next_state: str) -> None:
    for column in required_columns(next_state):
        if column not in schema.names:
            raise ShardError(f"{file}: sample shard lacks column '{column}'")
    for column in (S.STATE, S.NEXT_STATE):
        kind = schema.field(column).type
        if not (pa.types.is_fixed_size_list(kind) and kind.list_size == state_dim
                and pa.types.is_floating(kind.value_type)):
            raise ShardError(f"{file}: column '{column}' must be a fixed-size list of "
                             f"{state_dim} floats, got {kind}")
    for column in (S.ACTION, S.USER_ID, S.AUTHOR_ID):
        if not pa.types.is_integer(schema.field(column).type):
            raise ShardError(f"{file}: column '{column}' must be an integer, got "
                             f"{schema.field(column).type}")


SCAN_ROWS = 1 << 16
"""Rows read at a time by :func:`check_shard_values`."""
_IDS = (S.USER_ID, S.AUTHOR_ID)


def check_shard_values(files, *, n_actions: int | None = None) -> None:
    """Read every sample shard once before Ray starts and raise ShardError (one line naming
    file, column and row) at the first NaN or infinite number in any float column (rewards,
    states, vectors; not ``true_next_state``, NaN where a row was not stitched), negative user
    or author id, or action outside ``[0, n_actions)``."""
    for file in files:
        try:
            parquet = pq.ParquetFile(file)
            batches = parquet.iter_batches(batch_size=SCAN_ROWS)
            offset = 0
            for batch in batches:
                _check_batch(file, batch, offset, n_actions)
                offset += batch.num_rows
        except (OSError, pa.ArrowException) as exc:
            raise ShardError(f"{file}: not a readable Parquet file ({exc})") from None


def _check_batch(file, batch: pa.RecordBatch, offset: int, n_actions: int | None) -> None:
    for name, column in zip(batch.schema.names, batch.columns, strict=True):
        if name == S.TRUE_NEXT_STATE:  # NaN marks "not stitched" (schema); training skips it
            continue
        kind = column.type
        if pa.types.is_fixed_size_list(kind) or pa.types.is_list(kind):
            if not pa.types.is_floating(kind.value_type):
                continue
            size = kind.list_size if pa.types.is_fixed_size_list(kind) else None
            flat = pc.list_flatten(column)
        elif pa.types.is_floating(kind):
            flat, size = column, 1
        else:
            if name in _IDS and pa.types.is_integer(kind):
                _fail_at(file, name, offset, pc.less(column, 0), column, "negative id {v}")
            if name == S.ACTION and n_actions is not None and pa.types.is_integer(kind):
                outside = pc.or_(pc.less(column, 0), pc.greater_equal(column, n_actions))
                _fail_at(file, name, offset, outside, column,
                         f"action {{v}} is outside the grid of {n_actions} actions")
            continue
        bad = pc.index(pc.invert(pc.fill_null(pc.is_finite(flat), True)), True).as_py()
        if bad >= 0:
            value = flat[bad].as_py()
            row = bad if size == 1 else (bad // size if size else _list_row(column, bad))
            what = "NaN value" if value != value else f"infinite value ({value})"
            raise ShardError(f"{file}: column '{name}', row {offset + row}: {what}")


def _list_row(column, flat_index: int) -> int:
    lengths = pc.fill_null(pc.list_value_length(column), 0).to_numpy()
    return int((lengths.cumsum() <= flat_index).sum())


def _fail_at(file, name: str, offset: int, mask, values, message: str) -> None:
    bad = pc.index(pc.fill_null(mask, False), True).as_py()
    if bad >= 0:
        raise ShardError(f"{file}: column '{name}', row {offset + bad}: "
                         + message.format(v=values[bad].as_py()))
