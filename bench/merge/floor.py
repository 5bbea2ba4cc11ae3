"""The I/O floor of a merge: read three inputs once and write one output of the same size, then fsync.

    python bench/merge/floor.py [--mmap] A.safetensors B.safetensors C.safetensors OUT.bin

Default: pread 64 MB at a time from each input into reused buffers and write the first input's chunk to OUT.
--mmap: map the inputs instead and read every byte in place (a max() over each chunk, no copy), then drop the
pages, as rtool merge-bai reads. No arithmetic either way; a merge moves the same bytes.
"""

import mmap
import os
import sys

CHUNK = 64 << 20


def pwrite_all(fd: int, view, offset: int) -> None:
    done = 0
    while done < len(view):
        done += os.pwrite(fd, view[done:], offset + done)


def with_pread(inputs: list[str], out_fd: int) -> None:
    fds = [os.open(p, os.O_RDONLY) for p in inputs]
    size = os.fstat(fds[0]).st_size
    views = [memoryview(bytearray(CHUNK)) for _ in fds]
    for offset in range(0, size, CHUNK):
        n = min(CHUNK, size - offset)
        for fd, view in zip(fds, views):
            done = 0
            while done < n:
                done += os.preadv(fd, [view[done:n]], offset + done)
        pwrite_all(out_fd, views[0][:n], offset)
    for fd in fds:
        os.close(fd)


def with_mmap(inputs: list[str], out_fd: int) -> None:
    import numpy as np

    maps = []
    for path in inputs:
        with open(path, "rb") as f:
            maps.append(mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ))
    arrays = [np.frombuffer(m, dtype=np.uint8) for m in maps]
    size = len(maps[0])
    for offset in range(0, size, CHUNK):
        end = min(size, offset + CHUNK)
        for array in arrays:
            array[offset:end].max()  # touches every byte
        pwrite_all(out_fd, memoryview(arrays[0][offset:end]), offset)
        for m in maps:
            m.madvise(mmap.MADV_DONTNEED, offset, end - offset)
    del arrays


def main(argv: list[str]) -> None:
    use_mmap = "--mmap" in argv
    paths = [a for a in argv if a != "--mmap"]
    out_fd = os.open(paths[3], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    (with_mmap if use_mmap else with_pread)(paths[:3], out_fd)
    os.fsync(out_fd)
    os.close(out_fd)


if __name__ == "__main__":
    main(sys.argv[1:])
