"""What is in an interaction log: counts, label rates and how much of it stitching can reach.

Reads one Parquet file at a time (a file holds whole users in every log rliv-ray writes, so the
stitchable share is exact per file). Distinct users, authors and pairs are merged across files.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from rliv_ray import schema as S
from rliv_ray.data import io
from rliv_ray.mdp.stitching import HISTORY_BUCKETS, StitchConfig, history_bucket, stitch
from rliv_ray.progress import Progress

_COLUMNS = [S.USER_ID, S.AUTHOR_ID, S.USER_REQUEST_IDX, S.TS_MS, S.UA_EXPOSURE_COUNT, *S.LABELS]


def summarize_log(path: str | Path, *, stitch_config: StitchConfig | None = None,
                  progress: bool = False) -> dict:
    """Row counts, distinct users/authors/pairs, label rates and the stitchable share.

    The stitchable share is reported overall and by pair-history bucket (first contact, 2-5
    interactions, 6+), like the paper's 47% (rliv-ua, section 3.1).
    """
    config = stitch_config or StitchConfig()
    files = io.log_files(path)
    rows = 0
    label_sums = dict.fromkeys(S.LABELS, 0)
    label_known = dict.fromkeys(S.LABELS, 0)
    stitched = np.zeros(len(HISTORY_BUCKETS), dtype=np.int64)
    bucket_rows = np.zeros(len(HISTORY_BUCKETS), dtype=np.int64)
    users, authors, pairs = [], [], []
    with Progress(len(files), "summary", unit="files", enabled=progress) as bar:
        for file in files:
            table = pq.read_table(file, columns=_COLUMNS)
            user = table[S.USER_ID].to_numpy()
            author = table[S.AUTHOR_ID].to_numpy()
            rows += table.num_rows
            engaged = np.zeros(table.num_rows, dtype=bool)
            for label in S.LABELS:
                column = table[label]
                label_known[label] += len(column) - column.null_count
                values = column.fill_null(0).to_numpy()
                label_sums[label] += int(values.sum())
                engaged |= values > 0
            ok = stitch(user, author, table[S.USER_REQUEST_IDX].to_numpy(),
                        table[S.TS_MS].to_numpy(), engaged, config) >= 0
            bucket = history_bucket(table[S.UA_EXPOSURE_COUNT].to_numpy())
            bucket_rows += np.bincount(bucket, minlength=len(HISTORY_BUCKETS))
            stitched += np.bincount(bucket, weights=ok, minlength=len(HISTORY_BUCKETS)).astype(
                np.int64)
            users.append(np.unique(user))
            authors.append(np.unique(author))
            pairs.append(np.unique(np.stack([user, author], axis=1), axis=0))
            bar.update(1)
    return {
        "files": len(files),
        "rows": rows,
        "users": _distinct(users),
        "authors": _distinct(authors),
        "pairs": len(np.unique(np.concatenate(pairs), axis=0)) if pairs else 0,
        "label_rates": {
            label: (label_sums[label] / label_known[label] if label_known[label] else None)
            for label in S.LABELS
        },
        "sequence_length": config.sequence_length,
        "sequence_content": config.content,
        "stitchable_share": float(stitched.sum() / max(rows, 1)),
        "stitchable_share_by_history": {
            name: float(stitched[i] / bucket_rows[i]) if bucket_rows[i] else None
            for i, name in enumerate(HISTORY_BUCKETS)
        },
        "rows_by_history": {name: int(bucket_rows[i]) for i, name in enumerate(HISTORY_BUCKETS)},
    }


def _distinct(chunks: list[np.ndarray]) -> int:
    return len(np.unique(np.concatenate(chunks))) if chunks else 0


def format_summary(summary: dict) -> str:
    """The summary as an aligned two-column table."""
    def pct(x):
        return "absent" if x is None else f"{100 * x:.3f}%"

    lines = [
        ("rows", f"{summary['rows']:,}"),
        ("files", f"{summary['files']:,}"),
        ("users", f"{summary['users']:,}"),
        ("authors", f"{summary['authors']:,}"),
        ("user-author pairs", f"{summary['pairs']:,}"),
        *((f"{label} rate", pct(rate)) for label, rate in summary["label_rates"].items()),
        (f"stitchable share (L={summary['sequence_length']}, {summary['sequence_content']})",
         pct(summary["stitchable_share"])),
        *((f"  pair history {name} ({summary['rows_by_history'][name]:,} rows)", pct(share))
          for name, share in summary["stitchable_share_by_history"].items()),
    ]
    width = max(len(k) for k, _ in lines)
    return "\n".join(f"{k:<{width}}  {v}" for k, v in lines)
