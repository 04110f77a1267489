"""Inference: KV-cache generation and option scoring (with prefix KV-cache reuse)."""
from surveylm_jax.inference.generate import generate
from surveylm_jax.inference.scoring import OptionScores, letter_token_ids, score_options

__all__ = ["generate", "OptionScores", "letter_token_ids", "score_options"]
