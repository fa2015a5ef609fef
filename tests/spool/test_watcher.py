"""The spool watcher end to end: entries enqueued in a real spool, the real mail policy and
database, worker processes, reinjection into a directory sink; then what an administrator
sees with `lmsav spool list|show|release|delete`."""

from __future__ import annotations

import email
import email.policy
import json
import logging
import multiprocessing
import os
import signal
import time
from email.message import EmailMessage
from pathlib import Path

import pytest
from click.testing import CliRunner

from lmsav import config as config_mod
from lmsav.mail.deliveries import build_refusal_notice
from lmsav.mail.envelope import Envelope
from lmsav.spool.commands import spool as spool_group
from lmsav.spool.nqueue import Spool
from lmsav.spool.reinject import DirReinjector, ReinjectError
from lmsav.spool.watcher import Watcher, retry_delay
from tests.conftest import BODY_SAMPLE, EICAR
from tests.jsonlines import records

GROUPS = {
    "warned.toml": """
priority = 10
recipients = ["*@warned.example"]
infected_action = "warn"
notify_recipients = []
notify_admin = []
""",
    "default.toml": """
admin_addresses = ["postmaster@example.net"]
""",
}


def make_message(n: int, *attachments: tuple[str, bytes], subject: str = "") -> bytes:
    msg = EmailMessage()
    msg["From"] = "alice@example.org"
    msg["To"] = "bob@example.net"
    msg["Subject"] = subject or f"message {n}"
    msg["Message-ID"] = f"<m{n}@example.org>"
    msg.set_content(f"hello {n}\n")
    for name, data in attachments:
        msg.add_attachment(data, maintype="application", subtype="octet-stream", filename=name)
    return msg.as_bytes()


class Setup:
    """A configuration directory, a state directory with the spool, and the sink."""

    def __init__(self, tmp_path: Path, **spool_keys):
        self.tmp = tmp_path
        self.sink = tmp_path / "sink"
        self.config = tmp_path / "etc" / "lmsav.toml"
        (tmp_path / "etc" / "groups.d").mkdir(parents=True)
        for name, text in GROUPS.items():
            (tmp_path / "etc" / "groups.d" / name).write_text(text)
        keys = {"reinject": f"dir:{self.sink}", "workers": 2, "retry_delay": 0.05,
                "max_attempts": 4, "rescan_interval": 0.5, **spool_keys}
        spool = "\n".join(f"{k} = {json.dumps(v)}" for k, v in keys.items())
        self.config.write_text(f'[paths]\nstate_dir = "{tmp_path / "state"}"\n\n[spool]\n{spool}\n')
        self.settings = config_mod.load_settings(self.config)
        self.spool = Spool(self.settings.spool_dir())
        self.spool.ensure()

    def enqueue(self, raw: bytes, sender="alice@example.org", *rcpts, queue_id="") -> str:
        return self.spool.enqueue(Envelope(sender, tuple(rcpts or ("bob@example.net",))),
                                  raw, queue_id)

    def watcher(self, **kw) -> Watcher:
        return Watcher(self.settings, self.config, **kw)

    def deliveries(self) -> list[tuple[str, tuple[str, ...], bytes]]:
        if not self.sink.exists():
            return []
        out = []
        for env in sorted(self.sink.glob("*.env")):
            data = json.loads(env.read_text())
            out.append((data["sender"], tuple(data["recipients"]),
                        env.with_suffix(".eml").read_bytes()))
        return out

    def states(self) -> dict[str, int]:
        counts = {"new": 0, "work": 0, "hold": 0}
        for state, _entry in self.spool.list():
            counts[state] += 1
        return counts


def parsed(raw: bytes):
    return email.message_from_bytes(raw, policy=email.policy.default)


def kind(raw: bytes) -> str:
    m = parsed(raw)
    if m["Subject"] == "Undelivered Mail Returned to Sender":
        return "reject-notice"
    if m["X-AV-Status"]:
        return "message"
    return "notice"


@pytest.fixture
def setup(tmp_path):
    return Setup(tmp_path)


