"""The tiny config's train step compiles for a real TPU topology (ahead of time, on this CPU,
through the libtpu wheel), so shardings or lowerings that TPUs reject are caught here. It runs
with the splash attention kernel: its Mosaic lowering, inside shard_map over a data x tensor
mesh, forward and gradient. (The plain XLA attention compiles for v5e in test_surveylm_recipe.)"""
import os

from configs import tiny
from surveylm_jax.train import aot


def test_tiny_train_step_with_splash_attention_compiles_for_tpu_v5e_2x2():
  assert os.environ.get("JAX_PLATFORMS") == "cpu"
  config = tiny.get_config()
  config.mesh.data, config.mesh.fsdp, config.mesh.tensor = 2, 1, 2
  config.model.attention = "splash"
  devices = aot.topology_devices("v5e:2x2")
  assert len(devices) == 4 and "v5" in devices[0].device_kind.lower()
  compiled = aot.compile_train_step(config, devices, batch_rows=8, seq_len=128)
  summary = aot.summarize(compiled)
  assert summary["xla_flops"] > 0
  assert 0 < summary["peak_bytes_estimate"] < 16 * 2 ** 30   # fits a v5e chip's 16 GiB HBM
  # The Pallas kernels are in the program (forward, dq and dkv), not an interpret-mode copy.
  assert compiled.as_text().count("tpu_custom_call") >= 3
