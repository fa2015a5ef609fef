#!/usr/bin/env python3
"""A statistics store filled fast with per-message records, for the web console's benchmarks.

``populate_messages(store_or_path, n=1_000_000)`` adds ``n`` message rows to a SQLite
statistics store (a path, a ``SQLiteBackend`` or a ``Store`` over one), with their search keys
and roll-ups, as the recorder would write them but in a few large transactions: rows made by
the store's own ``events.message_row``, spread over the last 30 days. Mail looks like a real
server's: a few large sender domains and a long tail, most messages to one local recipient,
some to several; ~2 % infected with a threat name, ~1 % suspicious, a few filtered,
protected, corrupted or in error.

Usage: python bench/web_fixture_messages.py STATS_SQLITE [--messages 1000000] [--measure]
       [--budget N] [--repeat 5] [--no-keys] [--postgres URL]
  --measure   time a page of search (50 rows) for the console's usual filters
  --no-keys   write no search keys, then time giving them to every message
  --postgres  copy the store into that (empty) PostgreSQL database and measure there too
"""

from __future__ import annotations

import argparse
import itertools
import random
import sqlite3
import statistics
import sys
import time
from collections import defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from lmsav.stats import backend as backend_mod
from lmsav.stats import queries, schema
from lmsav.stats.events import message_row
from lmsav.stats.sqlite_store import SQLiteBackend
from lmsav.stats.store import Store

SPAN_SECONDS = 30 * 86400
CHUNK = 100_000
_SENDER, _RECIPIENTS = (schema.MESSAGE_COLUMNS.index(c) for c in ("sender", "recipients"))
NODES = ["mx1.example.net", "mx2.example.net"]
LOCAL_DOMAINS = [f"dept{i}.example.net" for i in range(20)] + ["example.net"]
BIG_SENDER_DOMAINS = ["mail.example.com", "post.example.org", "inbox.example.edu"]
THREATS = ["Eicar-Signature", "Win.Trojan.Agent-1234567", "Doc.Dropper.Emotet-9876543-0",
           "Js.Downloader.Nemucod-6543", "Html.Phishing.Bank-4321",
           "Win.Ransomware.Locky-2345", "Xls.Malware.Agent-7712345-0"]
SUSPICIOUS = ["Heuristics.Encrypted.Zip", "Heuristics.Phishing.Email", "PUA.Win.Packer.Upx-1"]
# status → share of messages (the rest clean)
STATUS_SHARES = [("infected", 0.02), ("suspicious", 0.01), ("filtered", 0.008),
                 ("protected", 0.005), ("corrupted", 0.003), ("error", 0.002)]
ACTIONS = {"clean": "skip", "infected": "reject", "suspicious": "hold", "filtered": "reject",
           "protected": "warn", "corrupted": "warn", "error": "skip"}


class _Mail:
    """Addresses and statuses drawn like a real server's traffic, from pools made once."""

    POOL = 1 << 16

    def __init__(self, rng: random.Random):
        self.random = rng.random
        tail = [f"d{i}.example.com" for i in range(600)]
        # A few domains carry most mail (weights 1/rank, roughly Zipf).
        domains = BIG_SENDER_DOMAINS + tail
        cumulative = list(itertools.accumulate(1 / (rank + 1) for rank in range(len(domains))))
        users = [f"user{i}" for i in range(3000)]
        self.senders = [f"{rng.choice(users)}@{domain}"
                        for domain in rng.choices(domains, cum_weights=cumulative, k=self.POOL)]
        local = [f"{name}{i}@{rng.choice(LOCAL_DOMAINS)}" for i in range(200)
                 for name in ("ann", "bo", "cy")]
        self.recipient_lists = [
            [rng.choice(local) for _ in range(1 if rng.random() < 0.85 else rng.randint(2, 5))]
            for _ in range(self.POOL)]
        self.sizes = [int(rng.lognormvariate(9.5, 1.2)) for _ in range(self.POOL)]
        self.scan_ms = [round(rng.lognormvariate(1.5, 0.8), 2) for _ in range(self.POOL)]
        self.statuses, self.cumulative = [], []
        total = 0.0
        for status, share in STATUS_SHARES:
            total += share
            self.statuses.append(status)
            self.cumulative.append(total)
        self.threats = {"infected": THREATS, "suspicious": SUSPICIOUS}

    def pick(self, pool: list):
        return pool[int(self.random() * len(pool))]

    def status(self) -> str:
        draw = self.random()
        if draw >= self.cumulative[-1]:
            return "clean"
        for status, edge in zip(self.statuses, self.cumulative, strict=True):
            if draw < edge:
                return status
        return "clean"

    def event(self, at: float, n: int) -> dict:
        status = self.status()
        threats = [self.pick(self.threats[status])] if status in self.threats else []
        action = ACTIONS[status]
        groups = [{"group": "default", "status": status, "action": action}]
        if self.random() < 0.1:
            groups.append({"group": "staff", "status": status, "action": action})
        sender = "" if self.random() < 0.01 else self.pick(self.senders)  # 1 %: bounces
        return {"kind": "message", "time": at, "queue_id": f"{n:X}",
                "message_id": f"<{n}.{int(at)}@example.net>", "sender": sender,
                "recipients": self.pick(self.recipient_lists), "groups": groups,
                "status": status, "threats": threats, "size": self.pick(self.sizes),
                "scan_ms": self.pick(self.scan_ms)}