@pytest.fixture(autouse=True)
def spool_log(tmp_path):
    """The watcher's log lines, from the parent and the workers alike (a file they share)."""
    path = tmp_path / "watch.log"
    handler = logging.FileHandler(path)
    handler.setFormatter(logging.Formatter("%(process)d %(levelname)s %(message)s"))
    logger = logging.getLogger("lmsav.spool")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    yield path
    logger.removeHandler(handler)
    handler.close()


def test_clean_and_infected_messages_are_split_notified_and_reinjected(setup, spool_log):
    clean = make_message(1, ("a.txt", b"fine"))
    infected = make_message(2, ("sample.bin", BODY_SAMPLE))
    setup.enqueue(clean, "alice@example.org", "bob@example.net", "dave@example.net",
                  queue_id="QCLEAN")
    setup.enqueue(infected, "alice@example.org", "bob@example.net", "carol@warned.example",
                  queue_id="QINF")
    assert setup.watcher().run(once=True) == 0

    got = [(s, r, kind(m)) for s, r, m in setup.deliveries()]
    assert sorted(got) == sorted([
        ("alice@example.org", ("bob@example.net", "dave@example.net"), "message"),  # clean
        ("alice@example.org", ("carol@warned.example",), "message"),  # warned copy
        ("", ("alice@example.org",), "reject-notice"),  # default group rejected
        ("", ("bob@example.net",), "notice"),  # recipient notice of the default group
        ("", ("postmaster@example.net",), "notice"),  # admin notice
    ])
    by_rcpt = {r: m for _s, r, m in setup.deliveries()}
    clean_out = parsed(by_rcpt[("bob@example.net", "dave@example.net")])
    assert clean_out["X-AV-Status"] == "clean" and clean_out["Message-ID"] == "<m1@example.org>"
    warned = by_rcpt[("carol@warned.example",)]
    assert BODY_SAMPLE not in warned and parsed(warned)["X-AV-Status"] == "infected"
    dsn = by_rcpt[("alice@example.org",)]
    assert b"<bob@example.net>: 550 5.7.1 Message rejected by the anti-virus policy " \
           b"(Lmsav.Test.Body)" in dsn
    assert b"Message-ID: <m2@example.org>" in dsn  # the original headers go back
    assert b"carol" not in dsn.split(b"text/rfc822-headers")[0]  # only the rejected recipient
    assert setup.states() == {"new": 0, "work": 0, "hold": 0}

    lines = [ln for ln in spool_log.read_text().splitlines() if "queue_id=" in ln]
    assert len(lines) == 2
    line = next(ln for ln in lines if "QINF" in ln)
    assert ("queue_id=QINF message_id=<m2@example.org> from=<alice@example.org> "
            "to=<bob@example.net,carol@warned.example> group=default,warned "
            "status=infected,infected action=reject,warn time=") in line
    assert line.endswith("result=done")


def test_no_reject_notice_to_forged_or_null_senders(setup):
    eicar = make_message(3, ("eicar.com", EICAR))  # Eicar: in no_sender_notice (forged senders)
    setup.enqueue(eicar, "alice@example.org", "bob@example.net")
    bounce = make_message(4, ("sample.bin", BODY_SAMPLE))
    setup.enqueue(bounce, "", "bob@example.net")
    setup.watcher().run(once=True)
    kinds = [(s, r, kind(m)) for s, r, m in setup.deliveries()]
    assert not [k for k in kinds if k[2] == "reject-notice"]
    assert not [k for k in kinds if k[2] == "message"]
    assert ("", ("bob@example.net",), "notice") in kinds
    assert setup.states() == {"new": 0, "work": 0, "hold": 0}


class FlakyReinjector(DirReinjector):
    """Refuses, for now, recipients named in a control file; delivers everything else."""

    def __init__(self, sink: Path, control: Path, temporary: bool = True):
        super().__init__(sink)
        self.control = control
        self.temporary = temporary

    def deliver(self, sender, recipients, message):
        refused = set(self.control.read_text().split()) if self.control.exists() else set()
        if "*" in refused or refused & set(recipients):
            raise ReinjectError("451 4.3.0 not now" if self.temporary else "550 5.0.0 never",
                                temporary=self.temporary)
        super().deliver(sender, recipients, message)


