"""The pieces of logical signatures on their own: expressions, byte compares, PCRE runs."""

from __future__ import annotations

import pytest

from lmsav.scanner.signatures import bytecmp, logical_expr, pcre


@pytest.mark.parametrize("text, counts, expected", [
    ("0&1|2", [1, 0, 1], True),
    ("0&1|2", [0, 0, 1], False),  # 0&(1|2)
    ("(0&1|2)", [0, 0, 1], True),  # (0&1)|2
    ("0=2", [2], True),
    ("0=2,5", [2], True),  # ",Y" is ignored on one subsignature
    ("0>1", [1], False),
    ("0<2", [1], True),
    ("(0|1)=0", [0, 0], True),
    ("(0|1)>2", [2, 1], True),
    ("(0|1)>2,2", [3, 0], False),
    ("((0|1)>0,2|2)>0,2", [1, 1, 0], False),  # a counted block does not pass up its members
    ("((0|1)|2)>1,2", [1, 1, 0], True),
])
def test_expressions_evaluate_as_clamav(text, counts, expected):
    assert logical_expr.matches(logical_expr.parse(text), counts) is expected


@pytest.mark.parametrize("text", ["", "0&", "&0", "(0", "0)", "x", "(0|1)>", "0=x", "64"])
def test_bad_expressions(text):
    with pytest.raises(logical_expr.ExprError):
        logical_expr.parse(text)


def test_expression_helpers():
    tree = logical_expr.parse("(0|1)>2&2=0&3")
    assert logical_expr.max_id(tree) == 3
    assert logical_expr.ids(tree) == {0, 1, 2, 3}
    assert logical_expr.count_sensitive(tree) == {0, 1}


@pytest.mark.parametrize("text, value, end", [
    ("12", 12, 2), ("  -7x", -7, 4), ("0x1f", 31, 4), ("010", 8, 3), ("-010", -10, 4),
    ("", 0, 0), ("zz", 0, 0), ("99999999999999999999", (1 << 63) - 1, 20),
])
def test_strtol_reads_like_c(text, value, end):
    assert bytecmp.strtol(text, 0) == (value, end)


@pytest.mark.parametrize("sig, data, at, expected", [
    ("0(>>2#ib2#=0x4142)", b"..xxAB", 2, True),
    ("0(>>2#il2#=0x4241)", b"..xxAB", 2, True),
    ("0(<<2#ib1#=0x78)", b"..xxAB", 4, True),
    ("0(>>2#hb4#=0x12ab)", b"..xx12ab", 2, True),
    ("0(>>2#h4#=0x12ab)", b"..xx12ab", 2, False),  # no endianness: ClamAV never compares
    ("0(>>2#db3#>99,<200)", b"..xx150", 2, True),
    ("0(>>2#dbe3#=15)", b"..xx 15", 2, False),  # leading space: not exact
    ("0(>>2#db3#=15)", b"..xx 15", 2, True),
    ("0(>>2#ab4#=0x12)", b"..xx0x12", 2, True),
    ("0(>>2#ab2#=12)", b"..xx12", 2, False),  # "auto" needs three bytes
    ("0(>>0#ib1#=0x2e)", b"..xx", 0, False),  # reading at offset 0 is refused
    ("0(>>3#ib2#=1)", b"..xx", 2, False),  # past the end
])
def test_byte_compare_checks(sig, data, at, expected):
    bc = bytecmp.parse(sig)
    assert bytecmp.check(bc, data, len(data), at) is expected


@pytest.mark.skipif(bool(pcre.unavailable()), reason="libpcre2-8 missing")
def test_pcre_runs_with_clamav_semantics():
    sub = pcre.parse("0/a+b/g", 1)
    regex = pcre.compile_pattern(sub.pattern, sub.options)
    data = b"xaab ab aaab"
    assert pcre.run(regex, sub, data, len(data), None, True) == [1, 5, 8]
    once = pcre.parse("0/a+b/", 1)
    assert pcre.run(regex, once, data, len(data), None, True) == [1]
    ungreedy = pcre.parse("0/a+/U", 1)
    found = pcre.compile_pattern(ungreedy.pattern, ungreedy.options).search(b"aaa", 0, False)
    assert found == (0, 1)
    with pytest.raises(pcre.PcreError):
        pcre.parse("0/(?<n>a/", 1)


def test_pcre_split_keeps_colons_and_slashes_of_the_regex():
    assert pcre.split("12,3:0&1/a:b/c/gi") == ("12,3", "0&1", "a:b/c", "gi")
    assert pcre.split("0/x/") == ("*", "0", "x", "")
