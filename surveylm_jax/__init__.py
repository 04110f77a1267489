"""surveylm_jax: aligning language models with real survey respondents, in JAX/Flax."""
__version__ = "0.1.0"
