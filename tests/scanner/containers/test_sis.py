"""EPOC SIS packages yield each installed file under its install path."""

from __future__ import annotations

import random
import struct
import zlib

import pytest

from lmsav.scanner.containers import Corrupted, Unsupported
from lmsav.scanner.containers.sis import SisHandler
from lmsav.scanner.filetype import sniff
from lmsav.scanner.limits import Limits
from lmsav.scanner.objects import ScanObject, Status
from tests.conftest import EICAR
from tests.scanner.containers.helpers import (
    clamscan_found, explode_until, explode_with, names_and_data,
)

HEADER = 100  # release 6 header size; the fields used end at 84


def sis(files, release6=True, compress=True, unicode=True, languages=(1,), pre=()):
    """A SIS package laid out as documented: header, language ids, file records, strings, data.

    ``files`` holds (install path, data or [data per language], file type); ``pre`` holds raw
    records (conditions) placed before the file records.
    """
    enc = (lambda s: s.encode("utf-16-le")) if unicode else (lambda s: s.encode("cp1252"))
    langs = b"".join(struct.pack("<H", code) for code in languages)
    records_size = sum(len(r) for r in pre)
    for _dest, datas, _ftype in files:
        forks = len(datas) if isinstance(datas, list) else 1
        records_size += 4 + 4 * (6 + 2 * forks + (forks + 2 if release6 else 0))
    files_ptr = HEADER + len(langs)
    base = files_ptr + records_size
    blob = bytearray()
    records = b"".join(pre)
    for dest, datas, ftype in files:
        forks = datas if isinstance(datas, list) else [datas]
        dname, sname = enc(dest), enc("C:\\build\\" + dest.split("\\")[-1])
        dptr = base + len(blob)
        blob += dname
        sptr = base + len(blob)
        blob += sname
        lens, ptrs, olens = [], [], []
        for data in forks:
            stored = zlib.compress(data) if release6 and compress else data
            ptrs.append(base + len(blob))
            blob += stored
            lens.append(len(stored))
            olens.append(len(data))
        words = [ftype, 0, len(sname), sptr, len(dname), dptr] + lens + ptrs
        words += olens + [0, 0] if release6 else []
        records += struct.pack(f"<I{len(words)}I", int(isinstance(datas, list)), *words)
    options = (1 if unicode else 0) | (0 if compress else 8)
    count = len(files) + len(pre)
    head = struct.pack("<IIII", 0x10001234, 0x10003A12 if release6 else 0x1000006D,
                       0x10000419, 0)
    head += struct.pack("<HHHHHHHHIHHHHI", 0, len(languages), count, 0, 0, len(files), 0, 0,
                        200 if release6 else 68, options, 0, 1, 0, 0)
    head += struct.pack("<9I", HEADER, files_ptr, 0, 0, 0, 0, 0, 0, 0)
    return head.ljust(HEADER, b"\0") + langs + records + bytes(blob)


def condition() -> list[bytes]:
    """An *if* record with a 4-byte expression, then *else* and *endif* (records 3, 5, 6)."""
    return [struct.pack("<II", 3, 4) + b"expr", struct.pack("<I", 5), struct.pack("<I", 6)]


STD, NULL, COMPONENT = 0, 4, 2
APP = "!:\\system\\apps\\eicar\\"


def explode(obj: ScanObject, limits: Limits = Limits()) -> list:
    return explode_with(SisHandler(), obj, limits)


def explode_until_error(obj: ScanObject):
    return explode_until(Corrupted, SisHandler(), obj)


def test_sniffed_as_sis():
    assert sniff(sis([(APP + "eicar.com", EICAR, STD)])) == "sis"


@pytest.mark.parametrize("release6, compress, unicode", [
    (True, True, True), (True, False, True), (False, True, False),
])
def test_files_under_their_install_paths(release6, compress, unicode):
    data = sis([(APP + "eicar.com", EICAR, STD), (APP + "readme.txt", b"hello", STD)],
               release6=release6, compress=compress, unicode=unicode)
    assert names_and_data(explode(ScanObject("pkg.sis", data=data))) == [
        ("system/apps/eicar/eicar.com", EICAR), ("system/apps/eicar/readme.txt", b"hello"),
    ]


