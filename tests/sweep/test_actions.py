"""`lmsav scan --action …` as an administrator sees it: what happens to detected files on disk."""

from __future__ import annotations

import email
import email.policy
import gzip
import io
import json
import os
import stat
import tarfile
import zipfile
from email.message import EmailMessage
from pathlib import Path

import pytest
from click.testing import CliRunner

from lmsav.cli import main
from lmsav.quarantine.store import FileStore
from lmsav.scanner.engine import Engine
from lmsav.scanner.signatures.database import Database
from lmsav.sweep.actions import ActionPolicy, ActionRunner
from lmsav.sweep.run import scan_one
from tests.conftest import EICAR
from tests.jsonlines import records

ROOT = os.geteuid() == 0
root_only = pytest.mark.skipif(not ROOT, reason="changing a file's owner needs root")
NOBODY, NOGROUP = 65534, 65534


class Env:
    def __init__(self, tmp: Path):
        self.tmp = tmp
        self.state = tmp / "state"
        self.config = tmp / "lmsav.toml"
        self.files = tmp / "files"
        self.files.mkdir()
        self.write_config("")
        self.runner = CliRunner()

    def write_config(self, scan_section: str) -> None:
        self.config.write_text(f'[paths]\nstate_dir = "{self.state}"\n\n[scan]\n{scan_section}\n')

    def run(self, *args, input=None):
        return self.runner.invoke(main, [str(a) for a in args], input=input,
                                  catch_exceptions=False)

    def scan(self, *args):
        return self.run("scan", "-j", "1", *args)

    @property
    def quarantine(self) -> Path:
        return self.state / "quarantine"

    @property
    def backup(self) -> Path:
        return self.state / "backup" / "files"

    def entries(self, store: Path) -> list[Path]:
        return sorted(p for p in store.iterdir() if not p.name.startswith(".")) \
            if store.exists() else []


@pytest.fixture
def env(tmp_path, monkeypatch) -> Env:
    e = Env(tmp_path)
    monkeypatch.setenv("LMSAV_CONFIG", str(e.config))
    return e


