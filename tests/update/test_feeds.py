"""Third-party feeds and YARA rule sets over a real HTTP mirror and from local paths: each
installed beside ClamAV's containers when its rule holds (sha256 pin, signature by a trusted key,
https or a local path), refused with one line otherwise, the previous database active."""

from __future__ import annotations

import hashlib
import io
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from lmsav.config import ConfigError, load_settings
from lmsav.update import keys
from lmsav.update.feeds import Feed, parse_feeds
from lmsav.update.store import Store
from lmsav.update.updater import update

from .conftest import options

SAMPLE = b"lmsav third-party feed sample: not a virus\n"
NDB = f"Feed.Test.Sample:0:*:{SAMPLE[:30].hex()}\n".encode()
YARA_SAMPLE = b"lmsav yara rule set sample: not a virus\n"
YARA = b'rule Lmsav_Feed_Yara_Test { strings: $a = "lmsav yara rule set sample" condition: $a }\n'


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def rule_set(*members: tuple[str, bytes]) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w:gz") as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return out.getvalue()


def run(mirror, root: Path, *feeds: Feed, version: int = 1, key_dirs=()):
    mirror.publish_genuine(version, signs=False)
    return update(root, options(mirror.url, feeds=feeds, key_dirs=key_dirs))


def scan(tmp_path: Path, root: Path, target: Path) -> subprocess.CompletedProcess:
    config = tmp_path / "scan.toml"
    config.write_text(f'[paths]\ndatabase = "{root}/current"\nstate_dir = "{tmp_path}/state"\n'
                      f'run_dir = "{tmp_path}/run"\n')
    return subprocess.run([sys.executable, "-m", "lmsav", "--config", str(config), "scan",
                           str(target)], capture_output=True, text=True, check=False)


def test_a_pinned_feed_and_a_yara_rule_set_are_installed_and_detect(
        mirror, trust_test_root, tmp_path):
    mirror.files["feeds/phish.ndb"] = NDB
    mirror.files["rules/mail.tar.gz"] = rule_set(("mail-rules/mail.yar", YARA),
                                                 ("mail-rules/README", b"not a rule\n"))
    root = tmp_path / "bases"
    outcome = run(mirror, root,
                  Feed(f"{mirror.url}/feeds/phish.ndb", sha256=sha(NDB)),
                  Feed(f"{mirror.url}/rules/mail.tar.gz",
                       sha256=sha(mirror.files["rules/mail.tar.gz"])))
    assert outcome.ok and outcome.result == "updated", outcome.errors
    assert [(e["files"], e["verified"]) for e in outcome.extras] == [
        (["phish.ndb"], "sha256 pin"), (["mail.yar"], "sha256 pin")]
    active = Store(root).current().path
    assert (active / "phish.ndb").read_bytes() == NDB
    assert (active / "mail.yar").read_bytes() == YARA
    assert not (active / "README").exists()
    for sample, name in ((SAMPLE, "Feed.Test.Sample"), (YARA_SAMPLE, "Lmsav_Feed_Yara_Test")):
        target = tmp_path / f"{name}.txt"
        target.write_bytes(sample)
        proc = scan(tmp_path, root, target)
        assert proc.returncode == 1, proc.stdout + proc.stderr
        assert name in proc.stdout


def test_a_feed_with_a_wrong_pin_is_refused_and_the_previous_database_stays(
        mirror, trust_test_root, tmp_path):
    mirror.files["phish.ndb"] = NDB
    root = tmp_path / "bases"
    before = run(mirror, root, Feed(f"{mirror.url}/phish.ndb", sha256=sha(NDB)))
    assert before.result == "updated", before.errors
    mirror.files["phish.ndb"] = NDB + b"Feed.Test.Everything:0:*:00\n"  # the feed was changed
    after = run(mirror, root, Feed(f"{mirror.url}/phish.ndb", sha256=sha(NDB)), version=2)
    assert not after.ok and after.result == "failed"
    expected = (f"feed refused: {mirror.url}/phish.ndb: SHA-256 "
                f"{sha(mirror.files['phish.ndb'])}, not the pinned {sha(NDB)}")
    assert after.errors == [expected]
    assert Store(root).current_label() == before.active
    assert (Store(root).current().path / "phish.ndb").read_bytes() == NDB


