"""Logical signatures (.ldb): parsing, skipping, counting, modifiers and the target description.

Expected results were checked against clamscan 1.4.6 (test_ldb_vs_clamscan.py does so
systematically); these cases pin down one behaviour each.
"""

from __future__ import annotations

import multiprocessing

import pytest

from lmsav.scanner.signatures import body, logical
from lmsav.scanner.signatures.errors import SignatureError
from lmsav.scanner.signatures.subject import Subject

HEAD = b"\x00\x01\x00\x01"  # binary, as a scanner would type it


def build(text: str) -> logical.LogicalMatcher:
    sigs, skipped = logical.parse_ldb(text, "t.ldb")
    assert not skipped, skipped
    sections = logical.compile_ldb(sigs)
    return logical.LogicalMatcher(lambda name: memoryview(sections.get(name, b"")))


def names(matcher, data: bytes, ftype: str = "binary", **context) -> set[str]:
    subject = Subject(data, len(data), ftype, **context)
    return {name for name, _ in matcher.match(subject)}


def one(expression: str, *subsigs: str, tdb: str = "Engine:81-255,Target:0"):
    return build(f"Sig;{tdb};{expression};{';'.join(subsigs)}\n")


# -- parsing -----------------------------------------------------------------------------------

def test_parse_reports_fields_and_source():
    sigs, skipped = logical.parse_ldb(
        "# comment\nA.B;Engine:51-255,Target:1,FileSize:10-99;0&1;414243;444546\n", "x.ldb")
    assert skipped == []
    (sig,) = sigs
    assert (sig.name, sig.source, sig.line, sig.target, sig.filesize) == (
        "A.B", "x.ldb", 2, 1, (10, 99))
    assert len(sig.subsigs) == 2


@pytest.mark.parametrize("line, message", [
    ("S;Target:0;0", "expected Name;TargetDescription"),
    ("S;Target:0;0&1;414243", "1 subsignatures, but the expression names 2"),
    ("S;Target:0;(0&1;414243;444546", "missing closing parenthesis"),
    ("S;Target:0;0&;414243", "missing right argument"),
    ("S;Target:x;0;414243", "bad Target"),
    ("S;FileSize:1-2;0;414243", "Engine:51 or later"),
    ("S;Target:0,Engine:51-255;0;414243", "Engine must be the first"),
    ("S;Engine:51-255;0;414243", "no Target"),
    ("S;Engine:51-255,Target:0,EntryPoint:0-9;0;414243", "only valid for PE, ELF"),
    ("S;Target:0;0;41", "too short"),
    ("S;Target:0;0;41??42", "no two consecutive fixed bytes"),
    ("S;Target:0;0;414243::q", "unknown subsignature modifier"),
    ("S;Target:0;0;4142!(43|44)::i", "negated alternatives cannot take modifiers"),
    ("S;Target:0;0&1;414243;0/a(/", "PCRE2 cannot compile it"),
    ("S;Target:0;0&1;414243;1/abc/", "refers to itself"),
    ("S;Target:0;0&1;414243;0/abc/z", "unknown PCRE flag"),
    ("S;Target:0;0&1;414243;0(>>2#il3#=1)", "binary length must be 1, 2, 4 or 8"),
    ("S;Target:0;0&1;414243;0(>>2#ib2#~1)", "bad comparison"),
    ("S;Target:0;0;${1-2}40$", "macro group 40 is out of range"),
    ("S;Target:0;0&1;414243;${1-2}3", "lacks its closing '$'"),
    ("S;Target:0;0&1;414243;${1 -2}3$", "need ${min-max}group$"),
    ("S;Target:0;0&1;414243;$1$:414243", "lacks its closing '$'"),  # no macro offsets here
    ("S;Target:0;0;41(B)4243", "prefilter for target 0"),
    ("S;Target:0;0;41(42|43)4445::i", "prefilter for target 0"),  # ::i makes it multi-byte
    ("S;Target:0;0;4a[1-2]4b[3]4c4d", "bad anchored byte"),
    ("S;Target:0;0;4a4b[40]4c", "bad range [40]"),
])
def test_malformed_lines_raise_with_file_and_line(line, message):
    with pytest.raises(SignatureError) as err:
        logical.parse_ldb(f"# first\n{line}\n", "bad.ldb")
    assert err.value.file == "bad.ldb" and err.value.line == 2
    assert message in err.value.message