def zip_bytes(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buf.getvalue()


def tar_gz_bytes(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def mail_bytes() -> bytes:
    msg = EmailMessage()
    msg["From"] = "alice@example.org"
    msg["To"] = "bob@example.com"
    msg["Subject"] = "invoice"
    msg.set_content("Please find the invoice attached.\n")
    msg.add_attachment(EICAR, maintype="application", subtype="octet-stream",
                       filename="invoice.com")
    msg.add_attachment(b"plain notes\n", maintype="text", subtype="plain", filename="notes.txt")
    return msg.as_bytes()


# -- quarantine ------------------------------------------------------------------------------

def test_quarantine_moves_the_file_with_its_record_and_prints_the_id(env):
    bad = env.files / "eicar.com"
    bad.write_bytes(EICAR)
    os.chmod(bad, 0o755)
    os.utime(bad, ns=(1_600_000_000_123_456_789, 1_500_000_000_987_654_321))
    clean = env.files / "clean.txt"
    clean.write_text("hello\n")
    result = env.scan("--action", "quarantine", env.files)
    assert result.exit_code == 1
    [entry] = env.entries(env.quarantine)
    lines = result.output.splitlines()
    assert f"{bad}: Eicar-Test-Signature FOUND" in lines
    assert f"{bad}: moved to quarantine as {entry.name}" in lines
    assert "Quarantined files: 1" in lines and "Action errors: 0" in lines
    assert not bad.exists() and clean.exists()
    # Not executable, not readable by others; in 0700 directories.
    assert stat.S_IMODE((entry / "content").stat().st_mode) == 0o600
    assert stat.S_IMODE((entry / "info.json").stat().st_mode) == 0o600
    assert stat.S_IMODE(entry.stat().st_mode) == 0o700
    assert stat.S_IMODE(env.quarantine.stat().st_mode) == 0o700
    assert (entry / "content").read_bytes() == EICAR
    info = json.loads((entry / "info.json").read_text())
    assert info["original_path"] == str(bad)
    assert info["mode"] == 0o755 and info["mtime_ns"] == 1_500_000_000_987_654_321
    assert info["uid"] == os.geteuid() and info["size"] == len(EICAR)
    assert info["sha256"] == "275a021bbfb6489e54d471899f7db9d1663fc695ec2fe2a2c4538aabf651fd0f"
    assert info["md5"] == "44d88612fea8a8f36de82e1278abb02f"
    assert info["threats"] == ["Eicar-Test-Signature"] and info["status"] == "infected"
    assert info["verdict"]["result"]["threats"][0]["name"] == "Eicar-Test-Signature"
    assert info["database_version"] and info["created"] > 0


@root_only
def test_quarantine_then_restore_puts_back_owner_mode_and_times(env):
    bad = env.files / "sub" / "eicar.com"
    bad.parent.mkdir()
    bad.write_bytes(EICAR)
    os.chown(bad, NOBODY, NOGROUP)
    os.chmod(bad, 0o4751)
    os.utime(bad, ns=(1_400_000_000_000_000_001, 1_500_000_000_123_456_789))
    assert env.scan("--action", "quarantine", env.files).exit_code == 1
    assert not bad.exists()
    [entry] = env.entries(env.quarantine)
    assert (entry / "content").stat().st_uid == 0  # the copy belongs to lmsav, not the owner
    result = env.run("quarantine", "restore", entry.name)
    assert result.exit_code == 0, result.output
    assert result.output.strip() == f"restored {entry.name} to {bad}"
    st = bad.stat()
    assert (st.st_uid, st.st_gid) == (NOBODY, NOGROUP)
    assert stat.S_IMODE(st.st_mode) == 0o4751
    assert st.st_mtime_ns == 1_500_000_000_123_456_789
    assert bad.read_bytes() == EICAR
    assert env.entries(env.quarantine) == []  # restored: no longer in quarantine


def test_restore_as_it_was_mode_and_mtime(env):
    bad = env.files / "eicar.com"
    bad.write_bytes(EICAR)
    os.chmod(bad, 0o640)
    os.utime(bad, ns=(1_400_000_000_000_000_000, 1_450_000_000_000_000_000))
    env.scan("--action", "quarantine", bad)
    [entry] = env.entries(env.quarantine)
    env.run("quarantine", "restore", entry.name)
    assert stat.S_IMODE(bad.stat().st_mode) == 0o640
    assert bad.stat().st_mtime_ns == 1_450_000_000_000_000_000


# -- cure ------------------------------------------------------------------------------------

def test_cure_zip_keeps_the_clean_member_and_the_original_in_backup(env):
    original = zip_bytes({"docs/readme.txt": b"fine\n", "docs/eicar.com": EICAR})
    arc = env.files / "archive.zip"
    arc.write_bytes(original)
    result = env.scan("--action", "cure", arc)
    assert result.exit_code == 1
    [entry] = env.entries(env.backup)
    lines = result.output.splitlines()
    assert f"{arc}//docs/eicar.com: Eicar-Test-Signature FOUND" in lines
    assert f"{arc}: cured, original kept in backup as {entry.name}" in lines
    assert "Cured files: 1" in lines
    with zipfile.ZipFile(arc) as zf:
        assert zf.namelist() == ["docs/readme.txt"]
        assert zf.read("docs/readme.txt") == b"fine\n"
    assert (entry / "content").read_bytes() == original
    info = json.loads((entry / "info.json").read_text())
    assert info["action"] == "cure" and info["original_path"] == str(arc)
    assert env.entries(env.quarantine) == []
    assert env.scan(arc).exit_code == 0  # the cured file scans clean
    # The backup store is the one `lmsav backup list` shows (kind "file").
    listed = records(env.run("backup", "list", "--json").output)
    assert [(e["kind"], e["id"]) for e in listed] == [("file", entry.name)]


def test_cure_tar_gz(env):
    arc = env.files / "bundle.tar.gz"
    arc.write_bytes(tar_gz_bytes({"ok.txt": b"keep me\n", "dir/bad.com": EICAR}))
    result = env.scan("--action", "cure", arc)
    assert result.exit_code == 1
    assert f"{arc}//bundle.tar//dir/bad.com: Eicar-Test-Signature FOUND" in result.output
    assert "Cured files: 1" in result.output
    with tarfile.open(arc) as tf:
        assert tf.getnames() == ["ok.txt"]
        assert tf.extractfile("ok.txt").read() == b"keep me\n"
    assert gzip.decompress(arc.read_bytes())  # still a gzip stream
    assert env.scan(arc).exit_code == 0


@pytest.mark.parametrize("suffix", ["tar.bz2", "tar.xz", "tar.zst"])
def test_cure_tar_in_other_compressors(env, suffix):
    import bz2
    import lzma

    import zstandard

    tar = gzip.decompress(tar_gz_bytes({"ok.txt": b"keep me\n", "bad.com": EICAR}))
    compress = {"tar.bz2": bz2.compress, "tar.xz": lzma.compress,
                "tar.zst": zstandard.ZstdCompressor().compress}[suffix]
    arc = env.files / f"bundle.{suffix}"
    arc.write_bytes(compress(tar))
    result = env.scan("--action", "cure", arc)
    assert "Cured files: 1" in result.output
    with tarfile.open(arc) if suffix != "tar.zst" else tarfile.open(
            fileobj=io.BytesIO(zstandard.ZstdDecompressor().decompress(arc.read_bytes()))) as tf:
        assert tf.getnames() == ["ok.txt"]


def test_cure_mail_rebuilds_the_message_without_the_infected_part(env):
    msg_path = env.files / "message.eml"
    original = mail_bytes()
    msg_path.write_bytes(original)
    result = env.scan("--action", "cure", msg_path)
    assert result.exit_code == 1
    assert "Cured files: 1" in result.output
    cured = email.message_from_bytes(msg_path.read_bytes(), policy=email.policy.default)
    assert cured["Subject"] == "invoice"
    parts = list(cured.iter_parts())
    assert len(parts) == 2
    assert parts[0].get_content() == "Please find the invoice attached.\n"
    assert parts[1].get_filename() == "notes.txt"
    assert EICAR not in msg_path.read_bytes()
    [entry] = env.entries(env.backup)
    assert (entry / "content").read_bytes() == original
    assert env.scan(msg_path).exit_code == 0


def test_cure_of_a_zip_attached_to_a_message_keeps_the_attachment_without_the_threat(env):
    msg = EmailMessage()
    msg["Subject"] = "files"
    msg.set_content("Two files attached.\n")
    msg.add_attachment(zip_bytes({"a.txt": b"keep me", "e.com": EICAR}), maintype="application",
                       subtype="zip", filename="files.zip")
    msg_path = env.files / "zipped.eml"
    msg_path.write_bytes(msg.as_bytes())
    result = env.scan("--action", "cure", msg_path)
    assert "Cured files: 1" in result.output, result.output
    cured = email.message_from_bytes(msg_path.read_bytes(), policy=email.policy.default)
    [attachment] = [p for p in cured.iter_attachments()]
    with zipfile.ZipFile(io.BytesIO(attachment.get_content())) as zf:
        assert zf.namelist() == ["a.txt"]
    assert env.scan(msg_path).exit_code == 0


def test_cure_keeps_owner_and_mode_and_leaves_no_temporary_file(env):
    arc = env.files / "archive.zip"
    arc.write_bytes(zip_bytes({"a.txt": b"a", "e.com": EICAR}))
    os.chmod(arc, 0o640)
    if ROOT:
        os.chown(arc, NOBODY, NOGROUP)
    inode = arc.stat().st_ino
    assert env.scan("--action", "cure", arc).exit_code == 1
    st = arc.stat()
    assert stat.S_IMODE(st.st_mode) == 0o640
    if ROOT:
        assert (st.st_uid, st.st_gid) == (NOBODY, NOGROUP)
    assert st.st_ino != inode  # replaced by rename, not rewritten in place
    assert sorted(p.name for p in env.files.iterdir()) == ["archive.zip"]


def test_bare_infected_file_cannot_be_cured_and_gets_the_uncurable_action(env):
    bad = env.files / "eicar.com"
    bad.write_bytes(EICAR)
    result = env.scan("--action", "cure", bad)  # uncurable_action defaults to quarantine
    assert result.exit_code == 1
    [entry] = env.entries(env.quarantine)
    assert (f"{bad}: not curable (the whole file is the threat); moved to quarantine as "
            f"{entry.name}") in result.output.splitlines()
    assert not bad.exists()
    info = json.loads((entry / "info.json").read_text())
    assert info["requested"] == "cure" and info["action"] == "quarantine"

    bad.write_bytes(EICAR)
    result = env.scan("--action", "cure", "--uncurable-action", "report", bad)
    assert result.exit_code == 1
    assert f"{bad}: not curable (the whole file is the threat); left in place" in result.output
    assert bad.read_bytes() == EICAR

    env.write_config('uncurable_action = "delete"')
    result = env.scan("--action", "cure", bad)
    assert not bad.exists()
    assert "Deleted files: 1" in result.output
    assert len(env.entries(env.backup)) == 1


def test_a_zip_whose_only_member_is_the_threat_is_cured_to_an_empty_zip(env):
    arc = env.files / "only.zip"
    arc.write_bytes(zip_bytes({"e.com": EICAR}))
    assert env.scan("--action", "cure", arc).exit_code == 1
    with zipfile.ZipFile(arc) as zf:
        assert zf.namelist() == []


# -- delete ----------------------------------------------------------------------------------

def test_delete_keeps_a_backup_first_and_no_backup_does_not(env):
    bad = env.files / "eicar.com"
    bad.write_bytes(EICAR)
    result = env.scan("--action", "delete", bad)
    [entry] = env.entries(env.backup)
    assert f"{bad}: deleted, original kept in backup as {entry.name}" in result.output
    assert not bad.exists() and (entry / "content").read_bytes() == EICAR
    assert "Deleted files: 1" in result.output

    bad.write_bytes(EICAR)
    result = env.scan("--action", "delete", "--no-backup", bad)
    assert result.exit_code == 1
    assert f"{bad}: deleted" in result.output.splitlines()
    assert not bad.exists()
    assert len(env.entries(env.backup)) == 1  # still only the first one

    bad.write_bytes(EICAR)
    env.write_config("backup = false")
    env.scan("--action", "delete", bad)
    assert not bad.exists() and len(env.entries(env.backup)) == 1


# -- per-status actions, configuration and command line --------------------------------------

def test_per_status_actions_from_the_file_and_the_command_line(env):
    bad = env.files / "eicar.com"
    big = env.files / "big.bin"

    def reset():
        bad.write_bytes(EICAR)
        big.write_bytes(b"\0" * 5000)

    reset()
    env.write_config('infected_action = "quarantine"')
    result = env.scan("--max-filesize", "1K", env.files)
    assert not bad.exists() and big.exists()  # error_action stays "report"
    assert "Quarantined files: 1" in result.output

    reset()
    result = env.scan("--infected-action", "report", env.files)  # the command line wins
    assert bad.exists() and "Quarantined files" not in result.output

    reset()
    env.write_config("")
    before = env.entries(env.quarantine)
    result = env.scan("--max-filesize", "1K", "--action", "delete", "--no-backup",
                      "--error-action", "quarantine", env.files)
    assert not bad.exists() and not big.exists()
    [entry] = set(env.entries(env.quarantine)) - set(before)
    assert json.loads((entry / "info.json").read_text())["original_path"] == str(big)
    assert "Deleted files: 1" in result.output and "Quarantined files: 1" in result.output


def test_protected_and_corrupted_files_get_their_action_only_when_counted(env):
    broken = env.files / "broken.gz"
    broken.write_bytes(gzip.compress(bytes(range(256)) * 50)[:-40])
    env.write_config('corrupted_action = "quarantine"')
    env.scan(broken)
    assert broken.exists()
    env.write_config('corrupted_action = "quarantine"\ndetect_corrupted = true')
    result = env.scan(broken)
    assert not broken.exists(), result.output


# -- the report file and JSON ----------------------------------------------------------------

def test_report_file_lists_every_action(env):
    (env.files / "eicar.com").write_bytes(EICAR)
    (env.files / "a.zip").write_bytes(zip_bytes({"ok.txt": b"ok", "e.com": EICAR}))
    (env.files / "clean.txt").write_text("hi")
    report = env.tmp / "actions.jsonl"
    result = env.scan("--action", "cure", "--report", report, env.files)
    assert result.exit_code == 1
    records = [json.loads(line) for line in report.read_text().splitlines()]
    by_path = {Path(r["path"]).name: r for r in records}
    assert set(by_path) == {"eicar.com", "a.zip"}
    assert by_path["a.zip"]["requested"] == "cure" and by_path["a.zip"]["done"] == "cure"
    assert by_path["a.zip"]["backup_id"] and by_path["a.zip"]["result"] == "ok"
    assert by_path["eicar.com"]["done"] == "quarantine"
    assert by_path["eicar.com"]["quarantine_id"]
    assert by_path["eicar.com"]["threats"] == ["Eicar-Test-Signature"]
    assert by_path["eicar.com"]["status"] == "infected" and by_path["eicar.com"]["time"]

    (env.files / "eicar.com").write_bytes(EICAR)
    text = env.tmp / "actions.log"
    env.scan("--action", "quarantine", "--report", text, env.files)
    [line] = text.read_text().splitlines()
    assert f"{env.files}/eicar.com: infected (Eicar-Test-Signature);" in line
    assert "requested=quarantine done=quarantine result=ok quarantine_id=" in line

    (env.files / "eicar.com").write_bytes(EICAR)
    env.scan("--report", text, "--report-format", "jsonl", env.files)  # appended
    last = json.loads(text.read_text().splitlines()[-1])
    assert last["requested"] == "report" and last["done"] == "report"


def test_json_output_has_an_action_object(env):
    bad = env.files / "eicar.com"
    bad.write_bytes(EICAR)
    result = env.scan("--json", "--action", "quarantine", bad)
    first, summary = [json.loads(line) for line in result.output.splitlines()]
    [entry] = env.entries(env.quarantine)
    assert first["action"] == {"requested": "quarantine", "done": "quarantine", "result": "ok",
                               "message": f"moved to quarantine as {entry.name}",
                               "quarantine_id": entry.name}
    assert summary["summary"]["quarantined"] == 1 and summary["summary"]["action_errors"] == 0


# -- what is never touched -------------------------------------------------------------------

def test_symlinks_are_refused_and_the_failure_exits_2(env):
    target = env.files / "eicar.com"
    target.write_bytes(EICAR)
    link = env.tmp / "link.com"
    link.symlink_to(target)
    result = env.scan("--action", "quarantine", link)
    assert result.exit_code == 2
    assert f"{link}: not quarantined: a symbolic link" in result.output.splitlines()
    assert "Action errors: 1" in result.output
    assert target.read_bytes() == EICAR and link.is_symlink()


def test_standard_input_is_never_acted_on(env):
    result = env.run("scan", "--action", "delete", "-", input=EICAR)
    assert result.exit_code == 1
    assert "stdin: Eicar-Test-Signature FOUND" in result.output
    assert "deleted" not in result.output.replace("Deleted files: 0", "")


def test_lmsav_own_store_is_left_alone(env):
    bad = env.files / "eicar.com"
    bad.write_bytes(EICAR)
    env.scan("--action", "quarantine", bad)
    [entry] = env.entries(env.quarantine)
    result = env.scan("--action", "delete", env.state)
    assert result.exit_code == 1
    assert (entry / "content").exists()
    assert "left in place: inside lmsav's own store" in result.output


def test_a_file_changed_since_the_scan_is_left_alone(env, bundled_db_dir):
    bad = env.files / "eicar.com"
    bad.write_bytes(EICAR)
    import lmsav.sweep.run as sweep_mod

    engine = Engine(Database.load(bundled_db_dir))
    sweep_mod._engine = engine
    report = scan_one(str(bad))
    bad.write_bytes(b"now something else entirely, same file name" + b" " * 30)
    runner = ActionRunner(engine, ActionPolicy(action="delete", backup=False),
                          FileStore(env.quarantine), FileStore(env.backup, "backup"))
    result = runner.apply(report)
    assert not result.ok and result.error == "changed since scan"
    assert result.message == "not deleted: changed since scan"
    assert bad.exists()

    # Same size, other content: the second look finds it clean.
    bad.write_bytes(EICAR)
    report = scan_one(str(bad))
    bad.write_bytes(b"x" * len(EICAR))
    result = runner.apply(report)
    assert result.error == "changed since scan" and bad.read_bytes() == b"x" * len(EICAR)


# -- watch mode ------------------------------------------------------------------------------

def test_watch_quarantines_a_file_dropped_into_a_new_subdirectory(env):
    import selectors
    import signal
    import subprocess
    import sys
    import time

    watched = env.files
    exe = Path(sys.executable).with_name("lmsav")
    proc = subprocess.Popen([exe, "scan", "--watch", "--action", "quarantine", watched],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=dict(os.environ, LMSAV_CONFIG=str(env.config)))
    try:
        sel = selectors.DefaultSelector()
        sel.register(proc.stderr, selectors.EVENT_READ)
        assert sel.select(timeout=20), "the watcher did not start"
        assert proc.stderr.readline().startswith("lmsav: watching ")
        (watched / "new" / "deeper").mkdir(parents=True)
        (watched / "new" / "clean.txt").write_text("clean\n")
        bad = watched / "new" / "deeper" / "eicar.com"
        bad.write_bytes(EICAR)
        dropped = time.monotonic()
        # Polled, not slept: wait longer than the 2 s promised only to tell slow from never.
        # Done means both: the copy is in quarantine and then the original is gone.
        while ((not env.entries(env.quarantine) or bad.exists())
               and time.monotonic() < dropped + 10):
            time.sleep(0.02)
        took = time.monotonic() - dropped
        [entry] = env.entries(env.quarantine)
        assert not bad.exists()
        assert took < 2.0, f"quarantined only after {took:.2f} s"
    finally:
        proc.send_signal(signal.SIGTERM)
        out, _err = proc.communicate(timeout=20)
    assert proc.returncode == 1  # stopped cleanly; something was found during the run
    lines = out.splitlines()
    assert f"{bad}: Eicar-Test-Signature FOUND" in lines
    assert f"{bad}: moved to quarantine as {entry.name}" in lines
    assert "Quarantined files: 1" in lines and "Infected files: 1" in lines


def test_watch_with_nothing_found_exits_0_on_sigint(env):
    import signal
    import subprocess
    import sys

    exe = Path(sys.executable).with_name("lmsav")
    proc = subprocess.Popen([exe, "scan", "--watch", "--no-summary", env.files],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=dict(os.environ, LMSAV_CONFIG=str(env.config)))
    assert proc.stderr.readline().startswith("lmsav: watching ")
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=20)
    assert proc.returncode == 0 and out == "" and "Traceback" not in err
