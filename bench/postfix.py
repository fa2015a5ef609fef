#!/usr/bin/env python3
"""End-to-end rate and latency through a real Postfix: SMTP in → lmsav (content filter transport
→ spool → watch → reinject) → Maildir, against the same Postfix without lmsav, in one run.

Usage: python bench/postfix.py [--transport smtp|lmtp|pipe] [--messages 500]
                               [--threads 4 --threads 20] [--probes 50] [--keep]   (as root)

The stack is the one the MTA tests build (tests/mta/conftest.py, with the listener as
tests/mta/test_postfix_listener.py sets it up): a private Postfix on 127.0.0.1 (its own
configuration, queue and log under a temporary directory, free ports), configured by `lmsav
setup postfix --apply` for the chosen transport, a private lmsav configuration and spool, and a
running `lmsav spool watch` (which runs the SMTP/LMTP listener, `[spool] listen`); Postfix
delivers to Maildirs under the same directory.

  smtp   content_filter = lmsav:[127.0.0.1]:PORT, an smtp(8) transport to the listener (default)
  lmtp   the same with an lmtp(8) transport
  pipe   content_filter = lmsav:dummy, pipe(8) running one `lmsav enqueue` per message

Messages are ~20 KB with one zip attachment (a text document and incompressible data), all
clean. For each --threads N they are built beforehand, then sent by N client threads, each with
one SMTP connection carrying its share. The clock runs from the first send until the recipient's
Maildir new/ holds all of them. Printed per client count, with lmsav and without:

  msg/s        end to end (and how fast Postfix's smtpd accepted them)
  latency      per message, from the start of its SMTP transaction to the mtime of its Maildir
               file (the delivery's write; the kernel's file clock is a few ms coarse): p50, p99
  CPU          CPU milliseconds per message, by process tree: lmsav (the watcher, its workers
               and listener, and each apart; `lmsav enqueue` under the pipe is counted with
               Postfix's pipe(8)),
               Postfix (its master and every daemon), the bench's own client threads
  ratio        lmsav's throughput as a share of Postfix alone's, and the latency it adds

and, unloaded, --probes messages sent one at a time (a connection each, 0.2 s apart), each
waited for: the latency of a single message through an idle stack (p50, p99), with and
without lmsav.

"Without lmsav" is the same instance after `lmsav setup postfix --remove --apply` and a reload,
the watcher stopped. Each run is preceded by a few warm-up messages (to another mailbox) that
must arrive first, so Postfix's and lmsav's processes are up. Everything is stopped at the end,
even on error.
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
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.mta.conftest import (  # noqa: E402
    DOMAINS,
    SENDER,
    TRANSPORTS,
    ListenerStack,
    Mailboxes,
    PrivatePostfix,
    build_listener_stack,
    build_message,
    parsed,
    run_setup,
    zip_of,
)

WORDS = ("invoice order shipment payment account report meeting agenda quarterly budget "
         "delivery contract signed attached please review regards customer support").split()
TOKEN_HEADER = b"\nX-Test-Token: "


def make_message(tok: str, to: str, rnd: random.Random) -> bytes:
    """~20 KB, CRLF line ends: a short text body and one zip attachment."""
    attachment = zip_of({"report.txt": " ".join(rnd.choice(WORDS) for _ in range(800)).encode(),
                         "data.bin": rnd.randbytes(13_000)})
    return build_message(tok, (f"report-{tok}.zip", attachment, "application/zip"), to=to,
                         text="Please find the report attached.\n" * 20,
                         subject="quarterly report")


def mailboxes_for_runs():
    """Fresh recipient addresses, one per timed run or warm-up (every message of a run goes to
    one mailbox, which is then counted): clean mail, so any domain will do."""
    for domain in (d for d in DOMAINS if d != "admin.test"):
        for local in ("alice", "bob", "carol", "dave"):
            address = f"{local}@{domain}"
            if address != SENDER:
                yield address


def maildir_new(mail: Mailboxes, address: str) -> Path:
    local, _, domain = address.partition("@")
    return mail.root / domain / local / "new"


def count_new(folder: Path) -> int:
    try:
        return len(os.listdir(folder))
    except FileNotFoundError:
        return 0


def send_all(port: int, messages: list[tuple[str, str, bytes]], threads: int,
             sent_at: dict[str, float]) -> float:
    """Send with ``threads`` clients, one connection each, messages dealt round-robin; records
    each message's send time (wall clock) by token; returns the seconds until the last one was
    accepted. A refusal or error fails the run."""
    errors: list[BaseException] = []
    start = threading.Barrier(threads)

    def client(share: list[tuple[str, str, bytes]]) -> None:
        try:
            start.wait()
            with smtplib.SMTP("127.0.0.1", port, local_hostname="client.test",
                              timeout=120) as smtp:
                for tok, rcpt, raw in share:
                    sent_at[tok] = time.time()
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


def wait_count(folder: Path, count: int, timeout: float, stack: ListenerStack,
               poll: float = 0.01) -> None:
    deadline = time.monotonic() + timeout
    while count_new(folder) < count:
        if time.monotonic() > deadline:
            raise RuntimeError(f"{folder}: {count_new(folder)} of {count} messages after "
                               f"{timeout:.0f} s\n{stack.debug()}")
        time.sleep(poll)


def token_of(data: bytes) -> str:
    at = data.find(TOKEN_HEADER)
    return data[at + len(TOKEN_HEADER):data.index(b"\n", at + 1)].strip().decode() \
        if at >= 0 else ""


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(share * len(ordered)) - 1))]


# -- CPU by process tree ---------------------------------------------------------------------

TICK = os.sysconf("SC_CLK_TCK")


def _processes() -> dict[int, tuple[int, float]]:
    """pid → (parent pid, CPU seconds of the process and of the children it has reaped)."""
    out = {}
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        out[int(pid)] = (int(fields[1]), sum(int(v) for v in fields[11:15]) / TICK)
    return out


def _lmsav_part(pid: int, roots: list[int]) -> str:
    """Which part of lmsav a process of its tree is: the listener, the watcher, a worker."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return "workers"
    if b"listen" in cmdline:
        return "listener"
    return "watcher" if pid in roots else "workers"


