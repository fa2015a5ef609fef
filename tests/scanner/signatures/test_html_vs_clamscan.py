"""Differential tests: HTML and text normalisation against clamscan.

Two proofs. First, clamscan's own normalised files (kept with --leave-temps) are compared byte
for byte with lmsav's forms. Second, .ndb signatures of targets 0, 3 and 7 cut from normalised
content (and from raw content, which ClamAV must not match) are run through clamscan and through
BodyMatcher over lmsav's views: file by file, the same names must be found.
"""

from __future__ import annotations

import random
import shutil
import subprocess
from pathlib import Path

import pytest

from lmsav.scanner.signatures import body, htmlnorm, jsnorm, normalise
from lmsav.scanner.engine import Engine
from lmsav.scanner.signatures.database import Database

from .test_normalise import encode_script

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(shutil.which("clamscan") is None, reason="clamscan not installed"),
]

PIECES = [
    '<a href="http://x.example/%d">link %d</a>', "<A HREF='HTTP://Y.EXAMPLE'>Y</A>",
    "<img src=foo.png>", "<IMG SRC=\"Bar.JPG\" alt='x y'>", "<!-- c -->", "<!--\nmulti\n-->",
    "&amp;", "&AMP;", "&eacute;", "&#65;", "&#x41;", "&#0;", "&bogus;", "&nbsp;", "&#x263A;",
    "& ", "&#", "  ", "\n", "\r\n", "\t", "Hello", "WORLD", "it's", '"q"', "\x01", "\x7f",
    "caf\xc3\xa9", "\xe3\x80\x82", "\xe6\x96\x87", "\xa1C", "<p>", "</P>", "<br/>",
    '<div class="A B" id=x>', "<input disabled checked>", "<b >", "< b>", '<a\nhref="q">',
    '<x y = "z">', "<style>.a{color:RED}</style>", '<form action="http://f.example">',
    '<a href="x" title="T">t</a>', '<img src="data:image/png;base64,iVBORw0KGgo=">',
    '<a href="data:,Hello%20World">d</a>', "<td background='data:text/plain,a b'>",
    '<a href=x\\"y>', "x>y", "a=b", "<>", "</>", "<!>", "<!doctype html>", "&lt;b&gt;",
]
STATEMENTS = [
    "var a = 1, b = 'Two', c = [1,2,3];", "var X=\"Hello\" + ' World' + \"!\";",
    "function Foo(p, q) { var r = p + q; return r; }",
    "function outer() { var z = 1; function inner(y) { return y*z; } return inner(2); }",
    "document.write(\"<b>\" + a + '</b>');", "x = unescape('%48%65%6c%6c%6f%u0041');",
    "eval(\"var q = 42; alert(q);\");", "// line comment here\n", "/* block\n comment */",
    "var n = 3.14, m = 1e5, k = 0x1F, w = 2.5e-3;", "if (a < b && b >= c) { a++; } else { b--; }",
    "var s = 'esc\\x41\\u0042\\n\\'q\\'';", "var re = /ab+c/gi;", "obj.prop.method(arg1, 'str');",
    "new ActiveXObject('WScript.Shell');", "var f = function(a, b) { return a - b; };",
    "a = b ? c : d;", "x >>>= 2; y !== z;", "var u = 'unterminated", "alert((1+(2*3)",
    "dF('%264Dtdsjqu%2631', 1)",
    "eval(function(p,a,c,k,e,d){e=function(c){return c};while(c--){if(k[c]){p=p.replace("
    "new RegExp('\\\\b'+e(c)+'\\\\b','g'),k[c])}}return p}('0 1=\\'2\\';',3,3,"
    "'var|hx|world'.split('|'),0,{}))",
]


def make_script(rnd: random.Random) -> str:
    lang = rnd.choice(["", ' language="JavaScript"', ' TYPE="text/javascript"'])
    body = "".join(rnd.choice(STATEMENTS) + rnd.choice([" ", "\n", ""])
                   for _ in range(rnd.randint(1, 6)))
    if rnd.random() < 0.2:
        body = "<!--\n" + body + "\n//-->"
    return f"<script{lang}>{body}</script>"


