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
    check_outputs_distinct({"-o": out, "--report": report}, {"--input": input})   # no output is an input or
                                                                                    # another output
    path, handle = open_temporary(Path("out.jsonl"))         # .out.jsonl.PID.HOST.TOKEN.rtool-tmp, this writer's own

Temporary files and dirs are named `.NAME.PID.HOST.TOKEN.rtool-tmp` beside their target: the token makes each
writer's name its own (two writers of one run never share one), and the pid and host say whose it is, so that the
next run that writes NAME removes those a killed process left (`remove_stale_temporaries`).

The block writes into a fresh dir on the same filesystem as `out`, so the final step is a rename. Before it, every
file and dir inside is fsynced (a rename can reach the disk before the data it names: after a crash the dir would
exist with empty files), and after it the parent is, so the rename itself survives a crash. A crash at any point
leaves `out` old or new, plus at most a hidden `.NAME.*.rtool-tmp` (or `.rtool-old`) beside it, which the next
run that writes `out` removes.
"""

from __future__ import annotations

import errno
import functools
import hashlib
import os
import re
import secrets
import shutil
import socket
import stat
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Iterable, Iterator

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
    remove_stale_temporaries(out)
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
    # thread-safe).
    while True:
        path = temporary_path(out, suffix)
        try:
            os.mkdir(path)
            return path
        except FileExistsError:
            continue


# Beside a target NAME: .NAME.PID.HOST.TOKEN.rtool-tmp (or .rtool-old: a replaced dir on its way out). Before the
# host and token were added, rtool named a temporary file .NAME.PID.rtool-tmp: the next run removes those too.
_TEMPORARY_TAIL = r"(?P<pid>[0-9]+)(?:\.(?P<host>[0-9a-f]{6})\.[0-9a-f]{12})?\.rtool-(?:tmp|old)"


def temporary_path(target: Path, suffix: str = "rtool-tmp") -> Path:
    """A fresh name beside `target` for this writer: `.NAME.PID.HOST.TOKEN.SUFFIX`. The name is cut so that the
    whole stays under NAME_MAX (255)."""
    return target.parent / f".{target.name[:200]}.{os.getpid()}.{_host_tag()}.{secrets.token_hex(6)}.{suffix}"


def open_temporary(target: Path, mode: str = "w", **options) -> tuple[Path, IO]:
    """Create a temporary file beside `target` (a name no other writer has: created exclusively) and open it
    with `mode` ("w" or "wb") and open()'s `options`; (its path, the open file). Its permissions are a new
    file's (the umask applies)."""
    while True:
        path = temporary_path(target)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        except FileExistsError:
            continue
        return path, os.fdopen(fd, mode, **options)


def remove_stale_temporaries(target: Path) -> None:
    """Remove the temporary files and dirs beside `target` that a process of this host left when it was killed
    (its pid is not running): the run that writes `target` next cleans up after the one that died. Those of a
    running process, or of another host (a shared filesystem), are left alone."""
    target = Path(target)
    try:
        names = os.listdir(target.parent)
    except OSError:
        return
    pattern = re.compile(re.escape(f".{target.name[:200]}.") + _TEMPORARY_TAIL)
    for name in names:
        match = pattern.fullmatch(name)
        if match is None or match["host"] not in (None, _host_tag()):
            continue
        pid = int(match["pid"])
        if match["host"] is None and pid > 1 << 22:  # beyond any pid_max: not an old rtool's pid
            continue
        if _running(pid) or (name.endswith(".rtool-old") and not os.path.lexists(target)):
            continue  # an old dir with no new one in its place is the user's previous output (see _swap_in)
        path = target.parent / name
        logger.info("removing %s, left by a run of pid %d that was killed", path, pid)
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            try:
                path.unlink()
            except OSError:
                pass


