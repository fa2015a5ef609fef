"""Zips and tars rebuilt with members removed or replaced, by the numbers the handler gives."""

from __future__ import annotations

import io
import struct
import tarfile
import zipfile
import zlib

import pytest

from lmsav.scanner.containers import RebuildError, rebuilder_for
from lmsav.scanner.containers.archive import ArchiveHandler
from lmsav.scanner.containers.taredit import rebuild_tar
from lmsav.scanner.containers.zipedit import rebuild_zip
from lmsav.scanner.objects import ScanObject
from tests.conftest import EICAR
from tests.scanner.containers.helpers import explode_with, run, zip_bytes


def archive_names(data: bytes) -> list[str]:
    """Member names exactly as ArchiveHandler yields them."""
    return [c.name for c in explode_with(ArchiveHandler(), ScanObject("a", data=data))]


def numbers(data: bytes) -> dict[str, int | None]:
    """Member name → the number ArchiveHandler gives it (Child.member)."""
    return {c.name: c.member for c in explode_with(ArchiveHandler(), ScanObject("a", data=data))}


def without(data: bytes, *names: str) -> bytes:
    """``data`` rebuilt by its registered rebuilder without the members the handler names so."""
    found = numbers(data)
    kind = "zip" if data[:2] == b"PK" else "tar"
    return rebuilder_for(kind)(data, {found[name]: None for name in names})


def python_zip() -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.comment = b"archive comment"
        for name, data, method, when in [
            ("readme.txt", b"hello " * 100, zipfile.ZIP_DEFLATED, (2001, 2, 3, 4, 5, 6)),
            ("dir/clam.exe", EICAR, zipfile.ZIP_STORED, (2010, 1, 1, 0, 0, 0)),
            ("data.bin", bytes(range(256)) * 40, zipfile.ZIP_BZIP2, (2020, 12, 31, 23, 59, 58)),
            ("notes.txt", b"notes\n" * 50, zipfile.ZIP_LZMA, (1999, 9, 9, 9, 9, 8)),
        ]:
            info = zipfile.ZipInfo(name, when)
            info.compress_type = method
            info.comment = f"comment of {name}".encode()
            zf.writestr(info, data)
    return buf.getvalue()


def test_zip_member_removed_and_the_rest_kept_exactly():
    data = python_zip()
    assert "dir/clam.exe" in archive_names(data)
    out = without(data, "dir/clam.exe")
    before = {i.filename: i for i in zipfile.ZipFile(io.BytesIO(data)).infolist()}
    with zipfile.ZipFile(io.BytesIO(out)) as zf:
        assert zf.testzip() is None
        assert zf.comment == b"archive comment"
        assert zf.namelist() == ["readme.txt", "data.bin", "notes.txt"]
        for info in zf.infolist():
            old = before[info.filename]
            assert (info.compress_type, info.date_time, info.comment, info.CRC,
                    info.compress_size) == (old.compress_type, old.date_time, old.comment,
                                            old.CRC, old.compress_size)
        with zipfile.ZipFile(io.BytesIO(data)) as orig:
            assert all(zf.read(n) == orig.read(n) for n in zf.namelist())
    assert EICAR not in out
    assert archive_names(out) == ["readme.txt", "data.bin", "notes.txt"]


def test_zip_from_info_zip_with_data_descriptors_and_an_encrypted_member(tmp_path):
    (tmp_path / "clam.exe").write_bytes(EICAR)
    (tmp_path / "a.txt").write_bytes(b"plain text\n" * 30)
    (tmp_path / "secret.txt").write_bytes(b"top secret\n" * 30)
    run("zip", "-q", "-fd", "x.zip", "a.txt", "clam.exe", cwd=tmp_path)
    run("zip", "-q", "-P", "pw", "x.zip", "secret.txt", cwd=tmp_path)
    data = (tmp_path / "x.zip").read_bytes()
    out = without(data, "clam.exe")
    (tmp_path / "out.zip").write_bytes(out)
    run("unzip", "-t", "-q", "-P", "pw", "out.zip", cwd=tmp_path)  # Info-ZIP agrees
    with zipfile.ZipFile(io.BytesIO(out)) as zf:
        assert zf.namelist() == ["a.txt", "secret.txt"]
        assert zf.read("a.txt") == b"plain text\n" * 30
        assert zf.read("secret.txt", pwd=b"pw") == b"top secret\n" * 30
        assert zf.getinfo("secret.txt").flag_bits & 1  # still encrypted, copied as it was


