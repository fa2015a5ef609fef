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

from . import clamav_types, formats
from .errors import SignatureError
from .kinds import NOT_DETECTING, adapter
from .levels import FUNCTIONALITY_LEVEL
from .subject import Subject

MAGIC = b"LMSAVDB1"
FORMAT = 6  # bump when the compiled layout or a compiler's semantics change
CACHE_NAME = ".compiled.lmsavc"
META_NAME = "database.toml"
SELFTEST_NAME = "selftest.toml"
# Matchers whose scanning state may only be used and dropped by the thread that made it
# (yara-x's scanner): drop_thread_state() makes them afresh.
THREAD_BOUND = ("yara",)
# Kinds Database.match does not run over each view of an object: those that do not name
# threats, and YARA, run once over the object's own bytes.
NOT_ON_VIEWS = NOT_DETECTING | {"yara"}


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
    counts: dict[str, int]  # loaded signatures per file type ("hdb": 12, "ldb": 3 …)
    built_at: float
    build_seconds: float
    cache_path: Path
    matchers: dict[str, object]  # kind name -> matcher (see kinds.py)
    detectors: list = field(default_factory=list)  # the matchers that name threats
    skipped: dict[str, int] = field(default_factory=dict)  # per file type, lines not used
    skipped_lines: list[str] = field(default_factory=list)  # "source:line: name: reason"
    not_used: list[str] = field(default_factory=list)  # "file: reason" for whole files
    containers: list[dict] = field(default_factory=list)  # .cvd/.cld/.cud headers and status
    samples: list[Sample] = field(default_factory=list)
    loaded_from_cache: bool = False
    warnings: list[str] = field(default_factory=list)  # e.g. a refused update, old cache kept
    refused: str = ""  # why changed sources were refused (the previous cache is in use)
    unofficial_suffix: bool = False
    official_sources: frozenset[str] = frozenset()
    _mm: object = None
    _section: object = None  # name -> memoryview of a section of the mapped cache

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    @property
    def hashes(self):
        """The whole-file hash table (callers and tests that look at hashing alone)."""
        m = self.matchers.get("hash")
        return m.table if m is not None else None

    @property
    def ignored(self) -> frozenset[str]:
        m = self.matchers.get("ignore")
        return m.names if m is not None else frozenset()

    def drop_thread_state(self) -> None:
        """Make the thread-bound matchers afresh from the mapped cache, dropping on this thread
        the state its scans left: a database loaded and self-tested in one thread may then be
        handed to another (the daemon's reload thread to its forked workers)."""
        for kind in THREAD_BOUND:
            if kind in self.matchers and self._section is not None:
                fresh = adapter(kind).matcher(self._section)
                if fresh is None:
                    del self.matchers[kind]
                else:
                    self.matchers[kind] = fresh
        self.detectors = [m for k, m in self.matchers.items() if k not in NOT_ON_VIEWS]

    def clamav_type(self, data, ftype: str) -> str:
        """ClamAV's type for an object, under the database's .ftm entries if it has any."""
        ftm = self.matchers.get("filetype")
        return ftm.type_of(data, ftype) if ftm is not None else clamav_types.clamav_type(ftype)

    def container_type(self, data, ftype: str) -> str:
        """ClamAV's type for a container (what .cdb rules and ``Container:`` name)."""
        ftm = self.matchers.get("filetype")
        if ftm is not None:
            return ftm.container_type(ftype, data)
        return clamav_types.container_type(ftype, data)

    def match_member_meta(self, subject) -> list[tuple[str, str]]:
        """.cdb rules only: for a member that could not be extracted (encrypted, damaged)."""
        meta = self.matchers.get("container")
        return self._named(meta.match(subject)) if meta is not None else []

    def _named(self, hits: list[tuple[str, str]]) -> list[tuple[str, str]]:
        if self.unofficial_suffix and hits:
            official = self.official_sources
            hits = [h if h[1] in official else (h[0] + ".UNOFFICIAL", h[1]) for h in hits]
        return hits

    def match(self, subject) -> list[tuple[str, str]]:
        """(name, source) of every signature of every kind that matches ``subject``.

        As in ClamAV, an HTML page is matched in its normalised forms (comments removed, tags
        lower-cased, text without tags, decoded scripts), never as raw bytes, and a text file
        both raw and folded; the view's type decides which targets apply (body.TARGETS).
        """
        hits: list[tuple[str, str]] = []
        if self.detectors:  # a YARA-only database needs no normalised views
            for view in self._views(subject):
                for matcher in self.detectors:
                    hits += matcher.match(view)
        yara = self.matchers.get("yara")
        if yara is not None:  # rules written for yara see the object's bytes, as yara does
            hits += yara.match(subject)
        if not hits:
            phishing = self.matchers.get("phishing")
            if phishing is not None and subject.in_mail:
                hits = phishing.match(subject)
            if not hits:
                return hits
        ignored = self.ignored
        if ignored:
            hits = [h for h in hits if h[0] not in ignored]
        # Allow-lists (.fp/.sfp) are consulted only once something matched: no cost otherwise.
        allow = self.matchers.get("allow")
        if hits and allow is not None and allow.match(subject):
            return []
        return self._named(hits)

    @staticmethod
    def _views(subject) -> list:
        ftype = subject.ftype
        if ftype not in ("html", "text"):
            return [subject]
        from . import (
            normalise,  # only processes that meet HTML or text load the normalisers
        )

        if ftype == "html":
            forms = subject.view("html", normalise.html_forms)
            return [_view_of(subject, v) for v in forms.views]
        if ftype == "text":
            return [subject] + [_view_of(subject, v)
                                for v in subject.view("text", normalise.text_scan_views)]

    @classmethod
    def load(cls, directory, cache_path=None, rebuild: bool = False,
             build_in_child: bool = False) -> Database:
        """Load ``directory``, compiling it first if no up-to-date cache exists.

        ``build_in_child`` compiles in a short-lived child process: a long-running process
        that forks workers afterwards (the daemon, the spool watcher) then never carries the
        compiler's heap — gigabytes for a large database — into every worker.

        If the sources changed but cannot be compiled because a signature container is refused
        (tampered, truncated, unsigned), the previous compiled cache stays in use and the
        refusal is in ``warnings``; with no previous cache the refusal is an error.
        """
        directory = Path(directory)
        sources = _list_sources(directory)
        cache = Path(cache_path) if cache_path else default_cache_path(directory)
        previous = _read_header(cache)
        header = None if rebuild else previous
        warnings = []
        if header is None or not _fresh(header, directory, sources, cache):
            try:
                if build_in_child:
                    _build_in_child(directory, cache, sources)
                else:
                    build(directory, cache, sources)
            except ContainerRefused as err:
                if rebuild or previous is None or previous.get("format") != FORMAT:
                    raise DatabaseError(str(err)) from None
                warnings.append(f"{err}; still using the database compiled before "
                                f"(version {previous.get('version')})")
            else:
                previous = _read_header(cache)
                if previous is None:
                    raise DatabaseError(f"{cache}: compiled database unreadable after build")
            header = previous
            from_cache = bool(warnings)
        else:
            from_cache = True
        db = _open(directory, cache, header, sources)
        db.loaded_from_cache = from_cache
        db.warnings = header.get("build_warnings", []) + warnings
        db.refused = "; ".join(warnings)
        return db


