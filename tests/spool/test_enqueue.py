"""`lmsav enqueue`: 0 only once the message is durable, 75 (the MTA retries) for every failure."""

from __future__ import annotations

import errno
import io
import os
import subprocess
import sys
from pathlib import Path

import pytest

from lmsav import config as config_mod
from lmsav.spool import nqueue as queue_mod
from lmsav.spool.enqueue import main
from lmsav.spool.nqueue import Spool

MESSAGE = b"From: ann@example.org\r\nSubject: hello\r\n\r\nline 1\r\n\x00binary\xff"
LMSAV = Path(sys.executable).parent / "lmsav"


@pytest.fixture(autouse=True)
def clean_env(monkeypatch, tmp_path):
    """No setting of the machine or the developer leaks in."""
    monkeypatch.delenv("LMSAV_SPOOL", raising=False)
    monkeypatch.setenv("LMSAV_CONFIG", str(tmp_path / "no-such-config.toml"))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    # `lmsav enqueue` marks its process as started by an MTA; in-process runs must not leave
    # that mark on the tests that follow.
    monkeypatch.setattr("lmsav.paths._started_by_mta", False)


def feed(monkeypatch, data: bytes | io.RawIOBase) -> None:
    stream = io.BufferedReader(data) if isinstance(data, io.RawIOBase) else io.BytesIO(data)
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(stream))


def entries(root: Path) -> list[queue_mod.SpoolEntry]:
    return [entry for _state, entry in Spool(root).list()]


def run(monkeypatch, argv: list[str], data: bytes = MESSAGE) -> int:
    feed(monkeypatch, data)
    return main(argv)


def test_a_message_is_accepted_with_its_envelope(monkeypatch, tmp_path):
    root = tmp_path / "nqueue"
    code = run(monkeypatch, ["-f", "ann@example.org", "-q", "4XyZ1", "--spool", str(root), "--",
                             "bob@example.org", "cy@example.net"])
    assert code == 0
    [entry] = entries(root)
    assert entry.envelope.sender == "ann@example.org"
    assert entry.envelope.recipients == ("bob@example.org", "cy@example.net")
    assert entry.queue_id == "4XyZ1"
    assert Spool(root).message(entry) == MESSAGE


@pytest.mark.parametrize("argv, sender, recipients", [
    (["-f", "", "--", "a@b"], "", ("a@b",)),  # a bounce: Postfix's null_sender=
    (["-f", "-odd@example.org", "--", "a@b"], "-odd@example.org", ("a@b",)),
    (["-fann@x", "-qQ1", "a@b", "c@d"], "ann@x", ("a@b", "c@d")),
    (["a@b"], "", ("a@b",)),
    (["--", "-dash@example.org", "--"], "", ("-dash@example.org", "--")),
])
def test_options_take_the_next_word_as_sendmail_does(monkeypatch, tmp_path, argv, sender,
                                                      recipients):
    root = tmp_path / "nqueue"
    assert run(monkeypatch, [f"--spool={root}", *argv]) == 0
    [entry] = entries(root)
    assert (entry.envelope.sender, entry.envelope.recipients) == (sender, recipients)


@pytest.mark.parametrize("argv, reason", [
    (["-f", "a@b", "--"], "no recipients"),
    (["-f", "a@b"], "no recipients"),
    ([], "no recipients"),
    (["-f"], "needs a value"),
    (["-x", "--", "a@b"], "unknown option"),
    (["--", "a@b\r\nRCPT TO:<c@d>"], "CR, LF or NUL"),
    (["--", "x" * 999], "longer than 998"),
    (["-f", "a@b\x00", "--", "c@d"], "CR, LF or NUL"),
])
def test_bad_arguments_defer_rather_than_bounce(monkeypatch, tmp_path, capsys, argv, reason):
    root = tmp_path / "nqueue"
    assert run(monkeypatch, ["--spool", str(root), *argv]) == 75
    err = capsys.readouterr().err
    assert err.startswith("lmsav enqueue: ") and reason in err
    assert err.count("\n") == 1
    assert not (root / "new").exists() or os.listdir(root / "new") == []


