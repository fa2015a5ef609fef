#!/usr/bin/env python3
"""An update of a large daily database while the daemon is busy: lmsav update + daemon vs clamd.

Usage: bench/update.py [--signatures 2000000] [--new 20000] [--workdir DIR] [--no-clamd]

A daily database of N signatures (95% .hdb, 5% .ndb; bench/gen.py, seeded) is published as
version 1 on a mirror in ClamAV's layout on 127.0.0.1, installed by ``lmsav update`` and loaded
by ``lmsav daemon``. A client then scans continuously over the daemon's socket (INSTREAM of a
20 KB sample) while version 2 is published (``--new`` added signatures, one of them matching
the sample) with its ``daily-2.cdiff``, and ``lmsav update`` runs: diff fetched, applied,
checked, compiled, self-tested, switched, daemon told to RELOAD. Printed:

  update   seconds of the update run itself (download to switch)
  active   seconds from the start of the update until the daemon first reports the sample
  latency  the client's scan latency: median while steady, worst during the update (from its
           start until the daemon reports the sample) and during the switch itself (from
           RELOAD on); the update runs in a process of its own, as cron runs it, so its work
           does not hold this process's interpreter lock against the client
  RSS      the daemon's resident memory (all its processes): steady, and peak during the switch

The same is measured for clamd (Debian's clamav-daemon) with the same signatures as plain
.hdb/.ndb files: version 2's files are moved into its database directory, then RELOAD.

Generated containers cannot carry ClamAV's signature, so this process and the daemon it starts
accept the bench's own marker ("BENCH") where ClamAV's classic signature is checked; everything
else (MD5s, SHA-256s of the .info, the cdiff script, compilation, self-test) runs as in use.
Not part of the test suite: it takes minutes (the default under ~10 minutes on 2 cores).
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import http.server
import io
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
from functools import partial
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.gen import write_hash_sigs, write_ndb_sigs
from tests.daemon_clients.conftest import (
    CLAMD,
    Daemon,
    free_port,
    read_reply,
    start_clamd,
)

BENCH_DSIG = "BENCH"
SAMPLE = b"lmsav bench update sample\n" + bytes(range(256)) * 80
SAMPLE_SIG = f"{hashlib.md5(SAMPLE).hexdigest()}:{len(SAMPLE)}:Bench.Update.NewSignature-2"
NAME = "daily"


def trust_bench_signature() -> None:
    """Accept BENCH where ClamAV's classic signature is checked (in this process and the
    children it forks)."""
    from lmsav.scanner.signatures import cvd

    original = cvd.verify_dsig
    cvd.verify_dsig = lambda digest, dsig, key: dsig == BENCH_DSIG or original(digest, dsig, key)


# -- the databases ------------------------------------------------------------------------------

def header_line(version: int, sigs: int, md5: str, dsig: str, now: int) -> str:
    when = time.strftime("%d %b %Y %H-%M +0000", time.gmtime(now))
    return f"ClamAV-VDB:{when}:{version}:{sigs}:90:{md5}:{dsig}:bench:{now}"


def info_text(version: int, sigs: int, members: dict[str, bytes], now: int) -> bytes:
    lines = [header_line(version, sigs, "X", BENCH_DSIG, now)]
    lines += [f"{n}:{len(d)}:{hashlib.sha256(d).hexdigest()}" for n, d in members.items()]
    return ("\n".join(lines) + "\n").encode() + f"DSIG:{BENCH_DSIG}\n".encode()


def write_cvd(path: Path, version: int, sigs: int, members: dict[str, bytes], now: int) -> None:
    files = {"COPYING": b"bench data\n",
             f"{NAME}.info": info_text(version, sigs, members, now), **members}
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for name, data in files.items():
            entry = tarfile.TarInfo(name)
            entry.size, entry.mode = len(data), 0o644
            tar.addfile(entry, io.BytesIO(data))
    body = gzip.compress(raw.getvalue(), compresslevel=6)
    head = header_line(version, sigs, hashlib.md5(body).hexdigest(), BENCH_DSIG, now)
    path.write_bytes(head.encode().ljust(512, b" ") + body)


def write_cdiff(path: Path, version: int, old: dict[str, bytes], new: dict[str, bytes],
                added: bytes, old_sigs: int, sigs: int, now: int) -> None:
    """Version-1 → version: ADD the new .hdb lines, XCHG the .info lines that change."""
    old_info = info_text(version - 1, old_sigs, old, now).split(b"\n")
    new_info = info_text(version, sigs, new, now).split(b"\n")
    script = [f"OPEN {NAME}.hdb".encode()]
    script += [b"ADD " + line for line in added.splitlines()]
    script += [b"CLOSE", f"OPEN {NAME}.info".encode()]
    for number, (before, after) in enumerate(zip(old_info, new_info), 1):
        if before != after:
            start = before.split(b" ", 1)[0]
            script.append(b"XCHG %d %s %s" % (number, start, after))
    script.append(b"CLOSE")
    text = b"\n".join(script) + b"\n"
    path.write_bytes(b"ClamAV-Diff:%d:%d:" % (version, len(text)) + gzip.compress(text)
                     + b":" + BENCH_DSIG.encode())


def generate(work: Path, signatures: int, new: int) -> tuple[Path, dict[int, dict[str, bytes]]]:
    """The mirror directory with version 1 published, and both versions' members."""
    src = work / "src"
    src.mkdir(parents=True, exist_ok=True)
    ndb_count = max(1, signatures // 20)
    if not (src / "v1.hdb").exists():
        write_hash_sigs(src / "v1.hdb", signatures - ndb_count, seed=11)
        write_ndb_sigs(src / "v1.ndb", ndb_count, seed=12)
        write_hash_sigs(src / "added.hdb", new - 1, seed=13)
    hdb, ndb = (src / "v1.hdb").read_bytes(), (src / "v1.ndb").read_bytes()
    added = (src / "added.hdb").read_bytes() + SAMPLE_SIG.encode() + b"\n"
    versions = {1: {f"{NAME}.hdb": hdb, f"{NAME}.ndb": ndb},
                2: {f"{NAME}.hdb": hdb + added, f"{NAME}.ndb": ndb}}
    mirror = work / "mirror"
    shutil.rmtree(mirror, ignore_errors=True)
    mirror.mkdir()
    now = int(time.time())
    write_cvd(mirror / f"{NAME}.cvd", 1, signatures, versions[1], now)
    (work / "next").mkdir(exist_ok=True)
    write_cvd(work / "next" / f"{NAME}.cvd", 2, signatures + new, versions[2], now)
    write_cdiff(work / "next" / f"{NAME}-2.cdiff", 2, versions[1], versions[2], added,
                signatures, signatures + new, now)
    return mirror, versions


def publish_next(work: Path, mirror: Path) -> None:
    for name in (f"{NAME}-2.cdiff", f"{NAME}.cvd"):
        tmp = mirror / f".{name}.tmp"
        shutil.copy(work / "next" / name, tmp)
        os.replace(tmp, mirror / name)


def serve(directory: Path) -> tuple[str, http.server.ThreadingHTTPServer]:
    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    class Server(http.server.ThreadingHTTPServer):
        def handle_error(self, request, client_address):
            pass  # the updater hangs up after a header's 512 bytes: not an error

    server = Server(("127.0.0.1", 0), partial(Quiet, directory=str(directory)))
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
    return f"http://127.0.0.1:{server.server_address[1]}", server


# -- watching a daemon --------------------------------------------------------------------------

def tree_rss_kib(pid: int) -> int:
    """VmRSS of a process and all its descendants, in KiB (pages shared copy-on-write count
    once per process), found through /proc's children lists: cheap enough to sample often."""
    total, todo = 0, [pid]
    while todo:
        pid = todo.pop()
        try:
            with open(f"/proc/{pid}/status") as fh:
                total += next((int(line.split()[1]) for line in fh
                               if line.startswith("VmRSS:")), 0)
            for task in os.listdir(f"/proc/{pid}/task"):
                with open(f"/proc/{pid}/task/{task}/children") as fh:
                    todo += [int(child) for child in fh.read().split()]
        except (OSError, ValueError):
            continue  # a worker that just exited
    return total


class Watch:
    """A client scanning the sample continuously and a sampler of the daemon's RSS."""

    def __init__(self, daemon: Daemon):
        self.daemon = daemon
        self.scans: list[tuple[float, float, bool]] = []  # (start, seconds, found)
        self.rss: list[tuple[float, int]] = []
        self.errors = 0
        self.running = True
        self.threads = [threading.Thread(target=self._scan, daemon=True),
                        threading.Thread(target=self._sample, daemon=True)]
        for thread in self.threads:
            thread.start()

    def _scan(self) -> None:
        while self.running:
            start = time.monotonic()
            try:
                reply = self.daemon.instream(SAMPLE, timeout=120)
            except OSError:
                self.errors += 1
                time.sleep(0.05)
                continue
            if b"ERROR" in reply:
                self.errors += 1
            self.scans.append((start, time.monotonic() - start, b"FOUND" in reply))

    def _sample(self) -> None:
        # Every 10 ms, RSS alone: a reload's transient lasts tens of milliseconds.
        while self.running:
            self.rss.append((time.monotonic(), tree_rss_kib(self.daemon.proc.pid)))
            time.sleep(0.01)

    def stop(self) -> None:
        self.running = False
        for thread in self.threads:
            thread.join()

    def found_since(self, t0: float) -> float | None:
        return next((s + d for s, d, found in self.scans if found and s >= t0), None)

    def wait_found(self, t0: float, timeout: float) -> float | None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = self.found_since(t0)
            if found is not None:
                return found
            time.sleep(0.05)
        return None

    def figures(self, t0: float, active: float | None, reload_at: float | None = None) -> dict:
        end = (active or time.monotonic()) + 1.0

        def during(start: float) -> list[float]:
            return [d for s, d, _ in self.scans if start <= s <= end or s < start < s + d]

        steady = [d for s, d, _ in self.scans if s < t0]
        switch = during(t0)
        reload = during(reload_at) if reload_at is not None else switch
        return {"steady_median": statistics.median(steady) if steady else float("nan"),
                "steady_worst": max(steady, default=float("nan")),
                "switch_worst": max(switch, default=float("nan")),
                "switch_scans": len(switch),
                "reload_worst": max(reload, default=float("nan")),
                "rss_steady": max((r for t, r in self.rss if t < t0), default=0),
                "rss_peak": max((r for t, r in self.rss if t0 <= t <= end), default=0),
                "errors": self.errors}


# -- the two daemons ----------------------------------------------------------------------------

def start_lmsav(root: Path, bases: Path) -> Daemon:
    """``lmsav daemon`` with the bench's signature marker accepted."""
    import subprocess

    config = root / "lmsav.toml"
    config.write_text(f'[paths]\nstate_dir = "{root / "state"}"\n\n[daemon]\n'
                      f'socket_mode = "0666"\nstream_max_length = "100M"\n')
    sock, port, log = root / "lmsav.sock", free_port(), root / "lmsav-daemon.log"
    env = {**os.environ, "LMSAV_CONFIG": str(config), "XDG_CACHE_HOME": str(root / "cache")}
    launcher = (f"import sys; sys.path.insert(0, {str(REPO)!r}); "
                "from bench.update import trust_bench_signature; trust_bench_signature(); "
                "sys.argv[0] = 'lmsav'; from lmsav.launcher import main; main()")
    cmd = [sys.executable, "-c", launcher, "daemon", "--socket", str(sock), "--tcp",
           f"127.0.0.1:{port}", "-d", str(bases)]
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env,
                                start_new_session=True, cwd=root)
    daemon = Daemon("lmsav", root, sock, port, proc, log)
    daemon.wait_ready(900)
    return daemon


