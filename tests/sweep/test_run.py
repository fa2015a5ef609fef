"""Sweeps for `lmsav scan`: what the walk finds becomes reports (files, special files, problems),
in walk order, also from parallel workers."""

import json
import os

import pytest

from lmsav.scanner.engine import Engine
from lmsav.scanner.objects import Status
from lmsav.scanner.signatures.database import Database
from lmsav.sweep.run import SweepOptions, Tally, inputs, sweep
from tests.conftest import EICAR


@pytest.fixture
def tree(tmp_path):
    root = tmp_path / "t"
    (root / "a" / "b" / "c").mkdir(parents=True)
    (root / "top.txt").write_text("top")
    (root / "a" / "one.log").write_text("one")
    (root / "a" / "b" / "two.txt").write_text("two")
    (root / "a" / "b" / "c" / "eicar.com").write_bytes(EICAR)
    return root


def paths(root, **kw):
    items = inputs([str(root)], SweepOptions(**kw), Tally())
    return [os.path.relpath(i[0], root) if isinstance(i, tuple) else ("problem", i.findings[0][3])
            for i in items]


def test_walk_is_depth_first_in_name_order(tree):
    assert paths(tree) == ["top.txt", "a/one.log", "a/b/two.txt", "a/b/c/eicar.com"]


def test_exclude_by_name_or_path_and_include(tree):
    assert paths(tree, exclude=("*.log",)) == ["top.txt", "a/b/two.txt", "a/b/c/eicar.com"]
    assert paths(tree, exclude=(str(tree / "a" / "b"),)) == ["top.txt", "a/one.log"]
    assert paths(tree, include=("*.txt",)) == ["top.txt", "a/b/two.txt"]


def test_max_dir_depth(tree):
    assert paths(tree, max_dir_depth=1) == ["top.txt", "a/one.log"]


def test_symlinks_skipped_by_default_and_loops_cut_when_followed(tree):
    os.symlink(tree, tree / "a" / "loop")
    os.symlink(tree / "top.txt", tree / "link.txt")
    assert paths(tree) == ["top.txt", "a/one.log", "a/b/two.txt", "a/b/c/eicar.com"]
    followed = paths(tree, follow_symlinks=True)
    assert "link.txt" in followed
    assert not any(str(p).startswith("a/loop") for p in followed)


def test_special_files_and_broken_links_are_reported(tree):
    os.mkfifo(tree / "fifo")
    os.symlink(tree / "missing", tree / "dangling")
    got = paths(tree, follow_symlinks=True)
    assert ("problem", "special file") in got
    assert ("problem", "broken symlink: No such file or directory") in got


def test_missing_top_is_a_problem_not_an_exception(tmp_path):
    assert paths(tmp_path / "nope") == [("problem", "cannot open: No such file or directory")]


@pytest.mark.parametrize("workers", [1, 2])
def test_sweep_reports_in_walk_order_and_tallies(tree, bundled_db_dir, workers):
    os.mkfifo(tree / "fifo")
    engine = Engine(Database.load(bundled_db_dir))
    tally, seen = Tally(), []
    sweep(engine, [str(tree)], SweepOptions(workers=workers), tally, seen.append)
    assert [os.path.relpath(r.path, tree) for r in seen] == [
        "fifo", "top.txt", "a/one.log", "a/b/two.txt", "a/b/c/eicar.com"]
    assert tally.files == 4 and tally.skipped == 1 and tally.directories == 4
    assert tally.by_status[Status.INFECTED] == 1
    assert seen[-1].findings[0][2] == ["Eicar-Test-Signature"]


def test_vanished_file_is_an_error_and_scan_goes_on(tree, bundled_db_dir, monkeypatch):
    engine = Engine(Database.load(bundled_db_dir))
    real = engine.scan_path

    def vanish(path, name=None):
        if path.endswith("one.log"):
            raise FileNotFoundError(2, "No such file or directory")
        return real(path, name)

    monkeypatch.setattr(engine, "scan_path", vanish)
    tally, seen = Tally(), []
    sweep(engine, [str(tree)], SweepOptions(), tally, seen.append)
    by_name = {os.path.basename(r.path): r for r in seen}
    assert by_name["one.log"].status == Status.ERROR
    assert by_name["one.log"].findings[0][3] == "vanished during scan"
    assert by_name["eicar.com"].status == Status.INFECTED


