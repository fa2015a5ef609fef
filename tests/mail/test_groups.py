"""groups.d as an administrator writes it: matching, priorities, fallback, errors, round trip."""

from __future__ import annotations

import dataclasses
import re
import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest

from lmsav.config import ConfigError, _toml_value
from lmsav.mail import groups as groups_mod
from lmsav.mail.groups import (
    ACTIONS,
    STATUSES,
    GroupPolicy,
    Groups,
    describe,
    groups_dir,
    load_groups,
    match_address,
    match_pattern,
    summary_rows,
)
from lmsav.scanner.limits import Limits

REPO = Path(__file__).resolve().parents[2]
MAN_PAGE = REPO / "man" / "lmsav-groups.5"


@pytest.fixture
def gdir(tmp_path):
    directory = tmp_path / "groups.d"
    directory.mkdir()
    return directory


def write(directory: Path, name: str, text: str) -> Path:
    path = directory / f"{name}.toml"
    path.write_text(text)
    return path


# -- patterns ------------------------------------------------------------------------------------

@pytest.mark.parametrize("pattern, text, expected", [
    ("*.exe", "INVOICE.PDF.EXE", True),
    ("*.exe", "invoice.exe.pdf", False),
    ("Worm.*", "worm.Mydoom.M", True),
    ("re:.*mydoom.*", "Win.Worm.MyDoom-1", True),
    ("re:mydoom", "Win.Worm.MyDoom-1", False),  # fullmatch, not search
    ("re:win\\.worm\\..*", "Win.Worm.Netsky", True),
    ("application/x-*exec", "application/x-dosexec", True),
])
def test_match_pattern_is_whole_text_and_ignores_case(pattern, text, expected):
    assert match_pattern(pattern, text) is expected


@pytest.mark.parametrize("pattern, address, expected", [
    ("user@example.com", "User@Example.COM", True),
    ("user@example.com", "<user@example.com>", True),
    ("user@example.com", "other@example.com", False),
    ("*@example.com", "a@example.com", True),
    ("*@example.com", "a@mx.example.com", False),
    ("*@*.example.com", "a@mx.example.com", True),
    ("*@*.example.com", "a@example.com", False),
    ("*.example.com", "a@example.com", True),  # bare *.domain: the domain itself …
    ("*.example.com", "a@mx.EXAMPLE.com", True),  # … and its subdomains
    ("*.example.com", "a@badexample.com", False),
    ("example.com", "a@example.com", True),
    ("example.com", "a@mx.example.com", False),
    ("re:(sales|info)@example\\.(com|org)", "Info@example.org", True),
    ("re:(sales|info)@example\\.(com|org)", "xinfo@example.org", False),
    ("*", "", True),  # the null sender
    ("*", "<>", True),
    ("*@example.com", "", False),
])
def test_address_patterns(pattern, address, expected):
    assert match_address(pattern, address) is expected


# -- resolution ----------------------------------------------------------------------------------

@pytest.fixture
def company(gdir):
    write(gdir, "sales", 'priority = 10\nrecipients = ["*@sales.example.com"]\n'
                         'infected_action = "drop"\n')
    write(gdir, "vip", 'priority = 20\nrecipients = ["boss@sales.example.com", "ceo@example.com"]\n'
                       'infected_action = "cure"\n')
    write(gdir, "partners", 'priority = 10\nsenders = ["*.partner.org"]\n'
                            'recipients = ["*.example.com"]\nfiltered_action = "skip"\n')
    write(gdir, "outbound", 'priority = 5\nsenders = ["re:.*@(mx\\\\.)?example\\\\.com"]\n'
                            'protected_action = "reject"\n')
    return load_groups(gdir)


def test_groups_are_tried_by_priority_then_name(company):
    assert [g.name for g in company.groups] == ["vip", "partners", "sales", "outbound"]
    assert [row["name"] for row in summary_rows(company)] == [
        "vip", "partners", "sales", "outbound", "default"]


def test_the_highest_priority_matching_group_wins(company):
    assert company.resolve("x@y.net", "boss@sales.example.com").name == "vip"
    assert company.resolve("x@y.net", "anne@sales.example.com").name == "sales"
    # partners and sales both match at priority 10: ties are broken by name.
    assert company.resolve("a@mail.partner.org", "anne@sales.example.com").name == "partners"


