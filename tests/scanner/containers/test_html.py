"""HTML: base64 data: URIs and literal base64/hex blobs in scripts are decoded and scanned."""

from __future__ import annotations

import base64
import binascii
import random
import time

import pytest

from lmsav.scanner.containers.html import HtmlHandler
from lmsav.scanner.filetype import sniff
from lmsav.scanner.objects import ScanObject, Status
from tests.conftest import EICAR
from tests.scanner.containers.helpers import explode_with

B64 = base64.b64encode(EICAR)
PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(40))


def explode(data: bytes) -> list:
    return explode_with(HtmlHandler(), ScanObject("page.html", data=data))


def members(data: bytes) -> dict[str, bytes]:
    return {c.name: c.data for c in explode(data)}


def page(body: bytes) -> bytes:
    return b"<!DOCTYPE html>\n<html><head><title>t</title></head><body>\n" + body + b"\n</body></html>\n"


def test_sniffed_as_html_and_handled():
    assert sniff(page(b"")) == "html"
    assert "html" in HtmlHandler.types


def test_data_uris_in_src_href_and_css():
    doc = page(
        b'<img src="data:image/png;base64,' + base64.b64encode(PNG) + b'">\n'
        b"<a href='data:application/octet-stream;name=eicar.com;base64," + B64 + b"'>get</a>\n"
        b"<div style=\"background:url(DATA:text/plain;charset=utf-8;BASE64,"
        + base64.b64encode(b"css payload") + b")\"></div>"
    )
    assert members(doc) == {"data1": PNG, "data2": EICAR, "data3": b"css payload"}


def test_wrapped_unpadded_percent_encoded_and_urlsafe_payloads():
    wrapped = b"\n".join(B64[i:i + 20] for i in range(0, len(B64), 20))
    unpadded = base64.b64encode(b"abcd").rstrip(b"=")  # "YWJjZA"
    doc = page(
        b'<img src="data:;base64,' + wrapped + b'">'
        b'<img src="data:x/y;base64,' + unpadded + b'">'
        b'<img src="data:x/y;base64,' + B64.replace(b"+", b"%2B").replace(b"/", b"%2F") + b'">'
        b'<img src="data:x/y;base64,' + base64.urlsafe_b64encode(PNG) + b'">'
    )
    assert members(doc) == {"data1": EICAR, "data2": b"abcd", "data3": EICAR, "data4": PNG}


def test_non_base64_data_uri_is_left_alone():
    assert members(page(b'<a href="data:text/plain,hello%20world">x</a>')) == {}


def test_script_atob_long_base64_hex_and_escapes():
    long_b64 = base64.b64encode(EICAR * 2)
    doc = page(
        b"<script type='text/javascript'>\n"
        b'var a = atob("' + B64 + b'");\n'
        b"var s = 'hi';\n"
        b'var b = "' + long_b64 + b'";\n'
        b"var c = `" + binascii.hexlify(EICAR) + b"`;\n"
        b'var d = "' + b"".join(b"\\x%02x" % c for c in EICAR) + b'";\n'
        b"var e = atob('aGk=');\n"
        b"</script>"
    )
    assert members(doc) == {"script1": EICAR, "script2": EICAR * 2, "script3": EICAR,
                            "script4": EICAR, "script5": b"hi"}


def test_long_strings_outside_scripts_and_short_ones_inside_are_ignored():
    long_b64 = base64.b64encode(EICAR * 2)
    doc = page(b'<p title="' + long_b64 + b'">x</p><script>var x = "' + B64[:40] + b'";</script>')
    assert members(doc) == {}


def test_script_writing_a_script_tag_is_read_once():
    doc = page(b'<script>document.write("<script>"); var x = atob("' + B64 + b'");</script>')
    assert members(doc) == {"script1": EICAR}


def test_data_uri_inside_a_script_and_an_unclosed_script():
    doc = page(b'<script>img.src = "data:image/png;base64,' + base64.b64encode(PNG) + b'";'
               b'<script> var z = atob("' + B64 + b'")')
    assert members(doc) == {"data1": PNG, "script1": EICAR}


def test_garbage_never_raises():
    rnd = random.Random(3)
    pieces = [b"<script>", b"</script>", b"data:", b";base64,", b"atob(", b'"', b"'", b"\\x41",
              B64, b"%", b"=", b"\n"]
    for _ in range(300):
        doc = b"<html>" + b"".join(rnd.choice(pieces) + rnd.randbytes(rnd.randint(0, 5))
                                   for _ in range(rnd.randint(1, 60)))
        explode(doc)


@pytest.mark.parametrize("body", [
    b"<script>" * 20000,
    b"<script>'" + b"A" * 400000,
    b"data:" * 50000 + b";base64",
    b"data:a/b" + b";x=y" * 50000,
    b"<script>" + b"\\x41" * 100000 + b"\\x4",
    b"<script>'" + b"A" * 63 + b"' " * 50000,
])
def test_pathological_pages_stay_linear(body):
    started = time.perf_counter()
    explode(b"<html>" + body)
    assert time.perf_counter() - started < 2.0


# -- through the engine ------------------------------------------------------------------------


def test_engine_finds_eicar_in_a_data_uri_and_a_script(engine):
    doc = page(b'<a download="e.com" href="data:application/x-msdownload;base64,' + B64 + b'">x</a>'
               b'<script>var blob = atob("' + B64 + b'");</script>')
    verdict = engine.scan_bytes(doc, "mail.eml//2:page.html")
    assert verdict.status == Status.INFECTED
    assert sorted(p for p, _ in verdict.threats) == [
        "mail.eml//2:page.html//data1", "mail.eml//2:page.html//script1"]