def test_a_worker_that_dies_costs_its_batch_an_error_and_the_sweep_goes_on(tmp_path,
                                                                           bundled_db_dir,
                                                                           monkeypatch):
    from lmsav.sweep import run as run_mod

    root = tmp_path / "many"
    root.mkdir()
    names = [f"f{n:03d}.txt" for n in range(3 * run_mod.BATCH)]
    for name in names:
        (root / name).write_text(name)
    (root / names[-1]).write_bytes(EICAR)
    engine = Engine(Database.load(bundled_db_dir))
    real = engine.scan_path

    def crash(path, name=None):
        if path.endswith("f040.txt"):  # in the second batch, in a worker
            os._exit(3)
        return real(path, name)

    monkeypatch.setattr(engine, "scan_path", crash)
    tally, seen = Tally(), []
    sweep(engine, [str(root)], SweepOptions(workers=2), tally, seen.append)
    assert [os.path.basename(r.path) for r in seen] == names
    died = {os.path.basename(r.path) for r in seen if r.status == Status.ERROR}
    assert died == set(names[run_mod.BATCH:2 * run_mod.BATCH])
    assert seen[run_mod.BATCH].findings[0][3].startswith("scanning process died")
    assert seen[-1].status == Status.INFECTED  # scanned by the worker that took its place
    assert tally.files == len(names)


# -- what the walk cannot reach is an error, not a scanned file --------------------------------

def test_missing_path_is_an_error_and_not_a_scanned_file(tree, bundled_db_dir):
    engine = Engine(Database.load(bundled_db_dir))
    tally, seen = Tally(), []
    sweep(engine, [str(tree / "nope"), str(tree / "top.txt")], SweepOptions(), tally,
          seen.append)
    assert [r.status for r in seen] == [Status.ERROR, Status.CLEAN]
    assert tally.files == 1 and tally.by_status[Status.ERROR] == 1


@pytest.fixture
def scan(tmp_path, monkeypatch):
    from click.testing import CliRunner

    from lmsav.cli import main

    config = tmp_path / "lmsav.toml"
    config.write_text(f'[paths]\nstate_dir = "{tmp_path / "state"}"\n')
    monkeypatch.setenv("LMSAV_CONFIG", str(config))

    def run(*args):
        return CliRunner().invoke(main, ["scan", *map(str, args)], catch_exceptions=False)

    return run


def test_missing_path_in_the_text_summary_counts_as_error_only(scan, tmp_path):
    missing = tmp_path / "no-such-file"
    result = scan(missing)
    assert result.exit_code == 2
    lines = result.output.splitlines()
    assert f"{missing}: cannot open: No such file or directory ERROR" in lines
    assert "Scanned files: 0" in lines and "Errors: 1" in lines
    [timing] = [line for line in lines if line.startswith("Time: ")]
    assert timing.endswith("(0 files/s)")


def test_missing_path_in_the_json_summary_counts_as_error_only(scan, tree):
    result = scan("--json", tree / "nope", tree / "top.txt")
    assert result.exit_code == 2
    objects = [json.loads(line) for line in result.output.splitlines()]
    summary = objects.pop()["summary"]
    assert [o["status"] for o in objects] == ["error", "clean"]
    assert summary["scanned_files"] == 1 and summary["errors"] == 1


def test_broken_link_followed_is_an_error_and_not_a_scanned_file(tree, bundled_db_dir):
    os.symlink(tree / "missing", tree / "a" / "dangling")
    tally = Tally()
    sweep(Engine(Database.load(bundled_db_dir)), [str(tree)],
          SweepOptions(follow_symlinks=True), tally, lambda report: None)
    assert tally.files == 4 and tally.by_status[Status.ERROR] == 1


# -- planning, for the progress bar --------------------------------------------------------------

@pytest.mark.parametrize("workers", [1, 2])
def test_every_report_is_planned_ahead_and_the_end_of_the_walk_is_told(tmp_path, bundled_db_dir,
                                                                      workers):
    root = tmp_path / "many"
    root.mkdir()
    for n in range(100):
        (root / f"f{n:03d}").write_text(str(n))
    os.mkfifo(root / "fifo")
    events: list[str] = []
    planned = 0

    def on_planned(count: int) -> None:
        nonlocal planned
        planned += count
        events.append("planned")

    def on_report(report) -> None:
        assert planned > events.count("report")  # the report of something planned already
        events.append("report")

    sweep(Engine(Database.load(bundled_db_dir)), [str(root), str(tmp_path / "nope")],
          SweepOptions(workers=workers), Tally(), on_report, on_planned,
          lambda: events.append("walked"))
    assert planned == events.count("report") == 102  # files, the fifo, the missing path
    assert events.count("walked") == 1
    walked = events.index("walked")
    assert "planned" not in events[walked:]
    if workers > 1:  # workers scan while the walk goes on: the walk ends well ahead
        assert events[walked:].count("report") > 10
