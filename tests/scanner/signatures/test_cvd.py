"""ClamAV database containers: genuine signed files load, every kind of damage is refused."""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest

from lmsav.scanner.signatures import cvd
from lmsav.scanner.signatures.cvd import ContainerError, read_container

DATA = Path(__file__).parent / "data" / "cvd"
TEST_CERTS = DATA / "certs"  # ClamAV's TEST root: trusted by these tests only
SIGNED_AT = 1743300000  # 30 March 2025, inside the TEST chain's validity (it ends March 2027)
BUILD_TIME = "04 Dec 2026 05-21 +0000"
STIME = 1796361687


def copy(tmp_path: Path, *names: str) -> Path:
    for name in names:
        shutil.copy(DATA / name, tmp_path / name)
    return tmp_path / names[0]


def refused(path: Path, **kwargs) -> str:
    with pytest.raises(ContainerError) as caught:
        read_container(path, **kwargs)
    message = str(caught.value)
    assert "\n" not in message and message.startswith(f"{path.name}: ")
    return message


def flip(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))


def tar_of(members: dict[str, bytes]) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return out.getvalue()


def members_of(container: Path) -> dict[str, bytes]:
    """The tar members of a genuine container, read with the standard library alone."""
    with tarfile.open(fileobj=io.BytesIO(container.read_bytes()[512:])) as tar:
        return {m.name: tar.extractfile(m).read() for m in tar.getmembers()}


def info_text(databases: dict[str, bytes], version: int = 7, sigs: int = 1,
              flevel: int = 90) -> str:
    lines = [f"ClamAV-VDB:{BUILD_TIME}:{version}:{sigs}:{flevel}:X:X:lmsav:{STIME}"]
    lines += [f"{n}:{len(d)}:{hashlib.sha256(d).hexdigest()}" for n, d in databases.items()]
    return "\n".join(lines) + "\n"


def write_cud(path: Path, databases: dict[str, bytes], info: str | None = None,
              version: int = 7, sigs: int = 1, flevel: int = 90) -> Path:
    """A .cud laid out as `sigtool --build --unsigned` lays it out."""
    info = info_text(databases, version, sigs, flevel) if info is None else info
    members = {"COPYING": b"test database\n", f"{path.stem}.info": info.encode(), **databases}
    body = gzip.compress(tar_of(members))
    header = f"ClamAV-VDB:{BUILD_TIME}:{version}:{sigs}:{flevel}:{hashlib.md5(body).hexdigest()}" \
             f":X:lmsav:{STIME}"
    path.write_bytes(header.ljust(512).encode() + body)
    return path


def write_cld(path: Path, members: dict[str, bytes], compress: bool = False) -> Path:
    """A .cld laid out as freshclam's buildcld lays it out: the .info's first line as header."""
    info = next(d for n, d in members.items() if n.endswith(".info"))
    header = info.split(b"\n", 1)[0].ljust(512, b" ")
    body = tar_of(members)
    path.write_bytes(header + (gzip.compress(body) if compress else body))
    return path


HDB = b"44d88612fea8a8f36de82e1278abb02f:68:Lmsav.Test.Hash\n"
needs_openssl = pytest.mark.skipif(shutil.which("openssl") is None,
                                   reason="the openssl program verifies .sign files")
NDB = b"Lmsav.Test.Body:0:*:6c6d7361762074657374\n"


# -- genuine signed containers -----------------------------------------------------------------

@needs_openssl
def test_genuine_cvd_verifies_with_its_sign_file_and_the_test_root(tmp_path):
    path = copy(tmp_path, "test-3.cvd", "test-3.cvd.sign")
    container = read_container(path, trust_dirs=[TEST_CERTS], check_time=SIGNED_AT)
    assert container.kind == "cvd"
    assert container.signature_status == "verified (.sign, ClamAV TEST CVD Signing Cert)"
    assert container.header == cvd.Header(
        build_time="22 Jun 2021 20-40 -0400", version=3, signatures=11, flevel=81,
        md5="75c84c7f1a2d37d9c2a37b2bc9b3a670", dsig=container.header.dsig, builder="raynman",
        stime=1624408809)
    assert list(container.members)[:4] == ["COPYING", "test.info", "test.cfg", "test.hdb"]
    assert container.members == members_of(path)
    assert container.info_checked


