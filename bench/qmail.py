#!/usr/bin/env python3
"""Latency lmsav-qmail-queue adds per message, against calling qmail-queue directly.

Usage: bench/qmail.py [--messages N] [--workdir DIR] [--no-fallback-run]

Each message (20 KB: a text part and a base64 zip attachment, all clean so every one is
queued) is handed over the way qmail-smtpd does it (qmail.c: a pipe on descriptor 0 for the
message, one on 1 for the envelope), once straight to a stand-in qmail-queue and once to
lmsav-qmail-queue with the daemon running, which hands it on to the same stand-in. The stand-in
is a two-line shell script that reads both descriptors to the end, about what the real
qmail-queue costs without its disk writes, so the difference is lmsav's: start-up, the
exchange with the daemon, the scan and policy, and the extra process.

Target: added latency p50 <= 20 ms and p99 <= 60 ms. Also prints the in-process fallback
(no daemon) for reference.
"""

from __future__ import annotations

import argparse
import io
import random
import statistics
import subprocess
import sys
import tempfile
import time
import zipfile
from email.message import EmailMessage
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO))

from tests.qmail.conftest import WRAPPER, FakeQueue, Setup, envelope, submit  # noqa: E402

STAND_IN = "#!/bin/sh\ncat >/dev/null && cat <&1 >/dev/null\n"


def message_20k(rng: random.Random, n: int) -> bytes:
    words = [rng.choice(("mail", "server", "report", "quarterly", "budget", "meeting", "the",
                         "and", "attached", "figures", "please", "review")) for _ in range(1500)]
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("figures.csv", "\n".join(f"{i},{rng.random():.6f},{rng.random():.6f}"
                                             for i in range(900)))
    msg = EmailMessage()
    msg["From"] = "alice@sender.example"
    msg["To"] = "bob@rcpt.example"
    msg["Subject"] = f"report {n}"
    msg["Message-ID"] = f"<bench{n}@sender.example>"
    msg.set_content(" ".join(words) + "\n")
    msg.add_attachment(buf.getvalue(), maintype="application", subtype="zip",
                       filename="figures.zip")
    return msg.as_bytes()


def run(program: str, messages: list[bytes], env: dict) -> list[float]:
    times = []
    env_bytes = envelope("alice@sender.example", "bob@rcpt.example")
    for raw in messages:
        t0 = time.perf_counter()
        result = submit(raw, env_bytes, env, program=program)
        times.append(time.perf_counter() - t0)
        if result.code != 0:
            raise SystemExit(f"{program} exited {result.code}: {result.stderr}")
    return times


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--messages", type=int, default=300)
    ap.add_argument("--workdir", type=Path)
    ap.add_argument("--no-fallback-run", action="store_true")
    args = ap.parse_args()
    root = Path(tempfile.mkdtemp(prefix="lmsav-bench-qmail-", dir=args.workdir))
    # As an installed package is: byte-compiled (PYTHONDONTWRITEBYTECODE would otherwise make
    # every wrapper process compile lmsav's modules from source).
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(REPO / "lmsav")], check=True)
    rng = random.Random(7)
    messages = [message_20k(rng, i) for i in range(args.messages)]
    size = statistics.mean(len(m) for m in messages)
    stand_in = root / "qmail-queue"
    stand_in.write_text(STAND_IN)
    stand_in.chmod(0o755)
    setup = Setup(root / "served", daemon=True)
    queue = FakeQueue(root / "fake")  # only for the environment's variables
    env = setup.env(queue, LMSAV_QMAILQUEUE=str(stand_in))
    try:
        run(WRAPPER, messages[:20], env)  # warm up: page cache, worker engines
        run(str(stand_in), messages[:20], env)
        direct, wrapped = [], []
        for i in range(0, len(messages), 50):  # interleaved, so drift hits both alike
            direct += run(str(stand_in), messages[i:i + 50], env)
            wrapped += run(WRAPPER, messages[i:i + 50], env)
    finally:
        setup.stop_daemon()
    print(f"{len(messages)} messages of {size / 1024:.1f} KB on average, daemon with 2 workers")
    print(f"{'':28}{'p50':>9}{'p90':>9}{'p99':>9}")
    for label, values in (("qmail-queue directly", direct), ("lmsav-qmail-queue", wrapped)):
        print(f"{label:28}" + "".join(f"{pct(values, p) * 1000:8.1f}ms" for p in (50, 90, 99)))
    added = {p: (pct(wrapped, p) - pct(direct, p)) * 1000 for p in (50, 90, 99)}
    print(f"{'added by lmsav':28}" + "".join(f"{added[p]:8.1f}ms" for p in (50, 90, 99)))
    ok = added[50] <= 20 and added[99] <= 60
    print(f"target p50 <= 20 ms, p99 <= 60 ms: {'met' if ok else 'NOT met'}")
    if not args.no_fallback_run:
        unserved = Setup(root / "unserved", daemon=False)
        env = unserved.env(queue, LMSAV_QMAILQUEUE=str(stand_in))
        fallback = run(WRAPPER, messages[:20], env)
        print(f"without the daemon (in-process fallback), p50 over 20 messages: "
              f"{pct(fallback, 50) * 1000:.0f} ms")


if __name__ == "__main__":
    main()
