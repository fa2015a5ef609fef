"""lmsav.toml as an administrator writes it: defaults, profiles, layering, errors, round trip."""

from __future__ import annotations

import dataclasses
import re
import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest

from lmsav import config, paths
from lmsav.config import ConfigError, load_settings
from lmsav.scanner.limits import Limits
from lmsav.scanner.objects import Status

M, G = 1 << 20, 1 << 30
REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def write(tmp_path):
    def write(text: str, name: str = "lmsav.toml") -> Path:
        path = tmp_path / name
        path.write_text(text)
        return path

    return write


def limit_values(settings) -> dict:
    section = settings.limits_section
    return {f: getattr(section, f) for f in section.__dataclass_fields__}


# -- defaults and profiles ---------------------------------------------------------------------

def test_no_file_means_built_in_defaults_which_match_the_engines(tmp_path):
    for path in (None, tmp_path / "missing.toml"):
        settings = load_settings(path, None, {})
        assert settings.profile == "default_recommended"
        assert settings.limits() == Limits()
        assert settings.scan.scan_archives and settings.scan.scan_mail
        assert settings.scan.workers == 0 and settings.scan.max_dir_depth == 0
        assert settings.scan.exclude == () and settings.scan.include == ()
        assert not settings.scan.detect_corrupted and not settings.scan.detect_protected
        assert settings.paths.tmp_dir is None
        assert settings.paths.state_dir == paths.state_dir()
        assert settings.database_dir() == paths.bundled_database_dir()


def test_a_missing_file_is_an_error_when_asked_for_explicitly(tmp_path):
    missing = tmp_path / "missing.toml"
    with pytest.raises(ConfigError, match=f"^{re.escape(str(missing))}: no such file$"):
        load_settings(missing, None, {}, required=True)


def test_an_empty_file_is_valid(write):
    assert load_settings(write(""), None, {}, required=True) == load_settings(None, None, {})


PROFILES = {
    "default_recommended": dict(
        max_scan_depth=16, max_file_size=100 * M, max_scan_size=400 * M, max_files=10000,
        max_scan_time=120, max_compression_ratio=250, limit_status="error"),
    "high_overall_security": dict(
        max_scan_depth=32, max_file_size=512 * M, max_scan_size=2 * G, max_files=100000,
        max_scan_time=600, max_compression_ratio=1000, limit_status="suspicious"),
    "high_scan_speed": dict(
        max_scan_depth=5, max_file_size=25 * M, max_scan_size=100 * M, max_files=1000,
        max_scan_time=30, max_compression_ratio=100, limit_status="error"),
}
DETECT = {"default_recommended": False, "high_overall_security": True, "high_scan_speed": False}


@pytest.mark.parametrize("name", PROFILES)
def test_each_profile_sets_its_limits(name):
    settings = load_settings(None, name, {})
    assert settings.profile == name
    assert limit_values(settings) == PROFILES[name]
    assert settings.scan.detect_corrupted is DETECT[name]
    assert settings.scan.detect_protected is DETECT[name]
    assert settings.scan.scan_mail and settings.scan.scan_archives
    assert settings.sources["limits.max_scan_depth"] == f"profile {name}"


def test_profiles_are_really_different():
    shown = {name: load_settings(None, name, {}).to_toml() for name in config.profile_names()}
    assert sorted(shown) == sorted(PROFILES)
    assert len(set(shown.values())) == 3


def test_strict_profile_turns_limits_into_suspicious_for_the_engine():
    assert load_settings(None, "high_overall_security", {}).limits().limit_status \
        == Status.SUSPICIOUS
    assert load_settings(None, "high_scan_speed", {}).limits().limit_status == Status.ERROR


def test_default_recommended_profile_repeats_the_built_in_defaults():
    # The profile file and the table must not drift apart.
    values = tomllib.loads(config.profile_file("default_recommended").read_text())
    for section, table in values.items():
        for key, raw in table.items():
            spec = config.SPECS[f"{section}.{key}"]
            assert spec.kind.parse(raw) == spec.default(), spec.name


# -- layering: defaults < profile < file < command line ----------------------------------------

def test_file_overrides_its_profile(write):
    path = write('profile = "high_scan_speed"\n[limits]\nmax_scan_depth = 7\n')
    settings = load_settings(path, None, {})
    assert settings.profile == "high_scan_speed"
    assert settings.limits_section.max_scan_depth == 7
    assert settings.limits_section.max_file_size == 25 * M  # still the profile's
    assert settings.sources["profile"] == str(path)
    assert settings.sources["limits.max_scan_depth"] == str(path)
    assert settings.sources["limits.max_file_size"] == "profile high_scan_speed"


