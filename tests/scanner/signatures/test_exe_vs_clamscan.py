"""Differential test: executable-relative body signatures, PE section and import hashes, run
through clamscan and through lmsav on the same real executables; verdicts identical file by file.

Signatures are drawn at random from the samples' own bytes: a pattern taken at some position
and given an offset (EP+n, EP-n, Sx+n, SL+n, SEx, VI, EOF-n, each maybe with a ,m shift) whose
window holds it, or a window just past it, which must not match. Section hashes use each
section's raw size and a wrong one; import hashes the right and a wrong size.
"""

from __future__ import annotations

import hashlib
import random
import shutil
import struct
import subprocess

import pytest

from lmsav.scanner import filetype
from lmsav.scanner.signatures import body, exe_headers, sections
from lmsav.scanner.signatures.subject import Subject

from .test_exe_headers import samples

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(shutil.which("clamscan") is None, reason="clamscan not installed"),
]

TARGETS = {"pe": 1, "elf": 6, "macho": 9}


def corpus() -> dict[str, bytes]:
    """The compiled and hand-made samples plus broken ones ClamAV's parsers refuse."""
    files = dict(samples())
    rnd = random.Random(11)
    tail = rnd.randbytes(3000)
    # An MZ file whose PE header is missing: typed as a PE by ClamAV, but unparsable.
    files["mz_broken"] = b"MZ" + bytes(58) + struct.pack("<I", 0x40000) + tail
    # A big-endian ELF whose program header size is wrong: the ELF parser gives up.
    elf = bytearray(files["elf32be"])
    struct.pack_into(">H", elf, 42, 33)
    files["elf_broken"] = bytes(elf)
    if "pe32" in files:
        pe = files["pe32"]
        files["pe32_truncated"] = pe[:len(pe) * 2 // 3]
        files.update(_mangled(pe))
    return files


def _mangled(data: bytes) -> dict[str, bytes]:
    """Header edits that move ClamAV's numbers: an unaligned raw size, an entry point in the
    headers, a section alignment that rounds addresses down, a section past the end."""
    import pefile

    pe = pefile.PE(data=data, fast_load=True)
    opt, sects = pe.OPTIONAL_HEADER, pe.sections

    def edit(*changes) -> bytes:
        buf = bytearray(data)
        for struct_, field, value in changes:
            struct.pack_into("<I", buf, struct_.get_field_absolute_offset(field), value)
        return bytes(buf)

    return {
        "pe32_rawsize": edit((sects[0], "SizeOfRawData", sects[0].SizeOfRawData - 0x30)),
        "pe32_header_ep": edit((opt, "AddressOfEntryPoint", 0x40)),
        "pe32_salign": edit((opt, "SectionAlignment", 0x2000)),
        "pe32_beyond": edit((sects[-1], "PointerToRawData", len(data) + 0x1000)),
    }


def _pattern(rnd: random.Random, data: bytes, pos: int) -> str | None:
    """Hex for the bytes at ``pos``, sometimes with a wildcard byte, a short range or a star."""
    length = rnd.randint(6, 14)
    chunk = data[pos:pos + length]
    if len(chunk) < length or len(set(chunk)) < 4:
        return None
    text = chunk.hex()
    style = rnd.random()
    if style < 0.2:
        k = rnd.randint(2, length - 3)
        text = text[:2 * k] + "??" + text[2 * k + 2:]
    elif style < 0.35:
        k = rnd.randint(3, length - 3)
        text = text[:2 * k] + rnd.choice(["{0-2}", "*"]) + text[2 * k:]
    return text


def _offset_for(rnd, kind: str, exe, size: int, pos: int, hit: bool) -> str | None:
    """An offset text of ``kind`` whose window holds ``pos`` (hit) or ends just before it."""
    shift = rnd.choice([0, 0, 0, 2, 17])
    # A window [start, start+shift] holding pos: start in pos-shift … pos; a miss: pos+1 … .
    start = pos - rnd.randint(0, shift) if hit else pos + rnd.randint(1, 4)
    suffix = f",{shift}" if shift else ""
    if kind == "EOF":
        return f"EOF-{size - start}{suffix}" if size >= start else None
    if kind == "EP":
        delta = start - exe.entry_point
        return f"EP+{delta}{suffix}" if delta >= 0 else f"EP-{-delta}{suffix}"
    if kind in ("S", "SL"):
        index = len(exe.sections) - 1 if kind == "SL" else rnd.randrange(len(exe.sections))
        delta = start - exe.sections[index].raw
        if delta < 0:
            return None
        return f"SL+{delta}{suffix}" if kind == "SL" else f"S{index}+{delta}{suffix}"
    return None


def _body_sigs(rnd: random.Random, files: dict[str, bytes]) -> list[str]:
    lines = []
    for fname, data in files.items():
        ftype = filetype.sniff(data, len(data))
        kind = exe_headers.exe_kind(data, ftype)
        exe = exe_headers.parse(data, ftype)
        target = TARGETS.get(kind, 0)
        if not target:
            continue
        view = exe if exe is not None else exe_headers.ExeInfo(kind, 0, [])
        kinds = ["EOF", "EP", "EP", "S", "SL"] if view.sections else ["EOF", "EP"]
        made = 0
        for _ in range(400):
            if made >= 40:
                break
            pos = rnd.randrange(len(data))
            if view.sections and rnd.random() < 0.5:  # mostly inside sections, near the EP
                sect = rnd.choice(view.sections)
                if sect.rsz and sect.raw < len(data):
                    pos = sect.raw + rnd.randrange(min(sect.rsz, len(data) - sect.raw))
            elif rnd.random() < 0.5:
                pos = max(0, min(len(data) - 1, view.entry_point + rnd.randint(-300, 300)))
            hexsig = _pattern(rnd, data, pos)
            if hexsig is None:
                continue
            hit = rnd.random() < 0.7
            kind_ = rnd.choice(kinds)
            offset = _offset_for(rnd, kind_, view, len(data), pos, hit)
            if offset is None:
                continue
            sig_target = 0 if kind_ == "EOF" and rnd.random() < 0.5 else target
            lines.append(f"B.{fname}.{made}:{sig_target}:{offset}:{hexsig}")
            made += 1
        # SEx: a pattern inside section x; one just past its end, found only with a shift.
        for index, sect in enumerate(view.sections[:12]):
            if not sect.rsz or sect.raw >= len(data):
                continue
            pos = sect.raw + rnd.randrange(min(sect.rsz, len(data) - sect.raw))
            hexsig = _pattern(rnd, data, pos)
            if hexsig:
                lines.append(f"SE.{fname}.{index}:{target}:SE{index}:{hexsig}")
            hexsig = _pattern(rnd, data, sect.raw + sect.rsz + 3)
            if hexsig:
                lines.append(f"SEend.{fname}.{index}:{target}:SE{index}:{hexsig}")
                lines.append(f"SEshift.{fname}.{index}:{target}:SE{index},8:{hexsig}")
        # VI: a version-information key, and the same key two bytes in (must miss).
        for n, pos in enumerate(sorted(view.version_info)[:3]):
            key = data[pos:pos + 10].hex()
            lines.append(f"VI.{fname}.{n}:{target}:VI:{key}")
            lines.append(f"VIoff.{fname}.{n}:{target}:VI:{data[pos + 2:pos + 12].hex()}")
        # The same EP pattern under another executable target never matches this file.
        other = {1: 6, 6: 9, 9: 1}[target]
        lines.append(f"Wrong.{fname}:{other}:EP+0:{data[view.entry_point:][:8].hex()}")
    return [line for line in lines if not line.endswith(":")]


def _hash_sigs(rnd: random.Random, files: dict[str, bytes]) -> tuple[list[str], list[str]]:
    """Section and import hash lines, each (hash, size) once: for a hash listed under several
    names, which name ClamAV reports is an accident of its sort."""
    mdb, imp, seen = [], [], set()

    def unique(line: str) -> bool:
        key = tuple(line.split(":")[:2])
        if key in seen:
            return False
        seen.add(key)
        return True

    for fname, data in files.items():
        pe = exe_headers.parse_pe_scan(data)
        if pe is None:
            continue
        for index, size in pe.hashed_sizes():
            algo = rnd.choice(["md5", "sha1", "sha256"])
            digest = pe.section_digest(index, algo).hex()
            mdb.append(f"{size}:{digest}:M.{fname}.{index}")
            mdb.append(f"{size + 512}:{digest}:Mwrong.{fname}.{index}")
            if index == 0:
                mdb.append(f"*:{pe.section_digest(index, 'sha256').hex()}:Mstar.{fname}:73")
        table = pe.import_table() or _pefile_imports(data)
        if table:
            imp.append(f"{hashlib.md5(table).hexdigest()}:{len(table)}:I.{fname}")
            imp.append(f"{hashlib.sha256(table).hexdigest()}:{len(table)}:Isha.{fname}")
            imp.append(f"{hashlib.md5(table).hexdigest()}:{len(table) + 1}:Iwrong.{fname}")
            imp.append(f"{hashlib.sha1(table).hexdigest()}:*:Istar.{fname}")
    return [line for line in mdb if unique(line)], [line for line in imp if unique(line)]


def _pefile_imports(data: bytes) -> bytes | None:
    """The import list of a PE32+ the way a PE32 would be hashed (ClamAV never hashes it)."""
    import pefile

    try:
        pe = pefile.PE(data=data)
    except pefile.PEFormatError:
        return None
    names = []
    for entry in getattr(pe, "DIRECTORY_ENTRY_IMPORT", []):
        stem = entry.dll.lower().rsplit(b".", 1)[0]
        names += [stem + b"." + (imp.name or b"ord%d" % imp.ordinal).lower()
                  for imp in entry.imports]
    return b",".join(names) or None


def _clamscan(db_dir, paths) -> dict[str, set[str]]:
    proc = subprocess.run(
        ["clamscan", "--no-summary", "--allmatch", "--bytecode=no", "--heuristic-alerts=no",
         "-d", str(db_dir), *map(str, paths)],
        capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode in (0, 1), proc.stderr
    found: dict[str, set[str]] = {str(p): set() for p in paths}
    for line in proc.stdout.splitlines():
        if line.endswith(" FOUND"):
            path, _, rest = line.rpartition(": ")
            found[path].add(rest[:-len(" FOUND")].removesuffix(".UNOFFICIAL"))
    return found


def test_exe_signatures_match_like_clamscan(tmp_path):
    files = corpus()
    rnd = random.Random(2024)
    ndb = _body_sigs(rnd, files)
    mdb, imp = _hash_sigs(rnd, files)
    db = tmp_path / "db"
    db.mkdir()
    (db / "exe.ndb").write_text("\n".join(ndb) + "\n")
    if mdb:
        (db / "exe.mdb").write_text("\n".join(mdb) + "\n")
    if imp:
        (db / "exe.imp").write_text("\n".join(imp) + "\n")
    paths = []
    for name, data in files.items():
        path = tmp_path / name
        path.write_bytes(data)
        paths.append(path)
    expected = _clamscan(db, paths)

    parsed = body.parse_ndb("\n".join(ndb), "exe.ndb")
    assert not [s.unsupported for s in parsed if s.unsupported]
    matcher = body.BodyMatcher.from_blob(body.compile_body(parsed))
    tagged = sections.parse("\n".join(mdb), "exe.mdb", ".mdb")[0]
    tagged += sections.parse("\n".join(imp), "exe.imp", ".imp")[0]
    compiled = sections.compile_sections(tagged)
    hashes = sections.SectionHashMatcher(lambda n: memoryview(compiled.get(n, b"")))
    for path in paths:
        data = path.read_bytes()
        subject = Subject(data, len(data), filetype.sniff(data, len(data)))
        got = {name for name, _ in matcher.match(subject) + hashes.match(subject)}
        assert got == expected[str(path)], path.name
    positives = sum(len(v) for v in expected.values())
    # The generator must exercise real detections of each kind, not only misses.
    assert positives >= len(ndb) // 4
    for prefix in ("B.", "SE.", "SEshift.", "M.", "I."):
        assert any(n.startswith(prefix) for v in expected.values() for n in v), prefix
    if "pe32_version" in files:
        assert any(n.startswith("VI.") for v in expected.values() for n in v)


def test_pua_section_hashes_need_detect_pua(tmp_path):
    data = samples().get("pe32")
    if data is None:
        pytest.skip("MinGW not installed")
    pe = exe_headers.parse_pe_scan(data)
    index, size = pe.hashed_sizes()[0]
    db = tmp_path / "db"
    db.mkdir()
    (db / "x.mdu").write_text(f"{size}:{pe.section_digest(index, 'md5').hex()}:PUA.Win.Test\n")
    sample = tmp_path / "sample.exe"
    sample.write_bytes(data)
    off = subprocess.run(["clamscan", "--no-summary", "-d", str(db), str(sample)],
                         capture_output=True, text=True)
    on = subprocess.run(["clamscan", "--no-summary", "--detect-pua=yes", "-d", str(db),
                         str(sample)], capture_output=True, text=True)
    assert "FOUND" not in off.stdout and "PUA.Win.Test" in on.stdout
    # lmsav matches the .mdu like an .mdb: whether it is loaded is the loader's PUA setting.
    tagged, _ = sections.parse((db / "x.mdu").read_text(), "x.mdu", ".mdu")
    compiled = sections.compile_sections(tagged)
    matcher = sections.SectionHashMatcher(lambda n: memoryview(compiled.get(n, b"")))
    assert matcher.match(Subject(data, len(data), "pe")) == [("PUA.Win.Test", "x.mdu")]