@pytest.mark.parametrize("blank", ["", "   ", "\r"])
def test_an_empty_line_is_malformed_as_in_clamav(blank):
    with pytest.raises(SignatureError) as err:
        logical.parse_ldb(f"S;Target:0;0;414243\n{blank}\nT;Target:0;0;414243\n", "t.ldb")
    assert err.value.line == 2


@pytest.mark.parametrize("line, reason", [
    ("S;Engine:300-400,Target:0;0;414243", "needs engine level 300"),
    ("S;Engine:51-60,Target:0;0;414243", "retired at engine level 60"),
    ("S;Engine:51-255,Target:0,Colour:red;0;414243", "unknown target description attribute"),
    ("S;Engine:51-255,Target:0,Container:CL_TYPE_NOPE;0;414243", "unknown file type"),
    ("S;Engine:51-255,Target:1,IconGroup1:x;0;414243", "icon groups"),
    ("S;Engine:51-255,Target:0,HandlerType:CL_TYPE_PDF;0;414243", "HandlerType"),
    ("S;Engine:51-255,Target:12;0;414243", "never sniffed"),
    ("S;Engine:51-255,Target:0;0;fuzzy_img#af2ad01ed42993c7#0", "image fuzzy hashes"),
    ("S;Engine:51-255,Target:0;0;4142(B)4344", "boundary markers"),
])
def test_valid_but_unusable_lines_are_skipped_with_a_reason(line, reason):
    sigs, skipped = logical.parse_ldb(line + "\nOk;Target:0;0;414243\n", "s.ldb")
    assert [s.name for s in sigs] == ["Ok"]
    (entry,) = skipped
    assert entry.startswith("s.ldb:1: S: ") and reason in entry


def test_skipped_signature_subsignatures_are_not_checked():
    # ClamAV reads the target description first and drops the line before its patterns.
    sigs, skipped = logical.parse_ldb("S;Engine:300-400,Target:0;0;zz\n", "t.ldb")
    assert sigs == [] and len(skipped) == 1


# -- counting ----------------------------------------------------------------------------------

def test_overlapping_matches_each_count():
    m = one("0=3", "41414141")
    assert names(m, HEAD + b"AAAAAA") == {"Sig"}  # starts 0, 1, 2
    assert names(m, HEAD + b"AAAAA") == set()


def test_expression_reads_first_operator_at_top_level_and_last_inside_a_block():
    data = HEAD + b"zzCCC"
    # 0&1|2 is 0&(1|2): false without subsignature 0
    assert names(one("0&1|2", "414243", "444546", "434343"), data) == set()
    # (0&1|2) is (0&1)|2: true
    assert names(one("(0&1|2)", "414243", "444546", "434343"), data) == {"Sig"}


def test_counted_blocks_and_distinct_subsignatures():
    m = one("(0|1)>2,2", "414243", "444546")
    assert names(m, HEAD + b"ABC ABC ABC DEF") == {"Sig"}
    assert names(m, HEAD + b"ABC ABC ABC ABC") == set()  # only one distinct subsignature
    assert names(m, HEAD + b"ABC DEF") == set()


def test_negation_matches_files_without_any_hit():
    m = one("0=0", "414243")
    assert names(m, HEAD + b"nothing here") == {"Sig"}
    assert names(m, HEAD + b"xxABCxx") == set()


def test_split_pattern_counts_every_last_part_after_a_first_part():
    m = one("0=2", "41424344*45464748")
    assert names(m, HEAD + b"ABCDxEFGHxEFGH") == {"Sig"}
    m = one("0=1", "41424344{1-2}45464748")
    assert names(m, HEAD + b"ABCDxEFGHxEFGH") == {"Sig"}


