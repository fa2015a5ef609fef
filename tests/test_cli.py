"""`lmsav scan`, `lmsav db`, `lmsav config` as an administrator sees them."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import ClassVar

import pytest
from click.testing import CliRunner

from lmsav.cli import main
from tests.conftest import BODY_SAMPLE, EICAR, write_db


@pytest.fixture
def tree(tmp_path) -> Path:
    root = tmp_path / "tree"
    (root / "sub" / "deeper").mkdir(parents=True)
    (root / "clean.txt").write_text("hello\n")
    (root / "eicar.com").write_bytes(EICAR)
    (root / "sub" / "body.bin").write_bytes(BODY_SAMPLE)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("docs/readme.txt", "fine")
        zf.writestr("docs/eicar.com", EICAR)
    (root / "sub" / "deeper" / "archive.zip").write_bytes(buf.getvalue())
    return root


@pytest.fixture
def run(tmp_path, monkeypatch):
    monkeypatch.setenv("LMSAV_CONFIG", str(tmp_path / "none.toml"))
    (tmp_path / "none.toml").write_text("")
    runner = CliRunner()

    def invoke(*args, input=None):
        return runner.invoke(main, [str(a) for a in args], input=input, catch_exceptions=False)

    return invoke


def test_scan_reports_findings_with_container_paths_and_exit_1(run, tree):
    result = run("scan", "-j", "1", tree)
    assert result.exit_code == 1
    lines = result.output.splitlines()
    assert f"{tree}/eicar.com: Eicar-Test-Signature FOUND" in lines
    assert f"{tree}/sub/body.bin: Lmsav.Test.Body FOUND" in lines
    assert f"{tree}/sub/deeper/archive.zip//docs/eicar.com: Eicar-Test-Signature FOUND" in lines
    assert f"{tree}/clean.txt: OK" not in lines
    assert "Scanned files: 4" in lines
    assert "Infected files: 3" in lines
    assert "Scanned directories: 3" in lines


def test_verbose_prints_ok_and_clean_exit_0(run, tree):
    (tree / "eicar.com").unlink()
    (tree / "sub" / "body.bin").unlink()
    (tree / "sub" / "deeper" / "archive.zip").unlink()
    result = run("scan", "-v", "--no-summary", tree)
    assert result.exit_code == 0
    assert result.output.splitlines() == [f"{tree}/clean.txt: OK"]


def test_json_lines_have_the_verdict_tree(run, tree):
    result = run("scan", "--json", "-j", "2", tree)
    assert result.exit_code == 1
    objs = [json.loads(line) for line in result.output.splitlines()]
    summary = objs.pop()["summary"]
    assert summary["scanned_files"] == 4 and summary["infected_files"] == 3
    by_path = {o["path"]: o for o in objs}
    arc = by_path[f"{tree}/sub/deeper/archive.zip"]
    assert arc["status"] == "infected"
    [threat] = arc["threats"]
    assert threat["path"] == f"{tree}/sub/deeper/archive.zip//docs/eicar.com"
    assert threat["name"] == "Eicar-Test-Signature"
    assert threat["source"] in ("main.ndb", "main.hdb", "main.hsb")
    assert arc["result"]["type"] == "zip"
    assert {c["path"].rsplit("//", 1)[1] for c in arc["result"]["children"]} == {
        "docs/readme.txt", "docs/eicar.com"}
    assert by_path[f"{tree}/clean.txt"]["status"] == "clean"


def test_json_tree_nodes_carry_the_worst_status_of_their_members(run, tree):
    """README: every object gets one status, the worst of its members, at every level."""
    result = run("scan", "--json", "--no-summary", tree / "sub" / "deeper" / "archive.zip")
    [line] = [json.loads(text) for text in result.output.splitlines()]
    root = line["result"]
    assert (line["status"], root["status"], root["own_status"]) == (
        "infected", "infected", "clean")
    by_name = {c["path"].rsplit("//", 1)[1]: c for c in root["children"]}
    assert by_name["docs/eicar.com"]["status"] == "infected"
    assert "own_status" not in by_name["docs/eicar.com"]
    assert by_name["docs/readme.txt"]["status"] == "clean"


def test_a_corrupted_zip_is_reported_on_one_line(run, tmp_path):
    from tests.sweep.test_json_schema import zip_with_wrong_size

    damaged = tmp_path / "damaged.zip"
    damaged.write_bytes(zip_with_wrong_size({"a.txt": b"hello world " * 2000}, "a.txt"))
    result = run("scan", "--no-summary", damaged)
    [line] = result.output.splitlines()
    assert line.startswith(f"{damaged}: corrupted: ") and line.endswith(") CORRUPTED")
    assert "expected" in line and "  " not in line
    tree = json.loads(run("scan", "--json", "--no-summary", damaged).output)
    reason = tree["result"]["reason"]
    assert "\n" not in reason and reason == reason.strip()


def test_parallel_and_serial_agree(run, tree):
    serial = run("scan", "-j", "1", "--no-summary", tree).output.splitlines()
    parallel = run("scan", "-j", "2", "--no-summary", tree).output.splitlines()
    assert serial == parallel and len(serial) == 3


def test_infected_only_hides_clean_files_but_not_errors(run, tree):
    """As clamscan's -i: what was found and what could not be scanned, never an OK line."""
    (tree / "big.bin").write_bytes(b"\0" * 5000)
    full = run("scan", "-v", "--max-filesize", "1K", "--no-summary", tree)
    assert f"{tree}/big.bin: limit: filesize 1024 ERROR" in full.output.splitlines()
    assert f"{tree}/clean.txt: OK" in full.output.splitlines()
    only = run("scan", "-i", "--max-filesize", "1K", "--no-summary", tree)
    assert f"{tree}/big.bin: limit: filesize 1024 ERROR" in only.output.splitlines()
    assert f"{tree}/eicar.com: Eicar-Test-Signature FOUND" in only.output.splitlines()
    assert ": OK" not in only.output
    assert only.exit_code == 1


