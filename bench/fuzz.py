#!/usr/bin/env python3
"""A long fuzz campaign: mutated seeds of tests/fuzz/corpus through the engine.

Usage: bench/fuzz.py [--examples N | --seconds T] [--failures DIR] [--seed N]
                     [--bound-seconds S] [--bound-rss MB] [--workdir DIR]

Inputs come from the same Hypothesis strategies as the short campaign of the test suite
(tests/fuzz/mutations.py) and each is held to the same rules (tests/fuzz/harness.py): a verdict,
no internal error, bounded time and memory, no temp file left, nothing written outside the scan's
temp dir. Unlike the test, the campaign goes on after a failure: each failing input is saved as
DIR/<digest>.bin with DIR/<digest>.txt (its recipe and what it broke), and the summary groups
failures by kind. While an input is scanned it is also in DIR/in-progress.bin, so an input that
hangs inside C code (the process is then stopped with a traceback after 4x the time bound) is
not lost. A failing input, once the bug is fixed, joins tests/fuzz/regressions/ (the test suite
runs every file there through the same rules).

Printed: inputs, seconds, inputs per second, failures; exit status 1 when any failure was found.
"""

from __future__ import annotations

import argparse
import faulthandler
import hashlib
import os
import re
import shutil
import sys
import tempfile
import time
import traceback
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from hypothesis import HealthCheck, Phase, Verbosity, given, settings
from hypothesis import seed as hypothesis_seed
from hypothesis import strategies as st

from tests.fuzz.harness import Bounds, FuzzHarness, Violation
from tests.fuzz.mutations import fuzz_inputs, load_corpus

PROGRESS_EVERY = 30.0  # seconds between progress lines
KEEP_PER_KIND = 20  # saved inputs per kind of failure


class _Done(BaseException):
    """Ends the campaign from inside Hypothesis without counting as a failure."""


class Campaign:
    def __init__(self, harness: FuzzHarness, failures: Path, deadline: float | None):
        self.harness = harness
        self.failures = failures
        self.deadline = deadline
        self.inputs = 0
        self.kinds: Counter[str] = Counter()
        self.started = self.last_report = time.monotonic()
        self.hang_after = 4 * harness.bounds.seconds

    def run_one(self, fuzz_input, via_path: bool) -> None:
        now = time.monotonic()
        if self.deadline is not None and now >= self.deadline:
            raise _Done()
        if now - self.last_report >= PROGRESS_EVERY:
            self.last_report = now
            print(f"  {self.inputs} inputs, {self.inputs / (now - self.started):.0f}/s, "
                  f"{sum(self.kinds.values())} failures", flush=True)
        self.inputs += 1
        (self.failures / "in-progress.bin").write_bytes(fuzz_input.data)
        faulthandler.dump_traceback_later(self.hang_after, exit=True)
        try:
            self.harness.check(fuzz_input.data, via_path=via_path)
        except Violation as err:
            self.save(fuzz_input, via_path, err)
        finally:
            faulthandler.cancel_dump_traceback_later()

    def save(self, fuzz_input, via_path: bool, err: Violation) -> None:
        kind = re.sub(r"\d+", "N", str(err).splitlines()[0])[:160]
        self.kinds[kind] += 1
        if self.kinds[kind] > KEEP_PER_KIND:
            return
        digest = hashlib.sha256(fuzz_input.data).hexdigest()[:16]
        (self.failures / f"{digest}.bin").write_bytes(fuzz_input.data)
        (self.failures / f"{digest}.txt").write_text(
            f"recipe: {fuzz_input.recipe}\nscanned from: {'a file' if via_path else 'memory'}\n"
            + "".join(traceback.format_exception(err)))


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    size = p.add_mutually_exclusive_group()
    size.add_argument("--examples", type=int, help="inputs to run (default 10000)")
    size.add_argument("--seconds", type=float, help="run for this long instead")
    p.add_argument("--failures", type=Path, default=Path("fuzz-failures"),
                   help="directory for failing inputs (default ./fuzz-failures)")
    p.add_argument("--seed", type=int, help="Hypothesis seed (default: random)")
    p.add_argument("--bound-seconds", type=float, default=Bounds.seconds,
                   help="wall time allowed per input")
    p.add_argument("--bound-rss", type=int, default=Bounds.rss_growth >> 20,
                   help="MiB of peak RSS growth allowed per input")
    p.add_argument("--workdir", type=Path, help="scratch directory (default: a new temp dir)")
    args = p.parse_args(argv)
    if args.examples is None and args.seconds is None:
        args.examples = 10000
    if (args.examples is not None and args.examples < 1) or (
            args.seconds is not None and args.seconds <= 0):
        p.error("--examples and --seconds must be positive")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    args.failures.mkdir(parents=True, exist_ok=True)
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="lmsav-fuzz-"))
    # A private $TMPDIR: the harness checks it is left as it was found.
    private_tmp = workdir / "tmp"
    private_tmp.mkdir(parents=True, exist_ok=True)
    os.environ["TMPDIR"] = tempfile.tempdir = str(private_tmp)
    corpus = load_corpus()
    harness = FuzzHarness(workdir, Bounds(args.bound_seconds, args.bound_rss << 20))
    harness.warm_up(corpus)
    deadline = time.monotonic() + args.seconds if args.seconds else None
    campaign = Campaign(harness, args.failures, deadline)

    @settings(max_examples=args.examples or 10**9, phases=[Phase.generate], database=None,
              verbosity=Verbosity.quiet,
              deadline=None, suppress_health_check=list(HealthCheck))
    @given(fuzz_input=fuzz_inputs(corpus), via_path=st.booleans())
    def fuzz(fuzz_input, via_path):
        campaign.run_one(fuzz_input, via_path)

    if args.seed is not None:
        fuzz = hypothesis_seed(args.seed)(fuzz)
    print(f"fuzzing {len(corpus)} seeds: "
          + (f"{args.examples} inputs" if args.examples else f"{args.seconds:g} s"), flush=True)
    try:
        fuzz()
    except _Done:
        pass
    elapsed = time.monotonic() - campaign.started
    (args.failures / "in-progress.bin").unlink(missing_ok=True)
    if not args.workdir:
        shutil.rmtree(workdir, ignore_errors=True)
    failures = sum(campaign.kinds.values())
    print(f"{campaign.inputs} inputs in {elapsed:.1f} s: {campaign.inputs / elapsed:.0f} inputs/s, "
          f"{failures} failures" + (f", saved in {args.failures}" if failures else ""))
    for kind, count in campaign.kinds.most_common():
        print(f"  {count:6}  {kind}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
