"""i-RIM model: layer maths against independent numpy, exact inverse, reconstruct API, errors."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from fnaf_jax.errors import ConfigError, DataError
from fnaf_jax.models import build_model
from fnaf_jax.models.irim import IRIM, scale_gamma
from fnaf_jax.models.irim_layers import (
    conv_strided,
    conv_transpose_strided,
    householder_matrix,
)

TINY = {
    "n_steps": 2,
    "n_hidden": [12, 10],
    "n_network_hidden": [6, 8],
    "dilations": [1, 3],
    "multiplicity": 1,
}


def _inputs(n, h, w, seed=0):
    rng = np.random.default_rng(seed)
    y = (rng.normal(size=(n, h, w)) + 1j * rng.normal(size=(n, h, w))).astype(
        np.complex64
    )
    mask = (rng.random((n, w)) < 0.4).astype(np.float32)
    meta = np.eye(8, dtype=np.float32)[rng.integers(0, 8, n)]
    return jnp.asarray(y), jnp.asarray(mask), jnp.asarray(meta)


def test_strided_convs_match_numpy_loops():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(1, 7, 8, 3)).astype(
        np.float32
    )  # 7 rows: one left over for d=2
    w = rng.normal(size=(4, 3, 2, 2)).astype(np.float32)  # OIHW
    b = rng.normal(size=(4,)).astype(np.float32)
    got = np.asarray(conv_strided(jnp.asarray(x), jnp.asarray(w), jnp.asarray(b), 2))
    want = np.zeros((1, 3, 4, 4), np.float32)
    for i in range(3):
        for j in range(4):
            patch = x[0, 2 * i : 2 * i + 2, 2 * j : 2 * j + 2, :]  # (a, b, c)
            want[0, i, j] = np.einsum("abc,ocab->o", patch, w) + b
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)

    wt = rng.normal(size=(4, 5, 2, 2)).astype(np.float32)  # IOHW (transposed conv)
    h = got
    up = np.asarray(conv_transpose_strided(jnp.asarray(h), jnp.asarray(wt), (7, 9)))
    want_up = np.zeros((1, 7, 9, 5), np.float32)
    for i in range(3):
        for j in range(4):
            for a in range(2):
                for c in range(2):
                    want_up[0, 2 * i + a, 2 * j + c] = h[0, i, j] @ wt[:, :, a, c]
    np.testing.assert_allclose(up, want_up, rtol=1e-5, atol=1e-4)
    assert np.all(up[:, 6:] == 0) and np.all(up[:, :, 8:] == 0)


def test_householder_product_is_orthogonal_and_ordered():
    rng = np.random.default_rng(2)
    v = rng.normal(size=(3, 6, 1)).astype(np.float32)
    w = np.asarray(householder_matrix(jnp.asarray(v)))
    np.testing.assert_allclose(w @ w.T, np.eye(6), atol=1e-6)
    us = [np.eye(6) - 2 * np.outer(u[:, 0], u[:, 0]) / (u[:, 0] @ u[:, 0]) for u in v]
    np.testing.assert_allclose(w, us[0] @ us[1] @ us[2], atol=1e-6)


def test_gamma_is_unbiased_std_of_re_and_im():
    y, _, _ = _inputs(2, 9, 11)
    gamma = np.asarray(scale_gamma(y))
    yy = np.asarray(y)
    want = [
        np.concatenate([s.real.ravel(), s.imag.ravel()]).std(ddof=1) + 1e-6 for s in yy
    ]
    np.testing.assert_allclose(gamma, want, rtol=1e-6)


def test_inverse_recovers_initial_state():
    model = IRIM(**TINY, rngs=nnx.Rngs(0))
    y, mask, meta = _inputs(2, 13, 11)  # odd sizes: leftover rows for dilations 2 and 3
    ys = y / scale_gamma(y)[:, None, None]
    x0 = model.initial_state(ys, meta)
    xt, x0_back = jax.jit(
        lambda x: (
            model.run_core(x, ys, mask),
            model.inverse(model.run_core(x, ys, mask), ys, mask),
        )
    )(x0)
    assert float(jnp.max(jnp.abs(xt - x0))) > 0.1  # the core really changes the state
    np.testing.assert_allclose(np.asarray(x0_back), np.asarray(x0), atol=2e-5)


def test_reconstruct_on_attack_sized_input_jits_and_vmaps():
    # One FNAF scoring call: u = U(y + d) complex (N, 320, 320); crop is the identity.
    model = build_model({"arch": "irim", **TINY, "n_steps": 1}, nnx.Rngs(1))
    u, mask, _ = _inputs(1, 320, 320, seed=3)
    uk = jnp.stack([u, 2 * u])  # K = 2 candidates of one slice

    @jax.jit
    def run(u, uk):
        single = model.reconstruct(u, mask)
        zeros_meta = model.reconstruct(u, mask, jnp.zeros((1, 8)))
        return single, zeros_meta, jax.vmap(lambda v: model.reconstruct(v, mask))(uk)

    out, out_zero_meta, batched = run(u, uk)
    assert out.shape == (1, 320, 320) and out.dtype == jnp.float32
    assert bool(jnp.all(jnp.isfinite(out)))
    # metadata None is the all-zero (unknown scanner) one-hot
    np.testing.assert_array_equal(np.asarray(out), np.asarray(out_zero_meta))
    # the vmapped call equals one call per candidate
    np.testing.assert_allclose(
        np.asarray(batched[0]), np.asarray(out), rtol=1e-5, atol=1e-6
    )
    # i-RIM is scale-equivariant through gamma: twice the input, twice the output
    np.testing.assert_allclose(
        np.asarray(batched[1]), 2 * np.asarray(out), rtol=1e-4, atol=1e-6
    )


def test_output_crop_and_fixed_readout():
    model = IRIM(**TINY, parametric_output=False, resolution=8, rngs=nnx.Rngs(0))
    assert model.output_function is None
    y, mask, meta = _inputs(1, 12, 10)
    est = model.estimate(y, mask, meta)
    img = model(y, mask, meta)
    assert est.shape == (1, 12, 10) and img.shape == (1, 8, 8)
    np.testing.assert_allclose(
        np.asarray(img), np.abs(np.asarray(est))[:, 2:10, 1:9], rtol=1e-6
    )
    # the release's fixed read-out: real = state channel 0, imag = channel n_latent // 2
    ys = y / scale_gamma(y)[:, None, None]
    xt = model.run_core(model.initial_state(ys, meta), ys, mask)
    gamma = float(scale_gamma(y)[0])
    want = (np.asarray(xt[..., 0]) + 1j * np.asarray(xt[..., 6])) * gamma  # 12 // 2
    np.testing.assert_allclose(np.asarray(est), want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    "kwargs, words",
    [
        ({"n_hidden": [10, 10]}, "n_hidden[0] = 10"),  # needs >= 4 m + 8 = 12
        ({"dilations": [1, 2, 2]}, "same nonzero length"),
        ({"n_hidden": [12, 14]}, "every n_hidden"),
        ({"n_hidden": 12}, "'depth' must be given"),
    ],
)
def test_bad_configs_raise_config_error(kwargs, words):
    with pytest.raises(
        ConfigError, match=words.replace("[", r"\[").replace("]", r"\]")
    ):
        IRIM(**{**TINY, **kwargs}, rngs=nnx.Rngs(0))


def test_int_widths_with_depth_and_bad_inputs():
    model = IRIM(
        n_steps=1,
        n_hidden=12,
        n_network_hidden=4,
        dilations=1,
        depth=2,
        multiplicity=1,
        rngs=nnx.Rngs(0),
    )
    assert len(model.rnn[0].layers) == 2
    y, mask, meta = _inputs(2, 8, 8)
    with pytest.raises(DataError, match="mask"):
        model(y, mask[:, :5], meta)
    with pytest.raises(DataError, match="metadata"):
        model(y, mask, meta[:, :4])
    with pytest.raises(DataError, match="complex"):
        model(jnp.abs(y), mask, meta)
