"""Files of tensors and JSON: what rliv-ray writes and reads back, never pickled objects.

Every file the project reads back (a training checkpoint's ``module.pt`` and ``state.pt``,
SL-MGAC's ``policy.pt``, RLIV-UA's ``scorer.pt``, the ASA model, the learned simulator's
``models.pt``) is written by :func:`save_tensors`, which accepts only tensors, numbers, strings,
``None`` and lists, tuples and dicts of them, and read by :func:`load_tensors` with
``torch.load(weights_only=True)``.

The guarantee: reading a file never constructs a Python object the file names. A crafted file
(a pickle whose ``__reduce__`` runs a shell command, an RLlib checkpoint, a TorchScript archive)
is refused with a :class:`DataFileError` of one line naming the file; its payload never runs.
"""

from __future__ import annotations

import json
import os
import re
import warnings
from pathlib import Path
from typing import Any

PLAIN = (str, int, float, bool, type(None))


class DataFileError(ValueError):
    """A file is not what rliv-ray wrote (crafted, corrupt or of an older format): the input
    data is invalid (``rliv`` exit status 1). The message is one line naming the file."""


def check_plain(value: Any, where: str = "") -> None:
    """Raise TypeError unless ``value`` is made of tensors, plain scalars, lists, tuples and
    dicts with str or int keys only (what ``weights_only=True`` reads back)."""
    import torch

    if isinstance(value, (torch.Tensor, *PLAIN)):
        return
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str | int):
                raise TypeError(f"{where or 'value'}: key {key!r} is not a str or int")
            check_plain(item, f"{where}/{key}")
        return
    if isinstance(value, list | tuple):
        for i, item in enumerate(value):
            check_plain(item, f"{where}/{i}")
        return
    raise TypeError(f"{where or 'value'}: {type(value).__name__} is not a tensor or plain value")


def save_tensors(value: Any, path: str | os.PathLike) -> Path:
    """``torch.save`` of a plain value (:func:`check_plain`), atomically (temp file, rename)."""
    import torch

    check_plain(value)
    path = Path(path)
    tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
    torch.save(value, tmp)
    tmp.replace(path)
    return path


def load_tensors(source: str | os.PathLike | Any, what: str, *, name: str | None = None) -> Any:
    """What :func:`save_tensors` wrote, read with ``weights_only=True``; ``source`` is a path or
    a binary file object. DataFileError (one line: ``name`` or the path, then ``what`` it
    should have been and why not) for anything else; FileNotFoundError if there is no file."""
    import torch

    label = name or str(source)
    try:
        with warnings.catch_warnings():  # about files refused below anyway
            warnings.filterwarnings("ignore", message=".*looks like a TorchScript archive")
            warnings.filterwarnings("ignore", message="Detected pickle protocol")
            return torch.load(source, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise
    except Exception as err:  # noqa: BLE001 - unpickling, zip and EOF errors alike
        raise DataFileError(f"{label}: not {what} ({why(err)}; rliv-ray reads only tensors "
                            "and JSON, never pickled objects)") from err


def load_meta_file(path: str | os.PathLike, what: str, hint: str) -> tuple[dict, dict]:
    """A ``{"meta": JSON string, "state_dict": {name: tensor}}`` file (policy.pt, scorer.pt):
    its parsed metadata and state dict; DataFileError ending in ``hint`` if it is not one."""
    blob = load_tensors(path, what)
    try:
        meta = json.loads(blob["meta"])
        state = blob["state_dict"]
        if not isinstance(meta, dict) or not isinstance(state, dict):
            raise TypeError("meta or state_dict has the wrong type")
    except (KeyError, TypeError, ValueError) as err:
        raise DataFileError(f"{path}: not {what} ({why(err)}); {hint}") from err
    return meta, state


def to_json(value: Any, **kwargs) -> str:
    """``json.dumps`` that also writes NumPy scalars (sizes computed from data) as numbers."""
    return json.dumps(value, default=_json_number, **kwargs)


def _json_number(value):
    import numpy as np

    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


def why(err: BaseException) -> str:
    """One line on why a file was refused: the Python object a pickle names, or the first line
    of the error."""
    text = str(err)
    found = re.search(r"Unsupported global: GLOBAL ([\w.]+)", text)
    if found:
        return f"it asks to load the Python object {found.group(1)}"
    if text.startswith("Weights only load failed"):
        return "not a file of tensors that torch reads without unpickling"
    first = text.strip().splitlines()[0] if text.strip() else ""
    return f"{type(err).__name__}: {first}" if first else type(err).__name__
