"""fastMRI's U-Net and the 2020 "v0" U-Net of the FNAF code, as Flax NNX modules.

Both take and return NHWC float32 images of any height and width (at least
``2**num_pool_layers``) and follow their PyTorch originals layer for layer, so that
converted weights (``fnaf_jax.models.convert``) give the same outputs:

* ``Unet``: ``fastmri.models.Unet`` (fastmri 0.3.0). Conv blocks of [3x3 conv without
  bias, instance norm, LeakyReLU 0.2, channel dropout] x 2, average pooling, 2x2
  stride-2 transposed convs, reflect padding when odd sizes leave the up-sampled map
  one pixel short, a final 1x1 conv with bias.
* ``UnetV0``: the 2020 U-Net that the FNAF code trains (see tests/golden/README.md):
  convs with bias, ReLU, max pooling, bilinear resizing to the skip's size, a head of
  three 1x1 convs.

Dropout is channel dropout (``Dropout2d``). Models are built in evaluation mode
(dropout off): call ``model.train()`` before training steps and ``model.eval()`` after.
The dropout RNG stream is the ``dropout`` stream of the ``rngs`` given (falling back to
``default``), kept only when ``drop_prob > 0``.

Initialisation follows PyTorch's defaults (uniform in +-1/sqrt(fan_in)), so training
from scratch starts where the reference recipe does.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from fnaf_jax.errors import ConfigError, DataError
from fnaf_jax.kernels import norm, onednn
from fnaf_jax.normalize import normalize_instance, unnormalize
from fnaf_jax.physics import complex_abs

# float32 convs on accelerators default to reduced-precision passes; parity with the
# PyTorch references needs full float32 products.
PRECISION = jax.lax.Precision.HIGHEST
INSTANCE_NORM_EPS = 1e-5

def compiled_init(init):
    """``init(key, shape, dtype)`` as one compiled program per shape. Run eagerly, a random
    initialiser compiles each of its dozen primitives for every new shape: building a
    U-Net took 4-24 s on a CPU, almost all of it compiling."""
    return jax.jit(init, static_argnums=(1, 2))


# torch's default conv init, kaiming_uniform(a=sqrt(5)), is U(+-1/sqrt(fan_in)).
_torch_kernel_init = compiled_init(nnx.initializers.variance_scaling(1.0 / 3.0, "fan_in", "uniform"))
# torch's ConvTranspose2d takes fan_in from the weight's axis 1, which is the OUTPUT
# channel axis; our (kh, kw, in, out) kernel has it last.
_torch_transpose_kernel_init = compiled_init(nnx.initializers.variance_scaling(
    1.0 / 3.0, "fan_in", "uniform", in_axis=-1, out_axis=-2
))


@functools.partial(jax.jit, static_argnums=(1, 2, 3))
def _uniform_bias(key, shape, dtype, bound):
    return jax.random.uniform(key, shape, dtype, -bound, bound)


def _torch_bias_init(fan_in: int):
    bound = 1.0 / math.sqrt(fan_in)

    def init(key, shape, dtype=jnp.float32):
        return _uniform_bias(key, tuple(shape), dtype, bound)

    return init


class SameConv(nnx.Conv):
    """``nnx.Conv`` with stride 1 and ``kernel // 2`` zero padding, whose float32 calls on a
    single CPU device run on oneDNN (``fnaf_jax.kernels.onednn``: 2-3x XLA's CPU speed in
    training); elsewhere it is ``nnx.Conv`` unchanged. Same parameters either way."""

    def __call__(self, inputs, out_sharding=None):
        if onednn.use_for(inputs, self.in_features):
            y = onednn.conv_same(inputs, self.kernel[...])
            return y if self.bias is None else y + self.bias[...]
        return super().__call__(inputs, out_sharding)


def _conv(in_chans: int, out_chans: int, kernel: int, *, bias: bool, rngs: nnx.Rngs) -> SameConv:
    """A torch-like ``Conv2d(kernel, padding=kernel//2)`` in NHWC (kernel HWIO)."""
    pad = kernel // 2
    return SameConv(
        in_chans,
        out_chans,
        (kernel, kernel),
        padding=((pad, pad), (pad, pad)),
        use_bias=bias,
        precision=PRECISION,
        kernel_init=_torch_kernel_init,
        bias_init=_torch_bias_init(in_chans * kernel * kernel),
        rngs=rngs,
    )


def _dropout2d(drop_prob: float, rngs: nnx.Rngs) -> nnx.Dropout:
    # Broadcasting the mask over H and W drops whole channels, as torch's Dropout2d.
    return nnx.Dropout(
        drop_prob,
        broadcast_dims=(1, 2),
        deterministic=True,
        rngs=rngs if drop_prob > 0 else None,
    )


def _normalized(x, eps: float = INSTANCE_NORM_EPS):
    """``(x - mean) / std`` per sample and channel (biased variance), and the ``1 / std``."""
    centered = x - x.mean(axis=(1, 2), keepdims=True)
    inv_std = jax.lax.rsqrt(jnp.square(centered).mean(axis=(1, 2), keepdims=True) + eps)
    return centered * inv_std, inv_std


def instance_norm(x, eps: float = INSTANCE_NORM_EPS):
    """``InstanceNorm2d`` without affine parameters: per sample and channel, biased variance."""
    return _normalized(x, eps)[0]


def _activation(x, negative_slope: float):
    return jax.nn.relu(x) if negative_slope == 0 else jax.nn.leaky_relu(x, negative_slope)


def norm_activation(x, negative_slope: float):
    """``_activation(instance_norm(x), negative_slope)`` with a hand-written gradient: on a
    single CPU device with a leaky slope, the native kernel (``fnaf_jax.kernels.norm``),
    else ``fused_norm_activation`` in XLA."""
    if norm.use_for(x, negative_slope):
        return norm.norm_leaky_relu(x, negative_slope, INSTANCE_NORM_EPS)
    return fused_norm_activation(x, negative_slope)


@functools.partial(jax.custom_vjp, nondiff_argnums=(1,))
def fused_norm_activation(x, negative_slope: float):
    """``_activation(instance_norm(x), negative_slope)`` in XLA with a hand-written gradient.

    Autodiff keeps the centred input, the normalised map and the activation mask and
    walks them in several passes; this keeps only the output and the per-channel
    1/std, and its backward pass is two fused reductions and one element-wise pass (the
    U-Net train step on a CPU: 16 % faster). For a leaky slope the normalised map is read
    back from the output (the activation keeps signs and divides back to within one
    rounding); a ReLU keeps the normalised map instead.
    """
    return _norm_activation_fwd(x, negative_slope)[0]


def _norm_activation_fwd(x, negative_slope):
    z, inv_std = _normalized(x)
    y = jnp.where(z > 0, z, negative_slope * z)
    # a ReLU's output loses the negative half of z, which the gradient needs: keep z
    return y, (z if negative_slope == 0 else y, inv_std)


def _norm_activation_bwd(negative_slope, residuals, g):
    kept, inv_std = residuals
    positive = kept > 0
    z = kept if negative_slope == 0 else jnp.where(positive, kept, kept / negative_slope)
    gz = jnp.where(positive, g, negative_slope * g)  # the gradient at the normalised map z
    # d/dz of (x - mean) / std, applied to gz: gz - mean(gz) - z * mean(gz * z)
    mean_g = gz.mean(axis=(1, 2), keepdims=True)
    mean_gz = (gz * z).mean(axis=(1, 2), keepdims=True)
    return (inv_std * (gz - mean_g - z * mean_gz),)


fused_norm_activation.defvjp(_norm_activation_fwd, _norm_activation_bwd)


class ConvBlock(nnx.Module):
    """[3x3 conv, instance norm, (leaky) ReLU, channel dropout] x 2."""

    def __init__(
        self,
        in_chans: int,
        out_chans: int,
        drop_prob: float,
        *,
        bias: bool,
        negative_slope: float,
        rngs: nnx.Rngs,
    ):
        self.conv1 = _conv(in_chans, out_chans, 3, bias=bias, rngs=rngs)
        self.conv2 = _conv(out_chans, out_chans, 3, bias=bias, rngs=rngs)
        self.dropout = _dropout2d(drop_prob, rngs)
        self.negative_slope = negative_slope

    def __call__(self, x):
        for conv in (self.conv1, self.conv2):
            x = self.dropout(norm_activation(conv(x), self.negative_slope))
        return x


def upsample_2x2(x, kernel):
    """``ConvTranspose2d(kernel_size=2, stride=2)`` without bias; ``kernel`` is (2, 2, in, out).

    With stride equal to the kernel size the output pixels do not overlap:
    ``out[2i+a, 2j+b, o] = sum_c x[i, j, c] * kernel[a, b, c, o]``, one matmul and a reshape
    in XLA; on a single CPU device oneDNN's transposed convolution, whose gradient needs
    no layout copy (XLA's spends a third of the up-sampling's time transposing).
    """
    if onednn.use_for(x, x.shape[-1]):
        return onednn.conv_transpose(x, kernel)
    n, h, w, _ = x.shape
    y = jnp.einsum("nhwc,abco->nhawbo", x, kernel, precision=PRECISION)
    return y.reshape(n, 2 * h, 2 * w, kernel.shape[-1])


class TransposeConvBlock(nnx.Module):
    """2x2 stride-2 transposed conv (no bias), instance norm, LeakyReLU 0.2."""

    def __init__(self, in_chans: int, out_chans: int, *, rngs: nnx.Rngs):
        self.kernel = nnx.Param(_torch_transpose_kernel_init(rngs.params(), (2, 2, in_chans, out_chans)))

    def __call__(self, x):
        return norm_activation(upsample_2x2(x, self.kernel[...]), 0.2)


def _pool_2x2(x, reduce):
    """2x2 stride-2 pooling; odd rows/columns at the bottom/right are dropped (floor)."""
    n, h, w, c = x.shape
    x = x[:, : h // 2 * 2, : w // 2 * 2]
    return reduce(x.reshape(n, h // 2, 2, w // 2, 2, c), axis=(2, 4))


def avg_pool_2x2(x):
    return _pool_2x2(x, jnp.mean)


def max_pool_2x2(x):
    return _pool_2x2(x, jnp.max)


def _linear_taps(n_in: int, n_out: int):
    """Source indices and weights of torch's linear resize (align_corners=False, no antialias).

    ``src = max(scale * (dst + 0.5) - 0.5, 0)`` with ``scale = float32(n_in / n_out)``, taps
    ``floor(src)`` and the next pixel (clamped to the edge), weight ``src - floor(src)``.
    torch's CPU kernel evaluates ``src`` in float32 with a fused multiply-add: the product
    of two float32 numbers is exact in float64, so one rounding to float32 reproduces it
    bit for bit (two roundings would move some weights by one ulp, ~1e-6).
    """
    scale = np.float64(np.float32(n_in) / np.float32(n_out))
    src = (scale * (np.arange(n_out) + 0.5) - 0.5).astype(np.float32)
    src = np.maximum(src, np.float32(0))
    i0 = np.minimum(np.floor(src).astype(np.int32), n_in - 1)
    i1 = np.minimum(i0 + 1, n_in - 1)
    return i0, i1, (src - i0).astype(np.float32)


def resize_bilinear(x, height: int, width: int):
    """``F.interpolate(x, size=(height, width), mode="bilinear", align_corners=False)`` in NHWC."""
    for axis, size in ((1, height), (2, width)):
        i0, i1, lam = _linear_taps(x.shape[axis], size)
        lam = lam.reshape((-1,) + (1,) * (x.ndim - axis - 1))
        x = jnp.take(x, i0, axis=axis) * (1 - lam) + jnp.take(x, i1, axis=axis) * lam
    return x


def _check_input(name: str, x, in_chans: int, num_pool_layers: int):
    if x.ndim != 4 or x.shape[-1] != in_chans:
        raise DataError(f"{name}: expected an NHWC input with {in_chans} channel(s), got shape {x.shape}")
    smallest = 2**num_pool_layers
    if min(x.shape[1:3]) < smallest:
        raise DataError(
            f"{name}: input of {x.shape[1]}x{x.shape[2]} pixels is too small for "
            f"{num_pool_layers} pooling layers (need at least {smallest}x{smallest})"
        )


class _ZScoredReconstruction:
    """What both U-Nets share: their size attributes, and ``reconstruct`` (z-score ``|u|``
    per sample, run, undo it)."""

    def _set_sizes(self, arch, in_chans, out_chans, chans, num_pool_layers, drop_prob):
        _check_sizes(arch, in_chans, out_chans, chans, num_pool_layers, drop_prob)
        self.in_chans, self.out_chans = in_chans, out_chans
        self.chans, self.num_pool_layers, self.drop_prob = chans, num_pool_layers, drop_prob

    def reconstruct(self, u, mask=None, metadata=None):
        """``(N, H, W)`` zero-filled complex image -> ``(N, H, W)`` magnitude in the units of ``|u|``.

        ``mask`` and ``metadata`` are accepted for the common interface and unused.
        """
        if self.in_chans != 1 or self.out_chans != 1:
            raise ConfigError(
                f"{type(self).__name__}.reconstruct needs in_chans = out_chans = 1, "
                f"got {self.in_chans} and {self.out_chans}"
            )
        magnitude = complex_abs(jnp.asarray(u)).astype(jnp.float32)
        z, mean, std = normalize_instance(magnitude)
        out = self(z[..., None])[..., 0]
        return unnormalize(out, mean, std)


def _encoder(block, in_chans: int, chans: int, num_pool_layers: int):
    """The down-sampling blocks (width doubling after the first); returns (blocks, width)."""
    down = [block(in_chans, chans)]
    ch = chans
    for _ in range(num_pool_layers - 1):
        down.append(block(ch, ch * 2))
        ch *= 2
    return nnx.List(down), ch


class Unet(_ZScoredReconstruction, nnx.Module):
    """fastMRI's U-Net (``fastmri.models.Unet``), NHWC."""

    def __init__(
        self,
        in_chans: int = 1,
        out_chans: int = 1,
        chans: int = 32,
        num_pool_layers: int = 4,
        drop_prob: float = 0.0,
        *,
        rngs: nnx.Rngs,
    ):
        self._set_sizes("unet", in_chans, out_chans, chans, num_pool_layers, drop_prob)

        def block(cin, cout):
            return ConvBlock(cin, cout, drop_prob, bias=False, negative_slope=0.2, rngs=rngs)

        self.down_sample_layers, ch = _encoder(block, in_chans, chans, num_pool_layers)
        self.conv = block(ch, ch * 2)
        transpose, up = [], []
        for _ in range(num_pool_layers):
            transpose.append(TransposeConvBlock(ch * 2, ch, rngs=rngs))
            up.append(block(ch * 2, ch))
            ch //= 2
        self.up_transpose_conv = nnx.List(transpose)
        self.up_conv = nnx.List(up)
        self.final = _conv(chans, out_chans, 1, bias=True, rngs=rngs)

    def __call__(self, x):
        _check_input("Unet", x, self.in_chans, self.num_pool_layers)
        skips = []
        for layer in self.down_sample_layers:
            x = layer(x)
            skips.append(x)
            x = avg_pool_2x2(x)
        x = self.conv(x)
        for transpose_conv, conv in zip(self.up_transpose_conv, self.up_conv):
            skip = skips.pop()
            x = transpose_conv(x)
            # Odd sizes were floored by the pooling: mirror one row/column back.
            pad_h, pad_w = skip.shape[1] - x.shape[1], skip.shape[2] - x.shape[2]
            if pad_h or pad_w:
                x = jnp.pad(x, ((0, 0), (0, pad_h), (0, pad_w), (0, 0)), mode="reflect")
            x = conv(jnp.concatenate([x, skip], axis=-1))
        return self.final(x)


class UnetV0(_ZScoredReconstruction, nnx.Module):
    """The 2020 U-Net of the FNAF code (``UnetModel``), NHWC."""

    def __init__(
        self,
        in_chans: int = 1,
        out_chans: int = 1,
        chans: int = 32,
        num_pool_layers: int = 4,
        drop_prob: float = 0.0,
        *,
        rngs: nnx.Rngs,
    ):
        self._set_sizes("unet-v0", in_chans, out_chans, chans, num_pool_layers, drop_prob)

        def block(cin, cout):
            return ConvBlock(cin, cout, drop_prob, bias=True, negative_slope=0.0, rngs=rngs)

        self.down_sample_layers, ch = _encoder(block, in_chans, chans, num_pool_layers)
        self.conv = block(ch, ch)  # the bottleneck keeps the width (unlike fastMRI's Unet)
        up = []
        for _ in range(num_pool_layers - 1):
            up.append(block(ch * 2, ch // 2))
            ch //= 2
        up.append(block(ch * 2, ch))
        self.up_sample_layers = nnx.List(up)
        self.head = nnx.List(
            [
                _conv(ch, ch // 2, 1, bias=True, rngs=rngs),
                _conv(ch // 2, out_chans, 1, bias=True, rngs=rngs),
                _conv(out_chans, out_chans, 1, bias=True, rngs=rngs),
            ]
        )

    def __call__(self, x):
        _check_input("UnetV0", x, self.in_chans, self.num_pool_layers)
        skips = []
        for layer in self.down_sample_layers:
            x = layer(x)
            skips.append(x)
            x = max_pool_2x2(x)
        x = self.conv(x)
        for layer in self.up_sample_layers:
            skip = skips.pop()
            x = resize_bilinear(x, skip.shape[1], skip.shape[2])
            x = layer(jnp.concatenate([x, skip], axis=-1))
        for conv in self.head:  # no activation between the 1x1 convs, as in the original
            x = conv(x)
        return x


def _check_sizes(arch, in_chans, out_chans, chans, num_pool_layers, drop_prob):
    for name, value in (("in_chans", in_chans), ("out_chans", out_chans), ("chans", chans)):
        if not isinstance(value, (int, np.integer)) or value < 1:
            raise ConfigError(f"{arch}: {name} must be a positive integer, got {value!r}")
    if not isinstance(num_pool_layers, (int, np.integer)) or num_pool_layers < 1:
        raise ConfigError(f"{arch}: num_pool_layers must be a positive integer, got {num_pool_layers!r}")
    if arch == "unet-v0" and chans < 2:
        raise ConfigError(f"{arch}: chans must be at least 2 (the head halves it), got {chans}")
    if not 0.0 <= float(drop_prob) < 1.0:
        raise ConfigError(f"{arch}: drop_prob must be in [0, 1), got {drop_prob!r}")
