"""Inference: KV-cache generation (and option scoring, in `scoring`)."""
from surveylm_jax.inference.generate import generate

__all__ = ["generate"]
