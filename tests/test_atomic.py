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


def _dead_pid():
    # A process that has exited and been reaped: its pid runs nothing (until the kernel hands it out again).
    import subprocess
    import sys

    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_the_next_writer_removes_what_a_killed_writer_left_and_nothing_else(tmp_path):
    out = tmp_path / "out.jsonl"
    host = atomic._host_tag()
    dead, alive = _dead_pid(), os.getppid()
    names = {
        "dead": f".out.jsonl.{dead}.{host}.0123456789ab.rtool-tmp",       # a kill -9 mid-write
        "dead_dir": f".out.jsonl.{dead}.{host}.0123456789ac.rtool-tmp",   # a kill -9 mid-merge
        "old_rtool": f".out.jsonl.{dead}.rtool-tmp",                       # rtool before the host and token
        "alive": f".out.jsonl.{alive}.{host}.0123456789ad.rtool-tmp",     # a writer still at work
        "other_host": f".out.jsonl.{dead}.ffffff.0123456789ae.rtool-tmp",  # a pid of another machine
        "other_file": f".other.jsonl.{dead}.{host}.0123456789af.rtool-tmp",
        "previous_output": f".out.jsonl.{dead}.{host}.0123456789b0.rtool-old",  # out is missing: kept (_swap_in)
    }
    for key, name in names.items():
        if key == "dead_dir" or key == "previous_output":
            (tmp_path / name).mkdir()
            (tmp_path / name / "model.safetensors").write_text("x")
        else:
            (tmp_path / name).write_text("x")
    atomic.remove_stale_temporaries(out)
    left = {key for key, name in names.items() if (tmp_path / name).exists()}
    assert left == {"alive", "other_host", "other_file", "previous_output"}
    out.mkdir()  # the swap completed: the old dir beside it is garbage now
    atomic.remove_stale_temporaries(out)
    assert not (tmp_path / names["previous_output"]).exists()


def test_each_temporary_has_its_own_name_and_the_permissions_of_a_new_file(tmp_path):
    target = tmp_path / "out.jsonl"
    (first, a), (second, b) = atomic.open_temporary(target), atomic.open_temporary(target)
    a.close(), b.close()
    assert first != second and first.parent == second.parent == tmp_path
    assert first.name.startswith(f".out.jsonl.{os.getpid()}.") and first.name.endswith(".rtool-tmp")
    umask = os.umask(0o022)
    os.umask(umask)
    assert stat.S_IMODE(first.stat().st_mode) == 0o666 & ~umask


@pytest.mark.skipif(not os.path.isdir("/sys/kernel"), reason="needs sysfs")
def test_a_place_that_takes_no_file_is_refused_even_for_root():
    # sysfs refuses a new file to root too, whatever the permission bits say: os.access alone lets it through.
    with pytest.raises(UserError) as caught:
        atomic.check_writable("/sys/x.png", kind="file")
    assert caught.value.render().startswith("/sys/x.png: cannot ")
    assert "rtool-tmp" not in caught.value.render()


def test_outputs_that_are_inputs_or_each_other_are_refused(tmp_path, monkeypatch):
    from rtool.atomic import check_outputs_distinct

    monkeypatch.chdir(tmp_path)
    (tmp_path / "in.jsonl").write_text("{}\n")
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "config.json").write_text("{}")
    os.link(tmp_path / "in.jsonl", tmp_path / "hard.jsonl")

    def refused(outputs, inputs, dirs=()):
        with pytest.raises(UserError) as caught:
            check_outputs_distinct(outputs, inputs, dirs=dirs)
        return caught.value.render()

    assert refused({"-o": "./in.jsonl"}, {"-i": "in.jsonl"}).startswith("./in.jsonl: -o would replace an input: "
                                                                        "it is -i in.jsonl")
    assert "it is -i in.jsonl" in refused({"-o": "hard.jsonl"}, {"-i": "in.jsonl"})  # one file, two names
    assert refused({"-o": "new.jsonl", "--report": "sub/../new.jsonl"}, {}).startswith(
        "sub/../new.jsonl: --report and -o name the same file")
    assert "model/config.json is inside it" in refused({"--out": "model"}, {"--data": "model/config.json"},
                                                       dirs=["--out"])
    # Not clashes: other files, stdin and stdout, devices named twice, an input that is no local file, an output
    # inside an input dir (curves.png beside the run's metrics.jsonl).
    check_outputs_distinct({"-o": "out.jsonl", "--report": "report.jsonl"},
                           {"-i": ["in.jsonl", "-", "openai/gsm8k", "http://localhost:8000/v1", None]})
    check_outputs_distinct({"-o": "-", "--report": "/dev/null", "--records": "/dev/null"}, {"-i": "-"})
    check_outputs_distinct({"--out": "model/curves.png"}, {"RUN_DIR": "model"})
