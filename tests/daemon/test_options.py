"""lmsav.daemon.options: what the daemon runs with, and what a reload may change."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from lmsav.config import LISTEN_RE, load_settings
from lmsav.daemon.options import Options, merge_reloaded, options_from_settings


def test_listen_addresses_are_checked_with_the_public_pattern():
    assert LISTEN_RE.fullmatch("127.0.0.1:3310") and LISTEN_RE.fullmatch("[::1]:3310")
    assert not LISTEN_RE.fullmatch("3310") and not LISTEN_RE.fullmatch("example.com:3310")


def test_options_carry_only_what_the_daemon_reads():
    # The mail service takes its state directory from the settings, not from the options.
    assert "state_dir" not in {f.name for f in dataclasses.fields(Options)}


def test_a_reload_keeps_the_settings_bound_at_start(tmp_path):
    settings = load_settings(tmp_path / "absent.toml")
    running = options_from_settings(settings, "/run/a.sock", ("127.0.0.1:3310",), "/db", 2,
                                    None)
    new = dataclasses.replace(running, socket=Path("/run/b.sock"), workers=4,
                              max_connections=1000)
    merged, restart = merge_reloaded(running, new)
    assert restart == ["socket"]
    assert (merged.socket, merged.workers, merged.max_connections) == \
        (Path("/run/a.sock"), 4, 1000)
