"""Shared fixtures. The suite runs on the CPU; the SmolLM2 checkpoint is built by `make checkpoint`."""
import atexit
import os
import shutil
import tempfile

import pytest

os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# The config's default compile cache (surveylm_jax/compile_cache.py) is the user's home; the suite
# and every command it starts use a folder of their own, removed at the end (each pytest worker
# process makes its own). Set unconditionally: a test run never writes into the user's cache.
os.environ["SURVEYLM_COMPILE_CACHE"] = tempfile.mkdtemp(prefix="surveylm-compile-cache-")
atexit.register(shutil.rmtree, os.environ["SURVEYLM_COMPILE_CACHE"], ignore_errors=True)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SMOLLM2 = os.path.join(REPO, "checkpoints", "smollm2-135m-instruct")


@pytest.fixture(scope="session")
def smollm2_path():
  """The embedded real model. Missing means setup did not run: fail, never skip."""
  if not os.path.exists(os.path.join(SMOLLM2, "model.safetensors")):
    pytest.fail(f"{SMOLLM2} is missing: run `make checkpoint` (tools/gguf_to_hf.py) first")
  return SMOLLM2


@pytest.fixture(scope="session")
def smollm2_tokenizer(smollm2_path):
  import transformers
  return transformers.AutoTokenizer.from_pretrained(smollm2_path)

# The TPU compile test loads libtpu; let a second process (another pytest worker, a benchmark)
# load it too instead of failing on libtpu's single-process lock file.
os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")