def cpu_by_tree(roots: dict[str, list[int]]) -> dict[str, float]:
    """CPU seconds used so far by each group's process trees (the roots and everything below
    them, live or reaped): lmsav = watcher, workers and listener, also apart as lmsav.listener,
    lmsav.workers, lmsav.watcher; mta = the MTA's master or daemon."""
    procs = _processes()
    children: dict[int, list[int]] = {}
    for pid, (ppid, _cpu) in procs.items():
        children.setdefault(ppid, []).append(pid)
    total: dict[str, float] = {}
    for group, pids in roots.items():
        seen, todo = set(), [pid for pid in pids if pid in procs]
        while todo:
            pid = todo.pop()
            if pid not in seen:
                seen.add(pid)
                todo.extend(children.get(pid, []))
        total[group] = sum(procs[pid][1] for pid in seen)
        if group == "lmsav":
            for pid in seen:
                part = f"lmsav.{_lmsav_part(pid, pids)}"
                total[part] = total.get(part, 0.0) + procs[pid][1]
    return total


def stack_roots(stack: ListenerStack) -> dict[str, list[int]]:
    lmsav = [p.pid for p in (stack.watcher.proc, getattr(stack.listener, "proc", None)) if p]
    if stack.name == "postfix":
        pid_file = stack.mta.root / "queue" / "pid" / "master.pid"
        mta = [int(pid_file.read_text().split()[0])] if pid_file.exists() else []
    else:
        mta = [stack.mta.proc.pid] if stack.mta.proc else []
    return {"lmsav": lmsav, "mta": mta}


def cpu_now(roots: dict[str, list[int]]) -> dict[str, float]:
    """The trees' CPU seconds, and the bench's own (its threads, not the stack it started)."""
    return {**cpu_by_tree(roots), "bench": time.process_time()}


