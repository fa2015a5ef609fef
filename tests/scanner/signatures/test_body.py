"""Body signatures (.ndb): parsing, errors, every hex construct and offset form, target types."""

from __future__ import annotations

import mmap
import multiprocessing
import os

import hyperscan
import pytest

from lmsav.scanner.signatures import body
from lmsav.scanner.signatures.errors import SignatureError
from lmsav.scanner.signatures.subject import Subject


def build(text: str, source: str = "t.ndb") -> body.BodyMatcher:
    return body.BodyMatcher.from_blob(body.compile_body(body.parse_ndb(text, source)))


def names(matcher: body.BodyMatcher, data, file_type: str = "binary") -> set[str]:
    found = matcher.match(Subject(data, len(data), file_type))
    return {name for name, _ in found}


def one(hexsig: str, offset: str = "*", target: int = 0) -> body.BodyMatcher:
    return build(f"Sig:{target}:{offset}:{hexsig}\n")


# -- parsing -----------------------------------------------------------------------------------

def test_parse_fields_and_skips_comments():
    sigs = body.parse_ndb("# comment\n#\nA.B-C:1:*:4142434445\nD:6:10:41424344:51:255\n", "x.ndb")
    assert [(s.name, s.source, s.line, s.target) for s in sigs] == [
        ("A.B-C", "x.ndb", 3, 1), ("D", "x.ndb", 4, 6),
    ]
    assert sigs[0].pattern == r"\x41\x42\x43\x44\x45"
    assert (sigs[1].kind, sigs[1].n, sigs[1].m) == (body.START, 10, 0)


@pytest.mark.parametrize("blank", ["", "   ", "\r"])
def test_a_blank_line_is_refused_as_in_clamav(blank):
    with pytest.raises(SignatureError, match="blank line") as err:
        body.parse_ndb(f"A:0:*:41424344\n{blank}\nB:0:*:45464748\n", "b.ndb")
    assert err.value.line == 2


def test_macro_offsets_make_group_members():
    sig, other = body.parse_ndb("M:0:$3$:41424344\nB:3:$7:4142(B)4344\n", "m.ndb")
    assert (sig.kind, sig.n, sig.hexsig, sig.unsupported) == (body.MACRO, 3, "41424344", "")
    # The logical matcher, which matches the groups, takes no (B) inside a pattern.
    assert "boundary markers" in other.unsupported
    blob = body.compile_body([sig])
    assert body.macro_patterns(blob) == [(0, 3, "41424344")]
    assert names(body.BodyMatcher.from_blob(blob), b"xxABCDxx") == set()  # no detection


@pytest.mark.parametrize("offset, expect", [
    ("*", (body.ANY, 0, 0)),
    ("0", (body.START, 0, 0)),
    ("17", (body.START, 17, 0)),
    ("17,5", (body.START, 17, 5)),
    ("EOF-8", (body.EOF, 8, 0)),
    ("EOF-8,3", (body.EOF, 8, 3)),
])
def test_parse_offsets(offset, expect):
    sig = body.parse_ndb(f"S:0:{offset}:4142434445464748\n", "t.ndb")[0]
    assert (sig.kind, sig.n, sig.m) == expect
    assert not sig.unsupported