def test_command_line_profile_wins_over_the_files(write):
    path = write('profile = "high_scan_speed"\n')
    settings = load_settings(path, "high_overall_security", {})
    assert settings.profile == "high_overall_security"
    assert settings.sources["profile"] == "command line"
    assert settings.limits_section.max_scan_depth == 32


def test_command_line_overrides_the_file(write):
    path = write('[limits]\nmax_scan_depth = 7\nmax_file_size = "1G"\n'
                 '[scan]\nexclude = ["/proc"]\nworkers = 4\n')
    overrides = {"limits.max_scan_depth": 3, "limits.max_file_size": "25M",
                 "limits.max_scan_time": 2.5, "scan.exclude": ["*.iso", "/sys"],
                 "scan.scan_archives": False, "scan.workers": None}
    settings = load_settings(path, None, overrides)
    assert settings.limits_section.max_scan_depth == 3
    assert settings.limits_section.max_file_size == 25 * M
    assert settings.limits().max_scan_time == 2.5
    assert settings.scan.exclude == ("*.iso", "/sys")  # replaces, does not append
    assert settings.scan.scan_archives is False
    assert settings.scan.workers == 4  # None means "not given"
    assert settings.sources["limits.max_scan_depth"] == "command line"
    assert settings.sources["scan.workers"] == str(path)


def test_paths_section(write, tmp_path):
    path = write(f'[paths]\nstate_dir = "{tmp_path}/state"\nbases = "{tmp_path}/bases"\n'
                 f'tmp_dir = ""\n')
    settings = load_settings(path, None, {})
    assert settings.paths.state_dir == tmp_path / "state"
    assert settings.paths.tmp_dir is None
    assert settings.database_dir() == tmp_path / "bases"


# -- values --------------------------------------------------------------------------------------

@pytest.mark.parametrize("raw, size", [
    (0, 0), (512, 512), ("512", 512), ("25K", 25 << 10), ("25k", 25 << 10), ("25M", 25 * M),
    ("2G", 2 * G), ("1T", 1 << 40), ("25MB", 25 * M), ("25 MiB", 25 * M), ("64B", 64),
])
def test_sizes(write, raw, size):
    value = f'"{raw}"' if isinstance(raw, str) else raw
    settings = load_settings(write(f"[limits]\nmax_file_size = {value}\n"), None, {})
    assert settings.limits_section.max_file_size == size


@pytest.mark.parametrize("size, shown", [
    (100 * M, '"100M"'), (2 * G, '"2G"'), (3 << 10, '"3K"'), (0, "0"), (1000, "1000"),
    (1536, "1536"),  # not a whole number of K: stays in bytes
])
def test_sizes_are_shown_in_their_shortest_exact_form(size, shown):
    settings = load_settings(None, None, {"limits.max_file_size": size})
    assert f"max_file_size = {shown}\n" in settings.to_toml()


@pytest.mark.parametrize("raw, seconds", [
    ("30", 30.0), ("90s", 90.0), ("2m", 120.0), ("1h", 3600.0), ("1.5m", 90.0),
])
def test_durations(write, raw, seconds):
    path = write(f'[limits]\nmax_scan_time = "{raw}"\n')
    assert load_settings(path, None, {}).limits().max_scan_time == seconds


