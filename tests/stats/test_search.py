"""Per-message search: keys, keyset pages, the budget, a store of version 1 brought up to
date, the same answers from SQLite and PostgreSQL."""

from __future__ import annotations

import random
import sqlite3

import pytest

from lmsav.stats import queries, schema
from lmsav.stats.postgres_store import PostgresBackend
from lmsav.stats.sqlite_store import SQLiteBackend
from lmsav.stats.store import Store

from .conftest import NOW, message_event

STATUSES = ["clean"] * 12 + ["infected", "suspicious", "error"]
THREATS = ["Eicar-Test", "Win.Trojan.X-1", "Doc.Dropper.Y_2"]


def mail(n: int, seed: int = 5) -> list[dict]:
    """n messages a second apart, newest last, from a few senders to a few recipients."""
    rng = random.Random(seed)
    senders = ["Alice@Example.org", "bob@example.org", "carol@b.example", "", "d@c.example",
               "x_y@c.example"]
    rcpts = ["u1@local.example", "U2@local.example", "u3@other.example", "u4@Other.example"]
    out = []
    for i in range(n):
        status = rng.choice(STATUSES)
        threats = [rng.choice(THREATS)] if status in ("infected", "suspicious") else []
        # Several messages in one second: the id orders them.
        out.append(message_event(NOW - 2 * n + i // 2, status=status, threats=threats,
                                 sender=rng.choice(senders),
                                 recipients=rng.sample(rcpts, rng.choice([1, 1, 1, 2, 3]))))
    return out


def filled(backend, events) -> Store:
    store = Store(backend, "mx", len(events) + 10, clock=lambda: NOW, quiet=3600)
    for event in events:
        store.record(event)
    assert store.flush()
    return store


FILTERS = [
    {}, {"sender": "alice@example.org"}, {"sender": "*@example.org"}, {"sender": "*@C.example"},
    {"sender": ""}, {"sender": "x_y@*"}, {"sender": "*b*"}, {"rcpt": "u2@local.example"},
    {"rcpt": "*@other.example"}, {"rcpt": "u*@local.example"}, {"status": "infected"},
    {"status": "clean"}, {"threat": "eicar-test"}, {"threat": "*_2"},
    {"sender": "*@example.org", "rcpt": "*@other.example", "status": "clean"},
    {"sender": "bob@example.org", "rcpt": "u1@local.example"},
    {"rcpt": "*@local.example", "threat": "win.*"},
    {"since": NOW - 700, "until": NOW - 500, "sender": "*@example.org"},
]


def walk(store: Store, page_size: int, budget=None, **filters) -> tuple[list[int], int]:
    """Every id the pages give, following ``next``; and how many pages were cut short."""
    ids, before, cut = [], None, 0
    for _ in range(10000):
        page = store.search(index=0, before=before, limit=page_size, budget=budget, **filters)
        ids += [r["id"] for r in page.records]
        cut += page.cut_short
        if page.next is None:
            return ids, cut
        before = page.next
    raise AssertionError("pages without end")


def expected(store: Store, **filters) -> list[int]:
    """The ids the old statement finds: every message read, LIKE on every column."""
    where, params = [], []
    if "sender" in filters:
        where.append("LOWER(sender) LIKE ? ESCAPE '!'")
        params.append(queries._like(filters["sender"]))
    if "rcpt" in filters:
        where.append("LOWER(recipients) LIKE ? ESCAPE '!'")
        params.append(queries._in_list(filters["rcpt"]))
    if "status" in filters:
        where.append("status = ?")
        params.append(filters["status"])
    if "threat" in filters:
        where.append("LOWER(threats) LIKE ? ESCAPE '!'")
        params.append(queries._in_list(filters["threat"]))
    if "since" in filters:
        where.append("time >= ?")
        params.append(filters["since"])
    if "until" in filters:
        where.append("time < ?")
        params.append(filters["until"])
    sql = ("SELECT id FROM messages" + (" WHERE " + " AND ".join(where) if where else "")
           + " ORDER BY time DESC, id DESC")
    return [i for (i,) in store._fetch(sql, tuple(params))]


def check_search(store: Store) -> None:
    for filters in FILTERS:
        want = expected(store, **filters)
        assert walk(store, 7, **filters) == (want, 0), filters
        # A budget smaller than the store: pages cut short, nothing lost, nothing twice.
        got, _cut = walk(store, 5, budget=40, **filters)
        assert got == want, filters


@pytest.fixture
def lite(tmp_path):
    store = filled(SQLiteBackend(tmp_path / "stats.sqlite"), mail(400))
    yield store
    store.close()


def test_keys_partly_given_pages_and_budgets_find_what_reading_everything_finds(lite):
    assert lite.index_keys(150) == 150  # keys for the oldest, the rest read directly
    check_search(lite)
    assert lite.index_keys() == 250
    assert lite.index_keys() == 0
    check_search(lite)


def test_a_search_looks_up_keys_and_stops_at_its_budget(lite, monkeypatch):
    lite.index_keys()
    seen = []
    monkeypatch.setattr(lite, "_fetch", lambda sql, params=(): seen.append(sql) or
                        Store._fetch(lite, sql, params))
    lite.search(index=0, sender="*@c.example", budget=100)
    assert any("message_keys c" in sql for sql in seen)
    page = lite.search(index=0, sender="*nobody*", budget=100)
    assert page.records == [] and page.cut_short
    # next: where the reading stopped, the 100th message from the newest.
    [(at, id_)] = lite._fetch("SELECT time, id FROM messages ORDER BY time DESC, id DESC "
                              "LIMIT 1 OFFSET 99")
    assert page.next == (at, id_)
    rest = lite.search(index=0, sender="*nobody*", budget=1000, before=page.next)
    assert rest.records == [] and not rest.cut_short and rest.next is None


