"""ClamAV's database containers (.cvd .cld .cud): header, signatures, tar body and .info checks.

A container is a 512-byte space-padded header line
``ClamAV-VDB:build time:version:signatures:flevel:MD5:dsig:builder:build time in seconds``
followed by a tar of database files (gzip-compressed, except a ``.cld`` whose tar starts plainly
with its ``COPYING`` member). What is checked follows libclamav (cvd.c, readdb.c, dsig.c and the
Rust cvd.rs/codesign.rs of ClamAV 1.5):

- ``.cvd`` (official, downloaded whole): a detached ``<name>-<version>.cvd.sign`` next to it is
  tried first, against the trust store; a signature there that does not verify refuses the
  container. With no usable ``.sign`` file the header's digital signature over the body's MD5 is
  checked with ClamAV's classic key. A ``.cvd`` is never loaded unverified.
- ``.cld`` (a ``.cvd`` that freshclam patched with ``.cdiff`` updates): no container signature
  (its header is the first line of its ``.info`` file), but the ``.info`` file's own ``DSIG:``
  line must verify, and it pins the size and SHA-256 of every database member.
- ``.cud`` (built by ``sigtool --build --unsigned``): no signature at all; its ``.info`` still
  pins the members. ClamAV reports its detections as ``.UNOFFICIAL``.

Every kind must hold a ``.info`` member whose header line repeats the container's version,
signature count, functionality level and build time, and every database member (ClamAV's
``CLI_DBEXT`` suffixes) must be listed there with its size and SHA-256. lmsav is stricter than
ClamAV where ClamAV silently loads less: every member the ``.info`` lists must be present (ClamAV
skips a missing one, so a ``.cld`` cut at a member boundary would load partly), the header's
build-time text and builder must match the ``.info`` header too (ClamAV does not compare them,
so no signature protected them), tar header checksums and padding must be right, and the MD5
field is compared with the body for every kind that carries one.

Functionality level: ``Header.flevel`` is the minimum engine level the container was built for.
When it is higher than the engine's, ClamAV only warns ("This version of the ClamAV engine is
outdated") and loads the container anyway; each signature inside carries its own level limits,
which the engine honours line by line.

The classic signatures use pure integer arithmetic rather than ``cryptography``: the ``.cvd``
scheme is textbook RSA (the plain MD5 is the message, no padding) and the ``.info``/``.cdiff``
scheme is a PSS-like encoding that ClamAV lays out for a 2048-bit block whatever the key size,
masking one bit where PSS masks two; ``cryptography`` can express neither. ``.sign`` files are
PKCS#7, which ``cryptography`` can create but not verify; they are checked by the ``openssl``
program, with the same OpenSSL ``PKCS7_verify`` rules (S/MIME signing purpose, chain to a
trusted certificate) that ClamAV applies. Without that program a ``.sign`` file counts as
unusable and the classic signature decides, as when ClamAV has no certs directory.
"""

from __future__ import annotations

import base64
import binascii
import gzip
import hashlib
import io
import os
import re
import shutil
import subprocess
import tempfile
import tomllib
import zlib
from dataclasses import dataclass
from functools import cache
from importlib import resources
from pathlib import Path

HEADER_SIZE = 512
KINDS = {".cvd": "cvd", ".cld": "cld", ".cud": "cud"}
MAX_MEMBER_SIZE = 2 << 30
MAX_MEMBERS = 10_000
MAX_TOTAL_SIZE = 4 << 30
MAX_TRAILING_ZEROS = 64 << 10  # tar writers pad the end-of-archive marker to a record

# Member names libclamav loads from a container, so each must be listed in the .info file
# (libclamav/readdb.h CLI_DBEXT, in a build with YARA, as Debian's is).
DATABASE_SUFFIXES = (
    ".db", ".hdb", ".hdu", ".fp", ".mdb", ".mdu", ".hsb", ".hsu", ".sfp", ".msb", ".msu",
    ".ndb", ".ndu", ".ldb", ".ldu", ".sdb", ".zmd", ".rmd", ".pdb", ".gdb", ".wdb", ".cbc",
    ".ftm", ".cfg", ".cvd", ".cld", ".cud", ".cdb", ".cat", ".crb", ".idb", ".ioc", ".yar",
    ".yara", ".pwdb", ".ign", ".ign2", ".imp",
)

