"""rtool.atomic: a dir appears whole or not at all, an old one survives every failure, and no temp dir is left."""

import os
import stat

import pytest

from rtool import atomic
from rtool.atomic import atomic_dir
from rtool.errors import UserError


def _old(out):
    out.mkdir()
    (out / "old.txt").write_text("old")
    return out


def _names(path):
    return sorted(p.name for p in path.iterdir())


def test_success_renames_into_place_with_mkdir_permissions(tmp_path):
    out = tmp_path / "nested" / "out"
    with atomic_dir(out, replace=False) as tmp:
        assert tmp.parent == out.parent and tmp.is_dir() and not out.exists()
        (tmp / "sub").mkdir()
        (tmp / "sub" / "a.txt").write_text("new")
    assert (out / "sub" / "a.txt").read_text() == "new"
    assert _names(out.parent) == ["out"]
    umask = os.umask(0o022)
    os.umask(umask)
    assert stat.S_IMODE(out.stat().st_mode) == 0o777 & ~umask  # not mkdtemp's 0700


def test_exception_inside_keeps_the_old_dir_and_no_temp(tmp_path):
    out = _old(tmp_path / "out")
    for error in (RuntimeError, KeyboardInterrupt):
        with pytest.raises(error):
            with atomic_dir(out, replace=True) as tmp:
                (tmp / "new.txt").write_text("partial")
                raise error
        assert _names(out) == ["old.txt"] and _names(tmp_path) == ["out"]


def test_replace_swaps_an_existing_dir(tmp_path):
    out = _old(tmp_path / "out")
    with atomic_dir(out, replace=True) as tmp:
        (tmp / "new.txt").write_text("new")
        assert _names(out) == ["old.txt"]  # the old one stays readable while the new one is written
    assert _names(out) == ["new.txt"] and _names(tmp_path) == ["out"]


def test_replace_refuses_a_file_or_a_symlink(tmp_path):
    target = _old(tmp_path / "target")
    (tmp_path / "file").write_text("x")
    (tmp_path / "link").symlink_to(target)
    for name in ("file", "link"):
        with pytest.raises(UserError, match="exists and is not a directory"):
            with atomic_dir(tmp_path / name, replace=True):
                pytest.fail("the block must not run")
    assert (tmp_path / "file").read_text() == "x" and _names(target) == ["old.txt"]
    assert _names(tmp_path) == ["file", "link", "target"]


def test_without_replace_an_existing_dir_is_an_error_before_the_block(tmp_path):
    out = _old(tmp_path / "out")
    with pytest.raises(FileExistsError) as info:
        with atomic_dir(out, replace=False):
            pytest.fail("the block must not run")
    assert info.value.filename == str(out)
    assert _names(out) == ["old.txt"] and _names(tmp_path) == ["out"]


def test_first_writer_wins(tmp_path):
    out = tmp_path / "out"
    with pytest.raises(FileExistsError):
        with atomic_dir(out, replace=False) as tmp:
            (tmp / "second.txt").write_text("ours")
            # Another writer finishes first, while this block is still writing.
            with atomic_dir(out, replace=False) as other:
                (other / "first.txt").write_text("theirs")
    assert _names(out) == ["first.txt"] and _names(tmp_path) == ["out"]


def test_a_failed_final_rename_restores_the_old_dir(tmp_path, monkeypatch):
    out = _old(tmp_path / "out")
    real_rename = os.rename

    def rename(src, dst):
        if str(src).endswith(".rtool-tmp"):  # the rename into place, not the move aside
            raise OSError(5, "simulated I/O error", str(src))
        return real_rename(src, dst)

    monkeypatch.setattr(atomic.os, "rename", rename)
    with pytest.raises(OSError, match="simulated"):
        with atomic_dir(out, replace=True) as tmp:
            (tmp / "new.txt").write_text("new")
    assert _names(out) == ["old.txt"] and _names(tmp_path) == ["out"]


def test_a_failed_final_rename_without_an_old_dir_leaves_nothing(tmp_path, monkeypatch):
    def rename(src, dst):
        raise OSError(28, "simulated full disk", str(src))

    monkeypatch.setattr(atomic.os, "rename", rename)
    with pytest.raises(OSError, match="full disk"):
        with atomic_dir(tmp_path / "out", replace=True) as tmp:
            (tmp / "new.txt").write_text("new")
    assert _names(tmp_path) == []


def test_files_and_dirs_are_fsynced_before_the_rename(tmp_path, monkeypatch):
    synced, order = [], []
    real_fsync, real_rename, real_open = os.fsync, os.rename, os.open
    names = {}

    def open_(path, flags, *args, **kwargs):
        fd = real_open(path, flags, *args, **kwargs)
        names[fd] = os.path.basename(path)
        return fd

    def fsync(fd):
        synced.append(names.get(fd))
        order.append("fsync")
        return real_fsync(fd)

    def rename(src, dst):
        order.append("rename")
        return real_rename(src, dst)

    monkeypatch.setattr(atomic.os, "open", open_)
    monkeypatch.setattr(atomic.os, "fsync", fsync)
    monkeypatch.setattr(atomic.os, "rename", rename)
    out = tmp_path / "out"
    with atomic_dir(out, replace=False) as tmp:
        (tmp / "sub").mkdir()
        (tmp / "sub" / "weights").write_bytes(b"w")
        (tmp / "config").write_text("{}")
    assert {"weights", "config", "sub"} <= set(synced)
    assert synced[-1] == tmp_path.name  # the parent, so the rename itself is durable
    assert order[-2:] == ["rename", "fsync"]


def test_an_old_dir_that_cannot_be_put_back_is_named(tmp_path, monkeypatch):
    out = _old(tmp_path / "out")
    real_rename = os.rename

    def rename(src, dst):
        if str(dst) == str(out):  # both the rename into place and the restore
            raise OSError(5, "simulated I/O error", str(src))
        return real_rename(src, dst)

    monkeypatch.setattr(atomic.os, "rename", rename)
    with pytest.raises(OSError) as info:
        with atomic_dir(out, replace=True):
            pass
    (old,) = tmp_path.iterdir()  # the temp dir is gone; the old output is kept aside, not deleted
    assert old.name.endswith(".rtool-old") and _names(old) == ["old.txt"]
    assert any(str(old) in note for note in info.value.__notes__)


def test_merge_output_made_by_someone_else_while_merging_is_kept(tmp_path):
    from rtool.merge.bai import staged_output

    out = tmp_path / "out"
    with pytest.raises(UserError, match="output dir exists.*--overwrite"):
        with staged_output(out) as tmp:
            (tmp / "model.safetensors").write_bytes(b"ours")
            _old(out)
    assert _names(out) == ["old.txt"] and _names(tmp_path) == ["out"]
