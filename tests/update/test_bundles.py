"""lmsav bundles over a real HTTP mirror: a good one is installed beside ClamAV's containers and
`lmsav scan` finds its signature; a tampered one, one signed by another key, one without its
.sig and one whose key was removed are refused with one line, the previous database active.
The trust store is driven through `lmsav keys` on the system's default paths."""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from lmsav.update import bundle, keys
from lmsav.update.feeds import Feed
from lmsav.update.store import Store
from lmsav.update.updater import update

from ..jsonlines import records
from .conftest import options

SAMPLE = b"lmsav acme bundle sample: not a virus\n"
NDB = f"Acme.Test.Sample:0:*:{SAMPLE[:30].hex()}\n".encode()


@pytest.fixture
def publisher(tmp_path):
    """A publisher's key pair, its public half trusted in a store of the test's own."""
    private = Ed25519PrivateKey.generate()
    (tmp_path / "acme.key").write_bytes(keys.private_pem(private))
    (tmp_path / "acme.pub").write_bytes(keys.public_pem(private.public_key()))
    store = tmp_path / "keys"
    keys.add(tmp_path / "acme.pub", "acme", store)
    return private, store


def built(tmp_path: Path, private, version: int = 1, ndb: bytes = NDB) -> tuple[bytes, bytes]:
    (tmp_path / "acme.ndb").write_bytes(ndb)
    bundle_path, sig_path = bundle.build("acme", version, [tmp_path / "acme.ndb"], private,
                                         tmp_path / f"out-{version}")
    return bundle_path.read_bytes(), sig_path.read_bytes()


def run(mirror, root: Path, store: Path, *feeds: str, version: int = 1):
    mirror.publish_genuine(version, signs=False)
    return update(root, options(mirror.url, feeds=tuple(Feed(f) for f in feeds),
                                key_dirs=(store,), check_time=None))


def scan(tmp_path: Path, root: Path, target: Path) -> subprocess.CompletedProcess:
    config = tmp_path / "scan.toml"
    config.write_text(f'[paths]\ndatabase = "{root}/current"\nstate_dir = "{tmp_path}/state"\n'
                      f'run_dir = "{tmp_path}/run"\n')
    return subprocess.run([sys.executable, "-m", "lmsav", "--config", str(config), "scan",
                           str(target)], capture_output=True, text=True, check=False)


def test_a_good_bundle_is_installed_and_lmsav_scan_finds_its_signature(
        mirror, trust_test_root, publisher, tmp_path):
    private, store = publisher
    mirror.files["acme.bundle"], mirror.files["acme.bundle.sig"] = built(tmp_path, private)
    root = tmp_path / "bases"
    outcome = run(mirror, root, store, f"{mirror.url}/acme.bundle")
    assert outcome.ok and outcome.result == "updated", outcome.errors
    assert outcome.extras[0]["verified"] == "key acme"
    assert outcome.extras[0]["detail"] == "acme 1"
    active = Store(root).current()
    assert (active.path / "acme.ndb").read_bytes() == NDB
    assert (active.path / "test.cvd").is_file()  # beside ClamAV's container
    assert active.meta["extras"][0]["files"] == ["acme.ndb"]
    sample = tmp_path / "sample.txt"
    sample.write_bytes(SAMPLE)
    proc = scan(tmp_path, root, sample)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "Acme.Test.Sample" in proc.stdout
    # Nothing changed: a second run is current, and makes no new version.
    again = run(mirror, root, store, f"{mirror.url}/acme.bundle")
    assert again.result == "current" and again.active == outcome.active


def test_a_new_bundle_version_alone_makes_a_new_database_version(
        mirror, trust_test_root, publisher, tmp_path):
    private, store = publisher
    mirror.files["acme.bundle"], mirror.files["acme.bundle.sig"] = built(tmp_path, private)
    root = tmp_path / "bases"
    first = run(mirror, root, store, f"{mirror.url}/acme.bundle")
    mirror.files["acme.bundle"], mirror.files["acme.bundle.sig"] = built(
        tmp_path, private, 2, NDB + b"Acme.Test.Second:0:*:6c6d7361762d61636d652d7365636f6e64\n")
    second = run(mirror, root, store, f"{mirror.url}/acme.bundle")
    assert second.result == "updated" and second.active != first.active
    assert second.extras[0]["detail"] == "acme 2"
    assert b"Acme.Test.Second" in (Store(root).current().path / "acme.ndb").read_bytes()


