"""requirements-gpu.txt installs the CUDA build of the very jax that requirements.txt pins (a
jax and plugin of different versions refuse to load together)."""
import os
import re

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _pins(name):
  pins = {}
  with open(os.path.join(REPO, name), encoding="utf-8") as f:
    for line in f:
      line = line.split("#", 1)[0].strip()
      match = re.fullmatch(r"([A-Za-z0-9_.-]+)(\[[^\]]*\])?==(\S+)", line)
      if match:
        pins[match.group(1).lower()] = match.group(3)
  return pins


def test_gpu_requirements_pin_the_jax_of_requirements_txt():
  base, gpu = _pins("requirements.txt"), _pins("requirements-gpu.txt")
  jax = base["jax"]
  assert base["jaxlib"] == jax
  assert gpu["jax"] == jax, gpu
  for plugin in ("jax-cuda12-plugin", "jax-cuda12-pjrt"):
    assert gpu.get(plugin) == jax, (plugin, gpu)
