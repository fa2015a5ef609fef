"""A bug met while scanning one member costs that member only: the container's other members
are still scanned (the fuzz campaign found a sniffing bug that hid an attachment behind it)."""

from __future__ import annotations

import hashlib
import io
import zipfile

from lmsav.scanner import engine as engine_mod
from lmsav.scanner.engine import Engine
from lmsav.scanner.limits import Limits
from lmsav.scanner.objects import Status
from lmsav.scanner.signatures.database import Database
from tests.conftest import write_db

SAMPLE = b"lmsav member-guard sample\n" * 4
POISON = b"poison member that trips a bug\n"


def test_member_bug_does_not_hide_its_siblings(tmp_path, monkeypatch):
    db_dir = write_db(tmp_path / "db", {
        "t.hdb": f"{hashlib.md5(SAMPLE).hexdigest()}:{len(SAMPLE)}:Lmsav.Test.Sibling\n"})
    database = Database.load(str(db_dir), cache_path=tmp_path / "cache")
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("a-poison.bin", POISON)
        zf.writestr("b-sample.txt", SAMPLE)
    real_locate = engine_mod.filetype.locate

    def locate(data, size):
        if bytes(data[:len(POISON)]) == POISON:
            raise IndexError("a bug in a sniffer")
        return real_locate(data, size)

    monkeypatch.setattr(engine_mod.filetype, "locate", locate)
    (tmp_path / "t").mkdir()
    verdict = Engine(database, Limits(), tmp_root=str(tmp_path / "t")).scan_bytes(
        buf.getvalue(), "x.zip")
    assert verdict.status == Status.INFECTED
    assert {t.name for _p, t in verdict.threats} == {"Lmsav.Test.Sibling"}
    poisoned = [r for r in verdict.walk() if r.path.endswith("a-poison.bin")]
    assert poisoned and poisoned[0].status == Status.ERROR
    assert "internal error: IndexError" in poisoned[0].reason