def test_error_without_findings_exits_2(run, tmp_path):
    (tmp_path / "big.bin").write_bytes(b"\0" * 5000)
    result = run("scan", "--max-filesize", "1K", tmp_path / "big.bin")
    assert result.exit_code == 2


def test_missing_path_is_reported_and_scan_goes_on(run, tree):
    result = run("scan", "--no-summary", tree / "nope", tree / "clean.txt")
    assert result.exit_code == 2
    assert f"{tree}/nope: cannot open: No such file or directory ERROR" in result.output


def test_exclude_include_and_dir_depth(run, tree):
    out = run("scan", "--no-summary", "--exclude", "*.zip", "--exclude", "eicar.com", tree).output
    assert out.splitlines() == [f"{tree}/sub/body.bin: Lmsav.Test.Body FOUND"]
    out = run("scan", "--no-summary", "--include", "*.zip", tree).output
    assert out.splitlines() == [
        f"{tree}/sub/deeper/archive.zip//docs/eicar.com: Eicar-Test-Signature FOUND"]
    out = run("scan", "--no-summary", "--max-dir-depth", "1", tree).output
    assert "archive.zip" not in out and "body.bin" in out


def test_symlinks_not_followed_unless_asked(run, tree, tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "eicar2.com").write_bytes(EICAR)
    (tree / "link").symlink_to(outside)
    (tree / "loop").symlink_to(tree)
    out = run("scan", "--no-summary", tree).output
    assert "eicar2.com" not in out
    out = run("scan", "--no-summary", "--follow-symlinks", tree).output
    assert f"{tree}/link/eicar2.com: Eicar-Test-Signature FOUND" in out.splitlines()


def test_special_files_are_skipped_and_counted(run, tree):
    os.mkfifo(tree / "fifo")
    result = run("scan", tree)
    assert "Skipped: 1" in result.output
    assert f"{tree}/fifo: special file SKIPPED" in run("scan", "-v", tree).output