CLASSIC_KEYS_FILE = "clamav-classic-keys.toml"
# ClamAV's base64 variant for classic signatures: lower case first, least significant digit first.
_DIGITS = {c: i for i, c in enumerate(
    "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789+/")}
_MAX_DSIG_CHARS = 1024
_PSS_BYTES = 256  # the block ClamAV decodes .info/.cdiff signatures into (2048 bits)
_SALT_BYTES = 32
_CERT_BLOCK = re.compile(rb"-----BEGIN CERTIFICATE-----\r?\n.+?-----END CERTIFICATE-----", re.DOTALL)


class ContainerError(Exception):
    """A container that must not be loaded; ``str()`` is one line: ``<file name>: <reason>``."""

    def __init__(self, path, reason: str):
        self.path = Path(path)
        self.reason = " ".join(str(reason).split())
        super().__init__(f"{self.path.name}: {self.reason}")


class SignFileError(Exception):
    """A ``.sign`` file holds a PKCS#7 signature that does not verify: refuse the signed file."""


@dataclass(frozen=True)
class Header:
    build_time: str
    version: int
    signatures: int
    flevel: int
    md5: str  # "X" or empty where the builder wrote none (.cld, the .info copy)
    dsig: str
    builder: str
    stime: int  # build time in seconds since the epoch


@dataclass
class Container:
    path: Path
    kind: str  # "cvd", "cld" or "cud"
    header: Header
    signature_status: str
    members: dict[str, bytes]  # every tar member (COPYING, *.info, databases) in tar order
    info_checked: bool = True  # always: a container without a valid .info is refused


# -- reading a container -----------------------------------------------------------------------

def read_container(path, trust_dirs=(), require_signature: bool = False, *,
                   check_time: int | None = None) -> Container:
    """Read, verify and unpack one container, or raise ContainerError.

    ``trust_dirs`` add administrator certificate directories to lmsav's own (``*.crt``/``*.pem``
    files, for ``.sign`` files). ``require_signature`` also refuses a ``.cud``; a ``.cvd``
    signature and a ``.cld``'s signed ``.info`` are always checked. ``check_time`` (Unix
    seconds) is when certificates must be valid; the default is now.
    """
    path = Path(path)
    kind = KINDS.get(path.suffix.lower())
    if kind is None:
        raise ContainerError(path, "not a .cvd, .cld or .cud file")
    try:
        raw = path.read_bytes()
    except OSError as err:
        raise ContainerError(path, f"cannot read: {err.strerror}") from None
    header = _container_header(path, raw[:HEADER_SIZE])
    body = memoryview(raw)[HEADER_SIZE:]
    if not body:
        raise ContainerError(path, "truncated: nothing follows the 512-byte header")
    body_md5 = hashlib.md5(body)
    if len(header.md5) == 32 and body_md5.hexdigest() != header.md5:
        raise ContainerError(path, "MD5 of the body does not match the header (changed or cut)")
    if kind == "cvd":
        status = _verify_cvd(path, raw, header, body_md5.digest(), trust_dirs, check_time)
    elif kind == "cld":
        status = "not checked (.cld); .info verified (ClamAV key)"
    elif require_signature:
        raise ContainerError(path, "unsigned container (.cud) where a signature is required")
    else:
        status = "unsigned (.cud)"
    members = _unpack(path, raw)
    _check_info(path, kind, header, members)
    return Container(path, kind, header, status, members)


def read_header(path) -> Header:
    """Only the header (version, level …), e.g. to choose between daily.cvd and daily.cld."""
    path = Path(path)
    try:
        with open(path, "rb") as fh:
            head = fh.read(HEADER_SIZE)
    except OSError as err:
        raise ContainerError(path, f"cannot read: {err.strerror}") from None
    return _container_header(path, head)


def parse_header(line: str) -> Header:
    """Parse a header line (container header without its padding, or a .info first line)."""
    fields = line.split(":")
    if fields[0] != "ClamAV-VDB":
        raise ValueError("not a ClamAV database container (no ClamAV-VDB header)")
    if len(fields) != 9:
        raise ValueError(f"bad header: {len(fields)} fields where ClamAV writes 9")
    _, build_time, version, sigs, flevel, md5, dsig, builder, stime = fields
    numbers = []
    for label, text in (("version", version), ("signature count", sigs),
                        ("functionality level", flevel), ("build time in seconds", stime)):
        if not (text.isascii() and text.isdigit()) or len(text) > 19:
            raise ValueError(f"bad header: {label} {text[:24]!r} is not a number")
        numbers.append(int(text))
    return Header(build_time, numbers[0], numbers[1], numbers[2], md5, dsig, builder, numbers[3])


