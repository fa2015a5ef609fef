"""YARA rule sets as administrators bring them: external variables, broken files left out,
includes kept inside the database, yara-x modules."""

from __future__ import annotations

import io
import os
import pwd
import shutil
import struct
import zipfile

import pytest
from click.testing import CliRunner

from lmsav.scanner.engine import Engine
from lmsav.scanner.signatures import yara
from lmsav.scanner.signatures.database import Database, DatabaseError, build
from tests.conftest import write_db

MARK = b"lmsav-yara-mark"


def pe_file(text: bytes = b"") -> bytes:
    """A small PE32 with one .text section holding ``text``."""
    mz = bytearray(b"MZ".ljust(0x40, b"\0"))
    mz[0x3C:0x40] = struct.pack("<I", 0x40)
    coff = struct.pack("<HHIIIHH", 0x14C, 1, 0, 0, 0, 0xE0, 0x102)
    opt = bytearray(0xE0)
    opt[0:2] = struct.pack("<H", 0x10B)
    opt[16:20] = struct.pack("<I", 0x1000)  # entry point
    opt[28:32] = struct.pack("<I", 0x400000)  # image base
    opt[32:40] = struct.pack("<II", 0x1000, 0x200)  # section / file alignment
    opt[56:60] = struct.pack("<I", 0x2000)  # size of image
    opt[60:64] = struct.pack("<I", 0x200)  # size of headers
    opt[92:96] = struct.pack("<I", 16)  # number of data directories
    section = b".text\0\0\0" + struct.pack("<IIIIIIHHI", 0x1000, 0x1000, 0x200, 0x200,
                                           0, 0, 0, 0, 0x60000020)
    head = bytes(mz) + b"PE\0\0" + coff + bytes(opt) + section
    return head.ljust(0x200, b"\0") + text.ljust(0x200, b"\0")


def scan(db_dir, path) -> dict[str, list[str]]:
    verdict = Engine(Database.load(db_dir)).scan_path(str(path))
    out: dict[str, list[str]] = {}
    for where, threat in verdict.threats:
        out.setdefault(where, []).append(threat.name)
    return out


# -- external variables --------------------------------------------------------------------------

VARS_RULES = f"""
rule by_name {{ strings: $a = "{MARK.decode()}" condition: $a and filename == "evil.exe" }}
rule by_ext {{ strings: $a = "{MARK.decode()}" condition: $a and extension == ".exe" }}
rule by_type_pe {{ condition: filetype == "pe" }}
rule by_type_text {{ strings: $a = "{MARK.decode()}" condition: $a and filetype == "text" }}
rule by_owner {{ strings: $a = "{MARK.decode()}" condition: $a and owner == "{{owner}}" }}
rule by_dir {{ strings: $a = "{MARK.decode()}" condition: $a and filepath endswith "/files" }}
rule in_zip {{ strings: $a = "{MARK.decode()}" condition: $a and filepath endswith ".zip//dir" }}
"""


def me() -> str:
    return pwd.getpwuid(os.getuid()).pw_name


def test_external_variables_describe_each_file(tmp_path):
    db = write_db(tmp_path / "db", {"vars.yar": VARS_RULES.replace("{owner}", me())})
    files = tmp_path / "files"
    files.mkdir()
    (files / "EVIL.EXE").write_bytes(pe_file(MARK))
    (files / "note.txt").write_bytes(b"plain text " + MARK + b"\n")
    assert scan(db, files / "EVIL.EXE") == {
        str(files / "EVIL.EXE"): ["YARA.by_ext", "YARA.by_type_pe", "YARA.by_owner",
                                  "YARA.by_dir"]}
    assert sorted(scan(db, files / "note.txt")[str(files / "note.txt")]) == [
        "YARA.by_dir", "YARA.by_owner", "YARA.by_type_text"]


def test_a_member_sees_its_name_and_path_through_the_container(tmp_path):
    db = write_db(tmp_path / "db", {"vars.yar": VARS_RULES.replace("{owner}", me())})
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("dir/evil.exe", b"MZ " + MARK)
    path = tmp_path / "files" / "a.zip"
    path.parent.mkdir()
    path.write_bytes(buf.getvalue())
    found = scan(db, path)
    member = f"{path}//dir/evil.exe"
    # The member's owner is the file's it came from; its directory is the path in the zip.
    assert sorted(found[member]) == ["YARA.by_ext", "YARA.by_name", "YARA.by_owner",
                                     "YARA.in_zip"]