def _running(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # EPERM: another user's process, alive
        return True
    return True


@functools.cache
def _host_tag() -> str:
    # Which machine a temporary belongs to: a pid means something only on the host that made it.
    return hashlib.sha1(socket.gethostname().encode()).hexdigest()[:6]


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


def check_writable(path, *, kind: str, renamed: bool = False) -> None:
    """Refuse, before any work is done, an output `path` (kind "file" or "dir") that cannot be written: a directory
    where a file goes or the reverse, a parent that is a file, no write permission, a filesystem that takes no new
    file there (/sys, a read-only mount: root is refused there too). UserError naming `path` as the user gave it,
    never a temporary name or a parent alone. `renamed`: the file is written beside `path` and renamed over it (an
    atomic writer), so its dir must take a new file even when `path` exists. Nothing is left behind: a probe file
    is made and removed at once where the output will be made."""
    path = Path(path)
    if os.path.exists(path):  # (a dangling symlink: checked as the file it will create)
        if kind == "file" and path.is_dir():
            raise UserError("is a directory", path=path, hint="pass a file name")
        if kind == "dir" and not path.is_dir():
            raise UserError("exists and is not a directory", path=path, hint="pass a directory path")
        if not os.access(path, os.W_OK):
            raise UserError("not writable (permission denied)", path=path)
        if kind == "dir":
            _probe(path / "probe", path)
        elif renamed and path.is_file():
            _probe(Path(os.path.realpath(path)), path)
        return
    ancestor = Path(os.path.realpath(path)).parent if path.is_symlink() else path.parent
    while not os.path.lexists(ancestor) and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise UserError(f"cannot be created: {ancestor} is not a directory", path=path)
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise UserError(f"cannot be created: no write permission in {ancestor}", path=path)
    _probe(ancestor / path.name, path)


def _probe(beside: Path, given: Path) -> None:
    # os.access trusts the permission bits, and root passes them: sysfs, a read-only mount or a full quota only
    # say no when a file is really made.
    remove_stale_temporaries(beside)  # a probe of a run killed in the instant between making and removing it
    try:
        temporary, handle = open_temporary(beside)
    except OSError as error:
        raise UserError(f"cannot write: {_reason(error)}", path=given) from None
    handle.close()
    temporary.unlink(missing_ok=True)


def _reason(error: OSError) -> str:
    return os.strerror(error.errno).lower() if error.errno else type(error).__name__


def check_outputs_distinct(outputs: dict, inputs: dict | None = None, *, dirs: Iterable[str] = ()) -> None:
    """Refuse, before any work, an output that is an input or another output of the same run: `-o in.jsonl` would
    replace what is being read, `-o x --report ./x` would have two writers garble one file. `outputs` and `inputs`
    map a flag as the user knows it to a path as given (a list of paths for an input flag that takes several;
    None: not given). Paths are compared as files (symlinks, `./x` and `x`, hard links alike); "-" (stdin) is the
    file stdin reads when it is one (`< in.jsonl`). An input that is no local file (a hub id, a URL) cannot clash,
    nor can a device or a FIFO (`/dev/null` twice is fine). A flag in `dirs` names an output dir, which is replaced
    or written into: no input may be inside it either. UserError naming the output as given."""
    seen: dict = {}  # identity -> the output flag that named it
    for flag, given in outputs.items():
        identity = _identity(given, stdin=False)
        if identity is None:
            continue
        if identity in seen:
            raise UserError(f"{flag} and {seen[identity]} name the same file", path=given,
                            hint="write each to its own file: two writers would garble it")
        seen[identity] = flag
    for in_flag, given_inputs in (inputs or {}).items():
        for input_given in given_inputs if isinstance(given_inputs, (list, tuple)) else [given_inputs]:
            identity = _identity(input_given, stdin=True)
            if identity is None:
                continue
            shown = f"{in_flag} {input_given}" if str(input_given) != "-" else f"{in_flag} - (stdin)"
            for flag, given in outputs.items():
                if identity == _identity(given, stdin=False):
                    raise UserError(f"{flag} would replace an input: it is {shown}", path=given,
                                    hint="write to another dir" if flag in dirs else "write it to another file")
                if flag in dirs and given is not None and str(input_given) != "-" and _inside(input_given, given):
                    raise UserError(f"{flag} would replace an input: {shown} is inside it", path=given,
                                    hint="write to another dir")


def _identity(given, *, stdin: bool):
    """What makes two names one file: (device, inode) of an existing file or dir, the resolved path of an output
    not made yet; None for what cannot clash (not given, stdout, a device, a FIFO, an input that is no file)."""
    if given is None or (str(given) == "-" and not stdin):
        return None
    try:
        status = os.fstat(0) if str(given) == "-" else os.stat(given)
    except (OSError, ValueError):
        if stdin:
            return None  # an input that is not there: a hub id, a URL, a shipped benchmark's name
        return ("not made yet", os.path.realpath(given))
    if stat.S_ISREG(status.st_mode) or stat.S_ISDIR(status.st_mode):
        return ("file", status.st_dev, status.st_ino)
    return None


def _inside(path, directory) -> bool:
    inner, outer = os.path.realpath(path), os.path.realpath(directory)
    return inner != outer and os.path.commonpath([inner, outer]) == outer


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
        raise UserError(f"cannot write: {_reason(error)}", path=path) from error
