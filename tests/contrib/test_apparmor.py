"""contrib/apparmor/usr.bin.lmsav: apparmor_parser compiles it (without loading it: no kernel
AppArmor is needed), and the rules it compiles let the daemon, the spool watcher and `lmsav
enqueue` reach what lmsav really uses on the system layout (lmsav/paths.py, and the files that a
real enqueue and a real database build write), and nothing of the rest of the system."""

from __future__ import annotations

import builtins
import io
import os
import re
import shutil
import sys
from pathlib import Path

import pytest

from lmsav import paths
from lmsav.scanner.signatures import cachedir
from lmsav.scanner.signatures.database import Database
from lmsav.setup import steps
from lmsav.spool import permissions
from lmsav.spool.enqueue import main as enqueue_main
from lmsav.spool.nqueue import SUBDIRS
from lmsav.spool.watcher import LOCK_NAME
from tests.contrib.profile import PROFILE, REPO, compile_profile, parser, run_parser

needs_parser = pytest.mark.skipif(
    parser() is None, reason="apparmor_parser is not installed (Debian package apparmor)")

SPOOL = paths.SYSTEM_STATE_DIR / "nqueue"
SECURITY_DOC = REPO / "docs" / "security.md"
MESSAGE = b"From: ann@example.org\r\nSubject: hello\r\n\r\nhello\r\n"

# What each SYSTEM_* location of lmsav/paths.py must grant, as (path inside it, permissions,
# who needs it). A new SYSTEM_* constant fails test_every_system_location_is_covered until it
# is added to the profile and here.
NEEDS: dict[str, list[tuple[str, str, str]]] = {
    "SYSTEM_CONFIG_DIR": [
        ("lmsav.toml", "r", "every command"),
        (str(steps.GROUPS_DEFAULT.relative_to(paths.SYSTEM_CONFIG_DIR)), "r", "the mail policy"),
        ("certs/local.crt", "r", "the .sign check"),
    ],
    "SYSTEM_CONFIG_FILE": [("", "r", "every command")],
    "SYSTEM_LOG_DIR": [("spool.log", "rw", "the watcher's [spool] log_file")],
    "SYSTEM_STATE_DIR": [
        *((f"nqueue/{sub}/1700000000.123456.M1P2", "rw", "enqueue and the watcher")
          for sub in SUBDIRS),
        (f"nqueue/{permissions.DELIVERED_DIR}/1700000000.123456.M1P2.json", "rw",
         "the watcher"),
        (f"nqueue/{LOCK_NAME}", "rwk", "the watcher"),
        ("quarantine/files/abc", "rw", "scan actions"),
        ("backup/abc", "rw", "the mail policy"),
        ("stats/2024-01.json", "rw", "the mail policy"),
        ("cron/setup-nightly.lock", "rwk", "scheduled sweeps"),
        ("bases/2024120101/main.cvd", "rwl", "lmsav update links what did not change"),
    ],
    "SYSTEM_RUN_DIR": [
        ("clamd.sock", "rw", "the daemon binds, clients connect"),
        ("lmsav.pid", "rw", "the daemon"),
    ],
    "SYSTEM_CACHE_DIR": [
        ("db-0123456789abcdef.lmsavc", "rw", "compiled databases"),
        (".db-0123456789abcdef.lmsavc.4242.tmp", "rw", "compiled databases"),
    ],
}


def system_locations() -> dict[str, Path]:
    """Every SYSTEM_* location lmsav/paths.py defines."""
    return {name: value for name, value in vars(paths).items()
            if name.startswith("SYSTEM_") and isinstance(value, Path)}


@pytest.fixture(scope="module")
def profile():
    if parser() is None:
        pytest.skip("apparmor_parser is not installed (Debian package apparmor)")
    return compile_profile()


def profile_text() -> str:
    return PROFILE.read_text(encoding="utf-8")


def rule_lines() -> list[str]:
    """The profile's lines that are not comments."""
    return [line.strip() for line in profile_text().splitlines()
            if line.strip() and not line.strip().startswith("#")]


# -- the parser ----------------------------------------------------------------------------------

@needs_parser
def test_apparmor_parser_accepts_the_profile():
    proc = run_parser()
    assert proc.returncode == 0, proc.stderr