def test_offsets_limit_where_a_subsignature_may_start():
    m = one("0", "6,2:414243")
    assert names(m, b"\x00\x01\x00\x01xxABC") == {"Sig"}
    assert names(m, b"\x00\x01\x00\x01xxxxxABC") == set()
    m = one("0", "EOF-3:414243")
    assert names(m, HEAD + b"xxABC") == {"Sig"}
    assert names(m, HEAD + b"xxABCx") == set()


def test_alternatives_of_different_lengths_commit_to_the_first_that_matches():
    # ClamAV matches the part before its trie start backwards and keeps the first alternative
    # that fits ("n", a suffix of "qn"), then fails: no match.
    data = HEAD + b"xxYZqnZYWxx"
    assert names(one("0", "595a(6e|716e)5a59"), data) == set()
    assert names(one("0", "595a(716e|6e)5a59"), data) == {"Sig"}


def test_anchored_bytes():
    m = one("0=1", "4a[1-2]4b4c4d")
    assert names(m, HEAD + b"J-KLM J--KLM J---KLM") == set()  # two anchored starts
    assert names(one("0=2", "4a[1-2]4b4c4d"), HEAD + b"J-KLM J--KLM J---KLM") == {"Sig"}
    assert names(one("0", "4b4c4d[0-1]4a"), HEAD + b"KLM-J") == {"Sig"}
    both = one("0", "4a[1-2]4b4c[0-1]4d")
    assert names(both, HEAD + b"J-KL-M") == {"Sig"}
    assert names(both, HEAD + b"J-KL--M") == set()
    assert names(one("0", "4a[1-2]4b4c4d::i"), HEAD + b"j-klm") == {"Sig"}
    # A match starts after its left anchor: the offset counts from there.
    assert names(one("0", "6:4a[0-1]4b4c4d"), HEAD + b"J-KLM") == {"Sig"}
    assert names(one("0", "4:4a[0-1]4b4c4d"), HEAD + b"J-KLM") == set()


def test_unchecked_anchors():
    # ClamAV never checks a ?? or high-nibble anchored byte; a low-nibble one it does.
    assert names(one("0", "4?[1-2]4b4c4d"), HEAD + b"xxxKLM") == {"Sig"}
    assert names(one("0", "??[1-2]4b4c4d"), HEAD + b"KLM") == {"Sig"}
    assert names(one("0", "?a[1-2]4b4c4d"), HEAD + b"xxxKLM") == set()
    assert names(one("0", "?a[1-2]4b4c4d"), HEAD + b"Z-KLM") == {"Sig"}


# -- macro subsignatures -----------------------------------------------------------------------
# The .ndb lines with a $n$ offset (macro group n) come from the database's body section.
# Cases checked with clamscan 1.4.6.

def with_macros(ldb: str, ndb: str) -> logical.LogicalMatcher:
    sigs, skipped = logical.parse_ldb(ldb, "t.ldb")
    assert not skipped, skipped
    sections = logical.compile_ldb(sigs)
    sections[body.SECTION] = body.compile_body(body.parse_ndb(ndb, "m.ndb"))
    return logical.LogicalMatcher(lambda name: memoryview(sections.get(name, b"")))


MACROS = "Group.Zero:0:$0$:42424242\nGroup.One:0:$1$:43434343\n"


def test_a_macro_checks_the_previous_match_on_the_next_one():
    m = with_macros("Two;Target:0;0&1;41414141;${6-7}0$\n", MACROS)
    # One match of subsignature 0 never gets the macro checked.
    assert names(m, HEAD + b"xxAAAAxxBBBBxxxxxxxx") == set()
    # The second one checks the first: group 0 matched 6 bytes after it.
    assert names(m, HEAD + b"xxAAAAxxBBBBxxAAAAxx") == {"Two"}
    assert names(m, HEAD + b"xxAAAAxxxBBBBxAAAAxx") == {"Two"}  # 7 bytes after
    assert names(m, HEAD + b"xxAAAAxxxxBBBBxAAAAxx") == set()  # 8 bytes after
    assert names(m, HEAD + b"xxAAAAxxCCCCxxAAAAxx") == set()  # another group


