"""Large HTML stays within memory and time bounds: peak RSS under about four times the input
(or a fixed cap for inputs that are small but costly to normalise), and the scan's time budget
checked inside the HTML and script normalisers.

Peak RSS is measured on a real ``lmsav scan`` child process: ``os.wait4`` returns that child's
own resource usage (its ``ru_maxrss``), not the largest of every child this test process ran.
"""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest

from lmsav.scanner.engine import Engine
from lmsav.scanner.limits import Limits
from lmsav.scanner.objects import Status
from lmsav.scanner.signatures import jsnorm
from lmsav.scanner.signatures.database import Database
from tests.conftest import write_db

MiB = 1 << 20
MARKER = b"lmsav-memory-bounds-marker-3307"
# Below ClamAV's 40 MiB --max-htmlnormalize, so the whole page is normalised.
PAGE_SIZE = 40_000_000


@pytest.fixture(scope="module")
def db_dir(tmp_path_factory) -> Path:
    return write_db(tmp_path_factory.mktemp("memory-db"), {
        "t.ndb": f"Lmsav.Test.MemoryMarker:0:*:{MARKER.hex()}\n",
    })


def one_string_page(size: int) -> bytes:
    """A page whose one script is one long string literal (the reproduction of the issue)."""
    head, tail = b'<html><body><script>var s="', b'";</script></body></html>\n'
    return head + b"A" * (size - len(head) - len(tail)) + tail


def many_tokens_page(size: int) -> bytes:
    """A script of tiny statements: about 100 bytes of normaliser state per 2 input bytes."""
    head, tail = b"<html><script>", b"</script></html>\n"
    return head + b"a;" * ((size - len(head) - len(tail)) // 2) + tail


def peak_rss(*args: str) -> int:
    """Peak RSS in bytes of one ``lmsav scan`` child process."""
    proc = subprocess.Popen(["lmsav", "scan", "-j", "1", "--no-summary", *args],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _pid, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    stderr = proc.stderr.read().decode()
    proc.stderr.close()
    assert proc.returncode in (0, 1), stderr
    return usage.ru_maxrss * 1024


def extra_rss(db_dir: Path, tmp_path: Path, page: bytes, *options: str) -> int:
    """Peak RSS of scanning ``page`` beyond that of scanning a small page the same way."""
    small, big = tmp_path / "small.html", tmp_path / "big.html"
    small.write_bytes(one_string_page(200))
    big.write_bytes(page)
    peak_rss(*options, "-d", str(db_dir), str(small))  # compiles the database cache once
    baseline = peak_rss(*options, "-d", str(db_dir), str(small))
    return peak_rss(*options, "-d", str(db_dir), str(big)) - baseline


@pytest.mark.integration
def test_normalising_a_page_with_one_long_script_string_stays_within_four_times_it(
        db_dir, tmp_path):
    # --no-archive: the signature views alone (nocomment, javascript), no decoding of blobs.
    extra = extra_rss(db_dir, tmp_path, one_string_page(PAGE_SIZE), "--no-archive")
    assert extra < 4 * PAGE_SIZE, f"{extra / MiB:.0f} MiB for a {PAGE_SIZE / MiB:.0f} MiB page"


@pytest.mark.integration
def test_scanning_a_page_with_one_long_script_string_stays_within_four_times_it(
        db_dir, tmp_path):
    extra = extra_rss(db_dir, tmp_path, one_string_page(PAGE_SIZE))
    assert extra < 4 * PAGE_SIZE, f"{extra / MiB:.0f} MiB for a {PAGE_SIZE / MiB:.0f} MiB page"


@pytest.mark.integration
def test_a_script_of_many_tiny_tokens_is_held_within_a_fixed_cap(db_dir, tmp_path):
    size = 2 * MiB  # a million tokens: about 190 MiB if every one is held
    extra = extra_rss(db_dir, tmp_path, many_tokens_page(size), "--no-archive")
    assert extra < max(4 * size, 64 * MiB), f"{extra / MiB:.0f} MiB for a 2 MiB page"


@pytest.fixture(scope="module")
def database(db_dir, tmp_path_factory) -> Database:
    return Database.load(str(db_dir), cache_path=tmp_path_factory.mktemp("memory-cache") / "c")


@pytest.mark.parametrize("page", [
    pytest.param(many_tokens_page(4 * MiB), id="script-tokens"),
    pytest.param(b"<html>" + b"<b>x</b>" * (MiB // 2), id="tags"),
])
def test_the_time_budget_is_kept_inside_the_normalisers(database, page):
    engine = Engine(database, Limits(max_scan_time=0.5), scan_archives=False)
    started = time.monotonic()
    verdict = engine.scan_bytes(page, "slow.html")
    elapsed = time.monotonic() - started
    assert verdict.status == Status.ERROR
    assert verdict.root.reason == "limit: time 0.5s"
    assert elapsed < 2.5, f"{elapsed:.1f} s"  # unchecked, normalising takes 10 s or more


def test_a_threat_in_a_long_script_is_still_found(database):
    page = one_string_page(4 * MiB).replace(b"AAAA", b" " + MARKER + b" ", 1)
    verdict = Engine(database, scan_archives=False).scan_bytes(page, "page.html")
    assert [t.name for _p, t in verdict.threats] == ["Lmsav.Test.MemoryMarker"]


def test_a_script_normalised_in_parts_reads_as_one_where_nothing_spans_a_cut(monkeypatch):
    statements = b"".join(b"var v%d = %d; f(v%d, 'x');\n" % (i, i, i) for i in range(300))
    pieces = [statements[i:i + 100] for i in range(0, len(statements), 100)]
    whole = jsnorm.normalise_scripts([list(pieces), [b"g(1);"]])
    monkeypatch.setattr(jsnorm, "MAX_SCRIPT_TOKENS", 50)
    parts = jsnorm.normalise_scripts([list(pieces), [b"g(1);"]])
    assert parts == whole
    assert whole.startswith(b"<script>var n000=0;f(n000,\"x\");var n001=1;")
    assert whole.endswith(b"f(n299,\"x\");</script>\n<script>g(1);</script>")
