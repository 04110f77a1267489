"""What every command-line entry point shares: the platform choice, and one-line errors.

`run(main)` replaces `absl.app.run(main)` in `launch/*.py`:

* Platform. A machine with the `libtpu` wheel installed (the test requirements install it, so
  that a CPU can compile for TPU topologies) but no TPU makes jax probe for TPU hosts and print
  initialisation errors at every start. Unless `JAX_PLATFORMS` is set, the project decides: with
  no TPU device file (`/dev/accel*`, `/dev/vfio/*`) it runs on `cuda,cpu` where a CUDA plugin and
  an NVIDIA device exist, else on `cpu`, and says so in one line on stderr. Set `JAX_PLATFORMS`
  to choose yourself.
* Errors. The project's own error types (bad data or codebook, model config or checkpoint,
  adapter, config, an output location that cannot be written) are problems with what the user
  passed: they print one line, `error: ...`, naming the file, record and field, and exit with
  status 2. A mistyped `--config.` key is one of them. Any other exception is a bug and keeps
  its traceback.
"""
from __future__ import annotations

import glob
import importlib.util
import os
import sys


class ConfigError(ValueError):
  """A config value or override the project cannot use."""


def user_errors() -> tuple:
  """The exception types that mean "fix your input", not "fix the code"."""
  from surveylm_jax.data.errors import DataError
  from surveylm_jax.paths import UnwritableLocationError
  from surveylm_jax.data.prompt_parsing import PromptError
  from surveylm_jax.lora.core import LoraError
  from surveylm_jax.models.config import ModelConfigError
  from surveylm_jax.models.hf_io import CheckpointError
  from surveylm_jax.models.safetensors_io import SafetensorsError
  from surveylm_jax.train.checkpointing import IncompatibleCheckpointError
  from surveylm_jax.train.loss_positions import LossPositionsError
  from surveylm_jax.train.lower_cache import LowerCacheError
  return (ConfigError, DataError, PromptError, LoraError, ModelConfigError, CheckpointError,
          SafetensorsError, IncompatibleCheckpointError, LossPositionsError, LowerCacheError,
          UnwritableLocationError)


def _has_tpu() -> bool:
  return bool(glob.glob("/dev/accel*") or glob.glob("/dev/vfio/[0-9]*"))


def _has_cuda() -> bool:
  plugin = any(importlib.util.find_spec(name) for name in ("jax_cuda12_plugin", "jax_cuda13_plugin"))
  return plugin and bool(glob.glob("/dev/nvidia[0-9]*"))


def choose_platform() -> str | None:
  """Sets JAX_PLATFORMS when the user has not (before jax starts); returns what was chosen."""
  if "JAX_PLATFORMS" in os.environ or _has_tpu():
    return None
  choice = "cuda,cpu" if _has_cuda() else "cpu"
  os.environ["JAX_PLATFORMS"] = choice
  if "jax" in sys.modules:  # imported already (a launch module's imports): jax read the env then
    sys.modules["jax"].config.update("jax_platforms", choice)
  print(f"surveylm_jax: no TPU device on this machine, running on {choice} "
        "(set JAX_PLATFORMS to choose)", file=sys.stderr)
  return choice


def _parse_flags(argv):
  """absl's flag parsing, with a wrong `--config.` override as a one-line ConfigError."""
  from absl import app
  try:
    return app.parse_flags_with_usage(argv)
  except (AttributeError, KeyError, TypeError) as e:
    # ml_collections reports a missing key as AttributeError("'key'\nDid you mean ...?").
    detail = " ".join(str(e).strip("'\"").replace("\\n", " ").replace("\\'", "'").split())
    overrides = [a for a in argv[1:] if a.startswith("--config.")]
    # The error names the key it could not find: point at the override(s) that use it.
    name = detail.split()[0].strip("'\"") if detail else ""
    named = [a for a in overrides if name in a.split("=", 1)[0][len("--config."):].split(".")]
    raise ConfigError(f"cannot apply {' '.join(named or overrides) or 'the config'}: {detail}") from None


def run(main) -> None:
  """`absl.app.run(main)` with the platform choice and one-line errors (see the module doc)."""
  choose_platform()
  from absl import app
  errors = user_errors()
  try:
    app.run(main, flags_parser=_parse_flags)
  except errors as e:
    message = " ".join(str(e).split("\n"))
    print(f"error: {message}", file=sys.stderr)
    sys.exit(2)