def test_zip_with_aes_member_kept(tmp_path):
    (tmp_path / "clam.exe").write_bytes(EICAR)
    (tmp_path / "aes.txt").write_bytes(b"aes protected\n")
    run("7z", "a", "-bd", "-tzip", "-psecret", "-mem=AES256", "x.zip", "aes.txt", cwd=tmp_path)
    run("7z", "a", "-bd", "-tzip", "x.zip", "clam.exe", cwd=tmp_path)
    data = (tmp_path / "x.zip").read_bytes()
    out = without(data, "clam.exe")
    (tmp_path / "out.zip").write_bytes(out)
    run("7z", "t", "-psecret", "out.zip", cwd=tmp_path)
    assert zipfile.ZipFile(io.BytesIO(out)).namelist() == ["aes.txt"]


@pytest.mark.parametrize("fmt", ["gnu", "pax", "ustar"])
def test_tar_member_removed_and_format_kept(tmp_path, fmt):
    src = tmp_path / "src"
    (src / "deep" / ("d" * 60)).mkdir(parents=True)
    (src / "clam.exe").write_bytes(EICAR)
    (src / "a.txt").write_bytes(b"a" * 1000)
    long_name = "deep/" + "d" * 60 + "/" + "f" * 70 + ".txt"
    (src / long_name).write_bytes(b"long")
    members = ["a.txt", "clam.exe"] + ([] if fmt == "ustar" else [long_name])
    run("tar", f"--format={fmt}", "-cf", str(tmp_path / "x.tar"), *members, cwd=src)
    data = (tmp_path / "x.tar").read_bytes()
    assert "clam.exe" in archive_names(data)
    out = without(data, "clam.exe")
    assert len(out) % 512 == 0 and EICAR not in out
    with tarfile.open(fileobj=io.BytesIO(out)) as tf, \
            tarfile.open(fileobj=io.BytesIO(data)) as orig:
        assert tf.getnames() == [m for m in members if m != "clam.exe"]
        for info in tf.getmembers():
            old = orig.getmember(info.name)
            assert info.get_info() == old.get_info()
            assert tf.extractfile(info).read() == orig.extractfile(old).read()
    assert archive_names(out) == [m for m in members if m != "clam.exe"]
    if fmt == "pax":
        assert b"path=" in out  # the pax extended header went with its member


def test_tar_removing_the_last_member(tmp_path):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tf:
        for name, payload in [("a", b"1"), ("b", EICAR)]:
            info = tarfile.TarInfo(name)
            info.size = len(payload)
            tf.addfile(info, io.BytesIO(payload))
    out = without(buf.getvalue(), "b")
    with tarfile.open(fileobj=io.BytesIO(out)) as tf:
        assert tf.getnames() == ["a"] and tf.extractfile("a").read() == b"1"


