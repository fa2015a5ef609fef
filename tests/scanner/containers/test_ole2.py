"""OLE2 compound files are exploded into their streams, packaged files and VBA macro source."""

from __future__ import annotations

import shutil
import struct
import subprocess
import uuid
from pathlib import Path

import olefile
import pytest

from lmsav.scanner.containers import Corrupted
from lmsav.scanner.containers.ole2 import Ole2Handler, decompress_vba
from lmsav.scanner.filetype import sniff
from lmsav.scanner.limits import Context, Limits
from lmsav.scanner.objects import ScanObject, Status
from tests.conftest import BODY_SAMPLE, EICAR, md5_line, write_db
from tests.scanner.containers.helpers import clamscan_threats, explode_until, explode_with

# -- a minimal compound file writer (olefile only reads) -------------------------------------------
#
# CFB version 3 (MS-CFB): 512-byte sectors, streams under 4096 bytes in the mini stream. Layout:
# header, FAT, directory, mini FAT, mini stream, then the large streams in the order given, so a
# file cut near its end damages only the last large stream.

SECTOR, MINI, CUTOFF = 512, 64, 4096
FREE, END, FATSECT, NOSTREAM = 0xFFFFFFFF, 0xFFFFFFFE, 0xFFFFFFFD, 0xFFFFFFFF
MSI_CLSID = "000C1084-0000-0000-C000-000000000046"


def _pad(data: bytes, unit: int) -> bytes:
    return data + b"\0" * (-len(data) % unit)


def _cfb_order(name: str):
    return (len(name), name.upper())


