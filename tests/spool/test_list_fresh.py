"""`lmsav spool list` (and show/delete) by a person who has set nothing up: their spool does
not exist yet, which is an empty spool, not an error."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from lmsav import paths
from lmsav.cli import main
from tests.jsonlines import records


@pytest.fixture
def fresh_person(tmp_path, monkeypatch):
    """A person's process (whoever runs the tests) with a new HOME and XDG directories."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setattr(paths, "layout", lambda env=None, euid=None: paths.PERSONAL)
    monkeypatch.delenv("LMSAV_CONFIG", raising=False)
    monkeypatch.delenv("XDG_RUNTIME_DIR", raising=False)
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(home / ".config"))
    monkeypatch.setenv("XDG_STATE_HOME", str(home / ".local" / "state"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(home / ".cache"))
    return home


def _lmsav(*args):
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def test_a_fresh_person_lists_an_empty_spool(fresh_person):
    spool = fresh_person / ".local" / "state" / "lmsav" / "nqueue"
    assert not spool.exists()

    text = _lmsav("spool", "list")
    assert text.exit_code == 0, text.output
    assert text.output == "spool is empty\n"

    as_json = _lmsav("spool", "list", "--json")
    assert as_json.exit_code == 0, as_json.output
    assert as_json.stdout == ""  # JSON Lines: no entries, no lines

    assert not spool.exists()  # looking creates nothing


def test_a_spool_with_some_directories_missing_lists_what_is_there(fresh_person):
    from lmsav.mail.envelope import Envelope
    from lmsav.spool.nqueue import Spool

    root = fresh_person / ".local" / "state" / "lmsav" / "nqueue"
    spool = Spool(root)
    spool.ensure()
    entry_id = spool.enqueue(Envelope("ann@example.org", ("bob@example.org",)), b"Subject: x\n\n")
    (root / "work").rmdir()
    (root / "hold").rmdir()

    result = _lmsav("spool", "list", "--json")
    assert result.exit_code == 0, result.output
    assert [(e["id"], e["state"]) for e in records(result.stdout)] == [(entry_id, "new")]


def test_show_and_delete_in_a_fresh_spool_name_the_missing_entry(fresh_person):
    for command in ("show", "delete"):
        result = CliRunner().invoke(main, ["spool", command, f"{0:019d}.1.0000abcd"])
        assert result.exit_code == 2
        assert "no spool entry" in result.output, result.output
        assert "cannot read spool directory" not in result.output
