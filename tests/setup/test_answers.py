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
    # After the queue, mail goes to lmsav's listener over SMTP on 127.0.0.1:10025.
    assert (got.transport, got.listen_port, got.reinject_port) == ("smtp", 10025, 10026)


def test_values_read_and_normalised(tmp_path):
    got = answers.load(write(tmp_path, """
domains = ["Example.ORG", "example.net"]
admin = "av@example.org"
database = "clamav"
sweep = ["/srv", "/home"]
mta = "postfix"
reinject_port = 10030
transport = "lmtp"
listen_port = 10031
self_test_timeout = 5
"""))
    assert (got.transport, got.listen_port) == ("lmtp", 10031)
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
    ("transport = 'uucp'", 'transport = \'uucp\': expected "smtp" or "lmtp" or "pipe"'),
    ("listen_port = 0", "listen_port = 0: expected a port number"),
    ("listen_port = 10026", "listen_port = 10026: the reinjection port"),
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


def test_the_transport_is_asked_only_where_mail_is_scanned_after_the_queue():
    got = answers.Answers()
    key, question, choices = answers.transport_question(got, ["postfix"])
    assert key == "transport" and choices == ("smtp", "lmtp", "pipe") and "pipe" in question
    assert answers.transport_question(got, ["qmail", "sendmail"]) is None
    milter = answers.Answers(postfix_mode="milter", exim_mode="pre-queue")
    assert answers.transport_question(milter, ["postfix", "exim"]) is None
    assert answers.transport_question(answers.Answers(postfix_mode="milter"),
                                      ["postfix", "exim"]) is not None
    # The pipe needs no listener: the reinjection port may be anything then.
    piped = answers.Answers(transport="pipe", listen_port=10026)
    assert piped.listen_port == piped.reinject_port