def test_macro_counts_follow_clamav():
    # The check runs on each later match and once more at the end; a failed one takes the
    # previous match back.
    data = HEAD + b"xxAAAAxxBBBBxxAAAAxxxxxx"
    for expression, expected in [("0=2&1=2", True), ("0=2&1=1", False), ("0=1&1=1", False)]:
        m = with_macros(f"Sig;Target:0;{expression};41414141;${{6-7}}0$\n", MACROS)
        assert bool(names(m, data)) is expected, expression
    late = HEAD + b"xxAAAAxxxxxxxxAAAAxxBBBBxx"  # group 0 only after the second match
    m = with_macros("Sig;Target:0;0=1&1=0;41414141;${6-7}0$\n", MACROS)
    assert names(m, late) == {"Sig"}


def test_a_macro_sees_only_group_matches_reported_before():
    # "BC" ends where ClamAV reports the second "ABCD" (after "ABC"): it is seen only later.
    ndb = "Group.Five:0:$5$:4243\n"
    data = HEAD + b"xxABCDxxxxxxABCDxxxxxx"
    assert names(with_macros("Sig;Target:0;0&1;41424344;${1-1}5$\n", ndb), data) == {"Sig"}
    assert names(with_macros("Sig;Target:0;0&1;41424344;${11-11}5$\n", ndb), data) == set()


def test_a_macro_first_never_counts_and_groups_stay_in_their_target():
    data = HEAD + b"xxAAAAxxBBBBxxAAAAxx"
    m = with_macros("First;Target:0;0=0&1;${6-7}0$;41414141\n", MACROS)
    assert names(m, data) == {"First"}
    m = with_macros("Sig;Target:0;0&1;41414141;${6-7}0$\n", "Pe.Group:1:$0$:42424242\n")
    assert names(m, data) == set()


def test_macro_group_members_are_no_detections():
    sigs = body.parse_ndb(MACROS + "Real:0:*:5a5a5a5a\n", "m.ndb")
    matcher = body.BodyMatcher.from_blob(body.compile_body(sigs))
    assert matcher.count == 3
    found = matcher.match(Subject(HEAD + b"BBBB CCCC ZZZZ", 18, "binary"))
    assert found == [("Real", "m.ndb")]
    assert body.macro_patterns(body.compile_body(sigs)) == [(0, 0, "42424242"),
                                                            (0, 1, "43434343")]


# -- modifiers ---------------------------------------------------------------------------------

def test_nocase_folds_letters_only():
    m = one("0", "68656c6c6f::i")
    assert names(m, HEAD + b"xHeLLo") == {"Sig"}
    assert names(one("0", "68656c6c6f"), HEAD + b"xHeLLo") == set()


def test_wide_and_ascii():
    wide = HEAD + "hello".encode("utf-16-le")
    assert names(one("0", "68656c6c6f::w"), wide) == {"Sig"}
    assert names(one("0", "68656c6c6f::w"), HEAD + b"hello") == set()
    assert names(one("0=2", "68656c6c6f::wa"), wide + b" hello") == {"Sig"}


def test_fullword():
    m = one("0", "68656c6c6f::f")
    assert names(m, HEAD + b"say hello!") == {"Sig"}
    assert names(m, HEAD + b"sayhello") == set()
    assert names(m, HEAD + b" hellos") == set()


# -- PCRE and byte compare ---------------------------------------------------------------------

def test_pcre_runs_when_its_trigger_holds_and_counts_global_matches():
    m = one("0&1=3", "4d41524b", "0/ab[0-9]/g")
    assert names(m, HEAD + b"MARK ab1 ab2 ab3") == {"Sig"}
    assert names(m, HEAD + b"ab1 ab2 ab3") == set()  # trigger 0 absent: regex not run
    assert names(one("0&1=1", "4d41524b", "0/ab[0-9]/"), HEAD + b"MARK ab1 ab2") == {"Sig"}