def _backend(store_or_path) -> SQLiteBackend:
    if isinstance(store_or_path, Store):
        return store_or_path.backend
    if isinstance(store_or_path, SQLiteBackend):
        return store_or_path
    return SQLiteBackend(Path(store_or_path))


def populate_messages(store_or_path, n: int = 1_000_000, *, now: float | None = None,
                      seed: int = 21, keys: bool = True) -> int:
    """Add ``n`` messages over the 30 days before ``now``; returns the number written. With
    ``keys``, their search keys too (as a console that kept up would have given them), else
    none: a store as the mail writers leave it, for ``Store.index_keys`` to catch up."""
    backend = _backend(store_or_path)
    backend._connection()  # the schema, created or brought up to date
    conn = sqlite3.connect(backend.path, isolation_level=None)
    conn.execute("PRAGMA synchronous = OFF")
    conn.execute("PRAGMA cache_size = -512000")  # 500 MB: the key index is written at random
    now = time.time() if now is None else now
    rng = random.Random(seed)
    mail = _Mail(rng)
    # Times in order, as they would be recorded.
    times = sorted(now - rng.random() * SPAN_SECONDS for _ in range(n))
    node_of = [NODES[i % 2] for i in range(len(NODES))]
    message_sql = schema.insert("messages", ("id", *schema.MESSAGE_COLUMNS))
    key_sql = schema.insert("message_keys", schema.KEY_COLUMNS).replace("INSERT", "INSERT OR IGNORE")
    written = 0
    try:
        for start in range(0, n, CHUNK):
            rows = [message_row(mail.event(at, start + i), node_of[i % len(node_of)])
                    for i, at in enumerate(times[start:start + CHUNK])]
            conn.execute("BEGIN IMMEDIATE")
            [(last,)] = conn.execute("SELECT COALESCE(MAX(id), 0) FROM messages").fetchall()
            ids = range(last + 1, last + 1 + len(rows))
            values = [row.values for row in rows]
            conn.executemany(message_sql, [(i, *v) for i, v in zip(ids, values, strict=True)])
            if keys:
                conn.executemany(key_sql, backend_mod.key_rows(
                    [(i, v[0], v[_SENDER], v[_RECIPIENTS]) for i, v in zip(ids, values,
                                                                             strict=True)]))
            sums: dict[tuple, int] = defaultdict(int)
            for statement, params in backend_mod.rollup_rows(rows):
                sums[(statement, *params[:-1])] += params[-1]
            for (statement, *key), value in sums.items():
                conn.execute(statement, (*key, value))
            if keys:
                conn.execute("UPDATE meta SET value = ? WHERE key = ?",
                             (str(ids[-1]), schema.KEYS_UPTO))
            conn.execute("COMMIT")
            written += len(rows)
    finally:
        conn.close()
    return written


# -- measuring ---------------------------------------------------------------------------------

def _filters(path: Path) -> list[tuple[str, dict]]:
    """The console's usual searches, with values taken from the store."""
    conn = sqlite3.connect(path)
    try:
        def one(sql: str) -> str:
            return conn.execute(sql).fetchone()[0]

        big = one("SELECT sender FROM messages WHERE sender LIKE '%@mail.example.com' LIMIT 1")
        rare = one("SELECT sender FROM messages WHERE sender LIKE '%@d599.example.com' LIMIT 1")
        rcpt = one("SELECT json_extract(recipients, '$[0]') FROM messages "
                   "ORDER BY id DESC LIMIT 1")
    finally:
        conn.close()
    return [
        ("no filter", {}),
        ("status=infected", {"status": "infected"}),
        ("status=error (rare)", {"status": "error"}),
        ("sender exact (large domain)", {"sender": big}),
        ("sender exact (rare domain)", {"sender": rare}),
        ("sender domain (large)", {"sender": "*@mail.example.com"}),
        ("sender domain (rare)", {"sender": "*@d599.example.com"}),
        ("recipient exact", {"rcpt": rcpt}),
        ("recipient domain", {"rcpt": "*@dept7.example.net"}),
        ("threat exact", {"threat": "Win.Ransomware.Locky-2345"}),
        ("threat pattern", {"threat": "*emotet*"}),
        ("sender substring", {"sender": "*user12*"}),
        ("sender substring, no match", {"sender": "*nobody*"}),
        ("sender domain + status=infected", {"sender": "*@mail.example.com",
                                             "status": "infected"}),
        ("recipient + threat", {"rcpt": "*@dept7.example.net", "threat": "Eicar*"}),
        ("page 2, no filter", {"page2": True}),
    ]


