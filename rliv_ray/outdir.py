"""Output directories that never destroy an input or another run's output.

Every command that writes an OUT goes through this module, which guarantees:

1. **OUT is never an input.** OUT equal to an input, inside one or holding one is refused
   before anything is written (:func:`check_not_input`).
2. **One writer per OUT.** ``OUT.lock`` is created with ``O_EXCL`` and holds the writer's pid,
   host, start and command; a second writer fails with one line naming the first
   (:class:`OutputLockedError`). A lock whose process is gone (same host) is reported and
   removed; one of another host is never judged: its message says how to remove it.
3. **Nothing half-written, nothing replaced by surprise.** A dataset is written into
   ``OUT.tmp-<pid>`` and committed by renaming it to OUT (:func:`atomic_out`). The commit
   re-checks that OUT still does not exist: an OUT that appeared meanwhile is left as it is.
   (The check and the rename are two steps; the lock excludes every rliv writer in between.)
4. **--overwrite loses nothing.** The old OUT is moved to ``OUT.old-<pid>`` and deleted only
   after the new one is committed: a dataset at its rename, a training run when it finishes
   (:func:`claimed_out`). A run that fails keeps ``OUT.old-<pid>``.
5. **Leftovers are reported.** Under the lock, ``OUT.tmp-<pid>`` of processes that are gone are
   removed; an ``OUT.old-<pid>`` is restored to OUT if OUT is missing (a commit cut between its
   two renames), else reported and kept, since it may be the only copy of an output.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import socket
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

Say = Callable[[str], None]


class OutputError(FileExistsError):
    """OUT cannot be written as asked; one line, ``rliv`` exit status 2."""


class OutputExistsError(OutputError):
    """OUT exists and --overwrite was not given (or it appeared while this run wrote)."""


class OutputLockedError(OutputError):
    """Another process is writing OUT (its ``OUT.lock`` names it)."""


class OutputOverlapError(OutputError):
    """OUT is an input of the command, lies inside one or holds one."""


class OutputLocationError(OutputError):
    """OUT is a URI: outputs are local or mounted paths."""


def notice(message: str) -> None:
    """Report a leftover that was cleaned up or kept (stderr, one line)."""
    print(f"rliv: {message}", file=sys.stderr, flush=True)


def sibling(out: Path, tag: str) -> Path:
    """``OUT.<tag>`` beside OUT: ``lock``, ``tmp-<pid>``, ``old-<pid>``."""
    return out.with_name(f"{out.name}.{tag}")


def check_local(out: str | os.PathLike) -> None:
    """Raise OutputLocationError if OUT is a URI (before ``Path`` folds ``s3://`` into a
    relative ``s3:/`` folder)."""
    if "://" in str(out):
        raise OutputLocationError(
            f"{out}: an output must be a local or mounted path (it is committed by a rename and "
            "guarded by a lock file, which object stores do not offer); URIs are read as "
            "inputs only (nothing was written)")
def check_out_location(out: str | os.PathLike) -> None:
    """Raise OutputError unless OUT can be created where it is asked for: OUT, if it exists, is
    a folder; the nearest existing folder above it is a folder this process may write. Nothing
    is created (the first write is OUT's lock)."""
    check_local(out)
    path = Path(os.path.abspath(out))
    if path.exists() and not path.is_dir():
        raise OutputError(f"{out} is a file, not a directory: choose another output")
    parent = path.parent
    while not os.path.lexists(parent):
        parent = parent.parent
    if not parent.is_dir():
        raise OutputError(f"cannot create {out}: {parent} is a file, not a directory")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise OutputError(f"cannot write {out}: {parent} is not writable")


def check_not_input(out: str | os.PathLike, inputs: Iterable[str | os.PathLike | None]) -> None:
    """Raise OutputOverlapError if OUT is an input, lies inside one or contains one (after
    resolving symbolic links): writing or replacing OUT would then destroy that input."""
    check_local(out)
    target = Path(out).resolve()
    for given in inputs:
        if given is None or "://" in str(given):  # a URI input never overlaps a local OUT
            continue
        source = Path(given).resolve()
        if target == source:
            problem = "is an input of this command"
        elif source in target.parents:
            problem = f"lies inside the input {given}"
        elif target in source.parents:
            problem = f"contains the input {given}"
        else:
            continue
        raise OutputOverlapError(f"{out} {problem}: choose an output outside every input "
                                 "(nothing was written)")


# --- the lock ----------------------------------------------------------------------------------

def _start_ticks(pid: int) -> int | None:
    """The process's start time (clock ticks since boot, Linux), to tell a reused pid."""
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19])
    except (OSError, IndexError, ValueError):
        return None


