"""tools.bench.gpu_step: the prepared GPU benchmark runs end to end on this CPU (tiny model, the
real train step and scoring program), its JSON holds what the GPU run must report, MFU stays
null where the chip's peak is unknown, and its FLOP count matches a hand count."""
import json
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from surveylm_jax import lora, models
from tools.bench import gpu_step

# vocab 100, hidden 16, intermediate 32, 2 layers, 4 heads of 4, 2 kv heads.
SMALL = dict(model_type="qwen2", vocab_size=100, hidden_size=16, intermediate_size=32,
             num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
             tie_word_embeddings=True)


def test_flop_count_matches_a_hand_count():
  cfg = models.config_from_hf_dict(SMALL)
  # Matmul weights per token: per layer q,o 16x16 twice, k,v 16x8 twice, gate,up,down 16x32
  # three times = 512 + 256 + 1536 = 2304; two layers 4608; LM head 16 x 100 = 1600.
  assert gpu_step.matmul_weights(cfg) == 6208
  # Causal attention at seq 8 (4 keys on average): 2 layers x 2 products x 2 FLOPs x 4 heads
  # x head_dim 4 x 4 keys.
  assert gpu_step.attention_flops_per_token(cfg, 4) == 512
  # The forward pass is models.flops' count: 2 FLOPs per weight plus attention.
  assert models.flops.forward_flops_per_token(cfg, 8) == 2 * 6208 + 512
  # Rank-2 adapters on all seven projections: 2 x (in + out) per module per layer,
  # (32 + 24 + 24 + 32 + 48 + 48 + 48) x 2 = 512 per layer, 1024 in all -- as lora.init makes them.
  abstract = jax.tree_util.tree_map(
      lambda x: x.value if hasattr(x, "value") else x,
      models.abstract_params(models.Transformer(cfg)), is_leaf=lambda x: hasattr(x, "value"))
  adapter = jax.eval_shape(lambda p: lora.init(p, lora.LoraConfig(rank=2), jax.random.PRNGKey(0)),
                           abstract)
  assert lora.num_params(adapter) == 1024
  # LoRA step, 3 rows x 8 tokens: 4W + 3A + 6P = 24832 + 1536 + 6144 = 32512 per token.
  assert gpu_step.lora_train_flops(cfg, 24, 4, 1024) == 24 * 32512
  # models.flops' LoRA count (2 x forward) leaves out one attention pass and the adapters.
  assert gpu_step.lora_train_flops(cfg, 24, 4, 1024) - models.flops.train_step_flops(
      cfg, 24, 8, lora=True) == 24 * (512 + 6 * 1024)
  # Scoring 3 rows x 8: layers only (2 x 4608 + 512 = 9728 per token), the head once per row.
  assert gpu_step.scoring_flops(cfg, 3, 8) == 24 * 9728 + 3 * 2 * 1600


def test_peak_table_names_datasheet_chips_and_guesses_nothing_else():
  assert gpu_step.peak_tflops("NVIDIA H200")[0] == 989.0
  assert gpu_step.peak_tflops("NVIDIA H100 80GB HBM3")[0] == 989.0
  assert gpu_step.peak_tflops("NVIDIA H100 PCIe")[0] == 756.0
  assert gpu_step.peak_tflops("NVIDIA A100-SXM4-80GB")[0] == 312.0
  assert gpu_step.peak_tflops("NVIDIA L40S")[0] == 362.0
  assert gpu_step.peak_tflops("NVIDIA L4")[0] == 121.0
  assert gpu_step.peak_tflops("TPU v5 lite")[0] == 197.0
  for unknown in ("cpu", "NVIDIA GH200 480GB", "NVIDIA L40", "Tesla T4"):
    assert gpu_step.peak_tflops(unknown) == (None, None), unknown


