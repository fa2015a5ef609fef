"""PE section hashes (.mdb .msb .mdu .msu) and import-table hashes (.imp): parsing as ClamAV
reads the lines, and matching real PE files built with MinGW."""

from __future__ import annotations

import hashlib

import pytest

from lmsav.scanner.signatures import exe_headers, sections
from lmsav.scanner.signatures.errors import SignatureError
from lmsav.scanner.signatures.levels import FUNCTIONALITY_LEVEL
from lmsav.scanner.signatures.subject import Subject

from .test_exe_headers import needs_mingw, sample

MD5 = "d41d8cd98f00b204e9800998ecf8427e"
SHA1 = "da39a3ee5e6b4b0d3255bfef95601890afd80709"
SHA256 = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"


def matcher(mdb: str = "", imp: str = "") -> sections.SectionHashMatcher:
    sigs = sections.parse(mdb, "t.mdb", ".mdb")[0] + sections.parse(imp, "t.imp", ".imp")[0]
    compiled = sections.compile_sections(sigs)
    return sections.SectionHashMatcher(lambda name: memoryview(compiled.get(name, b"")))


def names(m: sections.SectionHashMatcher, data: bytes, ftype: str = "pe") -> list[str]:
    return sorted(name for name, _ in m.match(Subject(data, len(data), ftype)))


# -- parsing -----------------------------------------------------------------------------------

def test_parse_section_and_import_lines():
    sigs, skipped = sections.parse(f"# comment\n4096:{MD5}:A\n512:{SHA256}:B:73\n", "x.msb",
                                   ".msb")
    assert skipped == []
    assert [(s.table, s.size, s.digest.hex(), s.name, s.source) for s in sigs] == [
        ("mdb", 4096, MD5, "A", "x.msb"), ("mdb", 512, SHA256, "B", "x.msb")]
    sigs, _ = sections.parse(f"{SHA1}:1117:Imp.A\n{MD5}:*:Imp.Any\n", "x.imp", ".imp")
    assert [(s.table, s.size, s.name) for s in sigs] == [("imp", 1117, "Imp.A"),
                                                         ("imp", -1, "Imp.Any")]


def test_wildcard_section_size_needs_level_73():
    sigs, _ = sections.parse(f"*:{MD5}:Any:73\n*:{MD5}:Later:90:255\n", "w.mdb", ".mdb")
    assert [s.size for s in sigs] == [-1, -1]
    for line in (f"*:{MD5}:NoLevel", f"*:{MD5}:Low:72"):
        with pytest.raises(SignatureError, match="needs a minimum engine level of at least 73"):
            sections.parse(line, "w.mdb", ".mdb")


@pytest.mark.parametrize("line, message", [
    (f"0:{MD5}:Zero", "bad size '0'"),
    (f"-5:{MD5}:Negative", "bad size '-5'"),
    (f"12x:{MD5}:Junk", "bad size '12x'"),
    (f"4294967295:{MD5}:Huge", "bad size '4294967295'"),
    (f"100:{MD5[:-1]}:Short", "bad hash"),
    (f"100:{MD5[:-1]}g:NotHex", "bad hash"),
    (f"100:{MD5}", "expected PESectionSize:Hash:MalwareName"),
    (f"100:{MD5}:A:1:2:3", "expected PESectionSize:Hash:MalwareName"),
    (f"100:{MD5}:", "empty signature name"),
])
def test_lines_clamav_refuses_name_file_and_line(line, message):
    with pytest.raises(SignatureError) as err:
        sections.parse(f"# header\n{line}\n", "bad.mdb", ".mdb")
    assert err.value.file == "bad.mdb" and err.value.line == 2
    assert message in err.value.message


@pytest.mark.parametrize("ext, line", [(".mdb", f"4096:{MD5}:A"), (".imp", f"{MD5}:4096:A")])
@pytest.mark.parametrize("blank", ["", "   ", "\r"])
def test_a_blank_line_is_refused_as_in_clamav(ext, line, blank):
    with pytest.raises(SignatureError, match="blank line") as err:
        sections.parse(f"{line}\n{blank}\n{line}\n", "b" + ext, ext)
    assert err.value.line == 2


def test_import_lines_put_the_hash_first():
    with pytest.raises(SignatureError, match="expected ImportTableHash:Size:MalwareName"):
        sections.parse(f"{MD5}:12", "x.imp", ".imp")
    with pytest.raises(SignatureError, match="bad size 'd41d8"):
        sections.parse(f"12:{MD5}:Swapped", "x.imp", ".imp")


def test_size_with_leading_blank_or_plus_is_read_like_strtoul():
    sigs, _ = sections.parse(f" 12:{MD5}:Blank\n+13:{MD5}:Plus\n", "s.mdb", ".mdb")
    assert [s.size for s in sigs] == [12, 13]


