"""lmsav bundles: signature files in a tar.gz with a manifest, signed by an Ed25519 key.

``NAME.bundle`` is a gzip-compressed tar whose first member is ``manifest.json``::

    {"format": "lmsav-bundle 1", "name": "acme", "version": 42, "built": 1764849600,
     "files": [{"name": "acme.ndb", "size": 1234, "sha256": "…"}, …]}

followed by the files it lists, each a signature file lmsav reads (.ndb, .ldb, .hsb, .yar …),
at the top level. ``NAME.bundle.sig`` is the detached signature of the manifest's exact bytes
(``lmsav-signature 1`` / ``key: <id>`` / ``signature: <base64>``); the manifest's SHA-256 of each
file binds the rest. Publishers build one with::

    python -m lmsav.update.bundle build --key KEY.pem --name acme --version 42 \\
        --output DIR FILE…
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import sys
import tarfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from ..scanner.signatures import formats
from . import keys

FORMAT = "lmsav-bundle 1"
MANIFEST = "manifest.json"
MAX_FILES = 10000
MAX_BYTES = 1 << 30
FILE_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


class BundleError(Exception):
    """The bundle is malformed or does not match its manifest; ``str()`` is one line."""


@dataclass
class Bundle:
    name: str
    version: int
    built: int
    signer: str  # the trusted key's name
    files: dict[str, bytes] = field(default_factory=dict)


def acceptable_name(name: str) -> bool:
    """A plain file name with an extension lmsav reads as signatures (no containers)."""
    return bool(FILE_NAME_RE.fullmatch(name)) and name.lower().endswith(
        formats.SIGNATURE_EXTENSIONS)


# -- writing ----------------------------------------------------------------------------------

def build(name: str, version: int, files: list[Path], private, output: Path,
          built: int | None = None) -> tuple[Path, Path]:
    """Write ``output/NAME.bundle`` and ``NAME.bundle.sig``; returns both paths."""
    if not FILE_NAME_RE.fullmatch(name):
        raise BundleError(f"{name!r}: a bundle name is letters, digits, '.', '_' and '-'")
    contents = {}
    for path in files:
        if not acceptable_name(path.name):
            raise BundleError(f"{path}: not a signature file lmsav reads "
                              f"({', '.join(formats.SIGNATURE_EXTENSIONS)})")
        if path.name in contents:
            raise BundleError(f"{path.name}: named twice")
        contents[path.name] = path.read_bytes()
    manifest = json.dumps({
        "format": FORMAT, "name": name, "version": int(version),
        "built": int(time.time() if built is None else built),
        "files": [{"name": n, "size": len(d), "sha256": hashlib.sha256(d).hexdigest()}
                  for n, d in contents.items()],
    }, indent=1).encode() + b"\n"
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz", format=tarfile.PAX_FORMAT) as tar:
        for member, data in [(MANIFEST, manifest), *contents.items()]:
            info = tarfile.TarInfo(member)
            info.size, info.mode, info.mtime = len(data), 0o644, int(time.time())
            tar.addfile(info, io.BytesIO(data))
    output.mkdir(parents=True, exist_ok=True)
    bundle_path = output / f"{name}.bundle"
    sig_path = output / f"{name}.bundle.sig"
    bundle_path.write_bytes(buffer.getvalue())
    sig_path.write_bytes(keys.sign(manifest, private))
    return bundle_path, sig_path


# -- reading ----------------------------------------------------------------------------------

def read(data: bytes, signature: bytes | None, origin: str,
         dirs: tuple[Path, ...] | None = None) -> Bundle:
    """The verified bundle in ``data``: keys.SignatureRefused or BundleError otherwise."""
    if signature is None:
        raise keys.SignatureRefused(f"{origin}: no signature ({origin}.sig); unsigned bundles "
                                    f"are refused")
    members = _members(data, origin)
    manifest_bytes = members.pop(MANIFEST, None)
    if manifest_bytes is None:
        raise BundleError(f"{origin}: no {MANIFEST}")
    signer = keys.verify(manifest_bytes, signature, origin, dirs)
    try:
        manifest = json.loads(manifest_bytes)
        if manifest.get("format") != FORMAT:
            raise ValueError(f"format {manifest.get('format')!r}")
        listed = {f["name"]: f for f in manifest["files"]}
        bundle = Bundle(str(manifest["name"]), int(manifest["version"]),
                        int(manifest["built"]), signer.name)
    except (ValueError, KeyError, TypeError, AttributeError) as err:
        raise BundleError(f"{origin}: bad {MANIFEST} ({err})") from None
    if set(listed) != set(members):
        odd = sorted(set(listed) ^ set(members))
        raise BundleError(f"{origin}: files and manifest differ ({', '.join(odd)})")
    for name, data_ in members.items():
        entry = listed[name]
        if (len(data_) != entry.get("size")
                or hashlib.sha256(data_).hexdigest() != entry.get("sha256")):
            raise BundleError(f"{origin}: {name} does not match its SHA-256 in the signed "
                              f"manifest")
        bundle.files[name] = data_
    return bundle


def _members(data: bytes, origin: str) -> dict[str, bytes]:
    members: dict[str, bytes] = {}
    total = 0
    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
            for info in tar:
                if len(members) >= MAX_FILES:
                    raise BundleError(f"{origin}: more than {MAX_FILES} files")
                if not info.isfile():
                    raise BundleError(f"{origin}: {info.name}: not a plain file")
                if info.name != MANIFEST and not acceptable_name(info.name):
                    raise BundleError(f"{origin}: {info.name}: not a signature file name "
                                      f"lmsav installs")
                if info.name in members:
                    raise BundleError(f"{origin}: {info.name} appears twice")
                total += info.size
                if total > MAX_BYTES:
                    raise BundleError(f"{origin}: larger than {MAX_BYTES >> 20} MiB unpacked")
                members[info.name] = tar.extractfile(info).read()
    except (tarfile.TarError, EOFError, OSError) as err:
        raise BundleError(f"{origin}: not a bundle (tar.gz): {err}") from None
    return members


# -- python -m lmsav.update.bundle build ------------------------------------------------------

def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m lmsav.update.bundle",
                                     description="Build a signed lmsav bundle.")
    commands = parser.add_subparsers(dest="command", required=True)
    make = commands.add_parser("build", help="write NAME.bundle and NAME.bundle.sig")
    make.add_argument("--key", required=True, type=Path,
                      help="Ed25519 private key, unencrypted PEM (openssl genpkey)")
    make.add_argument("--name", required=True)
    make.add_argument("--version", required=True, type=int)
    make.add_argument("--output", required=True, type=Path, help="directory to write into")
    make.add_argument("files", nargs="+", type=Path)
    args = parser.parse_args(argv)
    try:
        written = build(args.name, args.version, args.files, keys.load_private(args.key),
                        args.output)
    except (BundleError, keys.KeyProblem) as err:
        print(f"lmsav bundle: error: {err}", file=sys.stderr)
        return 2
    except OSError as err:
        print(f"lmsav bundle: error: {err.filename}: {err.strerror}", file=sys.stderr)
        return 2
    for path in written:
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
