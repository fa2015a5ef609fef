"""lmsav update end to end against a real HTTP mirror on 127.0.0.1 and local directories.

ClamAV's genuine test databases go from version 1 to 6 through their signed diffs, each step
verified; every kind of bad input leaves the active database as it was with one clear error.
"""

from __future__ import annotations

import base64
import errno
import gzip
import json
import os
import re
import shutil
import subprocess
import sys
import time

import pytest

from lmsav.scanner.signatures import cvd
from lmsav.scanner.signatures.database import Database
from lmsav.update import state as state_mod
from lmsav.update.store import Store
from lmsav.update.updater import NoSuchVersion, rollback, update

from ..scanner.signatures.test_cvd import write_cud
from .conftest import TEST_CERTS, copy_genuine, genuine, md5_line, options

EXTRA_SAMPLE = b"lmsav update extra database sample\n"


@pytest.fixture
def extra(tmp_path) -> bytes:
    """An unsigned .cud with one signature: versions 1 and 2 of the genuine test database hold
    none, and a database directory without signatures is refused."""
    path = write_cud(tmp_path / "extra.cud", {"extra.hdb": md5_line(EXTRA_SAMPLE, "Lmsav.Extra")})
    return path.read_bytes()


@pytest.fixture
def root(tmp_path):
    return tmp_path / "bases"


def active(root) -> dict[str, int]:
    current = Store(root).current()
    return {name: d["version"] for name, d in current.meta["databases"].items()}


def active_file(root, name: str) -> bytes:
    return (root / "current" / name).read_bytes()


def mirror_update(root, mirror, **kw):
    kw.setdefault("databases", ("test", "extra.cud"))
    kw.setdefault("trust_dirs", (TEST_CERTS,))
    return update(root, options(mirror.url, **kw))


def installed_at_version(root, mirror, extra, version: int, **kw):
    """Make ``version`` of the genuine database active, downloaded whole."""
    mirror.files["extra.cud"] = extra
    mirror.publish_genuine(version, cdiffs=False)
    outcome = mirror_update(root, mirror, **kw)
    assert outcome.ok, outcome.errors
    assert active(root)["test"] == version
    return outcome


# -- ClamAV's genuine test databases, 1 to 6 ---------------------------------------------------

def test_genuine_versions_1_to_6_arrive_through_their_signed_diffs_each_step_verified(
        root, mirror, extra, trust_test_root):
    first = installed_at_version(root, mirror, extra, 1)
    assert [c.how for c in first.changes] == ["full", "full"]
    assert first.active == "test-1_extra-7"
    for version in range(2, 7):
        mirror.requests.clear()
        mirror.publish_genuine(version)
        outcome = mirror_update(root, mirror)
        assert outcome.ok and outcome.result == "updated", outcome.errors
        assert outcome.warnings == []
        test, unchanged = outcome.changes
        assert (test.database, test.before, test.after, test.how, test.file) == (
            "test", version - 1, version, "cdiff", "test.cld")
        assert unchanged.how == "unchanged"
        # Asked: the two headers, then the one diff and its .sign; no whole container.
        assert mirror.paths() == ["test.cvd", "extra.cud", f"test-{version}.cdiff",
                                  f"test-{version}.cdiff.sign"]
        assert mirror.requests[0].range == "bytes=0-511"
        cld = cvd.read_container(root / "current" / "test.cld")
        published = genuine(f"test-{version}.cvd")
        assert cld.header.version == version
        (root / "published.cvd").write_bytes(published)
        assert cld.members == cvd.read_container(root / "published.cvd").members
        (root / "published.cvd").unlink()
        assert active(root) == {"test": version, "extra": 7}
    db = Database.load(root / "current")
    assert db.version == "extra 7, test 6"
    assert Store(root).current().meta["eicar"] == "Eicar-Test-Signature"


def test_several_versions_behind_applies_every_diff_in_one_run(root, mirror, extra,
                                                                trust_test_root):
    installed_at_version(root, mirror, extra, 2)
    mirror.requests.clear()
    mirror.publish_genuine(6)
    outcome = mirror_update(root, mirror)
    assert outcome.ok and outcome.changes[0].how == "cdiff"
    assert [p for p in mirror.paths() if p.endswith(".cdiff")] == [
        f"test-{k}.cdiff" for k in range(3, 7)]
    assert active(root)["test"] == 6


