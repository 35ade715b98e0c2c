"""Output directories (rliv_ray.outdir): each rule of its docstring, without Ray."""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

import rliv_ray
from rliv_ray.outdir import (
    OutputExistsError,
    OutputLockedError,
    OutputOverlapError,
    atomic_out,
    check_not_input,
    claimed_out,
    locked,
    sibling,
    tidy,
)

REPO = Path(rliv_ray.__file__).resolve().parents[1]


def dead_pid() -> int:
    """The pid of a process that has exited."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def write_lock(out, pid, host=None):
    sibling(out, "lock").write_text(json.dumps({"pid": pid, "host": host or socket.gethostname(),
                                                "since": "then"}))


# --- rule 1: OUT is never an input ---------------------------------------------------------

@pytest.mark.parametrize(("out", "problem"), [
    ("data", "is an input of this command"),
    ("data/sub/out", "lies inside the input"),
    (".", "contains the input"),
    ("link", "is an input of this command"),  # a symbolic link to the input
])
def test_an_output_overlapping_an_input_is_refused(tmp_path, out, problem):
    (tmp_path / "data" / "sub").mkdir(parents=True)
    (tmp_path / "link").symlink_to(tmp_path / "data")
    with pytest.raises(OutputOverlapError, match=problem) as err:
        check_not_input(tmp_path / out, [None, tmp_path / "data"])
    assert "\n" not in str(err.value)
    check_not_input(tmp_path / "elsewhere", [tmp_path / "data"])  # no overlap: fine


def test_atomic_out_checks_inputs_before_touching_anything(tmp_path):
    (tmp_path / "logs").mkdir()
    (tmp_path / "logs" / "part.parquet").write_text("input")
    with pytest.raises(OutputOverlapError), \
            atomic_out(tmp_path / "logs", overwrite=True, inputs=[tmp_path / "logs"]):
        pytest.fail("the block must not run")
    assert (tmp_path / "logs" / "part.parquet").read_text() == "input"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["logs"]  # no lock, no tmp


# --- rule 2: one writer per OUT ----------------------------------------------------------------

def test_a_second_writer_fails_naming_the_first(tmp_path):
    out = tmp_path / "out"
    with locked(out):
        lock = json.loads(sibling(out, "lock").read_text())
        assert lock["pid"] == os.getpid() and lock["host"] == socket.gethostname()
        with pytest.raises(OutputLockedError) as err, atomic_out(out):
            pass
    message = str(err.value)
    assert f"pid {os.getpid()} on host {socket.gethostname()}" in message
    assert "\n" not in message
    assert not sibling(out, "lock").exists()  # released


def test_a_lock_held_by_another_process_refuses(tmp_path):
    """Two processes: the first holds OUT's lock until told to stop."""
    out, go = tmp_path / "out", tmp_path / "go"
    code = ("import sys, time, pathlib; from rliv_ray.outdir import locked\n"
            f"with locked(pathlib.Path({str(out)!r})):\n"
            "    print('locked', flush=True)\n"
            f"    while not pathlib.Path({str(go)!r}).exists(): time.sleep(0.05)\n")
    holder = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True,
                              env={**os.environ, "PYTHONPATH": str(REPO)})
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(OutputLockedError, match=f"pid {holder.pid} on host"), \
                claimed_out(out, resume=False, overwrite=True, what="training"):
            pass
    finally:
        go.touch()
        holder.wait(timeout=30)
    with claimed_out(out, resume=False, overwrite=True, what="training"):  # free again
        pass


def test_a_stale_lock_of_this_host_is_reported_and_removed(tmp_path, capsys):
    out, pid = tmp_path / "out", dead_pid()
    write_lock(out, pid)
    with atomic_out(out) as tmp:
        (tmp / "x").write_text("new")
        assert json.loads(sibling(out, "lock").read_text())["pid"] == os.getpid()
    assert f"removed the stale lock {sibling(out, 'lock')} of pid {pid}" in capsys.readouterr().err
    assert (out / "x").read_text() == "new"


def test_a_lock_of_another_host_is_never_judged(tmp_path):
    out = tmp_path / "out"
    write_lock(out, dead_pid(), host="elsewhere")
    with pytest.raises(OutputLockedError, match="on host elsewhere.*delete .*out.lock"), \
            atomic_out(out):
        pass
    assert sibling(out, "lock").exists()


# --- rules 3 and 4: atomic commit, overwrite keeps the old OUT until the new one is in place ----

