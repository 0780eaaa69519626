"""The native CPU kernels (oneDNN convolutions, instance norm + leaky ReLU): values and
gradients against independent float64 computations."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from fnaf_jax.errors import ConfigError
from fnaf_jax.kernels import norm, onednn
from fnaf_jax.models import build_model

# float32 sums of at most a few thousand products: 1e-5 of the largest value is ample
RTOL = 1e-5


def _reference(x, w_hwio):
    """Zero-padded 'same' convolution and its two gradients for the loss sum(y * c), in float64."""
    kh, kw = w_hwio.shape[:2]
    n, h, wd, _ = x.shape
    xp = np.pad(x, ((0, 0), (kh // 2, kh // 2), (kw // 2, kw // 2), (0, 0)))
    y = np.zeros((n, h, wd, w_hwio.shape[3]))
    for a in range(kh):
        for b in range(kw):
            y += np.einsum("nhwc,co->nhwo", xp[:, a:a + h, b:b + wd], w_hwio[a, b])
    return y


def _gradients(x, w_hwio, c):
    kh, kw = w_hwio.shape[:2]
    _, h, wd, _ = x.shape
    xp = np.pad(x, ((0, 0), (kh // 2, kh // 2), (kw // 2, kw // 2), (0, 0)))
    dxp = np.zeros_like(xp)
    dw = np.zeros_like(w_hwio)
    for a in range(kh):
        for b in range(kw):
            dw[a, b] = np.einsum("nhwc,nhwo->co", xp[:, a:a + h, b:b + wd], c)
            dxp[:, a:a + h, b:b + wd] += np.einsum("nhwo,co->nhwc", c, w_hwio[a, b])
    return dxp[:, kh // 2:kh // 2 + h, kw // 2:kw // 2 + wd], dw


def _close(actual, expected):
    np.testing.assert_allclose(np.asarray(actual), expected, rtol=0,
                               atol=RTOL * np.abs(expected).max())


@pytest.fixture(autouse=True)
def _default_mode(monkeypatch):
    monkeypatch.delenv(onednn.MODE_ENV, raising=False)


def test_kernel_builds_on_this_machine():
    # CI installs the onednn wheels and has a compiler: the kernel must really be in use
    assert onednn.unavailable_reason() is None
    assert onednn.enabled()


@pytest.mark.parametrize("layout", onednn.WEIGHT_LAYOUTS)
@pytest.mark.parametrize("shape", [(2, 13, 10, 3, 5, 3), (1, 12, 12, 16, 8, 3),
                                   (3, 9, 11, 12, 16, 1), (1, 8, 7, 4, 4, 5)])
def test_values_and_gradients_match_float64(layout, shape):
    n, h, wd, ci, co, k = shape
    rng = np.random.default_rng(sum(shape))
    x = rng.normal(size=(n, h, wd, ci))
    w = rng.normal(size=(k, k, ci, co))
    c = rng.normal(size=(n, h, wd, co))
    wj = jnp.asarray(w if layout == "HWIO" else w.transpose(3, 2, 0, 1), jnp.float32)
    xj, cj = jnp.asarray(x, jnp.float32), jnp.asarray(c, jnp.float32)

    y = jax.jit(lambda x, w: onednn.conv_same(x, w, layout))(xj, wj)
    _close(y, _reference(x, w))
    dx, dw = jax.jit(jax.grad(lambda x, w: jnp.sum(onednn.conv_same(x, w, layout) * cj), (0, 1)))(xj, wj)
    dx_ref, dw_ref = _gradients(x, w, c)
    _close(dx, dx_ref)
    _close(dw, dw_ref if layout == "HWIO" else dw_ref.transpose(3, 2, 0, 1))


@pytest.mark.parametrize("shape", [(2, 5, 3, 8, 6, 2), (1, 4, 4, 16, 16, 2), (1, 3, 2, 9, 4, 3)])
def test_transposed_convolution_values_and_gradients_match_float64(shape):
    """Stride = kernel size, no padding: ``out[k*i+a, k*j+b, o] = sum_c x[i, j, c] w[a, b, c, o]``."""
    n, h, wd, ci, co, k = shape
    rng = np.random.default_rng(sum(shape))
    x, w = rng.normal(size=(n, h, wd, ci)), rng.normal(size=(k, k, ci, co))
    c = rng.normal(size=(n, k * h, k * wd, co))
    blocks = np.einsum("nhwc,abco->nhawbo", x, w).reshape(n, k * h, k * wd, co)
    c_blocks = c.reshape(n, h, k, wd, k, co)
    xj, wj, cj = (jnp.asarray(a, jnp.float32) for a in (x, w, c))

    _close(jax.jit(onednn.conv_transpose)(xj, wj), blocks)
    dx, dw = jax.jit(jax.grad(lambda x, w: jnp.sum(onednn.conv_transpose(x, w) * cj), (0, 1)))(xj, wj)
    _close(dx, np.einsum("nhawbo,abco->nhwc", c_blocks, w))
    _close(dw, np.einsum("nhwc,nhawbo->abco", x, c_blocks))


def _norm_reference(x, slope, c, eps=1e-5):
    """Instance norm + leaky ReLU and the gradient of sum(y * c), in float64 (autodiff-free)."""
    mean = x.mean(axis=(1, 2), keepdims=True)
    inv = 1 / np.sqrt(((x - mean) ** 2).mean(axis=(1, 2), keepdims=True) + eps)
    z = (x - mean) * inv
    y = np.where(z > 0, z, slope * z)
    gz = np.where(z > 0, c, slope * c)
    dx = inv * (gz - gz.mean(axis=(1, 2), keepdims=True) - z * (gz * z).mean(axis=(1, 2), keepdims=True))
    return y, dx


@pytest.mark.parametrize("shape, offset", [((2, 9, 7, 3), 20), ((1, 40, 33, 32), 20), ((3, 5, 5, 70), 20),
                                           ((1, 1, 130, 1), 20), ((2, 20, 20, 16), 1000)])
def test_norm_kernel_values_and_gradient_match_float64(shape, offset):
    """Odd sizes, channels that are not a multiple of the vector width, more pixels than one
    block (64), several samples, and inputs whose mean is far above their spread (3): sums
    about zero would cancel there."""
    rng = np.random.default_rng(sum(shape))
    xj = jnp.asarray(rng.normal(size=shape) * 3 + offset, jnp.float32)
    cj = jnp.asarray(rng.normal(size=shape), jnp.float32)
    y_ref, dx_ref = _norm_reference(np.asarray(xj, np.float64), 0.2, np.asarray(cj, np.float64))
    assert norm.use_for(xj, 0.2) and not norm.use_for(xj, 0.0)
    _close(jax.jit(lambda x: norm.norm_leaky_relu(x, 0.2, 1e-5))(xj), y_ref)
    _close(jax.jit(jax.grad(lambda x: jnp.sum(norm.norm_leaky_relu(x, 0.2, 1e-5) * cj)))(xj), dx_ref)


def test_vmap_equals_one_call_per_element():
    rng = np.random.default_rng(3)
    x = jnp.asarray(rng.normal(size=(3, 1, 8, 8, 2)), jnp.float32)
    w = jnp.asarray(rng.normal(size=(3, 3, 2, 4)), jnp.float32)
    batched = jax.vmap(lambda xi: onednn.conv_same(xi, w))(x)
    for i in range(3):
        np.testing.assert_array_equal(np.asarray(batched[i]), np.asarray(onednn.conv_same(x[i], w)))


def test_bad_arguments_are_clear_errors():
    x = jnp.zeros((1, 8, 8, 2))
    with pytest.raises(ValueError, match="odd"):
        onednn.conv_same(x, jnp.zeros((2, 2, 2, 4)))
    with pytest.raises(ValueError, match="input channels"):
        onednn.conv_same(x, jnp.zeros((3, 3, 3, 4)))
    with pytest.raises(ValueError, match="float32"):
        onednn.conv_same(x.astype(jnp.float16), jnp.zeros((3, 3, 2, 4), jnp.float16))
    with pytest.raises(ValueError, match="weight_layout"):
        onednn.conv_same(x, jnp.zeros((3, 3, 2, 4)), "IOHW")


#: The i-RIM's memory-free gradient recomputes activations by inverting its layers, and
#: its metadata-embedding gradients are sums of near-cancelling terms: XLA's own optimised
#: and unoptimised programs differ there by up to 1.4e-4 of the largest gradient
#: (measured on this test's model), so the two convolution paths are held to that.
IRIM_RTOL = 1.4e-4


@pytest.mark.parametrize("arch", ["unet", "irim"])
def test_model_gradients_equal_xla_convolutions(arch, monkeypatch):
    """The whole model, oneDNN against XLA's convolutions: the loss within 1e-6 and every
    parameter gradient within 1e-5 of its largest entry (the U-Net; the i-RIM: IRIM_RTOL)."""
    if arch == "unet":
        config = {"arch": "unet", "chans": 8, "num_pool_layers": 1}
    else:
        config = {"arch": "irim", "n_steps": 1, "n_hidden": [12, 10], "n_network_hidden": [8, 8],
                  "dilations": [1, 2], "multiplicity": 1}
    model = build_model(config, nnx.Rngs(0))
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    rng = np.random.default_rng(0)
    image = jnp.asarray(rng.normal(size=(2, 32, 32, 1)), jnp.float32)
    mask = jnp.asarray(rng.random((2, 32)) < 0.4, jnp.float32)

    def loss(params):
        m = nnx.merge(graphdef, params, rest)
        out = m(image) if arch == "unet" else m.reconstruct(image[..., 0].astype(jnp.complex64), mask)
        return jnp.mean(jnp.abs(out - 0.5))

    # the U-Net uses every native kernel: convolutions, the up-sampling, the norm
    targets = ("FnafOnednnConvForward", "FnafOnednnConvTranspose", "FnafInstanceNorm")[:3 if arch == "unet" else 1]

    def run(mode):
        monkeypatch.setenv(onednn.MODE_ENV, mode)
        fn = jax.jit(jax.value_and_grad(loss))
        hlo = fn.lower(params).as_text()
        return fn(params), [t in hlo for t in targets]

    (l_dnn, g_dnn), used_dnn = run("onednn")
    (l_xla, g_xla), used_xla = run("xla")
    assert all(used_dnn) and not any(used_xla)
    np.testing.assert_allclose(float(l_dnn), float(l_xla), rtol=1e-6)
    gap = max(float(jnp.abs(a - b).max()) / max(float(jnp.abs(b).max()), 1e-12)
              for a, b in zip(jax.tree.leaves(g_dnn), jax.tree.leaves(g_xla)))
    assert gap <= (RTOL if arch == "unet" else IRIM_RTOL), gap


def test_mode_is_validated_and_onednn_mode_names_a_missing_kernel(monkeypatch):
    monkeypatch.setenv(onednn.MODE_ENV, "fast")
    with pytest.raises(ConfigError, match="FNAF_CPU_CONV='fast'"):
        onednn.enabled()
    monkeypatch.setenv(onednn.MODE_ENV, "xla")
    assert not onednn.enabled()

    monkeypatch.setattr(onednn, "unavailable_reason", lambda: "the onednn-cpu-gomp package is not installed")
    monkeypatch.setenv(onednn.MODE_ENV, "onednn")
    with pytest.raises(ConfigError, match="onednn-cpu-gomp package is not installed"):
        onednn.enabled()
    monkeypatch.setenv(onednn.MODE_ENV, "auto")
    assert not onednn.enabled()  # auto falls back to XLA's convolutions


def test_a_failed_compile_is_a_clear_reason_and_leaves_nothing_behind(monkeypatch, tmp_path):
    cache = tmp_path / "cache"
    monkeypatch.setenv(onednn.CACHE_ENV, str(cache))
    inputs = onednn._build_inputs()
    broken = dict(inputs, compiler="false")  # a "compiler" that fails silently
    with pytest.raises(onednn.KernelUnavailable, match="compiling onednn_conv.cc, instance_norm.cc failed"):
        onednn._build(broken)
    # a compiler's diagnostics end in source excerpts and carets: the reason is its first error
    chatty = tmp_path / "chatty-c++"
    chatty.write_text("#!/bin/sh\necho 'x.cc: In function f:' >&2\necho 'x.cc:3:1: error: no oneDNN' >&2\n"
                      "echo '    3 | }' >&2\necho '      | ^' >&2\nexit 1\n")
    chatty.chmod(0o755)
    with pytest.raises(onednn.KernelUnavailable, match="failed: x.cc:3:1: error: no oneDNN$"):
        onednn._build(dict(inputs, compiler=str(chatty)))
    assert list(cache.iterdir()) == []  # no half-written library left behind