def test_pcre_offset_anchors_unless_rolling():
    data = b"\x00\x01\x00\x01MARKxxab1"  # "ab1" starts at 10
    assert names(one("0&1", "4d41524b", "10:0/ab[0-9]/"), data) == {"Sig"}
    assert names(one("0&1", "4d41524b", "9:0/ab[0-9]/"), data) == set()
    assert names(one("0&1", "4d41524b", "9:0/ab[0-9]/r"), data) == {"Sig"}
    assert names(one("0&1", "4d41524b", "9,2:0/ab[0-9]/"), data) == {"Sig"}
    assert names(one("0&1", "4d41524b", "8,1:0/ab[0-9]/"), data) == set()  # past the shift
    assert names(one("0&1", "4d41524b", "8,3:0/ab[0-9]/e"), data) == set()  # cut at 8+3


def test_pcre_flags():
    data = HEAD + b"MARK AB1"
    assert names(one("0&1", "4d41524b", "0/ab[0-9]/i"), data) == {"Sig"}
    assert names(one("0&1", "4d41524b", "0/ab[0-9]/"), data) == set()


def test_byte_compare_reads_after_the_last_match_of_its_trigger():
    m = one("0&1", "4d41524b", "0(>>4#ib2#=0x1234)")
    assert names(m, HEAD + b"MARK\x12\x34") == {"Sig"}
    assert names(m, HEAD + b"MARK\x12\x35") == set()
    hexle = one("0&1", "4d41524b", "0(>>4#hle4#=0x3412)")
    assert names(hexle, HEAD + b"MARK1234") == {"Sig"}
    dec = one("0&1", "4d41524b", "0(>>4#db3#>99)")
    assert names(dec, HEAD + b"MARK100") == {"Sig"}
    assert names(dec, HEAD + b"MARK099") == set()


# -- target description ------------------------------------------------------------------------

def test_target_type_filters_files():
    m = one("0", "414243", tdb="Engine:51-255,Target:1")
    assert names(m, HEAD + b"ABC", "pe") == {"Sig"}
    assert names(m, HEAD + b"ABC", "binary") == set()


def test_file_size_container_and_intermediates():
    m = one("0", "414243", tdb="Engine:51-255,Target:0,FileSize:5-8")
    assert names(m, HEAD + b"ABC") == {"Sig"}
    assert names(m, HEAD + b"ABCxx") == set()
    top = one("0", "414243", tdb="Engine:51-255,Target:0,Container:CL_TYPE_ANY")
    assert names(top, HEAD + b"ABC") == {"Sig"}
    assert names(top, HEAD + b"ABC", ancestry=("CL_TYPE_ZIP",)) == set()
    inter = one("0", "414243", tdb="Engine:51-255,Target:0,Intermediates:CL_TYPE_ZIP>CL_TYPE_ANY")
    assert names(inter, HEAD + b"ABC", ancestry=("CL_TYPE_ZIP", "CL_TYPE_GZ")) == {"Sig"}
    assert names(inter, HEAD + b"ABC", ancestry=("CL_TYPE_MAIL", "CL_TYPE_ZIP",
                                                  "CL_TYPE_7Z")) == {"Sig"}
    assert names(inter, HEAD + b"ABC", ancestry=("CL_TYPE_GZ",)) == set()
    assert names(inter, HEAD + b"ABC", ancestry=("CL_TYPE_7Z", "CL_TYPE_GZ")) == set()


# -- the matcher -------------------------------------------------------------------------------

def test_matcher_reports_count_source_and_nothing_for_an_empty_database():
    m = build("A;Target:0;0;414243\nB;Target:0;0;444546\n")
    assert m.count == 2
    assert m.match(Subject(HEAD + b"ABC", 7, "binary")) == [("A", "t.ldb")]
    empty = logical.LogicalMatcher(lambda name: memoryview(b""))
    assert empty.count == 0 and empty.match(Subject(b"ABC", 3, "binary")) == []


def _match_in_child(matcher, queue):
    queue.put(sorted(n for n, _ in matcher.match(Subject(HEAD + b"ABC", 7, "binary"))))


def test_matcher_works_in_a_forked_worker():
    m = build("A;Target:0;0;414243\n")
    assert names(m, HEAD + b"ABC") == {"A"}  # scratch space made in the parent
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    child = ctx.Process(target=_match_in_child, args=(m, queue))
    child.start()
    assert queue.get(timeout=30) == ["A"]
    child.join(30)
