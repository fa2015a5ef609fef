"""Differential test: the same .cdb rules over the same archives through clamscan and lmsav.

Archives are built here with the real tools (zip, 7z, tar, cpio, gcab, arj); random rules mix
container types, name patterns, exact sizes and ranges, the encryption flag and positions.
clamscan runs with --allmatch so every rule that matches shows; lmsav's side is the archive
handler's member metadata through ContainerMetaMatcher, with the container typed as ClamAV
types it. Each archive must be reported with exactly the same rule names.

ClamAV reads .cdb rules for zip, RAR, ARJ, 7z, cab, CHM, tar, cpio, ISO 9660, LHA, EGG,
InstallShield and mail attachments; nothing else is checked (gzip, OLE2, PDF … members carry no
metadata). This ClamAV has no unrar library, so RAR is covered by test_containermeta.py alone.
"""

from __future__ import annotations

import random
import re
import shutil
import subprocess
import zipfile
from dataclasses import dataclass

import pytest

from lmsav.scanner.containers import handler_for
from lmsav.scanner.filetype import sniff
from lmsav.scanner.limits import Context, Limits
from lmsav.scanner.objects import ScanObject
from lmsav.scanner.signatures.clamav_types import container_type
from lmsav.scanner.signatures.containermeta import (
    ContainerMetaMatcher,
    compile_cdb,
    parse_cdb,
)
from lmsav.scanner.signatures.subject import MemberMeta

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(shutil.which("clamscan") is None, reason="clamscan not installed"),
]

MEMBERS = {
    "readme.txt": b"hello world\n" * 3,
    "docs/Invoice 2024.exe": b"MZ" + random.Random(1).randbytes(500),
    "data.bin": random.Random(2).randbytes(300),
    "notes/empty.txt": b"",
}
TYPES = ["*", "CL_TYPE_ZIP", "CL_TYPE_7Z", "CL_TYPE_POSIX_TAR", "CL_TYPE_CPIO_NEWC",
         "CL_TYPE_CPIO_ODC", "CL_TYPE_MSCAB", "CL_TYPE_ARJ", "CL_TYPE_ISO9660", "CL_TYPE_RAR",
         "CL_TYPE_MAIL"]
NAMES = [r"\.exe$", r"(?i)invoice", r"^readme", r"\.txt$", r"docs/", r"\\", r"^data\.bin$",
         r"[0-9]{4}", r"empty", r"(?i)^INVOICE", r" ", r"^notes/empty\.txt$", r"x", r"\d",
         r"\<2024\>", r"[.]bin", r"e{2,}|t{2}", r"^[^/]*$"]
SIZES = ["0", "36", "502", "300", "0-100", "100-0", "400-600", "1-0", "0-35", "37-0"]


@dataclass
class Seen:
    member: MemberMeta
    container: str
    container_size: int


def _run(cmd, cwd, **kw):
    subprocess.run(cmd, cwd=cwd, check=True, stdout=subprocess.DEVNULL, **kw)


@pytest.fixture(scope="module")
def archives(tmp_path_factory) -> dict[str, bytes]:
    """name -> content of archives holding MEMBERS, one per tool found."""
    src = tmp_path_factory.mktemp("members")
    for name, data in MEMBERS.items():
        (src / name).parent.mkdir(parents=True, exist_ok=True)
        (src / name).write_bytes(data)
    files = list(MEMBERS)
    out = tmp_path_factory.mktemp("archives")
    with zipfile.ZipFile(out / "deflated.zip", "w", zipfile.ZIP_DEFLATED) as zf:
        for name in files:
            zf.writestr(name, MEMBERS[name])
    with zipfile.ZipFile(out / "stored.zip", "w", zipfile.ZIP_STORED) as zf:
        for name in reversed(files):
            zf.writestr(name, MEMBERS[name])
    tools = {
        "locked.zip": ["zip", "-q", "-P", "pw", str(out / "locked.zip"), *files],
        "plain.7z": ["7z", "a", "-bd", str(out / "plain.7z"), *files],
        "locked.7z": ["7z", "a", "-bd", "-ppw", str(out / "locked.7z"), *files],
        "plain.tar": ["tar", "cf", str(out / "plain.tar"), *files],
        "plain.cab": ["gcab", "-c", str(out / "plain.cab"), *files],
        "plain.arj": ["arj", "a", str(out / "plain.arj"), *files],
        "plain.iso": ["mkisofs", "-quiet", "-o", str(out / "plain.iso"), "."],
        "joliet.iso": ["mkisofs", "-quiet", "-R", "-J", "-o", str(out / "joliet.iso"), "."],
    }
    for name, cmd in tools.items():
        if shutil.which(cmd[0]):
            _run(cmd, src)
    if shutil.which("cpio"):
        for fmt in ("newc", "odc"):
            with open(out / f"{fmt}.cpio", "wb") as sink:
                subprocess.run(["cpio", "-o", "-H", fmt, "--quiet"], cwd=src, check=True,
                               input="\n".join(files).encode() + b"\n", stdout=sink)
    return {p.name: p.read_bytes() for p in sorted(out.iterdir())}


def _random_rules(rnd: random.Random, count: int, sizes: list[int]) -> str:
    """Rules constraining a few fields each (most are "*"), so many match something."""

    def maybe(choices: list[str]) -> str:
        return rnd.choice(choices) if rnd.random() < 0.35 else "*"

    lines = []
    for n in range(count):
        csize = maybe([str(rnd.choice(sizes)), f"{min(sizes) - 1}-{max(sizes) + 1}", "5000-0"])
        fields = [
            f"Lmsav.Cdb.R{n:03d}", maybe(TYPES), csize, maybe(NAMES), maybe(SIZES),
            maybe(SIZES), maybe(["0", "1"]), maybe(["0", "1", "2", "3", "4"]), "*", "*",
        ]
        lines.append(":".join(fields))
    return "\n".join(lines) + "\n"