def flaky_factory(setup: Setup, control: Path, temporary: bool = True):
    return lambda settings: FlakyReinjector(setup.sink, control, temporary)


def test_temporary_failure_retries_later_without_duplicating_groups(setup, tmp_path):
    control = tmp_path / "refuse"
    control.write_text("carol@warned.example\n")
    entry_id = setup.enqueue(make_message(5, ("sample.bin", BODY_SAMPLE)), "alice@example.org",
                             "bob@example.net", "carol@warned.example")
    setup.watcher(reinjector_factory=flaky_factory(setup, control)).run(once=True)
    first = setup.deliveries()
    assert ("carol@warned.example",) not in [r for _s, r, _m in first]
    assert len(first) == 3  # reject notice, recipient and admin notices of the default group
    [(state, entry)] = setup.spool.list()
    assert (state, entry.id, entry.attempts) == ("new", entry_id, 1)
    assert "451 4.3.0 not now" in entry.reason and entry.not_before > time.time() - 1

    # Not due yet: a run now leaves it alone.
    setup.watcher(reinjector_factory=flaky_factory(setup, control)).run(once=True)
    assert len(setup.deliveries()) == 3

    control.unlink()
    time.sleep(retry_delay(0.05, 0) + 0.05)
    setup.watcher(reinjector_factory=flaky_factory(setup, control)).run(once=True)
    after = setup.deliveries()
    assert len(after) == 4, "only the missing group was reinjected"
    assert after[-1][1] == ("carol@warned.example",)
    assert setup.states() == {"new": 0, "work": 0, "hold": 0}
    assert not list((setup.spool.root / "delivered").glob("*.json"))


def test_persistent_temporary_failure_is_held_after_max_attempts(setup, tmp_path):
    control = tmp_path / "refuse"
    control.write_text("*")
    entry_id = setup.enqueue(make_message(6))
    for _ in range(10):
        setup.watcher(reinjector_factory=flaky_factory(setup, control)).run(once=True)
        if setup.states()["hold"]:
            break
        time.sleep(0.05 * 8)
    [(state, entry)] = setup.spool.list()
    assert (state, entry.id, entry.attempts) == ("hold", entry_id, 4)
    assert "not now" in entry.reason
    assert setup.deliveries() == []


def test_permanent_failure_is_held_at_once_and_admin_commands(setup, tmp_path):
    control = tmp_path / "refuse"
    control.write_text("*")
    entry_id = setup.enqueue(make_message(7), queue_id="Q7")
    setup.watcher(reinjector_factory=flaky_factory(setup, control, temporary=False)).run(
        once=True)
    [(state, entry)] = setup.spool.list()
    assert (state, entry.attempts) == ("hold", 0) and "550 5.0.0 never" in entry.reason

    runner = CliRunner(env={"LMSAV_CONFIG": str(setup.config)})  # as `lmsav spool …`
    base: list[str] = []
    out = runner.invoke(spool_group, base + ["list", "--json"])
    assert out.exit_code == 0, out.output
    [listed] = records(out.stdout)
    assert (listed["id"], listed["state"], listed["queue_id"]) == (entry_id, "hold", "Q7")
    out = runner.invoke(spool_group, base + ["list"])
    assert entry_id in out.output and "550 5.0.0 never" in out.output and "1 hold" in out.output
    out = runner.invoke(spool_group, base + ["show", entry_id])
    assert out.exit_code == 0
    assert "Subject:    message 7" in out.output and "Message-ID: <m7@example.org>" in out.output
    assert "sender:     <alice@example.org>" in out.output

    out = runner.invoke(spool_group, base + ["release", entry_id])
    assert out.exit_code == 0 and f"released {entry_id}" in out.output
    control.unlink()
    setup.watcher().run(once=True)
    assert [r for _s, r, _m in setup.deliveries()] == [("bob@example.net",)]

    out = runner.invoke(spool_group, base + ["show", entry_id])
    assert out.exit_code == 2 and f"lmsav: error: no spool entry {entry_id}" in out.output
    other = setup.enqueue(make_message(8))
    out = runner.invoke(spool_group, base + ["delete", other, "1795615735477049311.1.00000000"])
    assert out.exit_code == 2 and f"deleted {other}" in out.output
    assert "no spool entry 1795615735477049311.1.00000000" in out.output
    assert setup.states() == {"new": 0, "work": 0, "hold": 0}


