"""How fast the web console's list pages answer with big stores: 100,000 quarantine entries and
1,000,000 message records by default (the bound: 200 ms a page).

The stores are written once into a state directory (kept with --keep DIR and reused by later
runs), the quarantine index is brought up to date as the running console keeps it, and the
console is served by cheroot in a child process exactly as `lmsav web` serves it. Each page is
asked for once to warm up, then --requests times over HTTP by a logged-in client; the next page
of each list (its "Older" link) is timed the same way. Prints p50, p95 and the slowest, and
exits 1 when a page's p95 is over the bound.

    python bench/web.py [--quarantine 100000] [--messages 1000000] [--keep /var/tmp/lmsav-web]
"""

from __future__ import annotations

import argparse
import html
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.web_fixture import populate
from bench.web_fixture_messages import populate_messages
from lmsav.quarantine.index import StoresIndex
from lmsav.stats.store import sqlite_path
from lmsav.web.accounts import Accounts

BOUND_MS = 200.0
USER, PASSWORD = "bench", "bench-password-1"

SERVE = """
import sys
from lmsav import config
from lmsav.web.app import create_app
from lmsav.web.pages.stores import start_indexing
from lmsav.web.server import make_server
settings = config.load_settings(sys.argv[1])
app = create_app(settings, sys.argv[1])
with app.app_context():
    start_indexing()  # as `lmsav web` does
server = make_server(app, "127.0.0.1", int(sys.argv[2]))
server.safe_start()
"""

PAGES = [
    ("dashboard", "/"),
    ("mail, newest", "/mail/"),
    ("mail, status=infected", "/mail/?status=infected"),
    ("mail, sender domain", "/mail/?sender=*@mail.example.com"),
    ("mail, rare sender domain", "/mail/?sender=*@d599.example.com"),
    ("mail, recipient domain", "/mail/?rcpt=*@dept7.example.net"),
    ("mail, threat", "/mail/?threat=Win.Ransomware.Locky-2345"),
    ("mail, sender substring", "/mail/?sender=*user12*"),
    ("quarantine, newest", "/stores/"),
    ("quarantine, infected", "/stores/?kind=quarantine&status=infected"),
    ("quarantine, text", "/stores/?text=alice"),
    ("quarantine, threat", "/stores/?threat=emotet"),
    ("spool", "/spool/"),
    ("groups", "/groups/"),
    ("updates", "/updates/"),
    ("schedules", "/schedules/"),
    ("configuration", "/config/"),
    ("logs", "/logs/"),
]


def prepare(state: Path, quarantine: int, messages: int) -> Path:
    """The state directory with its stores filled (once), and its configuration file."""
    state.mkdir(parents=True, exist_ok=True)
    (state / "run").mkdir(exist_ok=True)
    config = state / "lmsav.toml"
    config.write_text(f'[paths]\nstate_dir = "{state}"\nrun_dir = "{state / "run"}"\n')
    marker = state / f".bench-{quarantine}-{messages}"
    if not marker.exists():
        started = time.perf_counter()
        populate(state, quarantine=quarantine)
        print(f"quarantine: {quarantine} entries written in "
              f"{time.perf_counter() - started:.1f} s")
        started = time.perf_counter()
        sqlite_path(state).parent.mkdir(parents=True, exist_ok=True)
        populate_messages(sqlite_path(state), messages)
        print(f"statistics: {messages} message records written in "
              f"{time.perf_counter() - started:.1f} s")
        marker.touch()
    started = time.perf_counter()
    report = StoresIndex(state / "web" / "stores.sqlite", state).sync()
    print(f"quarantine index brought up to date in {time.perf_counter() - started:.2f} s "
          f"({report.added} added)")
    accounts = Accounts(state / "web")
    if accounts.get(USER) is None:
        accounts.add(USER, PASSWORD, "admin")
    return config


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serve(config: Path, port: int) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", SERVE, str(config), str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            sys.exit(f"the console exited: {proc.stderr.read().decode(errors='replace')}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return proc
        except OSError:
            time.sleep(0.1)
    proc.kill()
    sys.exit("the console did not start")


def keep_session(response: httpx.Response) -> None:
    """The session cookie is Secure: browsers send it back to http://127.0.0.1 (a secure
    context), httpx's cookie jar does not, so it is carried by hand."""
    match = re.search(r"lmsav_session=([^;]*)", response.headers.get("set-cookie", ""))
    if match:
        SESSION["cookie"] = f"lmsav_session={match.group(1)}"


def with_session(request: httpx.Request) -> None:
    if "cookie" in SESSION:
        request.headers["Cookie"] = SESSION["cookie"]


SESSION: dict[str, str] = {}


def log_in(client: httpx.Client) -> None:
    page = client.get("/login").text
    token = re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)
    done = client.post("/login", data={"csrf_token": token, "username": USER,
                                       "password": PASSWORD})
    if done.status_code != 302:
        sys.exit(f"cannot log in: HTTP {done.status_code}")


def timed(client: httpx.Client, url: str, requests: int) -> tuple[list[float], str]:
    first = client.get(url)  # warm-up: caches, a first sync
    if first.status_code != 200:
        sys.exit(f"{url}: HTTP {first.status_code}")
    times = []
    for _ in range(requests):
        started = time.perf_counter()
        response = client.get(url)
        times.append((time.perf_counter() - started) * 1000)
        if response.status_code != 200:
            sys.exit(f"{url}: HTTP {response.status_code}")
    return times, first.text


def older_link(page: str) -> str | None:
    match = re.search(r'<a href="([^"]+)" id="older"', page) or \
        re.search(r'id="older"[^>]*href="([^"]+)"', page)
    return html.unescape(match.group(1)) if match else None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quarantine", type=int, default=100_000)
    parser.add_argument("--messages", type=int, default=1_000_000)
    parser.add_argument("--requests", type=int, default=15)
    parser.add_argument("--keep", type=Path, metavar="DIR",
                        help="Keep the filled state directory here and reuse it next time.")
    args = parser.parse_args()
    state = args.keep or Path(tempfile.mkdtemp(prefix="lmsav-bench-web-"))
    try:
        config = prepare(state.resolve(), args.quarantine, args.messages)
        port = free_port()
        server = serve(config, port)
        try:
            return measure(port, args)
        finally:
            server.terminate()
            server.wait(timeout=15)
    finally:
        if args.keep is None:
            shutil.rmtree(state, ignore_errors=True)


def measure(port: int, args) -> int:
    over = []
    print(f"\n{args.quarantine} quarantine entries, {args.messages} message records, "
          f"{args.requests} requests a page (bound {BOUND_MS:.0f} ms)")
    print(f"{'page':<36} {'p50 ms':>8} {'p95 ms':>8} {'max ms':>8}")
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60,
                      event_hooks={"request": [with_session],
                                   "response": [keep_session]}) as client:
        log_in(client)
        for name, url in PAGES:
            times, page = timed(client, url, args.requests)
            older = older_link(page)
            results = [(name, times)]
            if older:
                results.append((f"{name}, next page", timed(client, older, args.requests)[0]))
            for label, values in results:
                values.sort()
                p95 = values[min(len(values) - 1, round(0.95 * (len(values) - 1)))]
                mark = "" if p95 <= BOUND_MS else "  OVER"
                print(f"{label:<36} {statistics.median(values):8.1f} {p95:8.1f} "
                      f"{values[-1]:8.1f}{mark}")
                if mark:
                    over.append(label)
    print("\nevery page within the bound" if not over
          else f"\nover the bound: {', '.join(over)}")
    return 1 if over else 0


if __name__ == "__main__":
    sys.exit(main())
