"""U-Net models: forward parity with the PyTorch references (tests/golden), building blocks
against independent computations, reconstruct(), dropout and input checks."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from flax import nnx

from fnaf_jax.errors import ConfigError, DataError
from fnaf_jax.models.convert import load_torch, parameter_count
from fnaf_jax.models.registry import build_abstract_model
from fnaf_jax.models.unet import Unet, UnetV0, resize_bilinear, upsample_2x2

# golden/README.md: float32 vs float64 of the references differ by ~1e-6 relative.
PARITY_RTOL = 1e-5


def nchw_forward(model, x_nchw):
    y = nnx.jit(lambda m, x: m(x))(model, jnp.asarray(x_nchw.transpose(0, 2, 3, 1)))
    return np.asarray(y).transpose(0, 3, 1, 2)


def assert_parity(out, ref):
    err = np.abs(out - ref).max()
    bound = PARITY_RTOL * np.abs(ref).max()
    print(f"max|a-b| = {err:.3g} (bound {bound:.3g}, relative {err / np.abs(ref).max():.3g})")
    assert out.shape == ref.shape
    assert err <= bound


@pytest.mark.parametrize("source", ["pt", "state_npz"])
def test_unet_fastmri_parity(golden, source):
    # (2, 1, 37, 45): odd sizes exercise floored pooling and the reflect padding.
    src = golden / "unet_fastmri.pt" if source == "pt" else dict(np.load(golden / "unet_fastmri_state.npz"))
    model, config = load_torch(src)
    assert isinstance(model, Unet)
    assert config == {"arch": "unet", "in_chans": 1, "out_chans": 1, "chans": 8,
                      "num_pool_layers": 3, "drop_prob": 0.0}
    io = np.load(golden / "unet_fastmri_io.npz")
    assert_parity(nchw_forward(model, io["x"]), io["y"])


@pytest.mark.parametrize("source", ["pt", "state_npz"])
def test_unet_v0_parity(golden, source):
    src = golden / "unet_v0.pt" if source == "pt" else dict(np.load(golden / "unet_v0_state.npz"))
    model, config = load_torch(src)
    assert isinstance(model, UnetV0)
    assert config["arch"] == "unet-v0" and config["chans"] == 8 and config["num_pool_layers"] == 3
    io = np.load(golden / "unet_v0_io.npz")
    assert_parity(nchw_forward(model, io["x"]), io["y"])
    assert_parity(nchw_forward(model, io["x_odd"]), io["y_odd"])  # resize to odd skip sizes


def test_parameter_counts_match_the_references():
    # golden/README.md: fastmri Unet(1, 1, 8, 3) has 120,273 parameters, UnetModel v0 52,771.
    assert parameter_count(build_abstract_model({"arch": "unet", "chans": 8, "num_pool_layers": 3})) == 120_273
    assert parameter_count(build_abstract_model({"arch": "unet-v0", "chans": 8, "num_pool_layers": 3})) == 52_771


@pytest.mark.parametrize(("size_in", "size_out"), [((5, 7), (11, 15)), ((18, 22), (37, 45)), ((9, 10), (4, 3)),
                                                   ((6, 6), (6, 6)), ((1, 4), (3, 2)), ((100, 37), (17, 311))])
def test_resize_bilinear_matches_torch_interpolate(size_in, size_out):
    x = np.random.default_rng(0).normal(size=(2, 3, *size_in)).astype(np.float32)
    ref = torch.nn.functional.interpolate(torch.from_numpy(x), size=size_out, mode="bilinear",
                                          align_corners=False).numpy()
    out = np.asarray(resize_bilinear(jnp.asarray(x.transpose(0, 2, 3, 1)), *size_out)).transpose(0, 3, 1, 2)
    # float32 rounding of the final weighted sums only: the weights themselves are torch's
    np.testing.assert_allclose(out, ref, atol=1e-6, rtol=0)


@pytest.mark.parametrize("in_chans", [3, 12])  # XLA's matmul, and (>= 8 channels) oneDNN's
def test_upsample_2x2_matches_torch_conv_transpose(in_chans):
    rng = np.random.default_rng(1)
    x = rng.normal(size=(2, in_chans, 5, 3)).astype(np.float32)  # NCHW
    w = rng.normal(size=(in_chans, 6, 2, 2)).astype(np.float32)  # torch (in, out, kh, kw)
    ref = torch.nn.functional.conv_transpose2d(torch.from_numpy(x), torch.from_numpy(w), stride=2).numpy()
    args = jnp.asarray(x.transpose(0, 2, 3, 1)), jnp.asarray(w.transpose(2, 3, 0, 1))
    out = upsample_2x2(*args)
    np.testing.assert_allclose(np.asarray(out).transpose(0, 3, 1, 2), ref, atol=1e-5, rtol=0)
    native = "FnafOnednnConvTranspose" in jax.jit(upsample_2x2).lower(*args).as_text()
    assert native == (in_chans >= 8)


@pytest.mark.parametrize("name", ["unet_fastmri", "unet_v0"])
def test_reconstruct_equals_manual_pipeline(golden, name):
    model, _ = load_torch(dict(np.load(golden / f"{name}_state.npz")))
    rng = np.random.default_rng(2)
    u = (rng.normal(size=(2, 24, 20)) + 1j * rng.normal(size=(2, 24, 20))).astype(np.complex64)
    u[1] *= 1e-4  # fastMRI-like scale: the z-score must undo it per sample
    mask = np.ones((2, 20), np.float32)

    # independent z-score in float64 numpy: unbiased std, eps 1e-11, clamp 6
    mag = np.abs(u).astype(np.float64)
    mean = mag.mean(axis=(1, 2), keepdims=True)
    std = mag.std(axis=(1, 2), ddof=1, keepdims=True)
    z = np.clip((mag - mean) / (std + 1e-11), -6, 6).astype(np.float32)
    expected = nchw_forward(model, z[:, None])[:, 0] * std + mean

    out = np.asarray(nnx.jit(lambda m, u, k: m.reconstruct(u, k))(model, jnp.asarray(u), jnp.asarray(mask)))
    assert out.shape == (2, 24, 20) and out.dtype == np.float32
    for i in range(2):
        scale = np.abs(expected[i]).max()
        assert np.abs(out[i] - expected[i]).max() <= 1e-5 * scale


def test_dropout_drops_whole_channels_only_in_train_mode():
    model = Unet(chans=2, num_pool_layers=1, drop_prob=0.5, rngs=nnx.Rngs(0))
    x = np.random.default_rng(0).normal(size=(2, 1, 8, 8)).astype(np.float32)
    eval_out = nchw_forward(model, x)
    np.testing.assert_array_equal(eval_out, nchw_forward(model, x))  # eval: deterministic

    model.train()
    dropout = model.down_sample_layers[0].dropout
    kept = np.asarray(dropout(jnp.ones((2, 8, 8, 32))))
    per_channel = kept.reshape(2, 64, 32)
    assert np.all(per_channel == per_channel[:, :1])  # constant over H, W: whole channels
    assert set(np.unique(kept)) == {0.0, 2.0}  # dropped, or kept and scaled by 1/(1-p)
    assert not np.allclose(nchw_forward(model, x), eval_out)
    model.eval()
    np.testing.assert_array_equal(nchw_forward(model, x), eval_out)


def test_bad_inputs_and_configs_raise():
    model = nnx.eval_shape(lambda: Unet(chans=2, num_pool_layers=2, rngs=nnx.Rngs(0)))  # checks come first
    with pytest.raises(DataError, match="1 channel"):
        model(jnp.zeros((1, 8, 8, 2)))
    with pytest.raises(DataError, match="too small"):
        model(jnp.zeros((1, 3, 8, 1)))
    with pytest.raises(ConfigError, match="num_pool_layers"):
        UnetV0(num_pool_layers=0, rngs=nnx.Rngs(0))
    with pytest.raises(ConfigError, match="drop_prob"):
        Unet(drop_prob=1.0, rngs=nnx.Rngs(0))


def test_forward_is_traceable_for_any_size(golden):
    # A jitted forward must accept sizes that are not multiples of 2**pools, as the reference does.
    model, _ = load_torch(golden / "unet_v0.pt")
    graphdef, state = nnx.split(model)
    fn = jax.jit(lambda s, x: nnx.merge(graphdef, s)(x))
    for h, w in ((9, 11), (16, 8)):
        assert fn(state, jnp.ones((1, h, w, 1))).shape == (1, h, w, 1)


@pytest.mark.parametrize("slope", [0.2, 0.0])
def test_norm_activation_gradient_equals_autodiff(slope):
    """The hand-written gradient of instance norm + (leaky) ReLU against autodiff of the
    plain composition, within 1e-5 of the largest gradient: XLA's fused op (equal values)
    and what the model calls (on this single CPU device, the native kernel for a leaky
    slope: values within 1e-6 of the largest)."""
    from fnaf_jax.models.unet import (
        _activation,
        fused_norm_activation,
        instance_norm,
        norm_activation,
    )

    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.normal(size=(2, 9, 7, 3)) * 3 + 1, jnp.float32)
    c = jnp.asarray(rng.normal(size=(2, 9, 7, 3)), jnp.float32)
    plain_value = np.asarray(_activation(instance_norm(x), slope))
    plain = jax.grad(lambda x: jnp.sum(_activation(instance_norm(x), slope) * c))(x)
    np.testing.assert_array_equal(np.asarray(fused_norm_activation(x, slope)), plain_value)
    for op in (fused_norm_activation, norm_activation):
        np.testing.assert_allclose(np.asarray(op(x, slope)), plain_value, rtol=0,
                                   atol=1e-6 * np.abs(plain_value).max())
        fused = jax.grad(lambda x, op=op: jnp.sum(op(x, slope) * c))(x)
        np.testing.assert_allclose(np.asarray(fused), np.asarray(plain), rtol=0,
                                   atol=1e-5 * float(jnp.abs(plain).max()))