def test_a_signed_rule_set_needs_its_signature_by_a_trusted_key(
        mirror, trust_test_root, tmp_path):
    private = Ed25519PrivateKey.generate()
    store = tmp_path / "keys"
    (tmp_path / "feed.pub").write_bytes(keys.public_pem(private.public_key()))
    keys.add(tmp_path / "feed.pub", "rules", store)
    archive = rule_set(("mail.yar", YARA))
    mirror.files["mail.tar.gz"] = archive
    mirror.files["mail.tar.gz.sig"] = keys.sign(archive, private)
    feed = Feed(f"{mirror.url}/mail.tar.gz", signed=True)
    root = tmp_path / "bases"
    good = run(mirror, root, feed, key_dirs=(store,))
    assert good.ok and good.extras[0]["verified"] == "key rules", good.errors

    mirror.files["mail.tar.gz"] = rule_set(("mail.yar", YARA), ("more.yar", YARA.replace(
        b"Lmsav_Feed_Yara_Test", b"Lmsav_Other")))
    changed = run(mirror, root, feed, version=2, key_dirs=(store,))
    assert not changed.ok and "bad signature (key rules)" in changed.errors[0]
    del mirror.files["mail.tar.gz.sig"]
    unsigned = run(mirror, root, feed, version=2, key_dirs=(store,))
    expected = (f"feed refused: {mirror.url}/mail.tar.gz: no signature "
                f"({mirror.url}/mail.tar.gz.sig) and signed = true")
    assert unsigned.errors == [expected]
    assert Store(root).current_label() == good.active


def test_an_unreachable_feed_fails_the_update_with_one_line(mirror, trust_test_root, tmp_path):
    root = tmp_path / "bases"
    outcome = run(mirror, root, Feed(f"{mirror.url}/gone.ndb", sha256=sha(NDB)))
    assert not outcome.ok and len(outcome.errors) == 1
    assert outcome.errors[0].startswith(f"feed {mirror.url}/gone.ndb: ")
    assert "404" in outcome.errors[0] or "not found" in outcome.errors[0]
    assert Store(root).current_label() is None


def test_local_feeds_a_yara_directory_and_an_html_page(mirror, trust_test_root, tmp_path):
    rules = tmp_path / "yara"
    rules.mkdir()
    (rules / "mail.yar").write_bytes(YARA)
    (rules / "notes.txt").write_text("not a rule\n")
    root = tmp_path / "bases"
    outcome = run(mirror, root, Feed(str(rules)))
    assert outcome.ok, outcome.errors
    assert outcome.extras[0]["files"] == ["mail.yar"]
    assert outcome.extras[0]["verified"] == "local"
    page = tmp_path / "portal.ndb"
    page.write_bytes(b"<!DOCTYPE html><html><body>Log in</body></html>\n")
    refused = run(mirror, root, Feed(f"file://{page}"), version=2)
    assert refused.errors == [f"feed file://{page}: an HTML page, not signatures"]
    assert Store(root).current_label() == outcome.active


@pytest.mark.parametrize(("value", "reason"), [
    (["http://feeds.example.org/x.ndb"], "plain http:// needs a sha256 pin or signed = true"),
    ([{"url": "https://feeds.example.org/x.ndb", "sha256": "abc"}], "sha256 is 64 hex digits"),
    ([{"url": "https://example.org/acme.bundle", "sha256": "0" * 64}], "not a sha256 pin"),
    ([{"url": "/srv/yara", "signed": True}], "a directory takes no sha256 or signed"),
    (["relative/x.ndb"], "an absolute path"),
    ([{"url": "https://feeds.example.org/x.ndb", "pin": "x"}], "a URL or a table"),
])
def test_feed_entries_that_break_their_rule_are_configuration_errors(value, reason):
    with pytest.raises(ValueError, match=reason):
        parse_feeds(value)


def test_the_configuration_file_reads_feeds_and_names_a_bad_one(tmp_path):
    good = tmp_path / "good.toml"
    good.write_text('[update]\nfeeds = ["https://signatures.example.org/acme.bundle", '
                    f'{{url = "http://feeds.example.org/x.ndb", sha256 = "{"a" * 64}"}}]\n')
    feeds = load_settings(good, None, {}, required=True).update.feeds
    assert [f.kind for f in feeds] == ["bundle", "file"]
    bad = tmp_path / "bad.toml"
    bad.write_text('[update]\nfeeds = ["http://feeds.example.org/x.ndb"]\n')
    with pytest.raises(ConfigError, match=r"update.feeds = .*plain http:// needs sha256"):
        load_settings(bad, None, {}, required=True)
