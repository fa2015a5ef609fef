"""`lmsav spool check` and the watcher on the default paths: the spool and the directories the
mail path shares belong to the service user and its group, mode 2770; what is wrong is reported
with the commands that fix it, and those commands, run as printed, fix it.

Run in a tests.sysroot namespace: /etc/lmsav, /var/lib/lmsav, /var/cache/lmsav and the lmsav
account are those of a server, the host's are untouched.
"""

from __future__ import annotations

import os
import stat

import pytest

pytestmark = pytest.mark.integration

WANTED = ["/var/lib/lmsav", "/var/lib/lmsav/nqueue", "/var/lib/lmsav/nqueue/tmp",
          "/var/lib/lmsav/nqueue/new", "/var/lib/lmsav/nqueue/work", "/var/lib/lmsav/nqueue/hold",
          "/var/lib/lmsav/nqueue/delivered", "/var/lib/lmsav/stats", "/var/lib/lmsav/backup",
          "/var/cache/lmsav"]


def environment() -> dict:
    return {k: v for k, v in os.environ.items() if not k.startswith("LMSAV_")}


def check(sysroot, *args: str):
    """`lmsav spool check` as root: (exit code, lines, the fix commands it printed)."""
    proc = sysroot.run(sysroot.program("lmsav"), "spool", "check", *args, env=environment(),
                       check=False)
    lines = proc.stdout.splitlines()
    fixes = []
    if "To fix, run as root:" in lines:
        fixes = [line.strip() for line in lines[lines.index("To fix, run as root:") + 1:]]
    return proc.returncode, lines, fixes


def run_fixes(sysroot, fixes: list[str]) -> None:
    for command in fixes:
        sysroot.run("sh", "-c", command)


def owners(sysroot, path: str) -> tuple[int, int, int]:
    st = os.stat(sysroot.path(path))
    return st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)


def test_a_missing_service_user_and_missing_directories_come_with_their_fix(sysroot):
    code, lines, fixes = check(sysroot)
    assert code == 1
    assert "/etc/passwd: the service user lmsav does not exist" in lines
    assert fixes[0] == ("useradd --system --user-group --home-dir /var/lib/lmsav "
                        "--shell /usr/sbin/nologin lmsav")
    assert f"install -d -o lmsav -g lmsav -m 2770 {WANTED[0]}" in fixes
    run_fixes(sysroot, fixes)
    code, lines, fixes = check(sysroot)
    assert code == 0, lines
    assert [line.split(":")[0] for line in lines[1:]] == WANTED
    uid, gid = sysroot.uid_of("lmsav"), sysroot.gid_of("lmsav")
    assert all(owners(sysroot, path) == (uid, gid, 0o2770) for path in WANTED)


def test_a_wrong_owner_and_mode_are_reported_with_the_commands_that_fix_them(sysroot):
    sysroot.add_system_user("lmsav", "/var/lib/lmsav")
    run_fixes(sysroot, check(sysroot)[2])
    # What an older lmsav, or a watcher run before the account existed, left behind.
    sysroot.run("chown", "root:root", "/var/lib/lmsav/nqueue/new")
    sysroot.run("chmod", "00750", "/var/lib/lmsav/nqueue/new")  # 00: clear set-group-id too
    code, lines, fixes = check(sysroot)
    assert code == 1
    assert ("/var/lib/lmsav/nqueue/new: owner root:root, wanted lmsav:lmsav; "
            "mode 0750, wanted 2770") in lines
    assert fixes == ["chown lmsav:lmsav /var/lib/lmsav/nqueue/new",
                     "chmod 2770 /var/lib/lmsav/nqueue/new"]
    run_fixes(sysroot, fixes)
    assert check(sysroot)[0] == 0


def test_the_pipe_user_must_be_the_service_user_or_in_its_group(sysroot):
    sysroot.add_system_user("lmsav", "/var/lib/lmsav")
    run_fixes(sysroot, check(sysroot)[2])
    assert check(sysroot, "--user", "lmsav")[0] == 0
    code, lines, fixes = check(sysroot, "--user", "nobody")
    assert code == 1
    assert ("/var/lib/lmsav/nqueue: nobody, which runs `lmsav enqueue`, is neither lmsav nor in "
            "group lmsav") in lines
    assert fixes == ["usermod -a -G lmsav nobody"]
    run_fixes(sysroot, fixes)
    assert check(sysroot, "--user", "nobody")[0] == 0


def test_a_parent_the_service_user_cannot_enter_is_reported(sysroot):
    sysroot.add_system_user("lmsav", "/var/lib/lmsav")
    sysroot.path("/etc/lmsav").mkdir(mode=0o755)
    sysroot.path("/etc/lmsav/lmsav.toml").write_text(
        '[paths]\nstate_dir = "/var/lib/mailstore/lmsav"\n')
    sysroot.run("mkdir", "-m", "0700", "/var/lib/mailstore")
    code, lines, fixes = check(sysroot)
    assert code == 1 and "/var/lib/mailstore: lmsav cannot enter it (mode 0700)" in lines
    assert fixes[0] == "chmod o+x /var/lib/mailstore"
    run_fixes(sysroot, fixes)
    assert check(sysroot)[0] == 0


def test_a_watcher_started_as_root_creates_them_for_the_service_user(sysroot):
    sysroot.add_system_user("lmsav", "/var/lib/lmsav")
    sysroot.run(sysroot.program("lmsav"), "spool", "watch", "--once", env=environment())
    uid, gid = sysroot.uid_of("lmsav"), sysroot.gid_of("lmsav")
    assert all(owners(sysroot, path) == (uid, gid, 0o2770) for path in WANTED)
    assert check(sysroot)[0] == 0
    # And `lmsav enqueue` as the service user writes there, with no setting at all.
    proc = sysroot.run(sysroot.program("lmsav"), "enqueue", "-f", "a@b.example", "--",
                       "c@d.example", user="lmsav", env=environment(), input="Subject: x\n\nx\n",
                       stdin=None)
    assert proc.returncode == 0, proc.stderr
    [entry] = os.listdir(sysroot.path("/var/lib/lmsav/nqueue/new"))
    assert owners(sysroot, f"/var/lib/lmsav/nqueue/new/{entry}") == (uid, gid, 0o640)
