"""The observed output bugs of issue 17, through the CLI (no Ray runtime is started): an OUT
that is an input, a second writer, an OUT that appears while a run writes."""

import json
import os
import socket
from pathlib import Path

import pytest

from rliv_ray.cli import EXIT_USAGE, main
from rliv_ray.data import io, ua_generate
from rliv_ray.outdir import OutputOverlapError, sibling
from tests.logtables import make_log_table, write_log
from tests.sampleshards import write_shards

WORLD = ["--users", "20", "--days", "2", "--quiet"]
REPO = Path(__file__).resolve().parents[2]


def one_line_error(capsys, command: str) -> str:
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"rliv {command}: error: "), err
    return err


def tree(root) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file()}


@pytest.mark.parametrize("where", ["samples", "inside", "around"])
def test_train_into_its_samples_is_refused_and_deletes_nothing(tmp_path, capsys, where):
    """`train --out SAMPLES --overwrite` deleted the shards, then failed with a bare path."""
    samples = write_shards(tmp_path / "data" / "samples", rows=64, files=1)
    out = {"samples": samples, "inside": samples / "run", "around": tmp_path / "data"}[where]
    before = tree(samples)
    assert main(["train", "rliv-ua", str(samples), "--out", str(out), "--overwrite",
                 "--quiet"]) == EXIT_USAGE
    err = one_line_error(capsys, "train")
    assert f"{out} " in err and "choose an output outside every input" in err
    assert tree(samples) == before


@pytest.mark.parametrize("command", ["build-samples", "build-live-samples"])
def test_build_samples_onto_its_log_is_refused(tmp_path, capsys, command):
    """`build-samples X X --overwrite` replaced the input log."""
    write_log(make_log_table(), tmp_path / "data")
    before = tree(tmp_path / "data")
    extra = ["--workers", "0"] if command == "build-samples" else []
    for out in (tmp_path / "data", tmp_path / "data" / "log" / "samples"):
        assert main([command, str(tmp_path / "data"), str(out), "--overwrite", "--quiet",
                     *extra]) == EXIT_USAGE
        one_line_error(capsys, command)
    assert tree(tmp_path / "data") == before


def test_a_second_generate_into_the_same_folder_fails_naming_the_first(tmp_path, capsys,
                                                                       monkeypatch):
    """Two concurrent `generate` runs into one folder both reported success, and the later
    silently replaced the other: now the second fails at once, naming the first."""
    out, second = tmp_path / "world", []
    original = ua_generate.bucket_tables

    def bucket_tables(*args, **kwargs):  # while the first run writes, a second one starts
        if not second:
            second.append(main(["generate", str(out), *WORLD]))
            second.append(capsys.readouterr().err)
        return original(*args, **kwargs)

    monkeypatch.setattr(ua_generate, "bucket_tables", bucket_tables)
    assert main(["generate", str(out), *WORLD]) == 0
    code, err = second
    assert code == EXIT_USAGE and err.count("\n") == 1
    assert f"is being written by pid {os.getpid()} on host {socket.gethostname()}" in err
    assert json.loads((out / io.MANIFEST).read_text())["world"]["n_users"] == 20
    assert sorted(p.name for p in tmp_path.iterdir()) == ["world"]


def test_an_out_that_appears_while_generate_writes_is_kept(tmp_path, capsys, monkeypatch):
    """A writer that takes no lock: the commit re-checks OUT and leaves the other one alone."""
    out = tmp_path / "world"
    original = ua_generate.bucket_tables

    def bucket_tables(*args, **kwargs):
        out.mkdir(exist_ok=True)
        (out / "theirs").write_text("theirs")
        return original(*args, **kwargs)

    monkeypatch.setattr(ua_generate, "bucket_tables", bucket_tables)
    assert main(["generate", str(out), *WORLD]) == EXIT_USAGE
    assert "appeared while this run was writing" in one_line_error(capsys, "generate")
    assert tree(out) == {"theirs": b"theirs"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["world"]


def test_a_second_train_overwrite_leaves_a_running_job_alone(tmp_path, capsys):
    """A second `train --overwrite` deleted a running job's checkpoints and metrics."""
    samples = write_shards(tmp_path / "samples", rows=64, files=1)
    out = tmp_path / "run"
    (out / "checkpoints" / "iter_000002").mkdir(parents=True)
    (out / "checkpoints" / "iter_000002" / "module.pt").write_bytes(b"weights")
    (out / "metrics.jsonl").write_text('{"iteration": 1}\n')
    running = os.getppid()  # a live process of this host stands for the running job
    sibling(out, "lock").write_text(json.dumps({"pid": running, "host": socket.gethostname(),
                                                "since": "earlier"}))
    before = tree(out)
    for flags in (["--overwrite"], ["--resume"]):
        assert main(["train", "rliv-ua", str(samples), "--out", str(out), "--quiet",
                     *flags]) == EXIT_USAGE
        err = one_line_error(capsys, "train")
        assert f"is being written by pid {running} on host {socket.gethostname()}" in err
    assert tree(out) == before and sibling(out, "lock").exists()


def test_generate_overwrite_replaces_only_after_the_new_output_is_written(tmp_path, capsys,
                                                                           monkeypatch):
    out = tmp_path / "world"
    assert main(["generate", str(out), *WORLD]) == 0
    before = tree(out)

    def interrupt(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(ua_generate, "bucket_tables", interrupt)
    assert main(["generate", str(out), "--overwrite", *WORLD]) == 130
    assert tree(out) == before  # the interrupted overwrite kept the old output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["world"]


def test_a_sweep_holds_its_out_and_keeps_the_replaced_one_until_it_ends(tmp_path, monkeypatch):
    """`rliv sweep --overwrite`: one sweep per OUT; the old OUT goes only when the new sweep
    has run to its end (an interrupted one, exit 130, keeps it). The sweep itself is stubbed."""
    from rliv_ray.outdir import OutputLockedError
    from rliv_ray.sweep import run

    config, out = tmp_path / "tiny.yaml", tmp_path / "sweep"
    config.write_text((REPO / "tune" / "sl_mgac_small.yaml").read_text())
    out.mkdir()
    (out / "summary.md").write_text("the old sweep")
    codes = []

    def stub(*args, **kwargs):
        with pytest.raises(OutputLockedError):  # a second sweep into the same OUT
            run.run_sweep(config, out, overwrite=True, address="stub")
        return codes.pop(0)

    monkeypatch.setattr(run, "_run", stub)
    codes.append(run.EXIT_INTERRUPTED)
    assert run.run_sweep(config, out, overwrite=True, address="stub") == run.EXIT_INTERRUPTED
    kept = list(tmp_path.glob("sweep.old-*"))
    assert [(p / "summary.md").read_text() for p in kept] == ["the old sweep"]
    codes.append(0)
    assert run.run_sweep(config, out, overwrite=True, address="stub") == 0
    assert sorted(p.name for p in tmp_path.glob("sweep*")) == ["sweep", kept[0].name]
    with pytest.raises(OutputOverlapError):  # the config inside the OUT it would replace
        run.run_sweep(out / "sweep.yaml", out, overwrite=True, address="stub")
