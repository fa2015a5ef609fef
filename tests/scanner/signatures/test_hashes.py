"""Hash signatures (.hdb/.hsb/.fp/.sfp): parsing, the size gate and lookups."""

import hashlib

import pytest

from lmsav.scanner.signatures.errors import SignatureError
from lmsav.scanner.signatures.hashes import (
    FUNCTIONALITY_LEVEL, HashMatcher, compile_hashes, parse_hash_file,
)


def matcher(lines: list[str], wildcard: bool = True) -> HashMatcher:
    sigs = parse_hash_file("\n".join(lines), "t.hsb", allow_wildcard=wildcard)
    sections = compile_hashes(sigs, "hash")
    return HashMatcher(lambda name: memoryview(sections.get(name, b"")), "hash")


def test_md5_sha1_sha256_match_by_size_and_digest():
    a, b, c = b"alpha" * 3, b"beta" * 10, b"gamma"
    m = matcher([
        f"{hashlib.md5(a).hexdigest()}:{len(a)}:Sig.Md5",
        f"{hashlib.sha1(b).hexdigest()}:{len(b)}:Sig.Sha1",
        f"{hashlib.sha256(c).hexdigest()}:{len(c)}:Sig.Sha256",
    ])
    assert m.count == 3
    assert m.match(a, len(a)) == [("Sig.Md5", "t.hsb")]
    assert m.match(b, len(b)) == [("Sig.Sha1", "t.hsb")]
    assert m.match(c, len(c)) == [("Sig.Sha256", "t.hsb")]
    assert m.match(b"alphb" * 3, 15) == []


def test_size_gate_only_admits_sizes_some_signature_names():
    m = matcher([f"{hashlib.md5(b'x' * n).hexdigest()}:{n}:S{n}" for n in (10, 500, 70000)])
    assert [m.wants(n) for n in (9, 10, 11, 500, 70000, 70001)] == [
        False, True, False, True, True, False]


def test_many_signatures_of_one_size_are_all_found():
    lines = [f"{hashlib.md5(str(i).encode().rjust(8)).hexdigest()}:8:S{i}" for i in range(2000)]
    m = matcher(lines)
    for i in (0, 1, 999, 1999):
        data = str(i).encode().rjust(8)
        assert m.match(data, 8) == [(f"S{i}", "t.hsb")]


def test_wildcard_size_matches_any_size_and_opens_the_gate():
    data = b"wildcard body"
    m = matcher([f"{hashlib.sha256(data).hexdigest()}:*:Sig.Any:73"])
    assert m.wants(1) and m.wants(12345)
    assert m.match(data, len(data)) == [("Sig.Any", "t.hsb")]


def test_signature_for_a_newer_engine_is_skipped():
    lines = [f"{'a' * 32}:5:Old:{FUNCTIONALITY_LEVEL}", f"{'b' * 32}:5:New:{FUNCTIONALITY_LEVEL + 1}"]
    assert [s.name for s in parse_hash_file("\n".join(lines), "t.hdb", False)] == ["Old"]


def test_empty_tables_match_nothing():
    m = matcher([])
    assert m.count == 0 and not m.wants(10) and m.match(b"x", 1) == []


@pytest.mark.parametrize("line, message", [
    ("abc:5:Name", "bad hash 'abc'"),
    (f"{'a' * 32}:five:Name", "bad size 'five'"),
    (f"{'a' * 32}:5", "expected HASH:SIZE:NAME"),
    (f"{'a' * 32}:5:", "empty signature name"),
    (f"{'g' * 32}:5:Name", "need 32, 40 or 64 hex digits"),
    (f"{'a' * 32}:5:Name:x", "bad functionality level"),
])
def test_errors_name_file_line_and_problem(line, message):
    with pytest.raises(SignatureError) as err:
        parse_hash_file(f"# comment\n{line}\n", "bad.hdb", allow_wildcard=False)
    assert str(err.value).startswith("bad.hdb:2: ")
    assert message in str(err.value)


def test_wildcard_size_rejected_in_hdb():
    with pytest.raises(SignatureError, match="only allowed in .hsb/.sfp"):
        parse_hash_file(f"{'a' * 32}:*:Name", "x.hdb", allow_wildcard=False)
