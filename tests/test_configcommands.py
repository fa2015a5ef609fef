"""`lmsav config show|check --json`: one compact object on one line (lmsav(1) MACHINE OUTPUT)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from lmsav import config, paths
from lmsav.cli import main
from tests.jsonlines import one_object


@pytest.fixture
def run(tmp_path, monkeypatch):
    """lmsav whose default configuration file does not exist: the built-in defaults."""
    monkeypatch.delenv("LMSAV_CONFIG", raising=False)
    monkeypatch.setattr(paths, "default_config_file",
                        lambda env=None, euid=None: tmp_path / "absent.toml")
    runner = CliRunner()
    return lambda *args: runner.invoke(main, [str(a) for a in args], catch_exceptions=False)


def test_show_is_sections_of_keys_of_values(run, tmp_path):
    cfg = tmp_path / "lmsav.toml"
    cfg.write_text('[limits]\nmax_scan_depth = 7\n\n[scan]\nexclude = ["*.log"]\n')
    shown = run("--config", cfg, "config", "show", "--json")
    assert shown.exit_code == 0
    data = one_object(shown.stdout)
    assert list(data) == ["profile", *config.SECTIONS]
    assert data["profile"] == "default_recommended"
    assert data["limits"]["max_scan_depth"] == 7 and data["scan"]["exclude"] == ["*.log"]
    assert data["limits"]["max_file_size"] == "100M"  # as the TOML shows it
    assert {f"{s}.{k}" for s in config.SECTIONS for k in data[s]} == set(config.SPECS)


def test_show_masks_passwords_in_urls_unless_asked(run, tmp_path):
    cfg = tmp_path / "lmsav.toml"
    cfg.write_text('[update]\nproxy = "http://ann:s3cret@proxy.example:3128"\n\n[stats]\n'
                   'url = "postgresql://lmsav:hunter2@db.example:5432/lmsav"\n')
    for args in ([], ["--json"]):
        shown = run("--config", cfg, "config", "show", *args).stdout
        assert "s3cret" not in shown and "hunter2" not in shown
        assert "http://ann:***@proxy.example:3128" in shown
        assert "postgresql://lmsav:***@db.example:5432/lmsav" in shown
    revealed = run("--config", cfg, "config", "show", "--show-secrets").stdout
    assert "http://ann:s3cret@proxy.example:3128" in revealed and "hunter2" in revealed
    copy = tmp_path / "copy.toml"
    copy.write_text(revealed)
    assert config.load_settings(copy) == config.load_settings(cfg)


def test_show_with_sources_says_where_each_value_came_from(run, tmp_path):
    cfg = tmp_path / "lmsav.toml"
    cfg.write_text("[limits]\nmax_scan_depth = 7\n")
    data = one_object(run("--config", cfg, "--profile", "high_scan_speed", "config", "show",
                          "--json", "--sources").stdout)
    assert data["profile"] == {"value": "high_scan_speed", "source": "command line"}
    assert data["limits"]["max_scan_depth"] == {"value": 7, "source": str(cfg)}
    assert data["paths"]["tmp_dir"] == {"value": "", "source": "built-in default"}
    assert all(set(entry) == {"value", "source"}
               for section in config.SECTIONS for entry in data[section].values())


def test_check_is_one_object_and_a_failure_is_stderr_and_exit_2(run, tmp_path):
    defaults = run("config", "check", "--json")
    assert defaults.exit_code == 0
    assert one_object(defaults.stdout) == {"config": None, "ok": True,
                                           "profile": "default_recommended"}
    cfg = tmp_path / "lmsav.toml"
    cfg.write_text('profile = "high_overall_security"\n')
    good = run("--config", cfg, "config", "check", "--json")
    assert one_object(good.stdout) == {"config": str(cfg), "ok": True,
                                       "profile": "high_overall_security"}
    cfg.write_text("[limits]\nmax_scan_depth = -1\n")
    bad = run("--config", cfg, "config", "check", "--json")
    assert bad.exit_code == 2 and bad.stdout == ""
    assert bad.stderr.startswith("lmsav: error: ") and "max_scan_depth" in bad.stderr
    groups = tmp_path / "groups.d"
    groups.mkdir()
    cfg.write_text("")
    (groups / "sales.toml").write_text('recipients = ["*@sales.example"]\ninfected_action = "x"\n')
    bad_group = run("--config", cfg, "config", "check", "--json")
    assert bad_group.exit_code == 2 and bad_group.stdout == ""
    assert bad_group.stderr.startswith(f"lmsav: error: {groups / 'sales.toml'}: infected_action")


@pytest.mark.skipif(shutil.which("jq") is None, reason="needs jq")
def test_the_man_page_examples_run_as_written(tmp_path):
    """Each EXAMPLES line of lmsav-config(1), run by bash with the installed lmsav."""
    page = (Path(__file__).resolve().parents[1] / "man" / "lmsav-config.1").read_text()
    examples = page.split(".SH EXAMPLES", 1)[1].split(".nf\n", 1)[1].split(".fi\n", 1)[0]
    cfg = tmp_path / "lmsav.toml"
    cfg.write_text('[limits]\nmax_file_size = "25M"\n')
    env = {**os.environ, "LMSAV_CONFIG": str(cfg),
           "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    outputs = []
    for line in examples.replace("\\-", "-").splitlines():
        done = subprocess.run(["bash", "-c", f"set -o pipefail; {line}"], env=env,
                              capture_output=True, text=True, check=False)
        assert done.returncode == 0 and done.stderr == "", (line, done.stderr)
        outputs.append(done.stdout)
    assert outputs == ['"25M"\n', f'"{cfg}"\n']
