"""The memory a transcription batch frees goes back to the system (docs/transcribe_load.md)."""

import ctypes
import ctypes.util
from pathlib import Path

import pytest

from speechpos.inference.transcribe import release_freed_memory

BLOCK = 64 * 1024  # under glibc's mmap threshold: served from the heap, as a batch's tensors end up


def rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS in /proc/self/status")


@pytest.mark.skipif(not Path("/proc/self/status").is_file(), reason="needs Linux /proc")
def test_freed_heap_blocks_leave_the_resident_set():
    if not release_freed_memory():
        pytest.skip("this C library has no malloc_trim")
    libc = ctypes.CDLL(ctypes.util.find_library("c"))
    libc.malloc.restype = ctypes.c_void_p
    libc.malloc.argtypes = [ctypes.c_size_t]
    libc.free.argtypes = [ctypes.c_void_p]
    blocks = [libc.malloc(BLOCK) for _ in range(4000)]  # 250 MiB
    try:
        for b in blocks:
            ctypes.memset(b, 1, BLOCK)
        # Keep one block in a hundred: the heap cannot shrink from its top, as after a real batch.
        kept = blocks[::100]
        for i, b in enumerate(blocks):
            if i % 100:
                libc.free(b)
        blocks = kept
        before = rss_mib()
        assert release_freed_memory()
        after = rss_mib()
    finally:
        for b in blocks:
            libc.free(b)
    assert before - after > 200, (before, after)
