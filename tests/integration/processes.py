"""`rliv` commands in subprocesses, as a person or a scheduler runs them, for the interrupt and
fault tests: start one, wait until it has got somewhere (a line in a file, never a fixed sleep),
signal it, and check that it and its Ray processes are gone."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import torch

REPO = Path(__file__).resolve().parents[2]


def environment(**extra: str) -> dict[str, str]:
    """This checkout first on the path; no tracking unless a test asks for it."""
    path = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p)
    base = {k: v for k, v in os.environ.items() if k != "RLIV_TRACKING_URI"}
    return {**base, "PYTHONPATH": path, **extra}


class Command:
    """``rliv ARGS`` in a session of its own (its Ray processes share its process group);
    stdout and stderr go to files, read when it has finished."""

    def __init__(self, args: list, folder: Path, name: str, **env: str):
        self.out, self.err = folder / f"{name}.stdout", folder / f"{name}.stderr"
        with self.out.open("w") as out, self.err.open("w") as err:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "rliv_ray.cli", *map(str, args)], cwd=folder,
                env=environment(**env), stdout=out, stderr=err, start_new_session=True,
                # A test run in the background inherits an ignored SIGINT: not the child
                preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
        self.pid = self.proc.pid

    def wait_for(self, ready, what: str) -> None:
        """Poll ``ready()`` every 50 ms until true; fail if the command ends first (no time
        limit: a loaded machine may take minutes to start Ray)."""
        while not ready():
            assert self.proc.poll() is None, f"ended ({self.proc.returncode}) before {what}: " \
                                             f"{self.stderr()[-3000:]}"
            time.sleep(0.05)

    def signal(self, signum: int) -> None:
        os.kill(self.pid, signum)

    def finish(self) -> int:
        try:
            return self.proc.wait()
        finally:
            self.kill_all()

    def kill_all(self) -> None:
        """SIGKILL to whatever of its session is left (a test that failed half-way)."""
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        for process in session(self.pid):
            process.kill()

    def stdout(self) -> str:
        return self.out.read_text()

    def stderr(self) -> str:
        return self.err.read_text()


def session(sid: int) -> list[psutil.Process]:
    """The live processes of session ``sid`` (a Command's and the Ray processes it started)."""
    found = []
    for process in psutil.process_iter(["pid"]):
        try:
            if os.getsid(process.pid) == sid and process.status() != psutil.STATUS_ZOMBIE:
                found.append(process)
        except (ProcessLookupError, PermissionError, psutil.Error):
            continue
    return found


def wait_gone(sid: int, timeout: float = 60.0) -> list[str]:
    """Wait for the session's processes to exit; those still running after ``timeout``."""
    deadline = time.monotonic() + timeout
    while (left := session(sid)) and time.monotonic() < deadline:
        time.sleep(0.2)
    return [f"{p.pid} {' '.join(p.cmdline())[:80]}" for p in left]


def metrics_lines(out: Path) -> list[dict]:
    """OUT/metrics.jsonl's complete lines."""
    try:
        text = (out / "metrics.jsonl").read_text()
    except FileNotFoundError:
        return []
    lines = []
    for line in text.splitlines():
        try:
            lines.append(json.loads(line))
        except ValueError:
            break  # being written
    return lines


def parameters(path: Path) -> dict[str, torch.Tensor]:
    """The module weights of a checkpoint, or of OUT's latest one (read as `--resume` reads
    them)."""
    from rliv_ray.algorithms.common.checkpoint import load_module
    from rliv_ray.train_loop import latest_checkpoint

    path = Path(path)
    checkpoint = latest_checkpoint(path).checkpoint if (path / "checkpoints").is_dir() else path
    return {k: v.clone() for k, v in load_module(checkpoint).state_dict().items()}


def assert_same_parameters(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    differing = [k for k in a if not torch.equal(a[k], b[k])]
    assert not differing, f"parameters differ: {differing[:5]}"


def no_traceback(text: str) -> None:
    assert "Traceback" not in text and "*** SIG" not in text, text[-3000:]
