#!/usr/bin/env python3
"""End-to-end rate and latency through a real Exim: SMTP in → lmsav (smtp/lmtp transport →
spool → watch → reinject) → Maildir, against the same Exim without lmsav, in one run.

Usage: python bench/exim.py [--transport smtp|lmtp|pipe] [--messages 500]
                            [--threads 4 --threads 20] [--probes 50] [--immediate] [--keep]
                            (as root)

The Exim twin of bench/postfix.py (same messages, runs and figures; its docstring explains
them). The stack is the one the Exim tests build (tests/mta/conftest.py): Exim
(exim4-daemon-heavy) unpacked beside Postfix by scripts/mta/exim-unpack, run as a daemon with
`-C` on a private configuration (queue runs every second) set up by `lmsav setup exim --apply`
for the chosen transport — an smtp transport to the listener of `lmsav spool watch` (smtp, the
default), the same with ``protocol = lmtp``, or the pipe running `lmsav enqueue` — and
delivering to Maildirs. "Without lmsav" is the same daemon after `lmsav setup exim --remove
--apply` and a SIGHUP, the watcher stopped.

Exim's own defaults apply but for smtp_accept_max (20 connections; raised to twice the
clients and 20 more, room for the watcher's reinjection connections): after
smtp_accept_queue_per_connection (10) messages on one connection, Exim queues the rest for the
next queue runner instead of delivering them at once, with or without lmsav — and lmsav's
reinjection keeps its connection open, so past its tenth message every scanned message waits
for a queue run (here every second; Debian's default is every 30 minutes). --immediate sets
smtp_accept_queue_per_connection = 0, as Exim's manual advises for a dedicated mail server.
"""

from __future__ import annotations

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.postfix import arguments, bench, stop_stack  # noqa: E402
from tests.mta.conftest import (  # noqa: E402
    PrivateExim,
    build_listener_stack,
    run_setup,
    unpacked_exim,
)


def exim_version(stack) -> str:
    import subprocess

    out = subprocess.run(stack.mta.command("-bV"), capture_output=True, text=True).stdout
    first = out.splitlines()[0] if out else ""
    return first.split("version", 1)[1].split()[0] if "version" in first else "?"


def main() -> None:
    args = arguments(__doc__.split("\n")[0], "Exim", immediate=True)
    try:
        exim = unpacked_exim()
    except BaseException as err:  # pytest.skip's exception when it cannot be unpacked
        raise SystemExit(f"cannot unpack Exim: {err}") from None
    stack = build_listener_stack(
        "exim", lambda root, port, mail: PrivateExim(exim, root, port, mail), args.transport)

    def remove_lmsav() -> None:
        run_setup("exim", "--remove", "--apply", "--config-dir", stack.mta.root,
                  config=stack.lmsav_config)
        assert "lmsav_scan" not in stack.mta.config.read_text()
        stack.mta.reload()

    # Exim accepts 20 SMTP connections at most by default: 20 clients and the watcher's
    # reinjection connections need more.
    options = f"smtp_accept_max = {max(args.threads) * 2 + 20}\n"
    if args.immediate:
        options += "smtp_accept_queue_per_connection = 0\n"
    stack.mta.config.write_text(options + stack.mta.config.read_text())
    try:
        stack.start()
        version = exim_version(stack) + (" (smtp_accept_queue_per_connection = 0)"
                                          if args.immediate else "")
        bench(stack, args, "Exim", version, remove_lmsav)
    finally:
        stop_stack(stack, args.keep)


if __name__ == "__main__":
    main()