def _container_header(path: Path, head: bytes) -> Header:
    if len(head) < HEADER_SIZE:
        raise ContainerError(path, f"short header: {len(head)} bytes, a container starts with 512")
    try:
        return parse_header(head.decode("ascii").rstrip(" "))
    except UnicodeDecodeError:
        raise ContainerError(path, "bad header: bytes that are not ASCII") from None
    except ValueError as err:
        raise ContainerError(path, str(err)) from None


def _verify_cvd(path: Path, raw: bytes, header: Header, md5: bytes, trust_dirs,
                check_time: int | None) -> str:
    sign_path = sign_file_for(path, header.version)
    try:
        signer = verify_sign_file(raw, sign_path, trust_dirs, check_time=check_time)
    except SignFileError as err:
        raise ContainerError(path, f"{sign_path.name} does not verify: {err}") from None
    except OSError as err:
        raise ContainerError(path, f"certificate directory {err.filename}: {err.strerror}") \
            from None
    if signer is not None:
        return f"verified (.sign, {signer})"
    if len(header.dsig) <= 1:  # sigtool writes "X" where it has no signature
        raise ContainerError(path, "no digital signature in the header of a .cvd")
    if not verify_dsig(md5, header.dsig, "cvd"):
        raise ContainerError(path, "bad digital signature: it does not match ClamAV's key")
    return "verified (ClamAV key)"


# -- the tar body ------------------------------------------------------------------------------

class _Corrupt(Exception):
    pass


def _unpack(path: Path, raw: bytes) -> dict[str, bytes]:
    body = io.BytesIO(raw)  # shares raw's buffer: no copy of a large container
    body.seek(HEADER_SIZE)
    # ClamAV's own test: a tar that starts with its COPYING member is not compressed.
    if raw[HEADER_SIZE:HEADER_SIZE + 7] == b"COPYING":
        stream = body
    else:
        stream = gzip.GzipFile(fileobj=body, mode="rb")
    try:
        return _untar(stream)
    except _Corrupt as err:
        raise ContainerError(path, f"corrupt tar: {err}") from None
    except (OSError, EOFError, zlib.error) as err:
        raise ContainerError(path, f"corrupt gzip body: {err}") from None


def _untar(stream) -> dict[str, bytes]:
    """ClamAV's tar dialect: plain files only, names without directories, sizes in octal."""
    members: dict[str, bytes] = {}
    total = 0
    while True:
        block = stream.read(512)
        if not block:
            break  # sigtool and freshclam write no end-of-archive marker
        if len(block) < 512:
            raise _Corrupt("truncated inside a member header")
        if block[0] == 0:
            _expect_only_zeros(stream, block)
            break
        name = _member_name(block)
        _check_tar_checksum(block, name)
        if block[156:157] not in (b"0", b"\0"):
            raise _Corrupt(f"{name}: not a plain file (type {block[156:157]!r})")
        size = _octal(block[124:136], name)
        if size > MAX_MEMBER_SIZE:
            raise _Corrupt(f"{name}: {size} bytes, more than the {MAX_MEMBER_SIZE} allowed")
        total += size
        if total > MAX_TOTAL_SIZE:
            raise _Corrupt(f"more than {MAX_TOTAL_SIZE} bytes of members")
        if len(members) >= MAX_MEMBERS:
            raise _Corrupt(f"more than {MAX_MEMBERS} members")
        if name in members:
            raise _Corrupt(f"{name} appears twice")
        data = stream.read(size)
        if len(data) != size:
            raise _Corrupt(f"{name}: truncated ({len(data)} of {size} bytes)")
        padding = stream.read(-size % 512)
        if len(padding) != -size % 512:
            raise _Corrupt(f"{name}: truncated after its data")
        if padding.count(0) != len(padding):
            raise _Corrupt(f"{name}: bytes other than zeros pad its data")
        members[name] = data
    return members


def _member_name(block: bytes) -> str:
    raw = block[:100].split(b"\0", 1)[0]
    try:
        name = raw.decode("ascii")
    except UnicodeDecodeError:
        raise _Corrupt(f"member name {raw[:40]!r} is not ASCII") from None
    if "/" in name or ".." in name or not name.strip():
        raise _Corrupt(f"member name {name!r} is not a plain file name")
    return name