@pytest.mark.parametrize("hexsig, pattern, lengths", [
    ("41424344", r"\x41\x42\x43\x44", (4, 4)),
    ("4A4b4C", r"\x4a\x4b\x4c", (3, 3)),  # hex is case-insensitive
    ("4142??43", r"\x41\x42.\x43", (4, 4)),
    ("41424?", r"\x41\x42[\x40-\x4f]", (3, 3)),
    ("4142?f", r"\x41\x42[\x0f\x1f\x2f\x3f\x4f\x5f\x6f\x7f\x8f\x9f\xaf\xbf\xcf\xdf\xef\xff]",
     (3, 3)),
    ("4142*4344", r"\x41\x42.*\x43\x44", (4, None)),
    ("4142{3}4344", r"\x41\x42.{3}\x43\x44", (7, 7)),
    ("4142{-3}4344", r"\x41\x42.{0,3}\x43\x44", (4, 7)),
    ("4142{3-}4344", r"\x41\x42.{3,}\x43\x44", (7, None)),
    ("4142{2-5}4344", r"\x41\x42.{2,5}\x43\x44", (6, 9)),
    # An anchored byte is checked around the match, which starts after a left one.
    ("4142[2-5]43", r"\x41\x42(?:(?=.{2,5}\x43))", (2, 2)),
    ("4142[3]43", r"\x41\x42(?:(?=.{3}\x43))", (2, 2)),
    ("43[0-1]4142", r"(?:(?<=\x43)|(?<=\x43.))\x41\x42", (2, 2)),
    ("4?[1-2]4142", r"\x41\x42", (2, 2)),  # ClamAV never checks a high-nibble anchor
    ("4142(43|4445)46", r"\x41\x42(?:\x43|\x44\x45)\x46", (4, 5)),
    ("4142!(43|44)45", r"\x41\x42[^\x43-\x44]\x45", (4, 4)),
    ("4142!(4344|4546)", r"\x41\x42(?:[^\x43\x45].|\x43(?:[^\x44])|\x45(?:[^\x46]))", (4, 4)),
])
def test_parse_hex_constructs(hexsig, pattern, lengths):
    sig = body.parse_ndb(f"S:0:*:{hexsig}\n", "t.ndb")[0]
    assert sig.pattern == pattern
    assert (sig.min_len, sig.max_len) == lengths


@pytest.mark.parametrize("line, message", [
    ("S:0:*", "expected Name:TargetType:Offset:HexSignature"),
    (":0:*:414243", "empty signature name"),
    ("S:x:*:414243", "bad target type 'x'"),
    ("S:0:abc:414243", "bad offset 'abc'"),
    ("S:0:EOF+3:414243", "bad offset 'EOF+3'"),
    ("S:0:*:abc", "odd number of hex digits in 'abc'"),
    ("S:0:*:4142zz", "unexpected character 'z' at position 4"),
    ("S:0:*:4142{3", "unterminated '{'"),
    ("S:0:*:4142{5-2}43", "bad range {5-2}"),
    ("S:0:*:4142{x}43", "bad range {x}"),
    ("S:0:*:4142[x]43", "bad range [x]"),
    ("S:0:*:41[2-1]4243", "bad range [2-1]"),
    ("S:0:*:41[0-33]4243", "bad range [0-33]"),
    ("S:0:*:41[1-2]42[1-2]4344", "bad anchored byte"),
    ("S:0:*:(41|42)[1-2]4344", "bad anchored byte"),
    ("S:0:*:4142[1-2]", "bad anchored byte"),
    ("S:0:*:41[1-2]42", "too short"),
    ("S:0:*:4142*(B)*4344", "too short"),
    ("S:0:*:41??42", "no two consecutive fixed bytes"),
    ("S:0:*:4142", "too short: ClamAV needs 3 bytes"),  # a plain pattern of target 0 or 1
    ("S:1:0:4142", "too short: ClamAV needs 3 bytes"),
    ("S:0:*:41(4243|4445)4647", "ClamAV's prefilter for target 0"),
    ("S:4:*:41(B)4243", "ClamAV's prefilter for target 4"),
    ("S:7:*:(4243|4445)46", "ClamAV's prefilter for target 7"),
    ("S:1:*:4142*43(L)4445", "ClamAV's prefilter for target 1"),
    ("S:0:*:4142*43(4?|45)4647", "ClamAV's prefilter for target 0"),
    ("S:0:*:4142(43|)44", "empty alternative"),
    ("S:0:*:4142(4344", "unterminated '('"),
    ("S:0:*:4142!4344", "'!' must be followed by '('"),
    ("S:0:*:4142!(43|4445)", "must all have the same length"),
    ("S:0:*:41(4|43)", "odd number of hex digits in '4'"),
    ("S:0:*:??{4}*", "has no fixed bytes"),
    ("S:0:*:", "empty hex signature"),
    ("S:0:*:414243:abc", "bad functionality level 'abc'"),
    ("S:0:*:414243:\u00b2", "bad functionality level '\u00b2': need a number"),  # not ASCII
    # ClamAV refuses these databases too.
    ("S:0:EP+10:41424344", "needs target type 1 (PE), 6 (ELF) or 9 (Mach-O), not 0"),
    ("S:0:SE1:41424344", "needs target type 1 (PE), 6 (ELF) or 9 (Mach-O), not 0"),
    ("S:1:S2-4:41424344", "bad offset 'S2-4'"),
    ("S:1:EP+x:41424344", "bad offset 'EP+x'"),
    ("S:1:EP+1,x:41424344", "bad offset shift"),
    ("S:0:*:4142!(43??|4546)", "cannot contain wildcards"),
    ("S:0:*:4142!(4?|46)", "cannot contain wildcards"),
])
def test_parse_errors_name_file_and_line(line, message):
    with pytest.raises(SignatureError) as err:
        body.parse_ndb(f"# header\n{line}\n", "bad.ndb")
    assert err.value.file == "bad.ndb" and err.value.line == 2
    assert message in err.value.message


