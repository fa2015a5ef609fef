"""The Spool page: depth and entries (held first), one entry's headers, and release, requeue,
hold and delete as `lmsav ctl queue` does them — admins only, with the form's CSRF token,
audited, never on an entry a worker holds."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest
from click.testing import CliRunner

from lmsav.cli import main
from lmsav.mail.envelope import Envelope
from lmsav.spool.nqueue import Spool
from lmsav.spool.queue_ops import QueueOps

from .conftest import BASE_URL, flashes, form_post, page_text


@pytest.fixture
def spool(web_env) -> Spool:
    spool = Spool(web_env.settings().spool_dir())
    spool.ensure()
    return spool


def enqueue(spool: Spool, n: int = 0) -> str:
    return spool.enqueue(Envelope("ann@example.org", (f"u{n}@example.org",)),
                         f"From: ann@example.org\nSubject: note {n}\n\nbody {n}\n".encode(),
                         queue_id=f"Q{n}")


def page(client, url: str = "/spool/") -> str:
    return page_text(client, url)



def post(client, url: str, data: dict | None = None, **kwargs):
    return form_post(client, url, data, token_from="/spool/", **kwargs)


def where(spool: Spool, entry_id: str) -> list[str]:
    return sorted(state for state in ("new", "work", "hold")
                  for name in os.listdir(spool.root / state) if name.startswith(entry_id))


def audit_lines(web_env) -> list[dict]:
    path = web_env.state_dir / "web" / "audit.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def test_anonymous_goes_to_the_login(anon):
    response = anon.get("/spool/", base_url=BASE_URL)
    assert response.status_code == 302 and "/login" in response.headers["Location"]


def test_the_list_shows_depth_and_held_entries_first(viewer, spool):
    ids = [enqueue(spool, n) for n in range(3)]
    QueueOps(spool).hold(ids[2], "virus database missing")
    text = page(viewer)
    assert re.search(r'id="depth-hold"[^>]*>\s*<div>Held \(hold\)</div>\s*<div class="value">1<', text)
    assert re.search(r'id="depth-new"[^>]*>\s*<div>Waiting \(new\)</div>\s*<div class="value">2<', text)
    order = [m for m in re.findall(r'<tr id="entry-([^"]+)"', text)]
    assert order == [ids[2], ids[0], ids[1]]
    assert "virus database missing" in text and "u2@example.org" in text
    assert 'method="post" action="/spool/' not in text  # a viewer gets no buttons
    held = page(viewer, "/spool/?state=hold")
    assert re.findall(r'<tr id="entry-([^"]+)"', held) == [ids[2]]
    assert "unknown state" in flashes(page(viewer, "/spool/?state=../x"), "error")[0]


def test_pages_of_fifty(viewer, spool):
    ids = [enqueue(spool, n) for n in range(55)]
    first, second = page(viewer), page(viewer, "/spool/?page=2")
    assert len(re.findall(r'<tr id="entry-', first)) == 50 and 'id="next"' in first
    assert re.findall(r'<tr id="entry-([^"]+)"', second) == ids[50:]
    assert "page 2 of 2, 55 entries" in second
    assert page(viewer, "/spool/?page=abc").count('<tr id="entry-') == 50


def test_an_entry_shows_its_headers(viewer, spool):
    entry_id = enqueue(spool, 4)
    text = page(viewer, f"/spool/{entry_id}")
    assert "note 4" in text and "Q4" in text and "u4@example.org" in text
    for bad in ("1733300000000000000.1.deadbeef", "x", "%2E%2E"):
        response = viewer.get(f"/spool/{bad}", base_url=BASE_URL)
        assert response.status_code == 302
        assert flashes(page(viewer), "error")
    assert viewer.get("/spool/..%2F..%2Fetc", base_url=BASE_URL).status_code == 404


def test_release_moves_a_held_entry_as_ctl_queue_release_does(admin, spool, web_env):
    entry_id = enqueue(spool)
    QueueOps(spool).hold(entry_id, "checking")
    response = post(admin, f"/spool/{entry_id}/release", {"state": "hold"})
    assert response.status_code == 302
    assert response.headers["Location"].endswith("/spool/?state=hold")
    assert where(spool, entry_id) == ["new"]
    released = spool.get(entry_id)
    assert (released.attempts, released.reason, released.not_before) == (0, "", 0.0)
    assert spool.pending() == [entry_id]
    assert f"{entry_id}: released" in flashes(page(admin), "ok")
    record = audit_lines(web_env)[-1]
    assert (record["user"], record["action"], record["target"], record["outcome"]) == (
        "alice", "spool.release", entry_id, "ok")

    # The same as the command line: a second release is refused in its words.
    result = CliRunner().invoke(main, ["--config", str(web_env.config_file), "ctl", "queue",
                                       "release", entry_id])
    post(admin, f"/spool/{entry_id}/release")
    refused = flashes(page(admin), "error")
    assert refused == [f"spool entry {entry_id} is not held (it is in new/)"]
    assert refused[0] in result.output
    assert audit_lines(web_env)[-1]["outcome"] == "refused"


def test_hold_requeue_and_delete(admin, spool, web_env):
    entry_id = enqueue(spool)
    post(admin, f"/spool/{entry_id}/hold", {"reason": "look  at\nit", "from": "entry"})
    assert spool.get(entry_id).reason == "look at it"
    post(admin, f"/spool/{entry_id}/requeue")
    assert where(spool, entry_id) == ["new"]
    # Deleting asks first, as `lmsav ctl queue delete` does.
    assert f'href="/spool/{entry_id}?confirm=delete"' in page(admin)
    response = post(admin, f"/spool/{entry_id}/delete", {"from": "entry"})
    assert response.headers["Location"].endswith(f"/spool/{entry_id}?confirm=delete")
    assert where(spool, entry_id) == ["new"]
    asking = page(admin, f"/spool/{entry_id}?confirm=delete")
    assert 'id="confirm-delete"' in asking and 'name="confirm" value="yes"' in asking
    response = post(admin, f"/spool/{entry_id}/delete", {"from": "entry", "confirm": "yes"})
    assert response.headers["Location"].endswith("/spool/")
    assert where(spool, entry_id) == []
    assert [r["action"] for r in audit_lines(web_env)][-3:] == [
        "spool.hold", "spool.requeue", "spool.delete"]


def test_an_entry_a_worker_holds_is_left_alone(admin, spool):
    entry_id = enqueue(spool)
    spool.claim(entry_id)
    watcher = subprocess.Popen([sys.executable, "-c", f"""
