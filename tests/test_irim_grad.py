"""Memory-free gradients (inversion instead of stored activations) equal plain autodiff."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from fnaf_jax.models import invertible
from fnaf_jax.models.irim import IRIM

CFG = {"n_hidden": [12], "n_network_hidden": [6], "dilations": [2], "multiplicity": 1}


def _model(memory_free, shared, dtype=jnp.float32, n_steps=2):
    model = IRIM(
        n_steps=n_steps,
        shared_weights=shared,
        memory_free=memory_free,
        resolution=8,
        **CFG,
        rngs=nnx.Rngs(5),
    )
    nnx.update(
        model, jax.tree.map(lambda a: a.astype(dtype), nnx.state(model, nnx.Param))
    )
    return model


def _flat_grads(grad_state):
    return {p: v.get_value() for p, v in nnx.to_flat_state(grad_state)}


def _couple(p, x, data):
    """Additive coupling whose update reads the data (like the i-RIM's DC and coupling)."""
    left, right = x[:, :3], x[:, 3:]
    return jnp.concatenate(
        [left, right + jnp.tanh(left @ p["w"] + p["b"]) * data[:, None]], 1
    )


def _uncouple(p, y, data):
    left, right = y[:, :3], y[:, 3:]
    return jnp.concatenate(
        [left, right - jnp.tanh(left @ p["w"] + p["b"]) * data[:, None]], 1
    )


def _rotate(p, x, data):
    return x @ p["q"]


def _unrotate(p, y, data):
    return y @ p["q"].T


def test_memory_free_chain_gradients_are_exact_in_float64():
    """In float64 the states rebuilt by inversion are exact to ~1e-15, so the gradients
    w.r.t. parameters, input and data must equal plain autodiff to ~1e-12. Parameters
    shared by two layers (as with shared i-RIM weights) get the sum of both uses."""
    with jax.enable_x64(True):
        rng = np.random.default_rng(0)
        q, _ = np.linalg.qr(rng.normal(size=(6, 6)))
        couple = {
            "w": jnp.asarray(rng.normal(size=(3, 3))),
            "b": jnp.asarray(rng.normal(size=3)),
        }
        params = [
            couple,
            {"q": jnp.asarray(q)},
            couple,
            {"q": jnp.asarray(q.T @ q[::-1])},
        ]
        forwards = [_couple, _rotate, _couple, _rotate]
        inverses = [_uncouple, _unrotate, _uncouple, _unrotate]
        x = jnp.asarray(rng.normal(size=(5, 6)))
        data = jnp.asarray(rng.normal(size=5))
        target = jnp.asarray(rng.normal(size=(5, 6)))
        run = invertible.memory_free_chain(forwards, inverses)

        def loss(chain, params, x, data):
            return jnp.sum((chain(params, x, data) - target) ** 2)

        def plain(params, x, data):
            return invertible.chain_forward(forwards, params, x, data)

        got = jax.grad(loss, argnums=(1, 2, 3))(run, params, x, data)
        want = jax.grad(loss, argnums=(1, 2, 3))(plain, params, x, data)
        for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
            np.testing.assert_allclose(
                np.asarray(a), np.asarray(b), rtol=1e-11, atol=1e-12
            )
        back = invertible.chain_inverse(inverses, params, plain(params, x, data), data)
        np.testing.assert_allclose(np.asarray(back), np.asarray(x), atol=1e-13)


def test_memory_free_image_loss_gradients_match_in_float32():
    """The full model (gamma, head, crop, magnitude) as trained, with weights shared over
    steps (the same parameters enter the chain twice): float32 tolerance."""
    rng = np.random.default_rng(1)
    y = jnp.asarray(
        (rng.normal(size=(2, 12, 10)) + 1j * rng.normal(size=(2, 12, 10))).astype(
            np.complex64
        )
    )
    mask = jnp.asarray((rng.random((2, 10)) < 0.5).astype(np.float32))
    meta = jnp.asarray(np.eye(8, dtype=np.float32)[[3, 6]])
    target = jnp.asarray(rng.random((2, 8, 8)).astype(np.float32))

    def loss(model):
        return jnp.mean((model(y, mask, meta) - target) ** 2)

    grads = {}
    for memory_free in (True, False):
        grads[memory_free] = _flat_grads(
            nnx.jit(nnx.grad(loss))(_model(memory_free, True))
        )
    scale = max(float(jnp.max(jnp.abs(g))) for g in grads[False].values())
    worst = max(
        float(jnp.max(jnp.abs(grads[True][p] - g))) for p, g in grads[False].items()
    )
    # float32 rounding of the reconstructed states: measured ~1e-6 of the largest gradient
    assert worst <= 1e-4 * scale, (worst, scale)


def test_fused_coupling_backward_equals_inverse_plus_vjp_in_float64():
    """``additive_coupling_backward`` (one F evaluation) = inversion + ``jax.vjp``."""
    from fnaf_jax.models.irim_layers import (
        ResidualBlock,
        additive_coupling,
        additive_coupling_backward,
    )

    with jax.enable_x64(True):
        block = ResidualBlock(4, 4, 6, dilation=2, rngs=nnx.Rngs(2))
        p = jax.tree.map(lambda a: a.astype(jnp.float64), block.params())
        rng = np.random.default_rng(3)
        x = jnp.asarray(
            rng.normal(size=(2, 7, 6, 10))
        )  # 8 coupled channels + 2 passed on
        ct = jnp.asarray(rng.normal(size=(2, 7, 6, 10)))
        y, vjp = jax.vjp(lambda q, v: additive_coupling(q, v, 8, 2), p, x)
        want_p, want_x = vjp(ct)
        x_back, got_p, got_x = additive_coupling_backward(p, y, ct, 8, 2)
        np.testing.assert_allclose(np.asarray(x_back), np.asarray(x), atol=1e-13)
        np.testing.assert_allclose(
            np.asarray(got_x), np.asarray(want_x), rtol=1e-12, atol=1e-13
        )
        for a, b in zip(jax.tree.leaves(got_p), jax.tree.leaves(want_p)):
            np.testing.assert_allclose(
                np.asarray(a), np.asarray(b), rtol=1e-12, atol=1e-13
            )