def test_language_variants_null_files_and_conditions():
    data = sis([(APP + "app.rsc", [b"english", b"french"], STD), (APP + "log.txt", b"", NULL),
                (APP + "eicar.com", EICAR, STD)], languages=(1, 2), pre=condition())
    assert names_and_data(explode(ScanObject("pkg.sis", data=data))) == [
        ("system/apps/eicar/app.rsc@lang1", b"english"),
        ("system/apps/eicar/app.rsc@lang2", b"french"),
        ("system/apps/eicar/eicar.com", EICAR),
    ]


def test_install_paths_cannot_climb():
    data = sis([("c:\\..\\..\\etc\\passwd", b"x", STD)])
    assert explode(ScanObject("p.sis", data=data))[0].name == "etc/passwd"


def test_symbian9_package_is_unsupported():
    data = struct.pack("<IIII", 0x10201A7A, 0, 0x10000419 + 1, 0) + bytes(64)
    with pytest.raises(Unsupported, match="sis9"):
        explode(ScanObject("new.sis", data=data))


def test_truncated_package_yields_what_was_complete_then_corrupted():
    data = sis([(APP + "eicar.com", EICAR, STD), (APP + "big.bin", bytes(range(256)) * 40, STD)],
               compress=False)
    got, reason = explode_until_error(ScanObject("t.sis", data=data[:-100]))
    assert names_and_data(got) == [("system/apps/eicar/eicar.com", EICAR)]
    assert reason == "system/apps/eicar/big.bin: data outside the package"


def test_damaged_compressed_file_yields_its_readable_part():
    payload = EICAR + bytes(range(256)) * 200
    data = bytearray(sis([(APP + "eicar.com", payload, STD)]))
    data[-40:] = b"\xff" * 40
    got, reason = explode_until_error(ScanObject("d.sis", data=bytes(data)))
    assert got[0].data.startswith(EICAR) and payload.startswith(got[0].data)
    assert reason.startswith("system/apps/eicar/eicar.com: ")


def test_zlib_bomb_stops_at_the_compression_ratio_limit():
    data = sis([(APP + "zeros.bin", b"\0" * (30 << 20), STD)])
    got = explode(ScanObject("b.sis", data=data), Limits(max_compression_ratio=100))
    assert [(c.status, c.reason) for c in got] == [(Status.ERROR, "limit: compression ratio 100")]


def test_garbage_never_raises_anything_but_a_container_error():
    rng = random.Random(5)
    base = sis([(APP + "eicar.com", EICAR, STD), (APP + "a.rsc", [b"1", b"2"], STD)],
               languages=(1, 2))
    for _ in range(400):
        data = bytearray(base)
        for _ in range(rng.randrange(1, 6)):
            data[rng.randrange(16, len(data))] = rng.randrange(256)
        try:
            explode(ScanObject("g.sis", data=bytes(data[: rng.randrange(8, len(data) + 1)])))
        except (Corrupted, Unsupported):
            pass


# -- through the engine -------------------------------------------------------------------------


def test_engine_names_the_route_through_a_component_package(engine):
    inner = sis([(APP + "eicar.com", EICAR, STD)])
    outer = sis([(APP + "readme.txt", b"hi", STD),
                 ("!:\\system\\install\\sub.sis", inner, COMPONENT)])
    verdict = engine.scan_bytes(outer, "pkg.sis")
    assert [(p, t.name) for p, t in verdict.threats] == [
        ("pkg.sis//system/install/sub.sis//system/apps/eicar/eicar.com", "Eicar-Test-Signature")
    ]


def test_engine_truncated_is_corrupted_with_the_readable_part_scanned(engine):
    data = sis([(APP + "eicar.com", EICAR, STD), (APP + "big.bin", bytes(4000), STD)],
               compress=False)
    verdict = engine.scan_bytes(data[:-100], "t.sis")
    assert verdict.root.status == Status.CORRUPTED
    assert verdict.status == Status.INFECTED


@pytest.mark.integration
def test_same_verdict_as_clamscan(engine, tmp_path):
    # Release 6 packages with one language: the layout ClamAV 1.4 reads. (It reads every
    # package as release 6, so an older, uncompressed one is found by lmsav only.)
    samples = {
        "compressed.sis": sis([(APP + "readme.txt", b"hi", STD), (APP + "eicar.com", EICAR, STD)]),
        "stored.sis": sis([(APP + "eicar.com", EICAR, STD)], compress=False),
        "clean.sis": sis([(APP + "readme.txt", b"hello", STD)]),
    }
    for name, data in samples.items():
        (tmp_path / name).write_bytes(data)
        ours = engine.scan_bytes(data, name).status == Status.INFECTED
        assert ours == clamscan_found(tmp_path / name)[name], name