@pytest.mark.parametrize("line, reason", [
    ("S:0:*:41424344:999", "needs engine level 999"),
    ("S:15:*:41424344", "target type 15 is unknown to ClamAV"),
    ("S:0:*:41424344:10:20", "retired at engine level 20"),
])
def test_unsupported_signatures_are_recorded_and_skipped(line, reason):
    sig = body.parse_ndb(line + "\n", "u.ndb")[0]
    assert reason in sig.unsupported
    matcher = build(line + "\nOther:0:*:5a5a5a5a\n", "u.ndb")
    assert matcher.count == 1
    assert len(matcher.unsupported) == 1 and matcher.unsupported[0].startswith("u.ndb:1: S: ")
    assert names(matcher, b"xxABCDxx") == set()


def test_supported_engine_levels_are_accepted():
    matcher = build("S:0:*:41424344:50\nT:0:*:45464748:50:255\nU:0:*:494a4b4c::\n")
    assert matcher.count == 3 and matcher.unsupported == []
    assert names(matcher, b"ABCDEFGHIJKL") == {"S", "T", "U"}


# -- matching: hex constructs ------------------------------------------------------------------

@pytest.mark.parametrize("hexsig, hit, miss", [
    ("414243", b"..ABC..", b"..ABD.."),
    ("6c6D73", b"lms", b"LMS"),  # hex case does not make the match caseless
    ("4142??43", b"ABxC", b"ABxxC"),
    ("4142??43", b"AB\x00C", b"ABC"),
    ("41424?", b"ABO", b"ABP"),
    ("4142?f", b"AB\x3f", b"AB\x3e"),
    ("4142*4344", b"AB" + b"z" * 1000 + b"CD", b"CD..AB"),
    ("4142*4344", b"ABCD", b"ABC"),
    ("4142{3}4344", b"ABxyzCD", b"ABxyCD"),
    ("4142{3}4344", b"ABxyzCD", b"ABwxyzCD"),
    ("4142{-3}4344", b"ABCD", b"ABwxyzCD"),
    ("4142{-3}4344", b"ABxyzCD", b"AB1234CD"),
    ("4142{3-}4344", b"AB" + b"z" * 500 + b"CD", b"ABxyCD"),
    ("4142{2-4}4344", b"ABxyCD", b"ABxCD"),
    ("4142{2-4}4344", b"ABwxyzCD", b"ABvwxyzCD"),
    ("4142[1-2]43", b"ABxC", b"ABxyzC"),
    ("4142(43|4445)46", b"ABCF", b"ABDF"),
    ("4142(43|4445)46", b"ABDEF", b"ABEF"),
    ("4142!(43|44)45", b"ABxE", b"ABCE"),
    ("4142!(43|44)45", b"ABxE", b"ABDE"),
    ("4142!(4344|4546)4748", b"ABCEGH", b"ABCDGH"),
    ("4142!(4344|4546)4748", b"ABxxGH", b"ABEFGH"),
])
def test_hex_constructs_match_and_miss(hexsig, hit, miss):
    matcher = one(hexsig)
    assert names(matcher, hit) == {"Sig"}
    assert names(matcher, miss) == set()