def test_genuine_cvd_without_sign_file_verifies_with_clamav_classic_key(tmp_path):
    path = copy(tmp_path, "test-3.cvd")
    assert read_container(path).signature_status == "verified (ClamAV key)"


def test_old_bytecode_cvd_verifies_and_exposes_its_functionality_level(tmp_path):
    container = read_container(copy(tmp_path, "bytecode.cvd"))
    assert container.signature_status == "verified (ClamAV key)"
    assert (container.header.version, container.header.flevel) == (19, 51)
    assert sorted(container.members) == [
        "767942.cbc", "767944.cbc", "782872.cbc", "COPYING", "bytecode.info", "last.hdb"]


@needs_openssl
def test_sign_file_chained_to_an_untrusted_root_refuses_the_container(tmp_path):
    # lmsav's own store holds only ClamAV's real root; like ClamAV 1.5, a .sign that does not
    # verify refuses the container rather than falling back to the classic signature.
    path = copy(tmp_path, "test-3.cvd", "test-3.cvd.sign")
    message = refused(path, check_time=SIGNED_AT)
    assert "test-3.cvd.sign does not verify" in message
    assert "issuer certificate" in message


@needs_openssl
def test_sign_file_checked_after_its_chain_expired_refuses_the_container(tmp_path):
    path = copy(tmp_path, "test-3.cvd", "test-3.cvd.sign")
    message = refused(path, trust_dirs=[TEST_CERTS], check_time=SIGNED_AT + 3 * 365 * 86400)
    assert "expired" in message


def test_body_changed_under_a_sign_file_is_refused(tmp_path):
    path = copy(tmp_path, "test-3.cvd", "test-3.cvd.sign")
    flip(path, 4000)
    assert "MD5" in refused(path, trust_dirs=[TEST_CERTS], check_time=SIGNED_AT)


def test_sign_file_of_another_version_is_not_looked_for(tmp_path):
    path = copy(tmp_path, "test-3.cvd")
    shutil.copy(DATA / "test-3.cvd.sign", tmp_path / "test-4.cvd.sign")
    assert cvd.sign_file_for(path, 3) == tmp_path / "test-3.cvd.sign"
    assert cvd.sign_file_for(tmp_path / "daily.cvd", 27000).name == "daily-27000.cvd.sign"
    assert read_container(path).signature_status == "verified (ClamAV key)"


def test_unusable_sign_file_falls_back_to_the_classic_signature(tmp_path):
    path = copy(tmp_path, "test-3.cvd")
    (tmp_path / "test-3.cvd.sign").write_text("not a clamsign file\n")
    assert read_container(path).signature_status == "verified (ClamAV key)"


def test_missing_certificate_directory_is_reported(tmp_path):
    path = copy(tmp_path, "test-3.cvd", "test-3.cvd.sign")
    message = refused(path, trust_dirs=[tmp_path / "nowhere"])
    assert "certificate directory" in message and "nowhere" in message


# -- damage to a signed .cvd -------------------------------------------------------------------

def _field_offsets(path: Path) -> dict[str, int]:
    header = path.read_bytes()[:512].decode()
    names = ["magic", "build_time", "version", "signatures", "flevel", "md5", "dsig", "builder",
             "stime"]
    offsets, position = {}, 0
    for name, text in zip(names, header.split(":")):
        offsets[name] = position
        position += len(text) + 1
    offsets["padding"] = len(header.rstrip(" ")) + 3
    return offsets


@pytest.mark.parametrize("field", ["magic", "build_time", "version", "signatures", "flevel",
                                   "md5", "dsig", "builder", "stime", "padding"])
def test_a_flipped_header_byte_is_refused(tmp_path, field):
    path = copy(tmp_path, "test-3.cvd")
    flip(path, _field_offsets(path)[field])
    refused(path)


