"""Each EXAMPLES line of lmsav-ctl(8), run by bash exactly as written, on a node with a spool
entry of the page's id (mail from `lmsav enqueue`) and an update source."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from tests.update.test_commands import Admin

from .test_ctl_status import Site

pytestmark = pytest.mark.integration

PAGE = Path(__file__).resolve().parents[2] / "man" / "lmsav-ctl.8"
PAGE_ID = "1764860400000000000.4242.0a1b2c3d"


def examples() -> list[str]:
    text = PAGE.read_text().split(".SH EXAMPLES", 1)[1].split(".nf\n", 1)[1].split(".fi\n", 1)[0]
    return text.replace("\\-", "-").splitlines()


@pytest.mark.skipif(shutil.which("jq") is None, reason="needs jq")
def test_the_man_page_examples_run_as_written(tmp_path):
    admin = Admin(tmp_path)
    admin.publish(3)
    site = Site(admin.config)
    entry = site.enqueue("ann@example.org", "bob@example.org", subject="an example")
    new = site.spool() / "new"
    (new / entry).rename(new / PAGE_ID)  # the page's id: a name like any `lmsav enqueue` gives

    outputs = {}
    for line in examples():
        done = subprocess.run(["bash", "-c", f"set -o pipefail; {line}"], env=site.env(),
                              capture_output=True, text=True, timeout=180, check=False)
        assert (done.returncode, done.stderr) == (0, ""), (line, done.stdout, done.stderr)
        outputs[line] = done.stdout

    assert len(outputs) == 11
    assert outputs["lmsav ctl status"].startswith("status:      OK\n")
    assert outputs["lmsav ctl status --json | jq -c .problems"] == "[]\n"
    assert outputs["lmsav ctl queue list"].startswith(f"{PAGE_ID}  new   ")
    assert f"entry:      {PAGE_ID} (new)\n" in outputs[f"lmsav ctl queue show {PAGE_ID}"]
    assert outputs["lmsav ctl queue list --state hold --json | jq -r .reason"] == \
        "wait for the customer\n"
    assert outputs[f"lmsav ctl queue release {PAGE_ID}"] == f"{PAGE_ID}: released\n"
    assert outputs[f"lmsav ctl queue delete --yes {PAGE_ID}"] == \
        f"{PAGE_ID}: deleted from new/\n"
    assert outputs["lmsav ctl config check"] == f"{admin.config}: OK (profile " \
                                                "default_recommended)\n"
    assert outputs["lmsav ctl update"].startswith("updated: test-3_extra-7 ")
    assert outputs["lmsav ctl update"].endswith("daemon: not running\n")
    assert outputs["lmsav ctl stats --since 7d"]
    assert not list(new.iterdir())
