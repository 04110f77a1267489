"""The one shape of the project's extension registries (read-outs, baselines, metrics; losses
add metadata of their own): a plain dict from name to function, a decorator that adds to it
and refuses a name twice, and a check whose error lists the valid names."""
from __future__ import annotations

from typing import Callable, Sequence

from surveylm_jax.cli import ConfigError


def registrar(table: dict, kind: str) -> Callable:
  """`register(name)` decorator adding functions to `table`."""
  def register(name: str):
    def wrap(fn):
      if name in table:
        raise ValueError(f"{kind} {name!r} is already registered")
      table[name] = fn
      return fn
    return wrap
  return register


def check_names(table: dict, names: Sequence[str], field: str) -> None:
  """ConfigError naming the config field, the unknown names and the valid ones."""
  unknown = [n for n in names if n not in table]
  if unknown:
    raise ConfigError(f"unknown {field} {unknown if len(unknown) > 1 else repr(unknown[0])}; "
                      f"valid: {sorted(table)} (a module in config.extra_modules may register more)")
