"""Compiled programs reused across runs: jax's persistent compilation cache, turned on from config.

Every `launch/` main calls `enable(config.compile_cache.dir, ...)` before its first jit. A later
run (or another process) that compiles the same program -- same lowered module, same devices,
same compile options and XLA flags, same jax/jaxlib -- loads the executable from the folder
instead of running XLA again. What it does not save: tracing a function to a jaxpr and lowering
it to StableHLO still happen in every process (the cache key is a hash of the lowered module).

Behaviour worth knowing (jax 0.10.2, `jax/_src/compilation_cache.py` and `compiler.py`):
* jax opens the folder lazily, at the first compile after it is set, and then keeps that cache
  object for the life of the process: updating `jax_compilation_cache_dir` alone would not move
  it. `enable` with another folder therefore calls jax's `reset_cache()` too, so the next compile
  uses the new folder. Programs this process compiled already stay in jax's in-memory caches and
  are not written again to the new folder.
* An entry is written only when its compile took at least `min_compile_secs` and its compressed
  size is at least `min_entry_size_bytes` (0 = any size); only process 0 of a multi-process run
  writes (every process reads). Entries are never evicted here (jax's `max_size` is left at -1).
* The folder may be local or `gs://...` (jax reads and writes it through etils.epath). The cache
  is trusted input: whoever can write the folder can make this process run their code.
* jax writes an entry in place, not atomically: a process killed while writing can leave a
  truncated entry. Later runs then warn ("Error reading persistent compilation cache entry") and
  compile that program again -- a broken entry is never loaded, nor replaced: delete the folder
  (any time no run is using it) to empty the cache.
* Off: an empty folder. A folder that cannot be written is reported in one line and the run goes
  on without a cache -- the cache saves time, it never changes results.

The default folder (`default_folder`, the config's default) is `$SURVEYLM_COMPILE_CACHE` when
that variable is set (empty = off; the test suite points it at a temporary folder), else
`$XDG_CACHE_HOME/surveylm_jax/xla` (`~/.cache/surveylm_jax/xla`).
"""
from __future__ import annotations

import os
from typing import Optional

from surveylm_jax import paths

ENV_VAR = "SURVEYLM_COMPILE_CACHE"

# The folder this module set, and its thresholds (None: it set none).
_enabled: Optional[tuple] = None


def default_folder() -> str:
  """`$SURVEYLM_COMPILE_CACHE` if set (may be empty = off), else the user's cache folder. Kept
  unexpanded (`~/...`) so that a printed config shows what was meant; `enable` expands it."""
  if ENV_VAR in os.environ:
    return os.environ[ENV_VAR]
  if os.environ.get("XDG_CACHE_HOME"):
    return os.path.join(os.environ["XDG_CACHE_HOME"], "surveylm_jax", "xla")
  return "~/.cache/surveylm_jax/xla"


def resolve(folder: paths.PathLike) -> str:
  """The folder jax is given: a local path expanded (`~`) and made absolute (a run that changes
  its working directory keeps the same cache); a URI (`gs://...`) unchanged; "" stays ""."""
  folder = os.fspath(folder).strip() if folder is not None else ""
  if not folder or paths.is_remote(folder):
    return folder
  return os.fspath(paths.absolute(os.path.expanduser(folder)))


def _say(line: str) -> None:
  print(f"surveylm_jax: {line}", flush=True)   # stdout: stderr is kept for one-line errors


def _turn_off() -> None:
  global _enabled
  if _enabled is None:
    return   # a cache the user configured through jax's own flags is theirs to keep
  import jax
  from jax.experimental.compilation_cache import compilation_cache as jax_cache
  if jax.config.jax_compilation_cache_dir:
    jax.config.update("jax_compilation_cache_dir", None)
    jax_cache.reset_cache()
  _enabled = None


def enable(folder: paths.PathLike, *, min_compile_secs: float = 0.2,
           min_entry_size_bytes: int = 0) -> Optional[str]:
  """Turns on jax's persistent compilation cache in `folder` (see the module doc); returns the
  folder used, or None when the cache stays off ("" or an unwritable folder). Calling it again
  with the same arguments changes nothing; another folder moves the cache there."""
  global _enabled
  import jax
  from jax.experimental.compilation_cache import compilation_cache as jax_cache

  where = resolve(folder)
  if not where:
    _turn_off()
    return None
  if not jax.config.jax_enable_compilation_cache:
    _say(f"compile cache off: JAX_ENABLE_COMPILATION_CACHE is false (compile_cache.dir={where})")
    return None
  settings = (where, float(min_compile_secs), int(min_entry_size_bytes))
  if _enabled == settings and jax.config.jax_compilation_cache_dir == where:
    return where
  try:
    paths.check_writable(where, "compile_cache.dir")
  except paths.UnwritableLocationError as e:
    _say(f"compile cache off: {e}")
    _turn_off()
    return None

  jax.config.update("jax_persistent_cache_min_compile_time_secs", settings[1])
  jax.config.update("jax_persistent_cache_min_entry_size_bytes", settings[2])
  if paths.is_remote(where):
    # jax also points XLA's own GPU caches (autotuning results) into the folder, and XLA writes
    # those with local file calls: a `gs://` name would become a local folder named `gs:`.
    jax.config.update("jax_persistent_cache_enable_xla_caches", "none")
  previous = jax.config.jax_compilation_cache_dir
  if previous != where:
    jax.config.update("jax_compilation_cache_dir", where)
    if previous:   # jax may have opened that folder, and keeps it (module doc): reopen lazily
      jax_cache.reset_cache()
  _enabled = settings
  _say(f"compiled programs are cached in {where} (compile_cache.dir; empty = off)")
  return where