def copy_to_postgres(path: Path, url: str) -> None:
    """Every message, key and roll-up of the SQLite store into PostgreSQL (COPY), then its
    statistics for the planner."""
    import psycopg

    from lmsav.stats.postgres_store import PostgresBackend

    backend = PostgresBackend(url, statement_timeout_ms=600_000)
    backend._connection()  # the schema
    backend.close()
    lite = sqlite3.connect(path)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("SET statement_timeout = 0")
        for table, columns in (("messages", ("id", *schema.MESSAGE_COLUMNS)),
                               ("message_keys", schema.KEY_COLUMNS),
                               *((t, ("bucket", "node", "metric", "label", "value"))
                                 for t in schema.ROLLUPS)):
            names = ", ".join(columns)
            with conn.cursor() as cursor, cursor.copy(
                    f"COPY {table} ({names}) FROM STDIN") as copy:
                for row in lite.execute(f"SELECT {names} FROM {table}"):
                    copy.write_row(row)
        upto = lite.execute("SELECT value FROM meta WHERE key = ?",
                            (schema.KEYS_UPTO,)).fetchone()[0]
        conn.execute("UPDATE meta SET value = %s WHERE key = %s", (upto, schema.KEYS_UPTO))
        conn.execute("SELECT setval(pg_get_serial_sequence('messages', 'id'), "
                     "(SELECT MAX(id) FROM messages))")
        conn.execute("VACUUM ANALYZE")
    lite.close()


def measure(path: Path, budget: int, repeat: int,
            postgres: str = "") -> list[tuple[str, float, int, bool]]:
    if postgres:
        from lmsav.stats.postgres_store import PostgresBackend

        store = Store(PostgresBackend(postgres), "bench", 10)
    else:
        store = Store(SQLiteBackend(path), "bench", 10)
    out = []
    try:
        for name, filters in _filters(path):
            page2 = filters.pop("page2", False)
            before = store.search(limit=50).next if page2 else None
            times = []
            for _ in range(repeat):
                start = time.perf_counter()
                page = store.search(limit=50, budget=budget, before=before, **filters)
                times.append((time.perf_counter() - start) * 1000)
            out.append((name, statistics.median(times), len(page.records), page.cut_short))
    finally:
        store.close()
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("path", type=Path)
    parser.add_argument("--messages", type=int, default=1_000_000)
    parser.add_argument("--measure", action="store_true")
    parser.add_argument("--no-keys", action="store_true",
                        help="write no search keys, then time giving them to every message")
    parser.add_argument("--budget", type=int, default=None,
                        help="messages a search looks at (default: the console's)")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--postgres", metavar="URL", default="",
                        help="also copy into this empty PostgreSQL database and measure there")
    args = parser.parse_args(argv)
    if args.messages:
        start = time.perf_counter()
        written = populate_messages(args.path, args.messages, keys=not args.no_keys)
        print(f"{written} messages written in {time.perf_counter() - start:.1f} s "
              f"({args.path.stat().st_size / 1e6:.0f} MB)")
        if args.no_keys:
            store = Store(SQLiteBackend(args.path), "bench", 10)
            start, cpu = time.perf_counter(), time.process_time()
            given = store.index_keys()
            store.close()
            print(f"search keys given to {given} messages in {time.perf_counter() - start:.1f} s "
                  f"({(time.process_time() - cpu) / max(given, 1) * 1e6:.1f} us of cpu each)")
    if args.measure:
        budget = queries.SEARCH_BUDGET if args.budget is None else args.budget
        stores = [("SQLite", "")]
        if args.postgres:
            start = time.perf_counter()
            copy_to_postgres(args.path, args.postgres)
            print(f"copied into PostgreSQL in {time.perf_counter() - start:.1f} s")
            stores.append(("PostgreSQL", args.postgres))
        for label, url in stores:
            print(f"{label}: search, a page of 50, budget {budget} messages, "
                  f"median of {args.repeat}:")
            for name, ms, rows, cut in measure(args.path, budget, args.repeat, url):
                print(f"  {name:34} {ms:8.1f} ms  {rows:3} rows"
                      f"{'  (cut short)' if cut else ''}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
