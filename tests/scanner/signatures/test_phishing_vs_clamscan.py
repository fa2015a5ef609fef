"""Differential test: phishing lists and mails with links through clamscan and lmsav's engine.

Mails carry generated links (protected domains shown for other targets, spaced-out and https
display texts, titles, images, forms, escapes, user@host, hashed URLs, allowed pairs) and plain
text URLs. clamscan names one of the suspicious links when several are found (which one is not
fixed), so lmsav must report a file exactly when clamscan does, and report the name it printed.
"""

from __future__ import annotations

import hashlib
import random
import shutil
import subprocess
from pathlib import Path

import pytest

from lmsav.scanner.engine import Engine
from lmsav.scanner.signatures import phishing
from lmsav.scanner.signatures.database import Database

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(shutil.which("clamscan") is None, reason="clamscan not installed"),
]

HOSTS = ["www.paypal.com", "paypal.com", "secure.paypal.com", "www.mybank.com",
         "login.mybank.co.uk", "mybank.co.uk", "evil.example.net", "x.evilbank.net",
         "paypal.com.evil.net", "mail.paypal-partner.com", "www.trusted.org",
         "malware.example.com", "phish.example.org", "ok.example.org", "10.1.2.3",
         "www.other.com", "a.b.c.d.example.com"]
PATHS = ["", "/", "/login", "/bad/path.html", "/a/b/c?x=1", "/%7Euser/", "/x#frag", "/./y/../z"]


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


PDB = "H:paypal.com\nH:mybank.co.uk\nR:.+\\.evilbank\\.net([/?].*)?:.+\\.mybank\\.com\n"
WDB = ("M:mail.paypal-partner.com:paypal.com\nM:mail.paypal-partner.com:www.paypal.com\n"
       "X:.+\\.trusted\\.org([/?].*)?:.+\\.mybank\\.com\n")
GDB = (f"S:F:{_sha('malware.example.com/bad/path.html')}\nS2:F:{_sha('phish.example.org/')}\n"
       f"S1:F:{_sha('example.com/a/')}\nS:W:{_sha('ok.example.org/')}\nS:P:abcd1234\n")


def _url(r: random.Random) -> str:
    scheme = r.choice(["http://", "https://", "HTTP://", "", "ftp://", "mailto:", "http:/ /"])
    host = r.choice(HOSTS)
    if r.random() < 0.1:
        host = host.upper()
    if r.random() < 0.1:
        host = "user@" + host
    if r.random() < 0.05:
        host = host.replace(".", "%2e", 1)
    if r.random() < 0.05:
        host += "%00"
    return scheme + host + r.choice(PATHS)


def _shown(r: random.Random) -> str:
    k = r.random()
    if k < 0.4:
        return _url(r)
    if k < 0.55:
        return r.choice(HOSTS)
    if k < 0.65:
        return " ".join(r.choice(HOSTS))
    if k < 0.75:
        return "Click here"
    if k < 0.8:
        return r.choice(HOSTS) + "&nbsp;"
    if k < 0.85:
        return "<b>" + r.choice(HOSTS) + "</b>"
    return "Visit " + r.choice(HOSTS) + " now"


def _link(r: random.Random) -> str:
    k = r.random()
    if k < 0.7:
        return f'<a href="{_url(r)}">{_shown(r)}</a>'
    if k < 0.8:
        return f'<a href="{_url(r)}" title="{_shown(r)}">t</a>'
    if k < 0.9:
        return f'<a href="{_url(r)}"><img src="{_url(r)}"></a>'
    return f'<form action="{_url(r)}"><a href="{_url(r)}">{_shown(r)}</a></form>'


HEAD = "From: a@example.org\nTo: d@example.org\nSubject: t\n"