def _clamscan(tmp_path, rules: str, archives: dict[str, bytes]) -> dict[str, set[str]]:
    db = tmp_path / "db"
    db.mkdir()
    (db / "local.cdb").write_text(rules)
    files = tmp_path / "files"
    files.mkdir()
    for name, data in archives.items():
        (files / name).write_bytes(data)
    proc = subprocess.run(
        ["clamscan", "--no-summary", "--allmatch", "-d", str(db), *sorted(map(str, files.iterdir()))],
        capture_output=True, text=True,
    )
    assert proc.returncode in (0, 1), proc.stderr
    found: dict[str, set[str]] = {name: set() for name in archives}
    for path, virus in re.findall(r"^(.*): (\S+) FOUND$", proc.stdout, re.M):
        found[path.rsplit("/", 1)[-1]].add(virus.removesuffix(".UNOFFICIAL"))
    return found


def _lmsav(tmp_path, rules: str, archives: dict[str, bytes]) -> dict[str, set[str]]:
    sigs, skipped = parse_cdb(rules, "local.cdb")
    assert skipped == []
    sections = compile_cdb(sigs)
    matcher = ContainerMetaMatcher(lambda name: memoryview(sections.get(name, b"")))
    found = {}
    for name, data in archives.items():
        obj = ScanObject(name, data=data)
        ftype = sniff(data)
        ctype = container_type(ftype, data)
        ctx = Context(Limits(), str(tmp_path))
        hits = set()
        try:
            for child in handler_for(ftype).explode(obj, ctx):
                if child.meta is not None:
                    hits |= {n for n, _ in matcher.match(Seen(child.meta, ctype, len(data)))}
        finally:
            ctx.cleanup()
        found[name] = hits
    return found


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_random_rules_give_clamscan_verdicts(tmp_path, archives, seed):
    rules = _random_rules(random.Random(seed), 120, [len(d) for d in archives.values()])
    expected = _clamscan(tmp_path, rules, archives)
    assert any(expected.values()), "no rule matched anything: the test would prove nothing"
    assert _lmsav(tmp_path, rules, archives) == expected


def test_each_rule_field_on_its_own(tmp_path, archives):
    sizes = sorted({len(d) for d in archives.values()})
    rules = [
        f"Only.Type.{t.removeprefix('CL_TYPE_')}:{t}:*:*:*:*:*:*:*:*" for t in TYPES if t != "*"
    ] + [
        f"Only.Name.{n}:*:*:{p}:*:*:*:*:*:*" for n, p in enumerate(NAMES)
    ] + [
        f"Only.Packed.{n}:*:*:*:{s}:*:*:*:*:*" for n, s in enumerate(SIZES)
    ] + [
        f"Only.Size.{n}:*:*:*:*:{s}:*:*:*:*" for n, s in enumerate(SIZES)
    ] + [
        f"Only.Encrypted.{e}:*:*:*:*:*:{e}:*:*:*" for e in "01"
    ] + [
        f"Only.Position.{p}:*:*:*:*:*:*:{p}:*:*" for p in range(6)
    ] + [
        f"Only.ContainerSize.{s}:*:{s}:*:*:*:*:*:*:*" for s in sizes
    ]
    text = "\n".join(rules) + "\n"
    assert _lmsav(tmp_path, text, archives) == _clamscan(tmp_path, text, archives)


@pytest.mark.parametrize("pattern", [
    "a(b", "*x", "a**", "a{1,300}", "[z-a]", "(|a)", "a|", "[a", "^*", "a{1", "a{2,1}",
    "a{,3}", "x{", "\\", "()", "a)", "[]a]", "[^]a]", "[a-]", "[[.x.]]", "[[=e=]]", "\\<a\\>",
])
def test_name_patterns_clamav_refuses_are_refused(tmp_path, pattern):
    line = f"Lmsav.Cdb.Pattern:*:*:{pattern}:*:*:*:*:*:*\n"
    db = tmp_path / "db"
    db.mkdir()
    (db / "local.cdb").write_text(line)
    (tmp_path / "x.txt").write_text("x")
    proc = subprocess.run(["clamscan", "--no-summary", "-d", str(db), str(tmp_path / "x.txt")],
                          capture_output=True, text=True)
    clamav_accepts = proc.returncode != 2
    try:
        parse_cdb(line, "local.cdb")
        lmsav_accepts = True
    except Exception:
        lmsav_accepts = False
    assert lmsav_accepts == clamav_accepts


def test_directory_entries_are_checked_as_in_clamav(tmp_path):
    # ClamAV checks every zip central-directory entry, directories included (position 1 here).
    data = tmp_path / "dirs.zip"
    with zipfile.ZipFile(data, "w") as zf:
        zf.writestr("docs/", "")
        zf.writestr("docs/readme.txt", "hello\n")
    rules = "Lmsav.Cdb.Dir:CL_TYPE_ZIP:*:^docs/$:*:*:*:*:*:*\n"
    archives = {"dirs.zip": data.read_bytes()}
    expected = _clamscan(tmp_path, rules, archives)
    assert expected == {"dirs.zip": {"Lmsav.Cdb.Dir"}}
    assert _lmsav(tmp_path, rules, archives) == expected
