"""The self-test's check of lmsav's listener: the MTA's mail cannot reach lmsav while nothing
answers at an address of [spool] listen."""

from __future__ import annotations

import socket

from lmsav.setup import selftest


def test_a_listener_that_answers_and_one_that_does_not():
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]
        assert selftest.listening(f"smtp:127.0.0.1:{port}")
        assert selftest.listening(f"lmtp:localhost:{port}")
    assert not selftest.listening(f"smtp:127.0.0.1:{port}")
    # A unix socket may be seen by the MTA under its chroot only: taken on trust.
    assert selftest.listening("lmtp:unix:/var/spool/postfix/private/lmsav")


def test_through_spool_says_so_when_the_listener_is_down(tmp_path, monkeypatch):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # free once closed

    class Spool:
        log_file = tmp_path / "spool.log"
        listen = (f"smtp:127.0.0.1:{port}",)

    class Settings:
        spool = Spool()

        def spool_dir(self):
            return tmp_path

    monkeypatch.setattr(selftest, "watcher_running", lambda spool: True)
    [check] = selftest.through_spool(Settings(), "127.0.0.1:1", "a@example.org",
                                     "b@example.org", 1.0)
    assert check.name == "listener" and check.ok is False
    assert f"nothing answers at smtp:127.0.0.1:{port} ([spool] listen)" in check.detail