def _tampered_member(bundle_bytes: bytes) -> bytes:
    """The same signed manifest, a file changed after signing."""
    out = io.BytesIO()
    with tarfile.open(fileobj=io.BytesIO(bundle_bytes), mode="r:gz") as src, \
            tarfile.open(fileobj=out, mode="w:gz") as dst:
        for info in src:
            data = src.extractfile(info).read()
            if info.name == "acme.ndb":
                data = data.replace(b"Acme.Test.Sample", b"Acme.Test.Evil00")
            info.size = len(data)
            dst.addfile(info, io.BytesIO(data))
    return out.getvalue()


def _tampered_manifest(bundle_bytes: bytes) -> bytes:
    """The manifest itself edited (the version raised) after signing."""
    out = io.BytesIO()
    with tarfile.open(fileobj=io.BytesIO(bundle_bytes), mode="r:gz") as src, \
            tarfile.open(fileobj=out, mode="w:gz") as dst:
        for info in src:
            data = src.extractfile(info).read()
            if info.name == "manifest.json":
                data = data.replace(b'"version": 1', b'"version": 9')
            info.size = len(data)
            dst.addfile(info, io.BytesIO(data))
    return out.getvalue()


@pytest.mark.parametrize(("fault", "message"), [
    ("tampered file", "acme.ndb does not match its SHA-256 in the signed manifest"),
    ("tampered manifest", "bad signature (key acme)"),
    ("wrong key", "which is not trusted"),
    ("missing sig", "no signature"),
    ("removed key", "which is not trusted"),
    ("garbage sig", "not an lmsav signature file"),
])
def test_a_bad_bundle_is_refused_and_the_previous_database_stays(
        mirror, trust_test_root, publisher, tmp_path, fault, message):
    private, store = publisher
    root = tmp_path / "bases"
    mirror.files["acme.bundle"], mirror.files["acme.bundle.sig"] = built(tmp_path, private)
    before = run(mirror, root, store, f"{mirror.url}/acme.bundle")
    assert before.result == "updated", before.errors
    del mirror.files["acme.bundle.sig"]
    data, sig = built(tmp_path, private)
    if fault == "tampered file":
        data = _tampered_member(data)
    elif fault == "tampered manifest":
        data = _tampered_manifest(data)
    elif fault == "wrong key":
        data, sig = built(tmp_path, Ed25519PrivateKey.generate())
    elif fault == "removed key":
        keys.remove("acme", store)
    elif fault == "garbage sig":
        sig = b"<html>not found</html>\n"
    mirror.files["acme.bundle"] = data
    if fault != "missing sig":
        mirror.files["acme.bundle.sig"] = sig
    after = run(mirror, root, store, f"{mirror.url}/acme.bundle", version=2)
    assert not after.ok and after.result == "failed"
    assert len(after.errors) == 1 and "\n" not in after.errors[0]
    assert message in after.errors[0], after.errors
    assert f"{mirror.url}/acme.bundle" in after.errors[0]
    assert Store(root).current_label() == before.active
    assert not list(root.glob(".staging-*"))


def test_the_bundle_writer_refuses_files_lmsav_would_not_read(publisher, tmp_path):
    private, _ = publisher
    (tmp_path / "notes.txt").write_text("hello\n")
    with pytest.raises(bundle.BundleError, match="not a signature file lmsav reads"):
        bundle.build("acme", 1, [tmp_path / "notes.txt"], private, tmp_path / "out")


# -- the documented path: openssl keys, `lmsav keys`, the bundle writer, `lmsav update` --------