def update_options(url: str):
    from lmsav.update.updater import Options

    return Options(sources=(url,), databases=(NAME,), check_interval=0.0, trust_dirs=(),
                   dns_txt="")


def update_child() -> None:
    """In the update's own process (argv: bases, mirror URL, daemon socket): run the update,
    telling the daemon to RELOAD; print the outcome and when RELOAD was sent, as JSON."""
    from lmsav.update.updater import update

    trust_bench_signature()
    bases, url, sock_path = sys.argv[1:4]
    reload_at = []

    def notify() -> dict:
        reload_at.append(time.monotonic())  # CLOCK_MONOTONIC: the same clock in every process
        with socket.socket(socket.AF_UNIX) as sock:
            sock.settimeout(600)
            sock.connect(sock_path)
            sock.sendall(b"zRELOAD\0")
            return {"daemon": read_reply(sock).decode()}

    outcome = update(Path(bases), update_options(url), notify=notify)
    print(json.dumps({"ok": outcome.ok, "errors": outcome.errors,
                      "how": outcome.changes[0].how if outcome.changes else "",
                      "reload_at": reload_at[0] if reload_at else None}))


def run_update_process(bases: Path, url: str, daemon: Daemon) -> dict:
    code = (f"import sys; sys.path.insert(0, {str(REPO)!r}); "
            "from bench.update import update_child; update_child()")
    done = subprocess.run([sys.executable, "-c", code, str(bases), url, str(daemon.socket)],
                          capture_output=True, text=True, check=False)
    try:
        return json.loads(done.stdout.strip().splitlines()[-1])
    except (IndexError, ValueError):
        raise SystemExit(f"bench: the update process failed (exit {done.returncode}):\n"
                         f"{done.stderr[-2000:]}") from None


