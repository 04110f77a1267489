"""The LoRA branch's hand-written backward pass (`layers.lora_delta`) against autodiff of the
plain expression `scale * ((x @ a) @ b)`, and the copies it exists to avoid."""
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from surveylm_jax.models.layers import _contract, lora_delta

# (x, a, b) shapes, in_axes: q/gate-like (one input axis), o_proj-like (two input axes) and a
# projection with two output axes (q_proj's [heads, head_dim]).
SHAPES = [((2, 5, 6), (6, 3), (3, 7), 1),
          ((2, 5, 4, 3), (4, 3, 3), (3, 7), 2),
          ((2, 5, 6), (6, 3), (3, 2, 4), 1)]


def _plain(x, a, b, scale, in_axes):
  return scale * _contract(_contract(x, a, in_axes), b, 1)


def _inputs(shapes, dtype=jnp.float32):
  keys = jax.random.split(jax.random.PRNGKey(0), 4)
  x, a, b = (jax.random.normal(k, s, dtype) for k, s in zip(keys, shapes[:3]))
  return x, a, b


@pytest.mark.parametrize("shapes", SHAPES, ids=["in1", "in2", "out2"])
def test_value_and_gradients_equal_autodiff_of_the_plain_expression(shapes):
  x, a, b = _inputs(shapes)
  in_axes, scale = shapes[3], 16 / 8 ** 0.5            # rsLoRA-like scale, not a power of two
  cotangent = jax.random.normal(jax.random.PRNGKey(1), _plain(x, a, b, scale, in_axes).shape)

  def grads(fn):
    return jax.jit(jax.grad(lambda *p: jnp.sum(fn(*p, scale, in_axes) * cotangent),
                            argnums=(0, 1, 2)))(x, a, b)
  np.testing.assert_allclose(lora_delta(x, a, b, scale, in_axes), _plain(x, a, b, scale, in_axes),
                             rtol=1e-6, atol=1e-6)
  for got, want in zip(grads(lora_delta), grads(_plain)):
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_gradients_keep_the_input_dtypes():
  x, a, b = _inputs(SHAPES[0], jnp.bfloat16)
  gx, ga, gb = jax.grad(lambda *p: jnp.sum(lora_delta(*p, 2.0, 1).astype(jnp.float32)),
                        argnums=(0, 1, 2))(x, a, b)
  assert gx.dtype == ga.dtype == gb.dtype == jnp.bfloat16


def _largest_layout_copy(fn, *args) -> int:
  """Elements of the largest transpose/copy in the optimized HLO of fn (CPU)."""
  text = jax.jit(fn).lower(*args).compile().as_text()
  sizes = [int(np.prod([int(d) for d in dims.split(",") if d]))
           for dims in re.findall(r"= f32\[([\d,]*)\][^=]*? (?:transpose|copy)\(", text)]
  return max(sizes, default=0)


def test_backward_transposes_rank_sized_arrays_only():
  # Autodiff's backward copies the output gradient [tokens, out] (for b's gradient) and x
  # [tokens, in] (for a's) into contraction-major order; the hand-written one transposes only
  # arrays of rank width. Checked on the CPU compiler, where those copies were measured.
  x, a, b = _inputs(((4, 64, 96), (96, 4), (4, 160), 1))
  loss = lambda fn: (lambda x, a, b: jnp.sum(jnp.sin(fn(x, a, b, 2.0, 1))))
  grad = lambda fn: jax.grad(loss(fn), argnums=(0, 1, 2))
  rank_sized = 4 * max(x.shape[0] * x.shape[1], 160, 96)
  assert _largest_layout_copy(grad(_plain), x, a, b) > rank_sized     # the copies exist
  assert _largest_layout_copy(grad(lora_delta), x, a, b) <= rank_sized