def test_long_gaps_are_exact_beyond_the_hyperscan_repeat_limit():
    limit = body.REPEAT_LIMIT
    matcher = one(f"41424344{{{limit + 10}-{limit + 20}}}45464748")
    assert names(matcher, b"ABCD" + b"z" * (limit + 15) + b"EFGH") == {"Sig"}
    assert names(matcher, b"ABCD" + b"z" * (limit + 21) + b"EFGH") == set()
    assert names(matcher, b"ABCD" + b"z" * (limit + 9) + b"EFGH") == set()


# -- matching: offsets -------------------------------------------------------------------------

@pytest.mark.parametrize("offset, hexsig, hits, misses", [
    ("0", "41424344", [b"ABCD...."], [b".ABCD..."]),
    ("3", "41424344", [b"...ABCD."], [b"..ABCD..", b"....ABCD", b"...ABC"]),
    ("3", "4142*4344", [b"...AB...CD", b"AB.AB..CD"], [b"..AB...CD", b"....AB..CD"]),
    ("2,3", "41424344", [b"..ABCD...", b"....ABCD.", b".....ABCD"], [b".ABCD....", b"......ABCD"]),
    ("2,3", "4142{1-3}4344", [b"..AB.CD", b".....AB...CD"], [b".AB.CD", b"......AB.CD"]),
    ("EOF-4", "41424344", [b"....ABCD", b"ABCD"], [b"...ABCD.", b"ABC"]),
    ("EOF-6", "41424344", [b"..ABCD..", b"ABCD.."], [b"ABCD...", b"..ABCD."]),
    ("EOF-6,2", "41424344", [b"xABCD..", b"..ABCD", b"..ABCD.."],
     [b"ABCD...", b"ABCD.......", b"ABC"]),
    ("EOF-8", "4142*4344", [b"ABxxxxCD", b"..ABABxxxxCD"], [b"ABxxxxxCD", b"ABxxxxCD."]),
    ("EOF-8,2", "4142{1-3}4344", [b"..ABxCD...", b"AB.CD..."], [b".ABxCD....", b"ABxCD......"]),
])
def test_offsets(offset, hexsig, hits, misses):
    matcher = one(hexsig, offset)
    for data in hits:
        assert names(matcher, data) == {"Sig"}, data
    for data in misses:
        assert names(matcher, data) == set(), data


def test_eof_offset_longer_than_the_file_never_matches():
    matcher = one("41424344", "EOF-10")
    assert names(matcher, b"ABCD") == set()


@pytest.mark.parametrize("offset, early", [
    ("70000", 69999), ("70000,10", 69999), ("EOF-70000", 69999), ("EOF-70010,10", 69989),
])
def test_large_offsets(offset, early):
    matcher = one("4142{1-2}4344", offset)
    fixed = one("41424344", offset)
    hit = b"z" * 70000 + b"AB.CD" + b"z" * (70000 - 5)
    assert names(matcher, hit) == {"Sig"}
    assert names(fixed, hit.replace(b"AB.CD", b"ABCD.")) == {"Sig"}
    miss = b"z" * early + b"AB.CD" + b"z" * (140000 - early - 5)
    assert names(matcher, miss) == set()
    assert names(fixed, miss.replace(b"AB.CD", b"ABCD.")) == set()


# -- matching: target types --------------------------------------------------------------------