@pytest.mark.parametrize("offset", [512, 515, 600, 2000, 5000, 9000, -9, -1])
def test_a_flipped_body_byte_is_refused(tmp_path, offset):
    path = copy(tmp_path, "test-3.cvd")
    flip(path, offset if offset >= 0 else path.stat().st_size + offset)
    assert "MD5" in refused(path)


@pytest.mark.parametrize("length", [0, 100, 511, 512, 513, 600, 5000, -1])
def test_a_truncated_container_is_refused(tmp_path, length):
    path = copy(tmp_path, "test-3.cvd")
    data = path.read_bytes()
    path.write_bytes(data[:length])
    refused(path)


def test_cvd_whose_header_has_no_signature_is_refused(tmp_path):
    path = copy(tmp_path, "test-3.cvd")
    data = path.read_bytes()
    header = data[:512].decode()
    fields = header.rstrip(" ").split(":")
    fields[6] = "X"
    path.write_bytes(":".join(fields).ljust(512).encode() + data[512:])
    assert "no digital signature" in refused(path)


def test_cvd_with_another_containers_signature_is_refused(tmp_path):
    path = copy(tmp_path, "test-3.cvd")
    other = (DATA / "bytecode.cvd").read_bytes()[:512].decode().split(":")[6]
    data = path.read_bytes()
    fields = data[:512].decode().rstrip(" ").split(":")
    fields[6] = other
    path.write_bytes(":".join(fields).ljust(512).encode() + data[512:])
    assert "bad digital signature" in refused(path)


def test_not_a_container(tmp_path):
    (tmp_path / "x.cvd").write_bytes(b"PK\x03\x04" + b"\0" * 600)
    assert "ClamAV-VDB" in refused(tmp_path / "x.cvd")
    (tmp_path / "x.txt").write_bytes((DATA / "test-3.cvd").read_bytes())
    assert "not a .cvd, .cld or .cud file" in refused(tmp_path / "x.txt")


def test_read_header_reads_only_the_header(tmp_path):
    path = copy(tmp_path, "test-3.cvd")
    with open(path, "r+b") as fh:
        fh.truncate(600)
    assert cvd.read_header(path).version == 3


# -- .cld: patched official containers ---------------------------------------------------------

def test_cld_loads_with_its_signed_info_only(tmp_path):
    members = members_of(DATA / "test-3.cvd")
    container = read_container(write_cld(tmp_path / "test.cld", members), require_signature=True)
    assert container.kind == "cld"
    assert container.signature_status == "not checked (.cld); .info verified (ClamAV key)"
    assert container.members == members
    assert container.header.md5 == "X"


def test_compressed_cld_loads(tmp_path):
    members = members_of(DATA / "test-3.cvd")
    path = write_cld(tmp_path / "test.cld", members, compress=True)
    assert read_container(path).members == members


@pytest.mark.parametrize("damage", ["member data", "member header", "info entry", "info dsig",
                                    "header version", "header builder", "header stime"])
def test_damaged_cld_is_refused(tmp_path, damage):
    path = write_cld(tmp_path / "test.cld", members_of(DATA / "test-3.cvd"))
    data = path.read_bytes()
    body = data[512:]
    hdb_header = body.index(b"test.hdb\0")
    info = body.index(b"test.cfg:")
    offsets = {
        "member data": 512 + hdb_header + 512 + 3,
        "member header": 512 + hdb_header + 2,
        "info entry": 512 + info + 12,
        "info dsig": 512 + body.index(b"DSIG:") + 20,
        "header version": data.index(b":3:"),
        "header builder": data.index(b"raynman"),
        "header stime": data.index(b"1624408809"),
    }
    flip(path, offsets[damage] + (1 if damage.startswith("header ") else 0))
    refused(path)


def test_flipped_bytes_anywhere_in_a_cld_are_refused(tmp_path):
    # Unprotected, as in ClamAV, and meaningless to a scanner: the COPYING text and the
    # header's MD5 and signature fields, which a .cld leaves as "X".
    members = members_of(DATA / "test-3.cvd")
    original = write_cld(tmp_path / "test.cld", members).read_bytes()
    copying = range(1024, 1024 + len(members["COPYING"]))
    unused = {original.index(b":X:X:") + 1, original.index(b":X:X:") + 3}
    path = tmp_path / "flipped" / "test.cld"
    path.parent.mkdir()
    for offset in range(0, len(original), 19):
        if offset in copying or offset in unused:
            continue
        damaged = bytearray(original)
        damaged[offset] ^= 0x01
        path.write_bytes(bytes(damaged))
        refused(path)