def test_processing_errors_and_dying_workers_keep_the_message(setup, monkeypatch):
    from lmsav.mail.service import MailService

    real = MailService.decide

    def decide(self, raw, envelope, **kwargs):
        if b"BOOM" in raw:
            raise RuntimeError("policy exploded")
        if b"CRASH" in raw:
            os._exit(3)  # the worker dies mid-entry, as on a segfault
        return real(self, raw, envelope, **kwargs)

    monkeypatch.setattr(MailService, "decide", decide)
    boom = setup.enqueue(make_message(9, subject="BOOM"))
    crash = setup.enqueue(make_message(10, subject="CRASH"))
    fine = setup.enqueue(make_message(11))
    setup.watcher().run(once=True)
    entries = {e.id: (s, e) for s, e in setup.spool.list()}
    assert set(entries) == {boom, crash}
    # (With retry_delay 0.05 s an entry may come due again, and fail again, within the run.)
    assert entries[boom][1].attempts >= 1 and "RuntimeError: policy exploded" in \
        entries[boom][1].reason
    assert entries[crash][1].attempts >= 1 and "worker died (exit 3)" in entries[crash][1].reason
    assert [r for _s, r, _m in setup.deliveries()] == [("bob@example.net",)]
    assert fine not in entries

    # A message that kills every worker ends in hold/, it does not kill workers forever.
    for _ in range(8):
        time.sleep(0.05 * 8)
        setup.watcher().run(once=True)
        if setup.states()["hold"] == 2:
            break
    assert setup.states() == {"new": 0, "work": 0, "hold": 2}


def test_entries_left_in_work_are_recovered(setup):
    entry_id = setup.enqueue(make_message(12))
    assert setup.spool.claim(entry_id) is not None  # a watcher died holding it
    setup.watcher().run(once=True)
    assert len(setup.deliveries()) == 1
    assert setup.states() == {"new": 0, "work": 0, "hold": 0}


def test_reject_notice_format():
    raw = b"Subject: x\r\nMessage-ID: <q@x>\r\n\r\nbody EICAR\r\n"
    dsn = build_refusal_notice(Envelope("a@x.org", ("b@y.org",), 1.7e9),
                               [("b@y.org", "550 5.7.1 Message rejected: virus (X)")], raw,
                               "mx.test", 1.7e9)
    m = parsed(dsn)
    assert m.get_content_type() == "multipart/report"
    assert m["From"] == "Mail Delivery System <MAILER-DAEMON@mx.test>"
    assert m["To"] == "a@x.org" and m["Auto-Submitted"] == "auto-replied"
    parts = [p.get_content_type() for p in m.iter_parts()]
    assert parts == ["text/plain", "message/delivery-status", "text/rfc822-headers"]
    assert b"Status: 5.7.1" in dsn and b"Final-Recipient: rfc822; b@y.org" in dsn
    assert b"body EICAR" not in dsn and b"\r" not in dsn


# -- a running watcher: inotify, SIGHUP, SIGTERM -------------------------------------------------

class SlowReinjector(DirReinjector):
    def deliver(self, sender, recipients, message):
        time.sleep(0.05)
        super().deliver(sender, recipients, message)


def _run_watcher(setup: Setup, slow: bool) -> None:
    factory = (lambda settings: SlowReinjector(setup.sink)) if slow else None
    os._exit(setup.watcher(reinjector_factory=factory).run())


def start_watcher(setup: Setup, slow: bool = False):
    process = multiprocessing.get_context("fork").Process(target=_run_watcher,
                                                          args=(setup, slow))
    process.start()
    return process


