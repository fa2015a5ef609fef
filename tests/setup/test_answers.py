"""The answers file of `lmsav setup --yes --answers FILE`."""

from __future__ import annotations

import pytest

from lmsav.setup import answers


def write(tmp_path, text: str):
    path = tmp_path / "answers.toml"
    path.write_text(text)
    return path


def test_every_key_optional(tmp_path):
    got = answers.load(write(tmp_path, ""))
    assert got == answers.Answers()
    assert got.domains is None  # detected from the MTA
    assert got.mta == "auto" and got.database == "bundled" and got.self_test


def test_values_read_and_normalised(tmp_path):
    got = answers.load(write(tmp_path, """
domains = ["Example.ORG", "example.net"]
admin = "av@example.org"
database = "clamav"
sweep = ["/srv", "/home"]
mta = "postfix"
reinject_port = 10030
self_test_timeout = 5
"""))
    assert got.domains == ["example.org", "example.net"]
    assert got.mta == ["postfix"]
    assert got.database == "clamav" and got.reinject_port == 10030
    assert got.sweep == ["/srv", "/home"] and got.self_test_timeout == 5.0


@pytest.mark.parametrize("text, fragment", [
    ("colour = 1", "unknown key 'colour'"),
    ("mta = ['exchange']", "mta"),
    ("database = 'relative/dir'", "absolute directory"),
    ("reinject_port = 70000", "port number"),
    ("reinject_port = true", "port number"),
    ("domains = 'example.org'", "list of strings"),
    ("self_test = 'yes'", "true or false"),
    ("services = 'upstart'", "services"),
    ("self_test_timeout = 0", "seconds"),
    ("domains = [", "not TOML"),
])
def test_bad_answers_are_one_line_errors(tmp_path, text, fragment):
    path = write(tmp_path, text)
    with pytest.raises(answers.AnswersError) as err:
        answers.load(path)
    message = str(err.value)
    assert fragment in message and str(path) in message and "\n" not in message


def test_missing_file(tmp_path):
    with pytest.raises(answers.AnswersError, match="No such file"):
        answers.load(tmp_path / "absent.toml")
