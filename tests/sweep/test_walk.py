"""The one walker (lmsav.sweep.walk.regular_files): what the sweep, `scan --daemon --stream`,
watch mode and the daemon's CONTSCAN/MULTISCAN see of a tree."""

import os
import stat

import pytest

from lmsav.sweep.walk import WalkError, regular_files


@pytest.fixture
def tree(tmp_path):
    root = tmp_path / "t"
    (root / "b" / "c").mkdir(parents=True)
    (root / "a").mkdir()
    (root / "z.txt").write_text("z")
    (root / "m.txt").write_text("m")
    (root / "a" / "one.log").write_text("one")
    (root / "b" / "two.txt").write_text("two")
    (root / "b" / "c" / "three.txt").write_text("three")
    return root


def names(root, **kw):
    return [os.path.relpath(path, root) for path, _st in regular_files([str(root)], **kw)]


def test_files_of_a_directory_then_its_subdirectories_in_name_order(tree):
    # The order of os.walk top-down with sorted names, which the daemon's replies always had.
    expected = [os.path.relpath(os.path.join(d, f), tree)
                for d, dirs, files in sorted_walk(tree) for f in files]
    assert names(tree) == expected == [
        "m.txt", "z.txt", "a/one.log", "b/two.txt", "b/c/three.txt"]


def sorted_walk(top):
    for d, dirs, files in os.walk(top):
        dirs.sort()
        yield d, dirs, sorted(files)


def test_each_file_comes_with_its_stat(tree):
    for path, st in regular_files([str(tree)]):
        assert stat.S_ISREG(st.st_mode)
        assert (st.st_ino, st.st_size) == (os.lstat(path).st_ino, os.lstat(path).st_size)


def test_a_file_target_is_yielded_itself_and_a_missing_one_goes_to_on_error(tree):
    errors = []
    got = list(regular_files([str(tree / "z.txt"), str(tree / "nope")],
                             on_error=lambda path, err: errors.append((path, err))))
    assert [p for p, _ in got] == [str(tree / "z.txt")]
    assert len(errors) == 1
    path, err = errors[0]
    assert path == str(tree / "nope")
    assert isinstance(err, OSError) and isinstance(err, WalkError)
    assert (err.step, err.strerror) == ("open", "No such file or directory")


def test_links_inside_are_skipped_unless_followed_and_loops_are_cut(tree):
    os.symlink(tree / "z.txt", tree / "link.txt")
    os.symlink(tree, tree / "a" / "loop")
    assert "link.txt" not in names(tree)
    followed = names(tree, follow_symlinks=True)
    assert "link.txt" in followed
    assert not any(p.startswith("a/loop") for p in followed)


def test_a_symlink_named_as_target_is_followed_once(tree, tmp_path):
    os.symlink(tree, tmp_path / "via")
    assert len(list(regular_files([str(tmp_path / "via")]))) == 5


def test_special_files_are_not_yielded_but_told(tree):
    os.mkfifo(tree / "fifo")
    special = []
    assert "fifo" not in names(tree, on_special=special.append)
    assert special == [str(tree / "fifo")]


def test_broken_link_followed_goes_to_on_error(tree):
    os.symlink(tree / "missing", tree / "dangling")
    errors = []
    assert "dangling" not in names(tree, follow_symlinks=True,
                                   on_error=lambda p, e: errors.append((p, e.step, e.errno)))
    assert errors == [(str(tree / "dangling"), "link", 2)]


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads unreadable directories")
def test_an_unreadable_directory_goes_to_on_error_and_the_walk_goes_on(tree):
    (tree / "a").chmod(0)
    errors = []
    try:
        got = names(tree, on_error=lambda p, e: errors.append((p, e.step)))
    finally:
        (tree / "a").chmod(0o755)
    assert got == ["m.txt", "z.txt", "b/two.txt", "b/c/three.txt"]
    assert errors == [(str(tree / "a"), "list")]


def test_no_callback_means_problems_are_skipped_silently(tree, tmp_path):
    assert list(regular_files([str(tmp_path / "nope")])) == []


