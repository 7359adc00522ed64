"""Pre-copying the zygote's pages a forked run will write: learned once, copied in one call per stretch.

A forked child copies a 4 KiB page of the zygote's each time it first writes one (CPython's reference
counts and allocator pools across the inherited heap: ~1,800 a trivial run, ~3 µs each here). A probe
child forked once, after the zygote's rehearsal, plays a run and reports which of the zygote's private
writable pages it now holds alone (`/proc/self/pagemap`: present, exclusively mapped, not a page-cache
page: a copy); each child then asks the kernel for those copies at once (`MADV_POPULATE_WRITE`, Linux
5.14+) instead of trapping page by page. Best effort throughout: a kernel without it, or any error,
leaves the child to fault as before. `NEXUS_ZYGOTE_PREFAULT=false` leaves it out."""

import contextlib
import ctypes
import json
import os
import select
import signal
import struct
import sys
from collections.abc import Callable

MADV_POPULATE_WRITE = 23
PAGE = os.sysconf("SC_PAGE_SIZE")
PROBE_TIMEOUT_S = 30.0
_PRESENT, _EXCLUSIVE, _FILE = 1 << 63, 1 << 56, 1 << 61
_NOT_COPIED = ("[stack]", "[vvar]", "[vvar_vclock]", "[vdso]", "[vsyscall]")
_madvise: Callable[[int, int, int], int] | None = None  # resolved in the zygote, not in every child


def enabled() -> bool:
    return os.environ.get("NEXUS_ZYGOTE_PREFAULT", "true").lower() not in ("0", "false", "no", "off")


def min_pages() -> int:
    """The shortest stretch worth a call of its own (a call costs about what a fault does)."""
    return max(1, int(os.environ.get("NEXUS_ZYGOTE_PREFAULT_MIN_PAGES", "1")))


def writable_private_mappings() -> list[tuple[int, int]]:
    """This process's private writable mappings (heap, arenas, libraries' data), the stack's excepted."""
    out = []
    with open("/proc/self/maps") as maps:
        for line in maps:
            fields = line.split()
            if fields[1] != "rw-p" or (fields[5:] and fields[5] in _NOT_COPIED):
                continue
            lo, hi = (int(x, 16) for x in fields[0].split("-"))
            out.append((lo, hi))
    return out


def copied_ranges(mappings: list[tuple[int, int]], shortest: int = 1) -> list[tuple[int, int]]:
    """The stretches of `mappings` this process holds its own copy of (present, mapped here alone, not
    a page-cache page), adjacent pages merged; stretches shorter than `shortest` pages left out."""
    ranges: list[tuple[int, int]] = []
    with open("/proc/self/pagemap", "rb") as pagemap:
        for lo, hi in mappings:
            pagemap.seek(lo // PAGE * 8)
            entries = pagemap.read((hi - lo) // PAGE * 8)
            start = None
            for i, (entry,) in enumerate(struct.iter_unpack("<Q", entries)):
                copied = entry & _PRESENT and entry & _EXCLUSIVE and not entry & _FILE
                if copied and start is None:
                    start = lo + i * PAGE
                elif not copied and start is not None:
                    ranges.append((start, lo + i * PAGE))
                    start = None
            if start is not None:
                ranges.append((start, hi))
    return [(lo, hi) for lo, hi in ranges if hi - lo >= shortest * PAGE]


def learn(play: Callable[[], object], shortest: int = 1) -> list[tuple[int, int]]:
    """Fork a probe child that calls `play` (a rehearsal run) and reports what it copied; [] if it
    cannot tell (no pagemap, a probe that fails or hangs)."""
    global _madvise
    libc_madvise = ctypes.CDLL(None, use_errno=True).madvise
    libc_madvise.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int)
    _madvise = libc_madvise
    mappings = writable_private_mappings()
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the probe: never returns into the zygote
        code = 1
        try:
            os.close(r)
            play()
            data = json.dumps(copied_ranges(mappings, shortest)).encode()
            while data:
                data = data[os.write(w, data) :]
            code = 0
        finally:
            os._exit(code)
    os.close(w)
    data = b""
    try:
        while select.select([r], [], [], PROBE_TIMEOUT_S)[0] and (chunk := os.read(r, 1 << 16)):
            data += chunk
    finally:
        os.close(r)
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)  # done (a no-op on a zombie) or hung
        os.waitpid(pid, 0)
    try:
        return [(int(lo), int(hi)) for lo, hi in json.loads(data)]
    except ValueError:
        print("zygote: the prefault probe reported nothing", file=sys.stderr)
        return []


def populate(ranges: list[tuple[int, int]]) -> int:
    """In a forked child: copy the learned stretches now; how many calls succeeded. Any failure
    (a kernel without MADV_POPULATE_WRITE, a range no longer mapped) stops it: the run faults as before."""
    madvise = _madvise
    if not ranges or madvise is None:
        return 0
    done = 0
    for lo, hi in ranges:
        if madvise(lo, hi - lo, MADV_POPULATE_WRITE) != 0:
            break
        done += 1
    return done