def test_without_keys_for_more_than_the_budget_every_message_is_read(lite):
    # None given yet (400 > the budget): read along time, answers all the same.
    page = lite.search(index=0, sender="alice@example.org", budget=50, limit=3)
    assert [r["id"] for r in page.records] == expected(lite, sender="alice@example.org")[:3]


def test_a_search_gives_keys_first_and_one_message_by_id(lite):
    page = lite.search(sender="bob@example.org", limit=2)
    [(upto,)] = lite._fetch("SELECT value FROM meta WHERE key = 'keys_upto'")
    assert int(upto) == min(400, queries.KEYS_PER_SEARCH)
    first = page.records[0]
    assert lite.message(first["id"]) == first
    assert lite.message(10**9) is None
    assert set(first) == {"id", *schema.MESSAGE_COLUMNS}


def test_pruning_drops_the_keys_of_the_messages_pruned(tmp_path):
    now = [NOW]
    store = Store(SQLiteBackend(tmp_path / "s.sqlite"), "mx", 10, clock=lambda: now[0],
                  quiet=0)
    store.record(message_event(NOW - schema.DETAIL_KEPT + 10, sender="old@x.example"))
    store.record(message_event(NOW, sender="new@x.example"))
    store.index_keys()
    assert store._fetch("SELECT COUNT(DISTINCT message) FROM message_keys") == [(2,)]
    now[0] = NOW + 100
    store.backend._last_prune = float("-inf")
    store.record(message_event(NOW + 100))
    assert [m["sender"] for m in store.messages(sender="*@x.example")] == ["new@x.example"]
    assert store._fetch("SELECT COUNT(DISTINCT message) FROM message_keys") == [(1,)]
    store.close()


V1_DOWNGRADE = ["DROP TABLE message_keys", "DROP INDEX messages_flagged",
                "DROP INDEX messages_threats", "DELETE FROM meta WHERE key = 'keys_upto'",
                "UPDATE meta SET value = '1' WHERE key = 'schema_version'"]


def test_a_store_of_version_1_is_brought_up_to_date_in_place(tmp_path):
    path = tmp_path / "stats.sqlite"
    filled(SQLiteBackend(path), mail(300)).close()
    with sqlite3.connect(path) as conn:
        for statement in V1_DOWNGRADE:
            conn.execute(statement)
        before = conn.execute("SELECT * FROM messages ORDER BY id").fetchall()
    store = Store(SQLiteBackend(path), "mx", 10, clock=lambda: NOW, quiet=0)
    assert [m["sender"] for m in store.messages(limit=1)]  # read: migrated
    assert store._fetch("SELECT key, value FROM meta ORDER BY key") == [
        ("keys_upto", "0"), ("schema_version", str(schema.VERSION))]
    assert store._fetch("SELECT * FROM messages ORDER BY id") == before
    assert store.index_keys() == 300
    check_search(store)
    store.record(message_event(NOW, sender="late@x.example"))  # written as version 2
    assert [m["sender"] for m in store.messages(sender="*@x.example")] == ["late@x.example"]
    store.close()


def test_the_indexes_are_read_for_the_usual_filters(lite):
    lite.index_keys()

    def plan(**filters) -> str:
        steps = []

        def fetch(sql, params=()):
            # (The messages without keys yet are few, sorted: not this read.)
            if sql.startswith("SELECT m.id") and "+m.time" not in sql:
                steps.extend(row[3] for row in lite._fetch("EXPLAIN QUERY PLAN " + sql,
                                                           params))
            return lite._fetch(sql, params)

        queries.search(fetch, budget=1000, **filters)
        return " | ".join(steps)

    assert "message_keys_key" in plan(sender="bob@example.org")
    assert "message_keys_key" in plan(rcpt="*@local.example", status="clean")
    assert "messages_flagged" in plan(status="infected")
    assert "messages_threats" in plan(threat="win*")
    for filters in ({}, {"sender": "*b*"}, {"status": "infected"}, {"rcpt": "u1@local.example"}):
        assert "TEMP B-TREE" not in plan(**filters), filters


# -- PostgreSQL ------------------------------------------------------------------------------------

def test_postgres_answers_as_sqlite_and_is_brought_up_to_date(pg_url, tmp_path):
    import psycopg

    events = mail(300, seed=9)
    pg = filled(PostgresBackend(pg_url), events)
    with psycopg.connect(pg_url, autocommit=True) as conn:
        for statement in V1_DOWNGRADE:
            conn.execute(statement)
    pg.close()
    pg = Store(PostgresBackend(pg_url), "mx", 10, clock=lambda: NOW, quiet=0)
    lite = filled(SQLiteBackend(tmp_path / "s.sqlite"), events)
    assert pg.messages(limit=1) == lite.messages(limit=1)
    assert pg._fetch("SELECT value FROM meta WHERE key = 'schema_version'") == [
        (str(schema.VERSION),)]
    assert pg.index_keys(100) == 100 and lite.index_keys(100) == 100
    for filters in FILTERS:
        assert walk(pg, 9, **filters) == walk(lite, 9, **filters), filters
        assert walk(pg, 9, budget=30, **filters) == walk(lite, 9, budget=30, **filters)
    assert pg.index_keys() == 200
    check_search(pg)
    pg.close()
    lite.close()
