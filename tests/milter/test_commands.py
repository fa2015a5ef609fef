"""`lmsav milter` as the command line runs it: its errors, and a unix socket the MTA reaches."""

from __future__ import annotations

import os
import signal
import socket
import stat
import struct
import subprocess
import sys
import time

from click.testing import CliRunner

from lmsav.milter import protocol
from lmsav.milter.commands import milter
from lmsav.spool.milter_socket import ListenError, parse_listen
from tests.milter.conftest import write_config


def run(*args: str, env: dict | None = None):
    return CliRunner().invoke(milter, list(args), env=env)


def test_listen_forms_of_postfix_and_sendmail_are_understood():
    assert parse_listen("unix:/run/lmsav/milter.sock") == ("unix", "/run/lmsav/milter.sock")
    assert parse_listen("/run/m.sock") == ("unix", "/run/m.sock")
    assert parse_listen("inet:8890@127.0.0.1") == ("inet", ("127.0.0.1", 8890))
    assert parse_listen("inet:localhost:8890") == ("inet", ("localhost", 8890))
    assert parse_listen("inet6:8890@[::1]") == ("inet", ("::1", 8890))
    for bad in ("unix:relative", "inet:99999@127.0.0.1", "tcp:1", "inet:x"):
        try:
            parse_listen(bad)
        except ListenError:
            continue
        raise AssertionError(f"{bad} accepted")


def test_bad_options_are_one_line_errors_with_exit_2(tmp_path):
    env = {"LMSAV_CONFIG": str(write_config(tmp_path, tmp_path / "notices"))}
    for args, words in ((["--listen", "tcp:1"], "--listen tcp:1"),
                        (["--socket-mode", "9x"], "--socket-mode 9x"),
                        (["--notices", "ftp:x"], "reinject = 'ftp:x'")):
        result = run(*args, env=env)
        assert result.exit_code == 2, result.output
        assert words in result.output
    result = run("--max-message-size", "lots", env=env)
    assert result.exit_code == 2 and "expected bytes" in result.output


def test_serves_on_a_unix_socket_with_its_mode_and_removes_it_on_sigterm(tmp_path):
    config = write_config(tmp_path, tmp_path / "notices")
    path = tmp_path / "milter.sock"
    proc = subprocess.Popen(
        [sys.executable, "-c", "from lmsav.milter.commands import milter; milter()",
         "--listen", f"unix:{path}", "--socket-mode", "666"],
        env=dict(os.environ, LMSAV_CONFIG=str(config)), stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while not path.is_socket() and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.05)
        assert path.is_socket(), proc.stdout.read() if proc.poll() is not None else ""
        assert stat.S_IMODE(path.stat().st_mode) == 0o666
        with socket.socket(socket.AF_UNIX) as sock:
            sock.settimeout(30)
            sock.connect(str(path))
            sock.sendall(protocol.encode(protocol.OPTNEG, struct.pack("!III", 6, 0x1FF, 0)))
            reply = protocol.read_packet(sock.makefile("rb").read)
        assert reply.command == protocol.OPTNEG
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
        assert not path.exists()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