# Table of mistakes: (file text, the key and value as the message names them, what is allowed).
BAD_FILES = [
    ("[limits]\nmax_scan_depth = -1\n", "limits.max_scan_depth = -1", "an integer >= 0"),
    ("[limits]\nmax_files = 1.5\n", "limits.max_files = 1.5", "an integer >= 0"),
    ('[limits]\nmax_files = "10"\n', 'limits.max_files = "10"', "an integer >= 0"),
    ("[limits]\nmax_scan_depth = true\n", "limits.max_scan_depth = true", "an integer >= 0"),
    ("[scan]\nworkers = -4\n", "scan.workers = -4", "an integer >= 0"),
    ('[limits]\nmax_file_size = "abc"\n', 'limits.max_file_size = "abc"', "a size like 25M"),
    ('[limits]\nmax_file_size = "25X"\n', 'limits.max_file_size = "25X"', "a size like 25M"),
    ("[limits]\nmax_scan_size = -5\n", "limits.max_scan_size = -5", "a size like 25M"),
    ('[limits]\nmax_scan_size = "1.5G"\n', 'limits.max_scan_size = "1.5G"', "a size like 25M"),
    ('[limits]\nmax_scan_size = "25iB"\n', 'limits.max_scan_size = "25iB"', "a size like 25M"),
    ("[limits]\nmax_scan_time = -1\n", "limits.max_scan_time = -1", "a number of seconds"),
    ('[limits]\nmax_scan_time = "soon"\n', 'limits.max_scan_time = "soon"', "like 90s, 2m"),
    ("[limits]\nmax_scan_time = inf\n", "limits.max_scan_time = inf", "a number of seconds"),
    ('[scan]\nscan_mail = "yes"\n', 'scan.scan_mail = "yes"', "true or false"),
    ("[scan]\nfollow_symlinks = 1\n", "scan.follow_symlinks = 1", "true or false"),
    ('[limits]\nlimit_status = "infected"\n', 'limits.limit_status = "infected"',
     '"error" or "suspicious"'),
    ('[scan]\nexclude = "*.log"\n', 'scan.exclude = "*.log"', "a list of glob patterns"),
    ('[scan]\ninclude = ["*.eml", 3]\n', 'scan.include = ["*.eml", 3]', "a list of glob"),
    ('[paths]\nstate_dir = "var/lib"\n', 'paths.state_dir = "var/lib"', "an absolute path"),
    ('[paths]\nbases = 5\n', "paths.bases = 5", 'an absolute path, or ""'),
    ("limits = 5\n", "limits = 5", "a table [limits]"),
    ('profile = "paranoid"\n', 'profile = "paranoid"',
     "unknown profile; choose default_recommended, high_overall_security, high_scan_speed"),
    ("[limits]\nmax_scan_dept = 3\n", "unknown key limits.max_scan_dept",
     "did you mean limits.max_scan_depth?"),
    ("[scan]\nmax_files = 3\n", "unknown key scan.max_files", "did you mean limits.max_files?"),
    ("[scan]\nzzz = 3\n", "unknown key scan.zzz", "keys of [scan] are scan_archives"),
    ("max_scan_depth = 3\n", "unknown key max_scan_depth",
     "did you mean limits.max_scan_depth?"),
    ("[limit]\nmax_scan_depth = 3\n", "unknown section [limit]", "did you mean [limits]?"),
    ("[quarantine]\nx = 1\n", "unknown section [quarantine]",
     "sections are [paths], [server], [limits], [scan]"),
    ("[limits]\nmax_scan_depth = = 3\n", "invalid TOML", "(at line 2, column 18)"),
    ("[limits]\nmax_scan_depth = 1\nmax_scan_depth = 2\n", "invalid TOML", "line 3"),
]


@pytest.mark.parametrize("text, named, allowed", BAD_FILES,
                         ids=[named for _, named, _ in BAD_FILES])
def test_every_mistake_names_file_key_value_and_what_is_allowed(write, text, named, allowed):
    path = write(text)
    with pytest.raises(ConfigError) as caught:
        load_settings(path, None, {})
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith(f"{path}: {named}")
    assert allowed in message


def test_not_utf8_and_unreadable_files(tmp_path):
    latin = tmp_path / "latin.toml"
    latin.write_bytes(b'# caf\xe9\n')
    with pytest.raises(ConfigError, match="latin.toml: invalid TOML: not UTF-8"):
        load_settings(latin, None, {})
    with pytest.raises(ConfigError, match=f"^{re.escape(str(tmp_path))}: cannot read: "):
        load_settings(tmp_path, None, {})


def test_command_line_mistakes_name_the_option_and_the_key():
    with pytest.raises(ConfigError) as caught:
        load_settings(None, None, {"limits.max_file_size": "abc"})
    assert str(caught.value) == (
        'command line: --max-filesize/limits.max_file_size = "abc": expected a size like 25M '
        "(bytes, or a whole number with K, M, G or T; multiples of 1024)")
    with pytest.raises(ConfigError, match=r"^command line: --jobs/scan.workers = -1: expected"):
        load_settings(None, None, {"scan.workers": -1})


def test_unknown_profile_on_the_command_line():
    with pytest.raises(ConfigError) as caught:
        load_settings(None, "x", {})
    assert str(caught.value) == ("unknown profile 'x': choose default_recommended, "
                                 "high_overall_security, high_scan_speed")


def test_a_mistake_in_the_file_is_reported_even_when_the_command_line_sets_the_key(write):
    path = write("[limits]\nmax_scan_depth = -1\n")
    with pytest.raises(ConfigError, match="max_scan_depth = -1"):
        load_settings(path, None, {"limits.max_scan_depth": 3})