@needs_parser
def test_the_profile_is_lmsav_attached_to_the_lmsav_script():
    proc = run_parser("--names")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["lmsav"]
    text = profile_text()
    exec_paths = re.search(r"^@\{lmsav_exec\}\s*=\s*(.+)$", text, re.MULTILINE)
    assert exec_paths is not None and "/usr/bin/lmsav" in exec_paths.group(1).split()
    assert re.search(r"^profile lmsav @\{lmsav_exec\} \{$", text, re.MULTILINE)


def test_there_is_no_deny_rule_so_complain_mode_refuses_nothing():
    assert not [line for line in rule_lines() if re.match(r"(audit\s+)?deny\b", line)]


# -- lmsav's directories -------------------------------------------------------------------------

def test_every_system_location_is_covered():
    """The profile names every SYSTEM_* location (or the directory holding it) in a rule, and
    this test knows what each must grant: a location added to lmsav/paths.py fails here."""
    locations = system_locations()
    assert set(locations) == set(NEEDS), "update the profile and NEEDS"
    rules = rule_lines()
    for name, location in locations.items():
        named = [p for p in (location, *location.parents[:-1])
                 if any(re.match(rf"(owner\s+)?{re.escape(str(p))}/", line) for line in rules)]
        assert named, f"{name} = {location} is in no rule of {PROFILE.name}"


@pytest.mark.parametrize("name, inside, perms, who", [
    (name, inside, perms, who) for name, needs in NEEDS.items()
    for inside, perms, who in needs])
def test_each_system_location_grants_what_lmsav_needs(profile, name, inside, perms, who):
    target = system_locations()[name] / inside if inside else system_locations()[name]
    granted = "".join(sorted(profile.perms(target)))
    assert profile.allows(target, perms), f"{target} ({who}): needs {perms}, has {granted}"


@pytest.mark.parametrize("path, perms, owned", [
    (steps.SPOOL_LOG, "rw", False),           # the watcher's [spool] log_file as setup sets it
    (steps.CLAMAV_DIR / "main.cvd", "r", False),  # ClamAV's database, filled by freshclam
    (Path(cachedir.MEMORY_FS) / "lmsav-db-x1y2/db-0123456789abcdef.lmsavc", "rw", True),
    ("/tmp/lmsav-abc123/member.zip", "rw", True),  # a scan's private directory
    ("/tmp/lmsav-sign-abc123/sign.der", "rw", True),  # openssl's files for a .sign check
    ("/tmp/tmpab12cd34", "rw", True),  # INSTREAM data the daemon spools (TemporaryFile)
    ("/srv/mail/archive.zip", "r", False),  # anything a client asks the daemon to SCAN
    ("/root/.config/lmsav/lmsav.toml", "r", True),  # an administrator's personal layout
    ("/home/ann/.local/state/lmsav/quarantine/files/x", "rw", True),
    ("/home/ann/.cache/lmsav/db-0123456789abcdef.lmsavc", "rw", True),
])
def test_the_other_places_lmsav_uses(profile, path, perms, owned):
    granted = "".join(sorted(profile.perms(path, owned)))
    assert profile.allows(path, perms, owned), f"{path}: needs {perms}, has {granted}"


# -- what real runs write ------------------------------------------------------------------------

def _as_apparmor_sees(path) -> str:
    """The absolute path, with the trailing slash AppArmor gives a directory."""
    text = os.path.abspath(os.fspath(path))
    return text + "/" if os.path.isdir(text) and not text.endswith("/") else text


