"""A signature database directory: sources → one compiled cache file → matchers, plus self-test.

The cache is a single file: a magic, a JSON header (source fingerprints, counts, section table)
and 8-byte aligned binary sections. Loading maps it and hands memoryviews to the matchers, so a
process starts scanning in milliseconds and forked workers share the pages.
"""

from __future__ import annotations

import base64
import hashlib
import json
import mmap
import os
import struct
import time
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from . import body, hashes
from .errors import SignatureError

MAGIC = b"LMSAVDB1"
FORMAT = 1  # bump when the compiled layout or a compiler's semantics change
CACHE_NAME = ".compiled.lmsavc"
META_NAME = "database.toml"
SELFTEST_NAME = "selftest.toml"

DETECT_HASH = (".hdb", ".hsb")
ALLOW_HASH = (".fp", ".sfp")
BODY = (".ndb",)
YARA = (".yar", ".yara")
IGNORE = (".ign2", ".ign")
KNOWN = DETECT_HASH + ALLOW_HASH + BODY + YARA + IGNORE
# ClamAV formats lmsav does not read yet: reported by `db info`/`db build`, never silently used.
UNSUPPORTED = (".ldb", ".mdb", ".msb", ".cdb", ".idb", ".pdb", ".wdb", ".crb", ".cvd", ".cld",
               ".cud", ".ftm", ".cfg", ".info", ".hdu", ".hsu", ".ndu", ".ldu", ".mdu", ".imp")


class DatabaseError(Exception):
    """The database directory cannot be used (missing, empty, unreadable, bad signature)."""


@dataclass
class Sample:
    name: str
    data: bytes
    expect: str  # signature name that must be reported, or "" for "must be clean"


@dataclass
class Database:
    directory: Path
    version: str
    counts: dict[str, int]
    built_at: float
    build_seconds: float
    cache_path: Path
    body: body.BodyMatcher
    hashes: hashes.HashMatcher
    allow: hashes.HashMatcher
    yara: object | None
    ignored: frozenset[str]
    unsupported: list[str] = field(default_factory=list)
    samples: list[Sample] = field(default_factory=list)
    loaded_from_cache: bool = False
    _mm: object = None

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    @classmethod
    def load(cls, directory, cache_path=None, rebuild: bool = False,
             build_in_child: bool = False) -> "Database":
        """Load ``directory``, compiling it first if no up-to-date cache exists.

        ``build_in_child`` compiles in a short-lived child process: a long-running process
        that forks workers afterwards (the daemon, the spool watcher) then never carries the
        compiler's heap — gigabytes for a large database — into every worker.
        """
        directory = Path(directory)
        sources = _list_sources(directory)
        cache = Path(cache_path) if cache_path else default_cache_path(directory)
        header = None if rebuild else _read_header(cache)
        if header is None or not _fresh(header, directory, sources, cache):
            if build_in_child:
                _build_in_child(directory, cache, sources)
            else:
                build(directory, cache, sources)
            header = _read_header(cache)
            if header is None:
                raise DatabaseError(f"{cache}: compiled database unreadable after build")
            from_cache = False
        else:
            from_cache = True
        db = _open(directory, cache, header, sources)
        db.loaded_from_cache = from_cache
        return db


def _build_in_child(directory: Path, cache: Path, sources: list[Path]) -> None:
    import multiprocessing

    ctx = multiprocessing.get_context("fork")
    reader, writer = ctx.Pipe(duplex=False)
    child = ctx.Process(target=_child_build, args=(writer, directory, cache, sources))
    child.start()
    writer.close()
    try:
        failure = reader.recv() if reader.poll(None) else None
    except EOFError:
        failure = None
    child.join()
    if failure:
        kind, message = failure
        raise (SignatureError(*message) if kind == "signature" else DatabaseError(message))
    if child.exitcode != 0:
        raise DatabaseError(f"{directory}: compiling failed (exit {child.exitcode})")


def _child_build(writer, directory: Path, cache: Path, sources: list[Path]) -> None:
    try:
        build(directory, cache, sources)
        writer.send(None)
    except SignatureError as err:
        writer.send(("signature", (err.file, err.line, err.message)))
    except Exception as err:  # reported by the parent as a DatabaseError
        writer.send(("database", str(err)))


def default_cache_path(directory: Path) -> Path:
    """Next to the database when writable; otherwise in the user's cache directory."""
    directory = Path(directory)
    if os.access(directory, os.W_OK):
        return directory / CACHE_NAME
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    if os.geteuid() == 0:
        base = Path("/var/cache")
    tag = hashlib.sha256(str(directory.resolve()).encode()).hexdigest()[:16]
    return base / "lmsav" / f"db-{tag}.lmsavc"


