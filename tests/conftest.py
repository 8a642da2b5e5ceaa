"""Test-session settings, made before any test module imports JAX; subprocesses inherit them.

Most of the suite's time is XLA compiling small programs, not running them. Tests check
values, not speed, so XLA compiles at its lowest backend optimisation level (measured: an LM
smoke run in 11 s instead of 17 s of CPU, the same perplexity to all printed digits); a test
that sets ``XLA_FLAGS`` for a subprocess replaces this. And the suite compiles the same small programs many times over: every experiment's smoke run in
several subprocesses and xdist workers. JAX's persistent compilation cache, in one directory
per user shared by those processes, compiles each program once; the executables are the same,
so results are too. Set ``JAX_COMPILATION_CACHE_DIR`` to choose the directory, or to an empty
string to compile everything afresh. The cache has a size limit, which makes JAX hold a file
lock (``filelock``) while it reads or writes an entry: without it, a process could read an
entry another was still writing, and on an empty cache (CI's) a test failed on the truncated
entry ("Error reading persistent compilation cache entry").
"""

import os
import tempfile

os.environ.setdefault(
    "JAX_COMPILATION_CACHE_DIR",
    os.path.join(tempfile.gettempdir(), f"recur-tests-jax-cache-{os.getuid()}"),
)
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
os.environ.setdefault("JAX_COMPILATION_CACHE_MAX_SIZE", str(4 << 30))  # bytes; locks the entries
os.environ.setdefault("XLA_FLAGS", "--xla_backend_optimization_level=0")
