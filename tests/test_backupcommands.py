"""`lmsav backup`: the originals of files a scan cured or deleted and of messages the mail policy
changed, in one list, as an administrator uses it."""

from __future__ import annotations

import json
import os
import re
import shlex
from email.message import EmailMessage
from pathlib import Path

import pytest
from click.testing import CliRunner

from lmsav import paths
from lmsav.backupcommands import backup_group
from lmsav.cli import main
from lmsav.mail.backup import BackupStore
from lmsav.quarantine.store import FileStore
from tests.conftest import EICAR
from tests.jsonlines import one_object, records

T0 = 1_795_614_301.25  # 2026-11-25 13:45:01.25 UTC
MAN_PAGE = Path(__file__).resolve().parents[1] / "man" / "lmsav-backup.1"


class Env:
    def __init__(self, tmp_path: Path):
        self.tmp = tmp_path
        self.state = tmp_path / "state"
        self.files = tmp_path / "files"
        self.files.mkdir()
        self.runner = CliRunner()

    def backup(self, *args, input=None):
        """`lmsav backup ARGS` through the command group itself."""
        return self.runner.invoke(backup_group, [str(a) for a in args], input=input,
                                  catch_exceptions=False)

    def lmsav(self, *args, input=None):
        """`lmsav ARGS` through the whole command line."""
        return self.runner.invoke(main, [str(a) for a in args], input=input,
                                  catch_exceptions=False)

    def file_store(self, clock=None) -> FileStore:
        return FileStore(paths.backup_files_dir(self.state), "backup",
                         **({"clock": clock} if clock else {}))

    def mail_store(self, clock=None) -> BackupStore:
        return BackupStore(paths.backup_dir(self.state), **({"clock": clock} if clock else {}))

    def deleted_by_scan(self, name="eicar.com") -> tuple[Path, str]:
        """A file `lmsav scan --infected-action delete` removed, and its backup id."""
        path = self.files / name
        path.write_bytes(EICAR)
        result = self.lmsav("scan", "--infected-action", "delete", path)
        assert result.exit_code == 1, result.output
        [entry_id] = re.findall(r"original kept in backup as (\S+)", result.output)
        return path, entry_id

    def checked_mail(self) -> tuple[bytes, str]:
        """A message `lmsav mail check --record` kept, and its backup id."""
        raw = infected_message()
        result = self.lmsav("mail", "check", "--record", "--json", "-f", "alice@example.org",
                            "-r", "bob@example.net", "-", input=raw)
        assert result.exit_code == 1, result.output
        [group] = one_object(result.output)["groups"]
        return raw, group["backup"]


@pytest.fixture
def env(tmp_path, monkeypatch) -> Env:
    cfg = tmp_path / "lmsav.toml"
    cfg.write_text(f'[paths]\nstate_dir = "{tmp_path / "state"}"\n')
    monkeypatch.setenv("LMSAV_CONFIG", str(cfg))
    monkeypatch.chdir(tmp_path)
    return Env(tmp_path)


def infected_message() -> bytes:
    msg = EmailMessage()
    msg["From"] = "alice@example.org"
    msg["Subject"] = "invoice"
    msg.set_content("see attached")
    msg.add_attachment(EICAR, maintype="application", subtype="octet-stream", filename="e.com")
    return msg.as_bytes()


def test_empty_list_is_the_header_line_and_json_is_nothing(env):
    result = env.backup("list")
    assert result.exit_code == 0
    assert result.output == "ID  KIND  DATE (UTC)  STATUS  THREATS  SIZE  ORIGINAL\n"
    result = env.backup("list", "--json")
    assert result.exit_code == 0 and result.output == ""


def test_files_and_messages_in_one_list_newest_first_with_their_kind(env):
    clock = iter([T0, T0 + 20])
    mail = env.mail_store(clock=lambda: next(clock))
    older_mail = mail.save(b"Subject: old\n\nx\n", {
        "sender": "alice@example.org", "recipients": ["bob@example.net"], "subject": "old",
        "status": "infected", "threats": ["Eicar-Test-Signature"]})
    newer_mail = mail.save(b"Subject: new\n\nyy\n", {
        "sender": "", "recipients": ["carol@example.net"], "subject": "new\x1b[31m",
        "status": "suspicious", "threats": []})
    file_id = env.file_store(clock=lambda: T0 + 10).put(EICAR, {
        "original_path": "/srv/eicar.com", "status": "infected",
        "threats": ["Eicar-Test-Signature"], "action": "delete"})

    lines = env.backup("list").output.splitlines()
    assert lines[0].split() == ["ID", "KIND", "DATE", "(UTC)", "STATUS", "THREATS", "SIZE",
                                "ORIGINAL"]
    assert [line.split()[:2] for line in lines[1:]] == [
        [newer_mail, "mail"], [file_id, "file"], [older_mail, "mail"]]
    assert "2026-11-25 13:45:21  suspicious" in lines[1]
    assert lines[1].endswith("<> to carol@example.net: new?[31m")
    assert lines[2].split()[2:] == ["2026-11-25", "13:45:11", "infected", "Eicar-Test-Signature",
                                    "68", "/srv/eicar.com"]
    assert lines[3].endswith("<alice@example.org> to bob@example.net: old")

    listed = records(env.backup("list", "--json").output)
    assert [(e["kind"], e["id"]) for e in listed] == [
        ("mail", newer_mail), ("file", file_id), ("mail", older_mail)]
    assert listed[1]["original_path"] == "/srv/eicar.com" and listed[1]["action"] == "delete"
    assert listed[0]["recipients"] == ["carol@example.net"]

    assert [e["id"] for e in records(env.backup("list", "--kind", "file", "--json").output)] \
        == [file_id]
    only_mail = env.backup("list", "--kind", "mail").output.splitlines()
    assert [line.split()[:2] for line in only_mail[1:]] == [[newer_mail, "mail"],
                                                           [older_mail, "mail"]]