def _list_sources(directory: Path) -> list[Path]:
    if not directory.is_dir():
        raise DatabaseError(f"{directory}: database directory not found")
    try:
        names = sorted(os.listdir(directory))
    except OSError as err:
        raise DatabaseError(f"{directory}: cannot read database directory: {err.strerror}")
    return [directory / n for n in names if n.endswith(KNOWN) and (directory / n).is_file()]


def _fingerprint(paths: list[Path]) -> list[list]:
    out = []
    for p in paths:
        st = p.stat()
        out.append([p.name, st.st_size, st.st_mtime_ns])
    return out


def _digest(paths: list[Path]) -> str:
    h = hashlib.sha256(f"lmsav-db-format-{FORMAT}".encode())
    for p in paths:
        h.update(p.name.encode() + b"\0")
        h.update(hashlib.sha256(p.read_bytes()).digest())
    return h.hexdigest()


def _fresh(header: dict, directory: Path, sources: list[Path], cache: Path) -> bool:
    """Stat-only check first; on a stat mismatch fall back to comparing content digests."""
    if header.get("format") != FORMAT:
        return False
    meta = directory / META_NAME
    meta_stamp = meta.stat().st_mtime_ns if meta.exists() else 0
    if header.get("fingerprint") == _fingerprint(sources) and header.get("meta") == meta_stamp:
        return True
    if header.get("digest") == _digest(sources) and header.get("meta") == meta_stamp:
        _rewrite_fingerprint(cache, header, sources)
        return True
    return False


# -- building ----------------------------------------------------------------------------------

def build(directory, cache_path=None, sources: list[Path] | None = None) -> dict:
    """Validate and compile every source file; write the cache atomically. Returns the header."""
    from . import yara as yara_mod

    directory = Path(directory)
    sources = sources if sources is not None else _list_sources(directory)
    cache = Path(cache_path) if cache_path else default_cache_path(directory)
    started = time.monotonic()
    counts = {ext.lstrip("."): 0 for ext in (".hdb", ".hsb", ".ndb", ".fp", ".sfp", ".yar", ".ign2")}
    detect, allow, bodies, rules, ignored = [], [], [], [], []
    for path in sources:
        text = _read_text(path)
        ext = path.suffix.lower()
        if ext in DETECT_HASH:
            sigs = hashes.parse_hash_file(text, path.name, allow_wildcard=ext == ".hsb")
            detect += sigs
        elif ext in ALLOW_HASH:
            sigs = hashes.parse_hash_file(text, path.name, allow_wildcard=ext == ".sfp")
            allow += sigs
        elif ext in BODY:
            parsed = body.parse_ndb(text, path.name)
            bodies += parsed
            # Valid lines lmsav cannot use yet are skipped (listed by `db info`), not counted.
            sigs = [s for s in parsed if not s.unsupported]
        elif ext in YARA:
            rules.append((path.name, text))
            sigs = None
        else:
            sigs = _parse_ignore(text)
            ignored += sigs
            ext = ".ign2"
        key = "yar" if ext in YARA else ext.lstrip(".")
        if sigs is not None:
            counts[key] += len(sigs)
    yara_blob = yara_mod.compile_rules(rules)
    if yara_blob:
        counts["yar"] = yara_mod.YaraMatcher(yara_blob).count
    sections = {"body": body.compile_body(bodies), "yara": yara_blob}
    sections.update(hashes.compile_hashes(detect, "hash"))
    sections.update(hashes.compile_hashes(allow, "allow"))
    sections["ignored"] = "\n".join(sorted(set(ignored))).encode()
    if sum(counts.values()) - counts["ign2"] == 0:
        raise DatabaseError(f"{directory}: no signatures found (looked for {', '.join(KNOWN)})")
    meta = _read_meta(directory)
    meta_path = directory / META_NAME
    digest = _digest(sources)
    header = {
        "format": FORMAT,
        "digest": digest,
        "fingerprint": _fingerprint(sources),
        "meta": meta_path.stat().st_mtime_ns if meta_path.exists() else 0,
        "version": str(meta.get("version") or digest[:12]),
        "counts": counts,
        "built_at": time.time(),
        "build_seconds": round(time.monotonic() - started, 3),
    }
    _write_cache(cache, header, sections)
    return header


def _read_text(path: Path) -> str:
    try:
        return path.read_bytes().decode("utf-8", errors="replace")
    except OSError as err:
        raise DatabaseError(f"{path}: cannot read: {err.strerror}")


def _parse_ignore(text: str) -> list[str]:
    # .ign2 lines are signature names; ClamAV's older .ign adds "file:line:" before the name.
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            out.append(line.split(":")[-1] if line.count(":") >= 2 else line.split(":")[0])
    return out


