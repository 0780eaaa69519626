"""fnaf_jax.physics and fnaf_jax.normalize against independent numpy computations and the
fastMRI UnetDataTransform golden outputs."""

from __future__ import annotations

import h5py
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fnaf_jax import masks, normalize, physics
from fnaf_jax.errors import DataError

SIZES = [(8, 8), (7, 9), (6, 5), (5, 7)]  # even/even, odd/odd, even/odd, odd/odd


def _random_complex(shape, seed=0):
    rng = np.random.default_rng(seed)
    return (rng.normal(size=shape) + 1j * rng.normal(size=shape)).astype(np.complex128)


def _centred_dft_matrix(n, inverse=False):
    """Centred orthonormal DFT as an explicit matrix: index j <-> position j - n//2 on
    both sides (what ifftshift-FFT-fftshift does for odd and even n)."""
    k = np.arange(n) - n // 2
    sign = 1 if inverse else -1
    return np.exp(sign * 2j * np.pi * np.outer(k, k) / n) / np.sqrt(n)


def _fastmri_fft2c_numpy(x, inverse=False):
    """fastMRI's fft2c/ifft2c with its own roll-based shifts: ifftshift rolls by
    (n + 1) // 2, fftshift by n // 2 (torch.roll semantics = np.roll)."""
    h, w = x.shape[-2:]
    x = np.roll(x, ((h + 1) // 2, (w + 1) // 2), axis=(-2, -1))
    x = (np.fft.ifft2 if inverse else np.fft.fft2)(x, axes=(-2, -1), norm="ortho")
    return np.roll(x, (h // 2, w // 2), axis=(-2, -1))


@pytest.mark.parametrize("shape", SIZES)
def test_fft2c_matches_dft_matrix_and_fastmri_shifts(shape):
    x = _random_complex((2,) + shape)
    fh, fw = _centred_dft_matrix(shape[0]), _centred_dft_matrix(shape[1])
    by_matrix = np.einsum("ki,bij,lj->bkl", fh, x, fw)
    got = np.asarray(physics.fft2c(jnp.asarray(x, jnp.complex64)))
    np.testing.assert_allclose(got, by_matrix, atol=2e-6)
    np.testing.assert_allclose(got, _fastmri_fft2c_numpy(x), atol=2e-6)

    ih, iw = _centred_dft_matrix(shape[0], True), _centred_dft_matrix(shape[1], True)
    got_inv = np.asarray(physics.ifft2c(jnp.asarray(x, jnp.complex64)))
    np.testing.assert_allclose(
        got_inv, np.einsum("ki,bij,lj->bkl", ih, x, iw), atol=2e-6
    )
    np.testing.assert_allclose(
        got_inv, _fastmri_fft2c_numpy(x, inverse=True), atol=2e-6
    )


@jax.jit
def _round_trips(x):
    k = physics.fft2c(x)
    return k, physics.ifft2c(k), physics.fft2c(physics.ifft2c(x))


@pytest.mark.parametrize("shape", SIZES)
def test_round_trip_parseval_and_centre_delta(shape):
    x = np.asarray(_random_complex(shape, seed=1), np.complex64)
    # one compiled call per shape: x and a delta at the centre pixel (n // 2)
    delta = np.zeros(shape, np.complex64)
    delta[shape[0] // 2, shape[1] // 2] = 1
    k, back, forth = (np.asarray(a) for a in _round_trips(np.stack([x, delta])))
    np.testing.assert_allclose(back[0], x, atol=2e-6)
    np.testing.assert_allclose(forth[0], x, atol=2e-6)
    # orthonormal: energy is preserved
    assert np.sum(np.abs(k[0]) ** 2) == pytest.approx(np.sum(np.abs(x) ** 2), rel=1e-5)
    # the centre delta has a flat spectrum, for odd and even sizes
    np.testing.assert_allclose(
        k[1], np.full(shape, 1 / np.sqrt(np.prod(shape))), atol=1e-6
    )


def test_real_input_and_dtypes():
    x = jnp.asarray(np.random.default_rng(2).random((6, 7)), jnp.float32)
    u = physics.undersample(x, jnp.ones(7))
    assert u.dtype == jnp.complex64
    np.testing.assert_allclose(u, x, atol=2e-6)  # full mask: identity


@pytest.mark.parametrize("shape", [(2, 10, 12), (3, 9, 13)])  # odd sizes: the shifts' parity
def test_undersample_is_linear_and_masks_columns(shape):
    rng = np.random.default_rng(3)
    y = jnp.asarray(rng.random(shape), jnp.float32)
    d = jnp.asarray(rng.random(shape), jnp.float32)
    mask = jnp.asarray(rng.random((shape[0], shape[2])) < 0.5, jnp.float32)
    a, b = 0.7, -1.3
    lhs = physics.undersample(a * y + b * d, mask)
    rhs = a * physics.undersample(y, mask) + b * physics.undersample(d, mask)
    np.testing.assert_allclose(lhs, rhs, atol=1e-5)
    # independent computation: zero the unsampled columns of the numpy k-space
    k = _fastmri_fft2c_numpy(np.asarray(y, np.float64)) * np.asarray(mask)[:, None, :]
    np.testing.assert_allclose(
        physics.undersample(y, mask), _fastmri_fft2c_numpy(k, inverse=True), atol=1e-5
    )
    # U is a projection (M^2 = M) and its k-space vanishes where the mask is 0
    np.testing.assert_allclose(
        physics.undersample(physics.undersample(y, mask), mask),
        physics.undersample(y, mask),
        atol=1e-5,
    )
    kspace = np.asarray(physics.fft2c(physics.undersample(y, mask)))
    assert np.abs(kspace * (1 - np.asarray(mask))[:, None, :]).max() < 1e-5


@pytest.mark.parametrize("shape", [(12, 10), (9, 13), (320, 320)])
def test_undersample_points_equals_dense_computation(shape):
    """The sparse U(d) of point features against the numpy k-space of the dense image,
    with pixels off the image (dropped) and a repeated pixel (summed)."""
    h, w = shape
    rng = np.random.default_rng(5)
    n, p = 4, 10
    rows = rng.integers(-2, h + 2, (n, p))
    cols = rng.integers(-2, w + 2, (n, p))
    rows[:, 1], cols[:, 1] = rows[:, 0], cols[:, 0]  # the same pixel twice
    rows[0, 2], cols[1, 3] = h, -1  # certainly off the image
    vals = rng.normal(size=(n, p))
    mask = rng.random((n, w)) < 0.4
    d = np.zeros((n, h, w))
    for i in range(n):
        for j in range(p):
            if 0 <= rows[i, j] < h and 0 <= cols[i, j] < w:
                d[i, rows[i, j], cols[i, j]] += vals[i, j]
    ref = _fastmri_fft2c_numpy(_fastmri_fft2c_numpy(d) * mask[:, None, :], inverse=True)
    got = physics.undersample_points(jnp.asarray(rows, jnp.int32), jnp.asarray(cols, jnp.int32),
                                     jnp.asarray(vals, jnp.float32), jnp.asarray(mask, jnp.float32), shape)
    assert got.shape == (n, h, w) and got.dtype == jnp.complex64
    np.testing.assert_allclose(got, ref, atol=2e-6 * np.abs(ref).max())


def test_jit_and_vmap_agree_with_eager():
    rng = np.random.default_rng(4)
    y = jnp.asarray(rng.random((3, 8, 9)), jnp.float32)
    mask = jnp.asarray(rng.random((3, 9)) < 0.5, jnp.float32)
    eager = physics.undersample(y, mask)
    np.testing.assert_allclose(jax.jit(physics.undersample)(y, mask), eager, atol=1e-6)
    np.testing.assert_allclose(jax.vmap(physics.undersample)(y, mask), eager, atol=1e-6)
    # one mask broadcast over a batch of candidates
    np.testing.assert_allclose(
        jax.vmap(physics.undersample, in_axes=(0, None))(y, mask[0]),
        physics.undersample(y, mask[0]),
        atol=1e-6,
    )


@pytest.mark.parametrize(
    "n, size, start", [(10, 4, 3), (9, 4, 2), (9, 3, 3), (10, 3, 3), (5, 5, 0)]
)
def test_center_crop_start_rule(n, size, start):
    x = jnp.arange(n * n).reshape(n, n)
    got = physics.center_crop(x, (size, size))
    np.testing.assert_array_equal(got, x[start : start + size, start : start + size])
    c = x.astype(jnp.complex64) * (1 + 1j)
    np.testing.assert_array_equal(
        physics.complex_center_crop(c, (size, size)),
        c[start : start + size, start : start + size],
    )


def test_center_crop_too_large_raises():
    with pytest.raises(DataError, match="rows"):
        physics.center_crop(jnp.zeros((4, 8)), (5, 5))


def test_normalize_instance_unbiased_eps_clamp_per_sample():
    rng = np.random.default_rng(5)
    x = (
        rng.random((3, 6, 7)).astype(np.float32)
        * np.array([1.0, 10.0, 1e-3], np.float32)[:, None, None]
    )
    x[1, 0, 0] = 500.0  # an outlier far above 6 std
    for arr in (x, jnp.asarray(x)):
        z, mean, std = normalize.normalize_instance(arr)
        assert mean.shape == (3, 1, 1) and std.shape == (3, 1, 1)
        flat = x.reshape(3, -1).astype(np.float64)
        m = flat.mean(1)
        s = np.sqrt(((flat - m[:, None]) ** 2).sum(1) / (flat.shape[1] - 1))  # ddof = 1
        np.testing.assert_allclose(np.asarray(mean).ravel(), m, rtol=1e-5)
        np.testing.assert_allclose(np.asarray(std).ravel(), s, rtol=1e-5)
        expected = np.clip((x - m[:, None, None]) / (s[:, None, None] + 1e-11), -6, 6)
        np.testing.assert_allclose(np.asarray(z), expected, atol=1e-5)
        assert float(np.asarray(z)[1, 0, 0]) == 6.0
    # eps keeps a constant image finite (std 0 -> (x - mean) / 1e-11 = 0)
    z, _, std = normalize.normalize_instance(np.full((1, 4, 4), 3.0))
    assert float(std.max()) == 0.0 and np.all(z == 0)
    # unnormalize undoes normalize without clamp
    z, mean, std = normalize.normalize_instance(x, clamp=None)
    np.testing.assert_allclose(
        normalize.unnormalize(z, mean, std), x, rtol=1e-5, atol=1e-6
    )


def test_zero_filled_and_normalize_match_fastmri_unet_transform(golden):
    """The fastMRI UnetDataTransform golden: |crop(ifft2c(M k))| then normalize_instance,
    with the mask drawn by RandomMaskFunc([0.08], [4]) seeded by the stored file name."""
    ref = np.load(golden / "unet_transform_outputs.npz")
    with h5py.File(golden / "unet_transform_file1000031.h5", "r") as f:
        kspace = f["kspace"][()]
        target = f["reconstruction_esc"][()]
    fname = str(ref["fname"][0])
    mask, num_low = masks.column_mask(
        masks.RandomMaskFunc([0.08], [4]), kspace.shape[-1], seed=masks.file_seed(fname)
    )
    # UnetDataTransform applies the mask as drawn (no zeroing of the padding columns)
    np.testing.assert_array_equal(mask, ref["mask"])
    assert num_low == int(ref["num_low_frequencies"])

    image = physics.zero_filled(
        jnp.asarray(kspace), jnp.asarray(mask), crop=target.shape[-2:]
    )
    z, mean, std = normalize.normalize_instance(image)
    np.testing.assert_allclose(np.asarray(z), ref["image"], atol=1e-5)
    np.testing.assert_allclose(np.asarray(mean).ravel(), ref["mean"], rtol=1e-5)
    np.testing.assert_allclose(np.asarray(std).ravel(), ref["std"], rtol=1e-5)
    t = normalize.normalize(jnp.asarray(target), mean, std)
    np.testing.assert_allclose(np.asarray(t), ref["target"], atol=1e-5)
