"""The Dashboard: components' health from the status snapshot, mail counters and hourly charts
from the statistics store, and a page that answers whatever is down."""

from __future__ import annotations

import re
import socket
import time

import pytest

from lmsav import status as status_mod
from lmsav.stats.store import open_store

from .conftest import BASE_URL
from .test_mail import event


def get(client, url="/"):
    return client.get(url, base_url=BASE_URL)


def counters(html: str, period: str) -> dict[str, int]:
    row = re.search(rf'<tr id="counters-{period}">(.*?)</tr>', html, re.DOTALL).group(1)
    return {name: int(value) for name, value in
            re.findall(r'data-counter="(\w+)">(\d+)<', row)}


@pytest.fixture
def recorded(web_env):
    """This hour: 3 clean messages and 2 infected; 5 hours ago: 4 clean; 2 days ago: 1."""
    store = open_store(web_env.settings())
    now = time.time()
    # In this clock hour even when the test runs in its first minutes (the chart's last bar).
    this_hour = now - now % 3600
    for n in range(3):
        store.record(event(max(this_hour, now - 60 - n), n))
    for n in range(2):
        store.record(event(max(this_hour, now - 120 - n), 10 + n, status="infected",
                           threats=("Eicar-Test-Signature",)))
    for n in range(4):
        store.record(event(now - 5 * 3600 - n, 20 + n))
    store.record(event(now - 2 * 86400, 30))
    assert store.flush()
    store.close()


def test_anonymous_is_sent_to_the_login(anon):
    response = get(anon)
    assert response.status_code == 302 and "/login" in response.headers["Location"]


def test_counters_and_charts_of_what_was_recorded(viewer, recorded):
    response = get(viewer)
    assert response.status_code == 200
    html = response.get_data(as_text=True)
    hour, day = counters(html, "hour"), counters(html, "day")
    assert hour["messages"] == 5 and hour["infected"] == 2 and hour["errors"] == 0
    assert day["messages"] == 9 and day["infected"] == 2
    chart = re.search(r'<svg[^>]*id="chart-hourly".*?</svg>', html, re.DOTALL).group(0)
    titles = re.findall(r"<title>[^<]*(Messages|Threats): (\d+)</title>", chart)
    assert len(titles) == 48  # 24 hours, two series
    assert sum(int(v) for name, v in titles if name == "Messages") == 9
    assert sum(int(v) for name, v in titles if name == "Threats") == 2
    assert titles[-2:] == [("Messages", "5"), ("Threats", "2")]  # this hour, last
    assert 'id="chart-threats"' in html and "<script" not in html


def test_components_database_and_a_daemon_that_is_not_there(viewer, web_env):
    response = get(viewer)
    assert response.status_code == 200
    html = response.get_data(as_text=True)
    for part in ("daemon", "watcher", "qmail", "spool", "updater", "quarantine", "disk"):
        assert f'id="component-{part}"' in html
    assert 'id="database-version"' in html and 'id="database-age"' in html
    # Nothing recorded yet: counters of zero, no store created by reading.
    assert counters(html, "day")["messages"] == 0
    assert not (web_env.state_dir / "stats").exists()


def test_a_daemon_that_never_answers_costs_seconds_not_the_page(viewer, web_env):
    path = web_env.settings().daemon_socket()
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(str(path))
    listener.listen(8)  # accepts connections (the backlog), never reads or answers
    try:
        start = time.monotonic()
        response = get(viewer)
        elapsed = time.monotonic() - start
    finally:
        listener.close()
    assert response.status_code == 200
    assert elapsed < 2 * status_mod.DAEMON_TIMEOUT + 2
    html = response.get_data(as_text=True)
    assert re.search(r'id="component-daemon"><td>[^<]*</td><td><span class="status '
                     r'status-down">', html)
    assert 'id="problems"' in html and "the daemon is not running" in html


def test_a_status_that_fails_or_a_damaged_store_is_flashed(viewer, web_env, monkeypatch):
    def broken(settings, now=None, stores=None):
        raise OSError("disk on fire")

    monkeypatch.setattr(status_mod, "collect", broken)
    path = web_env.state_dir / "stats" / "stats.sqlite"
    path.parent.mkdir()
    path.write_bytes(b"not a database" * 100)
    response = get(viewer)
    assert response.status_code == 200
    html = response.get_data(as_text=True)
    assert "cannot take the status of the components: disk on fire" in html
    assert "cannot read the statistics store" in html


def test_admin_sees_it_too(admin, recorded):
    assert counters(get(admin).get_data(as_text=True), "hour")["infected"] == 2


def test_the_stores_are_counted_from_the_index_not_on_disk(viewer, web_env, monkeypatch):
    """Counting 100,000 quarantine entries on disk took seconds: the page asks the index."""
    from bench.web_fixture import populate

    populate(web_env.state_dir, quarantine=30, mail=4)
    monkeypatch.setattr(status_mod, "_store_usage",
                        lambda *a, **k: pytest.fail("the stores were walked on disk"))
    html = get(viewer).get_data(as_text=True)
    rows = {key: re.search(rf'id="component-{key}">.*?</tr>', html, re.DOTALL).group(0)
            for key in ("quarantine", "backup-messages", "backup-files")}
    assert "30 entries" in rows["quarantine"]
    assert "4 entries" in rows["backup-messages"]
    assert "0 entries" in rows["backup-files"]
