"""yara-x scanners are bound to the thread that made them: the matcher must scan from any
thread and be freed by any thread without yara-x complaining (it prints "unsendable" and leaks
the scanner when one is dropped on another thread)."""

from __future__ import annotations

import subprocess
import sys
import textwrap

SCRIPT = textwrap.dedent('''
    import gc, threading
    from lmsav.scanner.signatures.yara import YaraMatcher, compile_rules

    blob = compile_rules([("t.yar", 'rule hit { strings: $a = "needle" condition: $a }')])
    found = []

    def scan(matcher, release):
        found.append(matcher.match(b"a needle here"))
        if release:
            matcher.release()

    for _ in range(20):
        # made and used on one thread, released there, freed on another (the daemon's reload)
        m = YaraMatcher(blob)
        t = threading.Thread(target=scan, args=(m, True)); t.start(); t.join()
        del m
        gc.collect()
        # kept by the main thread, used from another thread too, freed on the main thread
        m = YaraMatcher(blob)
        scan(m, False)
        t = threading.Thread(target=scan, args=(m, False)); t.start(); t.join()
        del m
        gc.collect()
    assert all(f == [("YARA.hit", "t.yar")] for f in found), found
    print("ok", len(found))
''')


def test_matcher_scans_from_any_thread_and_is_freed_quietly():
    run = subprocess.run([sys.executable, "-c", SCRIPT], check=False, capture_output=True,
                         text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert run.stdout.split() == ["ok", "60"]
    assert "unsendable" not in run.stderr and "Error" not in run.stderr, run.stderr


ENDED_OWNER = textwrap.dedent('''
    import threading
    from lmsav.scanner.signatures.yara import YaraMatcher, compile_rules

    blob = compile_rules([("t.yar", 'rule hit { strings: $a = "needle" condition: $a }')])
    m = YaraMatcher(blob)
    found, idents = [], set()

    def scan():
        idents.add(threading.get_ident())
        found.append(m.match(b"a needle here"))

    # The first thread makes the kept scanner and ends without releasing it; the next ones
    # (one at a time, so Python hands them the same ident again) must not use it.
    for _ in range(30):
        t = threading.Thread(target=scan); t.start(); t.join()
    assert all(f == [("YARA.hit", "t.yar")] for f in found), found
    print("ok", len(found), len(idents))
''')


def test_a_new_thread_with_an_ended_owners_ident_does_not_use_its_scanner():
    run = subprocess.run([sys.executable, "-c", ENDED_OWNER], check=False, capture_output=True,
                         text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    ok, scanned, idents = run.stdout.split()
    assert (ok, scanned) == ("ok", "30")
    assert "unsendable" not in run.stderr, run.stderr
