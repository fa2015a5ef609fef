"""A group file edited as a form would: read as text, checked as the loader checks, written
atomically, and groups.d still loading afterwards."""

from __future__ import annotations

import os
import stat
import tomllib
from pathlib import Path

import pytest
from click.testing import CliRunner

from lmsav.cli import main
from lmsav.config import ConfigError
from lmsav.mail import group_files as gf
from lmsav.mail.groups import SPECS, TOP_LEVEL, describe, load_groups


@pytest.fixture
def gdir(tmp_path):
    directory = tmp_path / "etc" / "groups.d"
    directory.mkdir(parents=True)
    return directory


def write(directory: Path, name: str, text: str) -> Path:
    path = directory / f"{name}.toml"
    path.write_text(text)
    return path


SALES = ('priority = 10\nrecipients = ["*@sales.example.com"]\ninfected_action = "drop"\n'
         'subject_prefix = { infected = "[VIRUS] " }\nmax_file_size = "25M"\n')


# -- the form's shape ----------------------------------------------------------------------------

def test_every_key_of_a_group_file_is_in_one_section():
    keys = [key for _title, section in gf.SECTIONS for key in section]
    assert len(keys) == len(set(keys))
    assert set(keys) == set(SPECS) | set(TOP_LEVEL)


def test_default_group_has_no_match_keys_and_others_no_top_level_keys():
    assert not {"priority", "senders", "recipients"} & set(gf.editable_keys("default"))
    assert "protected_domains" in gf.editable_keys("default")
    assert not set(TOP_LEVEL) & set(gf.editable_keys("sales"))
    assert gf.editable_keys("sales")[:3] == ["priority", "senders", "recipients"]


def test_choices_are_those_the_loader_allows():
    assert gf.choices("infected_action") == ("skip", "warn", "drop", "reject", "cure", "delete",
                                             "hold")
    assert "cure" not in gf.choices("uncurable_action")
    assert gf.choices("scan_policy") == ("message", "combined")
    assert gf.choices("reject_reply") == () and gf.choices("senders") == ()


@pytest.mark.parametrize("key, text, raw", [
    ("recipients", " a@x.org \r\n\r\n*.x.com\n", ["a@x.org", "*.x.com"]),
    ("recipients", "", []),
    ("priority", "-5", -5),
    ("priority", "ten", "ten"),
    ("max_file_size", "25M", "25M"),
    ("max_file_size", "1024", 1024),
    ("max_file_size", '""', ""),
    ("max_file_size", "", ""),
    ("add_headers", "False", False),
    ("subject_prefix", '{ infected = "[V] " }', {"infected": "[V] "}),
    ("subject_prefix", "", {}),
    ("reject_reply", "550 5.7.1 no ($threats)", "550 5.7.1 no ($threats)"),
    ("templates_dir", '""', ""),
    ("infected_action", ' "drop" ', "drop"),
])
def test_form_text_becomes_the_value_a_file_holds(key, text, raw):
    assert gf.raw_value(key, text) == raw


def test_form_text_round_trips_every_value_of_a_full_group(gdir):
    # describe() writes every key: read back as text and turned into values again, each is
    # what the file holds
    write(gdir, "sales", SALES)
    full = describe(load_groups(gdir).get("sales"))
    write(gdir, "sales", full)
    document = tomllib.loads(full)
    group = gf.read_group(gdir, "sales")
    for key in group.keys:
        assert gf.raw_value(key, group.own[key]) == document[key], key


# -- reading -------------------------------------------------------------------------------------