def test_cld_tampered_consistently_but_without_the_info_signature_is_refused(tmp_path):
    members = members_of(DATA / "test-3.cvd")
    members["test.hdb"] += b"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa:1:Evil.Allow\n"
    info = members["test.info"].split(b"DSIG:")[0].decode().splitlines()
    info = [line if not line.startswith("test.hdb:") else
            f"test.hdb:{len(members['test.hdb'])}:{hashlib.sha256(members['test.hdb']).hexdigest()}"
            for line in info]
    members["test.info"] = ("\n".join(info) + "\n").encode()
    assert "no DSIG line" in refused(write_cld(tmp_path / "test.cld", members))


# -- .cud and .info checks ---------------------------------------------------------------------

def test_cud_loads_unsigned(tmp_path):
    path = write_cud(tmp_path / "local.cud", {"local.hdb": HDB, "local.ndb": NDB}, sigs=2)
    container = read_container(path)
    assert (container.kind, container.signature_status) == ("cud", "unsigned (.cud)")
    assert container.members["local.hdb"] == HDB and container.members["local.ndb"] == NDB
    assert list(container.members) == ["COPYING", "local.info", "local.hdb", "local.ndb"]


def test_cud_refused_where_a_signature_is_required(tmp_path):
    path = write_cud(tmp_path / "local.cud", {"local.hdb": HDB})
    assert "signature is required" in refused(path, require_signature=True)


@pytest.mark.parametrize("change, reason", [
    (lambda t: t.replace(hashlib.sha256(HDB).hexdigest(), "0" * 64), "SHA-256 does not match"),
    (lambda t: t.replace(f":{len(HDB)}:", f":{len(HDB) + 1}:"), "bytes, local.info says"),
    (lambda t: t + f"local.ldb:3:{'0' * 64}\n", "lists local.ldb, which is not in the container"),
    (lambda t: "\n".join(t.splitlines()[:1]) + "\n", "local.hdb is not listed in local.info"),
    (lambda t: t.replace(":7:1:90:", ":8:1:90:", 1), "version"),
    (lambda t: t.replace(":7:1:90:", ":7:1:91:", 1), "flevel"),
    (lambda t: t + "local.ldb:3\n", "expected NAME:SIZE:SHA256"),
    (lambda t: t.split("\n", 1)[1], "header line first"),
])
def test_info_mismatch_is_refused(tmp_path, change, reason):
    databases = {"local.hdb": HDB}
    path = write_cud(tmp_path / "local.cud", databases, info=change(info_text(databases)))
    assert reason in refused(path)


def test_container_without_info_is_refused(tmp_path):
    body = gzip.compress(tar_of({"COPYING": b"x", "local.hdb": HDB}))
    header = f"ClamAV-VDB:{BUILD_TIME}:7:1:90:{hashlib.md5(body).hexdigest()}:X:lmsav:{STIME}"
    (tmp_path / "local.cud").write_bytes(header.ljust(512).encode() + body)
    assert "no .info member" in refused(tmp_path / "local.cud")


@pytest.mark.parametrize("name", ["../evil.hdb", "dir/local.hdb", "..", "a..hdb"])
def test_member_names_leaving_the_container_are_refused(tmp_path, name):
    databases = {"local.hdb": HDB}
    members = {"COPYING": b"x", "local.info": info_text(databases).encode(), **databases,
               name: b"x"}
    body = gzip.compress(tar_of(members))
    header = f"ClamAV-VDB:{BUILD_TIME}:7:1:90:{hashlib.md5(body).hexdigest()}:X:lmsav:{STIME}"
    (tmp_path / "local.cud").write_bytes(header.ljust(512).encode() + body)
    assert "corrupt tar" in refused(tmp_path / "local.cud")