def test_a_mirror_without_sign_files_is_verified_with_clamav_s_classic_keys(root, mirror, extra):
    mirror.files["extra.cud"] = extra
    mirror.publish_genuine(3, signs=False)
    assert mirror_update(root, mirror, trust_dirs=()).ok
    mirror.publish_genuine(5, signs=False)
    outcome = mirror_update(root, mirror, trust_dirs=())
    assert outcome.ok and outcome.changes[0].how == "cdiff"
    assert active(root)["test"] == 5


# -- fallbacks ---------------------------------------------------------------------------------

def test_a_missing_diff_falls_back_to_the_whole_container(root, mirror, extra, trust_test_root):
    installed_at_version(root, mirror, extra, 3)
    mirror.publish_genuine(5)
    del mirror.files["test-5.cdiff"]
    outcome = mirror_update(root, mirror)
    assert outcome.ok and outcome.changes[0].how == "full"
    assert outcome.changes[0].file == "test.cvd"
    assert any("incremental update stopped" in w and "test-5.cdiff: not found" in w
               for w in outcome.warnings)
    assert active_file(root, "test.cvd") == genuine("test-5.cvd")
    assert not (root / "current" / "test.cld").exists()


def test_a_diff_that_does_not_apply_falls_back_to_the_whole_container(root, mirror, extra,
                                                                       trust_test_root):
    installed_at_version(root, mirror, extra, 3)
    mirror.publish_genuine(4, signs=False)
    mirror.files["test-4.cdiff"] = genuine("test-5.cdiff")  # signed, but for another version
    outcome = mirror_update(root, mirror)
    assert outcome.ok and outcome.changes[0].how == "full"
    assert any("test-4.cdiff: its header says version 5, expected 4" in w
               for w in outcome.warnings)
    assert active(root)["test"] == 4


def test_a_diff_cut_short_falls_back_to_the_whole_container(root, mirror, extra,
                                                            trust_test_root):
    installed_at_version(root, mirror, extra, 3)
    mirror.publish_genuine(4, signs=False)
    mirror.files["test-4.cdiff"] = genuine("test-4.cdiff")[:300]
    outcome = mirror_update(root, mirror)
    assert outcome.ok and outcome.changes[0].how == "full"
    assert active(root)["test"] == 4


# -- bad input: the active database stays, one clear error -------------------------------------

def fails(root, mirror, expected: str, before: dict, **kw):
    label = Store(root).current_label()
    outcome = mirror_update(root, mirror, **kw)
    assert not outcome.ok and outcome.result == "failed"
    assert len(outcome.errors) == 1, outcome.errors
    (error,) = outcome.errors
    assert expected in error, error
    assert "\n" not in error
    assert outcome.active == label
    assert Store(root).current_label() == label
    assert active(root) == before
    assert not list(root.glob(".staging-*"))
    saved = state_mod.load(root)
    assert saved.last_result == "failed" and expected in saved.last_error
    return error


@pytest.fixture(scope="module")
def installed_v3(tmp_path_factory):
    """Version 3 installed once (from a directory); each test starts from a copy."""
    base = tmp_path_factory.mktemp("installed-v3")
    source = copy_genuine(base / "source", 3)
    cud = write_cud(base / "extra.cud", {"extra.hdb": md5_line(EXTRA_SAMPLE, "Lmsav.Extra")})
    (source / "extra.cud").write_bytes(cud.read_bytes())
    assert update(base / "bases", options(str(source), databases=("test", "extra.cud"))).ok
    return base / "bases"


@pytest.fixture
def at_version_3(root, mirror, extra, trust_test_root, installed_v3):
    shutil.copytree(installed_v3, root, symlinks=True)
    mirror.files["extra.cud"] = extra
    mirror.publish_genuine(4, cdiffs=False)  # whole containers only from here on
    return active(root)


def altered(data: bytes, offset: int) -> bytes:
    out = bytearray(data)
    out[offset] ^= 0x01
    return bytes(out)