def test_read_group_separates_own_and_inherited_values(gdir):
    write(gdir, "default", 'infected_action = "warn"\n')
    write(gdir, "sales", SALES + 'name = "sales"\nbogus = 1\n')
    group = gf.read_group(gdir, "sales")
    assert group.exists and group.digest and not group.is_default
    assert group.own == {"priority": "10", "recipients": "*@sales.example.com",
                         "infected_action": "drop",
                         "subject_prefix": '{ infected = "[VIRUS] " }',
                         "max_file_size": "25M"}
    assert group.inherited["infected_action"] == "warn"  # the administrator's default.toml
    assert group.inherited["senders"] == "*" and group.inherited["priority"] == "0"
    assert group.value("suspicious_action") == "reject"
    assert group.unknown == {"bogus": "1"}
    assert "unknown key bogus" in group.problem  # groups.d does not load as it is


def test_read_default_group_without_a_file_inherits_the_shipped_values(gdir):
    group = gf.read_group(gdir, "default")
    assert not group.exists and group.own == {} and group.digest == ""
    assert group.inherited["protected_domains"] == "" and group.inherited["unprotected"] == "skip"
    assert group.inherited["notify_admin"] == "infected\nsuspicious"


@pytest.mark.parametrize("name, message", [
    ("nope", "no group \"nope\""),
    ("../x", "group name \"../x\": expected letters"),
    (".hidden", "group name \".hidden\""),
    ("a/b", "group name \"a/b\""),
    ("x" * 65, "at most 64"),
])
def test_read_group_refuses_missing_groups_and_bad_names(gdir, name, message):
    with pytest.raises(gf.GroupFileError, match=message.replace(".", r"\.")):
        gf.read_group(gdir, name)


def test_read_group_refuses_a_file_that_is_not_toml(gdir):
    write(gdir, "sales", "priority = = 1\n")
    with pytest.raises(gf.GroupFileError, match="invalid TOML"):
        gf.read_group(gdir, "sales")


# -- the same check as the loader ----------------------------------------------------------------

@pytest.mark.parametrize("key, text, file_value", [
    ("priority", "ten", '"ten"'),
    ("priority", "1.5", "1.5"),
    ("recipients", "a@x.org\nre:(", '["a@x.org", "re:("]'),
    ("infected_action", "rejct", '"rejct"'),
    ("uncurable_action", "cure", '"cure"'),
    ("reject_reply", "hello", '"hello"'),
    ("notice_from", "a b@x", '"a b@x"'),
    ("max_file_size", "lots", '"lots"'),
    ("max_scan_time", "-1", "-1"),
    ("add_headers", "maybe", '"maybe"'),
    ("subject_prefix", '{ bogus = "x" }', '{ bogus = "x" }'),
    ("subject_prefix", "infected =", '"infected ="'),
    ("notify_sender", "infectd", '["infectd"]'),
    ("admin_addresses", "<a@x>", '["<a@x>"]'),
    ("templates_dir", "relative/dir", '"relative/dir"'),
])
def test_a_refused_value_gets_the_loaders_own_message(gdir, key, text, file_value):
    path = write(gdir, "sales", f"{key} = {file_value}\n")
    with pytest.raises(ConfigError) as loaded:
        load_groups(gdir)
    path.unlink()
    _document, errors = gf.check_group(gdir, "sales", {key: text})
    assert errors == {key: str(loaded.value)}


def test_keys_a_file_may_not_hold_get_the_loaders_message(gdir):
    _doc, errors = gf.check_group(gdir, "sales", {"protected_domains": "example.com"})
    assert "expected only in default.toml" in errors["protected_domains"]
    _doc, errors = gf.check_group(gdir, "default", {"senders": "*"})
    assert "expected no senders in default.toml" in errors["senders"]
    _doc, errors = gf.check_group(gdir, "sales", {"infected_actoin": "drop"})
    assert "did you mean infected_action?" in errors["infected_actoin"]
    assert str(gdir / "sales.toml") in errors["infected_actoin"]


def test_every_refused_key_is_reported_at_once(gdir):
    _doc, errors = gf.check_group(gdir, "sales", {"priority": "x", "infected_action": "y",
                                                  "senders": "*"})
    assert set(errors) == {"priority", "infected_action"}


# -- from a submitted form -----------------------------------------------------------------------