def build_cfb(streams: dict[str, bytes], root_clsid: str | None = None) -> bytes:
    """A compound file holding ``streams`` ({"Storage/Sub/Stream": data}); storages implied."""
    entries = [{"name": "Root Entry", "type": 5, "kids": {}, "data": b""}]
    for path, data in streams.items():
        node = entries[0]
        parts = path.split("/")
        for i, part in enumerate(parts):
            last = i == len(parts) - 1
            if part not in node["kids"]:
                entries.append({"name": part, "type": 2 if last else 1, "kids": {}, "data": data})
                node["kids"][part] = len(entries) - 1
            node = entries[node["kids"][part]]

    mini = bytearray()
    minifat: list[int] = []
    large = [e for e in entries[1:] if e["type"] == 2 and len(e["data"]) >= CUTOFF]
    for e in entries[1:]:
        if e["type"] == 2 and 0 < len(e["data"]) < CUTOFF:
            first = len(minifat)
            n = -(-len(e["data"]) // MINI)
            minifat += list(range(first + 1, first + n)) + [END]
            mini += _pad(e["data"], MINI)
            e["start"] = first
    entries[0]["data"] = bytes(mini)

    def sectors(nbytes: int) -> int:
        return -(-nbytes // SECTOR)

    n_dir = sectors(len(entries) * 128)
    n_minifat = sectors(len(minifat) * 4)
    n_mini = sectors(len(mini))
    n_large = [sectors(len(e["data"])) for e in large]
    body = n_dir + n_minifat + n_mini + sum(n_large)
    n_fat = 1
    while n_fat * (SECTOR // 4) < n_fat + body:
        n_fat += 1
    assert n_fat <= 109, "no DIFAT in this writer"

    fat: list[int] = [FATSECT] * n_fat
    def chain(n: int) -> int:
        if n == 0:
            return END
        first = len(fat)
        fat.extend(list(range(first + 1, first + n)) + [END])
        return first

    dir_start = chain(n_dir)
    minifat_start = chain(n_minifat)
    entries[0]["start"] = chain(n_mini)
    for e, n in zip(large, n_large):
        e["start"] = chain(n)
    fat += [FREE] * (-len(fat) % (SECTOR // 4))

    def tree(ids: list[int]) -> int:
        """A balanced binary search tree over sibling ids (all black), as MS-CFB orders them."""
        if not ids:
            return NOSTREAM
        mid = len(ids) // 2
        entries[ids[mid]]["left"] = tree(ids[:mid])
        entries[ids[mid]]["right"] = tree(ids[mid + 1:])
        return ids[mid]

    for e in entries:
        kids = sorted(e["kids"].values(), key=lambda i: _cfb_order(entries[i]["name"]))
        e["child"] = tree(kids)
    directory = bytearray()
    for i, e in enumerate(entries):
        name = e["name"].encode("utf-16-le") + b"\0\0"
        clsid = uuid.UUID(root_clsid).bytes_le if (i == 0 and root_clsid) else b"\0" * 16
        size = len(e["data"]) if e["type"] in (2, 5) else 0
        start = e.get("start", END) if size else (e.get("start", END) if i == 0 else END)
        directory += struct.pack(
            "<64sHBBIII16sIQQIQ", name, len(name), e["type"], 1, e.get("left", NOSTREAM),
            e.get("right", NOSTREAM), e.get("child", NOSTREAM), clsid, 0, 0, 0, start, size,
        )
    while len(directory) % SECTOR:
        directory += struct.pack("<64sHBBIII16sIQQIQ", b"", 0, 0, 0, NOSTREAM, NOSTREAM,
                                 NOSTREAM, b"\0" * 16, 0, 0, 0, 0, 0)

    difat = list(range(n_fat)) + [FREE] * (109 - n_fat)
    header = struct.pack(
        "<8s16sHHHHH6sIIIIIIIII109I", b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1", b"\0" * 16, 0x3E, 3,
        0xFFFE, 9, 6, b"\0" * 6, 0, n_fat, dir_start, 0, CUTOFF,
        minifat_start if n_minifat else END, n_minifat, END, 0, *difat,
    )
    out = bytearray(_pad(header, SECTOR))
    out += struct.pack(f"<{len(fat)}I", *fat)
    out += directory
    out += _pad(struct.pack(f"<{len(minifat)}I", *minifat), SECTOR) if minifat else b""
    out += _pad(bytes(mini), SECTOR)
    for e in large:
        out += _pad(e["data"], SECTOR)
    return bytes(out)


# -- OLE1 packages and VBA projects ----------------------------------------------------------------


def package_native(filename: str, payload: bytes, label: str | None = None) -> bytes:
    """The native data of an OLE1 "Package" object holding ``payload`` as ``filename``."""
    src = f"C:\\Users\\x\\Desktop\\{filename}".encode() + b"\0"
    tmp = f"C:\\Users\\x\\AppData\\Local\\Temp\\{filename}".encode() + b"\0"
    return (
        struct.pack("<H", 2) + (label or filename).encode() + b"\0" + src
        + struct.pack("<HHI", 0, 3, len(tmp)) + tmp + struct.pack("<I", len(payload)) + payload
    )


def ole10native(filename: str, payload: bytes) -> bytes:
    native = package_native(filename, payload)
    return struct.pack("<I", len(native)) + native


def compress_vba(data: bytes) -> bytes:
    """MS-OVBA 2.4.1.3 compression with copy tokens (a greedy longest-match compressor)."""
    out = bytearray(b"\x01")
    for start in range(0, len(data), 4096):
        chunk = data[start:start + 4096]
        body = bytearray()
        pos = 0
        while pos < len(chunk):
            flag_at = len(body)
            body.append(0)
            for bit in range(8):
                if pos >= len(chunk):
                    break
                bits = max((pos - 1).bit_length(), 4)
                max_len = (0xFFFF >> bits) + 3
                best_len, best_off = 0, 0
                for cand in range(max(0, pos - (1 << bits)), pos):
                    n = 0
                    while (n < max_len and pos + n < len(chunk)
                           and chunk[cand + n] == chunk[pos + n]):
                        n += 1
                    if n > best_len:
                        best_len, best_off = n, pos - cand
                if best_len >= 3:
                    token = ((best_off - 1) << (16 - bits)) | (best_len - 3)
                    body += struct.pack("<H", token)
                    body[flag_at] |= 1 << bit
                    pos += best_len
                else:
                    body.append(chunk[pos])
                    pos += 1
        out += struct.pack("<H", 0xB000 | (len(body) + 2 - 3)) + body
    return bytes(out)


def _record(rid: int, value: bytes) -> bytes:
    return struct.pack("<HI", rid, len(value)) + value


def vba_dir(modules: list[tuple[str, int]]) -> bytes:
    """A decompressed MS-OVBA "dir" stream for procedural modules [(name, source offset)]."""
    out = (
        _record(0x01, struct.pack("<I", 1)) + _record(0x02, struct.pack("<I", 0x409))
        + _record(0x14, struct.pack("<I", 0x409)) + _record(0x03, struct.pack("<H", 1252))
        + _record(0x04, b"VBAProject") + _record(0x05, b"") + _record(0x40, b"")
        + _record(0x06, b"") + _record(0x3D, b"") + _record(0x07, struct.pack("<I", 0))
        + _record(0x08, struct.pack("<I", 0))
        + struct.pack("<HIIH", 0x09, 4, 0x5A, 0x12)  # PROJECTVERSION: 6 bytes, size says 4
        + _record(0x0C, b"") + _record(0x3C, b"")
        + _record(0x0F, struct.pack("<H", len(modules))) + _record(0x13, struct.pack("<H", 0xFFFF))
    )
    for name, offset in modules:
        out += (
            _record(0x19, name.encode()) + _record(0x47, name.encode("utf-16-le"))
            + _record(0x1A, name.encode()) + _record(0x32, name.encode("utf-16-le"))
            + _record(0x1C, b"") + _record(0x48, b"") + _record(0x31, struct.pack("<I", offset))
            + _record(0x1E, struct.pack("<I", 0)) + _record(0x2C, struct.pack("<H", 0xFFFF))
            + _record(0x21, b"") + _record(0x2B, b"")
        )
    return out + _record(0x10, b"")


def vba_storage(prefix: str, modules: dict[str, bytes], pcode: bytes = b"\xab" * 40) -> dict:
    """The streams of a VBA project under ``prefix`` ("Macros" in Word, "" in vbaProject.bin)."""
    at = f"{prefix}/" if prefix else ""
    streams = {
        f"{at}PROJECT": b'ID="{00000000-0000-0000-0000-000000000000}"\r\n'
        + b"".join(b"Module=" + n.encode() + b"\r\n" for n in modules) + b'Name="VBAProject"\r\n',
        f"{at}VBA/_VBA_PROJECT": b"\xcc\x61\xff\xff\x00\x00\x00",
        f"{at}VBA/dir": compress_vba(vba_dir([(n, len(pcode)) for n in modules])),
    }
    for name, source in modules.items():
        streams[f"{at}VBA/{name}"] = pcode + compress_vba(source)
    return streams


def macro_source(payload: bytes) -> bytes:
    return (
        b'Attribute VB_Name = "Module1"\r\nSub AutoOpen()\r\n'
        + b'    Dim s As String\r\n' * 20
        + b'    s = "' + payload + b'"\r\n    Shell s, vbHide\r\nEnd Sub\r\n'
    )


def word_fib(encrypted: bool = False) -> bytes:
    flags = 0x0200 | (0x0100 if encrypted else 0)
    return struct.pack("<HHHHHH", 0xA5EC, 0xC1, 0, 0x409, 0, flags) + b"\0" * 1524


# -- helpers ---------------------------------------------------------------------------------------


def explode(data: bytes, name: str = "x.doc", limits: Limits = Limits()) -> list:
    return explode_with(Ole2Handler(), ScanObject(name, data=data), limits)


def members(data: bytes) -> dict[str, bytes]:
    return {c.name: c.data for c in explode(data)}


# -- the writer itself is read back by olefile -----------------------------------------------------


def test_writer_round_trips_through_olefile():
    import io

    import olefile

    streams = {"a": b"small", "S/b": bytes(range(256)) * 20, "S/T/c": b"x" * 5000, "d": b""}
    data = build_cfb(streams)
    assert sniff(data) == "ole2"
    ole = olefile.OleFileIO(io.BytesIO(data))
    got = {"/".join(p): ole.openstream(p).read() for p in ole.listdir()}
    assert got == streams and not ole.parsing_issues


# -- streams and names -----------------------------------------------------------------------------


def test_every_stream_is_a_member_named_by_its_storage_path():
    streams = {
        "WordDocument": word_fib(),
        "1Table": b"table" * 10,
        "\x05SummaryInformation": b"summary",
        "ObjectPool/_1234/\x01CompObj": b"compobj",
        "Data": bytes(range(256)) * 20,  # large: regular sectors, not the mini stream
    }
    got = members(build_cfb(streams))
    assert got == {
        "WordDocument": streams["WordDocument"],
        "1Table": b"table" * 10,
        "[5]SummaryInformation": b"summary",
        "ObjectPool/_1234/[1]CompObj": b"compobj",
        "Data": streams["Data"],
    }


def test_file_on_disk_is_read_the_same_way(tmp_path):
    path = tmp_path / "a.xls"
    path.write_bytes(build_cfb({"Workbook": b"\x09\x08\x04\x00abcd", "x": b"y" * 5000}))
    ctx = Context(Limits())
    got = {c.name: c.data for c in Ole2Handler().explode(ScanObject.from_path(path), ctx)}
    assert got == {"Workbook": b"\x09\x08\x04\x00abcd", "x": b"y" * 5000}


def test_ole10native_package_yields_the_embedded_file_under_its_name():
    streams = {
        "WordDocument": word_fib(),
        "ObjectPool/_1/\x01Ole10Native": ole10native("clam.exe", EICAR),
        "ObjectPool/_1/\x03ObjInfo": b"\0\0\0\0\0\0",
    }
    got = members(build_cfb(streams))
    assert got["clam.exe"] == EICAR
    assert "ObjectPool/_1/[1]Ole10Native" not in got  # replaced by the file it carries
    assert got["ObjectPool/_1/[3]ObjInfo"] == b"\0" * 6


def test_ole10native_that_is_not_a_package_stays_a_stream():
    got = members(build_cfb({"\x01Ole10Native": b"\x10\0\0\0" + b"not a package..."}))
    assert got == {"[1]Ole10Native": b"\x10\0\0\0not a package..."}


def test_msi_stream_names_are_decoded(tmp_path):
    if shutil.which("msibuild") is None:
        pytest.skip("msitools (msibuild) not installed")
    payload = tmp_path / "payload.bin"
    payload.write_bytes(EICAR)
    msi = tmp_path / "x.msi"
    subprocess.run(["msibuild", str(msi), "-a", "Binary.payload", str(payload)], check=True)
    got = members(msi.read_bytes())
    assert got["Binary.payload"] == EICAR
    # Table streams keep their "!" mark; nothing is left in the packed CJK form.
    assert any(n.startswith("!_") for n in got)
    assert all(not any(0x3800 <= ord(c) < 0x4840 for c in n) for n in got)


def msi_packed(name: str) -> str:
    """MSI's stream name packing: two characters of its 64-letter alphabet per code point."""
    alphabet = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz._"
    idx = [alphabet.index(c) for c in name]
    out = [chr(0x3800 + a + (b << 6)) for a, b in zip(idx[::2], idx[1::2])]
    return "".join(out) + (chr(0x4800 + idx[-1]) if len(idx) % 2 else "")


def test_msi_names_from_the_writer_with_the_msi_clsid():
    streams = {msi_packed("Binary.odd"): b"data", "\u4840" + msi_packed("_Tables"): b"t"}
    got = members(build_cfb(streams, root_clsid=MSI_CLSID))
    assert got == {"Binary.odd": b"data", "!_Tables": b"t"}


def test_cjk_names_outside_msi_are_kept():
    name = msi_packed("Binary.odd")
    assert members(build_cfb({name: b"data"})) == {name: b"data"}


# -- VBA -------------------------------------------------------------------------------------------


def test_vba_decompression_reads_copy_tokens():
    text = b"Attribute VB_Name = \"Module1\"\r\n" + b"abcabcabcabc " * 700
    packed = compress_vba(text)
    assert len(packed) < len(text) // 4  # copy tokens were used, across several chunks
    assert b"".join(decompress_vba(packed)) == text


def test_vba_module_source_is_yielded_decompressed():
    source = macro_source(BODY_SAMPLE)
    streams = {"WordDocument": word_fib(), **vba_storage("Macros", {"Module1": source})}
    got = members(build_cfb(streams))
    assert got["Macros/VBA/Module1.vba"] == source
    assert got["Macros/VBA/Module1"].startswith(b"\xab" * 40)  # the raw stream, too


def test_excel_vba_project_with_two_modules():
    sources = {"Module1": macro_source(b"one"), "ThisWorkbook": b'Attribute VB_Name = "TW"\r\n'}
    got = members(build_cfb(vba_storage("_VBA_PROJECT_CUR", sources)))
    assert got["_VBA_PROJECT_CUR/VBA/Module1.vba"] == sources["Module1"]
    assert got["_VBA_PROJECT_CUR/VBA/ThisWorkbook.vba"] == sources["ThisWorkbook"]


def test_office_open_xml_vba_project_bin_has_its_project_at_the_root():
    # word/vbaProject.bin inside a .docm: the zip handler yields it, it sniffs as ole2.
    source = macro_source(b"docm")
    got = members(build_cfb(vba_storage("", {"Module1": source})
                            | {"PROJECTwm": b"Module1\0M\0o\0\0\0\0"}))
    assert got["VBA/Module1.vba"] == source


def test_damaged_vba_module_is_corrupted_after_the_streams():
    streams = vba_storage("Macros", {"Module1": macro_source(b"x")})
    streams["Macros/VBA/Module1"] = b"\xab" * 40 + b"\x07garbage"
    got = []
    with pytest.raises(Corrupted, match="no compressed source"):
        for child in Ole2Handler().explode(ScanObject("m.doc", data=build_cfb(streams)),
                                           Context(Limits())):
            got.append(child.name)
    assert "Macros/VBA/Module1" in got and "Macros/VBA/dir" in got


# -- encryption ------------------------------------------------------------------------------------


def test_office_2007_encrypted_package_is_protected_rest_still_yielded():
    streams = {
        "EncryptionInfo": b"\x04\x00\x04\x00\x40\x00\x00\x00<encryption/>",
        "EncryptedPackage": b"\x00" * 8 + bytes(range(256)) * 30,
        "\x06DataSpaces/Version": b"version",
    }
    got = {c.name: c for c in explode(build_cfb(streams), "x.docx")}
    assert got["EncryptedPackage"].status == Status.PROTECTED
    assert got["EncryptedPackage"].reason == "encrypted" and got["EncryptedPackage"].data is None
    assert got["EncryptionInfo"].data == streams["EncryptionInfo"]
    assert got["[6]DataSpaces/Version"].data == b"version"


def test_word_fib_encrypted_flag_is_protected():
    got = {c.name: c for c in explode(build_cfb({"WordDocument": word_fib(True), "1Table": b"t"}))}
    assert got["WordDocument"].status == Status.PROTECTED
    assert got["1Table"].data == b"t"


def test_excel_filepass_is_protected():
    bof = struct.pack("<HH", 0x0809, 16) + b"\0" * 16
    filepass = struct.pack("<HH", 0x002F, 6) + b"\x01\x00\x01\x00\x01\x00"
    got = {c.name: c for c in explode(build_cfb({"Workbook": bof + filepass + b"\0" * 50}))}
    assert got["Workbook"].status == Status.PROTECTED


def test_powerpoint_with_encrypted_summary_is_protected():
    streams = {"PowerPoint Document": b"\x0f\x00\xe8\x03" + b"\0" * 40,
               "EncryptedSummary": b"\x01" * 30, "Current User": b"user"}
    got = {c.name: c for c in explode(build_cfb(streams), "x.ppt")}
    assert got["PowerPoint Document"].status == Status.PROTECTED
    assert got["Current User"].data == b"user"


def test_excel_without_filepass_is_a_plain_stream():
    bof = struct.pack("<HH", 0x0809, 16) + b"\0" * 16
    eof = struct.pack("<HH", 0x000A, 0)
    got = {c.name: c for c in explode(build_cfb({"Workbook": bof + eof}))}
    assert got["Workbook"].status is None and got["Workbook"].data == bof + eof


# -- damage ----------------------------------------------------------------------------------------


def test_truncated_file_yields_readable_streams_then_corrupted():
    streams = {"first": b"A" * 5000, "small": b"mini stream data", "last": b"B" * 9000}
    data = build_cfb(streams)
    cut = data[: len(data) - 4000]  # inside "last", the final large stream
    got = {}
    with pytest.raises(Corrupted, match="last"):
        for child in Ole2Handler().explode(ScanObject("t.doc", data=cut), Context(Limits())):
            got[child.name] = child.data
    assert got["first"] == b"A" * 5000 and got["small"] == b"mini stream data"
    assert b"B" * 9000 != got.get("last", b"") and (b"B" * 9000).startswith(got.get("last", b""))


@pytest.mark.parametrize("cut", [8, 100, 511, 600])
def test_cut_before_the_directory_is_corrupted(cut):
    data = build_cfb({"a": b"x" * 100})
    with pytest.raises(Corrupted):
        explode(data[:cut])


def test_fat_loop_with_a_huge_declared_size_is_corrupted_not_inflated():
    data = bytearray(build_cfb({"big": b"L" * 4096, "other": b"o" * 5000}))
    # Sector 0 is the FAT, 1 the directory, 2-9 "big", 10-19 "other". Loop "big" back onto
    # itself and declare it 1 MiB: followed blindly, the loop would repeat sectors up to that.
    struct.pack_into("<I", data, 512 + 9 * 4, 2)
    big = "big".encode("utf-16-le")
    entry = 1024 + 128 * next(i for i in range(4) if data[1024 + 128 * i:][:6] == big)
    struct.pack_into("<I", data, entry + 120, 1 << 20)
    got = []
    with pytest.raises(Corrupted, match="big"):
        for child in Ole2Handler().explode(ScanObject("l.doc", data=bytes(data)),
                                           Context(Limits())):
            got.append(child)
    assert [(c.name, c.data) for c in got] == [("other", b"o" * 5000)]


def test_wrong_mini_sector_shift_still_gives_every_stream(engine):
    # Found by fuzzing: one byte (header byte 32, the mini sector shift, 0x06 -> 0x84) made
    # olefile raise OverflowError on the first small stream, the document became ERROR and
    # no stream after it was extracted.
    data = bytearray(build_cfb({"WordDocument": word_fib(), "pkg": EICAR, "big": b"B" * 9000}))
    assert data[32] == 0x06
    data[32] = 0x84
    got, message = explode_until(Corrupted, Ole2Handler(), ScanObject("f.doc", data=bytes(data)))
    assert {c.name: c.data for c in got} == {
        "WordDocument": word_fib(), "pkg": EICAR, "big": b"B" * 9000}
    assert "mini sector shift 132" in message
    verdict = engine.scan_bytes(bytes(data), "f.doc")
    assert [(p, t.name) for p, t in verdict.threats] == [("f.doc//pkg", "Eicar-Test-Signature")]
    assert verdict.root.status == Status.CORRUPTED


@pytest.mark.integration
def test_wrong_mini_sector_shift_lmsav_finds_what_clamscan_finds(engine, tmp_path):
    if shutil.which("clamscan") is None:
        pytest.skip("clamscan not installed")
    from lmsav import paths

    data = bytearray(build_cfb({"WordDocument": word_fib(), "pkg": EICAR, "big": b"B" * 9000}))
    data[32] = 0x84
    path = tmp_path / "f.doc"
    path.write_bytes(data)
    clam = clamscan_threats(Path(paths.bundled_database_dir()), path)
    ours = {t.name for _, t in engine.scan_path(path, "f.doc").threats}
    assert clam <= ours and ours == {"Eicar-Test-Signature"}


def test_a_stream_olefile_fails_on_does_not_stop_the_others(monkeypatch):
    # Whatever olefile raises on one stream (here the OverflowError fuzzing found), the
    # streams after it are still extracted and the document is reported CORRUPTED.
    real = olefile.OleFileIO.openstream

    def failing(self, path):
        if path == ["first"]:
            raise OverflowError("cannot fit 'int' into an index-sized integer")
        return real(self, path)

    monkeypatch.setattr(olefile.OleFileIO, "openstream", failing)
    data = build_cfb({"first": b"A" * 5000, "second": EICAR, "third": b"C" * 100})
    got, message = explode_until(Corrupted, Ole2Handler(), ScanObject("f.doc", data=data))
    assert {c.name: c.data for c in got} == {"second": EICAR, "third": b"C" * 100}
    assert "first: OverflowError" in message


@pytest.mark.parametrize("seed", range(40))
def test_garbage_never_raises_anything_but_corrupted(seed):
    import random

    rnd = random.Random(seed)
    data = bytearray(build_cfb({
        "WordDocument": word_fib(), "ObjectPool/_1/\x01Ole10Native": ole10native("a.exe", EICAR),
        **vba_storage("Macros", {"Module1": macro_source(b"m")}), "big": b"z" * 6000,
    }))
    for _ in range(rnd.randint(1, 40)):
        data[rnd.randrange(len(data))] = rnd.randrange(256)
    try:
        explode(bytes(data))
    except Corrupted:
        pass


# -- through the engine ----------------------------------------------------------------------------


def test_engine_finds_eicar_in_an_ole10native_package(engine):
    doc = build_cfb({
        "WordDocument": word_fib(), "ObjectPool/_1/\x01Ole10Native": ole10native("clam.exe", EICAR)
    })
    verdict = engine.scan_bytes(doc, "outer.doc")
    assert verdict.status == Status.INFECTED
    assert [(p, t.name) for p, t in verdict.threats] == [
        ("outer.doc//clam.exe", "Eicar-Test-Signature")
    ]


def test_engine_finds_a_signature_in_macro_source(engine):
    doc = build_cfb({"WordDocument": word_fib(),
                     **vba_storage("Macros", {"Module1": macro_source(BODY_SAMPLE)})})
    verdict = engine.scan_bytes(doc, "invoice.doc")
    assert ("invoice.doc//Macros/VBA/Module1.vba", "Lmsav.Test.Body") in [
        (p, t.name) for p, t in verdict.threats
    ]


def test_engine_marks_encrypted_document_protected_and_scans_the_rest(engine):
    doc = build_cfb({
        "EncryptionInfo": b"\x04\x00\x04\x00", "EncryptedPackage": b"\x99" * 600, "e.com": EICAR,
    })
    verdict = engine.scan_bytes(doc, "secret.docx")
    assert verdict.status == Status.INFECTED  # the clear stream is still scanned
    protected = [r for r in verdict.findings() if r.status == Status.PROTECTED]
    assert [(r.path, r.reason) for r in protected] == [
        ("secret.docx//EncryptedPackage", "encrypted")
    ]


def test_engine_marks_encrypted_word_protected(engine):
    verdict = engine.scan_bytes(build_cfb({"WordDocument": word_fib(True)}), "w.doc")
    assert verdict.status == Status.PROTECTED
    assert [r.path for r in verdict.findings()] == ["w.doc//WordDocument"]


def test_engine_reports_truncated_file_corrupted_and_still_detects(engine):
    data = build_cfb({"pkg": EICAR + b"\0" * 5000, "tail": b"T" * 9000})
    verdict = engine.scan_bytes(data[: len(data) - 3000], "cut.doc")
    assert verdict.status == Status.INFECTED
    assert verdict.root.status == Status.CORRUPTED and verdict.root.reason.startswith("corrupted")
    assert [p for p, _ in verdict.threats] == ["cut.doc//pkg"]


def test_engine_on_ole2_magic_and_garbage_is_corrupted_not_an_error(engine):
    verdict = engine.scan_bytes(b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + b"\xff" * 3000, "bad.doc")
    assert verdict.status == Status.CORRUPTED


# -- the same samples through the real clamscan ----------------------------------------------------


@pytest.mark.integration
def test_clamscan_agrees_on_the_same_samples(tmp_path):
    if shutil.which("clamscan") is None:
        pytest.skip("clamscan not installed")
    from lmsav.scanner.engine import Engine
    from lmsav.scanner.signatures.database import Database

    inner = b"MZ lmsav ole2 differential payload \x01\x02\x03"
    db = write_db(tmp_path / "db", {
        "t.hdb": md5_line(inner, "Lmsav.Test.Ole2Package"),
        "t.ndb": "Lmsav.Test.Ole2Macro:0:*:" + b"ole2-macro-marker-4471".hex() + "\n",
    })
    samples = {
        "package.doc": (build_cfb({"WordDocument": word_fib(),
                                   "ObjectPool/_1/\x01Ole10Native": ole10native("a.exe", inner)}),
                        {"Lmsav.Test.Ole2Package"}),
        "macro.doc": (build_cfb({"WordDocument": word_fib(), **vba_storage(
            "Macros", {"Module1": macro_source(b"ole2-macro-marker-4471")})}),
                      {"Lmsav.Test.Ole2Macro"}),
        "clean.doc": (build_cfb({"WordDocument": word_fib(), "1Table": b"nothing"}), set()),
    }
    engine = Engine(Database.load(db, cache_path=tmp_path / "c.lmsavc"))
    for name, (data, expected) in samples.items():
        path = tmp_path / name
        path.write_bytes(data)
        ours = {t.name for _, t in engine.scan_path(path, name).threats}
        assert ours == expected, name
        assert clamscan_threats(db, path) == expected, name
