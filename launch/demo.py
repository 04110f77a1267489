"""`make demo`: the embedded SmolLM2-135M-Instruct answers survey-style questions.

    python -m launch.demo --model=checkpoints/smollm2-135m-instruct

Each question goes through the tokenizer's own chat template and `inference.generate` (greedy,
KV cache); prompt and answer are printed.
"""
import time

from absl import app, flags

_MODEL = flags.DEFINE_string("model", "checkpoints/smollm2-135m-instruct", "HF model folder.")
_MAX_NEW = flags.DEFINE_integer("max_new_tokens", 24, "Tokens to generate per answer.")

QUESTIONS = [
    "You are answering the General Social Survey.\nQuestion: Are we spending too much, too "
    "little, or about the right amount on improving the nation's education system?\n"
    "Options:\nA. Too little\nB. About right\nC. Too much\nAnswer with one option.",
    "You are answering the General Social Survey.\nQuestion: Should it be possible for a "
    "pregnant woman to obtain a legal abortion if there is a strong chance of serious defect "
    "in the baby?\nOptions:\nA. Yes\nB. No\nAnswer with one option.",
    "You are answering a household survey.\nQuestion: Taking all things together, how happy "
    "would you say you are?\nOptions:\nA. Very happy\nB. Pretty happy\nC. Not too happy\n"
    "Answer with one option.",
]


def main(argv):
  del argv
  import transformers
  from surveylm_jax import inference, models

  start = time.time()
  tokenizer = transformers.AutoTokenizer.from_pretrained(_MODEL.value)
  tokenizer.padding_side = "left"
  model, params = models.load_pretrained(_MODEL.value, dtype="float32")
  print(f"loaded {_MODEL.value} ({model.config.model_type}, "
        f"{model.config.num_hidden_layers} layers) in {time.time() - start:.1f}s")
  texts = [tokenizer.apply_chat_template([{"role": "user", "content": q}], tokenize=False,
                                         add_generation_prompt=True) for q in QUESTIONS]
  enc = tokenizer(texts, return_tensors="np", padding=True, add_special_tokens=False)
  start = time.time()
  out = inference.generate(model, params, enc["input_ids"], enc["attention_mask"],
                           max_new_tokens=_MAX_NEW.value, temperature=0.0, return_prompt=False)
  print(f"generated {len(QUESTIONS)} answers in {time.time() - start:.1f}s (incl. compile)\n")
  for question, row in zip(QUESTIONS, out):
    print("-" * 72)
    print(question)
    print(">>> " + tokenizer.decode(row, skip_special_tokens=True).strip())
  print("-" * 72)


if __name__ == "__main__":
  app.run(main)