def _mail(seed: int) -> str:
    r = random.Random(seed)
    html = "<html><body>" + " ".join(_link(r) for _ in range(r.randint(1, 2))) + "</body></html>"
    kind = r.random()
    if kind < 0.7:
        return f"{HEAD}MIME-Version: 1.0\nContent-Type: text/html\n\n{html}\n"
    if kind < 0.85:
        return (f'{HEAD}MIME-Version: 1.0\nContent-Type: multipart/alternative; boundary="BB"\n\n'
                f"--BB\nContent-Type: text/plain\n\nhello\n"
                f"--BB\nContent-Type: text/html\n\n{html}\n--BB--\n")
    return f"{HEAD}\nSee {_url(r)} and {_url(r)}\n"


FIXED = {  # one of each verdict ClamAV can give, and the allowed cases
    "ssl.eml": '<a href="http://www.paypal.com.evil.net/">https://www.paypal.com</a>',
    "null.eml": '<a href="http://www.paypal.com%00@evil.net/">www.paypal.com</a>',
    "image.eml": '<a href="http://evil.net/"><img src="http://www.paypal.com/logo.gif"></a>',
    "form.eml": '<form action="http://evil.net/p"><a href="http://www.paypal.com/">'
                "www.paypal.com</a></form>",
    "title.eml": '<a href="http://evil.net/" title="www.paypal.com">x</a>',
    "spaced.eml": '<a href="http://evil.net/">w w w . p a y p a l . c o m</a>',
    "allowed.eml": '<a href="http://mail.paypal-partner.com/">paypal.com</a>',
    "allowed_hash.eml": '<a href="http://ok.example.org/">www.paypal.com</a>',
    "blocked.eml": '<a href="http://www.example.com/a/b">x</a>',
    "same.eml": '<a href="https://www.paypal.com/signin">www.paypal.com</a>',
}


def _write(directory: Path) -> list[Path]:
    paths = []
    for seed in range(250):
        path = directory / f"m{seed}.eml"
        path.write_text(_mail(seed))
        paths.append(path)
    for name, link in FIXED.items():
        path = directory / name
        path.write_text(f"{HEAD}MIME-Version: 1.0\nContent-Type: text/html\n\n"
                        f"<html><body>{link}</body></html>\n")
        paths.append(path)
    # Not a mail: ClamAV does not check links of a plain HTML file.
    page = directory / "page.html"
    page.write_text(f"<html><body>{FIXED['spaced.eml']}</body></html>\n")
    paths.append(page)
    return paths


def _lmsav(engine: Engine, path: Path) -> set[str]:
    return {threat.name for _, threat in engine.scan_path(path).threats}


def _clamscan(db: Path, paths: list[Path]) -> dict[str, str | None]:
    run = subprocess.run(["clamscan", "--no-summary", "-d", str(db), *map(str, paths)],
                         capture_output=True, text=True, check=False)
    verdicts = {}
    for line in run.stdout.splitlines():
        path, _, verdict = line.rpartition(": ")
        name = path.rsplit("/", 1)[-1]
        verdicts[name] = verdict.removesuffix(" FOUND") if verdict.endswith(" FOUND") else None
    return verdicts


def test_phishing_verdicts_agree_with_clamscan(tmp_path):
    db = tmp_path / "db"
    db.mkdir()
    (db / "t.pdb").write_text(PDB)
    (db / "t.wdb").write_text(WDB)
    (db / "t.gdb").write_text(GDB)
    samples = tmp_path / "samples"
    samples.mkdir()
    paths = _write(samples)
    theirs = _clamscan(db, paths)
    engine = Engine(Database.load(db, cache_path=tmp_path / "c.lmsavc"))
    differences = []
    for path in paths:
        mine = _lmsav(engine, path)
        clam = theirs[path.name]
        if (clam is None) != (not mine) or (clam is not None and clam not in mine):
            differences.append((path.name, clam, sorted(mine)))
    assert not differences, differences
    names = set(theirs.values())
    assert {phishing.SPOOFED, phishing.SSL_SPOOF, phishing.CLOAKED_NULL,
            phishing.HASH_NAMES["1"]} <= names
    assert theirs["allowed.eml"] is None and theirs["page.html"] is None