import fcntl, os, time
fd = os.open({str(spool.root / "watch.lock")!r}, os.O_RDWR | os.O_CREAT, 0o640)
fcntl.flock(fd, fcntl.LOCK_EX)
print("ready", flush=True)
time.sleep(60)
"""], stdout=subprocess.PIPE, text=True)
    try:
        assert watcher.stdout.readline() == "ready\n"
        post(admin, f"/spool/{entry_id}/delete", {"confirm": "yes"})
        assert where(spool, entry_id) == ["work"]
        assert "is being processed" in flashes(page(admin), "error")[0]
    finally:
        watcher.kill()
        watcher.wait(5)


def test_viewer_refused_and_csrf_required(viewer, admin, spool, web_env):
    entry_id = enqueue(spool)
    QueueOps(spool).hold(entry_id)
    for action in ("release", "requeue", "hold", "delete"):
        assert post(viewer, f"/spool/{entry_id}/{action}").status_code == 403
    assert audit_lines(web_env)[-1]["outcome"] == "refused"
    response = admin.post(f"/spool/{entry_id}/release", data={}, base_url=BASE_URL)
    assert response.status_code == 400
    assert where(spool, entry_id) == ["hold"]
    assert post(admin, f"/spool/{entry_id}/explode").status_code == 404
    response = post(admin, "/spool/not-an-id/delete", {"confirm": "yes"})
    assert response.status_code == 302
    assert "invalid spool entry id" in flashes(page(admin), "error")[0]
