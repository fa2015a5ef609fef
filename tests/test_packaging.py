"""The man pages reach `man`: a wheel installs them as <prefix>/share/man/manN/, where man looks for
any bin/ on PATH, and in a checkout `. .deps/env.sh` (written by scripts/bootstrap) puts them on
MANPATH, as the README says."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
MAN_DIR = ROOT / "man"
ENV_SH = ROOT / ".deps" / "env.sh"
PAGES = sorted(MAN_DIR.glob("*.[1-9]"))

needs_man = pytest.mark.skipif(shutil.which("man") is None, reason="needs man (Debian: man-db)")


def section(page: Path) -> str:
    return page.suffix[1:]


def topic(page: Path) -> str:
    return page.name[: -len(page.suffix)]


def man_env(tmp_path: Path, path: str) -> dict[str, str]:
    """A user's environment without a MANPATH of its own, so man derives it from PATH, and with
    a HOME holding no ~/.manpath."""
    env = {k: v for k, v in os.environ.items() if k not in ("MANPATH", "MANOPT", "MANSECT")}
    env.update(PATH=path, HOME=str(tmp_path), MANWIDTH="80")
    return env


def run(args: list[str], env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(args, check=False, env=env, capture_output=True, text=True, timeout=300)


def test_man_pages_exist_in_every_section():
    assert {section(p) for p in PAGES} == {"1", "5", "8"}
    assert MAN_DIR / "lmsav-scan.1" in PAGES


# -- the wheel ------------------------------------------------------------------------------------

def copy_sources(dest: Path) -> Path:
    """What a build reads, copied so the build's build/ and egg-info never land in the checkout."""
    skip = shutil.ignore_patterns("__pycache__", "*.pyc", "*.lmsavc", "*.egg-info")
    dest.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, dest / name)
    for name in ("lmsav", "man", "scripts"):
        shutil.copytree(ROOT / name, dest / name, ignore=skip)
    return dest


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """The wheel built from the checkout with the build backend pinned in pyproject.toml (pip
    builds in an isolated environment, as `python -m build` does)."""
    tmp = tmp_path_factory.mktemp("wheel")
    source = copy_sources(tmp / "src")
    built = run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--disable-pip-version-check",
                 "-q", "-w", str(tmp / "dist"), str(source)])
    assert built.returncode == 0, built.stdout + built.stderr
    (found,) = (tmp / "dist").glob("lmsav-*.whl")
    return found


@pytest.mark.integration
def test_wheel_carries_every_man_page_under_share_man_by_section(wheel):
    with zipfile.ZipFile(wheel) as archive:
        data = {name.split(".data/data/", 1)[1]: name for name in archive.namelist()
                if ".data/data/" in name}
        assert set(data) == {f"share/man/man{section(p)}/{p.name}" for p in PAGES}
        for page in PAGES:
            stored = archive.read(data[f"share/man/man{section(page)}/{page.name}"])
            assert stored == page.read_bytes(), page.name


@pytest.mark.integration
@needs_man
def test_installed_wheel_pages_are_found_by_man_through_path(wheel, tmp_path):
    venv = tmp_path / "venv"
    created = run([sys.executable, "-m", "venv", "--without-pip", str(venv)])
    assert created.returncode == 0, created.stderr
    installed = run([sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python"),
                     "install", "--no-deps", "--no-index", "--disable-pip-version-check", "-q",
                     str(wheel)])
    assert installed.returncode == 0, installed.stdout + installed.stderr
    env = man_env(tmp_path, f"{venv / 'bin'}:/usr/bin:/bin")

    found = run(["man", "-w", "lmsav-scan"], env)
    assert found.returncode == 0, found.stderr
    assert Path(found.stdout.strip()).resolve() == (venv / "share/man/man1/lmsav-scan.1").resolve()
    for page in PAGES:
        found = run(["man", "-w", section(page), topic(page)], env)
        assert found.returncode == 0, (page.name, found.stderr)
        installed_page = venv / f"share/man/man{section(page)}" / page.name
        assert Path(found.stdout.strip()).resolve() == installed_page.resolve()

    # It is the venv's bin/ on PATH that puts its pages on man's path.
    without = run(["man", "-w", "lmsav-scan"], man_env(tmp_path, "/usr/bin:/bin"))
    assert str(venv) not in without.stdout


# -- a checkout -----------------------------------------------------------------------------------

def in_checkout_env(command: str, tmp_path: Path,
                    manpath: str | None = None) -> subprocess.CompletedProcess:
    """``command`` in sh after `. .deps/env.sh`, as the README has it."""
    if not ENV_SH.is_file():
        pytest.skip("no .deps/env.sh: run scripts/bootstrap")
    env = man_env(tmp_path, "/usr/local/bin:/usr/bin:/bin")
    if manpath is not None:
        env["MANPATH"] = manpath
    return run(["sh", "-c", f'. "$1" && {command}', "sh", str(ENV_SH)], env)


@needs_man
def test_env_sh_lets_man_find_every_page_of_the_checkout(tmp_path):
    for page in PAGES:
        found = in_checkout_env(f"man -w {section(page)} {topic(page)}", tmp_path)
        assert found.returncode == 0, (page.name, found.stderr)
        assert Path(found.stdout.strip()).resolve() == page.resolve()


@needs_man
def test_readme_man_command_shows_the_checkout_page(tmp_path):
    shown = in_checkout_env("man 1 lmsav-scan", tmp_path)
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.startswith("LMSAV-SCAN(1)")
    assert "lmsav-scan - scan files" in shown.stdout


@needs_man
def test_env_sh_keeps_the_system_pages_and_a_users_manpath(tmp_path):
    system = run(["man", "-w", "1", "man"], man_env(tmp_path, "/usr/local/bin:/usr/bin:/bin"))
    if system.returncode == 0:  # man-db's own page, unless the image leaves out documentation
        found = in_checkout_env("man -w 1 man", tmp_path)
        assert found.returncode == 0, found.stderr
        assert found.stdout == system.stdout

    own = tmp_path / "own-man"
    kept = in_checkout_env('printf %s "$MANPATH"', tmp_path, manpath=str(own))
    assert kept.stdout == f"{ROOT / '.deps' / 'man'}:{own}"


# -- rendering ------------------------------------------------------------------------------------

@needs_man
@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_page_renders_without_warnings(page, tmp_path):
    shown = run(["man", "--warnings", "-l", str(page)], man_env(tmp_path, "/usr/bin:/bin"))
    assert shown.returncode == 0, shown.stderr
    assert shown.stderr == ""
    assert shown.stdout.startswith(f"{topic(page).upper()}({section(page)})")


def test_the_readme_opens_with_its_title_a_sentence_and_the_two_commands():
    """A reader sees what lmsav is, then the two commands, before anything else."""
    blocks = (ROOT / "README.md").read_text().split("\n\n")
    assert blocks[0] == "# lmsav"
    assert blocks[1].startswith("lmsav is ") and blocks[1].count(". ") == 0
    commands = blocks[2].splitlines()
    assert commands[0] == "```sh" and commands[-1] == "```"
    assert [line.split()[0] for line in commands[1:-1]] == ["scripts/run-scan", "scripts/run-tests"]