def make_html(rnd: random.Random, pieces: int, data_uris: bool = True) -> bytes:
    """Random HTML with scripts; ``data_uris`` off leaves out data: URIs, which ClamAV scans
    as files of their own (children of the HTML file in lmsav)."""
    out = ["<html>"]
    choices = (PIECES if data_uris else [p for p in PIECES if "data:" not in p]) + ["SCRIPT"] * 3
    for i in range(pieces):
        piece = rnd.choice(choices)
        piece = make_script(rnd) if piece == "SCRIPT" else piece
        out.append(piece % (i, i) if "%d" in piece else piece)
        if rnd.random() < 0.3:
            out.append(rnd.choice([" ", "\n", ""]))
    return "".join(out).encode("latin-1")


def corpus(directory: Path) -> list[Path]:
    rnd = random.Random(3)
    files = {f"g{n}.html": make_html(rnd, rnd.randint(5, 60)) for n in range(40)}
    files["big.html"] = make_html(rnd, 2500)  # several 8 KiB chunks
    files["encoded.html"] = (b'<html><script language="JScript.Encode">'
                             + encode_script(b'var Secret = "EVIL";\nalert(1)')
                             + b"</script><p>after</p></html>")
    files["asp.html"] = (b'<html><%@ language="jscript.encode" %>\n<p>x</p>'
                         + encode_script(b"Hello World Encoded") + b"\n<p>tail</p></html>")
    paths = []
    for name, data in files.items():
        (directory / name).write_bytes(data)
        paths.append(directory / name)
    return paths


def clamscan_forms(paths: list[Path], db: Path, temp: Path) -> dict[str, dict]:
    """What clamscan wrote for each file: nocomment, notags, javascript, the data: URIs."""
    out = {}
    for path in paths:
        keep = temp / path.name
        keep.mkdir()
        subprocess.run(["clamscan", "--no-summary", "--leave-temps", "--tempdir", str(keep),
                        "-d", str(db), str(path)], capture_output=True, check=False)
        html_dirs = [d for d in keep.rglob("html-tmp*") if d.is_dir()]
        assert len(html_dirs) == 1, f"{path.name}: clamscan did not normalise it as HTML"
        forms = {f.name: f.read_bytes() for f in html_dirs[0].iterdir() if f.is_file()}
        forms["data"] = sorted(f.read_bytes() for f in html_dirs[0].glob("rfc2397/*"))
        out[path.name] = forms
    return out


@pytest.fixture
def dummy_db(tmp_path) -> Path:
    db = tmp_path / "db"
    db.mkdir()
    (db / "dummy.ndb").write_text("Never.Matching:0:*:6e657665722d6d61746368696e672d626f6479\n")
    return db


def test_normalised_forms_equal_clamscans(tmp_path, dummy_db):
    samples = tmp_path / "samples"
    samples.mkdir()
    temp = tmp_path / "temp"
    temp.mkdir()
    paths = corpus(samples)
    theirs = clamscan_forms(paths, dummy_db, temp)
    for path in paths:
        mine = htmlnorm.normalise(path.read_bytes())
        assert mine.nocomment == theirs[path.name]["nocomment.html"], path.name
        assert mine.notags == theirs[path.name]["notags.html"], path.name
        assert sorted(mine.data_files) == theirs[path.name]["data"], path.name
        script = jsnorm.normalise_scripts(mine.scripts)
        assert script == theirs[path.name].get("javascript"), path.name


# -- signatures over the views -----------------------------------------------------------------

WORDS = ["Hello", "WORLD", "alpha", "Beta", "gamma", "x=1", "(paren)", "a,b", "quote's",
         "TAB\there", "caf\u00e9", "end."]


def make_text(rnd: random.Random) -> bytes:
    parts = []
    for _ in range(rnd.randint(10, 80)):
        parts.append(rnd.choice(WORDS))
        parts.append(rnd.choice([" ", "  ", "\t", "\n", "\r\n", " \n  ", ""]))
    return "".join(parts).encode()