def test_unreadable_file_is_reported(run, tree, monkeypatch):
    from lmsav.scanner.objects import ScanObject

    real = ScanObject._load

    def deny(self):
        if self.name.endswith("clean.txt"):
            raise PermissionError(13, "Permission denied")
        return real(self)

    monkeypatch.setattr(ScanObject, "_load", deny)
    result = run("scan", "-j", "1", "--no-summary", tree)
    assert f"{tree}/clean.txt: read error: Permission denied ERROR" in result.output.splitlines()
    assert result.exit_code == 1  # the findings still count


def test_stdin(run):
    result = run("scan", "--no-summary", "-", input=EICAR)
    assert result.output.splitlines() == ["stdin: Eicar-Test-Signature FOUND"]
    assert result.exit_code == 1


def test_custom_database_option(run, tmp_path):
    db = write_db(tmp_path / "db", {"x.ndb": "Custom.Sig:0:*:637573746f6d2d6d61726b6572\n"})
    target = tmp_path / "f.txt"
    target.write_text("a custom-marker here")
    result = run("scan", "-d", db, "--no-summary", target)
    assert result.output.splitlines() == [f"{target}: Custom.Sig FOUND"]


def test_bad_database_is_one_line_error(run, tmp_path):
    db = write_db(tmp_path / "db", {"x.ndb": "Broken:0:*:zz\n"})
    result = run("scan", "-d", db, tmp_path)
    assert result.exit_code == 2
    assert result.output.strip().startswith("lmsav: error: x.ndb:1:")
    assert len(result.output.strip().splitlines()) == 1


def test_db_build_info_test(run, tmp_path, bundled_db_dir):
    db = write_db(tmp_path / "db", {"x.ndb": "Custom.Sig:0:*:637573746f6d2d6d61726b6572\n"})
    built = run("db", "build", db)
    assert built.exit_code == 0 and "1 signatures" in built.output
    info = json.loads(run("db", "info", "-d", db, "--json").output)
    assert info["counts"] == {"ndb": 1} and info["signatures"] == 1
    tested = run("db", "test", "-d", bundled_db_dir)
    assert tested.exit_code == 0
    assert tested.output.splitlines()[-1].endswith(" passed, 0 failed")
    no_samples = run("db", "test", "-d", db)
    assert no_samples.exit_code == 2 and "no self-test samples" in no_samples.output


def test_version_shows_database(run):
    result = run("--version")
    assert result.output.splitlines()[0].startswith("lmsav ")
    assert "database 2026112401" in result.output


def test_dash_V_is_version_as_in_clamscan(run):
    version = run("--version")
    short = run("-V")
    assert short.exit_code == 0 and short.output == version.output
    assert short.output.startswith("lmsav ")
    assert "-V, --version" in run("--help").output


LMSAV_EXE = Path(sys.executable).parent / "lmsav"  # the installed executable, its launcher


def test_help_lists_enqueue_and_enqueue_help_works_from_the_executable(tmp_path):
    env = {**os.environ, "LMSAV_CONFIG": str(tmp_path / "none.toml")}
    listing = subprocess.run([LMSAV_EXE, "--help"], capture_output=True, text=True, env=env,
                             check=False)
    assert listing.returncode == 0, listing.stderr
    commands = listing.stdout.split("Commands:\n", 1)[1]
    [line] = [line for line in commands.splitlines() if line.split()[:1] == ["enqueue"]]
    assert "spool" in line.lower() and "lmsav-enqueue(8)" in line
    helped = subprocess.run([LMSAV_EXE, "enqueue", "--help"], capture_output=True, text=True,
                            env=env, check=False)
    assert helped.returncode == 0 and helped.stdout.startswith("usage: lmsav enqueue ")
    short = subprocess.run([LMSAV_EXE, "-V"], capture_output=True, text=True, env=env,
                           check=False)
    assert short.returncode == 0 and short.stdout.startswith("lmsav ")