def test_fields_from_form(gdir):
    write(gdir, "sales", SALES)
    group = gf.read_group(gdir, "sales")
    fields, errors = gf.fields_from_form(group, {
        "recipients": "*@sales.example.com\n*@shop.example.com",  # changed
        "inherit_infected_action": "on", "infected_action": "drop",  # back to the default
        "inherit_suspicious_action": "on", "suspicious_action": "",  # stays the default
        "notify_recipients": "",  # unticked and empty: no notices to recipients
        "csrf_token": "x", "name": "sales",
    })
    assert errors == {}
    assert fields == {"priority": "10", "recipients": "*@sales.example.com\n*@shop.example.com",
                      "subject_prefix": '{ infected = "[VIRUS] " }', "max_file_size": "25M",
                      "notify_recipients": ""}


def test_a_ticked_default_with_a_new_value_is_refused_not_guessed(gdir):
    write(gdir, "sales", SALES)
    group = gf.read_group(gdir, "sales")
    _fields, errors = gf.fields_from_form(group, {"inherit_infected_action": "on",
                                                  "infected_action": "warn"})
    assert "both the default and a value" in errors["infected_action"]
    _fields, errors = gf.fields_from_form(group, {"inherit_error_action": "on",
                                                  "error_action": "skip"})
    assert "error_action" in errors
    # the default's own value beside the ticked box, as a form shows it: no contradiction
    fields, errors = gf.fields_from_form(group, {"inherit_error_action": "on",
                                                 "error_action": "reject"})
    assert errors == {} and "error_action" not in fields


# -- writing -------------------------------------------------------------------------------------

def test_save_writes_a_file_the_loader_reads_and_groups_which_follows(gdir, tmp_path,
                                                                      monkeypatch):
    config = gdir.parent / "lmsav.toml"
    config.write_text(f'[paths]\nstate_dir = "{tmp_path / "state"}"\n')
    monkeypatch.setenv("LMSAV_CONFIG", str(config))
    write(gdir, "sales", SALES)
    runner = CliRunner()

    def which(rcpt):
        result = runner.invoke(main, ["groups", "which", "-f", "a@b.c", "-r", rcpt])
        assert result.exit_code == 0, result.output
        return result.output.strip()

    assert which("x@shop.example.com") == "x@shop.example.com: default"
    group = gf.read_group(gdir, "sales")
    fields, _ = gf.fields_from_form(group, {"recipients": "*@shop.example.com",
                                            "inherit_infected_action": "on"})
    result = gf.save_group(gdir, "sales", fields, expected_digest=group.digest)
    assert not result.created
    assert set(result.changed) == {"recipients", "infected_action"}
    loaded = load_groups(gdir).get("sales")
    assert loaded.recipients == ("*@shop.example.com",) and loaded.priority == 10
    assert loaded.infected_action == "reject" and loaded.max_file_size == 25 << 20
    assert dict(loaded.subject_prefix) == {"infected": "[VIRUS] "}
    assert which("x@shop.example.com") == "x@shop.example.com: sales"
    assert which("x@sales.example.com") == "x@sales.example.com: default"


def test_save_keeps_the_files_mode_and_leaves_no_temporary_file(gdir):
    path = write(gdir, "sales", SALES)
    os.chmod(path, 0o640)
    inode = path.stat().st_ino
    gf.save_group(gdir, "sales", {"priority": "3"})
    assert stat.S_IMODE(path.stat().st_mode) == 0o640
    assert path.stat().st_ino != inode  # replaced by a rename, not rewritten in place
    assert sorted(p.name for p in gdir.iterdir()) == ["sales.toml"]
    assert tomllib.loads(path.read_text()) == {"priority": 3}


def test_save_refuses_values_and_leaves_the_file_alone(gdir):
    path = write(gdir, "sales", SALES)
    with pytest.raises(gf.GroupFileError) as refused:
        gf.save_group(gdir, "sales", {"priority": "x", "recipients": "re:("})
    assert set(refused.value.errors) == {"priority", "recipients"}
    assert path.read_text() == SALES