def _view_of(subject, view) -> Subject:
    """A normalised form of ``subject`` to match: same place, the view's bytes and type."""
    ftype = "text-norm" if 7 in view.targets else "html-norm"
    return Subject(view.data, len(view.data), ftype, subject.clamav_type, subject.ancestry,
                   subject.in_mail, subject.name, subject.member, subject.container_size)


class ContainerRefused(DatabaseError):
    """A .cvd/.cld/.cud file was refused (bad signature, digest, truncated …)."""


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
        if kind == "signature":
            raise SignatureError(*message)
        raise (ContainerRefused if kind == "refused" else DatabaseError)(message)
    if child.exitcode != 0:
        raise DatabaseError(f"{directory}: compiling failed (exit {child.exitcode})")


def _child_build(writer, directory: Path, cache: Path, sources: list[Path]) -> None:
    try:
        build(directory, cache, sources)
        writer.send(None)
    except SignatureError as err:
        writer.send(("signature", (err.file, err.line, err.message)))
    except ContainerRefused as err:
        writer.send(("refused", str(err)))
    except Exception as err:  # reported by the parent as a DatabaseError
        writer.send(("database", str(err)))


def default_cache_path(directory: Path) -> Path:
    """Next to the database when writable (or up to date there); else in the cache directory of
    the process's layout; else in memory: a read-only database never fails (cachedir.choose)."""
    from .cachedir import choose

    directory = Path(directory)

    def fresh(cache: Path) -> bool:
        header = _read_header(cache)
        try:
            return header is not None and _fresh(header, directory, _list_sources(directory),
                                                 cache)
        except (DatabaseError, OSError):
            return False

    return choose(directory, CACHE_NAME, fresh)


def _list_sources(directory: Path) -> list[Path]:
    """Every file of the directory lmsav reads or reports, in name order."""
    if not directory.is_dir():
        raise DatabaseError(f"{directory}: database directory not found")
    try:
        names = sorted(os.listdir(directory))
    except OSError as err:
        raise DatabaseError(f"{directory}: cannot read database directory: {err.strerror}")
    return [directory / n for n in names
            if n.lower().endswith(formats.KNOWN) and not n.startswith(".") and (directory / n).is_file()]


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

