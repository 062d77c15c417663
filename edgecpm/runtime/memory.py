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

Better, where onnxruntime can take it (>= 1.32, `session.use_external_initializer_file_buffers_directly`):
the runtime maps the weights file itself (WeightsMap) and onnxruntime uses that mapping in place. The
mapping is ours and outlives the session, so its pages can be given back *while* the session loads
(WeightsMap.releasing), and the load no longer holds the file's pages and their repacked copies at once.
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import mmap
import sys
import threading
from pathlib import Path

import numpy as np

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


DIRECT_BUFFERS = "session.use_external_initializer_file_buffers_directly"
RELEASE_EVERY = 32  # tokens fed between two page releases while a model runs (WeightsMap.fed); steps
# of this many rows or more also release while they run (WeightsMap.releasing)


def _takes_buffers_in_place(version: str) -> bool:
    """onnxruntime >= 1.32 uses in-memory external data in place with DIRECT_BUFFERS; older ones copy
    it (a second copy of every weight: worse than letting onnxruntime map the file)."""
    try:
        return tuple(int(x) for x in version.split(".")[:2]) >= (1, 32)
    except ValueError:
        return False


class WeightsMap:
    """The artifact's weights file mapped read-only by the runtime, handed to onnxruntime to use in
    place. It must outlive every session made with it: it is unmapped when the last reference goes
    (the engine hangs it on its session object, whose onnxruntime session is freed first)."""

    def __init__(self, path: Path):
        self.name = path.name
        with open(path, "rb") as f:
            self._map = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        self.buffer = np.frombuffer(self._map, np.uint8)  # [bytes of the file]
        self._fed = 0

    @classmethod
    def open(cls, path: str | Path, ort_version: str) -> WeightsMap | None:
        """The map, or None where onnxruntime would copy it, or the file cannot be mapped (then
        onnxruntime maps the file itself, as before)."""
        path = Path(path)
        if not _takes_buffers_in_place(ort_version) or not path.is_file() or path.stat().st_size == 0:
            return None
        try:
            return cls(path)
        except (OSError, ValueError):
            return None

    def attach(self, so) -> None:
        """Point the session options (onnxruntime.SessionOptions) at this mapping."""
        so.add_external_initializers_from_files_in_memory([self.name], [self.buffer], [self.buffer.size])
        so.add_session_config_entry(DIRECT_BUFFERS, "1")

    def release(self) -> int:
        """Drop the mapping's resident pages (reads fault them back from the file); the bytes advised."""
        if _LIBC is None or _LIBC.madvise(self.buffer.ctypes.data, self.buffer.size, MADV_DONTNEED) != 0:
            return 0
        return self.buffer.size

    def fed(self, tokens: int) -> None:
        """Count tokens a step fed; give the pages back every RELEASE_EVERY. A lookup of the embedding
        maps a whole page-cache folio (up to 2 MB here, measured ~0.8 MB per random token), so a chat's
        resident set would grow towards the whole table; what a step reads every time (block mins)
        faults back once per release, from the page cache."""
        self._fed += tokens
        if self._fed >= RELEASE_EVERY:
            self._fed = 0
            self.release()

    @contextlib.contextmanager
    def releasing(self, every: float = 0.01):
        """While the block runs, give the pages back every `every` seconds: a session being made
        (repacking reads each page once) or a many-row step (its rows' embedding lookups map a folio
        each, ~0.3 GB for 512 random tokens on the 2B shape), so the file's part stays a few MB."""
        done = threading.Event()

        def watch():
            while not done.wait(every):
                self.release()
        t = threading.Thread(target=watch, name="edgecpm-release-pages", daemon=True)
        t.start()
        try:
            yield self
        finally:
            done.set()
            t.join()
            self.release()
