"""Plain helpers the container tests share: run a handler, build inputs, ask clamscan."""

from __future__ import annotations

import io
import os
import subprocess
import zipfile
from pathlib import Path

import pytest

from lmsav import paths as lmsav_paths
from lmsav.scanner.containers import Handler
from lmsav.scanner.limits import Context, Limits
from lmsav.scanner.objects import Child, ScanObject


def explode_with(
    handler: Handler, obj: ScanObject, limits: Limits = Limits(), tmp_root: str | None = None
) -> list[Child]:
    """Every child ``handler`` yields for ``obj``, spilled ones read back before the cleanup."""
    ctx = Context(limits, tmp_root=tmp_root)
    try:
        return [_loaded(c) for c in handler.explode(obj, ctx) if not c.meta_only]
    finally:
        ctx.cleanup()


def explode_until(
    error: type[Exception], handler: Handler, obj: ScanObject, limits: Limits = Limits()
) -> tuple[list[Child], str]:
    """The children yielded before ``handler`` raised ``error`` (which it must), and its message."""
    got = []
    ctx = Context(limits)
    try:
        with pytest.raises(error) as err:
            for child in handler.explode(obj, ctx):
                if not child.meta_only:  # directory records: metadata for .cdb rules only
                    got.append(_loaded(child))
    finally:
        ctx.cleanup()
    return got, str(err.value)


def _loaded(child: Child) -> Child:
    # Spilled members live in the context's temp dir; read them before it is cleaned up.
    if child.path is not None:
        child.data = Path(child.path).read_bytes()
    return child


def names_and_data(children: list[Child]) -> list[tuple[str, bytes | None]]:
    return [(c.name, c.data) for c in children]


def from_file(path: Path) -> ScanObject:
    return ScanObject.from_path(path, name=path.name)


def from_bytes(path: Path) -> ScanObject:
    return ScanObject(path.name, data=path.read_bytes())


def run(*cmd: str, cwd: Path | None = None) -> None:
    subprocess.run(cmd, cwd=cwd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def tree(root: Path, files: dict[str, bytes]) -> Path:
    """Write ``files`` under ``root/src`` for an archiver to pack; returns that directory."""
    src = root / "src"
    for name, data in files.items():
        (src / name).parent.mkdir(parents=True, exist_ok=True)
        (src / name).write_bytes(data)
    return src


def zip_bytes(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in files.items():
            zf.writestr(name, data)
    return buf.getvalue()


def clamscan_found(*paths: Path, db: Path | None = None) -> dict[str, bool]:
    """File name → whether clamscan with ``db`` (the bundled database) reports it FOUND."""
    db = db or Path(lmsav_paths.bundled_database_dir())
    proc = subprocess.run(
        ["clamscan", "--no-summary", "-d", str(db), *map(str, paths)],
        capture_output=True, text=True, env={**os.environ, "LC_ALL": "C"},
    )
    assert proc.returncode in (0, 1), proc.stderr
    found = {Path(p).name: False for p in paths}
    for line in proc.stdout.splitlines():
        if line.endswith(" FOUND"):
            found[Path(line.rpartition(": ")[0]).name] = True
    return found


def clamscan_threats(db: Path, path: Path) -> set[str]:
    """The names of every signature in ``db`` clamscan matches in ``path`` (--allmatch)."""
    proc = subprocess.run(["clamscan", "--no-summary", "--allmatch", "-d", str(db), str(path)],
                          capture_output=True, text=True)
    assert proc.returncode in (0, 1), proc.stderr
    return {
        line.rpartition(": ")[2].removesuffix(" FOUND").removesuffix(".UNOFFICIAL")
        for line in proc.stdout.splitlines() if line.endswith(" FOUND")
    }