def test_save_refuses_when_groups_d_would_not_load(gdir):
    write(gdir, "other", 'infected_action = "nope"\n')
    path = write(gdir, "sales", SALES)
    with pytest.raises(gf.GroupFileError) as refused:
        gf.save_group(gdir, "sales", {"priority": "3"})
    message = refused.value.errors[""]
    assert message.startswith(f"{gdir / 'other.toml'}: infected_action = \"nope\"")
    assert "lmsav-groups-check" not in message
    assert path.read_text() == SALES


def test_save_refuses_a_file_changed_since_it_was_read(gdir):
    path = write(gdir, "sales", SALES)
    group = gf.read_group(gdir, "sales")
    path.write_text(SALES + "priority2 = 1\n")
    with pytest.raises(gf.GroupFileError, match="was changed since it was read"):
        gf.save_group(gdir, "sales", {"priority": "3"}, expected_digest=group.digest)


def test_create_a_group_and_refuse_an_existing_one(gdir):
    result = gf.save_group(gdir, "shop", {"recipients": "*@shop.example.com",
                                          "priority": "7"}, create=True)
    assert result.created and result.path == gdir / "shop.toml"
    assert stat.S_IMODE(result.path.stat().st_mode) == 0o644
    assert load_groups(gdir).get("shop").priority == 7
    with pytest.raises(gf.GroupFileError, match="exists already"):
        gf.save_group(gdir, "shop", {"priority": "1"}, create=True)
    with pytest.raises(gf.GroupFileError, match="exists already"):
        gf.save_group(gdir, "default", {}, create=True)
    with pytest.raises(gf.GroupFileError, match="does not exist"):
        gf.save_group(gdir, "nothere", {"priority": "1"})


@pytest.mark.parametrize("name", ["../x", "../../etc/passwd", "a/b", ".x", "", "x\n"])
def test_no_name_escapes_groups_d(gdir, name):
    with pytest.raises(gf.GroupFileError, match="group name"):
        gf.save_group(gdir, name, {"priority": "1"}, create=True)
    with pytest.raises(gf.GroupFileError, match="group name"):
        gf.delete_group(gdir, name)
    assert list(gdir.iterdir()) == [] and sorted(p.name for p in gdir.parent.iterdir()) == [
        "groups.d"]


def test_the_default_group_is_written_to_its_own_file_created_with_groups_d(tmp_path):
    gdir = tmp_path / "etc" / "groups.d"  # no groups.d yet
    result = gf.save_group(gdir, "default", {"infected_action": "warn",
                                             "protected_domains": "example.com"})
    assert result.created and (gdir / "default.toml").is_file()
    groups = load_groups(gdir)
    assert groups.default.infected_action == "warn"
    assert groups.protected_domains == ("example.com",)


def test_unknown_keys_of_the_old_file_are_reported_as_dropped(gdir):
    write(gdir, "sales", 'priority = 1\nbogus = 2\n')
    result = gf.save_group(gdir, "sales", {"priority": "1"})
    assert result.dropped == ("bogus",)


def test_delete_a_group(gdir):
    path = write(gdir, "sales", SALES)
    group = gf.read_group(gdir, "sales")
    result = gf.delete_group(gdir, "sales", expected_digest=group.digest)
    assert not path.exists() and result.content == SALES
    assert load_groups(gdir).names() == ["default"]
    with pytest.raises(gf.GroupFileError, match="does not exist"):
        gf.delete_group(gdir, "sales")


def test_the_default_group_cannot_be_deleted(gdir):
    path = write(gdir, "default", 'infected_action = "warn"\n')
    with pytest.raises(gf.GroupFileError, match="cannot be deleted"):
        gf.delete_group(gdir, "default")
    assert path.exists()
