"""Keep the memory a training step frees in the process, so that the next step reuses it.

XLA:CPU allocates each step's buffers (the logits, the activations saved for the backward
pass, one block for all the program's temporaries) with ``malloc`` and frees them when the
step ends. glibc's defaults hand blocks above its mmap threshold (128 KiB, rising to at most
32 MiB) straight back to the kernel, and trim the heaps of its per-thread arenas: every step
then page-faults its buffers in anew, and the kernel zeroes each page first. On PTB's small
GRU that was about 15,000 minor page faults (60 MB) per step and a third of the step's time.

:func:`reuse_freed_memory` sets glibc's ``mallopt`` options so that the step's buffers stay in
the process: one arena (the threads share it; a step allocates a few dozen buffers), blocks up
to 1 GiB served from the heap, and up to 1 GiB of free heap kept instead of trimmed. Memory
is not returned to the kernel after the peak. Where every step has the same shapes (the probes,
the LM) the peak stays what it was; where they vary (IMDB's bucketed batches, a step compiled
per length) freed blocks of one size may not fit the next, and the peak rose (the README's
training-speed section has the measurements).
It is the in-process form of ``GLIBC_TUNABLES=glibc.malloc.arena_max=1:...`` or of preloading
tcmalloc or jemalloc. Every experiment's ``main`` calls it before JAX starts (flag
``--reuse_freed_memory``, on by default).
"""

import ctypes
import os
import sys

KEEP_BYTES = 1 << 30  # blocks below this come from the heap; this much free heap is kept
# mallopt's parameters (their numbers in glibc's malloc.h) and the values set.
SETTINGS = {
    "M_ARENA_MAX": (-8, 1),
    "M_MMAP_THRESHOLD": (-3, KEEP_BYTES),
    "M_TRIM_THRESHOLD": (-1, KEEP_BYTES),
}
settings_applied = False  # set by reuse_freed_memory in this process


def glibc_version() -> str | None:
    """glibc's version (``"2.36"``), or None where the C library is another (macOS, musl)."""
    if sys.platform != "linux":
        return None
    try:
        name = os.confstr("CS_GNU_LIBC_VERSION")  # "glibc 2.36"
    except (ValueError, OSError):
        return None
    return name.split()[-1] if name and name.startswith("glibc") else None


def reuse_freed_memory() -> bool:
    """Sets glibc's malloc to keep freed memory for reuse (see the module docstring); call it
    before JAX starts (the arena limit applies to the threads that allocate afterwards).
    Returns whether the settings took effect (False where the C library is not glibc)."""
    global settings_applied
    if glibc_version() is None:
        return False
    mallopt = ctypes.CDLL(None).mallopt
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    settings_applied = all([mallopt(param, value) == 1 for param, value in SETTINGS.values()])
    return settings_applied


def describe() -> str:
    """The settings, as the records list them: ``"M_ARENA_MAX=1, ..."``."""
    return ", ".join(f"{name}={value}" for name, (_, value) in SETTINGS.items())