def test_what_scan_deletes_is_in_lmsav_backup_list(env):
    """The issue as a user met it: `--infected-action delete` names a backup id that
    `lmsav backup list` must show."""
    path, entry_id = env.deleted_by_scan()
    assert not path.exists()
    lines = env.lmsav("backup", "list").output.splitlines()
    assert len(lines) == 2 and lines[1].startswith(f"{entry_id}  file  ")
    assert lines[1].endswith(f"68  {path}")
    # The old way still finds it.
    old = records(env.lmsav("quarantine", "list", "--store", "backup", "--json").output)
    assert [e["id"] for e in old] == [entry_id]


def test_show_extract_restore_delete_a_file_original(env):
    path, entry_id = env.deleted_by_scan()

    shown = env.backup("show", entry_id).output.splitlines()
    assert shown[:2] == [f"ID:               {entry_id}", "Kind:             file"]
    assert f"Original path:    {path}" in shown
    assert "Action:           delete" in shown
    record = one_object(env.backup("show", "--json", entry_id).output)
    assert record["kind"] == "file" and record["original_path"] == str(path)
    assert record["verdict"]["status"] == "infected"

    assert env.backup("extract", entry_id).stdout_bytes == EICAR
    out = env.tmp / "inspect.bin"
    assert env.backup("extract", entry_id, "-o", out).exit_code == 0
    assert out.read_bytes() == EICAR and out.stat().st_mode & 0o777 == 0o600

    other = env.tmp / "copy.com"
    result = env.backup("restore", "--keep", "--to", other, entry_id)
    assert result.exit_code == 0 and result.output == f"restored {entry_id} to {other}\n"
    assert other.read_bytes() == EICAR

    path.write_text("a new file in its place\n")
    result = env.backup("restore", entry_id)
    assert result.exit_code == 2
    assert result.output == f"lmsav: error: {path} exists; use --force to overwrite it\n"
    result = env.backup("restore", "--force", entry_id)
    assert result.exit_code == 0 and path.read_bytes() == EICAR
    assert env.backup("list", "--json").output == ""  # restored, so no longer kept


def test_show_extract_delete_a_mail_original_and_restore_points_at_extract(env):
    raw, entry_id = env.checked_mail()

    [listed] = records(env.backup("list", "--json").output)
    assert listed["kind"] == "mail" and listed["id"] == entry_id
    assert listed["sender"] == "alice@example.org" and listed["subject"] == "invoice"

    shown = env.backup("show", entry_id).output.splitlines()
    assert shown[:2] == [f"ID:               {entry_id}", "Kind:             mail"]
    assert "Sender:           <alice@example.org>" in shown
    assert "Recipients:       bob@example.net" in shown
    assert "Subject:          invoice" in shown
    assert "Group:            default: bob@example.net: infected, action reject" in shown
    record = one_object(env.backup("show", "--json", entry_id).output)
    assert record["kind"] == "mail" and record["status"] == "infected"

    assert env.backup("extract", entry_id).stdout_bytes == raw
    out = env.tmp / "original.eml"
    assert env.backup("extract", entry_id, "-o", out).exit_code == 0
    assert out.read_bytes() == raw

    result = env.backup("restore", entry_id)
    assert result.exit_code == 2
    assert result.output == (
        f"lmsav: error: backup entry '{entry_id}' is a mail message, which has no path to go "
        f"back to: write it out with 'lmsav backup extract {entry_id} -o FILE'\n")

    result = env.backup("delete", entry_id)
    assert result.exit_code == 0 and result.output == f"deleted {entry_id}\n"
    assert env.backup("list", "--json").output == ""


def test_delete_takes_ids_of_both_kinds(env):
    _path, file_id = env.deleted_by_scan()
    _raw, mail_id = env.checked_mail()
    result = env.backup("delete", file_id, mail_id)
    assert result.output.splitlines() == [f"deleted {file_id}", f"deleted {mail_id}"]
    assert env.backup("list", "--json").output == ""


