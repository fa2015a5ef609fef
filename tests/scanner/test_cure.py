"""Cure: members holding threats removed through the handlers' rebuilders, the rest kept."""

from __future__ import annotations

import base64
import email
import email.policy
import gzip
import io
import tarfile
import zipfile
from email.message import EmailMessage

import pytest

from lmsav import paths
from lmsav.scanner.cure import Uncurable, cure
from lmsav.scanner.engine import Engine
from lmsav.scanner.objects import Status
from lmsav.scanner.signatures.database import Database
from tests.conftest import EICAR
from tests.scanner.containers.helpers import run, zip_bytes
from tests.scanner.containers.test_archive_rebuild import (
    deflated,
    hidden_entries,
    tar_with_hidden_bytes,
)


@pytest.fixture(scope="module")
def engine():
    return Engine(Database.load(paths.bundled_database_dir()))


def cured(engine, data: bytes, name: str, **kw) -> bytes:
    verdict = engine.scan_bytes(data, name)
    assert verdict.status == Status.INFECTED
    out = cure(engine, data, verdict.root, **kw)
    assert engine.scan_bytes(out, name).status == Status.CLEAN
    return out


def uncurable(engine, data: bytes, name: str, **kw) -> str:
    verdict = engine.scan_bytes(data, name)
    with pytest.raises(Uncurable) as err:
        cure(engine, data, verdict.root, **kw)
    assert "\n" not in str(err.value)
    return str(err.value)


def zip_members(data: bytes) -> dict[str, bytes]:
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        assert zf.testzip() is None
        return {name: zf.read(name) for name in zf.namelist()}


