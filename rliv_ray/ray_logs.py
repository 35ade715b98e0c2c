"""Ray, RLlib and Tune log lines that a user of rliv cannot act on, dropped at their logger.

Each entry names the logger a line is emitted on and how the line starts; everything else,
warnings a user can act on included, passes. The lines (Ray 2.60, at every training start):

- RLlib's notice that the algorithm runs on the new API stack (it is the only stack here);
- RLlib's own deprecated ``RLModule(config=...)`` call inside ``RLModule.__init__``;
- Tune's "Install gputil" from the system monitor RLlib starts (no GPU monitoring wanted);
- Ray Data's "Progress bars disabled" when the offline reader turns its bars off;
- Ray's notice that a local Ray enabled token auth by default (the README says so).
"""

from __future__ import annotations

import logging

UNACTIONABLE: dict[str, tuple[str, ...]] = {
    "ray._common.deprecation": ("DeprecationWarning: `RLModule(config=",),
    "ray.rllib.algorithms.algorithm_config": ("You are running ",),
    "ray.tune.utils.util": ("Install gputil",),
    "ray.data._internal.progress": ("Progress bars disabled",),
    "ray._private.authentication.authentication_token_setup": (
        "Token authentication is enabled for this Ray cluster",),
}


class _DropLines(logging.Filter):
    def __init__(self, starts: tuple[str, ...]):
        super().__init__()
        self.starts = starts

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith(self.starts)


def drop_unactionable_lines() -> None:
    """Install the filters (once per logger)."""
    for name, starts in UNACTIONABLE.items():
        logger = logging.getLogger(name)
        if not any(isinstance(f, _DropLines) for f in logger.filters):
            logger.addFilter(_DropLines(starts))