def test_an_id_naming_an_entry_of_each_kind_needs_kind(env):
    """The two stores make ids alike; the same id in both is refused, never guessed."""
    mail_id = env.mail_store().save(b"Subject: m\n\nm\n", {"subject": "m", "status": "infected"})
    files = env.file_store()
    file_id = files.put(EICAR, {"original_path": "/srv/x", "status": "infected"})
    os.rename(files.root / file_id, files.root / mail_id)

    for command in (("show",), ("extract",), ("restore",), ("delete",)):
        result = env.backup(*command, mail_id)
        assert result.exit_code == 2
        assert result.output == (f"lmsav: error: backup entry '{mail_id}' names both a file "
                                 f"and a mail original: add --kind file or --kind mail\n")
    assert env.backup("extract", "--kind", "file", mail_id).stdout_bytes == EICAR
    assert env.backup("extract", "--kind", "mail", mail_id).stdout_bytes == b"Subject: m\n\nm\n"
    assert env.backup("delete", "--kind", "mail", mail_id).exit_code == 0
    assert env.backup("show", mail_id).output.splitlines()[1] == "Kind:             file"


def test_unknown_and_malformed_ids_are_one_line_errors(env):
    missing = "20261125T134501Z-0b3f2a9c41de"
    for command in (("show",), ("extract",), ("restore",), ("delete",)):
        result = env.backup(*command, missing)
        assert result.exit_code == 2
        assert result.output == f"lmsav: error: no backup entry '{missing}'\n"
        result = env.backup(*command, "../../etc/passwd")
        assert result.exit_code == 2
        assert result.output == ("lmsav: error: invalid backup id '../../etc/passwd': expected "
                                 "YYYYMMDDTHHMMSSZ-<12 hex digits>\n")
    result = env.backup("show", "--kind", "mail", missing)
    assert result.output == f"lmsav: error: no mail backup entry '{missing}'\n"


def test_a_damaged_mail_entry_is_listed_and_can_be_deleted(env):
    entry_id = env.mail_store().save(b"x", {"subject": "s", "status": "infected"})
    (env.state / "backup" / entry_id / "info.json").unlink()
    [line] = env.backup("list").output.splitlines()[1:]
    assert line.split()[:2] == [entry_id, "mail"] and "damaged" in line
    assert env.backup("delete", entry_id).exit_code == 0


def test_long_and_hostile_mail_values_are_shortened_and_made_printable(env):
    env.mail_store().save(b"x" * 1234, {
        "sender": "a\rb@example.org", "recipients": [f"r{i}@example.com" for i in range(9)],
        "subject": "S" * 200, "status": "infected"})
    [line] = env.backup("list").output.splitlines()[1:]
    assert "\r" not in line and "<a?b@example.org>" in line
    assert "S" * 50 not in line and "S" * 49 + "\u2026" in line
    assert "r8@example.com" not in line and "\u2026" in line
    assert " 1234  <" in line


def test_undecodable_header_text_is_listed_printably(env):
    subject = b"Caf\xe9".decode("utf-8", "surrogateescape")  # as headers decode raw bytes
    env.mail_store().save(b"Subject: Caf\xe9\n\n", {"subject": subject, "status": "infected"})
    [line] = env.backup("list").output.splitlines()[1:]
    assert line.endswith(": Caf?")
    # Escaped as \udce9 in the JSON line, it reaches the reader unchanged.
    [line] = env.backup("list", "--json").output.splitlines()
    assert json.loads(line)["subject"] == subject


def test_the_man_page_examples_run_as_written(env):
    """Each EXAMPLES line of lmsav-backup(1), with the page's ids replaced by real ones."""
    text = MAN_PAGE.read_text()
    examples = text.split(".SH EXAMPLES", 1)[1].split(".SH ", 1)[0]
    lines = [line.replace("\\-", "-") for line in examples.split(".nf\n", 1)[1]
             .split(".fi", 1)[0].splitlines()]
    page_ids = sorted(set(re.findall(r"\d{8}T\d{6}Z-[0-9a-f]{12}", "\n".join(lines))))
    assert len(page_ids) == 2, page_ids  # one file original, one message
    _path, file_id = env.deleted_by_scan()
    _raw, mail_id = env.checked_mail()
    # The page's id in a `restore` line stands for a file original, the other for a message.
    restored = {w for line in lines if " restore " in line for w in shlex.split(line)}
    real = {page_id: file_id if page_id in restored else mail_id for page_id in page_ids}
    for line in lines:
        words = shlex.split(line)
        assert words[:2] == ["lmsav", "backup"], line
        result = env.lmsav(*[real.get(w, w) for w in words[1:]])
        assert result.exit_code == 0, (line, result.output)