def test_keys_and_a_bundle_on_the_default_paths_as_the_man_page_shows(sysroot, tmp_path):
    """man lmsav-keys(1) EXAMPLES, run as root on the system layout."""
    lmsav = sysroot.program("lmsav")
    env = {k: v for k, v in os.environ.items() if not k.startswith("LMSAV_")}
    work = tmp_path / "publisher"
    work.mkdir()
    os.chmod(tmp_path, 0o755)
    subprocess.run(["openssl", "genpkey", "-algorithm", "ed25519", "-out",
                    str(work / "acme.key")], check=True, capture_output=True)
    subprocess.run(["openssl", "pkey", "-in", str(work / "acme.key"), "-pubout", "-out",
                    str(work / "acme.pub")], check=True, capture_output=True)
    (work / "acme.ndb").write_bytes(NDB)
    subprocess.run([sys.executable, "-m", "lmsav.update.bundle", "build", "--key",
                    str(work / "acme.key"), "--name", "acme", "--version", "1", "--output",
                    str(work / "site"), str(work / "acme.ndb")], check=True, capture_output=True)

    added = sysroot.run(lmsav, "keys", "add", str(work / "acme.pub"), "--name", "acme", env=env)
    assert "added acme" in added.stdout
    assert sysroot.path("/etc/lmsav/keys/acme.pub").is_file()
    listed = records(sysroot.run(lmsav, "keys", "list", "--json", env=env).stdout)
    assert [(k["name"], k["scope"], k["path"]) for k in listed] == [
        ("acme", "system", "/etc/lmsav/keys/acme.pub")]
    twice = sysroot.run(lmsav, "keys", "add", str(work / "acme.pub"), "--name", "other",
                        env=env, check=False)
    assert twice.returncode == 2
    assert twice.stderr.strip() == ("lmsav: error: this key is already trusted as acme "
                                    "(/etc/lmsav/keys/acme.pub)")
    bad = sysroot.run(lmsav, "keys", "add", str(work / "acme.ndb"), "--name", "x", env=env,
                      check=False)
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1
    assert "not an Ed25519 public key" in bad.stderr

    # An offline server: ClamAV's container and the bundle in one directory.
    site = work / "site"
    shutil.copy(Path(__file__).parent / "data" / "freshclam_testfiles" / "test-1.cvd",
                site / "test.cvd")
    config = work / "lmsav.toml"
    config.write_text(f'[update]\nsources = ["{site}"]\ndatabases = ["test"]\n'
                      f'feeds = ["{site}/acme.bundle"]\n[paths]\n'
                      f'database = "/var/lib/lmsav/bases/current"\n')
    updated = sysroot.run(lmsav, "--config", str(config), "update", env=env, check=False)
    # ClamAV's TEST container is signed by its test key only: the classic signature decides.
    assert updated.returncode == 0, updated.stdout + updated.stderr
    assert "feed: " in updated.stdout and "(key acme): acme.ndb" in updated.stdout
    assert sysroot.path("/var/lib/lmsav/bases/current/acme.ndb").read_bytes() == NDB

    removed = sysroot.run(lmsav, "keys", "remove", "acme", env=env)
    assert "removed acme" in removed.stdout
    (site / "test.cvd").write_bytes((Path(__file__).parent / "data" / "freshclam_testfiles"
                                     / "test-2.cvd").read_bytes())
    refused = sysroot.run(lmsav, "--config", str(config), "update", env=env, check=False)
    assert refused.returncode == 1
    errors = [line for line in refused.stderr.splitlines() if line.startswith("lmsav: error:")]
    assert len(errors) == 1 and "which is not trusted" in errors[0], refused.stderr
    assert "not updated: still using test-1" in refused.stdout


def test_an_ordinary_user_trusts_the_system_keys_and_manages_a_store_of_their_own(sysroot):
    lmsav = sysroot.program("lmsav")
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("LMSAV_", "XDG_", "HOME"))}
    sysroot.run("useradd", "--create-home", "--home-dir", "/var/lib/alice", "--shell",
                "/bin/sh", "alice")
    for name in ("system", "mine"):
        pem = keys.public_pem(Ed25519PrivateKey.generate().public_key())
        sysroot.path(f"/var/lib/{name}.pub").write_bytes(pem)
        os.chmod(sysroot.path(f"/var/lib/{name}.pub"), 0o644)
    sysroot.run(lmsav, "keys", "add", "/var/lib/system.pub", "--name", "site", env=env)
    added = sysroot.run(lmsav, "keys", "add", "/var/lib/mine.pub", "--name", "mine",
                        user="alice", env=env)
    assert "to /var/lib/alice/.config/lmsav/keys" in added.stdout
    listed = records(sysroot.run(lmsav, "keys", "list", "--json", user="alice",
                                 env=env).stdout)
    assert [(k["name"], k["scope"], k["path"]) for k in listed] == [
        ("site", "system", "/etc/lmsav/keys/site.pub"),
        ("mine", "personal", "/var/lib/alice/.config/lmsav/keys/mine.pub")]
    as_root = records(sysroot.run(lmsav, "keys", "list", "--json", env=env).stdout)
    assert [k["name"] for k in as_root] == ["site"]
    denied = sysroot.run(lmsav, "keys", "remove", "site", user="alice", env=env, check=False)
    assert denied.returncode == 2
    assert denied.stderr.strip() == ("lmsav: error: site is trusted in /etc/lmsav/keys, which "
                                     "only its owner can change")
    sysroot.run(lmsav, "keys", "remove", "mine", user="alice", env=env)
    assert not sysroot.path("/var/lib/alice/.config/lmsav/keys/mine.pub").exists()
