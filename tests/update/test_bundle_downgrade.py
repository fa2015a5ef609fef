"""An older signed lmsav bundle is refused over the newer one the active database holds, as an
older ClamAV container is; --allow-downgrade installs it. The active version records the bundle's
name and version in its meta, and versions recorded before that (only "NAME VERSION") count too."""

from __future__ import annotations

from pathlib import Path

from lmsav.update.feeds import Feed, installed_bundles
from lmsav.update.store import Store
from lmsav.update.updater import update

from .conftest import options
from .test_bundles import NDB, built, publisher  # noqa: F401 (publisher is a fixture)

NEWER = NDB + b"Acme.Test.Second:0:*:6c6d7361762d61636d652d7365636f6e64\n"


def _publish(mirror, tmp_path: Path, private, version: int, ndb: bytes) -> None:
    mirror.files["acme.bundle"], mirror.files["acme.bundle.sig"] = built(
        tmp_path, private, version, ndb)


def _run(mirror, root: Path, store: Path, **changes):
    mirror.publish_genuine(1, signs=False)
    return update(root, options(mirror.url, feeds=(Feed(f"{mirror.url}/acme.bundle"),),
                                key_dirs=(store,), check_time=None, **changes))


def test_an_older_bundle_is_refused_and_the_active_database_stays(
        mirror, trust_test_root, publisher, tmp_path):  # noqa: F811
    private, store = publisher
    root = tmp_path / "bases"
    _publish(mirror, tmp_path, private, 5, NEWER)
    first = _run(mirror, root, store)
    assert first.result == "updated", first.errors
    assert first.extras[0]["bundle"] == {"name": "acme", "version": 5}
    assert Store(root).current().meta["extras"][0]["bundle"] == {"name": "acme", "version": 5}

    _publish(mirror, tmp_path, private, 4, NDB)  # validly signed, but older: a replay
    refused = _run(mirror, root, store)
    assert not refused.ok and refused.result == "failed"
    assert refused.errors == [(
        f"feed refused: {mirror.url}/acme.bundle: bundle acme version 4 is older than the "
        f"active 5; the active database stays (--allow-downgrade installs the older one)")]
    assert refused.active == first.active
    active = Store(root).current()
    assert active.label == first.active
    assert (active.path / "acme.ndb").read_bytes() == NEWER
    assert not list(root.glob(".staging-*"))

    # The same version again is no downgrade: current, nothing new.
    _publish(mirror, tmp_path, private, 5, NEWER)
    again = _run(mirror, root, store)
    assert again.result == "current" and again.active == first.active, again.errors


def test_allow_downgrade_installs_the_older_bundle(
        mirror, trust_test_root, publisher, tmp_path):  # noqa: F811
    private, store = publisher
    root = tmp_path / "bases"
    _publish(mirror, tmp_path, private, 5, NEWER)
    first = _run(mirror, root, store)
    _publish(mirror, tmp_path, private, 4, NDB)
    downgraded = _run(mirror, root, store, allow_downgrade=True)
    assert downgraded.ok and downgraded.result == "updated", downgraded.errors
    assert downgraded.active != first.active
    assert downgraded.extras[0]["bundle"] == {"name": "acme", "version": 4}
    assert (Store(root).current().path / "acme.ndb").read_bytes() == NDB
    # From here the older one is what is installed: a plain run keeps it.
    assert _run(mirror, root, store).result == "current"


def test_a_newer_bundle_is_installed_over_an_older_one(
        mirror, trust_test_root, publisher, tmp_path):  # noqa: F811
    private, store = publisher
    root = tmp_path / "bases"
    _publish(mirror, tmp_path, private, 4, NDB)
    assert _run(mirror, root, store).result == "updated"
    _publish(mirror, tmp_path, private, 5, NEWER)
    newer = _run(mirror, root, store)
    assert newer.result == "updated", newer.errors
    assert (Store(root).current().path / "acme.ndb").read_bytes() == NEWER


def test_installed_bundles_reads_the_recorded_versions():
    extras = [
        {"url": "https://a/acme.bundle", "kind": "bundle", "detail": "acme 7",
         "bundle": {"name": "acme", "version": 7}},
        {"url": "https://b/old.bundle", "kind": "bundle", "detail": "old-feed 12"},  # older meta
        {"url": "https://c/x.ndb", "kind": "file", "detail": ""},
        {"url": "https://d/bad.bundle", "kind": "bundle", "detail": "nonsense"},
        "not a table",
    ]
    assert installed_bundles(extras) == {"acme": 7, "old-feed": 12}
    assert installed_bundles(None) == {}
    assert installed_bundles({"kind": "bundle"}) == {}