def test_sender_and_recipient_must_both_match(company):
    assert company.resolve("a@partner.org", "bob@example.com").name == "partners"
    assert company.resolve("a@elsewhere.org", "bob@example.com").name == "default"
    assert company.resolve("a@partner.org", "bob@elsewhere.org").name == "default"
    assert company.resolve("me@mx.example.com", "you@gmail.com").name == "outbound"


def test_no_match_falls_back_to_the_default_group(company):
    policy = company.resolve("a@b.c", "d@e.f")
    assert policy is company.default
    assert policy.name == "default"


def test_keys_a_group_does_not_set_fall_back_to_the_default_group(gdir):
    write(gdir, "default", 'suspicious_action = "warn"\nadmin_addresses = ["pm@example.com"]\n')
    write(gdir, "strict", 'priority = 1\nrecipients = ["*@example.com"]\n'
                          'infected_action = "drop"\n')
    groups = load_groups(gdir)
    strict = groups.resolve("", "a@example.com")
    assert strict.name == "strict"
    assert strict.infected_action == "drop"  # its own
    assert strict.suspicious_action == "warn"  # the administrator's default
    assert strict.admin_addresses == ("pm@example.com",)
    assert strict.filtered_action == "warn"  # the shipped default
    assert strict.sources["infected_action"] == str(gdir / "strict.toml")
    assert strict.sources["suspicious_action"] == str(gdir / "default.toml")
    assert strict.sources["filtered_action"].endswith("lmsav/data/groups.d/default.toml")


def test_split_groups_recipients_in_order_of_first_appearance(company):
    parts = company.split("x@y.net", ["a@sales.example.com", "z@other.net",
                                      "boss@sales.example.com", "b@sales.example.com",
                                      "w@other.net"])
    assert [(policy.name, rcpts) for policy, rcpts in parts] == [
        ("sales", ["a@sales.example.com", "b@sales.example.com"]),
        ("default", ["z@other.net", "w@other.net"]),
        ("vip", ["boss@sales.example.com"]),
    ]
    assert company.split("x@y.net", []) == []


def test_per_group_limits_override_the_global_ones(gdir):
    write(gdir, "fast", 'max_file_size = "10M"\nmax_scan_time = "30s"\n')
    fast = load_groups(gdir).get("fast")
    limits = fast.limits(Limits(max_scan_depth=7))
    assert limits.max_file_size == 10 << 20
    assert limits.max_scan_time == 30.0
    assert limits.max_scan_depth == 7  # "" in the default: the global value
    assert fast.action("infected") == "reject"


# -- protected domains ---------------------------------------------------------------------------

@pytest.mark.parametrize("domains, sender, recipients, expected", [
    ([], "a@anything.net", ["b@else.org"], True),  # no list: everything is protected
    (["example.com"], "a@x.net", ["b@y.org", "c@EXAMPLE.com"], True),
    (["example.com"], "a@example.com", ["b@y.org"], True),  # the sender counts too
    (["example.com"], "a@x.net", ["b@mx.example.com"], False),
    (["*.example.com"], "a@x.net", ["b@mx.example.com"], True),
    (["*.example.com"], "a@x.net", ["b@example.com"], True),
    (["*.example.com"], "", ["b@y.org"], False),
    (["re:mail[0-9]+\\.example\\.net"], "a@x.net", ["b@mail12.example.net"], True),
    (["re:mail[0-9]+\\.example\\.net"], "a@x.net", ["b@mailx.example.net"], False),
])
def test_protected_domains(gdir, domains, sender, recipients, expected):
    write(gdir, "default", f"protected_domains = {_toml_value(domains)}\n"
                           f'unprotected = "scan"\n')
    groups = load_groups(gdir)
    assert groups.unprotected == "scan"
    assert groups.is_protected(sender, recipients) is expected


def test_by_default_everything_is_protected_and_unprotected_mail_would_pass():
    groups = load_groups(None)
    assert groups.protected_domains == () and groups.unprotected == "skip"
    assert groups.is_protected("", ["x@y.z"])