def cpu_used(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    return {group: max(0.0, after.get(group, 0.0) - before.get(group, 0.0))
            for group in after}


# -- one timed run ------------------------------------------------------------------------------

@dataclass
class Run:
    threads: int
    n: int
    seconds: float
    accepted: float  # seconds until the MTA had accepted all of them over SMTP
    size: float
    delivered: int
    duplicates: int
    stamped: int
    latencies: list[float] = field(default_factory=list)  # seconds, per message
    cpu: dict[str, float] = field(default_factory=dict)

    @property
    def rate(self) -> float:
        return self.n / self.seconds


def timed_run(stack: ListenerStack, label: str, rcpt: str, warm_rcpt: str, n: int, threads: int,
              timeout: float, rnd: random.Random) -> Run:
    """Warm up, then send ``n`` messages to ``rcpt`` and time them into its Maildir."""
    sent_at: dict[str, float] = {}
    warm = [(f"{label}-warm-{i}", warm_rcpt, make_message(f"{label}-warm-{i}", warm_rcpt, rnd))
            for i in range(threads * 2)]
    send_all(stack.smtp_port, warm, threads, sent_at)
    wait_count(maildir_new(stack.mail, warm_rcpt), len(warm), 120, stack)
    messages = [(f"{label}-{i}", rcpt, make_message(f"{label}-{i}", rcpt, rnd))
                for i in range(n)]
    size = sum(len(raw) for _, _, raw in messages) / n
    folder = maildir_new(stack.mail, rcpt)
    before = count_new(folder)
    sent_at.clear()
    roots = stack_roots(stack)
    cpu_before = cpu_now(roots)
    t0 = time.perf_counter()
    accepted = send_all(stack.smtp_port, messages, threads, sent_at)
    wait_count(folder, before + n, timeout, stack)
    seconds = time.perf_counter() - t0
    cpu = cpu_used(cpu_before, cpu_now(roots))
    time.sleep(1)  # a duplicate would show up now
    latencies, ids, stamped = [], [], 0
    for path in folder.iterdir():
        data = path.read_bytes()
        tok = token_of(data)
        if tok in sent_at:
            latencies.append(path.stat().st_mtime - sent_at[tok])
        message = parsed(data)
        ids.append(str(message["Message-ID"]))
        stamped += message["X-AV-Status"] is not None
    return Run(threads, n, seconds, accepted, size, len(ids), len(ids) - len(set(ids)),
               stamped, latencies, cpu)


def probe_latency(stack: ListenerStack, label: str, rcpt: str, count: int,
                  rnd: random.Random) -> list[float]:
    """``count`` messages one at a time through an idle stack, each over a connection of its
    own (as from other hosts): seconds from connecting until the message is in the Maildir
    (polled every millisecond). The client says QUIT only then: Exim takes ~200 ms to answer
    it, which is the client's wait, not the message's."""
    folder = maildir_new(stack.mail, rcpt)
    out = []
    for i in range(count):
        raw = make_message(f"{label}-probe-{i}", rcpt, rnd)
        before = count_new(folder)
        t0 = time.perf_counter()
        with smtplib.SMTP("127.0.0.1", stack.smtp_port, local_hostname="client.test",
                          timeout=60) as smtp:
            smtp.sendmail(SENDER, [rcpt], raw)
            wait_count(folder, before + 1, 60, stack, poll=0.001)
            out.append(time.perf_counter() - t0)
        time.sleep(0.2)
    return out


# -- the report ---------------------------------------------------------------------------------

def ms(seconds: float) -> str:
    return f"{seconds * 1000:.0f} ms" if seconds >= 0.0995 else f"{seconds * 1000:.1f} ms"


def report_run(label: str, r: Run) -> None:
    parts = [part for part in ("listener", "workers", "watcher") if f"lmsav.{part}" in r.cpu]
    split = (" (" + ", ".join(f"{part} {r.cpu[f'lmsav.{part}'] / r.n * 1000:.1f}"
                              for part in parts) + ")") if r.cpu.get("lmsav") else ""
    cpu = (f"lmsav {r.cpu.get('lmsav', 0.0) / r.n * 1000:.1f}{split}, "
           + ", ".join(f"{group} {r.cpu.get(group, 0.0) / r.n * 1000:.1f}"
                       for group in ("mta", "bench")))
    print(f"  {label:<16} {r.rate:7.1f} msg/s end to end ({r.seconds:.2f} s for {r.n}; SMTP "
          f"accepted all in {r.accepted:.2f} s = {r.n / r.accepted:.0f} msg/s); latency p50 "
          f"{ms(percentile(r.latencies, 0.5))}, p99 {ms(percentile(r.latencies, 0.99))}; "
          f"CPU ms/msg: {cpu}; {r.delivered} delivered, {r.duplicates} duplicates, "
          f"{r.stamped} with X-AV headers", flush=True)


def report_comparison(mta: str, transport: str, with_lmsav: Run, alone: Run) -> None:
    share = with_lmsav.rate / alone.rate
    print(f"  => {transport}, {with_lmsav.threads} clients: lmsav delivers {share:.0%} of "
          f"{mta} alone's rate ({alone.rate:.1f} → {with_lmsav.rate:.1f} msg/s; target ≥ 50%); "
          "latency added "
          f"p50 +{ms(percentile(with_lmsav.latencies, 0.5) - percentile(alone.latencies, 0.5))}"
          f", p99 +{ms(percentile(with_lmsav.latencies, 0.99) - percentile(alone.latencies, 0.99))}"
          f"; wall time +{(with_lmsav.seconds - alone.seconds) / with_lmsav.n * 1000:.1f} ms "
          "per message", flush=True)


def report_probes(transport: str, with_lmsav: list[float], alone: list[float]) -> None:
    if not with_lmsav:
        return
    print(f"one message at a time ({len(with_lmsav)} each): with lmsav ({transport}) p50 "
          f"{ms(percentile(with_lmsav, 0.5))}, p99 {ms(percentile(with_lmsav, 0.99))}; alone "
          f"p50 {ms(percentile(alone, 0.5))}, p99 {ms(percentile(alone, 0.99))}; added p50 "
          f"+{ms(percentile(with_lmsav, 0.5) - percentile(alone, 0.5))}, p99 "
          f"+{ms(percentile(with_lmsav, 0.99) - percentile(alone, 0.99))}", flush=True)


# -- the whole bench ------------------------------------------------------------------------------

def arguments(description: str, mta: str, immediate: bool = False):
    parser = argparse.ArgumentParser(description=description)
    if immediate:
        parser.add_argument("--immediate", action="store_true",
                            help="smtp_accept_queue_per_connection = 0: deliver every message "
                                 "at once, however many came over one connection")
    parser.add_argument("--transport", choices=TRANSPORTS, default="smtp",
                        help=f"how {mta} hands mail to lmsav (default smtp: the listener)")
    parser.add_argument("--messages", type=int, default=500)
    parser.add_argument("--threads", type=int, action="append",
                        help="SMTP clients sending at once (repeatable; default: 4 and 20)")
    parser.add_argument("--probes", type=int, default=50,
                        help="messages sent one at a time for the unloaded latency (0: none)")
    parser.add_argument("--timeout", type=float, help="seconds to wait for delivery per run "
                        "(default: max(120, messages / 2))")
    parser.add_argument("--keep", action="store_true", help="keep the stack's directory")
    args = parser.parse_args()
    args.threads = args.threads or [4, 20]
    args.timeout = args.timeout or max(120.0, args.messages / 2)
    if os.geteuid() != 0:
        raise SystemExit(f"the bench runs a private {mta} and needs root")
    # SIGTERM/SIGHUP stop the run through the callers' finally, like ^C.
    for signum in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, lambda s, f: sys.exit(128 + s))
    return args