def test_object_facts():
    facts = yara.object_facts("/srv/mail/x.eml//2:Invoice.ZIP//docs\\Evil.Exe", "docs\\Evil.Exe",
                              "pe", None)
    assert {k: facts[k] for k in ("filename", "filepath", "extension", "filetype")} == {
        "filename": "Evil.Exe", "filepath": "/srv/mail/x.eml//2:Invoice.ZIP//docs",
        "extension": ".exe", "filetype": "pe"}
    part = yara.object_facts("/srv/mail/x.eml//2:Invoice.ZIP", "Invoice.ZIP", "zip", None)
    assert (part["filename"], part["filepath"], part["extension"]) == (
        "Invoice.ZIP", "/srv/mail/x.eml", ".zip")
    plain = yara.object_facts("a.tar//b/c.txt", "", "text", None)
    assert (plain["filename"], plain["filepath"]) == ("c.txt", "a.tar//b")
    top = yara.object_facts("/home/u/.bashrc", "", "text", None)
    assert (top["filename"], top["filepath"], top["extension"]) == (".bashrc", "/home/u", "")


def test_rules_without_variables_cost_nothing_per_object(tmp_path, monkeypatch):
    db_dir = write_db(tmp_path / "db", {"r.yar": 'rule plain { strings: $a = "filename" '
                                                  'condition: $a } // owner\n'})
    db = Database.load(db_dir)
    assert db.matchers["yara"].rules.variables == ()

    def never(*args):
        raise AssertionError("facts computed for a rule set that names no variable")

    monkeypatch.setattr(yara, "object_facts", never)
    verdict = Engine(db).scan_bytes(b"a filename here")
    assert [t.name for _, t in verdict.threats] == ["YARA.plain"]


def test_only_named_variables_are_set(tmp_path):
    db_dir = write_db(tmp_path / "db", {"r.yar": 'rule r { condition: extension == ".txt" }\n'})
    assert Database.load(db_dir).matchers["yara"].rules.variables == ("extension",)


def test_yara_sees_the_bytes_of_an_html_page_not_its_normalised_forms(tmp_path):
    db = write_db(tmp_path / "db", {"r.yar": 'rule upper { strings: $a = "<SCRIPT  SRC" '
                                             'condition: $a }\n'})
    page = tmp_path / "p.html"
    page.write_bytes(b"<html><body><SCRIPT  SRC='x.js'></SCRIPT></body></html>\n")
    assert scan(db, page) == {str(page): ["YARA.upper"]}


# -- broken files, includes ----------------------------------------------------------------------

GOOD = f'rule good {{ strings: $a = "{MARK.decode()}" condition: $a }}\n'


def test_a_broken_file_is_left_out_whole_and_listed(tmp_path):
    db_dir = write_db(tmp_path / "db", {
        "good.yar": GOOD,
        "bad.yar": "rule fine { condition: true }\nrule broken { condition: nosuch }\n",
        "syntax.yara": "rule x {",
    })
    db = Database.load(db_dir)
    assert db.counts["yar"] == 1 and db.skipped["yar"] == 2
    assert db.not_used == [
        "bad.yar: line 2: error[E009]: unknown identifier `nosuch`",
        "syntax.yara: line 1: error[E001]: syntax error"]
    assert "fine" not in {r.identifier for r in db.matchers["yara"].rules._rules}
    assert [t.name for _, t in Engine(db).scan_bytes(MARK).threats] == ["YARA.good"]


def test_only_broken_files_is_an_error_naming_them(tmp_path):
    db_dir = write_db(tmp_path / "db", {"bad.yar": "rule x {"})
    with pytest.raises(DatabaseError, match="left out: bad.yar: line 1"):
        Database.load(db_dir)


def test_db_build_and_info_list_left_out_files_and_strict_fails(tmp_path):
    from lmsav.cli import main

    db_dir = write_db(tmp_path / "db", {"good.yar": GOOD, "bad.yar": "rule x {"})
    runner = CliRunner()
    built = runner.invoke(main, ["db", "build", str(db_dir)])
    assert built.exit_code == 0
    assert "warning: bad.yar: line 1: error[E001]: syntax error; not used" in built.output
    info = runner.invoke(main, ["db", "info", "-d", str(db_dir)])
    assert "Not used: bad.yar: line 1: error[E001]: syntax error" in info.output
    os.unlink(db_dir / ".compiled.lmsavc")
    strict = runner.invoke(main, ["db", "build", "--strict", str(db_dir)])
    assert strict.exit_code == 2
    assert "lmsav: error: bad.yar: line 1: error[E001]: syntax error" in strict.output
    assert not (db_dir / ".compiled.lmsavc").exists()
    with pytest.raises(DatabaseError):
        build(db_dir, strict=True)