def test_truncated_download(root, mirror, at_version_3):
    mirror.faults["test.cvd"] = [None, "truncate", "truncate"]
    fails(root, mirror, "test.cvd: connection closed early", at_version_3)


def test_truncated_file_served_in_full(root, mirror, at_version_3):
    mirror.files["test.cvd"] = genuine("test-4.cvd")[:-100]
    fails(root, mirror, "test.cvd: MD5 of the body does not match the header", at_version_3)


def test_wrong_md5(root, mirror, at_version_3):
    mirror.files["test.cvd"] = altered(genuine("test-4.cvd"), 2000)
    fails(root, mirror, "MD5 of the body does not match the header", at_version_3)


def test_bad_signature(root, mirror, at_version_3):
    data = genuine("test-4.cvd")
    header = data[:512].decode()
    fields = header.split(":")
    fields[6] = fields[6][:-1] + ("a" if fields[6][-1] != "a" else "b")
    del mirror.files["test-4.cvd.sign"]
    mirror.files["test.cvd"] = ":".join(fields).encode() + data[512:]
    fails(root, mirror, "bad digital signature: it does not match ClamAV's key", at_version_3)


def test_missing_signature(root, mirror, at_version_3):
    data = genuine("test-4.cvd")
    fields = data[:512].decode().rstrip(" ").split(":")
    fields[6] = "X"
    del mirror.files["test-4.cvd.sign"]
    mirror.files["test.cvd"] = ":".join(fields).ljust(512).encode() + data[512:]
    fails(root, mirror, "no digital signature in the header of a .cvd", at_version_3)


def test_a_sign_file_that_does_not_verify_refuses_the_container(root, mirror, at_version_3):
    mirror.files["test-4.cvd.sign"] = genuine("test-5.cvd.sign")
    fails(root, mirror, "test-4.cvd.sign does not verify", at_version_3)


def test_an_untrusted_sign_file_refuses_the_container(root, mirror, at_version_3):
    fails(root, mirror, "test-4.cvd.sign does not verify: unable to get local issuer",
          at_version_3, trust_dirs=())


def test_a_diff_that_does_not_apply_and_no_whole_container(root, mirror, at_version_3):
    mirror.publish_genuine(4)
    mirror.files["test-4.cdiff"] = genuine("test-5.cdiff")
    del mirror.files["test-4.cdiff.sign"]
    mirror.faults["test.cvd"] = [None, "404"]  # the header is there, the file is gone
    fails(root, mirror, "test.cvd: not found (404)", at_version_3)


def test_html_error_page_with_status_200(root, mirror, at_version_3):
    mirror.faults["test.cvd"] = "html"
    fails(root, mirror, "answered with an HTML page", at_version_3)


def test_404(root, mirror, at_version_3):
    del mirror.files["test.cvd"]
    fails(root, mirror, "test.cvd: not found (404)", at_version_3)


def test_500(root, mirror, at_version_3):
    mirror.faults["test.cvd"] = "500"
    fails(root, mirror, "test.cvd: server error 500", at_version_3)


def test_timeout(root, mirror, at_version_3):
    mirror.faults["test.cvd"] = ["pause:1.5"] * 2
    fails(root, mirror, "test.cvd: no answer within 0.5 s", at_version_3, timeout=0.5)


def test_disk_full_while_staging(root, mirror, at_version_3, monkeypatch):
    from lmsav.update import http

    def full(out, chunk, path):
        raise http.StagingError(f"{path}: {os.strerror(errno.ENOSPC)}")

    monkeypatch.setattr(http, "_write", full)
    fails(root, mirror, "staging failed: ", at_version_3)
    assert "No space left on device" in state_mod.load(root).last_error


def test_disk_full_while_writing_the_version(root, mirror, at_version_3, monkeypatch):
    from lmsav.update import updater

    def full(directory, meta):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(directory / "meta"))

    monkeypatch.setattr(updater, "write_meta", full)
    fails(root, mirror, "No space left on device", at_version_3)


