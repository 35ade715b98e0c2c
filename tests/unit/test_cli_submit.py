"""``rliv submit``'s checks before it submits, and the address rules (no Ray, no cluster)."""

import socket
from types import SimpleNamespace

import pytest

from rliv_ray.cli import CLIError, main
from rliv_ray.cli_submit import job_exit_status, load_runtime_env, rliv_command
from rliv_ray.ray_address import (
    ClusterUnreachable,
    check_ray_address,
    check_reachable,
    dashboard_url,
    split_host_port,
)


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # free once the socket closes: nothing listens there


@pytest.mark.parametrize("argv", [
    ["--", "train", "rliv-ua", "S", "--out", "O"],
    ["--", "rliv", "train", "rliv-ua", "S", "--out", "O"],
    ["train", "rliv-ua", "S", "--out", "O"],
])
def test_the_command_after_the_separator_is_checked_and_kept(argv):
    assert rliv_command(argv) == ["train", "rliv-ua", "S", "--out", "O"]


@pytest.mark.parametrize("argv, message", [
    ([], "no command"), (["--"], "no command"), (["--", "rliv"], "no command"),
    (["--", "submit", "--", "validate", "x"], "cannot run as a job"),
    (["--", "ui"], "cannot run as a job"),
])
def test_missing_or_refused_commands(argv, message):
    with pytest.raises(CLIError, match=message):
        rliv_command(argv)


def test_bad_arguments_fail_here_with_the_commands_usage(capsys):
    with pytest.raises(SystemExit) as exit_:
        rliv_command(["--", "train", "rliv-ua", "S"])  # --out is required
    assert exit_.value.code == 2 and "--out" in capsys.readouterr().err
    assert rliv_command(["--", "validate", "--help"]) is None  # help printed, nothing submitted


def test_runtime_env_from_yaml_or_json_plus_working_dir(tmp_path):
    yaml_file = tmp_path / "env.yaml"
    yaml_file.write_text("env_vars:\n  A: '1'\n")
    json_file = tmp_path / "env.json"
    json_file.write_text('{"env_vars": {"B": "2"}}')
    assert load_runtime_env(str(yaml_file), None) == {"env_vars": {"A": "1"}}
    assert load_runtime_env(str(json_file), str(tmp_path)) == {
        "env_vars": {"B": "2"}, "working_dir": str(tmp_path.resolve())}
    assert load_runtime_env(None, None) == {}


def test_bad_runtime_env_and_working_dir(tmp_path):
    listing = tmp_path / "list.yaml"
    listing.write_text("- a\n- b\n")
    broken = tmp_path / "broken.yaml"
    broken.write_text("env_vars: [unclosed\n")
    for path, message in ((listing, "expected a mapping"), (broken, "--runtime-env"),
                          (tmp_path / "absent.yaml", "No such file")):
        with pytest.raises(CLIError, match=message):
            load_runtime_env(str(path), None)
    with pytest.raises(CLIError, match="no such directory"):
        load_runtime_env(None, str(tmp_path / "absent"))


@pytest.mark.parametrize("given, url", [
    ("127.0.0.1", "http://127.0.0.1:8265"), ("head:8266/", "http://head:8266"),
    ("http://head:8265", "http://head:8265"),
    ("https://ray.example.org", "https://ray.example.org:8265"),
    ("[::1]:8265", "http://[::1]:8265"),
])
def test_dashboard_urls(given, url):
    assert dashboard_url(given) == url


@pytest.mark.parametrize("given, message", [
    ("ray://head:10001", "Ray Client"), ("head:6379", "GCS port"), ("ftp://head", "expected"),
    ("head:port", "invalid"),
])
def test_addresses_that_are_not_a_dashboard(given, message):
    with pytest.raises(ValueError, match=message):
        dashboard_url(given)


def test_ray_addresses_are_parsed_or_refused():
    assert split_host_port("head", 6379) == ("head", 6379)
    assert split_host_port("10.0.0.1:6380", 6379) == ("10.0.0.1", 6380)
    with pytest.raises(ValueError, match="http:// dashboard address is for `rliv submit`"):
        check_ray_address("http://head:8265")
    for quiet in (None, "", "auto", "local"):
        check_ray_address(quiet)  # left to Ray


def test_nothing_listening_is_one_clear_error():
    port = closed_port()
    with pytest.raises(ClusterUnreachable, match=f"cannot reach the thing at 127.0.0.1:{port}"):
        check_reachable("127.0.0.1", port, f"the thing at 127.0.0.1:{port}")
    with pytest.raises(ClusterUnreachable, match=f"ray://127.0.0.1:{port}: Connection refused"):
        check_ray_address(f"ray://127.0.0.1:{port}")  # Ray Client: dialled as given


def test_submit_to_a_closed_port_is_one_line_and_exit_2(capsys):
    port = closed_port()
    assert main(["submit", "--address", f"127.0.0.1:{port}", "--", "validate", "x"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"rliv submit: error: cannot reach the Ray dashboard (Jobs API) at "
                   f"http://127.0.0.1:{port}: Connection refused"]


def test_job_exit_status(capsys):
    ok = SimpleNamespace(status="SUCCEEDED", driver_exit_code=0, message="done")
    assert job_exit_status("raysubmit_1", ok) == 0
    bad = SimpleNamespace(status="FAILED", driver_exit_code=2,
                          message="Job entrypoint command failed with exit code 2, last logs:\n..")
    assert job_exit_status("raysubmit_2", bad) == 2
    early = SimpleNamespace(status="FAILED", driver_exit_code=None, message="runtime env failed")
    assert job_exit_status("raysubmit_3", early) == 1
    stopped = SimpleNamespace(status="STOPPED", driver_exit_code=-15, message=None)
    assert job_exit_status("raysubmit_4", stopped) == 1
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines[0] == "job raysubmit_1 succeeded"
    assert lines[1] == ("rliv submit: job raysubmit_2 failed (exit status 2): Job entrypoint "
                        "command failed with exit code 2, last logs:")
    assert lines[2] == "rliv submit: job raysubmit_3 failed: runtime env failed"
    assert lines[3] == "rliv submit: job raysubmit_4 stopped (exit status -15): no reason given"


def test_a_gcs_address_in_ray_address_is_named(monkeypatch, capsys):
    monkeypatch.delenv("RAY_API_SERVER_ADDRESS", raising=False)
    monkeypatch.setenv("RAY_ADDRESS", "127.0.0.1:6379")
    assert main(["submit", "--", "validate", "x"]) == 2
    assert capsys.readouterr().err.strip() == (
        "rliv submit: error: $RAY_ADDRESS: 127.0.0.1:6379 is the GCS port; the Jobs API is the "
        "dashboard's http://127.0.0.1:8265")