OUTSIDE = "it leads outside the database directory"


def test_includes_resolve_beside_the_including_file_and_stay_inside(tmp_path):
    db_dir = write_db(tmp_path / "db", {
        "top.yar": 'include "sub/mid.yara.inc"\n',
        "escape.yar": 'include "../outside.yar"\n',
        "missing.yar": 'rule m { condition: false }\ninclude "nope.inc"\n',
    })
    (db_dir / "sub").mkdir()
    (db_dir / "sub" / "mid.yara.inc").write_text('include "leaf.inc"\n')
    (db_dir / "sub" / "leaf.inc").write_text(GOOD)
    (tmp_path / "outside.yar").write_text("rule outside { condition: true }\n")
    os.symlink(tmp_path / "outside.yar", db_dir / "sub" / "link.inc")
    (db_dir / "link.yar").write_text('include "sub/link.inc"\n')
    db = Database.load(db_dir)
    assert db.counts["yar"] == 1
    assert sorted(db.not_used) == [
        'escape.yar: line 1: include "../outside.yar" refused: ' + OUTSIDE,
        'link.yar: line 1: include "sub/link.inc" refused: ' + OUTSIDE,
        'missing.yar: line 2: include "nope.inc": No such file or directory']
    assert [t.name for _, t in Engine(db).scan_bytes(MARK).threats] == ["YARA.good"]


def test_an_include_loop_is_refused(tmp_path):
    db_dir = write_db(tmp_path / "db", {"a.yar": 'include "b.inc"\n' + GOOD})
    (db_dir / "b.inc").write_text('include "a.yar"\n')
    db_dir2 = write_db(tmp_path / "db2", {"g.yar": GOOD})
    shutil.copy(db_dir / "a.yar", db_dir2 / "a.yar")
    shutil.copy(db_dir / "b.inc", db_dir2 / "b.inc")
    db = Database.load(db_dir2)
    assert db.counts["yar"] == 1
    assert len(db.not_used) == 1 and "includes loop" in db.not_used[0]


# -- modules -------------------------------------------------------------------------------------

MODULE_RULES = {
    "pe.yar": 'import "pe"\nrule pe_one_section { condition: pe.is_pe and '
              'pe.number_of_sections == 1 and pe.sections[0].name == ".text" and '
              'pe.machine == pe.MACHINE_I386 }\n',
    "elf.yar": 'import "elf"\nrule elf_exec { condition: elf.type == elf.ET_EXEC or '
               'elf.type == elf.ET_DYN }\n',
    "math.yar": 'import "math"\nrule random_bytes { condition: filesize > 1000 and '
                'math.entropy(0, filesize) > 7.5 }\n',
    "hash.yar": 'import "hash"\nrule known_md5 { condition: hash.md5(0, filesize) == '
                f'"{__import__("hashlib").md5(MARK).hexdigest()}" }}\n',
    "dotnet.yar": 'import "dotnet"\nrule not_dotnet_pe { condition: uint16(0) == 0x5a4d and '
                  "not dotnet.is_dotnet }\n",
    "console.yar": 'import "console"\nrule logs { strings: $a = "' + MARK.decode()
                   + '" condition: $a and console.log("seen") }\n',
    "magic.yar": 'import "magic"\nrule needs_magic { condition: magic.mime_type() == "x" }\n'
                 'rule beside_magic { strings: $a = "' + MARK.decode() + '" condition: $a }\n',
}


def test_modules_work_and_a_missing_one_leaves_out_only_its_rules(tmp_path, capfd):
    db_dir = write_db(tmp_path / "db", MODULE_RULES)
    db = Database.load(db_dir)
    assert db.not_used == []
    assert db.skipped_lines == [
        "magic.yar:2: needs_magic: needs module 'magic', which this YARA engine does not have"]
    engine = Engine(db)

    def names(data: bytes) -> set[str]:
        return {t.name for _, t in engine.scan_bytes(data).threats}

    assert names(pe_file()) == {"YARA.pe_one_section", "YARA.not_dotnet_pe"}
    with open("/bin/true", "rb") as fh:
        assert names(fh.read()) == {"YARA.elf_exec"}
    assert names(os.urandom(4096)) == {"YARA.random_bytes"}
    assert names(MARK) == {"YARA.known_md5", "YARA.logs", "YARA.beside_magic"}
    assert "seen" not in capfd.readouterr().out  # console output is not lmsav's to print
