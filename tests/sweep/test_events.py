"""`lmsav scan` records its run in the statistics store: one ``file_found`` event per infected
file and one ``file_scan`` summary; a user who cannot write the store sees nothing of it."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from click.testing import CliRunner

from lmsav import config as config_mod
from lmsav.cli import main
from lmsav.stats.store import open_store, sqlite_path
from tests.conftest import EICAR

pytestmark = pytest.mark.integration


def tree(root: Path) -> Path:
    (root / "files" / "sub").mkdir(parents=True)
    (root / "files" / "clean.txt").write_bytes(b"just text\n")
    (root / "files" / "sub" / "eicar.com").write_bytes(EICAR)
    (root / "files" / "sub" / "other.txt").write_bytes(b"more text\n")
    return root / "files"


def scan(config: Path, *args: str, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "lmsav.launcher", "scan", *args], check=False,
                          env=dict(os.environ, LMSAV_CONFIG=str(config)), capture_output=True,
                          text=True, timeout=120, **kw)


def write_config(path: Path, state: Path) -> Path:
    path.write_text(f'[paths]\nstate_dir = "{state}"\n')
    return path


def test_a_sweep_is_one_summary_event_and_one_event_per_file_found(tmp_path):
    files = tree(tmp_path)
    config = write_config(tmp_path / "lmsav.toml", tmp_path / "state")
    result = scan(config, "--no-summary", str(files))
    assert result.returncode == 1, result.stderr
    assert result.stderr == ""
    settings = config_mod.load_settings(config)
    store = open_store(settings)
    try:
        assert store.totals()["files_scanned"] == 3
        assert store.summary(0, 4e9)["events"] == {"file_found": 1, "file_scan": 1}
    finally:
        store.close()
    with sqlite3.connect(sqlite_path(settings.paths.state_dir)) as conn:
        rows = {kind: (status, files, json.loads(threats), size, json.loads(detail))
                for kind, status, files, threats, size, detail in conn.execute(
                    "SELECT kind, status, files, threats, size, detail FROM events")}
    assert rows["file_found"] == ("infected", 0, ["Eicar-Test-Signature"], len(EICAR),
                                  {"path": str(files / "sub" / "eicar.com")})
    status, count, threats, size, detail = rows["file_scan"]
    assert (status, count, threats) == ("infected", 3, ["Eicar-Test-Signature"])
    assert size == len(EICAR) + len(b"just text\n") + len(b"more text\n")
    assert detail["statuses"] == {"clean": 2, "infected": 1}
    assert detail["targets"] == [str(files)] and detail["database"] == "2026112401"


def scan_as_nobody(config: Path, *args: str, out: Path) -> tuple[int, str, str]:
    """`lmsav scan ARGS` in a forked child as nobody; exit code, stdout, stderr. Forked, not
    executed: the interpreter may live where nobody cannot reach (under /root), so the
    caller has run a scan in this process first, which imported every module it needs."""
    import pwd

    with open(out / "stdout", "w+") as stdout, open(out / "stderr", "w+") as stderr:
        pid = os.fork()
        if pid == 0:
            code = 70
            try:
                os.dup2(stdout.fileno(), 1)
                os.dup2(stderr.fileno(), 2)
                sys.stdout = open(1, "w", closefd=False)  # noqa: SIM115 - until os._exit
                sys.stderr = open(2, "w", closefd=False)  # noqa: SIM115
                nobody = pwd.getpwnam("nobody")
                os.setgroups([])
                os.setgid(nobody.pw_gid)
                os.setuid(nobody.pw_uid)
                os.chdir("/")
                os.environ["LMSAV_CONFIG"] = str(config)
                try:
                    main(["scan", *args])
                except SystemExit as done:
                    code = done.code if isinstance(done.code, int) else 70
            except BaseException:  # noqa: BLE001 - the child says why, then exits 70
                import traceback

                traceback.print_exc()
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(code)
        _, status = os.waitpid(pid, 0)
        stdout.seek(0)
        stderr.seek(0)
        return os.waitstatus_to_exitcode(status), stdout.read(), stderr.read()


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to run as another user")
def test_a_user_who_cannot_write_the_store_scans_as_before(tmp_path):
    top = Path(tempfile.mkdtemp(prefix="lmsav-sweep-"))  # pytest's tmp is root's alone
    try:
        top.chmod(0o755)
        files = tree(top)
        for path in [files, *files.rglob("*")]:
            path.chmod(0o755 if path.is_dir() else 0o644)
        (top / "system").mkdir(mode=0o755)  # root's state: nobody cannot write it
        config = write_config(top / "lmsav.toml", top / "system" / "state")
        config.chmod(0o644)
        # Root, with a store of its own, first: what it prints is what nobody must see.
        own = write_config(tmp_path / "root.toml", tmp_path / "state")
        as_root = CliRunner().invoke(main, ["scan", str(files)], env={"LMSAV_CONFIG": str(own)})
        assert as_root.exit_code == 1 and sqlite_path(tmp_path / "state").exists()
        code, stdout, stderr = scan_as_nobody(config, str(files), out=tmp_path)
        assert not (top / "system" / "state").exists()
    finally:
        shutil.rmtree(top)
    assert (code, stderr) == (1, "")
    assert stdout.split("Time:")[0] == as_root.stdout.split("Time:")[0]
    assert "Infected files: 1" in stdout


def test_a_file_name_that_is_not_utf8_is_recorded_escaped(tmp_path):
    (tmp_path / "files").mkdir()
    with open(os.path.join(os.fsencode(tmp_path / "files"), b"bad\xffname.com"), "wb") as fh:
        fh.write(EICAR)
    config = write_config(tmp_path / "lmsav.toml", tmp_path / "state")
    done = subprocess.run([sys.executable, "-m", "lmsav.launcher", "scan", str(tmp_path / "files")],
                          env=dict(os.environ, LMSAV_CONFIG=str(config)), check=False,
                          capture_output=True, timeout=120)  # bytes: the name is not UTF-8
    assert done.returncode == 1 and done.stderr == b""
    with sqlite3.connect(sqlite_path(tmp_path / "state")) as conn:
        [(detail,)] = conn.execute("SELECT detail FROM events WHERE kind = 'file_found'")
    assert json.loads(detail)["path"] == f"{tmp_path}/files/bad\\xffname.com"