def _check_tar_checksum(block: bytes, name: str) -> None:
    stored = _octal(block[148:156], name, "checksum")
    rest = block[:148] + b" " * 8 + block[156:]
    unsigned = sum(rest)
    signed = unsigned - 256 * sum(1 for b in rest if b > 127)
    if stored not in (unsigned, signed):
        raise _Corrupt(f"{name}: header checksum does not match")


def _octal(field: bytes, name: str, what: str = "size") -> int:
    text = field.lstrip(b" ").rstrip(b" \0")  # digits, then only NUL or space terminators
    if not text or not all(48 <= c <= 55 for c in text):
        raise _Corrupt(f"{name}: bad {what} field {field!r}")
    return int(text, 8)


def _expect_only_zeros(stream, block: bytes) -> None:
    rest = stream.read(MAX_TRAILING_ZEROS + 1)
    if block.count(0) != len(block) or rest.count(0) != len(rest) \
            or len(rest) > MAX_TRAILING_ZEROS:
        raise _Corrupt("data after the end-of-archive marker (a damaged member header?)")


# -- the .info member --------------------------------------------------------------------------

def _check_info(path: Path, kind: str, header: Header, members: dict[str, bytes]) -> None:
    # Like libclamav: the first member named *.info describes the container.
    info_name = next((n for n in members if n.lower().endswith(".info")), None)
    if info_name is None:
        raise ContainerError(path, "no .info member (ClamAV refuses such a container)")
    try:
        info_header, entries = parse_info(members[info_name], signed=kind != "cud")
    except ValueError as err:
        raise ContainerError(path, f"{info_name}: {err}") from None
    for field in ("version", "signatures", "flevel", "stime", "build_time", "builder"):
        mine, theirs = getattr(header, field), getattr(info_header, field)
        if mine != theirs:
            raise ContainerError(path, f"{info_name}: its header says {field} {theirs!r}, "
                                       f"the container header {mine!r}")
    for name, (size, sha256) in entries.items():
        data = members.get(name)
        if data is None:
            raise ContainerError(path, f"{info_name} lists {name}, which is not in the container")
        if len(data) != size:
            raise ContainerError(path, f"{name} is {len(data)} bytes, {info_name} says {size}")
        if hashlib.sha256(data).hexdigest() != sha256:
            raise ContainerError(path, f"{name}: SHA-256 does not match {info_name}")
    for name in members:
        if name.lower().endswith(DATABASE_SUFFIXES) and name not in entries:
            raise ContainerError(path, f"{name} is not listed in {info_name}")


def parse_info(data: bytes, signed: bool) -> tuple[Header, dict[str, tuple[int, str]]]:
    """A ``.info`` file: header line, ``name:size:sha256`` lines, then (if signed) ``DSIG:``.

    The DSIG line signs the SHA-256 of every byte before it; lines after it are ignored, as
    libclamav ignores them. Raises ValueError with a reason.
    """
    header = None
    entries: dict[str, tuple[int, str]] = {}
    lines = data.split(b"\n")
    if lines[-1] == b"":
        lines.pop()
    offset = 0
    for number, raw in enumerate(lines, 1):
        if signed and raw.startswith(b"DSIG:"):
            digest = hashlib.sha256(data[:offset]).digest()
            if not verify_dsig(digest, raw[5:].decode("latin-1"), "info"):
                raise ValueError("bad DSIG: it does not match ClamAV's key")
            if header is None:
                raise ValueError("no ClamAV-VDB header line")
            return header, entries
        offset += len(raw) + 1
        text = raw.decode("latin-1").rstrip("\r")
        if text.startswith("ClamAV-VDB:"):
            if header is not None:
                raise ValueError(f"line {number}: a second header line")
            header = parse_header(text)
            continue
        if header is None:
            raise ValueError(f"line {number}: expected the ClamAV-VDB header line first")
        fields = text.split(":")
        if len(fields) != 3:
            raise ValueError(f"line {number}: expected NAME:SIZE:SHA256")
        name, size, sha256 = fields
        if not (size.isascii() and size.isdigit()):
            raise ValueError(f"line {number}: size {size[:24]!r} is not a number")
        if len(sha256) != 64 or not set(sha256.lower()) <= set("0123456789abcdef"):
            raise ValueError(f"line {number}: malformed SHA-256")
        if name in entries:
            raise ValueError(f"line {number}: {name} listed twice")
        entries[name] = (int(size), sha256.lower())
    if signed:
        raise ValueError("no DSIG line (an official container's .info is signed)")
    if header is None:
        raise ValueError("no ClamAV-VDB header line")
    return header, entries