# -- the default group ---------------------------------------------------------------------------

def test_shipped_default_file_sets_every_key_to_the_tables_default():
    shipped = groups_mod.shipped_groups_dir() / "default.toml"
    data = tomllib.loads(shipped.read_text())
    expected = set(groups_mod.SPECS) - set(groups_mod.MATCH_KEYS) | set(groups_mod.TOP_LEVEL)
    assert set(data) == expected
    groups = load_groups(None)
    assert groups.default == GroupPolicy("default")
    assert groups.groups == []


def test_user_default_overrides_the_shipped_default_key_by_key(gdir):
    write(gdir, "default", '[subject_prefix]\ninfected = "[VIRUS] "\n')
    default = load_groups(gdir).default
    assert default.subject_prefix == {"infected": "[VIRUS] "}
    assert default.infected_action == "reject"  # untouched keys keep the shipped values
    assert default.sources["subject_prefix"] == str(gdir / "default.toml")
    assert default.sources["infected_action"].endswith("lmsav/data/groups.d/default.toml")
    assert default.sources["name"] == str(gdir / "default.toml")


def test_a_missing_directory_means_only_the_shipped_default(tmp_path):
    assert load_groups(tmp_path / "missing") == load_groups(None)
    assert groups_dir(tmp_path / "lmsav.toml") == tmp_path / "groups.d"


def test_name_inside_may_repeat_the_file_name_and_other_files_are_ignored(gdir):
    write(gdir, "a", 'name = "a"\n')
    (gdir / "notes.txt").write_text("not a group")
    (gdir / ".b.toml").write_text("garbage = [")
    assert load_groups(gdir).names() == ["a", "default"]


def test_policies_are_hashable_and_compare_without_sources(gdir):
    write(gdir, "a", '[subject_prefix]\nsuspicious = "[?] "\n')
    a = load_groups(gdir).get("a")
    assert hash(a) == hash(dataclasses.replace(a, sources={}))
    assert a == dataclasses.replace(a, sources={})


# -- errors --------------------------------------------------------------------------------------

