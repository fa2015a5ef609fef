"""Build the fuzz seed corpus: tests/fuzz/corpus/<format>/<seed>, small valid samples.

Run once, by hand, and commit what it writes (python -m tests.fuzz.make_corpus); the tests
read the committed files and never rebuild them. Samples come from the real tools where Debian
has one (7z, bsdtar, gzip, gcab, arj, jlha, chmcmd, msibuild, qpdf, uuencode …) and from the
writers of the container tests where it has none (RAR, TNEF, BinHex, SIS, the OLE2 writer).
The members are harmless text and bytes: no sample matches a signature. Each sample is small
enough that a mutated copy scans in milliseconds; the whole corpus stays under 1 MB.
"""

from __future__ import annotations

import base64
import mailbox
import random
import shutil
import subprocess
import sys
import tempfile
from email.message import EmailMessage
from pathlib import Path

CORPUS = Path(__file__).resolve().parent / "corpus"
MAX_TOTAL = 1 << 20

_rnd = random.Random(14)
TEXT = b"Quarterly report, second draft.\nPlease review the figures before Friday.\n" * 3
BLOB = bytes(_rnd.randrange(256) for _ in range(300))  # incompressible: real deflate blocks
MEMBERS = {"report.txt": TEXT, "data.bin": BLOB}