def test_enqueue_behind_global_options_takes_its_words_as_given(run, tmp_path, monkeypatch):
    """`lmsav --config FILE enqueue …` reaches the command through the option parser: `--`, a
    recipient starting with '-' and -h are enqueue's, and the configuration named is used."""
    monkeypatch.setattr("lmsav.paths._started_by_mta", False)
    monkeypatch.delenv("LMSAV_SPOOL", raising=False)
    helped = run("enqueue", "-h")
    assert helped.exit_code == 0 and helped.output.startswith("usage: lmsav enqueue ")

    from lmsav.spool.nqueue import Spool

    spool = tmp_path / "nqueue"
    cfg = tmp_path / "lmsav.toml"
    cfg.write_text(f'[spool]\ndir = "{spool}"\n')
    done = run("--config", cfg, "enqueue", "-f", "-odd@example.org", "--", "-dash@example.org",
               input="Subject: hi\n\nbody\n")
    assert done.exit_code == 0, done.output
    [(_state, entry)] = Spool(spool).list()
    assert entry.envelope.sender == "-odd@example.org"
    assert entry.envelope.recipients == ("-dash@example.org",)

    bad = run("enqueue", "--bogus")
    assert bad.exit_code == 75  # the MTA keeps the message and retries
    assert "unknown option '--bogus'" in bad.output


def test_config_show_and_check(run, tmp_path):
    cfg = tmp_path / "lmsav.toml"
    cfg.write_text("[limits]\nmax_scan_depth = 7\n")
    shown = run("--config", cfg, "config", "show")
    assert "max_scan_depth = 7" in shown.output
    assert run("--config", cfg, "config", "check").exit_code == 0
    cfg.write_text("[limits]\nmax_scan_depth = -1\n")
    bad = run("--config", cfg, "config", "check")
    assert bad.exit_code == 2
    assert f"{cfg}" in bad.output and "max_scan_depth" in bad.output and "-1" in bad.output


def test_config_check_fails_on_an_invalid_group_file_beside_the_configuration(tmp_path):
    """As an administrator runs it after editing groups.d: the literal command, real process."""
    cfg = tmp_path / "lmsav.toml"
    cfg.write_text("")
    groups = tmp_path / "groups.d"
    groups.mkdir()
    (groups / "sales.toml").write_text('recipients = ["*@sales.example"]\n')
    env = {**os.environ, "LMSAV_CONFIG": str(cfg)}
    command = [str(Path(sys.executable).parent / "lmsav"), "config", "check"]  # the installed one
    good = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    assert good.returncode == 0, good.stderr
    assert good.stdout == f"{cfg}: OK (profile default_recommended)\n"
    (groups / "sales.toml").write_text(
        'recipients = ["*@sales.example"]\ninfected_action = "eat"\n')
    bad = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    assert bad.returncode == 2
    assert bad.stdout == ""
    lines = bad.stderr.splitlines()
    assert len(lines) == 1
    assert lines[0].startswith(f"lmsav: error: {groups / 'sales.toml'}: infected_action")
    assert "eat" in lines[0]


def test_profile_changes_limits(run, tmp_path):
    fast = run("--profile", "high_scan_speed", "config", "show").output
    strict = run("--profile", "high_overall_security", "config", "show").output
    assert fast != strict
    assert 'limit_status = "suspicious"' in strict


def test_real_process_exit_codes_and_no_progress_bar_when_piped(tree):
    exe = Path(sys.executable).with_name("lmsav")
    env = dict(os.environ, LMSAV_CONFIG=os.devnull)
    proc = subprocess.run([exe, "scan", str(tree)], check=False, capture_output=True, text=True, env=env)
    assert proc.returncode == 1
    assert "scanning" not in proc.stderr  # no tqdm bar without a terminal
    proc = subprocess.run([exe, "scan", "--progress", str(tree)], check=False,
                          capture_output=True,
                          text=True, env=env)
    assert "files" in proc.stderr