ACTION_LIST = '"skip" or "warn" or "drop" or "reject" or "cure" or "delete"'
BAD_FILES = [
    # (file stem, text, message after "<file>: ", what is allowed)
    ("g", 'infected_action = "bounce"\n', 'infected_action = "bounce"', ACTION_LIST),
    ("g", "infected_action = 1\n", "infected_action = 1", ACTION_LIST),
    ("g", 'uncurable_action = "cure"\n', 'uncurable_action = "cure"',
     '"skip" or "warn" or "drop" or "reject" or "delete"'),
    ("g", 'virus_name_action = "quarantine"\n', 'virus_name_action = "quarantine"', ACTION_LIST),
    ("g", 'senders = ["re:(unclosed"]\n', 'senders = ["re:(unclosed"]',
     '"re:(unclosed" is not a valid regular expression: missing ), unterminated subpattern'),
    ("g", 'recipients = "*@example.com"\n', 'recipients = "*@example.com"',
     "a list of address patterns"),
    ("g", 'recipients = ["", "a@b"]\n', 'recipients = ["", "a@b"]', "a list of address patterns"),
    ("g", 'virus_name_list = ["re:*worm"]\n', 'virus_name_list = ["re:*worm"]',
     '"re:*worm" is not a valid regular expression: nothing to repeat'),
    ("g", 'priority = "high"\n', 'priority = "high"', "an integer"),
    ("g", "priority = 1.5\n", "priority = 1.5", "an integer"),
    ("g", 'scan_policy = "parts"\n', 'scan_policy = "parts"', '"message" or "combined"'),
    ("g", "max_scan_depth = -1\n", "max_scan_depth = -1",
     'an integer >= 0; or "" for the global [limits] value'),
    ("g", 'max_file_size = "10X"\n', 'max_file_size = "10X"', "a size like 25M"),
    ("g", 'max_scan_time = "soon"\n', 'max_scan_time = "soon"', "a number of seconds"),
    ("g", 'filter_max_size = "big"\n', 'filter_max_size = "big"', "a size like 25M"),
    ("g", 'add_headers = "yes"\n', 'add_headers = "yes"', "true or false"),
    ("g", 'notify_admin = ["infected", "virus"]\n', 'notify_admin = ["infected", "virus"]',
     'a list of statuses from "infected", "suspicious", "protected", "corrupted", "error", '
     '"filtered"'),
    ("g", 'backup = "infected"\n', 'backup = "infected"', "a list of statuses"),
    ("g", "[subject_prefix]\nvirus = \"[V] \"\n", 'subject_prefix = { virus = "[V] " }',
     'a table of status = "prefix"'),
    ("g", 'subject_prefix = "[V] "\n', 'subject_prefix = "[V] "', 'a table of status = "prefix"'),
    ("g", 'reject_reply = "rejected"\n', 'reject_reply = "rejected"', "an SMTP reply"),
    ("g", 'reject_reply = "250 ok"\n', 'reject_reply = "250 ok"', "a 4xx or 5xx code"),
    ("g", 'admin_addresses = ["Post Master <pm@x>"]\n',
     'admin_addresses = ["Post Master <pm@x>"]', "a list of mail addresses"),
    ("g", 'notice_from = ""\n', 'notice_from = ""', "a mail address"),
    ("g", 'templates_dir = "templates"\n', 'templates_dir = "templates"', "an absolute path"),
    ("g", 'name = "other"\n', 'name = "other"', 'expected "g", the file\'s name'),
    ("g", 'infected_acton = "drop"\n', 'unknown key infected_acton = "drop"',
     "did you mean infected_action?"),
    ("g", "zzzz = 1\n", "unknown key zzzz = 1", "keys are priority, senders, recipients"),
    ("g", '[limits]\nmax_scan_depth = 3\n', "unknown key limits = { max_scan_depth = 3 }",
     "keys are"),
    ("g", 'protected_domains = ["example.com"]\n', 'protected_domains = ["example.com"]',
     "expected only in default.toml"),
    ("g", 'unprotected = "scan"\n', 'unprotected = "scan"', "expected only in default.toml"),
    ("default", 'protected_domains = ["*@example.com"]\n',
     'protected_domains = ["*@example.com"]',
     'a list of domain patterns like ["example.com", "*.example.org", "re:..."]; '
     '"*@example.com" is an address, not a domain'),
    ("default", 'protected_domains = ["re:[a-"]\n', 'protected_domains = ["re:[a-"]',
     "not a valid regular expression: unterminated character set"),
    ("default", 'unprotected = "pass"\n', 'unprotected = "pass"', '"skip" or "scan"'),
    ("default", 'senders = ["*@x"]\n', 'senders = ["*@x"]',
     "expected no senders in default.toml; the default group applies when no other"),
    ("default", "priority = 3\n", "priority = 3", "expected no priority in default.toml"),
    ("default", 'unprotectd = "scan"\n', 'unknown key unprotectd = "scan"',
     "did you mean unprotected?"),
    ("g", 'infected_action = "drop"\ninfected_action = "skip"\n', "invalid TOML", "line 2"),
    ("g", "infected_action = \n", "invalid TOML", "line 1"),
    ("bad name", "", 'group name "bad name"', "expected a file name of letters, digits"),
]


@pytest.mark.parametrize("stem, text, named, allowed", BAD_FILES,
                         ids=[f"{stem}:{named}" for stem, _, named, _ in BAD_FILES])
def test_every_mistake_names_file_key_value_and_what_is_allowed(gdir, stem, text, named,
                                                                allowed):
    path = write(gdir, stem, text)
    with pytest.raises(ConfigError) as caught:
        load_groups(gdir)
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith(f"{path}: {named}"), message
    assert allowed in message, message


def test_a_groups_directory_that_is_a_file(tmp_path):
    path = tmp_path / "groups.d"
    path.write_text("")
    with pytest.raises(ConfigError, match=f"^{re.escape(str(path))}: not a directory$"):
        load_groups(path)