@pytest.mark.parametrize("target, fits, misfits", [
    (0, ["binary", "pe", "text", "zip"], []),
    (1, ["pe", "msdos"], ["elf", "binary", "text"]),  # ClamAV's PE target takes any MZ file
    (2, ["ole2"], ["binary", "zip"]),
    (3, ["html-norm"], ["html", "text", "binary"]),  # normalised HTML only (normalise.py)
    (4, ["mail", "mbox"], ["text", "html"]),
    (5, [], ["binary", "text", "pe"]),
    (6, ["elf"], ["pe", "binary"]),
    (7, ["text-norm"], ["text", "html", "mail", "binary", "pe"]),  # folded text only
    (9, ["macho"], ["elf"]),
    (10, ["pdf"], ["text"]),
    (12, [], ["binary", "text"]),
])
def test_target_types_follow_the_sniffed_type(target, fits, misfits):
    matcher = one("41424344", target=target)
    assert matcher.count == 1
    for ftype in fits:
        assert names(matcher, b"ABCD", ftype) == {"Sig"}, ftype
    for ftype in misfits:
        assert names(matcher, b"ABCD", ftype) == set(), ftype


# -- matcher behaviour -------------------------------------------------------------------------

def test_empty_database():
    for matcher in (build(""), body.BodyMatcher.from_blob(b""),
                    body.BodyMatcher.from_blob(body.compile_body([]))):
        assert matcher.count == 0
        assert matcher.match(Subject(b"ABCD", 4, "binary")) == []


def test_each_name_reported_once_with_its_source():
    sigs = body.parse_ndb("Dup:0:*:41424344\nDup:0:*:45464748\nOther:0:0:414243\n", "a.ndb")
    sigs += body.parse_ndb("Far:0:*:494a4b4c\n", "b.ndb")
    matcher = body.BodyMatcher.from_blob(body.compile_body(sigs))
    assert matcher.count == 4
    found = matcher.match(Subject(b"ABCDEFGHIJKL", 12, "binary"))
    assert sorted(found) == [("Dup", "a.ndb"), ("Far", "b.ndb"), ("Other", "a.ndb")]


def test_serialization_round_trip_from_bytes_and_memoryview():
    blob = body.compile_body(body.parse_ndb("A:0:*:41424344\nB:0:EOF-3:454647\n", "t.ndb"))
    assert blob.startswith(body.MAGIC)
    for copy in (bytes(blob), memoryview(bytearray(blob))):
        matcher = body.BodyMatcher.from_blob(copy)
        assert matcher.count == 2
        assert names(matcher, b"ABCD..EFG") == {"A", "B"}
        assert names(matcher, b"ABC..EFG.") == set()


def test_bad_blob_is_refused():
    with pytest.raises(ValueError):
        body.BodyMatcher.from_blob(b"NOTABODYBLOB" + b"\0" * 16)


def test_mmap_input(tmp_path):
    matcher = build("A:0:*:41424344\nB:0:EOF-4:45464748\nC:0:*:4142{5000-6000}4344\n")
    path = tmp_path / "sample"
    path.write_bytes(b"x" * 10000 + b"ABCD" + b"y" * 5500 + b"CD" + b"EFGH")
    with open(path, "rb") as fh, mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as mm:
        assert names(matcher, mm) == {"A", "B", "C"}


def _child_matches(matcher, queue):
    queue.put(sorted(matcher.match(Subject(b"..ABCD..", 8, "binary"))))


def test_forked_child_allocates_its_own_scratch():
    matcher = build("A:0:*:41424344\n")
    assert names(matcher, b"ABCD") == {"A"}  # parent has a scratch now
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    child = ctx.Process(target=_child_matches, args=(matcher, queue))
    child.start()
    result = queue.get(timeout=30)
    child.join(timeout=30)
    assert result == [("A", "t.ndb")] and child.exitcode == 0
    assert names(matcher, b"ABCD") == {"A"}


