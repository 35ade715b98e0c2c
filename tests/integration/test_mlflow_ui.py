"""The MLflow UI as a person sees it (slow tier).

Real ``rliv`` runs log params, metrics and artifacts to a SQLite store in tmp; ``rliv ui`` serves
it on a free loopback port; the REST API and the pages headless Chromium renders show the runs;
Ctrl-C (SIGINT) stops the server, frees the port and leaves no process behind. The runs table's
screenshot is written to the test's tmp dir as ``mlflow_ui_runs.png`` (its path is printed).
"""

from __future__ import annotations

import html
import json
import math
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest

from rliv_ray.cli_ui import free_port, group_members, port_in_use

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
UI_START_S = 300  # a cold `mlflow server` answered after ~50 s on a loaded 2-core machine
UI_STOP_S = 60
BROWSER_S = 180
BUDGETS_MS = (15_000, 40_000)  # the React app's virtual time; the second try is for slow loads
ARTIFACTS = {"table.md", "table.csv", "metrics.png", "result.json"}


def chromium() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        pytest.fail("headless Chromium is not installed (no `chromium` on PATH): run "
                    "`make chromium` (apt-get install chromium), which `make test` runs first")
    return path


def env() -> dict[str, str]:
    out = {k: v for k, v in os.environ.items() if k != "RLIV_TRACKING_URI"}
    out["PYTHONPATH"] = os.pathsep.join([str(REPO), *filter(None, [out.get("PYTHONPATH")])])
    return out


def rliv(*args: str, cwd: Path) -> str:
    done = subprocess.run([sys.executable, "-m", "rliv_ray.cli", *args], cwd=cwd, env=env(),
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, f"rliv {' '.join(args)}:\n{done.stdout}\n{done.stderr}"
    return done.stdout


def make_store(tmp: Path) -> str:
    """A tiny world, its summary and a 2-seed evaluation, logged as a person would log them."""
    uri = f"sqlite:///{tmp / 'mlflow.db'}"
    rliv("generate", "world", "--users", "30", "--days", "2", "--seed", "0", "--quiet", cwd=tmp)
    rliv("evaluate", "world", "--users", "20", "--seeds", "2", "--policy", "RankingModel",
         "--policy", "Greedy", "--out", "table1", "--quiet", "--tracking-uri", uri, cwd=tmp)
    rliv("summary", "world", "--quiet", "--tracking-uri", uri, cwd=tmp)
    return uri


class UI:
    """``rliv ui`` in a session of its own, its output collected by a thread."""

    def __init__(self, uri: str, port: int, cwd: Path):
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "rliv_ray.cli", "ui", "--tracking-uri", uri, "--port",
             str(port)], cwd=cwd, env=env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            text=True, start_new_session=True)
        self.lines: list[str] = []
        self.reader = threading.Thread(target=lambda: self.lines.extend(self.proc.stdout),
                                       daemon=True)
        self.reader.start()

    @property
    def output(self) -> str:
        return "".join(self.lines)

    def wait_for_url(self) -> str:
        deadline = time.monotonic() + UI_START_S
        while time.monotonic() < deadline and self.proc.poll() is None:
            for line in list(self.lines):
                if line.startswith("MLflow UI: "):
                    return line.split()[2]
            time.sleep(0.5)
        pytest.fail(f"rliv ui printed no URL within {UI_START_S}s:\n{self.output}")

    def server_group(self) -> int | None:
        """The process group of `mlflow server`, the child rliv ui started."""
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                fields = stat.read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == self.proc.pid:
                return int(fields[2])
        return None

    def interrupt(self) -> None:
        """Ctrl-C; SIGKILL for the whole session if it does not end in time."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(timeout=UI_STOP_S)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        self.reader.join(timeout=10)


def api(base: str, path: str, body: dict | None = None) -> dict:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(f"{base}{path}", data=data,
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=60) as response:
        return json.loads(response.read())


def page_text(browser: str, url: str, tmp: Path, expected: list[str],
              screenshot: Path | None = None) -> str:
    """The visible text of ``url`` after the app rendered; a longer budget if ``expected`` is
    not all there yet (a slow first load)."""
    for budget in BUDGETS_MS:
        cmd = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
               f"--user-data-dir={tmp / 'chromium-profile'}", "--window-size=1400,900",
               "--hide-scrollbars", f"--virtual-time-budget={budget}", "--dump-dom", url]
        if screenshot is not None:
            cmd.insert(-2, f"--screenshot={screenshot}")
        browser_proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                        text=True, start_new_session=True)
        try:
            dom, _ = browser_proc.communicate(timeout=BROWSER_S)
        finally:
            for pid in group_members(browser_proc.pid):
                os.kill(pid, signal.SIGKILL)
            browser_proc.wait()
        text = visible_text(dom)
        if all(word in text for word in expected):
            break
    return text


def visible_text(dom: str) -> str:
    dom = re.sub(r"<(script|style)\b.*?</\1>", " ", dom, flags=re.S | re.I)
    return re.sub(r"\s+", " ", html.unescape(re.sub(r"<[^>]+>", " ", dom)))


def check_rest(base: str) -> tuple[str, str]:
    """Experiments, runs with their params and metrics, artifacts; the experiment's and the
    evaluation run's ids."""
    experiments = api(base, "/api/2.0/mlflow/experiments/search?max_results=100")["experiments"]
    exp_id = {e["name"]: e["experiment_id"] for e in experiments}["rliv-ray"]
    runs = api(base, "/api/2.0/mlflow/runs/search", {"experiment_ids": [exp_id]})["runs"]
    by_name = {r["info"]["run_name"]: r for r in runs}
    assert set(by_name) == {"evaluate__world", "summary__world"}
    assert {r["info"]["status"] for r in runs} == {"FINISHED"}
    evaluation = by_name["evaluate__world"]
    params = {p["key"]: p["value"] for p in evaluation["data"]["params"]}
    assert params["policies/RankingModel"] == "RankingModel"
    assert params["policies/Greedy"] == "Greedy"
    assert (params["seeds"], params["users"]) == ("2", "20")
    metrics = {m["key"]: m["value"] for m in evaluation["data"]["metrics"]}
    for key in ("RankingModel/session_length", "Greedy/session_length", "Greedy/ctr"):
        assert math.isfinite(metrics[key]) and metrics[key] > 0, key
    summary = {m["key"]: m["value"] for m in by_name["summary__world"]["data"]["metrics"]}
    assert summary["data/users"] == 30 and summary["data/rows"] > 0
    run_id = evaluation["info"]["run_id"]
    listed = api(base, f"/api/2.0/mlflow/artifacts/list?run_id={run_id}")["files"]
    assert ARTIFACTS <= {f["path"] for f in listed}
    with urllib.request.urlopen(f"{base}/get-artifact?path=table.md&run_uuid={run_id}",
                                timeout=60) as response:
        assert "RankingModel" in response.read().decode()
    return exp_id, run_id