def test_archive_errors():
    data = python_zip()
    with pytest.raises(RebuildError, match="has no member 4"):
        rebuild_zip(data, {4: None})
    with pytest.raises(RebuildError, match="has no member -1"):
        rebuild_zip(data, {-1: None})
    with pytest.raises(RebuildError):
        rebuild_zip(data[: len(data) // 2], {1: None})
    with pytest.raises(RebuildError):
        rebuild_zip(b"not an archive at all", {0: None})
    with pytest.raises(RebuildError):
        rebuild_tar(b"not an archive at all", {0: None})


def test_only_zip_and_tar_archives_have_a_rebuilder():
    assert rebuilder_for("zip") is rebuild_zip and rebuilder_for("tar") is rebuild_tar
    for kind in ("7z", "rar", "cab", "cpio", "iso9660", "ar", "arj", "pe", "text", "pdf"):
        assert rebuilder_for(kind) is None


def test_zip_members_are_numbered_in_directory_order():
    data = python_zip()
    assert numbers(data) == {"readme.txt": 0, "dir/clam.exe": 1, "data.bin": 2, "notes.txt": 3}


def test_zip_member_replaced_keeps_its_name_date_and_comment():
    data = python_zip()
    out = rebuild_zip(data, {1: b"replacement " * 100, 3: None})
    with zipfile.ZipFile(io.BytesIO(out)) as zf, zipfile.ZipFile(io.BytesIO(data)) as orig:
        assert zf.testzip() is None
        assert zf.namelist() == ["readme.txt", "dir/clam.exe", "data.bin"]
        assert zf.read("dir/clam.exe") == b"replacement " * 100
        new, old = zf.getinfo("dir/clam.exe"), orig.getinfo("dir/clam.exe")
        assert (new.date_time, new.comment, new.compress_type) == \
            (old.date_time, old.comment, zipfile.ZIP_STORED)
        assert zf.read("data.bin") == orig.read("data.bin")
    replaced = rebuild_zip(data, {0: b"deflated again"})
    with zipfile.ZipFile(io.BytesIO(replaced)) as zf:
        assert zf.getinfo("readme.txt").compress_type == zipfile.ZIP_DEFLATED
        assert zf.read("readme.txt") == b"deflated again"
    assert numbers(out) == {"readme.txt": 0, "dir/clam.exe": 1, "data.bin": 2}


def test_zip_member_replaced_in_an_info_zip_archive(tmp_path):
    (tmp_path / "a.txt").write_bytes(b"plain text\n" * 30)
    (tmp_path / "b.txt").write_bytes(b"other\n" * 30)
    run("zip", "-q", "-fd", "x.zip", "a.txt", "b.txt", cwd=tmp_path)
    data = (tmp_path / "x.zip").read_bytes()
    (tmp_path / "out.zip").write_bytes(rebuild_zip(data, {numbers(data)["a.txt"]: b"new\n"}))
    run("unzip", "-t", "-q", "out.zip", cwd=tmp_path)  # Info-ZIP agrees
    with zipfile.ZipFile(tmp_path / "out.zip") as zf:
        assert zf.read("a.txt") == b"new\n" and zf.read("b.txt") == b"other\n" * 30


def test_zip_encrypted_member_cannot_be_replaced(tmp_path):
    (tmp_path / "secret.txt").write_bytes(b"top secret\n")
    run("zip", "-q", "-P", "pw", "x.zip", "secret.txt", cwd=tmp_path)
    with pytest.raises(RebuildError, match="encrypted"):
        rebuild_zip((tmp_path / "x.zip").read_bytes(), {0: b"x"})


def tar_of(members: list[tuple[str, bytes]], fmt=tarfile.GNU_FORMAT) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt) as tf:
        for name, payload in members:
            if name.endswith("/"):
                info = tarfile.TarInfo(name.rstrip("/"))
                info.type = tarfile.DIRTYPE
                tf.addfile(info)
                continue
            info = tarfile.TarInfo(name)
            info.size = len(payload)
            info.mtime = 1_600_000_000
            tf.addfile(info, io.BytesIO(payload))
    return buf.getvalue()


def test_tar_members_are_numbered_in_reading_order_directories_and_repeats_included():
    data = tar_of([("d/", b""), ("d/a", b"1"), ("d/b", b"2"), ("d/a", b"3"), ("x" * 150, b"4")])
    got = [(c.name, c.member, c.data) for c in
           explode_with(ArchiveHandler(), ScanObject("t.tar", data=data))]
    assert got == [("d/a", 1, b"1"), ("d/b", 2, b"2"), ("d/a", 3, b"3"), ("x" * 150, 4, b"4")]
    out = rebuild_tar(data, {3: None, 1: b"one, longer than before"})
    with tarfile.open(fileobj=io.BytesIO(out)) as tf:
        assert tf.getnames() == ["d", "d/a", "d/b", "x" * 150]
        assert tf.extractfile("d/a").read() == b"one, longer than before"
        assert tf.getmember("d/a").mtime == 1_600_000_000


@pytest.mark.parametrize("fmt", ["gnu", "pax", "ustar"])
def test_tar_member_replaced_in_every_format_the_tar_program_reads(tmp_path, fmt):
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.txt").write_bytes(b"a" * 1000)
    (src / "b.txt").write_bytes(b"b" * 10)
    run("tar", f"--format={fmt}", "-cf", str(tmp_path / "x.tar"), "a.txt", "b.txt", cwd=src)
    data = (tmp_path / "x.tar").read_bytes()
    out = rebuild_tar(data, {numbers(data)["a.txt"]: b"short"})
    (tmp_path / "out.tar").write_bytes(out)
    dest = tmp_path / "dest"
    dest.mkdir()
    run("tar", "-xf", str(tmp_path / "out.tar"), cwd=dest)  # GNU tar agrees
    assert (dest / "a.txt").read_bytes() == b"short" and (dest / "b.txt").read_bytes() == b"b" * 10


def test_tar_link_to_a_removed_file_goes_with_it():
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        info = tarfile.TarInfo("f")
        info.size = len(EICAR)
        tf.addfile(info, io.BytesIO(EICAR))
        link = tarfile.TarInfo("hard")
        link.type, link.linkname = tarfile.LNKTYPE, "f"
        tf.addfile(link)
        keep = tarfile.TarInfo("keep")
        keep.size = 1
        tf.addfile(keep, io.BytesIO(b"k"))
    out = rebuild_tar(buf.getvalue(), {0: None})
    with tarfile.open(fileobj=io.BytesIO(out)) as tf:
        assert tf.getnames() == ["keep"]
    with pytest.raises(RebuildError, match="not a plain file"):
        rebuild_tar(buf.getvalue(), {1: b"x"})


# -- only the listed members survive a rebuild ----------------------------------------------


def unlisted(data: bytes, *names: str) -> bytes:
    """``data`` with the central records of ``names`` dropped: their local entries stay where
    they are, hidden from every reader that goes by the central directory."""
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        infos = zf.infolist()
        start = zf.start_dir
    records, pos = [], start
    for info in infos:
        n, m, k = struct.unpack_from("<3H", data, pos + 28)
        end = pos + 46 + n + m + k
        if info.filename not in names:
            records.append(data[pos:end])
        pos = end
    directory = b"".join(records)
    end = struct.pack("<4s4H2LH", b"PK\x05\x06", 0, 0, len(records), len(records),
                      len(directory), start, 0)
    return data[:start] + directory + end


def hidden_entries(clean: bytes, infected: bytes, hidden: bytes) -> bytes:
    """A zip listing clean.txt and eicar.com, with two deflated local entries the central
    directory does not list: hidden1.com before eicar.com, hidden2.com after it."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("clean.txt", clean)
        zf.writestr("hidden1.com", hidden)
        zf.writestr("eicar.com", infected, compress_type=zipfile.ZIP_STORED)
        zf.writestr("hidden2.com", hidden)
    return unlisted(buf.getvalue(), "hidden1.com", "hidden2.com")


def deflated(data: bytes) -> bytes:
    packer = zlib.compressobj(9, zlib.DEFLATED, -15)
    return packer.compress(data) + packer.flush()


def test_zip_rebuild_drops_entries_the_central_directory_does_not_list():
    data = hidden_entries(b"hello\n" * 20, EICAR, EICAR)
    assert data.count(deflated(EICAR)) == 2 and data.count(b"hidden") == 2
    assert numbers(data) == {"clean.txt": 0, "eicar.com": 1}
    for edits in ({1: None}, {1: b"replaced"}, {}):
        out = rebuild_zip(data, edits)
        assert deflated(EICAR) not in out and b"hidden" not in out
        with zipfile.ZipFile(io.BytesIO(out)) as zf:
            assert zf.testzip() is None and zf.read("clean.txt") == b"hello\n" * 20
        # The local entries, read one after another, are the listed ones and nothing else.
        assert out.count(b"PK\x03\x04") == 2 - (1 in edits and edits[1] is None)


def test_zip_rebuild_drops_bytes_before_the_first_member_and_around_the_directory():
    inner = zip_bytes({"a.txt": b"a\n", "b.txt": b"b\n"})
    with zipfile.ZipFile(io.BytesIO(inner)) as zf:
        start = zf.start_dir
    junk = b"junk " + deflated(EICAR)
    eocd = inner.rindex(b"PK\x05\x06")
    end = inner[eocd:eocd + 16] + struct.pack("<L", start + len(junk)) + inner[eocd + 20:]
    # Recorded offsets count from the zip's start, as after a stub was put in front.
    data = junk + inner[:start] + junk + inner[start:eocd] + end + junk
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        assert zf.read("b.txt") == b"b\n"
    out = rebuild_zip(data, {0: None})
    assert b"junk" not in out and deflated(EICAR) not in out
    with zipfile.ZipFile(io.BytesIO(out)) as zf:
        assert zf.testzip() is None and zf.namelist() == ["b.txt"]
        assert zf.getinfo("b.txt").header_offset == 0


def test_zip_data_descriptors_are_kept_with_their_member(tmp_path):
    (tmp_path / "a.txt").write_bytes(b"plain text\n" * 30)
    (tmp_path / "b.txt").write_bytes(b"other\n" * 30)
    run("zip", "-q", "-fd", "x.zip", "a.txt", "b.txt", cwd=tmp_path)
    data = (tmp_path / "x.zip").read_bytes()
    assert data.count(b"PK\x07\x08") == 2
    out = rebuild_zip(data, {})
    assert out.count(b"PK\x07\x08") == 2 and len(out) == len(data)
    # A descriptor that disagrees with the central directory: the zip is refused.
    at = data.index(b"PK\x07\x08")
    broken = data[:at + 4] + bytes(4) + data[at + 8:]
    with pytest.raises(RebuildError, match="no data descriptor matching 'a.txt'"):
        rebuild_zip(broken, {})


def tar_with_hidden_bytes(hidden: bytes, infected: bytes) -> bytes:
    """A tar of ok.txt (one byte) and eicar.com with ``hidden`` in ok.txt's padding and
    after the end-of-archive blocks, where no tar reader shows it."""
    data = bytearray(tar_of([("ok.txt", b"k"), ("eicar.com", infected)]))
    assert len(hidden) < 511 and data[513:1024] == bytes(511)
    data[513:513 + len(hidden)] = hidden
    return bytes(data) + hidden


def test_tar_rebuild_keeps_only_the_members_headers_and_data():
    hidden = b"hidden " + deflated(EICAR)
    data = tar_with_hidden_bytes(hidden, EICAR)
    assert numbers(data) == {"ok.txt": 0, "eicar.com": 1}
    for edits in ({1: None}, {1: b"replaced"}, {}):
        out = rebuild_tar(data, edits)
        assert hidden not in out and b"hidden" not in out and len(out) % 10240 == 0
        with tarfile.open(fileobj=io.BytesIO(out)) as tf:
            assert tf.extractfile("ok.txt").read() == b"k"
            assert tf.getnames() == ["ok.txt"] + (["eicar.com"] if edits.get(1, 1) else [])
        # ok.txt's padding is zeros again; after the last member's data come zeros only.
        assert out[512:1024] == b"k" + bytes(511)
        assert out.rstrip(b"\0").endswith(edits.get(1, EICAR) or b"k")


def test_tar_rebuild_with_no_edits_gives_back_a_plain_tar_unchanged(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.txt").write_bytes(b"a" * 1000)
    (src / "b.txt").write_bytes(b"b" * 10)
    run("tar", "--format=pax", "-cf", str(tmp_path / "x.tar"), "a.txt", "b.txt", cwd=src)
    data = (tmp_path / "x.tar").read_bytes()
    assert rebuild_tar(data, {}) == data
