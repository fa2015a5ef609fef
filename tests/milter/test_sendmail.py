"""`lmsav milter` behind a real Sendmail, set up by `lmsav setup sendmail --apply`.

Debian's sendmail-bin conflicts with postfix as packages, so scripts/mta/sendmail-unpack unpacks
Sendmail and m4 beside it. The Sendmail here has its own sendmail.mc, made into sendmail.cf with
m4 from the unpacked cf files, its own queue, listens on a loopback port and relays everything to
an SMTP sink on loopback (SMART_HOST). It runs in a UTS namespace of its own named mta.test: with
an unqualified host name Sendmail waits a minute for DNS at start. EICAR is refused with the
group's text, clean mail reaches the sink with the X-AV headers, and with the milter stopped
Sendmail tempfails (F=T); `--remove` gives both files back byte for byte.
"""

from __future__ import annotations

import os
import shutil
import smtplib
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from tests.milter.conftest import build, infected, write_config
from tests.mta.conftest import (
    REPO,
    _make_root,
    free_port,
    lmsav_cli,
    parsed,
    token,
    wait_port,
)

pytestmark = pytest.mark.integration

SENDER = "alice@senders.test"
UNPACK = REPO / "scripts" / "mta" / "sendmail-unpack"
UNPACK_TIMEOUT = float(os.environ.get("LMSAV_UNPACK_TIMEOUT", "300"))
WAIT = float(os.environ.get("LMSAV_MTA_WAIT", "60"))


def unpacked_sendmail() -> Path:
    """The Sendmail wrapper from scripts/mta/sendmail-unpack (fetched on first use), or skip."""
    try:
        proc = subprocess.run([str(UNPACK)], check=False, capture_output=True, text=True,
                              timeout=UNPACK_TIMEOUT, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        pytest.skip(f"cannot unpack Sendmail: {UNPACK.name} took over {UNPACK_TIMEOUT:.0f} s")
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or [f"exit status {proc.returncode}"])[-1]
        pytest.skip(f"cannot unpack Sendmail: {last}")
    return Path(proc.stdout.strip().splitlines()[-1])


def sendmail_mc(root: Path, cf_dir: Path, port: int, sink_port: int) -> str:
    """A private Sendmail: queue, files and pid under ``root``, no DNS, everything relayed to
    the sink."""
    return f"""divert(-1)dnl
A private Sendmail for lmsav's tests.
divert(0)dnl
include(`{cf_dir}/m4/cf.m4')dnl
OSTYPE(`linux')dnl
define(`confDOMAIN_NAME', `mta.test')dnl
define(`QUEUE_DIR', `{root}/mqueue')dnl
define(`ALIAS_FILE', `{root}/aliases')dnl
define(`STATUS_FILE', `{root}/statistics')dnl
define(`confPID_FILE', `{root}/sendmail.pid')dnl
define(`confSERVICE_SWITCH_FILE', `{root}/service.switch')dnl
define(`confHOST_STATUS_DIRECTORY', `')dnl
define(`confDONT_PROBE_INTERFACES', `True')dnl
define(`confDELIVERY_MODE', `background')dnl
define(`SMART_HOST', `relay:[127.0.0.1]')dnl
define(`RELAY_MAILER_ARGS', `TCP $h {sink_port}')dnl
FEATURE(`no_default_msa')dnl
FEATURE(`promiscuous_relay')dnl
FEATURE(`accept_unresolvable_domains')dnl
DAEMON_OPTIONS(`Port={port}, Addr=127.0.0.1, Name=MTA')dnl
MAILER(`smtp')dnl
"""


class Sink:
    """An SMTP server on loopback that keeps every message it is given."""

    def __init__(self, port: int):
        from aiosmtpd.controller import Controller

        self.messages: list[bytes] = []

        sink = self

        class Handler:
            async def handle_DATA(self, server, session, envelope):
                sink.messages.append(envelope.original_content or envelope.content)
                return "250 2.0.0 kept"

        self.controller = Controller(Handler(), hostname="127.0.0.1", port=port)
        self.controller.start()

    def stop(self) -> None:
        self.controller.stop()

    def wait(self, tok: str) -> list[bytes]:
        deadline = time.monotonic() + WAIT
        while time.monotonic() < deadline:
            found = [m for m in list(self.messages) if tok.encode() in m]
            if found:
                return found
            time.sleep(0.2)
        return []