def test_help_is_the_only_success_without_a_message(monkeypatch, capsys):
    assert run(monkeypatch, ["--help"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: lmsav enqueue") and "75" in out


def test_a_spool_that_cannot_be_created_defers(monkeypatch, tmp_path, capsys):
    (tmp_path / "file").write_text("not a directory")
    assert run(monkeypatch, ["--spool", str(tmp_path / "file" / "nqueue"), "--", "a@b"]) == 75
    assert capsys.readouterr().err.startswith("lmsav enqueue: cannot create spool")


def test_disk_full_defers_and_leaves_nothing_in_new(monkeypatch, tmp_path, capsys):
    root = tmp_path / "nqueue"
    Spool(root).ensure()

    def no_space(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(queue_mod.os, "fsync", no_space)
    assert run(monkeypatch, ["--spool", str(root), "--", "a@b"]) == 75
    monkeypatch.undo()
    assert "No space left on device" in capsys.readouterr().err
    assert os.listdir(root / "new") == [] and os.listdir(root / "tmp") == []


def test_a_broken_input_pipe_defers(monkeypatch, tmp_path):
    class Broken(io.RawIOBase):
        sent = False

        def readable(self):
            return True

        def readinto(self, buffer):
            if self.sent:
                raise OSError(errno.EIO, "Input/output error")
            self.sent = True
            buffer[:5] = b"Subje"
            return 5

    root = tmp_path / "nqueue"
    assert run(monkeypatch, ["--spool", str(root), "--", "a@b"], Broken()) == 75
    assert os.listdir(root / "new") == [] and os.listdir(root / "tmp") == []


def test_an_unexpected_error_still_defers(monkeypatch, tmp_path, capsys):
    def boom(self):
        raise RuntimeError("surprise")

    monkeypatch.setattr(Spool, "ensure", boom)
    assert run(monkeypatch, ["--spool", str(tmp_path), "--", "a@b"]) == 75
    assert "internal error: RuntimeError: surprise" in capsys.readouterr().err


# -- where the spool is --------------------------------------------------------------------------

def test_spool_from_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("LMSAV_SPOOL", str(tmp_path / "env-spool"))
    assert run(monkeypatch, ["--", "a@b"]) == 0
    assert len(entries(tmp_path / "env-spool")) == 1


@pytest.mark.parametrize("toml, expected", [
    ('[spool]\ndir = "{tmp}/from-spool-dir"\n', "{tmp}/from-spool-dir"),
    ('[paths]\nstate_dir = "{tmp}/state"\n', "{tmp}/state/nqueue"),
    ('[paths]\nstate_dir = "{tmp}/state"\n[spool]\ndir = ""\n', "{tmp}/state/nqueue"),
    ('[spool]\ndir = "{tmp}/a"\nworkers = 2\n[paths]\nstate_dir = "{tmp}/b"\n', "{tmp}/a"),
])
def test_spool_from_the_configuration_agrees_with_lmsav_config(monkeypatch, tmp_path, toml,
                                                               expected):
    config = tmp_path / "lmsav.toml"
    config.write_text(toml.format(tmp=tmp_path))
    monkeypatch.setenv("LMSAV_CONFIG", str(config))
    assert run(monkeypatch, ["--", "a@b"]) == 0
    spool_dir = Path(expected.format(tmp=tmp_path))
    assert len(entries(spool_dir)) == 1
    # The watcher reads the same file through lmsav.config: both must name the same spool.
    assert config_mod.load_settings(config).spool_dir() == spool_dir


def test_without_a_configuration_file_the_default_state_dir_is_used(monkeypatch, tmp_path):
    monkeypatch.delenv("LMSAV_CONFIG")
    monkeypatch.setattr("lmsav.paths.default_config_file", lambda: tmp_path / "none.toml")
    monkeypatch.setattr("lmsav.paths.state_dir", lambda: tmp_path / "state")
    assert run(monkeypatch, ["--", "a@b"]) == 0
    assert len(entries(tmp_path / "state" / "nqueue")) == 1


@pytest.mark.parametrize("toml, reason", [
    (None, "no such file"),
    ("[spool\n", "invalid TOML"),
    ('[spool]\ndir = "relative/dir"\n', "expected an absolute path"),
    ("[spool]\ndir = 3\n", "expected an absolute path"),
    ('spool = "x"\n', "expected a table"),
])
def test_a_configuration_problem_defers(monkeypatch, tmp_path, capsys, toml, reason):
    config = tmp_path / "lmsav.toml"
    if toml is not None:
        config.write_text(toml)
    monkeypatch.setenv("LMSAV_CONFIG", str(config))
    assert run(monkeypatch, ["--", "a@b"]) == 75
    err = capsys.readouterr().err
    assert err.startswith("lmsav enqueue: ") and reason in err


# -- the real executable -------------------------------------------------------------------------

needs_executable = pytest.mark.skipif(not LMSAV.exists(), reason="lmsav is not installed")


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LMSAV_")}
    env.update(extra)
    return env


@needs_executable
def test_the_installed_command_accepts_a_message(tmp_path):
    root = tmp_path / "nqueue"
    data = MESSAGE * 1000
    done = subprocess.run(
        [str(LMSAV), "enqueue", "-f", "", "-q", "ABC123", "--", "bob@example.org"],
        input=data, capture_output=True, env=_env(LMSAV_SPOOL=str(root)), timeout=60)
    assert (done.returncode, done.stdout, done.stderr) == (0, b"", b"")
    [entry] = entries(root)
    assert entry.queue_id == "ABC123" and entry.envelope.sender == ""
    assert Spool(root).message(entry) == data


@needs_executable
def test_the_installed_command_defers_when_the_spool_is_unusable(tmp_path):
    (tmp_path / "file").write_text("x")
    done = subprocess.run(
        [str(LMSAV), "enqueue", "--spool", str(tmp_path / "file" / "q"), "--", "a@b"],
        input=MESSAGE, capture_output=True, env=_env(), timeout=60)
    assert done.returncode == 75
    assert done.stderr.decode().startswith("lmsav enqueue: ")
    assert done.stderr.count(b"\n") == 1


def test_enqueue_loads_neither_click_nor_the_configuration_nor_the_engine(tmp_path):
    code = (
        "import sys\n"
        "from lmsav.launcher import main\n"
        "sys.argv = ['lmsav', 'enqueue', '--', 'a@b']\n"
        "try:\n"
        "    main()\n"
        "except SystemExit as exit:\n"
        "    heavy = [m for m in sys.modules if m.split('.')[0] == 'click'\n"
        "             or m in ('lmsav.config', 'lmsav.cli') or m.startswith('lmsav.scanner')]\n"
        "    print(exit.code, heavy)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], input=b"x", capture_output=True,
                          env=_env(LMSAV_SPOOL=str(tmp_path / "q")), timeout=60)
    assert done.stdout.decode().split("\n")[0] == "0 []", done.stderr.decode()