def test_quick_run_reports_throughput_flops_and_no_mfu_without_a_known_peak(tmp_path):
  out = tmp_path / "gpu_step.json"
  # Arrays of earlier work that are garbage in a reference cycle, freed once the run collects:
  # they are not the run's and must not make its count of arrays left behind negative.
  cycle = [jnp.ones(3) for _ in range(6)]
  cycle.append(cycle)
  del cycle
  report = gpu_step.main(["--quick", "--attention", "xla,cudnn", "--out", str(out)])
  assert json.loads(out.read_text()) == json.loads(json.dumps(report))
  assert report["device_kind"] == jax.devices()[0].device_kind
  assert report["peak_tflops_bf16"] is None and report["matmul_bf16_tflops"] > 0
  # On a CPU the model runs cudnn as xla: the same program is not measured twice.
  cudnn = [r for r in report["results"] if r["attention"] == "cudnn"]
  assert [(r["status"], r["same_as"]) for r in cudnn] == [("skipped", "xla")] * 2
  by_program = {r["program"]: r for r in report["results"] if r["attention"] == "xla"}
  assert sorted(by_program) == ["score", "train"]
  for r in by_program.values():
    assert r["status"] == "ok", r
    assert (r["model"], r["attention"], r["rows"], r["seq"]) == ("tiny", "xla", 2, 64)
    assert r["step_s_median"] > 0 and len(r["step_s"]) == 2
    assert r["tokens_per_s"] == pytest.approx(128 / r["step_s_median"])
    assert r["achieved_tflops"] == pytest.approx(r["flops"] / r["step_s_median"] / 1e12)
    assert r["mfu"] is None
    assert r["fraction_of_matmul"] == pytest.approx(
        r["achieved_tflops"] / report["matmul_bf16_tflops"])
    assert r["compile_s"] > 0 and r["attention_kernel"] == "xla"
  train, score = by_program["train"], by_program["score"]
  assert math.isfinite(train["loss"]) and score["output_finite"]
  # The tiny model (hidden 64, 2 layers, 4 heads of 16, 2 kv heads, mlp 128, vocab 512): W =
  # 2 x (8192 + 4096 + 24576) + 32768 = 106496, A at 64 tokens (32 keys) = 16384, and the
  # rank-8 adapter that really trained has 16384 params.
  assert train["adapter_params"] == 16384
  assert train["flops"] == 128 * (4 * 106496 + 3 * 16384 + 6 * 16384)
  assert score["flops"] == 128 * (2 * (106496 - 32768) + 16384) + 2 * 2 * 32768
  assert train["remat"] == "full" and report["arrays_left_after_free"]["tiny"] == 0


def test_budget_skips_items_and_peak_override(tmp_path):
  out = tmp_path / "gpu_step.json"
  report = gpu_step.main(["--models", "tiny,qwen2.5-7b", "--attention", "xla,cudnn",
                          "--budget_s", "0", "--peak_tflops", "5", "--matmul_n", "0",
                          "--out", str(out)])
  assert report["peak_tflops_bf16"] == 5.0 and report["peak_source"] == "--peak_tflops"
  results = json.loads(out.read_text())["results"]
  assert [(r["model"], r["attention"], r["program"], r["status"]) for r in results] == [
      (m, a, p, "skipped") for m in ("tiny", "qwen2.5-7b") for a in ("xla", "cudnn")
      for p in ("train", "score")]
  assert results[-1]["rows"] == 4 and results[-1]["seq"] == 2048


def test_unknown_names_are_refused():
  for argv in (["--models", "qwen2.5-70b"], ["--attention", "flash"], ["--programs", "decode"],
               ["--segments", "3"]):
    with pytest.raises(SystemExit):
      gpu_step.main(argv)


def test_training_rows_are_packed_by_the_pipeline():
  batch = gpu_step.train_batch(50, rows=2, seq=16, segments=4)
  assert batch["input_ids"].shape == (2, 16)
  assert np.array_equal(batch["segment_ids"][0], np.repeat([1, 2, 3, 4], 4))
  assert np.array_equal(batch["position_ids"][0], np.tile(np.arange(4), 4))
  # The loss on each example's second half; targets are shifted by one, the last has none.
  assert batch["loss_mask"][0].tolist() == [0, 1, 1, 0] * 4