def bench_lmsav(work: Path, mirror: Path) -> dict:
    from lmsav.update.updater import update

    trust_bench_signature()
    url, server = serve(mirror)
    root = work / "lmsav"
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir()
    bases = root / "bases"
    begin = time.monotonic()
    first = update(bases, update_options(url))
    if not first.ok:
        raise SystemExit(f"bench: first update failed: {first.errors}")
    print(f"  lmsav: version 1 installed in {time.monotonic() - begin:.1f} s", flush=True)
    begin = time.monotonic()
    daemon = start_lmsav(root, bases / "current")
    print(f"  lmsav: daemon ready in {time.monotonic() - begin:.1f} s", flush=True)
    try:
        watch = Watch(daemon)
        time.sleep(3.0)
        publish_next(work, mirror)
        t0 = time.monotonic()
        outcome = run_update_process(bases, url, daemon)
        updated = time.monotonic() - t0
        if not outcome["ok"]:
            raise SystemExit(f"bench: the update failed: {outcome['errors']}")
        active = watch.wait_found(t0, 900)
        watch.stop()
        figures = watch.figures(t0, active, outcome["reload_at"])
        figures.update(update=updated, active=(active - t0) if active else float("nan"),
                       how=outcome["how"])
        return figures
    finally:
        daemon.stop()
        server.shutdown()
        server.server_close()