def wait_for(predicate, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return predicate()


def test_sigterm_finishes_in_flight_and_leaves_the_rest_in_new(setup):
    ids = [setup.enqueue(make_message(100 + i)) for i in range(40)]
    process = start_watcher(setup, slow=True)
    assert wait_for(lambda: len(setup.deliveries()) >= 6)
    os.kill(process.pid, signal.SIGTERM)
    process.join(15)
    assert process.exitcode == 0
    delivered = len(setup.deliveries())
    states = setup.states()
    assert 6 <= delivered < 40
    assert states == {"new": 40 - delivered, "work": 0, "hold": 0}
    # Nothing lost, nothing twice: every Message-ID is in exactly one place.
    left = {setup.spool.get(i).id for i in ids if (setup.spool.root / "new" / i).exists()}
    assert len(left) == 40 - delivered
    mids = [parsed(m)["Message-ID"] for _s, _r, m in setup.deliveries()]
    assert len(set(mids)) == len(mids)


def test_running_watcher_sees_new_entries_and_reloads_on_sighup(tmp_path):
    setup = Setup(tmp_path, rescan_interval=3600)  # only inotify can bring new entries
    process = start_watcher(setup)
    try:
        time.sleep(0.3)
        setup.enqueue(make_message(200, ("sample.bin", BODY_SAMPLE)), "alice@example.org",
                      "erin@reloaded.example")
        assert wait_for(lambda: len(setup.deliveries()) >= 1, 5)
        time.sleep(0.3)
        assert ("", ("alice@example.org",)) in [(s, r) for s, r, _m in setup.deliveries()]

        # A new group for erin: warn instead of reject, picked up by SIGHUP.
        (tmp_path / "etc" / "groups.d" / "reloaded.toml").write_text(
            'priority = 30\nrecipients = ["*@reloaded.example"]\ninfected_action = "warn"\n'
            'notify_recipients = []\nnotify_admin = []\n')
        before = len(setup.deliveries())
        os.kill(process.pid, signal.SIGHUP)
        time.sleep(0.5)
        setup.enqueue(make_message(201, ("sample.bin", BODY_SAMPLE)), "alice@example.org",
                      "erin@reloaded.example")
        assert wait_for(lambda: len(setup.deliveries()) > before, 5)
        time.sleep(0.2)
        new = setup.deliveries()[before:]
        assert [(s, r, kind(m)) for s, r, m in new] == [
            ("alice@example.org", ("erin@reloaded.example",), "message")]
    finally:
        os.kill(process.pid, signal.SIGTERM)
        process.join(15)
    assert process.exitcode == 0
    assert setup.states() == {"new": 0, "work": 0, "hold": 0}


def test_smtp_reinjection_partial_refusal_is_retried_for_the_refused_only(tmp_path):
    from tests.spool.test_reinject import Server

    server = Server()
    server.start()
    try:
        # A retry delay no busy machine outlasts within one run: the entry fails once.
        setup = Setup(tmp_path, reinject=f"smtp:127.0.0.1:{server.port}", retry_delay=1.0)
        server.handler.rcpt_replies = {"dave@example.net": "450 4.2.1 mailbox busy"}
        setup.enqueue(make_message(300), "alice@example.org", "bob@example.net",
                      "dave@example.net")
        for n in range(301, 305):
            setup.enqueue(make_message(n))
        setup.watcher().run(once=True)
        assert [e.attempts for _s, e in setup.spool.list()] == [1]
        server.handler.rcpt_replies = {}
        time.sleep(1.1)
        setup.watcher().run(once=True)
    finally:
        server.stop()
    got = [(f, tuple(t), parsed(m)["Message-ID"]) for f, t, m, _s in server.handler.received]
    assert sorted(got) == sorted(
        [("alice@example.org", ("bob@example.net",), "<m300@example.org>"),
         ("alice@example.org", ("dave@example.net",), "<m300@example.org>")]
        + [("alice@example.org", ("bob@example.net",), f"<m{n}@example.org>")
           for n in range(301, 305)])
    # One connection per worker, kept across messages: at most 2 sessions in the first run.
    sessions = {s for _f, _t, m, s in server.handler.received
                if parsed(m)["Message-ID"] != "<m300@example.org>"}
    assert len(sessions) <= 2
    assert setup.states() == {"new": 0, "work": 0, "hold": 0}
