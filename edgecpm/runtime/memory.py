"""Give back the pages of an artifact's weights file that onnxruntime no longer reads.

onnxruntime maps external initializers from the weights file (private mappings). MatMulNBits repacks
its weights into its own buffers at load, reading every page of the file, and those clean pages then
stay in the process's resident set although only the embedding lookup still reads the mapping (a few
rows per token). MADV_DONTNEED on a mapping that holds no private (copy-on-write) pages drops them
exactly: a later read faults the same bytes back in from the file. Mappings with private pages are
left alone. Linux (and Android) only; elsewhere nothing happens.

Only right after a session is made: onnxruntime unmaps an initializer's mapping once it is repacked,
so during a load an address range read from smaps could already belong to the heap (a watcher
thread doing this while sessions load corrupted the heap in the native runtime; it is gone).
"""

from __future__ import annotations

import ctypes
import gc
import sys
from pathlib import Path

MADV_DONTNEED = 4


def _file_mappings(path: Path) -> list[tuple[int, int, int]]:
    """(start, end, private KiB) of this process's mappings of `path`, from /proc/self/smaps."""
    out, cur = [], None
    with open("/proc/self/smaps") as f:
        for line in f:
            parts = line.split()
            if not parts[0].endswith(":"):  # a mapping's header line: "lo-hi perms offset dev inode [path]"
                cur = None
                if len(parts) >= 6 and parts[5] == str(path):
                    lo, hi = (int(x, 16) for x in parts[0].split("-"))
                    cur = [lo, hi, 0]
                    out.append(cur)
            elif cur is not None and parts[0] in ("Anonymous:", "Private_Dirty:"):
                cur[2] += int(parts[1])
    return [tuple(m) for m in out]


def file_mappings(path: str | Path) -> set[tuple[int, int]]:
    """(start, end) of this process's mappings of `path` now: what release_file_pages must not touch
    afterwards (they may belong to older sessions that can be freed, and their addresses reused by
    the heap, at any moment)."""
    if not sys.platform.startswith("linux"):
        return set()
    try:
        return {(lo, hi) for lo, hi, _ in _file_mappings(Path(path).resolve())}
    except OSError:
        return set()


def release_file_pages(path: str | Path, before: set[tuple[int, int]] | None = None) -> int:
    """Drop this process's resident clean pages of the file `path`, in the mappings that are not in
    `before` (file_mappings() taken before the session that owns the new ones was made); returns the
    bytes of mappings advised (0 where /proc or madvise are not there).

    The garbage collector is off meanwhile: a cycle freed between reading smaps and madvise could close
    an old session, whose unmapped range the heap may then take (MADV_DONTNEED would zero live memory)."""
    if not sys.platform.startswith("linux"):
        return 0
    gc_was_on = gc.isenabled()
    gc.disable()
    try:
        maps = _file_mappings(Path(path).resolve())
        done = 0
        for lo, hi, private_kib in maps:
            if (lo, hi) in (before or set()) or private_kib:
                continue
            if _LIBC is not None and _LIBC.madvise(lo, hi - lo, MADV_DONTNEED) == 0:
                done += hi - lo
        return done
    except OSError:
        return 0
    finally:
        if gc_was_on:
            gc.enable()


def _libc():
    try:
        libc = ctypes.CDLL(None, use_errno=True)
    except OSError:
        return None
    libc.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    return libc


_LIBC = _libc() if sys.platform.startswith("linux") else None