def run_setup(config_dir: Path, bin_dir: Path, config: Path, *args: str) -> str:
    env = {"PATH": f"{bin_dir}:{os.environ.get('PATH', '')}", "LMSAV_CONFIG": str(config)}
    result = CliRunner().invoke(lmsav_cli(), ["setup", "sendmail", "--config-dir",
                                              str(config_dir), *args], env=env,
                                catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


@pytest.fixture(scope="module")
def stack():
    if os.geteuid() != 0:
        pytest.skip("the Sendmail test runs a real Sendmail as root, in a UTS namespace")
    if not shutil.which("unshare"):
        pytest.skip("unshare (util-linux) is not installed")
    wrapper = unpacked_sendmail()
    bin_dir = wrapper.parent
    cf_dir = bin_dir.parent / "root" / "usr" / "share" / "sendmail" / "cf"
    root = _make_root("sendmail")
    etc = root / "etc"
    etc.mkdir()
    (root / "mqueue").mkdir(mode=0o700)
    (root / "aliases").write_text("")
    (root / "service.switch").write_text("hosts files\naliases files\n")
    smtp_port, milter_port, sink_port = free_port(), free_port(), free_port()
    (etc / "sendmail.mc").write_text(sendmail_mc(root, cf_dir, smtp_port, sink_port))
    with open(etc / "sendmail.cf", "wb") as cf:
        subprocess.run([str(bin_dir / "m4"), "sendmail.mc"], cwd=etc, stdout=cf,
                       stderr=subprocess.DEVNULL, check=True, timeout=60)
    original = {name: (etc / name).read_bytes() for name in ("sendmail.mc", "sendmail.cf")}
    config = write_config(root / "lmsav", root / "notices")
    setup_output = run_setup(etc, bin_dir, config, "--milter-socket",
                             f"inet:{milter_port}@127.0.0.1", "--apply")

    sink = Sink(sink_port)
    procs: list[subprocess.Popen] = []
    logs = []
    try:
        log = open(root / "milter.log", "ab")  # noqa: SIM115 - closed at teardown
        logs.append(log)
        milter = subprocess.Popen(
            [sys.executable, "-c", "from lmsav.milter.commands import milter; milter()",
             "--listen", f"inet:{milter_port}@127.0.0.1"],
            env=dict(os.environ, LMSAV_CONFIG=str(config)), stdout=log,
            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
        procs.append(milter)
        wait_port(milter_port, timeout=60)
        log = open(root / "sendmail.log", "ab")  # noqa: SIM115 - closed at teardown
        logs.append(log)
        # -bD: the daemon in the foreground, so that this process is the one to stop.
        sendmail = subprocess.Popen(
            ["unshare", "--uts", "sh", "-c", 'hostname mta.test && exec "$@"', "sh",
             str(wrapper), "-C", str(etc / "sendmail.cf"), "-bD", "-q1m"],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True)
        procs.append(sendmail)
        wait_port(smtp_port, timeout=30)
        yield {"etc": etc, "root": root, "port": smtp_port, "sink": sink, "milter": milter,
               "original": original, "setup": setup_output, "bin": bin_dir, "config": config}
    finally:
        for proc in reversed(procs):
            stop(proc)
        sink.stop()
        for log in logs:
            log.close()
        if os.environ.get("LMSAV_KEEP_MTA") != "1":
            shutil.rmtree(root, ignore_errors=True)


def debug(root: Path) -> str:
    parts = []
    for name in ("milter.log", "sendmail.log"):
        path = root / name
        parts.append(f"--- {name}\n" + (path.read_text(errors="replace")[-4000:]
                                        if path.exists() else "(none)"))
    return "\n".join(parts)


def queued(root: Path) -> list[str]:
    return sorted(p.name for p in (root / "mqueue").iterdir() if p.name.startswith("qf"))


def smtp(port: int) -> smtplib.SMTP:
    client = smtplib.SMTP("127.0.0.1", port, timeout=60)
    client.ehlo("client.test")
    return client


def test_setup_added_the_fail_closed_filter_to_both_files(stack):
    mc = (stack["etc"] / "sendmail.mc").read_text()
    cf = (stack["etc"] / "sendmail.cf").read_text()
    assert "INPUT_MAIL_FILTER(`lmsav', `S=inet:" in mc
    assert "O InputMailFilters=lmsav" in cf.splitlines()
    [filter_line] = [line for line in cf.splitlines() if line.startswith("Xlmsav,")]
    assert "F=T" in filter_line and "T=S:4m;R:4m;E:10m" in filter_line
    assert "Backed up: " in stack["setup"]


def test_eicar_is_refused_with_the_groups_text(stack):
    root = stack["root"]
    with smtp(stack["port"]) as client, pytest.raises(smtplib.SMTPDataError) as refused:
        client.sendmail(SENDER, ["bob@clean.test"], infected(subject=token()))
    assert refused.value.smtp_code == 550, debug(root)
    text = refused.value.smtp_error.decode()
    assert "Refused here: " in text and "Eicar-Test-Signature" in text, text
    assert queued(root) == []


def test_clean_mail_reaches_the_sink_with_av_headers(stack):
    tok = token()
    with smtp(stack["port"]) as client:
        assert client.sendmail(SENDER, ["bob@clean.test"], build(subject=tok)) == {}
    [delivered] = stack["sink"].wait(tok) or [None]
    assert delivered is not None, debug(stack["root"])
    msg = parsed(delivered)
    assert msg["X-AV-Status"] == "clean"
    assert msg["X-AV-Checked"].startswith("lmsav ")
    assert msg.get_body(("plain",)).get_content().startswith("Hello.")


def test_without_the_milter_sendmail_tempfails_and_accepts_nothing(stack):
    """Runs after the others: it stops the milter."""
    milter, root = stack["milter"], stack["root"]
    milter.terminate()
    assert milter.wait(30) == 0
    tok = token()
    code, reply = None, b""
    try:
        with smtp(stack["port"]) as client:
            code, reply = client.mail(SENDER)
            if code == 250:
                code, reply = client.rcpt("bob@clean.test")
            if code == 250:
                code, reply = client.data(build(subject=tok))
    except smtplib.SMTPServerDisconnected:
        code = 421  # the greeting or EHLO answered 421 and the connection closed
    except smtplib.SMTPConnectError as err:
        code, reply = err.smtp_code, err.smtp_error
    assert code is not None and 400 <= code < 500, (code, reply, debug(root))
    assert queued(root) == []
    time.sleep(1)
    assert not [m for m in stack["sink"].messages if tok.encode() in m]


def test_remove_gives_back_both_files_byte_for_byte(stack):
    etc = stack["etc"]
    out = run_setup(etc, stack["bin"], stack["config"], "--remove", "--apply")
    assert "put back from" in out
    for name, data in stack["original"].items():
        assert (etc / name).read_bytes() == data, name
    again = run_setup(etc, stack["bin"], stack["config"], "--remove")
    assert "has no lmsav settings" in again


@pytest.fixture(scope="module")
def unpacked() -> tuple[Path, Path]:
    """The directory of the unpacked m4 and Sendmail's cf files."""
    bin_dir = unpacked_sendmail().parent
    return bin_dir, bin_dir.parent / "root" / "usr" / "share" / "sendmail" / "cf"


def test_without_apply_only_the_plan_is_printed(unpacked, tmp_path):
    bin_dir, cf_dir = unpacked
    (tmp_path / "sendmail.mc").write_text(sendmail_mc(tmp_path, cf_dir, 2525, 2526))
    (tmp_path / "sendmail.cf").write_text("# built before\n")
    before = sorted(p.name for p in tmp_path.iterdir())
    out = run_setup(tmp_path, bin_dir, tmp_path / "none.toml")
    assert "+INPUT_MAIL_FILTER(`lmsav', `S=inet:8894@127.0.0.1, F=T, T=S:4m;R:4m;E:10m')dnl" \
        in out
    assert "Nothing changed; run again with --apply" in out
    assert sorted(p.name for p in tmp_path.iterdir()) == before
    assert (tmp_path / "sendmail.cf").read_text() == "# built before\n"


def test_an_mc_without_cf_m4_is_built_with_the_cf_dir_and_filters_go_before_the_mailers(
        unpacked, tmp_path):
    bin_dir, cf_dir = unpacked
    mc = sendmail_mc(tmp_path, cf_dir, 2525, 2526).replace(f"include(`{cf_dir}/m4/cf.m4')dnl\n",
                                                          "")
    (tmp_path / "sendmail.mc").write_text(mc)
    out = run_setup(tmp_path, bin_dir, tmp_path / "none.toml", "--cf-dir", str(cf_dir),
                    "--milter-socket", "unix:/run/lmsav/milter.sock", "--apply")
    assert f"-D_CF_DIR_={cf_dir}/" in out
    lines = (tmp_path / "sendmail.mc").read_text().splitlines()
    at = lines.index("INPUT_MAIL_FILTER(`lmsav', `S=local:/run/lmsav/milter.sock, F=T, "
                     "T=S:4m;R:4m;E:10m')dnl")
    assert lines[at + 2] == "MAILER(`smtp')dnl"
    cf = (tmp_path / "sendmail.cf").read_text().splitlines()
    assert "Xlmsav, S=local:/run/lmsav/milter.sock, F=T, T=S:4m;R:4m;E:10m" in cf
    # There was no sendmail.cf to put back: --remove builds it again, without the filter.
    run_setup(tmp_path, bin_dir, tmp_path / "none.toml", "--cf-dir", str(cf_dir), "--remove",
              "--apply")
    assert (tmp_path / "sendmail.mc").read_text() == mc
    assert not [line for line in (tmp_path / "sendmail.cf").read_text().splitlines()
                if "lmsav" in line]


def test_without_m4_the_change_is_shown_and_apply_refuses(tmp_path):
    mc = "divert(0)dnl\nOSTYPE(`linux')dnl\nMAILER(`smtp')dnl\n"
    (tmp_path / "sendmail.mc").write_text(mc)
    env = {"PATH": str(tmp_path / "empty"), "LMSAV_CONFIG": str(tmp_path / "none.toml")}
    shown = CliRunner().invoke(lmsav_cli(), ["setup", "sendmail", "--config-dir", str(tmp_path)],
                               env=env)
    assert shown.exit_code == 0, shown.output
    assert "+INPUT_MAIL_FILTER(`lmsav'" in shown.output
    assert "problem: m4 is not installed" in shown.output
    refused = CliRunner().invoke(lmsav_cli(), ["setup", "sendmail", "--config-dir", str(tmp_path),
                                               "--apply"], env=env)
    assert refused.exit_code == 2
    assert "m4 is not installed" in refused.output
    assert [p.name for p in tmp_path.iterdir()] == ["sendmail.mc"]
    assert (tmp_path / "sendmail.mc").read_text() == mc
