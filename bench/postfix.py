#!/usr/bin/env python3
"""End-to-end rate through a real Postfix: SMTP in → lmsav (enqueue → watch → reinject) → Maildir,
against the same Postfix without lmsav in the path.

Usage: python bench/postfix.py [--messages 500] [--threads 4] [--keep]   (as root)

The stack is the one the MTA tests build (tests/mta/conftest.py): a private Postfix on
127.0.0.1 (its own configuration, queue and log under a temporary directory, free ports),
configured by `lmsav setup postfix --apply` against that private configuration directory, a
private lmsav configuration and spool, and a running `lmsav spool watch`; Postfix delivers to
Maildirs under the same directory.

Messages are ~20 KB with one zip attachment (a text document and incompressible data), all
clean. They are built beforehand, then sent by --threads client threads, each with one SMTP
connection carrying its share of the messages. The clock runs from the first send until the
recipient's Maildir new/ holds all of them. Figures printed:

  postfix+lmsav   content_filter → pipe → `lmsav enqueue` → `lmsav spool watch` (scan,
                  stamp) → SMTP reinjection → virtual(8) Maildir delivery: messages/s
  postfix alone   the same instance after `lmsav setup postfix --remove --apply` and a reload,
                  the watcher stopped: messages/s
  lmsav cost      the ratio of the two, and the wall time lmsav adds per message

Each run is preceded by a few warm-up messages (to another mailbox) that must arrive first, so
Postfix's and lmsav's processes are up. Everything is stopped at the end, even on error.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import signal
import smtplib
import sys
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.mta.conftest import (  # noqa: E402
    SENDER,
    Mailboxes,
    PrivatePostfix,
    Stack,
    _build_stack,
    build_message,
    parsed,
    run_setup,
    wait_port,
    zip_of,
)

WORDS = ("invoice order shipment payment account report meeting agenda quarterly budget "
         "delivery contract signed attached please review regards customer support").split()


def make_message(tok: str, to: str, rnd: random.Random) -> bytes:
    """~20 KB, CRLF line ends: a short text body and one zip attachment."""
    attachment = zip_of({"report.txt": " ".join(rnd.choice(WORDS) for _ in range(800)).encode(),
                         "data.bin": rnd.randbytes(13_000)})
    return build_message(tok, (f"report-{tok}.zip", attachment, "application/zip"), to=to,
                         text="Please find the report attached.\n" * 20,
                         subject="quarterly report")


def maildir_new(mail: Mailboxes, address: str) -> Path:
    local, _, domain = address.partition("@")
    return mail.root / domain / local / "new"


def count_new(folder: Path) -> int:
    try:
        return len(os.listdir(folder))
    except FileNotFoundError:
        return 0


def send_all(port: int, messages: list[tuple[str, bytes]], threads: int) -> float:
    """Send with ``threads`` clients, one connection each, messages dealt round-robin; returns
    the seconds until the last one was accepted. A refusal or error fails the run."""
    errors: list[BaseException] = []
    start = threading.Barrier(threads)

    def client(share: list[tuple[str, bytes]]) -> None:
        try:
            start.wait()
            with smtplib.SMTP("127.0.0.1", port, local_hostname="client.test",
                              timeout=120) as smtp:
                for rcpt, raw in share:
                    refused = smtp.sendmail(SENDER, [rcpt], raw)
                    if refused:
                        raise RuntimeError(f"refused: {refused}")
        except BaseException as err:  # noqa: BLE001 - reported by the main thread
            errors.append(err)
            start.abort()

    workers = [threading.Thread(target=client, args=(messages[i::threads],), daemon=True)
               for i in range(threads)]
    t0 = time.perf_counter()
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    if errors:
        raise RuntimeError(f"sending failed: {errors[0]!r}") from errors[0]
    return time.perf_counter() - t0


def wait_count(folder: Path, count: int, timeout: float, stack: Stack) -> None:
    deadline = time.monotonic() + timeout
    while count_new(folder) < count:
        if time.monotonic() > deadline:
            raise RuntimeError(f"{folder}: {count_new(folder)} of {count} messages after "
                               f"{timeout:.0f} s\n{stack.debug()}")
        time.sleep(0.01)


def run(stack: Stack, label: str, rcpt: str, warm_rcpt: str, n: int, threads: int,
        timeout: float, rnd: random.Random) -> dict:
    """Warm up, then send ``n`` messages to ``rcpt`` and time them into its Maildir."""
    warm = [(warm_rcpt, make_message(f"{label}-warm-{i}", warm_rcpt, rnd))
            for i in range(threads * 2)]
    send_all(stack.smtp_port, warm, threads)
    wait_count(maildir_new(stack.mail, warm_rcpt), len(warm), 60, stack)
    messages = [(rcpt, make_message(f"{label}-{i}", rcpt, rnd)) for i in range(n)]
    size = sum(len(raw) for _, raw in messages) / n
    folder = maildir_new(stack.mail, rcpt)
    before = count_new(folder)
    t0 = time.perf_counter()
    sent = send_all(stack.smtp_port, messages, threads)
    wait_count(folder, before + n, timeout, stack)
    seconds = time.perf_counter() - t0
    time.sleep(1)  # a duplicate would show up now
    delivered = [parsed(p.read_bytes()) for p in folder.iterdir()]
    ids = [str(m["Message-ID"]) for m in delivered]
    stamped = sum(1 for m in delivered if m["X-AV-Status"] is not None)
    return {"seconds": seconds, "sent": sent, "size": size, "delivered": len(ids),
            "duplicates": len(ids) - len(set(ids)), "stamped": stamped}


def report(label: str, n: int, r: dict) -> None:
    print(f"{label:<14} {n / r['seconds']:7.1f} msg/s end to end ({r['seconds']:.2f} s for {n}; "
          f"SMTP accepted all in {r['sent']:.2f} s = {n / r['sent']:.0f} msg/s; "
          f"{r['delivered']} delivered, {r['duplicates']} duplicates, "
          f"{r['stamped']} with X-AV headers)", flush=True)


def stop_stack(stack: Stack, keep: bool) -> None:
    for step in (stack.watcher.stop, stack.mta.stop):
        try:
            step()
        except Exception as err:  # noqa: BLE001 - go on stopping the rest
            print(f"bench: stopping: {err!r}", file=sys.stderr)
    if keep:
        print(f"kept {stack.root}")
    else:
        shutil.rmtree(stack.root, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--messages", type=int, default=500)
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--timeout", type=float, help="seconds to wait for delivery per run "
                        "(default: max(120, messages / 2))")
    parser.add_argument("--keep", action="store_true", help="keep the stack's directory")
    args = parser.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("bench/postfix.py runs a private Postfix and needs root")
    if not shutil.which("postfix") and not os.path.exists("/usr/sbin/postfix"):
        raise SystemExit("Postfix is not installed (Debian package postfix)")
    n, timeout = args.messages, args.timeout or max(120.0, args.messages / 2)
    # SIGTERM/SIGHUP stop the run through the finally below, like ^C.
    for signum in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, lambda s, f: sys.exit(128 + s))
    rnd = random.Random(1)

    stack = _build_stack("postfix", PrivatePostfix)
    try:
        stack.mta.start()
        wait_port(stack.reinject_port)
        stack.watcher.start()
        print(f"{n} messages, ~20 KB with one zip attachment, {args.threads} SMTP clients; "
              f"Postfix {stack.mta.postconf('-h', 'mail_version').strip()} on "
              f"127.0.0.1:{stack.smtp_port}, {os.cpu_count()} CPUs, stack in {stack.root}",
              flush=True)
        with_lmsav = run(stack, "lmsav", "bob@clean.test", "dave@clean.test", n, args.threads,
                         timeout, rnd)
        print(f"message size   {with_lmsav['size'] / 1024:.1f} KB average")
        report("postfix+lmsav", n, with_lmsav)

        run_setup("postfix", "--remove", "--apply", "--config-dir", stack.mta.etc,
                  config=stack.lmsav_config)
        assert not stack.mta.postconf("-h", "content_filter").strip()
        stack.mta.reload()
        stack.watcher.stop()
        time.sleep(1)
        alone = run(stack, "plain", "carol@clean.test", "alice@clean.test", n, args.threads,
                    timeout, rnd)
        report("postfix alone", n, alone)

        ratio = with_lmsav["seconds"] / alone["seconds"]
        extra = (with_lmsav["seconds"] - alone["seconds"]) / n * 1000
        print(f"lmsav cost     {ratio:.2f}x the time of Postfix alone "
              f"({n / alone['seconds']:.1f} → {n / with_lmsav['seconds']:.1f} msg/s, "
              f"+{extra:.1f} ms wall time per message)", flush=True)
    finally:
        stop_stack(stack, args.keep)


if __name__ == "__main__":
    main()