class WriteRecorder:
    """Records the paths a piece of lmsav code opens, creates, renames and removes, with the
    permission AppArmor asks for each: r to read, w to create, write, rename or remove."""

    def __init__(self, monkeypatch):
        self.seen: list[tuple[str, str]] = []
        real_open, real_io_open = builtins.open, io.open
        for name in ("mkdir", "rmdir"):
            self._wrap_os(monkeypatch, name, "w", directory=True)
        self._wrap_os(monkeypatch, "unlink", "w")
        real_os_open = os.open

        def os_open(path, flags, *args, **kw):
            fd = real_os_open(path, flags, *args, **kw)
            if kw.get("dir_fd") is None:
                writing = flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC)
                self.seen.append((_as_apparmor_sees(path), "w" if writing else "r"))
            return fd

        def renamer(real):
            def rename(src, dst, *args, **kw):
                source = _as_apparmor_sees(src)
                real(src, dst, *args, **kw)
                self.seen += [(source, "rw"), (_as_apparmor_sees(dst), "w")]
            return rename

        def opener(real):
            def open_(file, mode="r", *args, **kw):
                opened = real(file, mode, *args, **kw)
                if isinstance(file, (str, bytes, os.PathLike)):
                    writing = any(c in mode for c in "wax+")
                    self.seen.append((_as_apparmor_sees(file), "w" if writing else "r"))
                return opened
            return open_

        monkeypatch.setattr(os, "open", os_open)
        monkeypatch.setattr(os, "rename", renamer(os.rename))
        monkeypatch.setattr(os, "replace", renamer(os.replace))
        monkeypatch.setattr(builtins, "open", opener(real_open))
        monkeypatch.setattr(io, "open", opener(real_io_open))

    def _wrap_os(self, monkeypatch, name: str, perms: str, directory: bool = False) -> None:
        real = getattr(os, name)

        def wrapper(path, *args, **kw):
            result = real(path, *args, **kw)  # a call that fails never reaches AppArmor
            self.seen.append((os.path.abspath(os.fspath(path)) + ("/" if directory else ""),
                              perms))
            return result

        monkeypatch.setattr(os, name, wrapper)

    def under(self, root: Path, system: Path) -> list[tuple[str, str]]:
        """What was recorded inside ``root``, as the same paths inside ``system``."""
        out = []
        for path, perms in self.seen:
            if path.rstrip("/") == str(root) or path.startswith(f"{root}/"):
                inside = system / Path(path).relative_to(root)
                out.append((f"{inside}/" if path.endswith("/") else str(inside), perms))
        return out

    def writes_outside(self, *roots: Path) -> list[str]:
        return [path for path, perms in self.seen if "w" in perms
                and not any(path.rstrip("/") == str(r) or path.startswith(f"{r}/")
                            for r in roots)]


def test_what_a_real_enqueue_writes_is_allowed(profile, monkeypatch, tmp_path):
    """`lmsav enqueue` as an MTA's pipe runs it (no terminal, the configuration file's
    state_dir): every path it touches, moved to /var/lib/lmsav, is allowed."""
    state = tmp_path / "state"
    config = tmp_path / "lmsav.toml"
    config.write_text(f'[paths]\nstate_dir = "{state}"\n')
    monkeypatch.setenv("LMSAV_CONFIG", str(config))
    monkeypatch.delenv("LMSAV_SPOOL", raising=False)
    monkeypatch.setattr("lmsav.paths._started_by_mta", False)  # enqueue sets it; undone after
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(MESSAGE)))
    recorder = WriteRecorder(monkeypatch)
    code = enqueue_main(["-f", "ann@example.org", "--", "bob@example.org"])
    monkeypatch.undo()
    assert code == 0
    assert [p.name for p in (state / "nqueue" / "new").iterdir()], "no entry in new/"
    touched = recorder.under(state, paths.SYSTEM_STATE_DIR)
    assert any(Path(p).parent == SPOOL / "new" and "w" in perms for p, perms in touched)
    assert any(Path(p).parent == SPOOL / "tmp" and "w" in perms for p, perms in touched)
    refused = [f"{p} ({perms})" for p, perms in touched if not profile.allows(p, perms)]
    assert not refused
    assert not recorder.writes_outside(state)


def test_what_a_real_database_build_writes_beside_its_directory_is_allowed(
        profile, monkeypatch, tmp_path):
    """Root compiles a database beside it when it can write there: ClamAV's directory, and
    the bundled database inside an installed lmsav package."""
    directory = tmp_path / "bases"
    shutil.copytree(paths.bundled_database_dir(), directory,
                    ignore=shutil.ignore_patterns(".*"))
    recorder = WriteRecorder(monkeypatch)
    Database.load(directory, rebuild=True)
    monkeypatch.undo()
    assert any("w" in perms for _p, perms in recorder.under(directory, directory)), \
        "the build wrote nothing beside the database"
    assert not recorder.writes_outside(directory)
    bundled = [Path("/usr/lib/python3/dist-packages/lmsav/data/bases"),
               Path("/usr/local/lib/python3.11/dist-packages/lmsav/data/bases"),
               Path("/opt/lmsav/lib/python3.11/site-packages/lmsav/data/bases")]
    for where in (steps.CLAMAV_DIR, *bundled):
        refused = [f"{p} ({perms})" for p, perms in recorder.under(directory, where)
                   if not profile.allows(p, perms)]
        assert not refused