def test_clock_skew_expired_certificates_refuse_with_a_hint(root, mirror, at_version_3):
    future = int(time.mktime((2040, 1, 1, 0, 0, 0, 0, 0, 0)))
    error = fails(root, mirror, "certificate has expired", at_version_3, check_time=future)
    assert error.endswith("(is the system clock right?)")


def test_a_database_that_flags_clean_data_is_refused(root, mirror, at_version_3, tmp_path):
    from lmsav.update.selftest import CLEAN

    (tmp_path / "bad").mkdir()
    cud = write_cud(tmp_path / "bad" / "extra.cud", {"extra.hdb": md5_line(CLEAN, "Everything")},
                    version=8)
    mirror.files["extra.cud"] = cud.read_bytes()
    fails(root, mirror, "the new database reports a clean sample as Everything", at_version_3)


def test_a_database_that_lost_eicar_is_refused(root, mirror, at_version_3):
    mirror.files["test.cvd"] = genuine("test-2.cvd")  # no EICAR signature yet
    mirror.files["test-2.cvd.sign"] = genuine("test-2.cvd.sign")
    fails(root, mirror, "no longer detects the EICAR test file", at_version_3,
          allow_downgrade=True)


# -- versions, downgrades, rollback ------------------------------------------------------------

def test_an_older_version_is_kept_out_unless_allowed(root, mirror, extra, trust_test_root):
    installed_at_version(root, mirror, extra, 5)
    mirror.publish_genuine(4)
    outcome = mirror_update(root, mirror)
    assert outcome.ok and outcome.result == "current"
    assert outcome.changes[0].how == "kept"
    assert "offers version 4, older than the active 5; kept 5" in outcome.warnings[0]
    assert active(root)["test"] == 5
    outcome = mirror_update(root, mirror, allow_downgrade=True)
    assert outcome.ok and outcome.changes[0].how == "downgrade"
    assert active(root)["test"] == 4


def test_keep_versions_and_rollback(root, mirror, extra, trust_test_root):
    for version in (3, 4, 5, 6):
        installed_at_version(root, mirror, extra, version, keep_versions=3)
    store = Store(root)
    assert [v.label for v in store.versions()] == [
        "test-4_extra-7", "test-5_extra-7", "test-6_extra-7"]
    outcome = rollback(root, None)
    assert outcome.ok and outcome.result == "rolled back"
    assert (outcome.previous, outcome.active) == ("test-6_extra-7", "test-5_extra-7")
    assert rollback(root, None).active == "test-4_extra-7"
    with pytest.raises(NoSuchVersion, match="no version older than test-4_extra-7 is kept"):
        rollback(root, None)
    assert rollback(root, "test-6_extra-7").active == "test-6_extra-7"
    with pytest.raises(NoSuchVersion, match=r"no version test-2_extra-7 in .*kept: "
                                            r"test-4_extra-7, test-5_extra-7, test-6_extra-7"):
        rollback(root, "test-2_extra-7")
    assert active(root)["test"] == 6


def test_after_a_rollback_the_next_update_reuses_the_kept_newer_version(root, mirror, extra,
                                                                      trust_test_root):
    installed_at_version(root, mirror, extra, 3)
    installed_at_version(root, mirror, extra, 4)
    rollback(root, None)
    assert active(root)["test"] == 3
    mirror.requests.clear()
    outcome = mirror_update(root, mirror)
    assert outcome.ok and outcome.changes[0].how == "reused"
    assert mirror.paths() == ["test.cvd", "extra.cud"]  # headers only: nothing downloaded
    assert active(root)["test"] == 4


# -- sources: failover, local directories, politeness ------------------------------------------

def test_failover_to_the_next_mirror(root, mirror, second_mirror, extra, trust_test_root):
    mirror.faults["test.cvd"] = "500"
    second_mirror.files["extra.cud"] = extra
    second_mirror.publish_genuine(3)
    outcome = update(root, options(mirror.url, second_mirror.url,
                                   databases=("test", "extra.cud"), trust_dirs=(TEST_CERTS,)))
    assert outcome.ok and outcome.source == second_mirror.url
    assert "server error 500; used the next source" in outcome.warnings[0]


