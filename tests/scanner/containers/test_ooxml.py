"""Office Open XML documents are zip files: embedded OLE objects and macro projects inside them
are reached through the zip and OLE2 handlers together."""

from __future__ import annotations

import io
import zipfile


from lmsav.scanner.objects import Status
from tests.conftest import BODY_SAMPLE, EICAR
from tests.scanner.containers.test_ole2 import build_cfb, macro_source, ole10native, vba_storage


def docx(extra: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("[Content_Types].xml", '<?xml version="1.0"?><Types/>')
        zf.writestr("word/document.xml", "<w:document><w:body>hello</w:body></w:document>")
        for name, data in extra.items():
            zf.writestr(name, data)
    return buf.getvalue()


def test_embedded_ole_package_in_docx(engine):
    ole = build_cfb({"\x01Ole10Native": ole10native("clam.exe", EICAR)})
    verdict = engine.scan_bytes(docx({"word/embeddings/oleObject1.bin": ole}), "report.docx")
    assert verdict.status == Status.INFECTED
    assert [p for p, _ in verdict.threats] == [
        "report.docx//word/embeddings/oleObject1.bin//clam.exe"]


def test_macro_project_in_docm(engine):
    project = build_cfb(vba_storage("", {"Module1": macro_source(BODY_SAMPLE)}))
    verdict = engine.scan_bytes(docx({"word/vbaProject.bin": project}), "macro.docm")
    assert verdict.status == Status.INFECTED
    assert any(p.startswith("macro.docm//word/vbaProject.bin//") and p.endswith(".vba")
               for p, _ in verdict.threats)


def test_clean_docx_is_clean(engine):
    assert engine.scan_bytes(docx({}), "plain.docx").status == Status.CLEAN