def _read_meta(directory: Path) -> dict:
    path = directory / META_NAME
    if not path.exists():
        return {}
    try:
        return tomllib.loads(path.read_text())
    except (tomllib.TOMLDecodeError, OSError) as err:
        raise DatabaseError(f"{path}: {err}")


def _write_cache(cache: Path, header: dict, sections: dict[str, bytes]) -> None:
    table, offset, blobs = {}, 0, []
    for name, blob in sections.items():
        pad = (-offset) % 8
        blobs.append(b"\0" * pad)
        offset += pad
        table[name] = [offset, len(blob)]
        blobs.append(blob)
        offset += len(blob)
    header = dict(header, sections=table)
    _write_atomic(cache, header, blobs)


def _encode_header(header: dict) -> bytes:
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * ((-len(raw) - len(MAGIC) - 4) % 8)  # keep sections 8-byte aligned
    return MAGIC + struct.pack("<I", len(raw)) + raw


def _write_atomic(cache: Path, header: dict, blobs: list[bytes]) -> None:
    cache.parent.mkdir(parents=True, exist_ok=True)
    tmp = cache.with_name(f".{cache.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as fh:
            fh.write(_encode_header(header))
            for blob in blobs:
                fh.write(blob)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, cache)
    except OSError as err:
        tmp.unlink(missing_ok=True)
        raise DatabaseError(f"{cache}: cannot write compiled database: {err.strerror}")


def _rewrite_fingerprint(cache: Path, header: dict, sources: list[Path]) -> None:
    """Sources were touched but not changed: refresh the stat stamps so the next load is cheap."""
    try:
        with open(cache, "rb") as fh:
            fh.seek(len(MAGIC))
            (hlen,) = struct.unpack("<I", fh.read(4))
            fh.seek(len(MAGIC) + 4 + hlen)
            payload = fh.read()
        new_header = {k: v for k, v in header.items() if k != "_payload"}
        new_header["fingerprint"] = _fingerprint(sources)
        # Section offsets are relative to the payload start, so the header may change length.
        _write_atomic(cache, new_header, [payload])
    except (OSError, DatabaseError, ValueError):
        pass  # an unwritable cache only costs a digest check next time


def _read_header(cache: Path) -> dict | None:
    try:
        with open(cache, "rb") as fh:
            if fh.read(len(MAGIC)) != MAGIC:
                return None
            (hlen,) = struct.unpack("<I", fh.read(4))
            header = json.loads(fh.read(hlen))
            header["_payload"] = len(MAGIC) + 4 + hlen
            return header
    except (OSError, ValueError, struct.error):
        return None


def _open(directory: Path, cache: Path, header: dict, sources: list[Path]) -> Database:
    from . import yara as yara_mod

    with open(cache, "rb") as fh:
        mm = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)
    view = memoryview(mm)
    base = header["_payload"]
    table = header["sections"]
    empty = memoryview(b"")

    def section(name: str) -> memoryview:
        if name not in table:
            return empty
        off, length = table[name]
        return view[base + off:base + off + length]

    body_blob = bytes(section("body"))
    yara_blob = bytes(section("yara"))
    ignored = bytes(section("ignored")).decode()
    unsupported = sorted(
        n for n in os.listdir(directory) if n.lower().endswith(UNSUPPORTED)
    )
    return Database(
        directory=directory,
        version=header["version"],
        counts=header["counts"],
        built_at=header["built_at"],
        build_seconds=header["build_seconds"],
        cache_path=cache,
        body=body.BodyMatcher.from_blob(body_blob),
        hashes=hashes.HashMatcher(section, "hash"),
        allow=hashes.HashMatcher(section, "allow"),
        yara=yara_mod.YaraMatcher(yara_blob) if yara_blob else None,
        ignored=frozenset(ignored.split("\n")) - {""},
        unsupported=unsupported,
        samples=_read_samples(directory),
        _mm=mm,
    )


def _read_samples(directory: Path) -> list[Sample]:
    """Self-test samples, stored base64-encoded so no live test file sits on disk."""
    path = directory / SELFTEST_NAME
    if not path.exists():
        return []
    try:
        doc = tomllib.loads(path.read_text())
        return [
            Sample(s["name"], base64.b64decode(s["data_base64"]), s.get("expect", ""))
            for s in doc.get("sample", [])
        ]
    except (tomllib.TOMLDecodeError, KeyError, ValueError, OSError) as err:
        raise DatabaseError(f"{path}: bad self-test file: {err}")


__all__ = ["Database", "DatabaseError", "SignatureError", "build", "default_cache_path"]