# -- writing it back -----------------------------------------------------------------------------

def test_to_toml_round_trips(write, tmp_path):
    path = write(f'profile = "high_overall_security"\n'
                 f'[paths]\ntmp_dir = "{tmp_path}/tmp"\n'
                 f'[limits]\nmax_scan_depth = 7\nmax_file_size = 1000\nmax_scan_time = "1.5m"\n'
                 f'[scan]\nexclude = ["/proc", "*\\"quoted\\"*", "tab\\there", "café"]\n')
    settings = load_settings(path, None, {"scan.workers": 3, "limits.max_scan_size": "3G"})
    shown = settings.to_toml()
    tomllib.loads(shown)  # valid TOML
    again = load_settings(write(shown, "again.toml"), None, {}, required=True)
    assert again == settings
    assert again.to_toml() == shown
    assert 'limit_status = "suspicious"\n' in shown
    assert "max_scan_depth = 7\n" in shown
    assert 'max_scan_size = "3G"\n' in shown
    assert "max_scan_time = 90\n" in shown


@pytest.mark.parametrize("name", PROFILES)
def test_every_profile_round_trips(write, name):
    settings = load_settings(None, name, {})
    assert load_settings(write(settings.to_toml()), None, {}) == settings


def test_sources_are_shown_as_comments(write):
    path = write('[limits]\nmax_scan_depth = 7\n')
    shown = load_settings(path, "high_scan_speed", {"scan.workers": 2}).to_toml(
        with_sources=True)
    lines = shown.splitlines()
    assert 'profile = "high_scan_speed"  # from command line' in lines
    assert f"max_scan_depth = 7  # from {path}" in lines
    assert 'max_file_size = "25M"  # from profile high_scan_speed' in lines
    assert "workers = 2  # from command line" in lines
    assert "follow_symlinks = false  # from built-in default" in lines
    tomllib.loads(shown)  # comments keep it valid


# -- shipped documentation agrees with the table -------------------------------------------------

EXAMPLE_LINE = re.compile(r"^# (\w+) = (.*)$")


def test_example_file_lists_every_key_with_its_default_and_loads_uncommented(write):
    text = paths.example_config_file().read_text()
    keys = {spec.key for spec in config.SPECS.values()} | {"profile"}
    seen = []
    uncommented = []
    for line in text.splitlines():
        match = EXAMPLE_LINE.match(line)
        if match and match[1] in keys:
            seen.append(match[1])
            line = line[2:]
        uncommented.append(line)
    # Each exactly once per section (a key name such as "workers" may live in two sections).
    assert sorted(seen) == sorted([spec.key for spec in config.SPECS.values()] + ["profile"])
    settings = load_settings(write("\n".join(uncommented)), None, {}, required=True)
    defaults = load_settings(None, None, {})
    assert settings.limits_section == defaults.limits_section
    assert settings.scan == defaults.scan
    assert settings.paths.state_dir == Path("/var/lib/lmsav")  # the example shows root's paths


MAN_PAGE = REPO / "man" / "lmsav.toml.5"


def test_man_page_documents_every_key_and_its_default():
    text = MAN_PAGE.read_text().replace("\\-", "-").replace("\\(dq", '"')
    for spec in config.SPECS.values():
        assert f'.BI "{spec.key} = "' in text, spec.name
        if spec.dc_field.default_factory is not dataclasses.MISSING:
            continue  # documented per user (root or not)
        default = config._toml_value(spec.kind.dump(spec.default()))
        assert f"Default: {default}" in text.replace("\\&", ""), spec.name
    for name in config.profile_names():
        assert f".B {name}" in text


def test_man_page_example_is_a_valid_file(write):
    text = MAN_PAGE.read_text()
    example = text.split(".SH EXAMPLES", 1)[1].split(".nf\n", 1)[1].split(".fi\n", 1)[0]
    settings = load_settings(write(example.replace("\\-", "-")), None, {}, required=True)
    assert settings.profile == "high_overall_security"
    assert settings.limits().max_scan_time == 300
    assert settings.scan.detect_protected is False


@pytest.mark.skipif(shutil.which("groff") is None, reason="groff not installed")
def test_man_page_renders_without_warnings():
    proc = subprocess.run(["groff", "-man", "-ww", "-Tutf8", str(MAN_PAGE)],
                          capture_output=True, text=True)
    assert proc.returncode == 0
    assert proc.stderr == ""