def build(directory, cache_path=None, sources: list[Path] | None = None,
          strict: bool = False) -> dict:
    """Validate and compile every source file; write the cache atomically. Returns the header.

    A YARA file that does not compile is left out and listed in ``not_used``; ``strict`` makes
    that, or a YARA rule left out, an error instead (nothing is written)."""
    directory = Path(directory)
    sources = sources if sources is not None else _list_sources(directory)
    cache = Path(cache_path) if cache_path else default_cache_path(directory)
    started = time.monotonic()
    collected = _Collected(directory)
    for path in _choose_containers(sources):
        ext = formats.extension(path.name)
        if ext in formats.CONTAINERS:
            _read_container_into(collected, path)
        elif ext != ".sign":
            collected.add(path.name, _read_bytes(path))
    sections = collected.compile()
    if strict and collected.yara_errors:
        first = collected.yara_errors[0]
        more = len(collected.yara_errors) - 1
        raise DatabaseError(f"{first}" + (f" (and {more} more YARA errors)" if more else ""))
    if collected.total() == 0:
        left_out = (f"; left out: {'; '.join(collected.yara_errors)}"
                    if collected.yara_errors else "")
        raise DatabaseError(f"{directory}: no signatures found (looked for "
                            f"{', '.join(formats.SIGNATURE_EXTENSIONS + formats.CONTAINERS)})"
                            + left_out)
    meta = _read_meta(directory)
    meta_path = directory / META_NAME
    digest = _digest(sources)
    sections["skipped"] = "\n".join(collected.skipped_lines).encode()
    header = {
        "format": FORMAT,
        "digest": digest,
        "fingerprint": _fingerprint(sources),
        "meta": meta_path.stat().st_mtime_ns if meta_path.exists() else 0,
        "version": str(meta.get("version") or _container_version(collected.containers)
                       or digest[:12]),
        "counts": collected.counts,
        "skipped": collected.skipped,
        "not_used": collected.not_used,
        "containers": collected.containers,
        "build_warnings": collected.warnings,
        "unofficial_suffix": _unofficial_suffix(meta, collected.containers),
        "official_sources": sorted(collected.official),
        "kinds": sorted(collected.sigs),
        "built_at": time.time(),
        "build_seconds": round(time.monotonic() - started, 3),
    }
    _write_cache(cache, header, sections)
    return header


class _Collected:
    """Signatures gathered from every file and container member, by kind, before compiling."""

    def __init__(self, directory: Path | None = None):
        self.directory = directory  # where YARA includes are resolved
        self.yara_errors: list[str] = []  # YARA files and rules left out, with the reason
        self.sigs: dict[str, list] = {}
        self.counts: dict[str, int] = {}
        self.skipped: dict[str, int] = {}
        self.skipped_lines: list[str] = []
        self.not_used: list[str] = []
        self.containers: list[dict] = []
        self.official: set[str] = set()  # sources from signed containers (.cvd, .cld)
        self.warnings: list[str] = []

    def add(self, name: str, raw: bytes, official: bool = False) -> None:
        ext = formats.extension(name)
        key = ext.lstrip(".")
        kind = formats.BY_EXTENSION.get(ext)
        if kind is None:
            reason = formats.NOT_EXECUTED.get(ext)
            if reason:
                self._not_used(name, key, raw, reason)
            return  # .info, COPYING and other packaging: checked by the container reader
        if ext in formats.PUA_EXTENSIONS:
            self._not_used(name, key, raw, "potentially unwanted application (PUA) signatures "
                                           "are off, as in ClamAV by default")
            return
        handler = adapter(kind.name)
        if handler is None:
            self._not_used(name, key, raw, "format not supported yet")
            return
        if official:
            self.official.add(name)
        text = raw if getattr(handler, "raw", False) else raw.decode("utf-8", errors="replace")
        sigs, skipped = handler.parse(text, name, ext)
        self.sigs.setdefault(kind.name, []).extend(sigs)
        if kind.name != "yara":  # rules are counted by the compiler
            self.counts[key] = self.counts.get(key, 0) + handler.count(sigs)
        if skipped:
            self.skipped[key] = self.skipped.get(key, 0) + len(skipped)
            self.skipped_lines += skipped

    def _not_used(self, name: str, key: str, raw: bytes, reason: str) -> None:
        lines = 1 if key == "cbc" else sum(
            1 for line in raw.splitlines() if line.strip() and not line.startswith(b"#"))
        self.skipped[key] = self.skipped.get(key, 0) + lines
        self.not_used.append(f"{name}: {reason}")

    def compile(self) -> dict[str, bytes]:
        sections: dict[str, bytes] = {}
        for kind, sigs in self.sigs.items():
            if kind != "yara":
                sections.update(adapter(kind).compile(sigs))
        if "yara" in self.sigs:
            # Rule files that fail are left out and listed, as unusable ClamAV lines are.
            yara_sections, compiled = adapter("yara").compile_set(self.sigs["yara"],
                                                                  self.directory)
            sections.update(yara_sections)
            self.counts["yar"] = compiled.count
            self.not_used += compiled.skipped_files
            self.skipped_lines += compiled.skipped_rules
            left_out = len(compiled.skipped_files) + len(compiled.skipped_rules)
            if left_out:
                self.skipped["yar"] = self.skipped.get("yar", 0) + left_out
            self.yara_errors = compiled.skipped_files + compiled.skipped_rules
        return sections

    def total(self) -> int:
        return sum(n for k, n in self.counts.items() if k not in ("ign", "ign2"))


