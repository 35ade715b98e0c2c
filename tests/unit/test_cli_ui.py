"""``rliv ui``'s checks before it starts anything: store, host, port (no server is started)."""

import socket
import sqlite3

import pytest

from rliv_ray.cli import EXIT_USAGE, CLIError, main
from rliv_ray.cli_ui import (
    check_host,
    free_port,
    is_loopback,
    port_in_use,
    server_command,
    server_env,
    sqlite_path,
    store_uri,
)


@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.0.2", "localhost", "::1"])
def test_loopback_hosts_are_served(host):
    assert is_loopback(host)
    check_host(host, allow_remote=False)


@pytest.mark.parametrize("host", ["0.0.0.0", "192.168.1.5", "example.org", "::"])
def test_other_hosts_need_allow_remote(host):
    assert not is_loopback(host)
    with pytest.raises(CLIError, match="--allow-remote"):
        check_host(host, allow_remote=False)
    check_host(host, allow_remote=True)


def test_refusing_a_remote_host_is_one_line_before_any_server(capsys):
    assert main(["ui", "--host", "0.0.0.0"]) == EXIT_USAGE
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no login" in err and "--allow-remote" in err


def test_default_store_is_mlflow_db_in_the_working_directory(tmp_path, monkeypatch):
    monkeypatch.delenv("RLIV_TRACKING_URI", raising=False)
    sqlite3.connect(tmp_path / "mlflow.db").close()
    assert store_uri(None, cwd=tmp_path) == f"sqlite:///{tmp_path / 'mlflow.db'}"


def test_store_from_the_environment_then_the_option(tmp_path, monkeypatch):
    for name in ("env.db", "given.db"):
        sqlite3.connect(tmp_path / name).close()
    monkeypatch.setenv("RLIV_TRACKING_URI", f"sqlite:///{tmp_path / 'env.db'}")
    assert store_uri(None, cwd=tmp_path).endswith("/env.db")
    assert store_uri(f"sqlite:///{tmp_path / 'given.db'}", cwd=tmp_path).endswith("/given.db")


def test_a_missing_store_is_refused_and_names_the_demo_store(tmp_path, monkeypatch):
    monkeypatch.delenv("RLIV_TRACKING_URI", raising=False)
    with pytest.raises(CLIError, match="make demo"):
        store_uri(None, cwd=tmp_path)
    (tmp_path / "demo_out").mkdir()
    sqlite3.connect(tmp_path / "demo_out" / "mlflow.db").close()
    with pytest.raises(CLIError, match="demo_out/mlflow.db"):
        store_uri(None, cwd=tmp_path)
    assert not (tmp_path / "mlflow.db").exists()


def test_sqlite_paths():
    assert str(sqlite_path("sqlite:////abs/x.db")) == "/abs/x.db"
    assert str(sqlite_path("sqlite:///x.db")) == "x.db"
    assert sqlite_path("postgresql://h/db") is None


def test_a_busy_port_is_seen():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        assert port_in_use("127.0.0.1", sock.getsockname()[1])
    assert not port_in_use("127.0.0.1", free_port())


def test_server_command_binds_the_host_and_runs_no_job_runner():
    cmd = server_command("sqlite:////s/mlflow.db", "127.0.0.1", 5123)
    assert cmd[1:4] == ["-m", "mlflow", "server"]
    assert cmd[cmd.index("--host") + 1] == "127.0.0.1"
    assert cmd[cmd.index("--port") + 1] == "5123"
    assert server_env()["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] == "false"