def test_mlflow_ui_shows_the_rliv_runs(tmp_path):
    browser = chromium()
    began = time.monotonic()
    uri = make_store(tmp_path)
    stored = time.monotonic()
    port = free_port()
    ui = UI(uri, port, tmp_path)
    server_group = None
    try:
        url = ui.wait_for_url()
        server_group = ui.server_group()
        base = f"http://127.0.0.1:{port}"
        exp_id, run_id = check_rest(base)
        assert url == f"{base}/#/experiments/{exp_id}/runs"

        shot = tmp_path / "mlflow_ui_runs.png"
        names = ["rliv-ray", "evaluate__world", "summary__world"]
        text = page_text(browser, url, tmp_path, names, screenshot=shot)
        assert all(name in text for name in names), text[:2000]
        assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 10_000
        print(f"screenshot of the runs table: {shot}")

        run_url = f"{base}/#/experiments/{exp_id}/runs/{run_id}"
        words = ["evaluate__world", "policies/RankingModel", "Greedy/session_length", "seeds"]
        text = page_text(browser, run_url, tmp_path, words)
        assert all(word in text for word in words), text[:2000]
        text = page_text(browser, f"{run_url}/artifacts", tmp_path, sorted(ARTIFACTS))
        assert ARTIFACTS <= set(text.split()), text[:2000]
    finally:
        ui.interrupt()
        left = group_members(server_group) if server_group else []
        for pid in left:
            os.kill(pid, signal.SIGKILL)
    print(f"store {stored - began:.0f}s, server and pages {time.monotonic() - stored:.0f}s")
    assert ui.proc.returncode == 0, ui.output
    assert "stopped;" in ui.output, ui.output
    assert server_group is not None, "rliv ui started no server process"
    assert left == [], f"mlflow server processes left after Ctrl-C: {left}"
    assert not port_in_use("127.0.0.1", port)
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=5).close()