def test_every_action_and_status_is_accepted(gdir):
    for action in ACTIONS:
        write(gdir, "g", f'infected_action = "{action}"\nnotify_sender = {_toml_value(STATUSES)}\n'
                         f"subject_prefix = {_toml_value(dict.fromkeys(STATUSES, 'x'))}\n")
        assert load_groups(gdir).get("g").infected_action == action


# -- writing it back -----------------------------------------------------------------------------

def test_describe_round_trips_as_toml(gdir, tmp_path):
    write(gdir, "default", 'admin_addresses = ["pm@example.com"]\nmax_scan_depth = 4\n')
    write(gdir, "vip", 'priority = -3\nsenders = ["re:.*@(a|b)\\\\.org", "*.example.com"]\n'
                       'recipients = ["ceo@example.com"]\nscan_policy = "combined"\n'
                       'max_file_size = 1000\nmax_scan_time = 1.5\nreject_reply = '
                       '"554 5.7.1 No \\"thanks\\" ($threats)"\n'
                       f'templates_dir = "{tmp_path}/tpl"\n'
                       '[subject_prefix]\ninfected = "[VIRUS] "\nfiltered = "[F\u00e9] "\n')
    original = load_groups(gdir)
    again_dir = tmp_path / "again"
    again_dir.mkdir()
    for policy in [original.default, *original.groups]:
        shown = describe(policy)
        tomllib.loads(shown)
        write(again_dir, policy.name, shown)
        commented = describe(policy, sources=True)
        assert tomllib.loads(commented) == tomllib.loads(shown)
    again = load_groups(again_dir)
    assert again.default == original.default
    assert again.groups == original.groups
    assert [describe(p) for p in again.groups] == [describe(p) for p in original.groups]
    vip = describe(original.get("vip"), sources=True).splitlines()
    assert f'scan_policy = "combined"  # from {gdir / "vip.toml"}' in vip
    assert f"max_scan_depth = 4  # from {gdir / 'default.toml'}" in vip
    assert "max_file_size = 1000  # from " + str(gdir / "vip.toml") in vip


def test_summary_rows(company, gdir):
    rows = summary_rows(company)
    assert rows[0] == {"name": "vip", "priority": 20, "senders": ["*"],
                       "recipients": ["boss@sales.example.com", "ceo@example.com"],
                       "file": str(gdir / "vip.toml"), "default": False}
    assert rows[-1]["name"] == "default" and rows[-1]["default"] is True
    assert rows[-1]["file"].endswith("lmsav/data/groups.d/default.toml")


def test_groups_compare_by_value():
    assert Groups(GroupPolicy("default"), []) == load_groups(None)


# -- the man page --------------------------------------------------------------------------------

def test_man_page_documents_every_key_and_its_default():
    text = MAN_PAGE.read_text().replace("\\-", "-").replace("\\(dq", '"').replace("\\&", "")
    for key, spec in groups_mod.SPECS.items():
        assert f'.BI "{key} = "' in text, key
        default = groups_mod.toml_text(spec.kind.dump(spec.default()))
        if key == "no_sender_notice":
            default = '["*Eicar*", "Worm.*"'
        assert f"Default: {default}" in text, key
    for key in groups_mod.TOP_LEVEL:
        assert f'.BI "{key} = "' in text, key
    for action in ACTIONS:
        assert f".B {action}" in text


def test_man_page_examples_are_valid_groups(gdir):
    text = MAN_PAGE.read_text()
    examples = text.split(".SH EXAMPLES", 1)[1].split(".SH ", 1)[0]
    files = re.findall(r"\.I groups\.d/(\w+)\.toml\n.*?\.nf\n(.*?)\.fi\n", examples, re.S)
    assert len(files) >= 2
    for name, body in files:
        write(gdir, name, body.replace("\\-", "-").replace("\\e", "\\"))
    groups = load_groups(gdir)
    assert len(groups.groups) == len(files) - any(name == "default" for name, _ in files)


@pytest.mark.skipif(shutil.which("groff") is None, reason="groff not installed")
def test_man_page_renders_without_warnings():
    proc = subprocess.run(["groff", "-man", "-ww", "-Tutf8", str(MAN_PAGE)],
                          capture_output=True, text=True)
    assert proc.returncode == 0
    assert proc.stderr == ""