# -- processes, capabilities, sockets ------------------------------------------------------------

def _installed(name: str, *fallbacks: str) -> list[str]:
    """The program as AppArmor sees it run: the file after symbolic links."""
    found = shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin")
    return [os.path.realpath(found)] if found else list(fallbacks)


@pytest.mark.parametrize("program, why", [
    (_installed("openssl", "/usr/bin/openssl"), "checks .sign files"),
    (_installed("7z", "/usr/lib/p7zip/7z"), "unpacks what libarchive cannot"),
    (_installed("ldconfig", "/usr/sbin/ldconfig"), "ctypes.util.find_library"),
    (["/usr/bin/python3.11", "/usr/bin/python3.13", "/usr/local/bin/python3.12"],
     "the interpreter of the lmsav script"),
    (["/usr/bin/lmsav", "/usr/local/bin/lmsav"], "scheduled sweeps run `lmsav scan`"),
    (["/bin/sh", "/usr/bin/dash"], "p7zip's 7z wrapper"),
    (["/usr/sbin/sendmail", "/usr/sbin/exim4"], "[spool] reinject = sendmail:..."),
], ids=["openssl", "7z", "ldconfig", "python", "lmsav", "sh", "sendmail"])
def test_the_programs_lmsav_runs_may_be_run(profile, program, why):
    for path in program:
        assert profile.allows(path, "x"), f"{path} ({why}) cannot be executed"


def test_the_daemon_may_read_anything_drop_root_and_listen(profile):
    assert {"dac_read_search", "dac_override", "chown", "fowner", "fsetid", "setuid",
            "setgid"} <= profile.capabilities
    assert re.search(r"\bunix \{[^}]*\bstream\b", profile.network)
    assert re.search(r"\binet \{[^}]*\bstream\b", profile.network)
    assert re.search(r"\binet6 \{[^}]*\bstream\b", profile.network)


@pytest.mark.parametrize("path, perms", [
    ("/etc/lmsav/lmsav.toml", "w"),
    ("/etc/passwd", "w"),
    ("/etc/shadow", "w"),
    ("/etc/postfix/master.cf", "w"),
    ("/usr/bin/lmsav", "w"),
    ("/usr/lib/python3/dist-packages/lmsav/cli.py", "w"),
    ("/var/lib/clamav/main.cvd", "w"),
    ("/var/spool/postfix/incoming/ABC", "w"),
    ("/root/.ssh/authorized_keys", "w"),
    ("/home/ann/Mail/inbox", "w"),
    ("/usr/bin/curl", "x"),
    ("/usr/bin/perl", "x"),
    ("/tmp/someone-elses-file", "w"),
])
def test_the_rest_of_the_system_stays_out_of_reach(profile, path, perms):
    assert not profile.allows(path, perms), f"the profile grants {perms} on {path}"


# -- docs/security.md ----------------------------------------------------------------------------

def documented_local_rules() -> str:
    """The example of /etc/apparmor.d/local/usr.bin.lmsav in docs/security.md."""
    text = SECURITY_DOC.read_text(encoding="utf-8")
    after = text[text.index("/etc/apparmor.d/local/usr.bin.lmsav`, which the profile"):]
    return after.split("```", 2)[1].strip("\n")


@pytest.mark.parametrize("path, perms", [
    ("/srv/signatures/.compiled.lmsavc", "rw"),
    ("/srv/signatures/..compiled.lmsavc.4242.tmp", "rw"),
    ("/var/tmp/lmsav/lmsav-abc123/member", "rw"),
    ("/srv/ftp/upload/archive.zip", "rw"),
])
def test_the_documented_local_rules_are_included_and_grant_what_they_say(
        profile, tmp_path, path, perms):
    (tmp_path / "local").mkdir()
    (tmp_path / "local" / "usr.bin.lmsav").write_text(documented_local_rules() + "\n")
    assert not profile.allows(path, perms)  # the shipped profile alone does not grant it
    assert compile_profile(include=tmp_path).allows(path, perms)