def test_a_name_that_does_not_resolve_fails_over(root, second_mirror, extra, trust_test_root,
                                                 monkeypatch):
    import socket

    resolve = socket.getaddrinfo

    def no_such_name(host, *args, **kwargs):
        if host == "lmsav-update-test.invalid":
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return resolve(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", no_such_name)
    second_mirror.files["extra.cud"] = extra
    second_mirror.publish_genuine(3)
    outcome = update(root, options("http://lmsav-update-test.invalid", second_mirror.url,
                                   databases=("test", "extra.cud"), timeout=2))
    assert outcome.ok and outcome.source == second_mirror.url
    assert "lmsav-update-test.invalid/test.cvd: cannot connect" in outcome.warnings[0]


def test_directory_and_file_url_sources(root, tmp_path, extra):
    source = copy_genuine(tmp_path / "offline", 4)
    (source / "extra.cud").write_bytes(extra)
    outcome = update(root, options(str(source), databases=("test", "extra.cud")))
    assert outcome.ok and active(root)["test"] == 4
    copy_genuine(source, 6)
    outcome = update(root, options(f"file://{source}", databases=("test", "extra.cud")))
    assert outcome.ok and outcome.changes[0].how == "full" and active(root)["test"] == 6


def test_a_newer_cld_in_a_directory_wins_over_its_cvd(root, tmp_path, extra):
    source = copy_genuine(tmp_path / "freshclam", 3)
    (source / "extra.cud").write_bytes(extra)
    (tmp_path / "cld").mkdir()
    from lmsav.update import tree

    work = tmp_path / "work"
    tree.unpack(cvd.read_container(copy_genuine(tmp_path / "v5", 5) / "test.cvd"), work)
    tree.write_cld(work, "test", source / "test.cld")
    outcome = update(root, options(str(source), databases=("test", "extra.cud")))
    assert outcome.ok and outcome.changes[0].file == "test.cld"
    assert active(root)["test"] == 5


def test_the_network_is_asked_at_most_once_per_interval(root, mirror, extra, trust_test_root):
    mirror.files["extra.cud"] = extra
    mirror.publish_genuine(3)
    assert mirror_update(root, mirror, check_interval=3600).ok
    asked = len(mirror.requests)
    outcome = mirror_update(root, mirror, check_interval=3600)
    assert outcome.ok and len(mirror.requests) == asked
    assert re.search(r"the sources were checked \d s ago; next check after", outcome.warnings[0])


def test_after_a_failed_check_the_next_run_asks_again(root, mirror, extra, trust_test_root):
    mirror.files["extra.cud"] = extra
    mirror.publish_genuine(3)
    mirror.faults["test.cvd"] = ["500", "500"]
    assert not mirror_update(root, mirror, check_interval=3600).ok
    assert mirror_update(root, mirror, check_interval=3600).ok


def test_a_clock_that_went_back_does_not_hold_checks_off(root, mirror, extra, trust_test_root):
    mirror.files["extra.cud"] = extra
    mirror.publish_genuine(3)
    assert mirror_update(root, mirror, check_interval=3600).ok
    saved = state_mod.load(root)
    saved.last_check = time.time() + 30 * 86400  # checked "next month"
    state_mod.save(root, saved, time.time())
    asked = len(mirror.requests)
    assert mirror_update(root, mirror, check_interval=3600).ok
    assert len(mirror.requests) > asked


def test_429_cools_the_mirror_down_across_runs(root, mirror, second_mirror, extra,
                                               trust_test_root):
    mirror.faults["test.cvd"] = "429:7200"
    outcome = mirror_update(root, mirror)
    assert not outcome.ok and "too many requests (429), asked to wait 2.0 h" in outcome.errors[0]
    until = state_mod.load(root).cool_downs[mirror.url]
    assert 7100 < until - time.time() <= 7200
    asked = len(mirror.requests)
    outcome = mirror_update(root, mirror)
    assert not outcome.ok and "asked to be left alone until" in outcome.errors[0]
    assert len(mirror.requests) == asked  # not asked again
    second_mirror.files["extra.cud"] = extra
    second_mirror.publish_genuine(3)
    outcome = update(root, options(mirror.url, second_mirror.url,
                                   databases=("test", "extra.cud"), trust_dirs=(TEST_CERTS,)))
    assert outcome.ok and outcome.source == second_mirror.url
    assert len(mirror.requests) == asked


def test_a_cool_down_beyond_any_mirror_s_request_is_clock_skew_and_ignored(root, mirror, extra,
                                                                         trust_test_root):
    saved = state_mod.State(cool_downs={mirror.url: time.time() + 40 * 86400})
    root.mkdir()
    state_mod.save(root, saved, time.time())
    mirror.files["extra.cud"] = extra
    mirror.publish_genuine(3)
    assert mirror_update(root, mirror).ok


def test_a_second_update_at_the_same_time_is_refused(root, mirror, extra):
    root.mkdir()
    holder = subprocess.Popen(
        [sys.executable, "-c", ("import fcntl, os, sys, time\n"
         "fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT)\n"
         "fcntl.lockf(fd, fcntl.LOCK_EX)\n"
         "os.write(fd, str(os.getpid()).encode())\n"
         "print('locked', flush=True)\n"
         "time.sleep(60)\n"), str(root / ".update.lock")], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline() == "locked\n"
        outcome = mirror_update(root, mirror)
    finally:
        holder.kill()
        holder.wait()
    assert not outcome.ok
    assert outcome.errors == [(f"another lmsav update is running (pid {holder.pid}); "
                              f"{root}/.update.lock is locked")]
    assert mirror.requests == []


def test_what_an_interrupted_run_left_is_cleaned_up(root, mirror, extra, trust_test_root):
    installed_at_version(root, mirror, extra, 3)
    (root / ".staging-old").mkdir()
    (root / ".staging-old" / "daily.cvd").write_bytes(b"half")
    os.symlink("nowhere", root / ".current-12345")
    mirror.publish_genuine(4)
    assert mirror_update(root, mirror).ok
    assert sorted(p.name for p in root.iterdir() if p.name.startswith(".")) == [
        ".update-state.json", ".update.lock"]


# -- status ------------------------------------------------------------------------------------

def test_status_reports_versions_checks_and_age(root, mirror, extra, trust_test_root):
    from lmsav.update.status import status

    installed_at_version(root, mirror, extra, 3)
    installed_at_version(root, mirror, extra, 4)
    report = status(root, root / "current", max_age=7 * 86400, check_interval=3600,
                    network=True, now=time.time())
    json.dumps(report)
    assert report["active"] == "test-4_extra-7"
    assert [v["label"] for v in report["versions"]] == ["test-4_extra-7", "test-3_extra-7"]
    assert report["versions"][0]["active"] is True
    assert {d["name"]: d["version"] for d in report["databases"]} == {"test": 4, "extra": 7}
    assert report["last_result"] == "updated" and report["last_error"] is None
    assert report["next_check"] == pytest.approx(report["last_check"] + 3600)
    newest = max(d["built_at"] for d in report["databases"])

    def at(now, configured=root / "current"):
        return status(root, configured, max_age=7 * 86400, check_interval=0, network=False,
                      now=now)

    fresh = at(newest + 86400)
    assert fresh["ok"] is True and fresh["warnings"] == []
    stale = at(newest + 8 * 86400)
    assert stale["too_old"] is True and stale["ok"] is False
    assert stale["warnings"] == [("the newest database was built 8.0 days ago, more than "
                                 "max_age (7.0 days): updates are not arriving")]
    elsewhere = at(newest, root.parent / "clamav")
    assert any("lmsav scans with another database" in w for w in elsewhere["warnings"])
    skewed = at(newest - 400 * 86400)  # a clock a year behind the databases' build times
    assert any("built in the future" in w and "clock" in w for w in skewed["warnings"])


# -- generated containers and diffs ------------------------------------------------------------

@pytest.fixture
def own_ca(tmp_path):
    """A certificate authority of the test's own and a signer under it, to make .sign files for
    diffs that ClamAV never published (its classic key cannot be had)."""
    ca = tmp_path / "own-ca"
    ca.mkdir()

    def openssl(*args):
        subprocess.run(["openssl", *args], cwd=ca, check=True, capture_output=True)

    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "root.key", "-out",
            "root.crt", "-days", "30", "-subj", "/CN=lmsav test root",
            "-addext", "basicConstraints=critical,CA:TRUE",
            "-addext", "keyUsage=critical,keyCertSign")
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "signer.key", "-out",
            "signer.csr", "-subj", "/CN=lmsav test signer")
    (ca / "signer.ext").write_text("extendedKeyUsage=emailProtection,codeSigning\n"
                                   "keyUsage=digitalSignature\n")
    openssl("x509", "-req", "-in", "signer.csr", "-CA", "root.crt", "-CAkey", "root.key",
            "-CAcreateserial", "-out", "signer.crt", "-days", "30", "-extfile", "signer.ext")
    trusted = ca / "trusted"
    trusted.mkdir()
    (trusted / "root.crt").write_bytes((ca / "root.crt").read_bytes())

    def sign(data: bytes) -> bytes:
        (ca / "data").write_bytes(data)
        openssl("smime", "-sign", "-binary", "-in", "data", "-signer", "signer.crt", "-inkey",
                "signer.key", "-outform", "DER", "-out", "data.der")
        der = (ca / "data.der").read_bytes()
        return b"#clamsign-1.0\n0::pkcs7-pem:" + base64.b64encode(der) + b"\n"

    return trusted, sign