def test_json_with_infected_only_omits_clean_inputs(run, tree):
    result = run("scan", "--json", "-i", tree)
    objs = [json.loads(line) for line in result.output.splitlines()]
    assert "summary" in objs.pop()
    assert objs and all(o["status"] != "clean" for o in objs)
    assert f"{tree}/clean.txt" not in {o["path"] for o in objs}


def test_db_build_lists_skipped_signatures(run, tmp_path):
    db = tmp_path / "db"
    db.mkdir()
    (db / "x.ndb").write_text("Usable:0:*:41424344\nNeedsPE:1:EP+10:41424344\n"
                              "Newer:0:*:45464748:999\n")
    built = run("db", "build", str(db))
    assert built.exit_code == 0
    assert "x.ndb:3: Newer: needs engine level 999" in built.stderr
    info = json.loads(run("db", "info", "-d", str(db), "--json").output)
    assert info["counts"] == {"ndb": 2}
    assert info["skipped"] == {"ndb": 1} and len(info["skipped_signatures"]) == 1


def test_progress_bar_on_a_terminal(tree):
    import pty
    import threading

    exe = Path(sys.executable).with_name("lmsav")
    env = dict(os.environ, LMSAV_CONFIG=os.devnull)
    master, slave = pty.openpty()
    import fcntl
    import struct
    import termios
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))  # 100 columns
    seen = bytearray()

    def drain():  # read while the scan runs: a pty drops what is unread when its side closes
        try:
            while chunk := os.read(master, 4096):
                seen.extend(chunk)
        except OSError:
            pass

    reader = threading.Thread(target=drain)
    reader.start()
    proc = subprocess.run([exe, "scan", "--no-summary", str(tree)], check=False,
                          stdout=subprocess.PIPE,
                          stderr=slave, env=env, timeout=60)
    os.close(slave)
    reader.join(5)
    os.close(master)
    assert proc.returncode == 1
    assert b"scanning" in seen and b"files" in seen
    assert b"scanning" not in proc.stdout


def _stdout_on_a_terminal(args: list[str], env: dict) -> tuple[int, bytes]:
    """Run lmsav with standard output on a pseudo-terminal; its exit code and what it wrote."""
    import pty
    import threading

    exe = Path(sys.executable).with_name("lmsav")
    master, slave = pty.openpty()
    seen = bytearray()

    def drain():
        try:
            while chunk := os.read(master, 4096):
                seen.extend(chunk)
        except OSError:
            pass

    reader = threading.Thread(target=drain)
    reader.start()
    proc = subprocess.run([exe, *args], check=False, stdout=slave, stderr=subprocess.DEVNULL,
                          env=env, timeout=60)
    os.close(slave)
    reader.join(5)
    os.close(master)
    return proc.returncode, bytes(seen)


def test_found_is_red_on_a_terminal_unless_no_color(tree):
    (tree / "big.bin").write_bytes(b"\0" * 5000)
    env = {k: v for k, v in os.environ.items() if k != "NO_COLOR"}
    env["LMSAV_CONFIG"] = os.devnull
    args = ["scan", "--no-summary", "--no-progress", "-j", "1", "--max-filesize", "1K", str(tree)]
    code, out = _stdout_on_a_terminal(args, env)
    assert code == 1
    assert f"\x1b[31m\x1b[1m{tree}/eicar.com: Eicar-Test-Signature FOUND\x1b[0m".encode() in out
    assert f"\x1b[33m\x1b[1m{tree}/big.bin: limit: filesize 1024 ERROR\x1b[0m".encode() in out
    for plain_args, plain_env in ((args, {**env, "NO_COLOR": "1"}),
                                  ([*args, "--no-color"], env)):
        code, out = _stdout_on_a_terminal(plain_args, plain_env)
        assert code == 1 and b"\x1b[" not in out
        assert f"{tree}/eicar.com: Eicar-Test-Signature FOUND".encode() in out


