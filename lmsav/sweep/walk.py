"""The one directory walker: the regular files under the paths given, in a stable order.

``lmsav scan`` (sweeps, ``--daemon --stream``), watch mode and the daemon's CONTSCAN and
MULTISCAN all walk with ``regular_files``. Order: a directory's files in name order, then its
subdirectories, depth first in name order (``os.walk`` top-down with sorted names).
"""

from __future__ import annotations

import fnmatch
import operator
import os
import stat
from collections.abc import Callable, Iterable, Iterator

_NAME = operator.attrgetter("name")


class WalkError(OSError):
    """An entry the walk could not look at. ``step`` says which look failed:
    "open" (a target itself), "list" (a directory's entries), "stat" (an entry) or
    "link" (a symbolic link being followed points nowhere)."""

    def __init__(self, step: str, path: str, err: OSError):
        super().__init__(err.errno, err.strerror, path)
        self.step = step

    def __reduce__(self):
        return WalkError, (self.step, self.filename, OSError(self.errno, self.strerror))


def matches(path: str, patterns: tuple[str, ...]) -> bool:
    """Whether a glob of ``patterns`` matches the whole path or its last name."""
    base = os.path.basename(path)
    return any(fnmatch.fnmatch(path, p) or fnmatch.fnmatch(base, p) for p in patterns)


def regular_files(
    targets: Iterable[str],
    *,
    follow_symlinks: bool = False,
    follow_file_links: bool = False,
    on_error: Callable[[str, OSError], None] | None = None,
    exclude: tuple[str, ...] = (),
    include: tuple[str, ...] = (),
    max_depth: int = 0,
    one_file_system: bool = False,
    on_special: Callable[[str], None] | None = None,
    on_directory: Callable[[str], None] | None = None,
    descend: Callable[[str], bool] | None = None,
    want_stat: bool = True,
) -> Iterator[tuple[str, os.stat_result | None]]:
    """Yield ``(path, stat)`` for every regular file under ``targets``, stat'ed as it will be
    opened (links followed only with ``follow_symlinks``).

    ``want_stat=False`` yields ``(path, None)`` for files inside directories: the file type
    then comes from the directory entry itself, without a stat call per file (a walk of /usr
    takes about half the time). Targets named directly are stat'ed either way.

    A target that is a file is yielded itself (``include`` selects files inside directories
    only); a symbolic link named as a target is followed once, as the user asked for it.
    Inside directories links are skipped unless ``follow_symlinks`` (loops are cut);
    ``follow_file_links`` follows the links that point to regular files, and only those
    (clamd's FollowFileSymlinks without FollowDirectorySymlinks).
    ``exclude`` hides files and whole subtrees; ``max_depth`` (0 = unlimited) limits how many
    directory levels are descended; ``one_file_system`` stays on each target's file system.

    Nothing raises for a bad entry: what cannot be stat'ed or listed goes to ``on_error`` as a
    WalkError (an OSError), special files (fifos, sockets, devices) to ``on_special``, every
    directory listed to ``on_directory``. A subdirectory is descended into only when
    ``descend(path)`` is true (default: always) — the caller may walk it elsewhere.
    """
    for top in targets:
        try:
            st = os.stat(top) if follow_symlinks else os.lstat(top)
        except OSError as err:
            _report(on_error, WalkError("open", top, err))
            continue
        if stat.S_ISLNK(st.st_mode):
            try:
                st = os.stat(top)
            except OSError as err:
                _report(on_error, WalkError("link", top, err))
                continue
        if stat.S_ISDIR(st.st_mode):
            yield from _directory_tree(top, st, follow_symlinks, follow_file_links, on_error,
                                       exclude, include, max_depth, one_file_system,
                                       on_special, on_directory, descend, want_stat)
        elif stat.S_ISREG(st.st_mode):
            if not exclude or not matches(top, exclude):
                yield top, st
        elif on_special is not None:
            on_special(top)


def _report(on_error, err: WalkError) -> None:
    if on_error is not None:
        on_error(err.filename, err)


def _directory_tree(top, top_st, follow, follow_files, on_error, exclude, include, max_depth,
                    one_fs, on_special, on_directory, descend, want_stat):
    # Options as locals: this loop runs once per directory entry.
    top_dev = top_st.st_dev
    seen_dirs = {(top_dev, top_st.st_ino)}
    stack = [(top, 0)]
    while stack:
        directory, depth = stack.pop()
        if on_directory is not None:
            on_directory(directory)
        try:
            with os.scandir(directory) as it:
                entries = sorted(it, key=_NAME)
        except OSError as err:
            _report(on_error, WalkError("list", directory, err))
            continue
        subdirs = []
        for entry in entries:
            path = entry.path
            if exclude and matches(path, exclude):
                continue
            try:
                is_link = entry.is_symlink()
                if is_link and not follow:
                    if follow_files:
                        yield from _file_link(entry, include, one_fs, top_dev, on_error)
                    continue  # clamscan's default too: links are not followed
                if entry.is_dir(follow_symlinks=follow):
                    if max_depth and depth + 1 > max_depth:
                        continue
                    st = entry.stat(follow_symlinks=follow)
                    if one_fs and st.st_dev != top_dev:
                        continue
                    key = (st.st_dev, st.st_ino)
                    if key in seen_dirs:
                        continue  # a symlink loop or a bind mount seen already
                    seen_dirs.add(key)
                    if descend is None or descend(path):
                        subdirs.append((path, depth + 1))
                elif entry.is_file(follow_symlinks=follow):
                    if include and not matches(path, include):
                        continue
                    if one_fs and is_link:
                        # The followed link's stat is cached by is_file() already.
                        st = entry.stat(follow_symlinks=True)
                        if st.st_dev != top_dev:
                            continue
                        yield path, st if want_stat else None
                    elif want_stat:
                        # One call: what a link points to when following, the entry otherwise.
                        yield path, entry.stat(follow_symlinks=follow)
                    else:
                        yield path, None  # the type came from the entry: no stat call
                elif is_link:  # followed: it points nowhere, or to a special file
                    try:
                        os.stat(path)
                    except OSError as err:
                        _report(on_error, WalkError("link", path, err))
                    else:
                        if on_special is not None:
                            on_special(path)
                elif on_special is not None:
                    on_special(path)
            except OSError as err:
                _report(on_error, WalkError("stat", path, err))
        stack.extend(reversed(subdirs))


def _file_link(entry, include, one_fs, top_dev, on_error):
    """The file a link inside a directory points to, when it is a regular file; nothing for a
    link to a directory or a special file; a "link" error when it points nowhere."""
    try:
        st = entry.stat(follow_symlinks=True)
    except OSError as err:
        _report(on_error, WalkError("link", entry.path, err))
        return
    if not stat.S_ISREG(st.st_mode) or (one_fs and st.st_dev != top_dev):
        return
    if not include or matches(entry.path, include):
        yield entry.path, st