def test_engine_levels_skip_lines_with_a_reason():
    level = FUNCTIONALITY_LEVEL
    text = (f"10:{MD5}:New:{level + 1}\n10:{MD5}:Retired:1:{level - 1}\n"
            f"10:{MD5}:Current:1:{level}\n10:{MD5}:EmptyMax:1:\n")
    sigs, skipped = sections.parse(text, "l.mdb", ".mdb")
    assert [s.name for s in sigs] == ["Current"]
    assert skipped == [
        f"l.mdb:1: New: needs engine level {level + 1} (lmsav: {level})",
        f"l.mdb:2: Retired: retired at engine level {level - 1}",
        "l.mdb:4: EmptyMax: retired at engine level 0",  # ClamAV reads an empty MaxFL as 0
    ]


def test_a_level_skip_comes_before_validation():
    _, skipped = sections.parse(f"0:nothex:Future:{FUNCTIONALITY_LEVEL + 1}\n", "f.mdb", ".mdb")
    assert len(skipped) == 1


# -- matching ----------------------------------------------------------------------------------

@needs_mingw
def test_section_hashes_of_each_algorithm_match():
    data = sample("pe32")
    pe = exe_headers.parse_pe_scan(data)
    (i, a), (j, b), (k, c) = pe.hashed_sizes()[:3]
    m = matcher(mdb=f"{a}:{pe.section_digest(i, 'md5').hex()}:Sect.Md5\n"
                    f"{b}:{pe.section_digest(j, 'sha1').hex()}:Sect.Sha1\n"
                    f"{c}:{pe.section_digest(k, 'sha256').hex()}:Sect.Sha256\n"
                    f"{a + 1}:{pe.section_digest(i, 'md5').hex()}:Sect.WrongSize\n")
    assert m.count == 4
    assert names(m, data) == ["Sect.Md5", "Sect.Sha1", "Sect.Sha256"]
    assert names(m, data, "msdos") == ["Sect.Md5", "Sect.Sha1", "Sect.Sha256"]
    assert names(m, sample("pe64")) == []


@needs_mingw
def test_only_sections_of_a_signed_size_are_hashed(monkeypatch):
    data = sample("pe64")
    pe = exe_headers.parse_pe_scan(data)
    index, size = pe.hashed_sizes()[0]
    others = [s for _, s in pe.hashed_sizes() if s != size]
    assert others  # the sample has sections of other sizes
    hashed = []
    real = exe_headers.PeScan.section_digest

    def counting(self, i, algo):
        hashed.append(i)
        return real(self, i, algo)

    monkeypatch.setattr(exe_headers.PeScan, "section_digest", counting)
    m = matcher(mdb=f"{size}:{pe.section_digest(index, 'md5').hex()}:One\n")
    assert names(m, data) == ["One"]
    assert set(hashed) == {i for i, s in pe.hashed_sizes() if s == size}


@needs_mingw
def test_exact_and_wildcard_size_both_report():
    data = sample("pe32")
    pe = exe_headers.parse_pe_scan(data)
    index, size = pe.hashed_sizes()[0]
    digest = pe.section_digest(index, "sha256").hex()
    m = matcher(mdb=f"{size}:{digest}:Exact\n*:{digest}:Anywhere:73\n")
    assert names(m, data) == ["Anywhere", "Exact"]


@needs_mingw
def test_import_hash_matches_a_pe32_only():
    data = sample("pe32")
    table = exe_headers.parse_pe_scan(data).import_table()
    m = matcher(imp=f"{hashlib.md5(table).hexdigest()}:{len(table)}:Imp.Md5\n"
                    f"{hashlib.sha256(table).hexdigest()}:*:Imp.Any\n"
                    f"{hashlib.md5(table).hexdigest()}:{len(table) + 1}:Imp.WrongSize\n")
    assert names(m, data) == ["Imp.Any", "Imp.Md5"]
    assert names(m, sample("pe64")) == []


@needs_mingw
def test_import_by_ordinal_changes_the_hash():
    plain = exe_headers.parse_pe_scan(sample("pe32")).import_table()
    ordinals = exe_headers.parse_pe_scan(sample("pe32_ordinals")).import_table()
    assert plain != ordinals
    m = matcher(imp=f"{hashlib.md5(ordinals).hexdigest()}:{len(ordinals)}:Imp.Ord\n")
    assert names(m, sample("pe32_ordinals")) == ["Imp.Ord"]
    assert names(m, sample("pe32")) == []


def test_other_types_are_never_parsed():
    m = matcher(mdb=f"4096:{MD5}:A\n", imp=f"{MD5}:*:B\n")
    subject = Subject(b"\x7fELF" + bytes(60), 64, "elf")
    assert m.match(subject) == [] and "pe.scan" not in subject._cache
    assert names(m, b"MZ" + bytes(100), "msdos") == []  # MZ without a PE header


def test_empty_tables():
    m = matcher()
    assert m.count == 0
    subject = Subject(b"MZ" + bytes(100), 102, "pe")
    assert m.match(subject) == [] and "pe.scan" not in subject._cache
