"""The Mail page: the per-message log searched, paged and shown, from a real statistics
store under the console's state directory."""

from __future__ import annotations

import re
import time

import pytest

from lmsav.stats import queries
from lmsav.stats.store import open_store

from .conftest import BASE_URL


def event(t: float, n: int, *, status="clean", sender="alice@example.org",
          recipients=("bob@local.example",), threats=()) -> dict:
    return {"kind": "message", "time": t, "queue_id": f"Q{n}", "message_id": f"<m{n}@x>",
            "sender": sender, "recipients": list(recipients),
            "groups": [{"group": "default", "status": status, "action": "reject"
                        if status == "infected" else "skip"}],
            "status": status, "threats": list(threats), "size": 2048, "scan_ms": 3.5}


@pytest.fixture
def mail_log(web_env):
    """120 messages over the last two hours: every tenth infected from a bad domain, one with
    markup in its sender."""
    store = open_store(web_env.settings())
    now = time.time()
    for n in range(120):
        t = now - 7200 + n * 60
        if n % 10 == 0:
            store.record(event(t, n, status="infected", sender=f"x{n}@bad.example",
                               recipients=("carol@local.example", "dan@other.example"),
                               threats=("Eicar-Test-Signature",)))
        else:
            store.record(event(t, n))
    store.record(event(now - 30, 999, sender='<script>alert(1)</script>@evil.example'))
    assert store.flush()
    store.close()
    return now


def get(client, url):
    return client.get(url, base_url=BASE_URL)


def rows(response) -> list[str]:
    return re.findall(r'<tr id="message-(\d+)"', response.get_data(as_text=True))


def test_anonymous_is_sent_to_the_login(anon, mail_log):
    response = get(anon, "/mail/")
    assert response.status_code == 302 and "/login" in response.headers["Location"]
    assert get(anon, "/mail/1").status_code == 302


def test_newest_first_in_pages_of_50_that_walk_everything(viewer, mail_log):
    seen, url = [], "/mail/"
    for _ in range(5):
        response = get(viewer, url)
        assert response.status_code == 200
        page = rows(response)
        seen += page
        match = re.search(r'<a href="([^"]+)" id="older">', response.get_data(as_text=True))
        if not match:
            break
        assert len(page) == 50
        url = match.group(1).replace("&amp;", "&")
    assert len(seen) == 121 == len(set(seen))
    assert [int(i) for i in seen] == sorted((int(i) for i in seen), reverse=True)
    html = get(viewer, "/mail/").get_data(as_text=True)
    assert "&lt;script&gt;alert(1)&lt;/script&gt;@evil.example" in html
    assert "<script>" not in html


@pytest.mark.parametrize(("query", "count"), [
    ("sender=alice@example.org", 108), ("sender=ALICE@example.org", 108),
    ("sender=@bad.example", 12), ("sender=*@bad.example", 12), ("sender=x1*", 3),
    ("rcpt=dan@other.example", 12), ("rcpt=@local.example", 121),
    ("status=infected", 12), ("status=clean", 109), ("threat=eicar*", 12),
    ("threat=Eicar-Test-Signature&rcpt=@other.example", 12),
    ("since=30m", 30), ("since=3h&until=90.5m", 30), ("sender=nobody@x", 0),
])
def test_filters(viewer, mail_log, query, count):
    found, url = 0, f"/mail/?{query}"
    while url:
        response = get(viewer, url)
        assert response.status_code == 200
        found += len(rows(response))
        match = re.search(r'<a href="([^"]+)" id="older">', response.get_data(as_text=True))
        url = match.group(1).replace("&amp;", "&") if match else None
    assert found == count, query
    if count == 0:
        assert 'id="empty"' in response.get_data(as_text=True)


@pytest.mark.parametrize(("query", "message"), [
    ("status=bogus", "unknown status"),
    ("since=yesterday-ish", "from:"),
    ("until=99999-99-99", "to:"),
    ("since=1h&until=2h", "from must be before to"),
])
def test_bad_filters_are_flashed_not_failed(viewer, mail_log, query, message):
    response = get(viewer, f"/mail/?{query}")
    assert response.status_code == 200
    html = response.get_data(as_text=True)
    assert 'class="flash error"' in html and message in html
    assert len(rows(response)) == 50  # the rest of the search still runs


@pytest.mark.parametrize("cursor", ["x", "1:2:3", "-1:5", "1e9:1", "1:" + "9" * 30])
def test_a_bad_page_position_goes_back_to_the_newest(viewer, mail_log, cursor):
    response = get(viewer, f"/mail/?status=infected&before={cursor}")
    assert response.status_code == 302
    assert response.headers["Location"].endswith("/mail/?status=infected")
    html = get(viewer, response.headers["Location"]).get_data(as_text=True)
    assert "invalid page position" in html


def test_a_search_cut_short_says_so_and_goes_on(viewer, mail_log, monkeypatch):
    monkeypatch.setattr(queries, "SEARCH_BUDGET", 40)
    # x10, x100, x110: the 40 newest messages hold x100 and x110.
    response = get(viewer, "/mail/?sender=x1*")
    html = response.get_data(as_text=True)
    assert 'id="cut-short"' in html and "after looking at 40 messages" in html
    assert len(rows(response)) == 2
    found = len(rows(response))
    while (match := re.search(r'<a href="([^"]+)" id="search-older">', html)):
        html = get(viewer, match.group(1).replace("&amp;", "&")).get_data(as_text=True)
        found += len(re.findall(r'<tr id="message-', html))
    assert found == 3


def test_one_message(viewer, mail_log):
    first = rows(get(viewer, "/mail/?status=infected"))[0]
    response = get(viewer, f"/mail/{first}")
    assert response.status_code == 200
    html = response.get_data(as_text=True)
    assert "x110@bad.example" in html and "Eicar-Test-Signature" in html
    assert "dan@other.example" in html and 'id="outcomes"' in html
    assert get(viewer, "/mail/999999").status_code == 404
    assert get(viewer, "/mail/99999999999999999999").status_code == 404
    assert get(viewer, "/mail/abc").status_code == 404


def test_no_store_yet_and_a_damaged_store(viewer, web_env):
    response = get(viewer, "/mail/")
    assert response.status_code == 200 and "No message is recorded yet" in \
        response.get_data(as_text=True)
    assert not (web_env.state_dir / "stats").exists()  # reading created nothing
    path = web_env.state_dir / "stats" / "stats.sqlite"
    path.parent.mkdir()
    path.write_bytes(b"not a database" * 100)
    viewer.application.extensions.pop("lmsav.stats", None)
    response = get(viewer, "/mail/?sender=a@b")
    assert response.status_code == 200
    assert "cannot read the statistics store" in response.get_data(as_text=True)
    response = get(viewer, "/mail/5")
    assert response.status_code == 302


def test_admin_sees_the_same(admin, mail_log):
    assert len(rows(get(admin, "/mail/?status=infected"))) == 12


def test_the_keys_indexer_gives_new_messages_their_keys(web_env, mail_log):
    from lmsav.web.pages.mail import KeysIndexer

    store = open_store(web_env.settings())
    indexer = KeysIndexer(store, interval=0.01, batch=50)
    indexer.start()
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and store._fetch(
                "SELECT value FROM meta WHERE key = 'keys_upto'") != [("121",)]:
            time.sleep(0.02)
    finally:
        indexer.stop()
        indexer.join(5)
    assert not indexer.is_alive()
    assert store._fetch("SELECT value FROM meta WHERE key = 'keys_upto'") == [("121",)]
    store.close()
