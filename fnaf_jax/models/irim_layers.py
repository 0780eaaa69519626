"""Building blocks of the invertible RIM: pure functions on parameter dicts, and NNX modules.

Each layer exists twice: as a pure function ``f(params, x)`` on a dict of arrays (what the
memory-free backward pass in ``fnaf_jax.models.invertible`` differentiates and inverts),
and as an NNX module that owns the parameters and hands them out with ``.params()``.
Parameters keep the PyTorch shapes of the released i-RIM (OIHW conv weights, IOHW
transposed-conv weights, weight-norm gains shaped (A, 1, 1, 1)), so converting a
checkpoint is a renaming. Feature maps are NHWC.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
from flax import nnx

from fnaf_jax.kernels import onednn
from fnaf_jax.physics import apply_column_mask, fft2c, ifft2c

HIGHEST = jax.lax.Precision.HIGHEST
_CONV_DIMS = ("NHWC", "OIHW", "NHWC")


# ----------------------------------------------------------------------------------------
# Pure functions


def weight_norm(v, g):
    """``g * v / ||v||`` with the norm over every axis but 0 (PyTorch ``weight_norm``)."""
    norm = jnp.sqrt(jnp.sum(v * v, axis=tuple(range(1, v.ndim)), keepdims=True))
    return g * v / norm


def conv_strided(x, w, bias, stride):
    """Conv with kernel = stride (no overlap, VALID): leftover rows/columns are dropped."""
    y = jax.lax.conv_general_dilated(
        x, w, (stride, stride), "VALID", dimension_numbers=_CONV_DIMS, precision=HIGHEST
    )
    return y if bias is None else y + bias


def conv3x3(x, w, bias):
    """3x3 conv, stride 1, zero padding 1 (on oneDNN on a single CPU device, as the U-Net's)."""
    if onednn.use_for(x, w.shape[1]):
        y = onednn.conv_same(x, w, "OIHW")
    else:
        y = jax.lax.conv_general_dilated(
            x, w, (1, 1), ((1, 1), (1, 1)), dimension_numbers=_CONV_DIMS, precision=HIGHEST
        )
    return y if bias is None else y + bias


def conv_transpose_strided(x, w, out_hw):
    """Transposed conv with kernel = stride = d and IOHW weight ``w`` (no bias).

    ``out[d*i + a, d*j + b, o] = sum_c x[i, j, c] * w[c, o, a, b]``: the blocks do not
    overlap, so it is one einsum and a reshape. The result is zero-padded at the
    bottom/right to ``out_hw`` (PyTorch's ``output_size`` with no bias adds zeros).
    """
    n, h, wd, _ = x.shape
    _, o, d, _ = w.shape
    y = jnp.einsum("nijc,coab->niajbo", x, w, precision=HIGHEST).reshape(
        n, h * d, wd * d, o
    )
    pad_h, pad_w = out_hw[0] - h * d, out_hw[1] - wd * d
    return jnp.pad(y, ((0, 0), (0, pad_h), (0, pad_w), (0, 0)))


def residual_block(p, x, dilation, use_glu):
    """F of a coupling layer (and the output head): strided conv, 3x3 conv, transposed conv.

    ``p`` has ``l1``, ``l2``, ``l3``, each with ``weight_v``, ``weight_g`` (and ``bias``
    for l1, l2). With ``use_glu`` the last conv gives twice the channels and the result
    is ``first half * sigmoid(second half)``.
    """
    l1, l2, l3 = p["l1"], p["l2"], p["l3"]
    h = conv_strided(
        x, weight_norm(l1["weight_v"], l1["weight_g"]), l1["bias"], dilation
    )
    h = jax.nn.relu(h)
    h = jax.nn.relu(conv3x3(h, weight_norm(l2["weight_v"], l2["weight_g"]), l2["bias"]))
    y = conv_transpose_strided(
        h, weight_norm(l3["weight_v"], l3["weight_g"]), x.shape[1:3]
    )
    if use_glu:
        a, b = jnp.split(y, 2, axis=-1)
        y = a * jax.nn.sigmoid(b)
    return y


def householder_matrix(vectors):
    """``W = U_0 U_1 ... U_k`` with ``U_j = I - 2 v v^T / v^T v``, ``v = vectors[j, :, 0]``."""
    n = vectors.shape[1]
    w = jnp.eye(n, dtype=vectors.dtype)
    for j in range(vectors.shape[0]):
        v = vectors[j, :, 0]
        u = jnp.eye(n, dtype=vectors.dtype) - 2.0 * jnp.outer(v, v) / jnp.dot(
            v, v, precision=HIGHEST
        )
        w = jnp.matmul(w, u, precision=HIGHEST)
    return w


def mix_channels(x, w):
    """1x1 conv with weight ``w[o, i]`` on the channels of an NHWC map."""
    return jnp.einsum("nhwi,oi->nhwo", x, w, precision=HIGHEST)


def additive_coupling(p, x, n_channels, dilation):
    """``x[h:n] += F(x[:h])`` on the first n = ``n_channels`` channels (h = n // 2)."""
    half = n_channels // 2
    update = residual_block(p, x[..., :half], dilation, use_glu=True)
    return jnp.concatenate(
        [x[..., :half], x[..., half:n_channels] + update, x[..., n_channels:]], -1
    )


def additive_coupling_inverse(p, y, n_channels, dilation):
    """``y[h:n] -= F(y[:h])``: the left half is unchanged, so F sees the same input."""
    half = n_channels // 2
    update = residual_block(p, y[..., :half], dilation, use_glu=True)
    return jnp.concatenate(
        [y[..., :half], y[..., half:n_channels] - update, y[..., n_channels:]], -1
    )


def additive_coupling_backward(p, y, ct, n_channels, dilation):
    """Inverse and VJP of ``additive_coupling`` from its output, with ONE evaluation of F.

    Returns ``(x, grad_p, grad_x)``: F(y[:h]) both undoes the update and is differentiated
    (the left half passes unchanged, so F's input is known from the output).
    """
    half = n_channels // 2
    left = y[..., :half]
    update, f_vjp = jax.vjp(
        lambda q, v: residual_block(q, v, dilation, use_glu=True), p, left
    )
    x = jnp.concatenate(
        [left, y[..., half:n_channels] - update, y[..., n_channels:]], -1
    )
    grad_p, grad_left = f_vjp(ct[..., half:n_channels])
    grad_x = jnp.concatenate([ct[..., :half] + grad_left, ct[..., half:]], -1)
    return x, grad_p, grad_x


def coupling_forward(p, x, n_channels, dilation):
    """One i-RIM layer: mix with W, ``right += F(left)`` on the first ``n_channels``, mix with W^T."""
    w = householder_matrix(p["householder"])
    x = additive_coupling(p["update"], mix_channels(x, w), n_channels, dilation)
    return mix_channels(x, w.T)


def coupling_inverse(p, y, n_channels, dilation):
    """Exact inverse of ``coupling_forward`` (W is orthogonal, the coupling is additive)."""
    w = householder_matrix(p["householder"])
    y = additive_coupling_inverse(p["update"], mix_channels(y, w), n_channels, dilation)
    return mix_channels(y, w.T)


def householder_mix(p, x, transpose=False):
    """``W x`` (or ``W^T x``) with W from the Householder vectors ``p``."""
    w = householder_matrix(p)
    return mix_channels(x, w.T if transpose else w)


def dc_gradient(x, data, multiplicity):
    """Gradient of the data term, ``A(x) - y/gamma``, for the first 2m channels of ``x``.

    ``data = (ys, mask)``: ys (N, H, W) complex, the zero-filled image divided by gamma,
    and mask (N, W). Channels [0, m) are real parts, [m, 2m) imaginary parts.
    Returns (N, H, W, 2m) real: [Re g x m, Im g x m].
    """
    ys, mask = data
    m = multiplicity
    z = jax.lax.complex(x[..., :m], x[..., m : 2 * m])
    z = jnp.moveaxis(
        z, -1, 1
    )  # (N, m, H, W): the FFT helpers work on the last two axes
    g = ifft2c(apply_column_mask(fft2c(z), mask[:, None, :])) - ys[:, None]
    g = jnp.moveaxis(g, 1, -1)
    return jnp.concatenate([g.real, g.imag], -1).astype(x.dtype)


def dc_forward(p, x, data, multiplicity):
    """Data-consistency update (no parameters): channels [2m, 4m) += A(x[:2m]) - y."""
    del p
    m = multiplicity
    g = dc_gradient(x, data, m)
    return jnp.concatenate(
        [x[..., : 2 * m], x[..., 2 * m : 4 * m] + g, x[..., 4 * m :]], -1
    )


def dc_inverse(p, y, data, multiplicity):
    """Inverse of ``dc_forward``: the first 2m channels are unchanged, so subtract."""
    del p
    m = multiplicity
    g = dc_gradient(y, data, m)
    return jnp.concatenate(
        [y[..., : 2 * m], y[..., 2 * m : 4 * m] - g, y[..., 4 * m :]], -1
    )


# ----------------------------------------------------------------------------------------
# NNX modules (parameter owners)


@functools.partial(jax.jit, static_argnums=(1, 2, 3))
def _init_weight_norm(key, shape, n_bias, bound):
    """PyTorch's default conv init, U(+-bound), and ``g = ||v||`` (one compiled call per shape,
    instead of one per eager op: model construction stays fast)."""
    k_v, k_b = jax.random.split(key)
    v = jax.random.uniform(k_v, shape, jnp.float32, -bound, bound)
    g = jnp.sqrt(jnp.sum(v * v, axis=(1, 2, 3), keepdims=True))
    b = jax.random.uniform(k_b, (n_bias,), jnp.float32, -bound, bound)
    return v, g, b


@functools.partial(jax.jit, static_argnums=(1,))
def _init_normal(key, shape):
    return jax.random.normal(key, shape, jnp.float32)


class WeightNormConv(nnx.Module):
    """Weight-normed conv (OIHW ``weight_v``) or transposed conv (IOHW ``weight_v``).

    ``weight_g`` is shaped (A, 1, 1, 1) with A = axis 0 of ``weight_v`` and starts at
    ``||v||``, as ``torch.nn.utils.weight_norm`` initialises it.
    """

    def __init__(
        self, n_in, n_out, kernel, *, transposed=False, bias=True, rngs: nnx.Rngs
    ):
        shape = (
            (n_in, n_out, kernel, kernel)
            if transposed
            else (n_out, n_in, kernel, kernel)
        )
        # PyTorch's default: U(+-1/sqrt(fan_in)) with fan_in = shape[1] * k * k.
        bound = 1.0 / math.sqrt(shape[1] * kernel * kernel)
        v, g, b = _init_weight_norm(rngs.params(), shape, n_out, bound)
        self.weight_v = nnx.Param(v)
        self.weight_g = nnx.Param(g)
        self.bias = nnx.Param(b) if bias else None

    def params(self) -> dict:
        out = {"weight_v": self.weight_v[...], "weight_g": self.weight_g[...]}
        out["bias"] = None if self.bias is None else self.bias[...]
        return out


class ResidualBlock(nnx.Module):
    """``ResidualBlockPixelshuffle``: weight-normed strided conv, 3x3 conv, transposed conv."""

    def __init__(
        self, n_input, n_output, n_hidden, dilation=1, use_glu=True, *, rngs: nnx.Rngs
    ):
        self.dilation = dilation
        self.use_glu = use_glu
        n_last = 2 * n_output if use_glu else n_output
        self.l1 = WeightNormConv(n_input, n_hidden, dilation, rngs=rngs)
        self.l2 = WeightNormConv(n_hidden, n_hidden, 3, rngs=rngs)
        self.l3 = WeightNormConv(
            n_hidden, n_last, dilation, transposed=True, bias=False, rngs=rngs
        )

    def params(self) -> dict:
        return {"l1": self.l1.params(), "l2": self.l2.params(), "l3": self.l3.params()}

    def __call__(self, x):
        return residual_block(self.params(), x, self.dilation, self.use_glu)


class Householder1x1(nnx.Module):
    """Orthogonal 1x1 channel mixing from ``n_projections`` Householder vectors (k, C, 1)."""

    def __init__(self, n_channels, n_projections=3, *, rngs: nnx.Rngs):
        k = min(n_projections, n_channels)
        self.weights = nnx.Param(_init_normal(rngs.params(), (k, n_channels, 1)))

    def matrix(self):
        return householder_matrix(self.weights[...])


class CouplingLayer(nnx.Module):
    """Additive coupling on the first ``n_channels`` state channels (``RevNetLayer``)."""

    def __init__(self, n_channels, n_hidden, dilation, *, rngs: nnx.Rngs):
        self.n_channels = n_channels
        self.dilation = dilation
        n_left = n_channels // 2
        self.update_right = ResidualBlock(
            n_left, n_channels - n_left, n_hidden, dilation, rngs=rngs
        )


class InvertibleUnet(nnx.Module):
    """One i-RIM step: coupling layers, each wrapped in its own Householder mixing."""

    def __init__(
        self, n_channels, n_hidden, dilations, n_householder=3, *, rngs: nnx.Rngs
    ):
        self.layers = nnx.List(
            [
                CouplingLayer(c, h, d, rngs=rngs)
                for c, h, d in zip(n_channels, n_hidden, dilations)
            ]
        )
        self.embeddings = nnx.List(
            [
                Householder1x1(n_channels[0], n_householder, rngs=rngs)
                for _ in n_channels
            ]
        )

    def layer_params(self) -> list[dict]:
        """One dict per layer: ``{"householder": (k, C, 1), "update": residual-block params}``."""
        return [
            {"householder": emb.weights[...], "update": layer.update_right.params()}
            for layer, emb in zip(self.layers, self.embeddings)
        ]

    def layer_specs(self) -> list[tuple[int, int]]:
        """Static ``(n_channels, dilation)`` of each layer."""
        return [(layer.n_channels, layer.dilation) for layer in self.layers]
