"""Instance norm + leaky ReLU on NHWC float32 as one native CPU kernel (``instance_norm.cc``).

XLA's CPU fusions of this pair walk the activations five times forward and seven times
backward (the reductions, the centred copy, the mask, the output); the kernel reads its
input twice and writes once each way, on every core. It is part of the native library of
``fnaf_jax.kernels.onednn`` and follows the same switch (``FNAF_CPU_CONV``): a single CPU
device and a library that builds. The gradient keeps only the output and the per-channel
``1 / std`` (the normalised map is read back from the output, which a leaky slope keeps
invertible), so it serves leaky slopes only; a plain ReLU stays on XLA.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from fnaf_jax.kernels import onednn


def use_for(x, negative_slope: float) -> bool:
    """Whether ``norm_leaky_relu`` should serve ``x`` here."""
    return x.ndim == 4 and x.dtype == jnp.float32 and negative_slope > 0 and onednn.enabled()


def _forward(x, negative_slope, eps):
    n, _, _, c = x.shape
    return onednn.call("norm_forward", [x.shape, (n, c)], x,
                       slope=np.float32(negative_slope), eps=np.float32(eps))


@functools.partial(jax.custom_vjp, nondiff_argnums=(1, 2))
def norm_leaky_relu(x, negative_slope: float, eps: float):
    """``leaky_relu((x - mean) / sqrt(var + eps), negative_slope)``, mean and biased variance
    per sample and channel over the image (``InstanceNorm2d`` then ``LeakyReLU``)."""
    return _forward(x, negative_slope, eps)[0]


def _fwd(x, negative_slope, eps):
    y, inv_std = _forward(x, negative_slope, eps)
    return y, (y, inv_std)


def _bwd(negative_slope, eps, residuals, g):
    y, inv_std = residuals
    return (onednn.call("norm_backward", y.shape, y, inv_std, g, slope=np.float32(negative_slope)),)


norm_leaky_relu.defvjp(_fwd, _bwd)