def test_directory_members_are_refused(tmp_path):
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        tar.addfile(tarfile.TarInfo("COPYING"), io.BytesIO(b""))
        entry = tarfile.TarInfo("sub")
        entry.type = tarfile.DIRTYPE
        tar.addfile(entry)
    (tmp_path / "x.cld").write_bytes(b"ClamAV-VDB:t:1:1:1:X:X:b:1".ljust(512) + out.getvalue())
    assert "not a plain file" in refused(tmp_path / "x.cld")


def test_member_limits(tmp_path, monkeypatch):
    databases = {f"local{i}.hdb": HDB for i in range(5)}
    path = write_cud(tmp_path / "local.cud", databases)
    monkeypatch.setattr(cvd, "MAX_MEMBERS", 4)
    assert "more than 4 members" in refused(path)
    monkeypatch.setattr(cvd, "MAX_MEMBERS", 10_000)
    monkeypatch.setattr(cvd, "MAX_MEMBER_SIZE", 20)
    assert "more than the 20 allowed" in refused(path)


def test_corrupt_gzip_is_refused(tmp_path):
    path = write_cud(tmp_path / "local.cud", {"local.hdb": HDB})
    data = path.read_bytes()
    body = data[512:-20] + b"\0" * 20  # keep a matching MD5 so the gzip check itself speaks
    header = data[:512].decode().rstrip(" ").split(":")
    header[5] = hashlib.md5(body).hexdigest()
    path.write_bytes(":".join(header).ljust(512).encode() + body)
    assert "corrupt gzip body" in refused(path)


# -- the classic signature and .sign functions on their own ------------------------------------

def test_verify_dsig_checks_a_cdiff_and_refuses_changes():
    data = (DATA / "test-2.cdiff").read_bytes()
    signed, dsig = data.rsplit(b":", 1)
    digest = hashlib.sha256(signed).digest()
    assert cvd.verify_dsig(digest, dsig.decode(), "cdiff")
    assert not cvd.verify_dsig(digest, dsig.decode(), "info")  # another key
    assert not cvd.verify_dsig(hashlib.sha256(signed + b" ").digest(), dsig.decode(), "cdiff")
    assert not cvd.verify_dsig(digest, "!" + dsig.decode()[1:], "cdiff")


@needs_openssl
def test_verify_sign_file_on_a_cdiff():
    data = (DATA / "test-2.cdiff").read_bytes()
    sign = DATA / "test-2.cdiff.sign"
    assert cvd.verify_sign_file(data, sign, [TEST_CERTS], check_time=SIGNED_AT) \
        == "ClamAV TEST CVD Signing Cert"
    with pytest.raises(cvd.SignFileError):
        cvd.verify_sign_file(data + b"x", sign, [TEST_CERTS], check_time=SIGNED_AT)
    assert cvd.verify_sign_file(data, DATA / "missing.sign", [TEST_CERTS]) is None


def test_lmsav_trust_store_holds_clamav_root_and_no_test_certificate():
    pems = cvd.trusted_certificates()
    assert len(pems) == 1
    assert (cvd.default_cert_dir() / "clamav.crt").read_bytes().strip() == pems[0].strip()
    assert len(cvd.trusted_certificates([TEST_CERTS])) == 2


# -- real ClamAV tools as the oracle -----------------------------------------------------------

needs_clamav = pytest.mark.skipif(
    shutil.which("sigtool") is None or shutil.which("clamscan") is None,
    reason="ClamAV's sigtool and clamscan are not installed")


