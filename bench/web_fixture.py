#!/usr/bin/env python3
"""Stores of kept originals filled fast, for the web console's benchmarks and tests.

``populate(state_dir, quarantine=100_000, mail=0, files=0)`` writes the on-disk layout of the
quarantine (``quarantine/``), the sweep backups (``backup/files/``) and the mail backups
(``backup/``) directly, as FileStore and BackupStore would leave it, but without fsync and
without their per-entry checks: plausible records with varied statuses, threats, paths,
addresses and times over the last 90 days, and one entry in a thousand damaged (its info.json
missing or not JSON), as a crash or a disk error would leave it.

Usage: python bench/web_fixture.py STATE_DIR [--quarantine 100000] [--mail 0] [--files 0]
       [--measure]   (then also time StoresIndex.sync from empty and a few searches)
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import sys
import time
from email.utils import formatdate
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from lmsav import paths
from lmsav.mail.backup import new_id

DAMAGED_EVERY = 1000
SPAN_SECONDS = 90 * 86400
_O_NEW = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC

THREATS = [
    ("infected", "Eicar-Signature"), ("infected", "Win.Trojan.Agent-1234567"),
    ("infected", "Doc.Dropper.Emotet-9876543-0"), ("infected", "Js.Downloader.Nemucod-6543"),
    ("infected", "Html.Phishing.Bank-4321"), ("infected", "Win.Ransomware.Locky-2345"),
    ("suspicious", "Heuristics.Encrypted.Zip"), ("suspicious", "Heuristics.Phishing.Email"),
    ("suspicious", "PUA.Win.Packer.Upx-1"), ("protected", ""), ("corrupted", ""),
    ("error", ""),
]
USERS = ["alice", "bob", "carol", "dave", "erin", "frank", "grace", "heidi", "ivan", "judy"]
DOMAINS = ["example.org", "example.net", "example.com", "mail.example.edu"]
DIRS = ["/home/{u}/Downloads", "/home/{u}/Mail/attachments", "/srv/share/{u}",
        "/var/www/uploads/{u}", "/tmp/{u}"]
NAMES = ["invoice_{n}.zip", "report-{n}.pdf", "setup{n}.exe", "photo_{n}.jpg.js",
         "statement {n}.doc", "archive-{n}.tar.gz", "readme{n}.html"]
SUBJECTS = ["Invoice {n}", "Your parcel {n} is on its way", "Re: meeting notes",
            "Urgent: account verification #{n}", "Scan from printer {n}",
            "Fwd: quarterly report", "Payment confirmation {n}"]
GROUPS = ["default", "staff", "sales", "strict"]
ACTIONS_FILE = ["quarantine", "quarantine", "quarantine", "cure", "delete"]
ACTIONS_MAIL = ["cure", "drop", "reject", "warn", "delete", "hold"]


def _content(rnd: random.Random, size: int) -> bytes:
    return rnd.randbytes(size)


def _verdict(path: str, status: str, threat: str, size: int) -> dict:
    threats = [{"name": threat, "source": "main.cvd"}] if threat else []
    member = {"path": f"{path}//{path.rsplit('/', 1)[-1]}.bin", "type": "pe", "size": size // 2,
              "status": status, "threats": threats}
    return {"path": path, "status": status,
            "threats": [{"path": member["path"], **t} for t in threats],
            "result": {"path": path, "type": "zip", "size": size, "status": status,
                       "own_status": "clean", "threats": [], "children": [member]}}


def _file_record(rnd, entry_id, created, content, status, threat) -> dict:
    user = rnd.choice(USERS)
    name = rnd.choice(NAMES).format(n=rnd.randrange(100_000))
    path = f"{rnd.choice(DIRS).format(u=user)}/{name}"
    mtime_ns = int((created - rnd.uniform(0, 86400 * 30)) * 1e9)
    verdict = _verdict(path, status, threat, len(content))
    return {
        "original_path": path, "uid": 1000 + USERS.index(user), "gid": 1000, "owner": user,
        "group": "users", "mode": 0o644, "mode_octal": "0644", "atime_ns": mtime_ns,
        "mtime_ns": mtime_ns, "size": len(content), "device": 2049,
        "inode": rnd.randrange(1, 1 << 24), "action": rnd.choice(ACTIONS_FILE),
        "requested": "quarantine", "uncurable_reason": "", "status": status,
        "threats": [threat] if threat else [],
        "findings": [{"path": verdict["result"]["children"][0]["path"], "status": status,
                      "threats": [threat] if threat else [], "reason": ""}],
        "verdict": verdict, "time": created, "database_version": "main:62 daily:27480",
        "engine_version": "0.1.0", "hostname": "mx1.example.org", "id": entry_id,
        "created": created, "sha256": hashlib.sha256(content).hexdigest(),
        "md5": hashlib.md5(content).hexdigest(),
    }


def _address(rnd) -> str:
    return f"{rnd.choice(USERS)}{rnd.randrange(100)}@{rnd.choice(DOMAINS)}"


def _message(rnd, sender, recipients, subject, created) -> bytes:
    head = (f"From: <{sender}>\nTo: {', '.join(f'<{r}>' for r in recipients)}\n"
            f"Subject: {subject}\nDate: {formatdate(created)}\n"
            f"Message-ID: <{rnd.randrange(1 << 40):x}@{sender.split('@')[1]}>\n"
            f"MIME-Version: 1.0\nContent-Type: text/plain\n\n")
    return head.encode() + b"Please see the attachment.\n" * rnd.randrange(1, 40)


def _mail_record(rnd, entry_id, created, message, subject, sender, recipients, status,
                 threat) -> dict:
    split = rnd.randrange(1, len(recipients) + 1)
    groups = [{"group": g, "recipients": rs, "status": status, "action": rnd.choice(ACTIONS_MAIL)}
              for g, rs in zip(rnd.sample(GROUPS, 2), (recipients[:split], recipients[split:]))
              if rs]
    return {
        "sender": sender, "recipients": recipients,
        "group": ", ".join(g["group"] for g in groups), "groups": groups, "status": status,
        "subject": subject, "message_id": f"<{entry_id}@example.org>",
        "threats": [threat] if threat else [], "actions": [g["action"] for g in groups],
        "verdict": _verdict("message", status, threat, len(message)), "time": created,
        "database_version": "main:62 daily:27480", "id": entry_id, "created": created,
        "size": len(message), "sha256": hashlib.sha256(message).hexdigest(),
    }


def _write(path: str, data: bytes) -> None:
    fd = os.open(path, _O_NEW, 0o600)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)


def _fill(root: Path, count: int, rnd: random.Random, now: float, make) -> None:
    """``count`` entries in ``root``: ``make(entry_id, created) -> {name: bytes}``."""
    os.makedirs(root.parent, 0o700, exist_ok=True)
    os.makedirs(root, 0o700, exist_ok=True)
    made = 0
    while made < count:
        created = now - rnd.uniform(0, SPAN_SECONDS)
        entry_id = new_id(created)
        directory = os.path.join(root, entry_id)
        try:
            os.mkdir(directory, 0o700)
        except FileExistsError:
            continue
        files = make(entry_id, created)
        if made % DAMAGED_EVERY == DAMAGED_EVERY - 1:  # a damaged one: no record, or not JSON
            files["info.json"] = None if made % (2 * DAMAGED_EVERY) else b'{"status": "inf'
        for name, data in files.items():
            if data is not None:
                _write(os.path.join(directory, name), data)
        made += 1


def populate(state_dir: Path | str, quarantine: int = 100_000, mail: int = 0, files: int = 0,
             *, seed: int = 21, now: float | None = None) -> None:
    """Add ``quarantine`` quarantined files, ``files`` sweep backups and ``mail`` mail backups
    to the stores under ``state_dir``, in this process (forked writers measured slower: the
    time goes into creating files in the one store directory)."""
    now = time.time() if now is None else now
    rnd = random.Random(seed)
    contents = [_content(rnd, rnd.randrange(68, 4000)) for _ in range(64)]

    def file_entry(entry_id, created):
        content = rnd.choice(contents)
        status, threat = rnd.choice(THREATS)
        record = _file_record(rnd, entry_id, created, content, status, threat)
        return {"content": content, "info.json": json.dumps(record).encode()}

    def mail_entry(entry_id, created):
        sender = _address(rnd)
        recipients = [_address(rnd) for _ in range(rnd.randrange(1, 4))]
        subject = rnd.choice(SUBJECTS).format(n=rnd.randrange(1_000_000))
        message = _message(rnd, sender, recipients, subject, created)
        status, threat = rnd.choice(THREATS)
        record = _mail_record(rnd, entry_id, created, message, subject, sender, recipients,
                              status, threat)
        return {"message.eml": message, "info.json": json.dumps(record).encode()}

    _fill(paths.quarantine_dir(state_dir), quarantine, rnd, now, file_entry)
    _fill(paths.backup_files_dir(state_dir), files, rnd, now, file_entry)
    _fill(paths.backup_dir(state_dir), mail, rnd, now, mail_entry)


def _measure(state_dir: Path) -> None:
    from lmsav.quarantine.index import StoresIndex

    db = state_dir / "web" / "stores.sqlite"
    for suffix in ("", "-wal", "-shm"):
        Path(f"{db}{suffix}").unlink(missing_ok=True)
    index = StoresIndex(db, state_dir)
    started = time.perf_counter()
    report = index.sync()
    print(f"sync from empty: {time.perf_counter() - started:.2f} s ({report.added} rows)")
    started = time.perf_counter()
    index.sync()
    print(f"sync, nothing changed: {(time.perf_counter() - started) * 1000:.2f} ms")
    root = paths.quarantine_dir(state_dir)
    changed = time.time() - 60 + random.random()  # a change settled: listed again, once
    os.utime(root, (changed, changed))
    started = time.perf_counter()
    index.sync()
    print(f"sync, a store listed again: {(time.perf_counter() - started) * 1000:.1f} ms")
    cases = {
        "first page": {}, "kind=quarantine": {"kind": "quarantine"},
        "status=damaged": {"status": "damaged"}, "text=alice": {"text": "alice"},
        "text=no-such-thing": {"text": "no-such-thing"}, "threat=emotet": {"threat": "emotet"},
        "last 7 days": {"since": time.time() - 7 * 86400},
    }
    for name, filters in cases.items():
        started = time.perf_counter()
        rows, cursor = index.search(**filters)
        total = index.count(**filters)
        first = time.perf_counter() - started
        started = time.perf_counter()
        if cursor:
            index.search(**filters, before=cursor)
        second = time.perf_counter() - started
        print(f"search+count {name}: {first * 1000:.1f} ms ({len(rows)} of {total}); "
              f"next page {second * 1000:.1f} ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("state_dir", type=Path)
    parser.add_argument("--quarantine", type=int, default=100_000)
    parser.add_argument("--mail", type=int, default=0)
    parser.add_argument("--files", type=int, default=0)
    parser.add_argument("--measure", action="store_true")
    args = parser.parse_args()
    started = time.perf_counter()
    populate(args.state_dir, args.quarantine, args.mail, args.files)
    total = args.quarantine + args.mail + args.files
    print(f"populate: {total} entries in {time.perf_counter() - started:.1f} s")
    if args.measure:
        _measure(args.state_dir)


if __name__ == "__main__":
    main()