def bench(stack: ListenerStack, args, mta: str, version: str, remove_lmsav) -> None:
    """Runs with lmsav for every client count, then ``remove_lmsav()`` and the same without."""
    rnd = random.Random(1)
    n = args.messages
    boxes = mailboxes_for_runs()
    print(f"{n} messages per run, ~20 KB with one zip attachment; {mta} {version} on "
          f"127.0.0.1:{stack.smtp_port}, lmsav over {args.transport}"
          f"{f' ({stack.listen})' if stack.listen else ''}, spool workers 2; "
          f"{os.cpu_count()} CPUs; stack in {stack.root}", flush=True)
    with_lmsav: dict[int, Run] = {}
    alone: dict[int, Run] = {}
    probes_with, probes_alone = [], []
    print(f"{mta}+lmsav:", flush=True)
    for threads in args.threads:
        with_lmsav[threads] = timed_run(stack, f"lmsav{threads}", next(boxes), next(boxes), n,
                                        threads, args.timeout, rnd)
        report_run(f"{threads} clients", with_lmsav[threads])
    if args.probes:
        probes_with = probe_latency(stack, "lmsav", next(boxes), args.probes, rnd)
    remove_lmsav()
    stack.watcher.stop()
    time.sleep(1)
    print(f"{mta} alone:", flush=True)
    for threads in args.threads:
        alone[threads] = timed_run(stack, f"plain{threads}", next(boxes), next(boxes), n,
                                   threads, args.timeout, rnd)
        report_run(f"{threads} clients", alone[threads])
    if args.probes:
        probes_alone = probe_latency(stack, "plain", next(boxes), args.probes, rnd)
    print("lmsav's cost:", flush=True)
    for threads in args.threads:
        report_comparison(mta, args.transport, with_lmsav[threads], alone[threads])
    report_probes(args.transport, probes_with, probes_alone)


def stop_stack(stack: ListenerStack, keep: bool) -> None:
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
    args = arguments(__doc__.split("\n")[0], "Postfix")
    if not shutil.which("postfix") and not os.path.exists("/usr/sbin/postfix"):
        raise SystemExit("Postfix is not installed (Debian package postfix)")
    stack = build_listener_stack("postfix", PrivatePostfix, args.transport)

    def remove_lmsav() -> None:
        run_setup("postfix", "--remove", "--apply", "--config-dir", stack.mta.etc,
                  config=stack.lmsav_config)
        assert not stack.mta.postconf("-h", "content_filter").strip()
        stack.mta.reload()

    try:
        stack.start()
        version = stack.mta.postconf("-h", "mail_version").strip()
        bench(stack, args, "Postfix", version, remove_lmsav)
    finally:
        stop_stack(stack, args.keep)


if __name__ == "__main__":
    main()