def _run(argv: list[str], cwd: Path) -> None:
    subprocess.run(argv, cwd=cwd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def _tool(work: Path, argv: list[str], out: str, files: dict[str, bytes] = MEMBERS) -> bytes:
    """Run an archiver in a fresh directory holding ``files``; the bytes of its ``out`` file."""
    src = Path(tempfile.mkdtemp(dir=work))
    for name, data in files.items():
        (src / name).parent.mkdir(parents=True, exist_ok=True)
        (src / name).write_bytes(data)
    _run(argv, src)
    return (src / out).read_bytes()


def _compressed(work: Path, argv: list[str], suffix: str) -> bytes:
    return _tool(work, [*argv, "report.txt"], f"report.txt{suffix}", {"report.txt": TEXT})


def archives(work: Path) -> dict[str, bytes]:
    names = list(MEMBERS)
    out = {
        "zip/deflate.zip": _tool(work, ["7z", "a", "-tzip", "-bd", "a.zip", *names], "a.zip"),
        "zip/stored.zip": _tool(work, ["7z", "a", "-tzip", "-mx=0", "-bd", "a.zip", *names],
                                "a.zip"),
        "7z/lzma2.7z": _tool(work, ["7z", "a", "-t7z", "-bd", "a.7z", *names], "a.7z"),
        "tar/ustar.tar": _tool(work, ["bsdtar", "--format", "ustar", "-cf", "a.tar", *names],
                               "a.tar"),
        "tar/gnu.tar.gz": _tool(work, ["bsdtar", "--format", "gnutar", "-czf", "a.tgz", *names],
                                "a.tgz"),
        "cpio/newc.cpio": _tool(work, ["bsdtar", "--format", "newc", "-cf", "a.cpio", *names],
                                "a.cpio"),
        "ar/members.a": _tool(work, ["ar", "rc", "a.a", *names], "a.a"),
        "cab/mszip.cab": _tool(work, ["gcab", "-c", "-z", "a.cab", *names], "a.cab"),
        "arj/members.arj": _tool(work, ["arj", "a", "-y", "a.arj", *names], "a.arj"),
        "lha/members.lzh": _tool(work, ["jlha", "a", "a.lzh", *names], "a.lzh"),
        "gzip/report.txt.gz": _compressed(work, ["gzip", "-n", "-9"], ".gz"),
        "bzip2/report.txt.bz2": _compressed(work, ["bzip2", "-9"], ".bz2"),
        "xz/report.txt.xz": _compressed(work, ["xz"], ".xz"),
        "zstd/report.txt.zst": _compressed(work, ["zstd", "-q"], ".zst"),
        "compress/report.txt.Z": _compressed(work, ["compress", "-f"], ".Z"),
        "szdd/report.txt_": _tool(work, ["mscompress", "report.txt"], "report.txt_",
                                 {"report.txt": TEXT}),
    }
    from tests.scanner.containers.test_archive import rar4_stored

    out["rar/stored.rar"] = rar4_stored(MEMBERS)  # no RAR writer in Debian
    return out


def documents(work: Path) -> dict[str, bytes]:
    from tests.scanner.containers.test_ole2 import (
        build_cfb,
        macro_source,
        ole10native,
        package_native,
        vba_storage,
        word_fib,
    )
    from tests.scanner.containers.test_pdf import one_page, stream
    from tests.scanner.containers.test_rtf import ole1_object, rtf_document, rtf_object

    chm_files = {"index.html": b"<html><body><p>help</p></body></html>", "report.txt": TEXT,
                 "x.hhp": b"[OPTIONS]\nCompiled file=x.chm\nDefault topic=index.html\n\n"
                          b"[FILES]\nindex.html\nreport.txt\n"}
    pdf_dir = Path(tempfile.mkdtemp(dir=work))
    (pdf_dir / "base.pdf").write_bytes(one_page(stream(b"BT /F1 12 Tf 72 712 Td (hi) Tj ET")))
    (pdf_dir / "data.bin").write_bytes(BLOB)
    _run(["qpdf", "--object-streams=generate", "base.pdf", "--add-attachment", "data.bin", "--",
          "out.pdf"], pdf_dir)
    ole_package = ole10native("report.txt", TEXT)
    html_body = (b"<p>Report <a href=\"data:application/octet-stream;base64,"
                 + base64.b64encode(BLOB) + b"\">data</a></p>\n<script>var s = \""
                 + base64.b64encode(TEXT) + b"\"; document.write(unescape('%3Cb%3E'));</script>\n")
    return {
        "chm/help.chm": _tool(work, ["chmcmd", "x.hhp"], "x.chm", chm_files),
        "ole2/installer.msi": _tool(work, ["msibuild", "a.msi", "-a", "Binary.data", "data.bin"],
                                    "a.msi"),
        "ole2/package.doc": build_cfb({"WordDocument": word_fib(),
                                       "\x01Ole10Native": ole_package}),
        "ole2/macro.doc": build_cfb({"WordDocument": word_fib(),
                                     **vba_storage("Macros", {"Module1": macro_source(b"x")})}),
        "pdf/attachment.pdf": (pdf_dir / "out.pdf").read_bytes(),
        "rtf/objdata.rtf": rtf_document(rtf_object(ole1_object(
            b"Package", package_native("report.txt", TEXT)))),
        "html/page.html": b"<html><body>" + html_body + b"</body></html>\n",
        "html/fragment.html": html_body,  # no <html> or <body>: found by sniffing further
    }



def _message(with_zip: bytes | None = None) -> EmailMessage:
    msg = EmailMessage()
    msg["From"], msg["To"], msg["Subject"] = "a@example.org", "b@example.org", "report"
    msg.set_content(TEXT.decode())
    msg.add_alternative("<html><body><p>Report</p></body></html>", subtype="html")
    msg.add_attachment(BLOB, maintype="application", subtype="octet-stream",
                       filename="data.bin")
    if with_zip is not None:
        msg.add_attachment(with_zip, maintype="application", subtype="zip", filename="a.zip")
    return msg


def mail(work: Path, zip_data: bytes) -> dict[str, bytes]:
    inner = _message()
    outer = EmailMessage()
    outer["From"], outer["To"], outer["Subject"] = "c@example.org", "d@example.org", "Fwd"
    outer.set_content("forwarded\n")
    outer.add_attachment(inner)
    uu = _tool(work, ["sh", "-c", "uuencode data.bin data.bin > data.uu"], "data.uu")
    plain = (b"From: a@example.org\nTo: b@example.org\nSubject: old style\n\nSee below.\n\n"
             + uu + b"\nregards\n")
    box_path = Path(tempfile.mkdtemp(dir=work)) / "box"
    box = mailbox.mbox(box_path)
    box.add(_message())
    box.add(mailbox.mboxMessage(plain))
    box.close()
    text_b64 = (b"Hello,\n\nthe data as asked:\n\n" + base64.encodebytes(BLOB) + b"\nbye\n")
    return {
        "mail/attachments.eml": _message(zip_data).as_bytes(),
        "mail/forwarded.eml": outer.as_bytes(),
        "mail/uuencoded.eml": plain,
        "mbox/two.mbox": box_path.read_bytes(),
        "uuencode/data.uu": uu,
        "textenc/base64-block.txt": text_b64,
    }


def small_formats() -> dict[str, bytes]:
    from tests.scanner.containers.test_binhex import binhex
    from tests.scanner.containers.test_sis import APP, STD, sis
    from tests.scanner.containers.test_tnef import attachment, long_name, tnef

    return {
        "tnef/winmail.dat": tnef(attachment("REPORT.TXT", TEXT, long_name("report.txt")),
                                 attachment("DATA.BIN", BLOB, long_name("data.bin"))),
        "binhex/report.hqx": binhex(b"report.txt", TEXT),
        "sis/app.sis": sis([(APP + "report.txt", TEXT, STD)]),
    }


def build(work: Path) -> dict[str, bytes]:
    seeds = archives(work)
    seeds.update(documents(work))
    seeds.update(mail(work, seeds["zip/deflate.zip"]))
    seeds.update(small_formats())
    from tests.scanner.containers.test_sfx import pe_stub

    seeds["sfx/stub-and-zip.exe"] = pe_stub() + seeds["zip/deflate.zip"]
    seeds["zip/nested.zip"] = _tool(
        work, ["7z", "a", "-tzip", "-bd", "n.zip", "a.7z", "m.eml"], "n.zip",
        {"a.7z": seeds["7z/lzma2.7z"], "m.eml": seeds["mail/uuencoded.eml"]})
    return seeds


def main() -> int:
    with tempfile.TemporaryDirectory() as tmp:
        seeds = build(Path(tmp))
    total = sum(map(len, seeds.values()))
    if total > MAX_TOTAL:
        print(f"corpus would be {total} bytes, over {MAX_TOTAL}", file=sys.stderr)
        return 2
    if CORPUS.exists():
        shutil.rmtree(CORPUS)
    for name, data in sorted(seeds.items()):
        path = CORPUS / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    print(f"{len(seeds)} seeds, {total} bytes in {CORPUS}")
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(CORPUS.parents[2]))
    sys.exit(main())
