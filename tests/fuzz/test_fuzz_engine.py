"""Mutated seeds through the engine: a verdict for every input, in bounded time and memory, with
no temp file left and nothing written outside the scan's temp dir.

The campaign here is short and derandomized (the same inputs on every run); bench/fuzz.py runs
long ones. The harness's own rules are tested first, with handlers that break each of them.
"""

from __future__ import annotations

import os
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lmsav.scanner import containers
from lmsav.scanner.objects import Child, Status
from tests.fuzz.harness import Bounds, FuzzHarness, Violation
from tests.fuzz.mutations import CORPUS_DIR, fuzz_inputs, load_corpus

CORPUS = load_corpus()
FORMATS = {"zip", "7z", "rar", "tar", "gzip", "bzip2", "xz", "zstd", "cab", "arj", "lha", "cpio",
           "ar", "compress", "szdd", "chm", "ole2", "pdf", "html", "rtf", "mail", "mbox",
           "uuencode", "textenc", "tnef", "binhex", "sis", "sfx"}


@pytest.fixture(scope="module")
def harness(tmp_path_factory) -> FuzzHarness:
    h = FuzzHarness(tmp_path_factory.mktemp("fuzz"))
    h.warm_up(CORPUS)
    return h


# -- the corpus -----------------------------------------------------------------------------------

def test_corpus_has_a_seed_per_format_and_stays_small():
    assert {name.split("/")[0] for name in CORPUS} >= FORMATS
    assert sum(map(len, CORPUS.values())) < 1 << 20
    assert all(p.parent.parent == CORPUS_DIR for p in CORPUS_DIR.rglob("*") if p.is_file())


def test_every_seed_is_clean_and_opened_by_its_handler(harness):
    for name, data in CORPUS.items():
        verdict = harness.check(data, name=name)
        assert verdict.status == Status.CLEAN, (name, verdict.root.reason)
        if name != "html/fragment.html":  # plain text to today's sniffer: no members
            assert verdict.root.children, name


# -- the harness's rules bite ---------------------------------------------------------------------

class _Misbehaving:
    """A zip "handler" that does one wrong thing, then yields a member."""

    types = frozenset({"zip"})

    def __init__(self, act):
        self.act = act

    def explode(self, obj, ctx):
        self.act(ctx)
        yield Child("member", data=b"x")


@pytest.fixture
def misbehaving(harness, monkeypatch):
    def install(act):
        containers.load_all()
        monkeypatch.setitem(containers.HANDLERS, "zip", _Misbehaving(act))
        return harness.check(CORPUS["zip/deflate.zip"])
    return install


def test_a_write_outside_the_temp_dir_is_caught(misbehaving, tmp_path):
    with pytest.raises(Violation, match="wrote outside the temp dir: open for writing"):
        misbehaving(lambda ctx: (tmp_path / "dropped").write_bytes(b"x"))


def test_a_file_left_in_the_working_directory_is_caught(misbehaving):
    with pytest.raises(Violation, match=r"cwd: \['left'\] appeared"):
        misbehaving(lambda ctx: os.system("touch left"))


def test_a_temp_file_left_behind_is_caught(misbehaving, harness):
    def leave(ctx):
        path = harness.scan_tmp / "left"
        path.write_bytes(b"x")

    with pytest.raises(Violation, match=r"scan-tmp: \['left'\] appeared"):
        misbehaving(leave)
    (harness.scan_tmp / "left").unlink()


def test_a_handler_crash_is_caught(misbehaving):
    with pytest.raises(Violation, match="internal error: ZeroDivisionError"):
        misbehaving(lambda ctx: 1 / 0)


def test_a_slow_input_is_caught(misbehaving, harness, monkeypatch):
    monkeypatch.setattr(harness, "bounds", Bounds(seconds=0.2))
    with pytest.raises(Violation, match=r"took 0\.[3-9]\d s, bound 0\.2 s"):
        misbehaving(lambda ctx: time.sleep(0.3))


def test_a_hang_is_interrupted(misbehaving, harness, monkeypatch):
    monkeypatch.setattr(harness, "bounds", Bounds(seconds=0.05))

    def hang(ctx):
        while True:
            time.sleep(0.01)

    with pytest.raises(Violation, match="no verdict after 0.1 s"):
        misbehaving(hang)


def test_memory_growth_is_caught(misbehaving, harness, monkeypatch):
    monkeypatch.setattr(harness, "bounds", Bounds(rss_growth=32 << 20))
    with pytest.raises(Violation, match="peak RSS grew"):
        misbehaving(lambda ctx: bytearray(b"\1" * (64 << 20)))


# -- inputs fuzzing found ---------------------------------------------------------------------------

REGRESSIONS = sorted((CORPUS_DIR.parent / "regressions").glob("*.bin"))


@pytest.mark.parametrize("path", REGRESSIONS, ids=lambda p: p.stem)
@pytest.mark.parametrize("via_path", [False, True], ids=["memory", "file"])
def test_inputs_fuzzing_found_get_a_verdict_within_bounds(harness, path, via_path):
    harness.check(path.read_bytes(), via_path=via_path, name=path.name)


# -- the campaign ---------------------------------------------------------------------------------

@pytest.mark.integration
@settings(max_examples=500, derandomize=True, database=None, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(fuzz_input=fuzz_inputs(CORPUS), via_path=st.booleans())
def test_mutated_seeds_always_get_a_verdict_within_bounds(harness, fuzz_input, via_path):
    harness.check(fuzz_input.data, via_path=via_path)