def _alive(pid: int, start: int | None = None) -> bool:
    """Whether process ``pid`` of this host runs (and, if ``start`` is known, is the same one)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # another user's process: alive
    now = _start_ticks(pid)
    return start is None or now is None or now == start


def _read_lock(lock: Path) -> dict:
    try:
        holder = json.loads(lock.read_text())
        return holder if isinstance(holder, dict) else {}
    except (OSError, ValueError):
        return {}


def _stale(holder: dict) -> bool:
    """A lock of this host whose process is gone (a lock of another host is never stale)."""
    pid = holder.get("pid")
    if holder.get("host") != socket.gethostname() or not isinstance(pid, int):
        return False
    return not _alive(pid, holder.get("start"))


@contextlib.contextmanager
def locked(out: str | os.PathLike, say: Say = notice) -> Iterator[None]:
    """Hold ``OUT.lock`` inside the block; OutputLockedError (naming the holder) if another
    live process holds it. A stale lock (process gone, same host) is reported and replaced."""
    out = Path(out)
    lock = sibling(out, "lock")
    try:
        lock.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise OutputError(f"cannot create {out}: {err.strerror} ({err.filename})") from None
    me = {"pid": os.getpid(), "host": socket.gethostname(), "start": _start_ticks(os.getpid()),
          "since": time.strftime("%Y-%m-%dT%H:%M:%S"), "command": " ".join(sys.argv)}
    for _ in range(50):  # up to 10 s for a lock that is being written
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            holder = _read_lock(lock)
            if not holder and time.time() - _mtime(lock) < 5:
                time.sleep(0.2)  # being written by a writer that just created it
                continue
            if holder and not _stale(holder):
                raise OutputLockedError(
                    f"{out} is being written by pid {holder.get('pid')} on host "
                    f"{holder.get('host')} since {holder.get('since')} ({lock}); wait for it, "
                    f"or delete {lock} if that process is gone") from None
            if _read_lock(lock) == holder:  # still the same stale lock: take it over
                lock.unlink(missing_ok=True)
                say(f"removed the stale lock {lock} of pid {holder.get('pid', '?')} on "
                    f"{holder.get('host', '?')}, which is no longer running")
            continue
        except OSError as err:
            raise OutputError(f"cannot write {out}: {err.strerror} ({lock})") from None
        with os.fdopen(fd, "w") as f:
            f.write(json.dumps(me) + "\n")
        break
    else:
        raise OutputLockedError(f"{out}: could not take {lock}; another writer keeps taking it")
    try:
        yield
    finally:
        if _read_lock(lock).get("pid") == me["pid"]:
            lock.unlink(missing_ok=True)


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return 0.0


# --- leftovers ---------------------------------------------------------------------------------

def _pid_of(path: Path) -> int | None:
    """The writer's pid in ``OUT.tmp-<pid>`` or ``OUT.old-<pid>[-<n>]``."""
    found = re.search(r"\.(?:tmp|old)-(\d+)(?:-\d+)?$", path.name)
    return int(found.group(1)) if found else None


def _aside(out: Path) -> Path:
    """A free ``OUT.old-<pid>`` (``-2``, ``-3``... if this process already left one)."""
    path, n = sibling(out, f"old-{os.getpid()}"), 1
    while _exists(path):
        n += 1
        path = sibling(out, f"old-{os.getpid()}-{n}")
    return path


def tidy(out: str | os.PathLike, say: Say = notice) -> None:
    """Deal with what dead writers left beside OUT (call it holding OUT's lock): remove their
    ``OUT.tmp-<pid>``, restore an ``OUT.old-<pid>`` if OUT is missing, report the others."""
    out = Path(out)
    if not out.parent.is_dir():
        return
    for tmp in sorted(out.parent.glob(f"{_escape(out.name)}.tmp-*")):
        pid = _pid_of(tmp)
        if pid is not None and pid != os.getpid() and not _alive(pid):
            _remove(tmp)
            say(f"removed {tmp}, the unfinished output of pid {pid}, which is no longer "
                "running")
    for old in sorted(out.parent.glob(f"{_escape(out.name)}.old-*")):
        pid = _pid_of(old)
        if pid is None or pid == os.getpid() or _alive(pid):
            continue
        if not os.path.lexists(out):
            old.rename(out)
            say(f"restored {out} from {old}, where an --overwrite run of pid {pid} had moved "
                "it before it stopped")
        else:
            say(f"kept {old}: the output that an --overwrite run of pid {pid} replaced before "
                "it stopped; delete it once you no longer need it")