def test_a_signed_diff_whose_script_does_not_apply_falls_back_to_the_whole_container(
        root, mirror, extra, own_ca):
    trusted, sign = own_ca
    mirror.files["extra.cud"] = extra
    mirror.publish_genuine(3, signs=False, cdiffs=False)
    assert mirror_update(root, mirror, trust_dirs=(trusted,)).ok
    mirror.publish_genuine(4, signs=False, cdiffs=False)
    script = b"OPEN test.info\nDEL 1 NotTheHeader\nCLOSE\n"
    diff = b"ClamAV-Diff:4:%d:" % len(script) + gzip.compress(script) + b":unsigned"
    mirror.files["test-4.cdiff"] = diff
    mirror.files["test-4.cdiff.sign"] = sign(diff)
    outcome = mirror_update(root, mirror, trust_dirs=(trusted,))
    assert outcome.ok and outcome.changes[0].how == "full"
    assert ("test: incremental update stopped (test-4.cdiff: line 3: DEL: line 1 of test.info "
            "does not start with 'NotTheHeader'); downloading test.cvd") in outcome.warnings
    assert active(root)["test"] == 4


@pytest.mark.integration
@pytest.mark.skipif(shutil.which("sigtool") is None, reason="ClamAV's sigtool is not installed")
def test_a_container_built_by_sigtool_is_served_and_installed(root, mirror, tmp_path, eicar):
    from lmsav.scanner.engine import Engine

    from ..scanner.signatures.test_cvd import sigtool_cud

    databases = {"lmsav.hdb": md5_line(EXTRA_SAMPLE, "Lmsav.Sigtool.Sample")}
    (tmp_path / "v1").mkdir()
    mirror.files["lmsav.cud"] = sigtool_cud(tmp_path / "v1", databases, "lmsav.cud",
                                            version=11).read_bytes()
    outcome = mirror_update(root, mirror, databases=("lmsav.cud",), trust_dirs=())
    assert outcome.ok and active(root) == {"lmsav": 11}
    (tmp_path / "v2").mkdir()
    databases["lmsav.ndb"] = b"Lmsav.Sigtool.Body:0:*:6c6d736176207369677461736b\n"
    mirror.files["lmsav.cud"] = sigtool_cud(tmp_path / "v2", databases, "lmsav.cud",
                                            version=12).read_bytes()
    outcome = mirror_update(root, mirror, databases=("lmsav.cud",), trust_dirs=())
    assert outcome.ok and outcome.changes[0].how == "full" and active(root) == {"lmsav": 12}
    engine = Engine(Database.load(root / "current"))
    assert [t.name for _p, t in engine.scan_bytes(EXTRA_SAMPLE).threats] == [
        "Lmsav.Sigtool.Sample.UNOFFICIAL"]
