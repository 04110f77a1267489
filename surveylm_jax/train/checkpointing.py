"""Orbax checkpoints of a training run: train state, data-iterator state and the config.

Layout: WORKDIR/checkpoints/<step>/{state,data,config}. Orbax writes each step into a temporary
folder and renames it when complete, so a run killed mid-write leaves the previous step as the
latest restorable one. Saves can be asynchronous (the step loop continues while arrays are
written). Before restoring, the saved config is compared with the current one, so a workdir
holding an incompatible run is reported in plain words instead of failing inside orbax.
"""
from __future__ import annotations

import json
from typing import Any, Optional

import grain
import grain.checkpoint  # noqa: F401  (registers grain's orbax handler)
import jax
import orbax.checkpoint as ocp

from surveylm_jax import paths

# Config fields that change the shapes or meaning of what is saved: resuming across a change of
# any of them is refused.
COMPATIBILITY_FIELDS = (
    ("model", "path"), ("model", "random_init"), ("model", "dtype"),
    ("lora", "enabled"), ("lora", "rank"), ("lora", "targets"), ("lora", "use_rslora"),
    ("train", "full_finetune"), ("train", "grad_clip"), ("train", "microbatches"),
    ("train", "cache_lower_layers"),
)
# Fields added after checkpoints already existed: a checkpoint without one had this value.
ADDED_FIELD_DEFAULTS = {("train", "cache_lower_layers"): 0}


class IncompatibleCheckpointError(RuntimeError):
  pass


def _field(cfg: dict, path):
  for key in path:
    if not isinstance(cfg, dict) or key not in cfg:
      return None
    cfg = cfg[key]
  return cfg


def _normalise(value):
  # JSON turns tuples into lists; compare in that form.
  return json.loads(json.dumps(value, default=str))


class Checkpointer:
  def __init__(self, workdir: paths.PathLike, *, keep: int = 3, async_save: bool = True):
    # An epath Path: orbax writes local folders and gs:// (through tensorstore) alike. A local
    # workdir is made absolute as before; a gs:// one stays a URI (os.path.abspath would turn
    # it into <cwd>/gs:/...).
    self.directory = paths.absolute(paths.join(workdir, "checkpoints"))
    options = ocp.CheckpointManagerOptions(max_to_keep=keep, create=True,
                                           enable_async_checkpointing=async_save)
    self.manager = ocp.CheckpointManager(self.directory, options=options)

  def latest_step(self) -> Optional[int]:
    return self.manager.latest_step()

  def save(self, step: int, state, data_iterator, config: dict, *, force: bool = False) -> bool:
    items = dict(state=ocp.args.StandardSave(state), config=ocp.args.JsonSave(config))
    if data_iterator is not None:
      items["data"] = grain.checkpoint.CheckpointSave(data_iterator)
    return self.manager.save(step, args=ocp.args.Composite(**items), force=force)

  def saved_config(self, step: int) -> dict:
    return self.manager.restore(step, args=ocp.args.Composite(config=ocp.args.JsonRestore()))[
        "config"]

  def check_compatible(self, step: int, config: dict) -> None:
    saved = self.saved_config(step)
    diffs = []
    for path in COMPATIBILITY_FIELDS:
      old = _field(saved, path)
      if old is None:
        old = ADDED_FIELD_DEFAULTS.get(path)
      old, new = _normalise(old), _normalise(_field(config, path))
      if old != new:
        diffs.append(f"{'.'.join(path)}: checkpoint has {old!r}, config has {new!r}")
    if diffs:
      raise IncompatibleCheckpointError(
          f"{self.directory}/{step} was written by an incompatible run; use another --workdir "
          f"or restore the original settings:\n  " + "\n  ".join(diffs))

  def restore(self, step: int, abstract_state, data_iterator, config: dict):
    """Restores the state into the shardings of `abstract_state` (a pytree of
    jax.ShapeDtypeStruct with `.sharding`) and the data iterator in place."""
    self.check_compatible(step, config)
    items = dict(state=ocp.args.StandardRestore(abstract_state))
    if data_iterator is not None:
      items["data"] = grain.checkpoint.CheckpointRestore(data_iterator)
    try:
      restored = self.manager.restore(step, args=ocp.args.Composite(**items))
    except (ValueError, KeyError, TypeError) as e:
      raise IncompatibleCheckpointError(
          f"{self.directory}/{step}: saved state does not match this run's state "
          f"structure or shapes ({type(e).__name__}: {e})") from e
    return restored["state"]

  def wait(self) -> None:
    self.manager.wait_until_finished()

  def close(self) -> None:
    self.manager.wait_until_finished()
    self.manager.close()


def abstract_like(tree: Any):
  """ShapeDtypeStructs (with shardings) describing `tree`, for restoring into it."""
  return jax.tree_util.tree_map(
      lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), tree)
