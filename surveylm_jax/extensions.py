"""A researcher's own modules, named in config, extend the registries without editing the package.

`config.extra_modules` names modules (dotted names importable from sys.path / PYTHONPATH, or
paths of .py files) that register losses, read-outs, baselines, metrics or prompt languages:

    train.losses.register                 config.loss.NAME = weight
    eval.runner.register_readout          config.eval.readout = NAME
    eval.baselines.register_baseline      config.eval.baselines = (NAME, ...)
    eval.extra_metrics.register_metric    config.eval.metrics = (NAME, ...)
    data.prompt_layouts.register_language a codebook's `language: CODE` (and the readers)

Every launch/ main calls `load(config)` first: it imports the modules, then checks every
registry name the config holds against its registry, so a typo fails at start with the valid
names listed.

The loss weights are the one config section whose keys are registry names chosen by the user.
The command-line overrides (`--config.loss.letter_entropy=0.1`) are applied while flags are
parsed, before any main runs and so before `extra_modules` can be imported; a locked config would
refuse the new key there. So `config.loss` is a `LossWeights` section that stays open when the
config is locked (a name it does not hold weighs 0), and the names are checked against the loss
registry at start instead. Every other section stays locked: a typo elsewhere is still refused.
"""
from __future__ import annotations

import importlib
import importlib.util
import os
import sys
import types

import ml_collections

from surveylm_jax.cli import ConfigError


class LossWeights(ml_collections.ConfigDict):
  """`config.loss`: registered loss name -> weight. Stays open when the config is locked (see the
  module docstring); a name not given weighs 0, as `losses.active` reads a weight of 0."""

  def lock(self):
    return self   # open to names registered by config.extra_modules; checked by `check_config`

  def get_type(self, key):
    # config_flags asks the type of `--config.loss.NAME` before it sets it: a new name is a weight.
    return float if key not in self else super().get_type(key)

  def __getattr__(self, name):
    if not name.startswith("_") and name not in self:
      return 0.0
    return super().__getattr__(name)


class ExperimentConfig(ml_collections.ConfigDict):
  """The root of every experiment config (configs/base.py). Keeps `loss` a `LossWeights` however
  an experiment file or `--config.loss='{...}'` replaces it."""

  def __setitem__(self, key, value):
    if key == "loss" and isinstance(value, (dict, ml_collections.ConfigDict)) \
        and not isinstance(value, LossWeights):
      value = LossWeights(value.to_dict() if isinstance(value, ml_collections.ConfigDict) else value)
    super().__setitem__(key, value)


def _names(spec) -> list[str]:
  """A tuple of names, each of which may itself be comma separated (`--config.extra_modules=a,b`)."""
  if isinstance(spec, str):
    spec = (spec,)
  return [part.strip() for item in spec or () for part in str(item).split(",") if part.strip()]


def _import_file(path: str) -> types.ModuleType:
  full = os.path.abspath(path)
  if not os.path.isfile(full):
    raise ImportError(f"no such file {path!r}")
  name = "surveylm_extra_" + os.path.splitext(os.path.basename(full))[0].replace("-", "_")
  loaded = sys.modules.get(name)
  if loaded is not None and os.path.abspath(getattr(loaded, "__file__", "")) == full:
    return loaded   # imported once: registering twice would fail
  spec = importlib.util.spec_from_file_location(name, full)
  module = importlib.util.module_from_spec(spec)
  sys.modules[name] = module
  try:
    spec.loader.exec_module(module)
  except BaseException:
    del sys.modules[name]
    raise
  return module


def import_modules(spec) -> list[types.ModuleType]:
  """Imports each module of `spec` (dotted names or .py paths, a tuple or comma separated); an
  error names the module that failed and why."""
  modules = []
  for name in _names(spec):
    try:
      if name.endswith(".py") or os.sep in name or "/" in name:
        modules.append(_import_file(name))
      else:
        modules.append(importlib.import_module(name))
    except Exception as e:  # pylint: disable=broad-except
      missing = isinstance(e, ModuleNotFoundError) and name.split(".")[0] == (e.name or "").split(".")[0]
      message = (f"config.extra_modules: cannot import {name!r}: {type(e).__name__}: {e}"
                 + (" (is its folder on PYTHONPATH?)" if missing else ""))
      # A module that is not there is the user's input; an error inside it keeps its traceback.
      if missing or str(e).startswith("no such file"):
        raise ConfigError(message) from e
      raise ImportError(message) from e
  return modules


def _unknown(kind: str, where: str, names, registry) -> None:
  bad = [n for n in names if n not in registry]
  if bad:
    raise ConfigError(f"{where}: unknown {kind} {', '.join(map(repr, bad))}; registered: "
                     f"{', '.join(sorted(registry)) or '(none)'} (a module in config.extra_modules "
                     "may register more)")


def _sections(config):
  """(where, section) for the config and a pipeline config's stage sections."""
  yield "config", config
  for stage in ("stage1", "stage2"):
    if stage in config and isinstance(config[stage], ml_collections.ConfigDict):
      yield f"config.{stage}", config[stage]


def check_config(config) -> None:
  """Every registry name in the config is registered: losses, read-out, baselines, metrics."""
  from surveylm_jax.eval import baselines, extra_metrics, runner
  from surveylm_jax.train import losses
  for where, section in _sections(config):
    if "loss" in section:
      _unknown("loss", f"{where}.loss", list(section.loss.keys()), losses.LOSSES)
    ev = section.get("eval")
    if isinstance(ev, ml_collections.ConfigDict):
      if "readout" in ev:
        _unknown("read-out", f"{where}.eval.readout", [ev.readout], runner.READOUTS)
      if "baselines" in ev:
        _unknown("baseline", f"{where}.eval.baselines", list(ev.baselines), baselines.BASELINES)
      if "metrics" in ev:
        _unknown("metric", f"{where}.eval.metrics", list(ev.metrics), extra_metrics.METRICS)


def load(config):
  """Imports `config.extra_modules`, then checks the config's registry names; returns config."""
  import_modules(config.get("extra_modules", ()))
  check_config(config)
  return config