def test_forked_child_with_os_fork():
    matcher = build("A:0:*:41424344\n")
    assert names(matcher, b"ABCD") == {"A"}
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - child
        try:
            ok = names(matcher, b"..ABCD") == {"A"} and names(matcher, b"ABC") == set()
            os.write(write, b"1" if ok else b"0")
        finally:
            os._exit(0)
    os.close(write)
    assert os.read(read, 1) == b"1"
    os.close(read)
    os.waitpid(pid, 0)


def test_many_bounded_gaps_stay_exact():
    # Chained repeats adding up past what Hyperscan scans safely are relaxed, then confirmed.
    chain = "".join(f"4{i % 10}4{i % 10}{{100-1500}}" for i in range(40)) + "5a5a"
    sig = body.parse_ndb(f"Sig:0:*:{chain}\n", "t.ndb")[0]
    assert not sig.exact
    matcher = one(chain)
    data = b"".join(bytes([0x40 + i % 10]) * 2 + b"." * 150 for i in range(40)) + b"ZZ"
    assert names(matcher, data) == {"Sig"}
    assert names(matcher, data.replace(b"ZZ", b"Z.")) == set()
    assert names(matcher, data.replace(b"." * 150, b"." * 99, 1)) == set()


def test_many_unbounded_gaps_compile_quickly():
    chain = "".join(f"4{i % 10}4{i % 10}{{100-}}" for i in range(200)) + "5a5a"
    matcher = build(f"Big:0:*:{chain}\nSmall:0:*:41424344\n")
    data = b"".join(bytes([0x40 + i % 10]) * 2 + b"." * 100 for i in range(200)) + b"ZZ"
    assert names(matcher, data) == {"Big"}
    assert names(matcher, data.replace(b"." * 100, b"." * 99, 1)) == set()
    assert names(matcher, data[:-1] + b"ABCD") == {"Small"}


def _refusing(refused: str):
    """A stand-in for body._build whose Hyperscan refuses ``refused`` unless prefiltering."""
    real = body._build

    def build_(indexes, plans, flags):
        indexes = list(indexes)
        for i in indexes:
            if plans[i][0] == refused and not flags[i] & hyperscan.HS_FLAG_PREFILTER:
                raise hyperscan.error("Pattern is too large.")
        return real(indexes, plans, flags)

    return build_


def test_pattern_hyperscan_refuses_is_found_and_prefiltered(monkeypatch):
    refused = r"\x45\x46.{2,4}\x47\x48"
    monkeypatch.setattr(body, "_build", _refusing(refused))
    lines = [f"Fill.{i}:0:*:{(b'filler-%04d' % i).hex()}" for i in range(50)]
    lines.insert(17, "Odd:0:*:4546{2-4}4748")
    matcher = build("\n".join(lines) + "\n")
    assert matcher.count == 51
    assert names(matcher, b"..EF..GH..filler-0003") == {"Odd", "Fill.3"}
    assert names(matcher, b"..EF.....GH..") == set()


def test_pattern_hyperscan_refuses_even_prefiltered_names_the_signature(monkeypatch):
    real = body._build

    def refuse(indexes, plans, flags):
        if any(plans[i][0] == r"\x45\x46\x47\x48" for i in indexes):
            raise hyperscan.error("Pattern is too large.")
        return real(indexes, plans, flags)

    monkeypatch.setattr(body, "_build", refuse)
    with pytest.raises(SignatureError) as err:
        build("A:0:*:41424344\nB:0:*:45464748\nC:0:*:494a4b4c\n", "big.ndb")
    assert err.value.file == "big.ndb" and err.value.line == 2
    assert "B: Hyperscan cannot compile it: Pattern is too large." in str(err.value)


def test_many_signatures_compile_and_match():
    lines = [f"Many.{i}:0:*:{(b'sig-%06d-body' % i).hex()}" for i in range(3000)]
    matcher = build("\n".join(lines) + "\n")
    assert matcher.count == 3000
    assert names(matcher, b"..sig-001234-body..sig-002999-body") == {"Many.1234", "Many.2999"}
    assert names(matcher, b"sig-003000-body") == set()