def _read_container_into(collected: _Collected, path: Path) -> None:
    from . import cvd

    try:
        container = cvd.read_container(path, trust_dirs=_trust_dirs())
    except cvd.ContainerError as err:
        raise ContainerRefused(str(err)) from None
    h = container.header
    collected.containers.append({
        "file": path.name,
        "kind": container.kind,
        "version": h.version,
        "build_time": h.build_time,
        "builder": h.builder,
        "signatures": h.signatures,
        "functionality_level": h.flevel,
        "signature_status": container.signature_status,
    })
    if h.flevel > FUNCTIONALITY_LEVEL:
        # ClamAV warns and loads: each signature inside carries its own level limits.
        collected.warnings.append(
            f"{path.name}: built for functionality level {h.flevel}, lmsav implements "
            f"{FUNCTIONALITY_LEVEL}; signatures needing a newer engine are skipped")
    official = container.kind != "cud"
    for name, raw in container.members.items():
        collected.add(name, raw, official)


def _unofficial_suffix(meta: dict, containers: list[dict]) -> bool:
    """ClamAV names detections by signatures not from a signed container ``NAME.UNOFFICIAL``.

    lmsav does the same in a ClamAV database (one holding .cvd/.cld/.cud containers), so its
    output matches clamscan's there; a plain directory of signature files keeps the names as
    written. ``unofficial_suffix`` in database.toml decides either way.
    """
    value = meta.get("unofficial_suffix")
    if isinstance(value, bool):
        return value
    return bool(containers)


def _choose_containers(sources: list[Path]) -> list[Path]:
    """Of ``daily.cvd`` and ``daily.cld`` (an update in progress leaves both), use the newer."""
    best: dict[str, tuple[int, Path]] = {}
    for path in sources:
        if formats.extension(path.name) in formats.CONTAINERS:
            base = path.name.rsplit(".", 1)[0]
            version = _header_version(path)
            if base not in best or version > best[base][0]:
                best[base] = (version, path)
    chosen = {p for _, p in best.values()}
    return [p for p in sources
            if formats.extension(p.name) not in formats.CONTAINERS or p in chosen]


def _header_version(path: Path) -> int:
    try:
        with open(path, "rb") as fh:
            fields = fh.read(512).split(b":")
        return int(fields[2]) if len(fields) > 2 and fields[0] == b"ClamAV-VDB" else -1
    except (OSError, ValueError):
        return -1


def _container_version(containers: list[dict]) -> str:
    """ClamAV names a database by its daily version; lmsav lists every container's."""
    return ", ".join(f"{c['file'].rsplit('.', 1)[0]} {c['version']}"
                     for c in sorted(containers, key=lambda c: c["file"]))


def _trust_dirs() -> list[Path]:
    """Certificate directories an administrator added (lmsav's own store is always trusted)."""
    from ... import paths

    dirs = [paths.ROOT_CONFIG_DIR / "certs", paths.config_dir() / "certs"]
    return [d for d in dict.fromkeys(dirs) if d.is_dir()]


def _read_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as err:
        raise DatabaseError(f"{path}: cannot read: {err.strerror}")


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
            fh.writelines(blobs)
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

    matchers = {}
    for kind in header.get("kinds", ()):
        handler = adapter(kind)
        matcher = handler.matcher(section) if handler is not None else None
        if matcher is not None:
            matchers[kind] = matcher
    skipped_text = bytes(section("skipped")).decode()
    return Database(
        directory=directory,
        version=header["version"],
        counts=header["counts"],
        built_at=header["built_at"],
        build_seconds=header["build_seconds"],
        cache_path=cache,
        matchers=matchers,
        detectors=[m for k, m in matchers.items() if k not in NOT_ON_VIEWS],
        skipped=header.get("skipped", {}),
        skipped_lines=skipped_text.split("\n") if skipped_text else [],
        not_used=header.get("not_used", []),
        containers=header.get("containers", []),
        samples=_read_samples(directory),
        unofficial_suffix=header.get("unofficial_suffix", False),
        official_sources=frozenset(header.get("official_sources", ())),
        _mm=mm,
        _section=section,
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