# -- classic digital signatures ----------------------------------------------------------------

def default_cert_dir() -> Path:
    """lmsav's trust store: ClamAV's root certificate and classic public keys."""
    return Path(str(resources.files("lmsav") / "data" / "certs"))


@cache
def classic_keys() -> dict[str, tuple[int, int]]:
    """ClamAV's classic public keys by use ("cvd", "info", "cdiff") as (modulus, exponent)."""
    doc = tomllib.loads((default_cert_dir() / CLASSIC_KEYS_FILE).read_text())
    return {use: (int(key["n"]), int(key["e"])) for use, key in doc.items()}


def verify_dsig(digest: bytes, dsig: str, key: str) -> bool:
    """Check a classic ClamAV signature string of ``digest`` with the public key for ``key``.

    A 16-byte digest (MD5, .cvd headers) uses libclamav's ``cli_versig``: the decoded number
    raised to the public exponent must equal the digest. A 32-byte digest (SHA-256: .info DSIG
    lines with key "info", .cdiff files with key "cdiff") uses ``cli_versig2``'s PSS-like
    encoding with MGF1-SHA-256 and a 32-byte salt.
    """
    n, e = classic_keys()[key]
    value = _decode_dsig(dsig)
    if value is None:
        return False
    plain = pow(value, e, n)
    if len(digest) == 16:
        return plain == int.from_bytes(digest, "big")
    if len(digest) != 32:
        raise ValueError(f"digest of {len(digest)} bytes: expected MD5 (16) or SHA-256 (32)")
    return _pss_matches(plain, digest)


def _decode_dsig(dsig: str) -> int | None:
    if not dsig or len(dsig) > _MAX_DSIG_CHARS:
        return None
    value = 0
    for position, char in enumerate(dsig):
        digit = _DIGITS.get(char)
        if digit is None:
            return None
        value |= digit << (6 * position)
    return value


