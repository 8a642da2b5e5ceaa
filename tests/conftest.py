"""Test-session settings, made before any test module imports JAX; subprocesses inherit them.

Most of the suite's time is XLA compiling small programs, not running them. Tests check
values, not speed, so XLA compiles at its lowest backend optimisation level (measured: an LM
smoke run in 11 s instead of 17 s of CPU, the same perplexity to all printed digits) and with
its older loop emitters for fusions in place of the MLIR fusion emitters
(``--xla_cpu_use_fusion_emitters=false``; measured: a GRU's gradient program compiles in 0.21 s
instead of 0.49 s, and the scan and model tests that compile most take a third less time).
A test that sets ``XLA_FLAGS`` for a subprocess replaces this. And the suite compiles the same
small programs many times over: every experiment's smoke run in several subprocesses and xdist
workers. JAX's persistent compilation cache, in one directory per user shared by those
processes, compiles each program once; the executables are the same, so results are too. Set
``JAX_COMPILATION_CACHE_DIR`` to choose the directory, or to an empty string to compile
everything afresh. JAX writes an entry in place, so a process may read one
that another is still writing: JAX then warns ("Error reading persistent compilation cache
entry") and compiles the program itself, as it should. On an empty cache (CI's) two xdist
workers did so at collection, and the warning, an error under the suite's filters, failed the
run. The suite and its subprocesses (``PYTHONWARNINGS``) ignore that warning. (Giving the
cache a size limit makes JAX lock each entry, but then every write scans the whole cache:
the suite took over 25 minutes.)
"""

import os
import tempfile

os.environ.setdefault(
    "JAX_COMPILATION_CACHE_DIR",
    os.path.join(tempfile.gettempdir(), f"recur-tests-jax-cache-{os.getuid()}"),
)
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
TORN_CACHE_READ = "ignore:Error reading persistent compilation cache entry:UserWarning"
os.environ["PYTHONWARNINGS"] = ",".join(
    filter(None, [os.environ.get("PYTHONWARNINGS", ""), TORN_CACHE_READ])
)
os.environ.setdefault(
    "XLA_FLAGS", "--xla_backend_optimization_level=0 --xla_cpu_use_fusion_emitters=false"
)