def test_incremental_skips_unchanged_clean_files_and_says_so(run, tree, tmp_path, monkeypatch):
    import lmsav.sweep.cache as scancache

    # Files written a moment ago are "racily clean" and never recorded; this test has no time
    # to let them age.
    monkeypatch.setattr(scancache, "RACY_MARGIN_NS", 0)
    config = tmp_path / "inc.toml"
    config.write_text(f'[paths]\nstate_dir = "{tmp_path / "state"}"\n')
    monkeypatch.setenv("LMSAV_CONFIG", str(config))
    first = run("scan", "-j", "1", "--incremental", tree)
    assert "Unchanged files skipped: 0" in first.output.splitlines()
    assert (tmp_path / "state" / "scancache.sqlite").exists()
    second = run("scan", "-j", "1", "--incremental", tree)
    lines = second.output.splitlines()
    assert "Unchanged files skipped: 1" in lines  # clean.txt; the three findings are rescanned
    assert "Scanned files: 3" in lines and second.exit_code == 1
    as_json = run("scan", "-j", "1", "--incremental", "--json", tree)
    assert json.loads(as_json.output.splitlines()[-1])["summary"]["unchanged"] == 1
    full = run("scan", "-j", "1", "--no-incremental", tree)
    assert "Scanned files: 4" in full.output and "Unchanged files" not in full.output
    config.write_text(f'[paths]\nstate_dir = "{tmp_path / "state"}"\n[scan]\nincremental = true\n')
    assert "Unchanged files skipped: 1" in run("scan", "-j", "1", tree).output


class _StreamingDaemon:
    """Stands in for the daemon's client: what `scan --daemon --stream` sends, and a reply as
    the daemon words it (EICAR found, anything else OK)."""

    streamed: ClassVar[list[bytes]] = []

    def __init__(self, path=None, **_kw):
        pass

    def instream(self, fh):
        from lmsav.daemon.client import Result

        data = fh.read()
        self.streamed.append(data)
        if EICAR in data:
            return Result("stream", "FOUND", "Eicar-Test-Signature",
                          "stream: Eicar-Test-Signature FOUND")
        return Result("stream", "OK", "", "stream: OK")


@pytest.fixture
def streaming(monkeypatch):
    _StreamingDaemon.streamed = []
    monkeypatch.setattr("lmsav.daemon.client.Client", _StreamingDaemon)
    return _StreamingDaemon


def test_daemon_stream_follows_links_to_files_but_not_to_directories(run, tmp_path, streaming):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "eicar.com").write_bytes(EICAR)
    (outside / "deep").mkdir()
    (outside / "deep" / "also.com").write_bytes(EICAR)
    box = tmp_path / "box"
    box.mkdir()
    (box / "plain.txt").write_text("hello\n")
    (box / "file-link").symlink_to(outside / "eicar.com")
    (box / "dir-link").symlink_to(outside / "deep")
    result = run("scan", "--daemon", "--stream", "--no-summary", "--socket", tmp_path / "s", box)
    assert result.output.splitlines() == [f"{box}/file-link: Eicar-Test-Signature FOUND"]
    assert result.exit_code == 1
    assert sorted(streaming.streamed) == sorted([EICAR, b"hello\n"])  # not also.com


def test_daemon_stream_reports_a_file_it_cannot_open_and_goes_on(run, tmp_path, monkeypatch,
                                                                   streaming):
    import builtins

    box = tmp_path / "box"
    box.mkdir()
    (box / "a-locked.txt").write_text("secret\n")
    (box / "b-clean.txt").write_text("hello\n")
    real_open = builtins.open

    def deny(path, *args, **kw):
        if str(path).endswith("a-locked.txt"):
            raise PermissionError(13, "Permission denied", str(path))
        return real_open(path, *args, **kw)

    monkeypatch.setattr(builtins, "open", deny)
    result = run("scan", "--daemon", "--stream", "-v", "--no-summary", "--socket", tmp_path / "s",
                 box)
    assert result.output.splitlines() == [
        f"{box}/a-locked.txt: Can't open file: Permission denied. ERROR",
        f"{box}/b-clean.txt: OK",
    ]
    assert result.exit_code == 2
    assert streaming.streamed == [b"hello\n"]
