"""A configuration, state, cron.d and unit directory of its own for every cron test: nothing of
the system's is touched."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from click.testing import CliRunner

from lmsav.cron import install
from lmsav.cron.commands import cron


@pytest.fixture
def cron_env(tmp_path, monkeypatch):
    etc = tmp_path / "etc"
    etc.mkdir()
    config = etc / "lmsav.toml"
    state = tmp_path / "state"
    config.write_text(f'[paths]\nstate_dir = "{state}"\n')
    data = tmp_path / "data"
    data.mkdir()
    cron_dir = tmp_path / "cron.d"
    cron_dir.mkdir()
    units = tmp_path / "units"
    monkeypatch.setenv("LMSAV_CONFIG", str(config))
    monkeypatch.setenv("LMSAV_CRON_DIR", str(cron_dir))
    monkeypatch.setenv("LMSAV_SYSTEMD_DIR", str(units))
    monkeypatch.delenv("LMSAV_CRONTAB", raising=False)
    # Should a test forget an override, it still must not touch the real system.
    monkeypatch.setattr(install, "SYSTEM_CRON_DIR", tmp_path / "system-cron.d")
    monkeypatch.setattr(install, "SYSTEM_UNIT_DIR", tmp_path / "system-units")
    monkeypatch.setattr(install, "SYSTEMD_RUNNING", tmp_path / "run-systemd-system")
    runner = CliRunner()

    def invoke(*args):
        return runner.invoke(cron, [str(a) for a in args], catch_exceptions=False)

    return SimpleNamespace(tmp=tmp_path, config=config, state=state, data=data,
                           cron_dir=cron_dir, cron_file=cron_dir / "lmsav", units=units,
                           schedules=etc / "schedules.d", invoke=invoke)