def tar_bytes(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def message(*attachments: tuple[str, bytes], text: str = "see attached\n") -> bytes:
    msg = EmailMessage()
    msg["From"] = "a@example.org"
    msg["To"] = "b@example.org"
    msg["Subject"] = "files"
    msg.set_content(text)
    for name, data in attachments:
        msg.add_attachment(data, maintype="application", subtype="octet-stream", filename=name)
    return msg.as_bytes()


def attachments(raw: bytes) -> dict[str, bytes]:
    parsed = email.message_from_bytes(raw, policy=email.policy.default)
    return {p.get_filename(): p.get_content() for p in parsed.iter_attachments()}


# -- what the scan records -------------------------------------------------------------------


def test_results_carry_the_member_index_and_json_shows_it_only_when_known(engine):
    verdict = engine.scan_bytes(zip_bytes({"a.txt": b"a", "e.com": EICAR}), "x.zip")
    assert [(r.path, r.member) for r in verdict.root.children] == [
        ("x.zip//a.txt", 0), ("x.zip//e.com", 1)]
    assert verdict.root.member is None and "member" not in verdict.root.to_json()
    assert [c["member"] for c in verdict.root.to_json()["children"]] == [0, 1]


# -- curable ---------------------------------------------------------------------------------


def test_zip_keeps_its_clean_member(engine):
    data = zip_bytes({"clean.txt": b"hello\n", "eicar.com": EICAR, "more.txt": b"more\n"})
    out = cured(engine, data, "a.zip")
    assert zip_members(out) == {"clean.txt": b"hello\n", "more.txt": b"more\n"}


def test_zip_entries_the_directory_does_not_list_do_not_survive(engine):
    # Deflated EICAR in local entries only: no reader that goes by the directory sees them.
    data = hidden_entries(b"hello\n", EICAR, EICAR)
    assert [r.path for r in engine.scan_bytes(data, "a.zip").walk()] == [
        "a.zip", "a.zip//clean.txt", "a.zip//eicar.com"]
    out = cured(engine, data, "a.zip")
    assert deflated(EICAR) not in out and b"hidden" not in out
    assert zip_members(out) == {"clean.txt": b"hello\n"}
    outer = cured(engine, zip_bytes({"x.txt": b"x", "inner.zip": data}), "outer.zip")
    inner = zip_members(outer)["inner.zip"]
    assert deflated(EICAR) not in inner and b"hidden" not in inner
    assert zip_members(inner) == {"clean.txt": b"hello\n"}


def test_tar_padding_and_what_follows_the_end_do_not_survive(engine):
    hidden = b"hidden " + deflated(EICAR)
    data = gzip.compress(tar_with_hidden_bytes(hidden, EICAR))
    out = gzip.decompress(cured(engine, data, "a.tar.gz"))
    assert hidden not in out and b"hidden" not in out
    with tarfile.open(fileobj=io.BytesIO(out)) as tf:
        assert tf.getnames() == ["ok.txt"] and tf.extractfile("ok.txt").read() == b"k"


def test_zip_in_zip_is_cured_in_place(engine):
    inner = zip_bytes({"c.txt": b"inner clean\n", "e.com": EICAR})
    data = zip_bytes({"x.txt": b"outer clean\n", "inner.zip": inner})
    out = cured(engine, data, "outer.zip")
    members = zip_members(out)
    assert members["x.txt"] == b"outer clean\n"
    assert zip_members(members["inner.zip"]) == {"c.txt": b"inner clean\n"}


def test_each_container_is_read_once_however_many_members_are_cured_in_place(
        engine, monkeypatch):
    from lmsav.scanner import cure as cure_module

    reads = []

    class Counting:
        def __init__(self, handler):
            self.handler = handler

        def explode(self, obj, ctx):
            reads.append(obj.name)
            return self.handler.explode(obj, ctx)

    real = cure_module.handler_for
    monkeypatch.setattr(cure_module, "handler_for", lambda ftype: Counting(real(ftype)))
    inner = {f"in{i}.zip": zip_bytes({"ok.txt": b"ok %d\n" % i, "e.com": EICAR})
             for i in range(5)}
    out = cured(engine, zip_bytes({"x.txt": b"x", **inner}), "outer.zip")
    assert reads == ["outer.zip"]
    members = zip_members(out)
    assert all(zip_members(members[f"in{i}.zip"]) == {"ok.txt": b"ok %d\n" % i}
               for i in range(5))


def test_zip_attached_to_a_message_is_cured_and_stays_attached(engine):
    raw = message(("a.zip", zip_bytes({"clean.txt": b"hello\n", "eicar.com": EICAR})),
                  ("b.txt", b"other attachment\n"))
    out = cured(engine, raw, "m.eml")
    got = attachments(out)
    assert set(got) == {"a.zip", "b.txt"} and got["b.txt"] == b"other attachment\n"
    assert zip_members(got["a.zip"]) == {"clean.txt": b"hello\n"}
    assert email.message_from_bytes(out, policy=email.policy.default)["Subject"] == "files"


def test_tar_gz(engine):
    data = gzip.compress(tar_bytes({"d/ok.txt": b"ok\n", "d/eicar.com": EICAR}), mtime=12345)
    out = cured(engine, data, "a.tar.gz")
    assert out[4:8] == (12345).to_bytes(4, "little")  # the gzip header's time is kept
    with tarfile.open(fileobj=io.BytesIO(gzip.decompress(out))) as tf:
        assert tf.getnames() == ["d/ok.txt"] and tf.extractfile("d/ok.txt").read() == b"ok\n"


@pytest.mark.parametrize("compress, decompress, name", [
    (lambda d: __import__("bz2").compress(d), lambda d: __import__("bz2").decompress(d), "t.tbz2"),
    (lambda d: __import__("lzma").compress(d), lambda d: __import__("lzma").decompress(d), "t.txz"),
    (lambda d: __import__("zstandard").ZstdCompressor().compress(d),
     lambda d: __import__("zstandard").ZstdDecompressor().decompressobj().decompress(d), "t.tzst"),
])
def test_tar_in_other_compressors(engine, compress, decompress, name):
    data = compress(tar_bytes({"ok.txt": b"ok\n", "eicar.com": EICAR}))
    out = cured(engine, data, name)
    with tarfile.open(fileobj=io.BytesIO(decompress(out))) as tf:
        assert tf.getnames() == ["ok.txt"]


def test_message_loses_the_infected_part_and_keeps_the_rest(engine):
    raw = message(("eicar.com", EICAR), ("keep.bin", b"plain data\n"))
    out = cured(engine, raw, "m.eml")
    assert attachments(out) == {"keep.bin": b"plain data\n"}
    parsed = email.message_from_bytes(out, policy=email.policy.default)
    assert parsed.get_body(("plain",)).get_content() == "see attached\n"
    assert EICAR not in out and base64.b64encode(EICAR)[:40] not in out


def test_message_attached_to_a_message_is_cured_in_place(engine):
    inner = EmailMessage()
    inner["From"] = "c@example.org"
    inner["Subject"] = "inner"
    inner.set_content("inner body\n")
    inner.add_attachment(EICAR, maintype="application", subtype="octet-stream", filename="e.com")
    inner.add_attachment(b"keep", maintype="application", subtype="octet-stream", filename="k.bin")
    outer = EmailMessage()
    outer["From"] = "a@example.org"
    outer["Subject"] = "fwd"
    outer.set_content("outer body\n")
    outer.add_attachment(inner)
    out = cured(engine, outer.as_bytes(), "m.eml")
    parsed = email.message_from_bytes(out, policy=email.policy.default)
    (attached,) = parsed.iter_attachments()
    kept = attached.get_content()
    assert kept["Subject"] == "inner"
    assert {p.get_filename(): p.get_content() for p in kept.iter_attachments()} == \
        {"k.bin": b"keep"}


def test_a_member_its_container_cannot_take_back_cured_goes_whole(engine, monkeypatch):
    from lmsav.scanner.containers import taredit, zipedit

    real = zipedit.rebuild_zip

    def no_replacing(data, edits):
        if any(new is not None for new in edits.values()):
            raise zipedit.RebuildError("no replacing here")
        return real(data, edits)

    monkeypatch.setattr("lmsav.scanner.containers.archive._REBUILDERS",
                        {"zip": no_replacing, "tar": taredit.rebuild_tar})
    inner = zip_bytes({"c.txt": b"c", "e.com": EICAR})
    data = zip_bytes({"x.txt": b"x", "inner.zip": inner})
    assert zip_members(cured(engine, data, "outer.zip")) == {"x.txt": b"x"}


def test_uuencoded_threat_takes_its_whole_part_along(engine):
    uu = b"begin 644 eicar.com\n" + _uuencode(EICAR) + b"`\nend\n"
    raw = message(("keep.txt", b"keep me\n"), text="look:\n" + uu.decode())
    verdict = engine.scan_bytes(raw, "m.eml")
    found = [r for r in verdict.walk() if r.threats]
    assert [(r.path, r.member) for r in found] == [("m.eml//1.1:eicar.com", 1)]
    out = cure(engine, raw, verdict.root)
    assert attachments(out) == {"keep.txt": b"keep me\n"} and b"begin 644" not in out


def test_a_7z_inside_a_zip_goes_whole(engine, tmp_path):
    (tmp_path / "e.com").write_bytes(EICAR)
    run("7z", "a", "-bd", "x.7z", "e.com", cwd=tmp_path)
    data = zip_bytes({"x.7z": (tmp_path / "x.7z").read_bytes(), "ok.txt": b"ok\n"})
    assert zip_members(cured(engine, data, "a.zip")) == {"ok.txt": b"ok\n"}


def test_what_counts_as_bad_is_the_callers(engine, tmp_path):
    (tmp_path / "secret.txt").write_bytes(b"secret\n")
    (tmp_path / "ok.txt").write_bytes(b"ok\n")
    run("zip", "-q", "-P", "pw", "x.zip", "secret.txt", cwd=tmp_path)
    run("zip", "-q", "x.zip", "ok.txt", cwd=tmp_path)
    data = (tmp_path / "x.zip").read_bytes()
    verdict = engine.scan_bytes(data, "x.zip")
    assert verdict.status == Status.PROTECTED
    assert cure(engine, data, verdict.root) == data  # nothing bad by default
    out = cure(engine, data, verdict.root, bad=lambda s: s >= Status.PROTECTED)
    assert zip_members(out) == {"ok.txt": b"ok\n"}


# -- not curable -----------------------------------------------------------------------------


def test_a_plain_infected_file_is_never_curable(engine):
    assert uncurable(engine, EICAR, "eicar.com") == "the whole file is the threat"


def test_the_only_member_of_a_compressed_stream_cannot_be_removed(engine):
    why = uncurable(engine, gzip.compress(EICAR), "eicar.com.gz")
    assert why == "cannot remove the only member of a gzip stream"


def test_a_container_without_a_rebuilder(engine, tmp_path):
    (tmp_path / "e.com").write_bytes(EICAR)
    (tmp_path / "ok.txt").write_bytes(b"ok\n")
    run("7z", "a", "-bd", "x.7z", "e.com", "ok.txt", cwd=tmp_path)
    assert uncurable(engine, (tmp_path / "x.7z").read_bytes(), "x.7z") == \
        "7z files cannot be rebuilt"


def test_a_finding_of_the_raw_reading_is_not_curable(engine):
    # A part after the closing delimiter: mail clients show it, the structure does not.
    raw = (b"From: a@example.org\nMIME-Version: 1.0\n"
           b'Content-Type: multipart/mixed; boundary="B"\n\n'
           b"--B\nContent-Type: text/plain\n\nhello\n--B--\n"
           b"--B\nContent-Type: application/octet-stream; name=e.com\n"
           b"Content-Transfer-Encoding: base64\n\n" + base64.encodebytes(EICAR) + b"\n")
    verdict = engine.scan_bytes(raw, "m.eml")
    assert [r.path for r in verdict.walk() if r.threats] == ["m.eml//raw1:e.com"]
    why = uncurable(engine, raw, "m.eml")
    assert why == "cannot tell which member of the mail holds raw1:e.com"


def test_a_cure_the_rescan_still_finds_bad_is_not_curable(engine):
    data = zip_bytes({"ok.txt": b"ok\n", "eicar.com": EICAR})
    before = engine.scan_bytes(data, "a.zip")

    class Stale:  # rescans find what the first scan found, whatever the bytes
        limits, tmp_root = engine.limits, engine.tmp_root

        def scan_bytes(self, _data, name="stream"):
            return engine.scan_bytes(data, name)

    with pytest.raises(Uncurable, match="^still infected after the cure: Eicar-Test-Signature$"):
        cure(Stale(), data, before.root)


def _uuencode(data: bytes) -> bytes:
    import binascii

    return b"".join(binascii.b2a_uu(data[i:i + 45]) for i in range(0, len(data), 45))


def test_the_reason_is_one_line_whatever_the_names(engine):
    data = zip_bytes({"ok.txt": b"ok\n", "two\nlines.com": EICAR})
    verdict = engine.scan_bytes(data, "a.zip")
    verdict.root.children[1].member = None  # as if the handler could not place it
    with pytest.raises(Uncurable) as err:
        cure(engine, data, verdict.root)
    assert str(err.value) == "cannot tell which member of the zip holds two\\nlines.com"
