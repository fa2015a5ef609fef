"""Hash signatures (.hdb/.hsb/.fp/.sfp): parsing, the size gate and lookups."""

import hashlib

import pytest

from lmsav.scanner.signatures import hashes
from lmsav.scanner.signatures.errors import SignatureError
from lmsav.scanner.signatures.hashes import (
    FUNCTIONALITY_LEVEL,
    HASH_FIRST,
    SIZE_FIRST,
    HashMatcher,
    HashTableBuilder,
    compile_hash_columns,
    compile_hashes,
    parse_hash_columns,
    parse_hash_file,
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


# -- building from files (columnar parser) -----------------------------------------------------

def built(files: dict[str, tuple[str, bool]], tmp_path, layout=HASH_FIRST) -> HashTableBuilder:
    builder = HashTableBuilder("hash")
    for name, (text, wildcard) in files.items():
        path = tmp_path / name
        path.write_text(text, newline="")
        builder.add_file(path, name, allow_wildcard=wildcard, layout=layout)
    return builder


def as_matcher(builder: HashTableBuilder) -> HashMatcher:
    sections = builder.sections()
    return HashMatcher(lambda name: memoryview(sections.get(name, b"")), "hash")


def test_files_with_odd_lines_match_like_the_line_parser(tmp_path):
    samples = [b"one" * 7, b"two" * 11, b"three" * 13, b"four" * 17, b"five" * 19, b"six"]
    lines = [
        f"{hashlib.md5(samples[0]).hexdigest()}:{len(samples[0])}:Plain.Md5",
        f"{hashlib.sha1(samples[1]).hexdigest().upper()}:{len(samples[1])}:Upper.Sha1\r",
        "# a comment: with colons",
        "",
        f"  {hashlib.sha256(samples[2]).hexdigest()} : {len(samples[2])} : Spaced.Sha256 ",
        f"{hashlib.sha256(samples[3]).hexdigest()}:*:Wild.Sha256:73",
        f"{hashlib.md5(samples[4]).hexdigest()}:{len(samples[4])}:Level.Md5:73:255",
        f"{hashlib.md5(samples[5]).hexdigest()}:{len(samples[5])}:Future.Md5:{FUNCTIONALITY_LEVEL + 9}",
    ]
    text = "\n".join(lines)  # no final newline
    builder = built({"mixed.hsb": (text, True)}, tmp_path)
    m = as_matcher(builder)
    assert builder.count == m.count == len(parse_hash_file(text, "mixed.hsb", True)) == 5
    expect = ["Plain.Md5", "Upper.Sha1", "Spaced.Sha256", "Wild.Sha256", "Level.Md5"]
    for data, name in zip(samples, expect):
        assert m.match(data, len(data)) == [(name, "mixed.hsb")]
    assert m.match(samples[5], len(samples[5])) == []
    assert builder.skipped == [
        (f"mixed.hsb:8: Future.Md5: needs engine level {FUNCTIONALITY_LEVEL + 9} "
        f"(lmsav: {FUNCTIONALITY_LEVEL})")]


def test_each_file_reports_its_own_name(tmp_path):
    a, b = b"from a", b"from b"
    builder = built({
        "a.hdb": (f"{hashlib.md5(a).hexdigest()}:{len(a)}:Sig.A\n", False),
        "empty.hdb": ("# nothing here\n", False),
        "b.hsb": (f"{hashlib.sha256(b).hexdigest()}:{len(b)}:Sig.B\n", True),
    }, tmp_path)
    m = as_matcher(builder)
    assert m.match(a, len(a)) == [("Sig.A", "a.hdb")]
    assert m.match(b, len(b)) == [("Sig.B", "b.hsb")]


def test_large_file_read_in_blocks_finds_every_signature(tmp_path, monkeypatch):
    monkeypatch.setattr(hashes, "BLOCK", 256)  # many blocks, lines cut at block edges
    datas = [f"file {i}".encode() for i in range(3000)]
    text = "".join(f"{hashlib.md5(d).hexdigest()}:{len(d)}:S{i}\n" for i, d in enumerate(datas))
    m = as_matcher(built({"big.hdb": (text, False)}, tmp_path))
    assert m.count == 3000
    for i in (0, 1, 1234, 2999):
        assert m.match(datas[i], len(datas[i])) == [(f"S{i}", "big.hdb")]


def test_error_in_a_later_block_names_its_line(tmp_path, monkeypatch):
    monkeypatch.setattr(hashes, "BLOCK", 128)
    good = [f"{i:032x}:{i + 1}:S{i}" for i in range(50)]
    text = "\n".join(good[:40] + [f"{'a' * 32}:12x:Broken"] + good[40:]) + "\n"
    with pytest.raises(SignatureError) as err:
        built({"bad.hdb": (text, False)}, tmp_path)
    assert str(err.value).startswith("bad.hdb:41: bad size '12x'")


def test_wildcard_size_rejected_in_hdb_file(tmp_path):
    with pytest.raises(SignatureError, match=r"^x.hdb:1: size '\*' is only allowed"):
        built({"x.hdb": (f"{'a' * 32}:*:Name\n", False)}, tmp_path)


def test_section_hashes_put_the_size_first(tmp_path):
    section = b"\x90" * 512
    text = (f"{len(section)}:{hashlib.md5(section).hexdigest()}:Sect.Md5\n"
            f"*:{hashlib.sha256(section).hexdigest()}:Sect.Sha256:73\n")
    m = as_matcher(built({"s.msb": (text, True)}, tmp_path, layout=SIZE_FIRST))
    assert m.match(section, len(section)) == [("Sect.Md5", "s.msb"), ("Sect.Sha256", "s.msb")]
    with pytest.raises(SignatureError, match="expected SIZE:HASH:NAME"):
        built({"t.mdb": ("512\n", False)}, tmp_path, layout=SIZE_FIRST)


def test_columns_of_several_files_compile_together():
    a, b = b"first file", b"second file"
    part_a, skipped_a = parse_hash_columns(
        f"{hashlib.md5(a).hexdigest()}:{len(a)}:Sig.A\n{'c' * 32}:5:New:{FUNCTIONALITY_LEVEL + 1}\n",
        "a.hdb", allow_wildcard=False)
    part_b, skipped_b = parse_hash_columns(
        f"{hashlib.sha256(b).hexdigest()}:*:Sig.B:73\n".encode(), "b.hsb", allow_wildcard=True)
    assert (len(part_a), len(part_b)) == (1, 1)
    assert skipped_a == [(f"a.hdb:2: New: needs engine level {FUNCTIONALITY_LEVEL + 1} "
                         f"(lmsav: {FUNCTIONALITY_LEVEL})")] and skipped_b == []
    sections = compile_hash_columns([part_a, part_b], "hash")
    m = HashMatcher(lambda name: memoryview(sections.get(name, b"")), "hash")
    assert m.count == 2
    assert m.match(a, len(a)) == [("Sig.A", "a.hdb")]
    assert m.match(b, len(b)) == [("Sig.B", "b.hsb")]


def test_sizes_spread_over_many_fence_blocks_are_all_found(monkeypatch):
    monkeypatch.setattr(hashes, "FENCE", 4)  # runs of one size cross block edges
    datas = [bytes([i % 251]) * (1 + i // 7) for i in range(700)]  # 7 signatures per size
    m = matcher([f"{hashlib.md5(d).hexdigest()}:{len(d)}:S{i}" for i, d in enumerate(datas)])
    assert m.tables[0][1].fence is not None
    for i, d in enumerate(datas):
        assert m.match(d, len(d)) == [(f"S{i}", "t.hsb")]
    assert [m.wants(n) for n in (0, 1, 50, 100, 101)] == [False, True, True, True, False]