def _pss_matches(plain: int, digest: bytes) -> bool:
    if plain.bit_length() > 8 * _PSS_BYTES:
        return False
    block = plain.to_bytes(_PSS_BYTES, "big")
    if block[-1] != 0xBC:
        return False
    width = _PSS_BYTES - 32 - 1
    masked, hashed = block[:width], block[width:width + 32]
    mask = b"".join(hashlib.sha256(hashed + i.to_bytes(4, "big")).digest()
                    for i in range((width + 31) // 32))
    db = bytearray(a ^ b for a, b in zip(masked, mask))
    db[0] &= 0x7F
    # libclamav takes the salt after the first 0x01 byte and wants exactly 32 bytes of it.
    start = db.find(1)
    if start < 0 or len(db) - start - 1 != _SALT_BYTES:
        return False
    salt = bytes(db[start + 1:])
    return hashlib.sha256(b"\0" * 8 + digest + salt).digest() == hashed


# -- detached .sign files (PKCS#7) -------------------------------------------------------------

def sign_file_for(container, version: int) -> Path:
    """Where ClamAV looks for a .cvd's detached signature: ``<name>-<version>.cvd.sign`` beside
    it, ``name`` being the file name up to its first '-' or '.' (daily.cvd, version 27000 →
    daily-27000.cvd.sign). A .cdiff's is the .cdiff's own name plus ``.sign``."""
    container = Path(container)
    name = re.split(r"[-.]", container.name, maxsplit=1)[0]
    return container.with_name(f"{name}-{version}.cvd.sign")


def trusted_certificates(trust_dirs=()) -> list[bytes]:
    """PEM certificates of lmsav's store and the given directories (``*.crt``/``*.pem`` files,
    as ClamAV reads its certs directory), each once. Raises OSError for a missing directory."""
    blocks: list[bytes] = []
    for directory in (default_cert_dir(), *map(Path, trust_dirs)):
        for entry in sorted(os.scandir(directory), key=lambda e: e.name):
            if entry.name.endswith((".crt", ".pem")) and entry.is_file():
                with open(entry.path, "rb") as fh:
                    for block in _CERT_BLOCK.findall(fh.read()):
                        if block not in blocks:
                            blocks.append(block)
    return blocks


def verify_sign_file(data: bytes, sign_path, trust_dirs=(), *,
                     check_time: int | None = None) -> str | None:
    """Verify ``data`` against a ClamAV ``.sign`` file; return the signer's common name.

    Returns None when the file cannot be used — missing, not ``#clamsign-1.0``, a line lmsav
    cannot parse, or no ``openssl`` program — and the caller falls back to the classic signature,
    as ClamAV does. Raises SignFileError when a PKCS#7 signature is there but does not verify
    (wrong data, untrusted or expired chain): ClamAV then refuses the file without falling back.
    The ``flevel_min:flevel_max`` range of a line is not applied: it tells which ClamAV engines
    read that signature format, and lmsav reads ``pkcs7-pem`` whatever its own level.
    """
    try:
        lines = Path(sign_path).read_bytes().decode("ascii").splitlines()
    except (OSError, UnicodeDecodeError):
        return None
    if not lines or not lines[0].startswith("#clamsign") or lines[0].split("-", 1)[1:] != ["1.0"]:
        return None
    for line in lines[1:]:
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        fields = line.split(":")
        if len(fields) < 4 or not fields[0].isdigit() or fields[1] and not fields[1].isdigit():
            return None
        if fields[2] != "pkcs7-pem":
            return None
        try:
            der = base64.b64decode(fields[3], validate=True)
        except binascii.Error:
            return None
        return _openssl_verify(data, der, trusted_certificates(trust_dirs), check_time)
    return None


def _openssl_verify(data: bytes, der: bytes, certificates: list[bytes],
                    check_time: int | None) -> str | None:
    openssl = shutil.which("openssl")
    if openssl is None or not certificates:
        return None
    with tempfile.TemporaryDirectory(prefix="lmsav-sign-") as tmp:
        signature, bundle, signer = (
            os.path.join(tmp, name) for name in ("sig.der", "ca.pem", "signer.pem"))
        with open(signature, "wb") as fh:
            fh.write(der)
        with open(bundle, "wb") as fh:
            fh.write(b"\n".join(certificates) + b"\n")
        # -binary and no -purpose: PKCS7_verify's own defaults, as ClamAV calls it. -no-CApath
        # and -no-CAstore keep the system's web CAs out: only the given certificates are trusted.
        command = [openssl, "smime", "-verify", "-binary", "-inform", "DER", "-in", signature,
                   "-content", "/dev/stdin", "-CAfile", bundle, "-no-CApath", "-no-CAstore",
                   "-signer", signer, "-out", os.devnull]
        if check_time is not None:
            command += ["-attime", str(int(check_time))]
        try:
            result = subprocess.run(command, input=data, capture_output=True, timeout=300,
                                    check=False)
        except (OSError, subprocess.TimeoutExpired):
            return None
        if result.returncode == 4:  # openssl smime: "error verifying the message"
            raise SignFileError(_openssl_reason(result.stderr))
        if result.returncode not in (0, 5):  # unreadable PKCS#7 or options: cannot verify
            return None
        return _common_name(openssl, signer) or "signer without a common name"


def _openssl_reason(stderr: bytes) -> str:
    text = stderr.decode("utf-8", "replace")
    verify = re.search(r"Verify error:\s*(.+)", text)
    if verify:
        return verify.group(1).strip()
    error = re.search(r":error:[0-9A-Fa-f]+:[^:]*:[^:]*:([^:\n]+)", text)
    return error.group(1).strip() if error else "the PKCS#7 signature does not verify"


def _common_name(openssl: str, signer_pem: str) -> str | None:
    try:
        result = subprocess.run(
            [openssl, "x509", "-in", signer_pem, "-noout", "-subject",
             "-nameopt", "multiline,utf8,-esc_msb"],
            capture_output=True, timeout=60, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    found = re.search(r"^\s*commonName\s*=\s*(.+)$", result.stdout.decode("utf-8", "replace"), re.MULTILINE)
    return found.group(1).strip() if found else None


__all__ = [
    "Container", "ContainerError", "Header", "SignFileError", "classic_keys", "default_cert_dir",
    "parse_header", "parse_info", "read_container", "read_header", "sign_file_for",
    "trusted_certificates", "verify_dsig", "verify_sign_file",
]