def sigtool_cud(workdir: Path, databases: dict[str, bytes], name: str = "lmsavtest.cud",
                version: int = 7) -> Path:
    """Build ``name`` with ``sigtool --build --unsigned`` as a database maintainer would:
    database files and a COPYING file in the working directory, builder name in SIGNDUSER."""
    build = workdir / "build"
    empty = workdir / "no-current-database"
    build.mkdir()
    empty.mkdir()
    (build / "COPYING").write_text("lmsav test database\n")
    for member, data in databases.items():
        (build / member).write_bytes(data)
    env = dict(os.environ, SIGNDUSER="lmsav")
    for attempt in range(4):
        # sigtool refuses a body whose MD5 starts with 00 (ClamAV 1.1-1.4 fail to verify those);
        # another modification time changes the tar, so try again.
        os.utime(build / "COPYING", (1_700_000_000 + attempt, 1_700_000_000 + attempt))
        result = subprocess.run(
            ["sigtool", f"--build={name}", "--unsigned", f"--cvd-version={version}",
             f"--datadir={empty}", "--flevel=90"],
            cwd=build, env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True)
        if result.returncode == 0:
            return build / name
    pytest.fail(f"sigtool --build failed: {result.stdout}{result.stderr}")


def _clamscan(database_dir: Path, *files: Path) -> subprocess.CompletedProcess:
    return subprocess.run(["clamscan", "--no-summary", "--bytecode=no", "-d", str(database_dir),
                           *map(str, files)], capture_output=True, text=True)


@pytest.mark.integration
@needs_clamav
def test_sigtool_unsigned_cud_loads_and_clamscan_detects_what_its_members_describe(tmp_path):
    sample = b"lmsav cud container test sample\n"
    hdb = f"{hashlib.md5(sample).hexdigest()}:{len(sample)}:Lmsav.Test.CudSample\n".encode()
    cud = sigtool_cud(tmp_path, {"lmsavtest.hdb": hdb, "lmsavtest.ndb": NDB})

    container = read_container(cud)
    assert (container.kind, container.signature_status) == ("cud", "unsigned (.cud)")
    assert container.members["lmsavtest.hdb"] == hdb
    assert container.members["lmsavtest.ndb"] == NDB
    assert container.header.flevel == 90 and container.header.builder == "lmsav"

    database = tmp_path / "db"
    database.mkdir()
    shutil.copy(cud, database / cud.name)
    (tmp_path / "sample.txt").write_bytes(sample)
    result = _clamscan(database, tmp_path / "sample.txt")
    assert result.returncode == 1, result.stderr
    # ClamAV marks names from an unsigned container .UNOFFICIAL.
    name = container.members["lmsavtest.hdb"].decode().strip().split(":")[2]
    assert f"sample.txt: {name}.UNOFFICIAL FOUND" in result.stdout


@pytest.mark.integration
@needs_clamav
@pytest.mark.parametrize("build", ["sigtool cud", "genuine cvd", "cld"])
def test_clamscan_and_lmsav_accept_and_refuse_the_same_containers(tmp_path, build):
    if build == "sigtool cud":
        path = sigtool_cud(tmp_path, {"lmsavtest.hdb": HDB})
        member = "lmsavtest.hdb"
    elif build == "genuine cvd":
        path = copy(tmp_path, "test-3.cvd")
        member = None
    else:
        path = write_cld(tmp_path / "test.cld", members_of(DATA / "test-3.cvd"))
        member = "test.hdb"
    clean = tmp_path / "clean.txt"
    clean.write_text("nothing to see\n")

    good = tmp_path / "good"
    good.mkdir()
    shutil.copy(path, good / path.name)
    assert _clamscan(good, clean).returncode == 0
    read_container(good / path.name)

    bad = tmp_path / "bad"
    bad.mkdir()
    shutil.copy(path, bad / path.name)
    if member is None:
        flip(bad / path.name, 5000)
    else:
        # Change one database member but keep the container's MD5 right, so only the
        # .info check can catch it.
        members = cvd.read_container(path).members
        members[member] = members[member].replace(b"Lmsav", b"Lmsax").replace(b"Test", b"Tesu")
        assert members[member] != cvd.read_container(path).members[member]
        if build == "cld":
            write_cld(bad / path.name, members)
        else:
            body = gzip.compress(tar_of(members))
            fields = path.read_bytes()[:512].decode().rstrip(" ").split(":")
            fields[5] = hashlib.md5(body).hexdigest()
            (bad / path.name).write_bytes(":".join(fields).ljust(512).encode() + body)
    assert _clamscan(bad, clean).returncode == 2
    refused(bad / path.name)
