"""lmsav's YARA against Debian's ``yara``: the same rules over the same files match the same
rules per file, external variables included (given to ``yara`` with ``-d``)."""

from __future__ import annotations

import io
import os
import pwd
import shutil
import subprocess
import zipfile
from pathlib import Path

import pytest

from lmsav.scanner.engine import Engine
from lmsav.scanner.signatures.database import Database
from tests.conftest import write_db
from tests.scanner.signatures.test_yara_rulesets import pe_file

pytestmark = [pytest.mark.integration,
              pytest.mark.skipif(shutil.which("yara") is None, reason="yara is not installed")]

RULES = {
    "strings.yar": r'''
rule ascii_wide_nocase { strings: $a = "Invoke-Payload" ascii wide nocase condition: $a }
rule fullword_only { strings: $a = "cmd" fullword condition: $a }
rule two_of_three { strings: $a = "alpha" $b = "beta" $c = "gamma" condition: 2 of them }
rule counted { strings: $a = "zz" condition: #a >= 3 }
rule at_start { strings: $a = "%PDF" condition: $a at 0 }
''',
    "hex.yar": r'''
rule hex_jump { strings: $h = { 4D 5A [2-40] 50 45 00 00 } condition: $h }
rule hex_wild { strings: $h = { 6C 6D ?? 61 76 ( 21 | 3F ) } condition: $h }
rule hex_not_mz { strings: $h = { DE AD BE EF } condition: $h and uint16(0) != 0x5A4D }
''',
    "regex.yar": r'''
rule url_regex { strings: $r = /https?:\/\/[a-z0-9.-]{3,40}\/(gate|panel)\.php/ nocase condition: $r }
rule b64_regex { strings: $r = /[A-Za-z0-9+\/]{40,}={0,2}/ condition: $r and filesize < 20KB }
''',
    "conditions.yar": r'''
rule small_mz { condition: uint16(0) == 0x5A4D and filesize < 4KB }
rule big_file { condition: filesize > 100KB }
rule elf_magic { condition: uint32(0) == 0x464C457F }
''',
    "modules.yar": r'''
import "pe"
import "math"
import "hash"
import "elf"
rule pe_i386 { condition: pe.is_pe and pe.machine == pe.MACHINE_I386 and pe.number_of_sections == 1 }
rule pe_entry { condition: pe.entry_point == 0x200 }
rule high_entropy { condition: filesize > 2000 and math.entropy(0, filesize) > 7.0 }
rule md5_of_hello { condition: hash.md5(0, filesize) == "5d41402abc4b2a76b9719d911017c592" }
rule elf_any { condition: elf.number_of_sections > 0 }
''',
    "externals.yar": r'''
rule ext_exe { condition: extension == ".exe" }
rule name_is { condition: filename == "hello.txt" }
rule path_has { condition: filepath contains "corpus" and filetype == "text" }
rule owned_by_me { condition: owner == "OWNER" and extension == ".html" }
''',
}


def corpus(directory):
    directory.mkdir()
    zbuf = io.BytesIO()
    with zipfile.ZipFile(zbuf, "w") as zf:
        zf.writestr("inner.txt", b"alpha beta")
    files = {
        "app.exe": pe_file(b"run cmd now Invoke-Payload"),
        "wide.bin": "xx INVOKE-payload yy".encode("utf-16-le") + b"\xde\xad\xbe\xef",
        "hello.txt": b"hello",
        "words.txt": b"alpha gamma zz zz zz cmd.exe notcmd\n",
        "page.html": b"<html><a href='http://evil.example.com/gate.php'>x</a></html>\n",
        "b64.eml": b"From: a@b\n\n" + b"QUJD" * 30 + b"==\n",
        "doc.pdf": b"%PDF-1.4\n" + b"lm\x00av!" + b"\n%%EOF\n",
        "noise.dat": os.urandom(8192),
        "large.dat": b"\x00-" * (75 * 1024),
        "bundle.zip": zbuf.getvalue(),
        "true.elf": Path("/bin/true").read_bytes(),
    }
    for name, data in files.items():
        (directory / name).write_bytes(data)
    return sorted(files)


def yara_matches(rule_files, path, defines: dict[str, str]) -> set[str]:
    args = ["yara", "-w"]
    for key, value in defines.items():
        args += ["-d", f"{key}={value}"]
    run = subprocess.run(args + [str(p) for p in rule_files] + [str(path)],
                         check=False, capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    return {line.split(" ", 1)[0] for line in run.stdout.splitlines() if line.strip()}


def test_same_matches_per_file_as_yara(tmp_path):
    owner = pwd.getpwuid(os.getuid()).pw_name
    rules = {k: v.replace("OWNER", owner) for k, v in RULES.items()}
    db_dir = write_db(tmp_path / "db", rules)
    files_dir = tmp_path / "corpus"
    names = corpus(files_dir)
    db = Database.load(db_dir)
    assert db.not_used == [] and db.skipped_lines == []
    engine = Engine(db)
    compared = 0
    for name in names:
        path = files_dir / name
        verdict = engine.scan_path(str(path))
        ours = {t.name.removeprefix("YARA.") for t in verdict.root.threats}
        dot = name.rfind(".")
        defines = {"filename": name, "filepath": str(files_dir),
                   "extension": name[dot:].lower(), "filetype": verdict.root.type,
                   "owner": owner}
        theirs = yara_matches([db_dir / f for f in sorted(rules)], path, defines)
        assert ours == theirs, name
        compared += bool(theirs)
    assert compared >= 8  # most files match something: the comparison is not vacuous