def bench_clamd(work: Path, versions: dict[int, dict[str, bytes]]) -> dict:
    root = work / "clamd"
    shutil.rmtree(root, ignore_errors=True)
    bases = root / "bases"
    bases.mkdir(parents=True)
    os.chmod(root, 0o755)
    for name, data in versions[1].items():
        (bases / name).write_bytes(data)
    begin = time.monotonic()
    daemon = start_clamd(root, bases=bases, stream_max="100M")
    print(f"  clamd: ready in {time.monotonic() - begin:.1f} s", flush=True)
    try:
        watch = Watch(daemon)
        time.sleep(3.0)
        t0 = time.monotonic()
        for name, data in versions[2].items():  # as freshclam leaves them: whole files
            if data != versions[1][name]:
                (root / name).write_bytes(data)
                os.replace(root / name, bases / name)
        daemon.command(b"RELOAD", timeout=60)  # t0 is RELOAD's time: the switch is all there is
        active = watch.wait_found(t0, 900)
        watch.stop()
        figures = watch.figures(t0, active)
        figures.update(active=(active - t0) if active else float("nan"))
        return figures
    finally:
        daemon.stop()


def line(name: str, f: dict) -> str:
    update = f"update {f['update']:6.1f} s ({f['how']})   " if "update" in f else ""
    return (f"{name:6s} {update}active after {f['active']:6.1f} s   scan latency: steady "
            f"median {f['steady_median'] * 1000:6.1f} ms, worst {f['steady_worst'] * 1000:7.1f}"
            f" ms; during the update worst {f['switch_worst'] * 1000:8.1f} ms over "
            f"{f['switch_scans']} scans, from RELOAD on worst {f['reload_worst'] * 1000:8.1f} ms"
            f"   RSS steady {f['rss_steady'] / 1024:6.0f} MB, peak "
            f"{f['rss_peak'] / 1024:6.0f} MB during the switch   failed scans {f['errors']}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--signatures", type=int, default=2_000_000)
    ap.add_argument("--new", type=int, default=20_000, help="signatures added by version 2")
    ap.add_argument("--workdir", type=Path)
    ap.add_argument("--no-clamd", action="store_true")
    args = ap.parse_args()
    work = args.workdir or Path(tempfile.mkdtemp(prefix="lmsav-bench-update-"))
    work.mkdir(parents=True, exist_ok=True)
    print(f"update bench: {args.signatures} signatures, +{args.new} in version 2, "
          f"{os.cpu_count()} CPUs, data in {work}", flush=True)
    begin = time.monotonic()
    mirror, versions = generate(work, args.signatures, args.new)
    print(f"  generated in {time.monotonic() - begin:.1f} s: {NAME}.cvd "
          f"{(mirror / f'{NAME}.cvd').stat().st_size >> 20} MiB, {NAME}-2.cdiff "
          f"{(work / 'next' / f'{NAME}-2.cdiff').stat().st_size >> 10} KiB", flush=True)
    results = {"lmsav": bench_lmsav(work, mirror)}
    if not args.no_clamd and os.path.exists(CLAMD):
        results["clamd"] = bench_clamd(work, versions)
    for name, figures in results.items():
        print(line(name, figures), flush=True)
    if not args.workdir:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