def _escape(name: str) -> str:
    import glob

    return glob.escape(name)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)


# --- the two ways of writing an OUT --------------------------------------------------------------

def _exists(out: Path) -> bool:
    return os.path.lexists(out)


def _not_empty(out: Path) -> bool:
    return _exists(out) and (not out.is_dir() or any(out.iterdir()))


@contextlib.contextmanager
def atomic_out(out: str | os.PathLike, *, overwrite: bool = False,
               inputs: Iterable[str | os.PathLike | None] = (),
               say: Say = notice) -> Iterator[Path]:
    """Yield ``OUT.tmp-<pid>``, which becomes OUT only if the block succeeds (rules 1-5 of the
    module docstring). On any exception, KeyboardInterrupt included, the temporary directory is
    removed and OUT is left exactly as it was."""
    check_local(out)
    final = Path(out)
    check_not_input(final, inputs)
    with locked(final, say):
        tidy(final, say)
        if _exists(final) and not overwrite:
            raise OutputExistsError(f"{final} already exists (pass --overwrite to replace it)")
        tmp = sibling(final, f"tmp-{os.getpid()}")
        if _exists(tmp):
            _remove(tmp)
        tmp.mkdir()
        try:
            yield tmp
        except BaseException:
            _remove(tmp)
            raise
        commit(tmp, final, overwrite=overwrite)


def commit(tmp: Path, final: Path, *, overwrite: bool) -> None:
    """Rename ``tmp`` to ``final``. If ``final`` exists, it is moved to ``final.old-<pid>``
    first and deleted after, with ``overwrite``; without, the commit is refused (``tmp`` is
    removed) and ``final`` left as it is."""
    old = None
    if _exists(final):
        if not overwrite:
            _remove(tmp)
            raise OutputExistsError(f"{final} appeared while this run was writing it (another "
                                    "writer?); it was left as it is and this run's output "
                                    "discarded")
        old = _aside(final)
        final.rename(old)
    try:
        tmp.rename(final)
    except OSError as err:  # final re-created between the two renames
        _remove(tmp)
        kept = f"the previous one is kept at {old}" if old else "it was left as it is"
        raise OutputExistsError(f"{final} appeared while this run was committing it; "
                                f"{kept}") from err
    if old is not None:
        _remove(old)


@dataclass
class Claim:
    """What :func:`claimed_out` yields: the OUT it holds and the OUT it moved aside, if any.
    A block that returns without having finished its run sets ``finished = False``."""

    out: Path
    old: Path | None = None
    finished: bool = True


@contextlib.contextmanager
def claimed_out(out: str | os.PathLike, *, resume: bool, overwrite: bool, what: str,
                inputs: Iterable[str | os.PathLike | None] = (),
                say: Say = notice) -> Iterator[Claim]:
    """Hold OUT for a run that writes in place (training, a sweep), so that ``--resume`` can
    continue what an interrupted run left: rules 1, 2, 4 and 5 of the module docstring.

    ``resume``: OUT is used as it is. Otherwise a non-empty OUT needs ``overwrite``, which moves
    it to ``OUT.old-<pid>``; that copy is deleted only when the block succeeds and leaves
    ``finished`` True (a failed or interrupted run keeps it, and the next run reports it)."""
    check_local(out)
    out = Path(out)
    check_not_input(out, inputs)
    with locked(out, say):
        tidy(out, say)
        old = None
        if not resume and _not_empty(out):
            if not overwrite:
                raise OutputExistsError(f"{out} is not empty: pass --resume to continue its "
                                        f"{what} or --overwrite to start again")
            old = _aside(out)
            out.rename(old)
        if not resume:
            out.mkdir(parents=True, exist_ok=True)
        claim = Claim(out, old)
        yield claim
        if old is not None and claim.finished:
            _remove(old)