def cut(rnd: random.Random, data: bytes, low: int = 6, high: int = 14) -> bytes | None:
    if len(data) < low:
        return None
    size = rnd.randint(low, min(high, len(data)))
    start = rnd.randrange(0, len(data) - size + 1)
    return data[start:start + size]


def signatures(rnd: random.Random, html: list[bytes], texts: list[bytes]) -> list[str]:
    """Targets 0/3/7 cut from the normalised forms (ClamAV must match these) and from the raw
    files (it must not, unless the same bytes also appear in a normalised form)."""
    lines = []
    for n, data in enumerate(html):
        forms = [v.data for v in normalise.html_forms(data).views]
        for k in range(4):
            piece = cut(rnd, rnd.choice(forms))
            target = rnd.choice([0, 3, 3, 7])
            if piece:
                lines.append(f"Html.View.{n}.{k}.T{target}:{target}:*:{piece.hex()}")
        piece = cut(rnd, data)
        if piece:
            lines.append(f"Html.Raw.{n}:{rnd.choice([0, 3])}:*:{piece.hex()}")
    for n, data in enumerate(texts):
        piece = cut(rnd, normalise.text_view(data))
        target = rnd.choice([0, 7, 7])
        if piece:
            lines.append(f"Text.View.{n}.T{target}:{target}:*:{piece.hex()}")
        piece = cut(rnd, data)
        if piece:
            lines.append(f"Text.Raw.{n}.T7:7:*:{piece.hex()}")
            lines.append(f"Text.Raw.{n}.T0:0:*:{piece.hex()}")
    return lines


def matcher(lines: list[str], targets: set[int]) -> body.BodyMatcher:
    chosen = [line for line in lines if int(line.split(":")[1]) in targets]
    sigs = body.parse_ndb("\n".join(chosen), "views.ndb")
    return body.BodyMatcher.from_blob(body.compile_body(sigs))


def lmsav_names(db: Path, directory: Path) -> set:
    """What lmsav's engine finds in each sample, loading the same database directory."""
    engine = Engine(Database.load(db))
    found = set()
    for path in sorted(directory.iterdir()):
        verdict = engine.scan_path(path)
        found |= {(path.name, t.name) for _, t in verdict.threats}
    return found


def clamscan_names(db: Path, directory: Path) -> set:
    run = subprocess.run(["clamscan", "--no-summary", "--allmatch", "-d", str(db),
                          str(directory)], capture_output=True, text=True, check=False)
    found = set()
    for line in run.stdout.splitlines():
        path, _, verdict = line.rpartition(": ")
        if verdict.endswith(" FOUND"):
            name = verdict.removesuffix(" FOUND").removesuffix(".UNOFFICIAL")
            found.add((path.rsplit("/", 1)[-1], name))
    return found


def test_view_signatures_agree_with_clamscan(tmp_path):
    rnd = random.Random(11)
    html = {f"h{n}.html": make_html(rnd, rnd.randint(5, 40), data_uris=False) for n in range(40)}
    texts = {f"t{n}.txt": make_text(rnd) for n in range(40)}
    lines = signatures(rnd, list(html.values()), list(texts.values()))
    # Renumber per file name so a hit can be told apart from one on another file.
    samples = tmp_path / "samples"
    samples.mkdir()
    for name, data in {**html, **texts}.items():
        (samples / name).write_bytes(data)
    db = tmp_path / "db"
    db.mkdir()
    (db / "views.ndb").write_text("\n".join(lines) + "\n")
    ours = lmsav_names(db, samples)
    theirs = clamscan_names(db, samples)
    assert any(name.startswith("Html.View") for _, name in theirs)
    assert any(name.startswith("Html.View") and name.endswith("T7") for _, name in theirs)
    assert any(name.startswith("Text.View") for _, name in theirs)
    assert ours == theirs, (f"only lmsav: {sorted(ours - theirs)}\n"
                            f"only clamscan: {sorted(theirs - ours)}")
