"""Write a directory so that it appears whole or not at all: model saves, merge outputs, the GGUF cache.

    with atomic_dir("runs/merged", replace=True) as tmp:    # tmp: an empty dir beside runs/merged
        write_everything_into(tmp)
    # runs/merged is now the new dir; the old one (if any) is gone. Had the block raised, runs/merged would be
    # untouched and tmp removed.

    try:
        with atomic_dir(cache_dir, replace=False) as tmp:   # first writer wins
            save(tmp)
    except FileExistsError:
        ...                                                 # another writer got there first; its dir is intact

    check_writable("runs/x/out.jsonl", kind="file")          # before any work: UserError naming the path as given
    with output_errors("runs/x/out.jsonl"):                  # an OSError in the block -> the same one-line error
        ...

The block writes into a fresh dir on the same filesystem as `out`, so the final step is a rename. Before it, every
file and dir inside is fsynced (a rename can reach the disk before the data it names: after a crash the dir would
exist with empty files), and after it the parent is, so the rename itself survives a crash. A crash at any point
leaves `out` old or new, plus at most a hidden `.NAME.*.rtool-tmp` (or `.rtool-old`) beside it.
"""

from __future__ import annotations

import errno
import os
import secrets
import shutil
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from rtool.errors import UserError
from rtool.log import logger


@contextmanager
def atomic_dir(out, *, replace: bool) -> Iterator[Path]:
    """Yield an empty temporary dir beside `out`; when the block succeeds, rename it to `out`.

    replace=True: an existing `out` dir is moved aside, the new one renamed in, then the old one removed; if the
    rename in fails, the old one is put back. An existing `out` that is a file or a symlink raises UserError (it
    is not replaced: a symlinked output most likely means the dir it points to).
    replace=False: `out` is never replaced. FileExistsError is raised at once when it exists, and after the block
    when another writer put one there meanwhile (its dir is kept, ours removed): first writer wins.

    On any exception (Ctrl-C included) the temporary dir is removed and `out` is as it was. The finished dir has
    the permissions a plain mkdir would give it.
    """
    out = Path(out)
    _check_target(out, replace)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = _make_dir_beside(out, "rtool-tmp")
    try:
        yield tmp
        _fsync_tree(tmp)
        _check_target(out, replace)  # the block may have taken minutes: look again
        if replace and os.path.lexists(out):
            _swap_in(tmp, out)
        else:
            _rename_no_replace(tmp, out)
        _fsync_dir(out.parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _check_target(out: Path, replace: bool) -> None:
    if not os.path.lexists(out):
        return
    if not replace:
        raise FileExistsError(errno.EEXIST, "output exists", str(out))
    if out.is_symlink() or not out.is_dir():
        raise UserError("output exists and is not a directory" + (" (a symlink)" if out.is_symlink() else ""),
                        path=out, hint="pass a directory path, or remove it first")


def _make_dir_beside(out: Path, suffix: str) -> Path:
    # os.mkdir applies the umask like any mkdir (mkdtemp would make 0700, and setting the umask to read it is not
    # thread-safe). The name is cut so that prefix + name + suffix stays under NAME_MAX (255).
    while True:
        path = out.parent / f".{out.name[:200]}.{secrets.token_hex(6)}.{suffix}"
        try:
            os.mkdir(path)
            return path
        except FileExistsError:
            continue


def _swap_in(tmp: Path, out: Path) -> None:
    old = out.parent / f"{tmp.name.removesuffix('.rtool-tmp')}.rtool-old"
    os.rename(out, old)
    try:
        os.rename(tmp, out)
    except BaseException as error:
        try:
            os.rename(old, out)  # never leave `out` missing: put the previous dir back
        except OSError as restore_error:
            # Say where the old dir is: it holds the user's previous output.
            error.add_note(f"the previous {out} could not be put back ({restore_error}); it is at {old}")
            logger.error("the previous %s could not be put back (%s); it is at %s", out, restore_error, old)
        raise
    shutil.rmtree(old, ignore_errors=True)


def _rename_no_replace(tmp: Path, out: Path) -> None:
    # rename(2) onto a non-empty dir fails (ENOTEMPTY/EEXIST), onto a file ENOTDIR; both mean someone else's `out`
    # is there now. (An empty dir created at `out` in the instant since the check would be replaced: rename has no
    # portable no-replace flag.)
    try:
        os.rename(tmp, out)
    except OSError as error:
        if error.errno in (errno.ENOTEMPTY, errno.EEXIST, errno.ENOTDIR, errno.EISDIR):
            raise FileExistsError(errno.EEXIST, "output exists", str(out)) from error
        raise


def _fsync_tree(root: Path) -> None:
    for dirpath, _, filenames in os.walk(root):
        for name in filenames:
            path = os.path.join(dirpath, name)
            if not os.path.islink(path):
                _fsync_path(path, os.O_RDONLY)
        _fsync_dir(dirpath)


def _fsync_dir(path) -> None:
    _fsync_path(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))


def _fsync_path(path, flags: int) -> None:
    fd = os.open(path, flags)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def check_writable(path, *, kind: str) -> None:
    """Refuse, before any work is done, an output `path` (kind "file" or "dir") that cannot be written: a directory
    where a file goes or the reverse, a parent that is a file, no write permission. UserError naming `path` as the
    user gave it, never a temporary name or a parent alone. Nothing is created."""
    path = Path(path)
    if os.path.exists(path):  # (a dangling symlink: checked as the file it will create)
        if kind == "file" and path.is_dir():
            raise UserError("is a directory", path=path, hint="pass a file name")
        if kind == "dir" and not path.is_dir():
            raise UserError("exists and is not a directory", path=path, hint="pass a directory path")
        if not os.access(path, os.W_OK):
            raise UserError("not writable (permission denied)", path=path)
        return
    ancestor = Path(os.path.realpath(path)).parent if path.is_symlink() else path.parent
    while not os.path.lexists(ancestor) and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise UserError(f"cannot be created: {ancestor} is not a directory", path=path)
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise UserError(f"cannot be created: no write permission in {ancestor}", path=path)


@contextmanager
def output_errors(path) -> Iterator[None]:
    """Turn an OSError raised while creating, writing or renaming the output `path` (or a temporary file beside
    it) into one UserError naming `path` as the user gave it: "permission denied", not a traceback about
    `.out.jsonl.1234.rtool-tmp`."""
    try:
        yield
    except OSError as error:
        if isinstance(error, BrokenPipeError):
            raise  # a closed stdout ends quietly (rtool.cli)
        reason = os.strerror(error.errno).lower() if error.errno else type(error).__name__
        raise UserError(f"cannot write: {reason}", path=path) from error
