"""What `lmsav setup` writes: the configuration from the template, the Default group's
domains, units and the logrotate file."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from lmsav import config
from lmsav.setup import mta as mta_mod
from lmsav.setup import steps, units
from lmsav.setup.answers import Answers
from lmsav.setup.manifest import Manifest


def context(tmp_path, **answers) -> steps.Context:
    return steps.Context(answers=Answers(**answers), manifest=Manifest(tmp_path / "m.json"),
                         lmsav="/usr/bin/lmsav", echo=lambda _text: None,
                         domains=["example.org"], admin="postmaster@example.org")


def test_config_is_the_template_with_this_servers_values(tmp_path):
    text = steps.config_text(context(tmp_path, reinject_port=10030, database="clamav"))
    data = tomllib.loads(text)
    assert data["spool"] == {"reinject": "smtp:127.0.0.1:10030",
                             "log_file": "/var/log/lmsav/spool.log"}
    assert data["daemon"] == {"socket_group": "lmsav"}
    assert data["paths"] == {"database": "/var/lib/clamav"}
    # Everything else stays the template's commented documentation.
    template = steps.TEMPLATE.read_text()
    assert len(text.splitlines()) == len(template.splitlines())
    path = tmp_path / "lmsav.toml"
    path.write_text(text)
    settings = config.load_settings(path, None)
    assert settings.spool.log_file == Path("/var/log/lmsav/spool.log")
    assert settings.database_dir() == Path("/var/lib/clamav")


class Installed:
    """An MTA of lmsav.setup.mta that is installed, whatever this machine has."""

    def __init__(self, cls, answers: Answers):
        self.mta = cls(answers)

    def __getattr__(self, name):
        return getattr(self.mta, name)

    def installed(self) -> bool:
        return True


@pytest.mark.parametrize("answers, listen", [
    ({}, "smtp:127.0.0.1:10025"),
    ({"transport": "lmtp", "listen_port": 10030}, "lmtp:127.0.0.1:10030"),
    ({"transport": "pipe"}, None),
    ({"postfix_mode": "milter"}, None),
])
def test_config_has_the_listener_postfix_hands_mail_to(tmp_path, answers, listen):
    ctx = context(tmp_path, **answers)
    ctx.mtas = [Installed(mta_mod.PostfixMta, ctx.answers)]
    text = steps.config_text(ctx)
    assert tomllib.loads(text)["spool"].get("listen") == ([listen] if listen else None)
    path = tmp_path / "lmsav.toml"
    path.write_text(text)
    assert config.load_settings(path, None).spool.listen == ((listen,) if listen else ())


def test_exim_after_the_queue_gets_the_listener_before_it_none(tmp_path):
    ctx = context(tmp_path)
    ctx.mtas = [Installed(mta_mod.EximMta, ctx.answers)]
    assert steps.spool_listen(ctx) == "smtp:127.0.0.1:10025"
    ctx = context(tmp_path, exim_mode="pre-queue")
    ctx.mtas = [Installed(mta_mod.EximMta, ctx.answers)]
    assert steps.spool_listen(ctx) == ""
    ctx.mtas = []  # no MTA: nothing hands lmsav mail over SMTP
    assert steps.spool_listen(ctx) == ""


def test_an_administrators_config_without_the_listener_is_kept_with_a_warning(tmp_path):
    said = []
    ctx = context(tmp_path)
    ctx.echo = said.append
    ctx.mtas = [Installed(mta_mod.PostfixMta, ctx.answers)]
    path = tmp_path / "lmsav.toml"
    path.write_text('[spool]\nlisten = ["smtp:127.0.0.1:2525"]\n')
    steps.check_spool_listen(ctx, config.load_settings(path, None))
    assert len(said) == 1 and '"smtp:127.0.0.1:2525"' in said[0]
    assert 'add it (listen = ["smtp:127.0.0.1:10025"])' in said[0]
    path.write_text('[spool]\nlisten = ["smtp:127.0.0.1:2525", "smtp:127.0.0.1:10025"]\n')
    steps.check_spool_listen(ctx, config.load_settings(path, None))
    assert len(said) == 1


def test_bundled_database_and_other_service_user(tmp_path):
    data = tomllib.loads(steps.config_text(context(tmp_path, user="avscan")))
    assert data["paths"] == {}  # the bundled database: nothing to say
    assert data["daemon"] == {"socket_group": "avscan", "user": "avscan"}


def test_set_key_adds_missing_keys_and_sections():
    text = "[spool]\n# other = 1\n"
    assert steps.set_key(text, "spool", "dir", '"/x"') == '[spool]\ndir = "/x"\n# other = 1\n'
    assert tomllib.loads(steps.set_key(text, "new", "k", "1"))["new"] == {"k": 1}


def test_groups_file_sets_domains_and_admin(tmp_path):
    data = tomllib.loads(steps.groups_text(context(tmp_path)))
    assert data == {"protected_domains": ["example.org"],
                    "admin_addresses": ["postmaster@example.org"]}
    ctx = context(tmp_path)
    ctx.domains = []
    assert tomllib.loads(steps.groups_text(ctx))["protected_domains"] == []


def test_units_run_the_given_executable():
    made = units.units("/opt/lmsav/bin/lmsav", "lmsav", "lmsav")
    assert "ExecStart=/opt/lmsav/bin/lmsav daemon --foreground" in made[units.DAEMON_UNIT]
    spool = made[units.SPOOL_UNIT]
    assert "User=lmsav" in spool and "ExecStart=/opt/lmsav/bin/lmsav spool watch" in spool
    commands = units.start_commands("/opt/lmsav/bin/lmsav", "lmsav", steps.SPOOL_LOG)
    assert commands[0] == "/opt/lmsav/bin/lmsav daemon --detach"
    assert "runuser -u lmsav -- /opt/lmsav/bin/lmsav spool watch" in commands[1]


def test_logrotate_file():
    text = steps.logrotate_text("lmsav")
    assert text.count("{") == 1 and "/var/log/lmsav/*.log" in text
    assert "su lmsav lmsav" in text and "create 0640 lmsav lmsav" in text


def test_write_file_keeps_what_the_administrator_has(tmp_path):
    ctx = context(tmp_path)
    target = tmp_path / "etc" / "thing.conf"
    target.parent.mkdir()
    target.write_text("admin's\n")
    uid, gid = (Path(tmp_path).stat().st_uid, Path(tmp_path).stat().st_gid)
    assert steps.write_file(ctx, target, "lmsav's\n", 0o644, uid, gid).startswith("kept")
    assert target.read_text() == "admin's\n"
    assert ctx.manifest.get(f"file:{target}")["created"] is False
    fresh = tmp_path / "etc" / "new.conf"
    assert steps.write_file(ctx, fresh, "one\n", 0o640, uid, gid) == f"wrote {fresh}"
    assert steps.write_file(ctx, fresh, "one\n", 0o640, uid, gid).endswith("is up to date")
    assert fresh.stat().st_mode & 0o777 == 0o640
    # Ours and untouched: a newer template replaces it; edited: kept.
    assert steps.write_file(ctx, fresh, "two\n", 0o640, uid, gid) == f"wrote {fresh}"
    fresh.write_text("edited\n")
    assert steps.write_file(ctx, fresh, "three\n", 0o640, uid, gid).startswith("kept")
    assert fresh.read_text() == "edited\n"
