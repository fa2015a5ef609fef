"""`lmsav milter` takes its defaults from [milter] in lmsav.toml; an option given on the command
line wins over the file."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
import time

import pytest
from click.testing import CliRunner

from lmsav.milter import commands, server
from lmsav.milter.daemon_backend import DaemonBackend
from lmsav.spool.reinject import DirReinjector
from tests.milter.conftest import write_config


class _Stopped:
    """Stands in for the listening server: serve_forever returns at once."""

    def serve_forever(self, poll_interval=0.5):
        pass

    def shutdown(self):
        pass

    def server_close(self):
        pass


@pytest.fixture
def captured(monkeypatch):
    """What `lmsav milter` hands to make_server, instead of listening."""
    seen = {}

    def fake_make_server(listen, backend, limits, timeout, socket_mode=0o660):
        seen.update(listen=listen, backend=backend, limits=limits, timeout=timeout,
                    mode=socket_mode)
        return _Stopped()

    monkeypatch.setattr(server, "make_server", fake_make_server)
    # Leave the test process's handlers as they are; answer with the one in place.
    monkeypatch.setattr(signal, "signal", lambda signum, _handler: signal.getsignal(signum))
    return seen


def config_with(tmp_path, milter_section: str):
    config = write_config(tmp_path, tmp_path / "spool-notices")
    config.write_text(config.read_text() + "\n[milter]\n" + milter_section)
    return {"LMSAV_CONFIG": str(config)}


def run(env, *args):
    result = CliRunner().invoke(commands.milter, list(args), env=env, catch_exceptions=False)
    return result


MILTER_SECTION = """listen = "inet:8899@127.0.0.1"
socket_mode = "0600"
max_message_size = "2M"
spill_size = "64K"
timeout = 7
use_daemon = true
daemon_timeout = 9
fallback = false
notices = "dir:{notices}"
"""


def test_the_milter_section_gives_every_default(tmp_path, captured):
    env = config_with(tmp_path, MILTER_SECTION.format(notices=tmp_path / "milter-notices"))
    result = run(env)
    assert result.exit_code == 0, result.output
    assert captured["listen"] == "inet:8899@127.0.0.1"
    assert captured["mode"] == 0o600
    assert captured["limits"].max_message == 2 << 20
    assert captured["limits"].spill == 64 << 10
    assert captured["timeout"] == 7
    backend = captured["backend"]
    assert isinstance(backend, DaemonBackend)
    assert (backend.timeout, backend.fallback) == (9, False)
    reinjector = backend.local.reinjector_factory()
    assert isinstance(reinjector, DirReinjector)
    assert str(reinjector.path) == str(tmp_path / "milter-notices")


def test_options_win_over_the_file(tmp_path, captured):
    env = config_with(tmp_path, MILTER_SECTION.format(notices=tmp_path / "milter-notices"))
    result = run(env, "--listen", "inet:8898@127.0.0.1", "--socket-mode", "640",
                 "--max-message-size", "3M", "--spill-size", "1K", "--timeout", "0",
                 "--no-daemon", "--notices", f"dir:{tmp_path / 'cli-notices'}")
    assert result.exit_code == 0, result.output
    assert captured["listen"] == "inet:8898@127.0.0.1"
    assert captured["mode"] == 0o640
    assert (captured["limits"].max_message, captured["limits"].spill) == (3 << 20, 1 << 10)
    assert captured["timeout"] == 0
    backend = captured["backend"]
    assert not isinstance(backend, DaemonBackend)
    assert str(backend.reinjector_factory().path) == str(tmp_path / "cli-notices")


def test_daemon_options_win_over_the_file(tmp_path, captured):
    env = config_with(tmp_path, "use_daemon = false\ndaemon_timeout = 9\nfallback = false\n")
    result = run(env, "--daemon", "--daemon-timeout", "3", "--fallback")
    assert result.exit_code == 0, result.output
    backend = captured["backend"]
    assert isinstance(backend, DaemonBackend)
    assert (backend.timeout, backend.fallback) == (3, True)


def test_without_a_milter_section_the_built_in_defaults_hold(tmp_path, captured):
    config = write_config(tmp_path, tmp_path / "spool-notices")
    result = run({"LMSAV_CONFIG": str(config)})
    assert result.exit_code == 0, result.output
    assert captured["listen"].startswith("unix:") and captured["listen"].endswith("/milter.sock")
    assert captured["mode"] == 0o660
    assert (captured["limits"].max_message, captured["limits"].spill) == (100 << 20, 1 << 20)
    assert captured["timeout"] == 300
    backend = captured["backend"]
    assert not isinstance(backend, DaemonBackend)
    # Notices follow [spool] reinject when [milter] notices is empty.
    assert str(backend.reinjector_factory().path) == str(tmp_path / "spool-notices")


def test_bad_file_values_are_one_line_errors(tmp_path):
    for section, words in (('socket_mode = "9x"\n', "[milter] socket_mode 9x"),
                           ('listen = "inet:99999@127.0.0.1"\n', "[milter] listen")):
        result = CliRunner().invoke(commands.milter, [],
                                    env=config_with(tmp_path / section[:6], section))
        assert result.exit_code == 2, result.output
        assert words in result.output and "Traceback" not in result.output
    result = CliRunner().invoke(commands.milter, [],
                                env=config_with(tmp_path / "size", 'spill_size = "lots"\n'))
    assert result.exit_code == 2 and "milter.spill_size" in result.output


def test_config_show_lists_the_milter_section(tmp_path):
    from lmsav.cli import main

    env = config_with(tmp_path, 'timeout = 42\nlisten = "unix:/tmp/x.sock"\n')
    result = CliRunner().invoke(main, ["config", "show"], env=env, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    section = result.output.split("[milter]", 1)[1]
    assert "timeout = 42" in section and 'listen = "unix:/tmp/x.sock"' in section
    assert "spill_size" in section and "use_daemon" in section


def test_a_running_milter_listens_where_the_file_says_with_its_mode(tmp_path):
    """End to end: the socket and its mode come from [milter]; SIGTERM removes it."""
    path = tmp_path / "from-file.sock"
    env = config_with(tmp_path, f'listen = "unix:{path}"\nsocket_mode = "0600"\n')
    proc = subprocess.Popen(
        [sys.executable, "-c", "from lmsav.milter.commands import milter; milter()"],
        env=dict(os.environ, **env), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while not path.is_socket() and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.05)
        assert path.is_socket(), proc.stdout.read() if proc.poll() is not None else ""
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
        assert not path.exists()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