def test_filters_depth_and_directories_listed(tree):
    assert names(tree, exclude=("*.log",)) == ["m.txt", "z.txt", "b/two.txt", "b/c/three.txt"]
    assert names(tree, exclude=(str(tree / "b"),)) == ["m.txt", "z.txt", "a/one.log"]
    assert names(tree, include=("*.txt",)) == ["m.txt", "z.txt", "b/two.txt", "b/c/three.txt"]
    assert names(tree, max_depth=1) == ["m.txt", "z.txt", "a/one.log", "b/two.txt"]
    listed = []
    names(tree, on_directory=listed.append)
    assert listed == [str(tree), str(tree / "a"), str(tree / "b"), str(tree / "b" / "c")]


def test_descend_leaves_subdirectories_to_the_caller(tree):
    elsewhere = []
    got = names(tree, descend=lambda d: elsewhere.append(d) and False)
    assert got == ["m.txt", "z.txt"]
    assert elsewhere == [str(tree / "a"), str(tree / "b")]


def test_a_directory_the_kernel_refuses_to_list_goes_to_on_error(tree, monkeypatch):
    # The same as the test above for root, who reads every directory: the listing fails.
    import lmsav.sweep.walk as walk_mod

    real = os.scandir

    def refusing(path):
        if path == str(tree / "b"):
            raise PermissionError(13, "Permission denied", path)
        return real(path)

    monkeypatch.setattr(walk_mod.os, "scandir", refusing)
    errors = []
    got = names(tree, on_error=lambda p, e: errors.append((p, e.step, e.strerror)))
    assert got == ["m.txt", "z.txt", "a/one.log"]
    assert errors == [(str(tree / "b"), "list", "Permission denied")]


def test_without_want_stat_files_inside_come_without_a_stat_call(tree, monkeypatch):
    # The regular-file test then comes from the directory entry: no stat per file, the same
    # files in the same order; a target named directly still has its stat.
    calls = []
    real_stat = os.DirEntry.stat

    class CountingEntry:  # DirEntry cannot be patched: count through scandir's entries
        def __init__(self, entry):
            self._entry = entry

        def __getattr__(self, name):
            return getattr(self._entry, name)

        def stat(self, **kw):
            calls.append(self._entry.path)
            return real_stat(self._entry, **kw)

    import lmsav.sweep.walk as walk_mod

    real_scandir = os.scandir

    class Listing:
        def __init__(self, path):
            self._it = real_scandir(path)

        def __enter__(self):
            return [CountingEntry(e) for e in self._it]

        def __exit__(self, *exc):
            self._it.close()

    monkeypatch.setattr(walk_mod.os, "scandir", Listing)
    got = list(regular_files([str(tree), str(tree / "z.txt")], want_stat=False))
    assert [os.path.relpath(p, tree) for p, _ in got] == [
        "m.txt", "z.txt", "a/one.log", "b/two.txt", "b/c/three.txt", "z.txt"]
    assert all(st is None for _, st in got[:-1]) and stat.S_ISREG(got[-1][1].st_mode)
    assert not any(path.endswith((".txt", ".log")) for path in calls)
    calls.clear()
    assert all(st is not None for _, st in regular_files([str(tree)]))
    assert str(tree / "m.txt") in calls


def test_follow_file_links_follows_links_to_files_only(tree, tmp_path):
    outside = tmp_path / "outside"
    (outside / "deep").mkdir(parents=True)
    (outside / "target.txt").write_text("x")
    (outside / "deep" / "inner.txt").write_text("y")
    os.symlink(outside / "target.txt", tree / "a" / "to-file")
    os.symlink(outside / "deep", tree / "a" / "to-dir")
    os.symlink(tree / "missing", tree / "a" / "dangling")
    os.mkfifo(outside / "fifo")
    os.symlink(outside / "fifo", tree / "a" / "to-fifo")
    errors = []
    got = dict(regular_files([str(tree)], follow_file_links=True, want_stat=False,
                             on_error=lambda p, e: errors.append((p, e.step))))
    assert [os.path.relpath(p, tree) for p in got] == [
        "m.txt", "z.txt", "a/one.log", "a/to-file", "b/two.txt", "b/c/three.txt"]
    assert got[str(tree / "a" / "to-file")].st_ino == os.stat(outside / "target.txt").st_ino
    assert errors == [(str(tree / "a" / "dangling"), "link")]
    assert "a/to-file" not in names(tree)