def test_a_failed_block_leaves_nothing(tmp_path):
    out = tmp_path / "out"
    with pytest.raises(KeyboardInterrupt), atomic_out(out) as tmp:
        (tmp / "half").write_text("x")
        raise KeyboardInterrupt
    assert list(tmp_path.iterdir()) == []


def test_an_existing_out_needs_overwrite_which_keeps_it_until_the_commit(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "old").write_text("old")
    with pytest.raises(OutputExistsError, match="pass --overwrite"), atomic_out(out):
        pass
    with atomic_out(out, overwrite=True) as tmp:
        assert (out / "old").read_text() == "old"  # untouched while the new one is written
        (tmp / "new").write_text("new")
    assert [p.name for p in out.iterdir()] == ["new"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # no .old, .tmp or .lock


def test_a_failed_overwrite_keeps_the_old_out(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "old").write_text("old")
    with pytest.raises(RuntimeError), atomic_out(out, overwrite=True):
        raise RuntimeError("boom")
    assert [p.name for p in out.iterdir()] == ["old"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_the_commit_rechecks_that_out_does_not_exist(tmp_path):
    """An OUT that appears while this run writes (a writer that takes no lock) is kept."""
    out = tmp_path / "out"
    with pytest.raises(OutputExistsError, match="appeared while this run was writing"), \
            atomic_out(out) as tmp:
        (tmp / "mine").write_text("mine")
        out.mkdir()
        (out / "theirs").write_text("theirs")
    assert [p.name for p in out.iterdir()] == ["theirs"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


# --- rule 5: leftovers -------------------------------------------------------------------------

def test_leftovers_of_dead_writers(tmp_path, capsys):
    out, gone = tmp_path / "out", dead_pid()
    out.mkdir()
    sibling(out, f"tmp-{gone}").mkdir()  # an unfinished output: removed
    sibling(out, f"tmp-{os.getppid()}").mkdir()  # a live writer's: kept
    sibling(out, f"old-{gone}").mkdir()  # OUT exists: kept, reported
    tidy(out)
    err = capsys.readouterr().err
    assert f"removed {sibling(out, f'tmp-{gone}')}, the unfinished output of pid {gone}" in err
    assert f"kept {sibling(out, f'old-{gone}')}" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "out", f"out.old-{gone}", f"out.tmp-{os.getppid()}"]


def test_an_out_moved_aside_by_a_cut_commit_is_restored(tmp_path, capsys):
    out, gone = tmp_path / "out", dead_pid()
    sibling(out, f"old-{gone}").mkdir()
    (sibling(out, f"old-{gone}") / "data").write_text("old")
    with pytest.raises(OutputExistsError), atomic_out(out):  # restored first, so it exists
        pass
    assert (out / "data").read_text() == "old"
    assert f"restored {out} from" in capsys.readouterr().err


# --- claimed_out: runs that write in place (training, sweeps) --------------------------------

def test_claimed_out_overwrite_deletes_the_old_out_only_when_the_run_finishes(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "metrics.jsonl").write_text("old run")
    with pytest.raises(OutputExistsError, match="pass --resume .* or --overwrite"), \
            claimed_out(out, resume=False, overwrite=False, what="training"):
        pass
    with pytest.raises(RuntimeError), \
            claimed_out(out, resume=False, overwrite=True, what="training") as claim:
        assert list(out.iterdir()) == [] and (claim.old / "metrics.jsonl").exists()
        (out / "metrics.jsonl").write_text("new run, cut short")
        raise RuntimeError("diverged")
    kept = claim.old
    assert (kept / "metrics.jsonl").read_text() == "old run"  # a failed run loses nothing
    assert (out / "metrics.jsonl").read_text() == "new run, cut short"  # resumable
    with claimed_out(out, resume=True, overwrite=False, what="training") as claim:
        assert claim.old is None and (out / "metrics.jsonl").exists()  # resume: in place
    with claimed_out(out, resume=False, overwrite=True, what="training") as claim:
        (out / "metrics.jsonl").write_text("interrupted")
        claim.finished = False  # e.g. an interrupted sweep
    assert claim.old.exists() and claim.old != kept  # this process's second copy aside
    with claimed_out(out, resume=False, overwrite=True, what="training") as claim:
        (out / "metrics.jsonl").write_text("finished")
    assert not claim.old.exists() and (out / "metrics.jsonl").read_text() == "finished"
    assert kept.exists()  # earlier copies are never deleted by a later run
