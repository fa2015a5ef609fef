"""The engine: detections, in-container paths, limits, handler failures, allow/ignore lists."""

from __future__ import annotations

import gzip
import io
import tarfile

import pytest

from lmsav.scanner import containers
from lmsav.scanner.engine import Engine
from lmsav.scanner.limits import Limits
from lmsav.scanner.objects import ScanObject, Status
from lmsav.scanner.signatures.database import Database
from tests.conftest import EICAR, HASH_SAMPLE, md5_line, write_db
from tests.scanner.containers.helpers import zip_bytes


@pytest.fixture(scope="module")
def bundled():
    from lmsav import paths

    return Database.load(paths.bundled_database_dir())


@pytest.fixture
def engine(bundled):
    return Engine(bundled)


def tar_gz_bytes(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def nested_zip(depth: int, payload: bytes) -> bytes:
    data = payload
    for level in range(depth):
        data = zip_bytes({f"level{depth - level}.zip" if level else "eicar.com": data})
    return data


def test_eicar_is_infected_with_its_name(engine):
    verdict = engine.scan_bytes(EICAR, "eicar.com")
    assert verdict.status == Status.INFECTED
    assert [t.name for _, t in verdict.threats] == ["Eicar-Test-Signature"]


def test_clean_bytes_are_clean(engine):
    verdict = engine.scan_bytes(b"hello world\n" * 100, "hello.txt")
    assert verdict.status == Status.CLEAN
    assert verdict.threats == []


def test_threat_inside_nested_containers_has_full_path(engine):
    inner = zip_bytes({"clean.txt": b"nothing", "eicar.com": EICAR})
    outer = tar_gz_bytes({"docs/invoice.zip": inner})
    verdict = engine.scan_bytes(outer, "mail.tgz")
    assert verdict.status == Status.INFECTED
    [(path, threat)] = verdict.threats
    # gzip, then the tar inside it, then the zip inside that
    assert path.startswith("mail.tgz//") and path.endswith("//docs/invoice.zip//eicar.com")
    assert path.count("//") == 3
    assert threat.name == "Eicar-Test-Signature"


def test_hash_signature_found_in_member(engine):
    verdict = engine.scan_bytes(zip_bytes({"a.txt": HASH_SAMPLE}), "a.zip")
    names = {t.name for _, t in verdict.threats}
    assert "Lmsav.Test.Hash" in names


def test_depth_limit_gives_error_with_reason(bundled):
    eng = Engine(bundled, Limits(max_scan_depth=3))
    verdict = eng.scan_bytes(nested_zip(6, EICAR), "deep.zip")
    assert verdict.status == Status.ERROR
    reasons = {r.reason for r in verdict.walk() if r.reason}
    assert "limit: depth 3" in reasons


def test_depth_limit_can_be_suspicious(bundled):
    eng = Engine(bundled, Limits(max_scan_depth=2, limit_status=Status.SUSPICIOUS))
    verdict = eng.scan_bytes(nested_zip(5, b"clean"), "deep.zip")
    assert verdict.status == Status.SUSPICIOUS


def test_within_depth_limit_finds_deep_threat(bundled):
    verdict = Engine(bundled, Limits(max_scan_depth=8)).scan_bytes(nested_zip(6, EICAR), "d.zip")
    assert verdict.status == Status.INFECTED
    assert verdict.threats[0][0].count("//") == 6


def test_files_per_container_limit(bundled):
    data = zip_bytes({f"f{i}.txt": b"x" for i in range(20)})
    verdict = Engine(bundled, Limits(max_files=5)).scan_bytes(data, "many.zip")
    assert verdict.status == Status.ERROR
    assert verdict.root.reason == "limit: files 5"
    assert len(verdict.root.children) == 5


def test_members_without_data_do_not_use_up_the_files_limit(bundled):
    # Devices and fifos are reported (never silently dropped) but cost no scan: ten of them in
    # front must not push the EICAR behind them past a limit of two scanned members.
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as tar:
        for i in range(10):
            info = tarfile.TarInfo(f"fifo{i}")
            info.type = tarfile.FIFOTYPE
            tar.addfile(info)
        for name, data in (("a.txt", b"clean"), ("eicar.com", EICAR)):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    verdict = Engine(bundled, Limits(max_files=2)).scan_bytes(out.getvalue(), "t.tar")
    assert verdict.status == Status.INFECTED
    assert [t.name for _, t in verdict.threats] == ["Eicar-Test-Signature"]
    assert sum(1 for c in verdict.root.children if c.reason.startswith("not scanned")) == 10


def test_file_size_limit(bundled):
    verdict = Engine(bundled, Limits(max_file_size=1000)).scan_bytes(b"a" * 5000, "big.bin")
    assert verdict.status == Status.ERROR
    assert verdict.root.reason == "limit: filesize 1000"


def test_member_over_file_size_limit_does_not_stop_siblings(bundled):
    data = zip_bytes({"big.bin": b"\0" * 50000, "eicar.com": EICAR})
    verdict = Engine(bundled, Limits(max_file_size=20000)).scan_bytes(data, "m.zip")
    assert verdict.status == Status.INFECTED
    limited = [r for r in verdict.walk() if r.reason.startswith("limit: filesize")]
    assert [r.path for r in limited] == ["m.zip//big.bin"]


def test_compression_bomb_is_cut_by_ratio(bundled):
    bomb = gzip.compress(b"\0" * (30 << 20))
    verdict = Engine(bundled, Limits(max_compression_ratio=100)).scan_bytes(bomb, "bomb.gz")
    assert verdict.status == Status.ERROR
    assert any(r.reason == "limit: compression ratio 100" for r in verdict.walk())


def test_total_scan_size_limit_stops_the_input(bundled):
    data = zip_bytes({f"f{i}.bin": bytes([i]) * 100_000 for i in range(10)})
    verdict = Engine(bundled, Limits(max_scan_size=300_000)).scan_bytes(data, "s.zip")
    assert verdict.status == Status.ERROR
    assert any(r.reason.startswith("limit: scansize") for r in verdict.walk())
    assert len(verdict.root.children) < 10


def test_time_limit_stops_the_input(bundled, monkeypatch):
    data = zip_bytes({f"f{i}.txt": b"x" for i in range(50)})
    import lmsav.scanner.limits as limits_mod

    clock = iter(range(0, 10_000))
    monkeypatch.setattr(limits_mod.time, "monotonic", lambda: next(clock))
    verdict = Engine(bundled, Limits(max_scan_time=10)).scan_bytes(data, "slow.zip")
    assert verdict.status == Status.ERROR
    assert any(r.reason == "limit: time 10s" for r in verdict.walk())


def test_handler_crash_is_an_error_not_a_crash(bundled, monkeypatch):
    class Broken:
        types = frozenset({"zip"})

        def explode(self, obj, ctx):
            yield from ()
            raise RuntimeError("boom")

    monkeypatch.setitem(containers.HANDLERS, "zip", Broken())
    verdict = Engine(bundled).scan_bytes(zip_bytes({"a": b"b"}), "x.zip")
    assert verdict.status == Status.ERROR
    assert verdict.root.reason == "internal error: RuntimeError: boom"


def test_no_archive_option_skips_members(bundled):
    data = zip_bytes({"eicar.com": EICAR})
    assert Engine(bundled, scan_archives=False).scan_bytes(data, "a.zip").status == Status.CLEAN


def test_allow_list_and_ignore_list(tmp_path):
    sample = b"some program that is a false positive"
    db_dir = write_db(tmp_path / "db", {
        "t.hdb": md5_line(sample, "Bad.Sample") + md5_line(EICAR, "Eicar-Test-Signature"),
        "t.fp": md5_line(sample, "Bad.Sample.FP"),
        "t.ign2": "Eicar-Test-Signature\n",
    })
    eng = Engine(Database.load(db_dir))
    assert eng.scan_bytes(sample, "s").status == Status.CLEAN
    assert eng.scan_bytes(EICAR, "e").status == Status.CLEAN


def test_hashing_only_for_sizes_with_signatures(bundled, monkeypatch):
    calls = []
    original = bundled.hashes.match
    monkeypatch.setattr(bundled.hashes, "match", lambda d, s: calls.append(s) or original(d, s))
    eng = Engine(bundled)
    eng.scan_bytes(b"y" * 1234, "a")
    assert calls == []
    eng.scan_bytes(HASH_SAMPLE, "b")
    assert calls == [len(HASH_SAMPLE)]


def test_scan_path_reads_large_file_by_mmap(engine, tmp_path):
    big = tmp_path / "big.bin"
    with open(big, "wb") as fh:
        fh.write(b"\0" * (3 << 20))
        fh.write(b"LMSAV" + b"-BODY-TEST:" + b"\x01\x02" + b"-SAMPLE")
    verdict = engine.scan_path(big)
    assert [t.name for _, t in verdict.threats] == ["Lmsav.Test.Body"]


def test_scan_object_needs_one_source():
    with pytest.raises(ValueError):
        ScanObject("x")


def test_each_object_is_sniffed_once_and_handlers_read_its_type(engine, monkeypatch):
    from lmsav.scanner import filetype

    seen: list[bytes] = []
    real = filetype.locate

    def locate(data, size=None):
        seen.append(bytes(data[:4]))
        return real(data, size)

    monkeypatch.setattr(filetype, "locate", locate)
    monkeypatch.setattr("lmsav.scanner.objects.locate", locate)
    data = tar_gz_bytes({"a.txt": b"a", "b.txt": b"b"})
    verdict = engine.scan_bytes(data, "t.tar.gz")
    assert [r.type for r in verdict.walk()] == ["gzip", "tar", "text", "text"]
    assert len(seen) == 4  # gzip, tar, a.txt, b.txt: once each
