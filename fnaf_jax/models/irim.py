"""The invertible Recurrent Inference Machine (i-RIM, Putzky & Welling 2019) in Flax NNX.

The single-coil fastMRI model of ``pputzky/irim_fastMRI`` (tag 0.1), rebuilt so that a
converted checkpoint gives the same numbers (see ``tests/golden/README.md``, i-RIM):

1. ``y`` (zero-filled complex image, full field of view) is divided by ``gamma``, the
   unbiased std of its central 320x320 crop (re and im together) + 1e-6;
2. state = [Re y x m, Im y x m, zeros, ..., metadata one-hot in the last 8 channels];
3. data consistency (DC), then per step: the step's coupling layers, DC;
4. the head maps the state to (re, im), times gamma; centre crop, magnitude.

Every layer of step 3 is invertible, so ``inverse`` recovers the initial state from the
final one, and with ``memory_free=True`` gradients are computed by inversion instead of
stored activations (``fnaf_jax.models.invertible``).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from flax import nnx

from fnaf_jax.errors import ConfigError, DataError
from fnaf_jax.models import invertible
from fnaf_jax.models.irim_layers import (
    InvertibleUnet,
    ResidualBlock,
    additive_coupling,
    additive_coupling_backward,
    additive_coupling_inverse,
    dc_forward,
    dc_inverse,
    householder_mix,
    residual_block,
)
from fnaf_jax.physics import center_crop

N_METADATA = (
    8  # scanner x fat suppression one-hot (fnaf_jax.data.fastmri.metadata_onehot)
)
GAMMA_CROP = 320  # RescaleByStd's hard-coded crop
GAMMA_SLACK = 1e-6

#: The released single-coil configuration (irim_fastMRI README / SPEC section 6).
RELEASED_CONFIG = {
    "arch": "irim",
    "n_steps": 8,
    "n_hidden": [64] * 12,
    "n_network_hidden": [64, 64, 128, 128, 256, 1024, 1024, 256, 128, 128, 64, 64],
    "dilations": [1, 1, 2, 2, 4, 8, 8, 4, 2, 2, 1, 1],
    "multiplicity": 4,
    "shared_weights": False,
    "parametric_output": True,
}


def _as_list(value, depth, name):
    if isinstance(value, int):
        if depth is None:
            raise ConfigError(
                f"i-RIM config: {name} is an int, so 'depth' must be given"
            )
        return [value] * depth
    try:
        return [int(v) for v in value]
    except TypeError:
        raise ConfigError(
            f"i-RIM config: {name} must be an int or a list of ints, got {value!r}"
        ) from None


def scale_gamma(y):
    """Per-sample ``gamma``: unbiased std of the centre crop (re, im together) + 1e-6.

    ``y`` is complex (N, H, W); the crop is 320x320, or the whole image when smaller
    (the original asserts there; small images are allowed here for tests and crops).
    Returns (N,) float32.
    """
    h, w = y.shape[-2:]
    crop = center_crop(y, (min(GAMMA_CROP, h), min(GAMMA_CROP, w)))
    values = jnp.stack([crop.real, crop.imag], axis=1).reshape(y.shape[0], -1)
    return jnp.std(values, axis=1, ddof=1) + GAMMA_SLACK


class IRIM(nnx.Module):
    """i-RIM for single-coil data: ``model(y, mask, metadata) -> image (N, crop, crop)``.

    Args (JSON-able, names as in the original's command line):
      n_steps: number of i-RIM steps (time steps).
      n_hidden: state channels seen by each coupling layer (int with ``depth``, or list);
        ``n_hidden[0]`` is the state size and must be >= 4 * multiplicity + 8.
      n_network_hidden: hidden width of each layer's residual block.
      dilations: kernel = stride of each layer's down/up-sampling convs.
      multiplicity: copies of the image estimate in the state.
      shared_weights: one set of step weights used for every step.
      parametric_output: learned head (else the release's fixed read-out of channels
        0 and n/2 as real and imaginary part).
      depth: number of layers when ``n_hidden`` etc. are ints.
      resolution: output crop (min(resolution, H, W)).
      memory_free: gradients by inversion (constant activation memory in depth).
    """

    def __init__(
        self,
        n_steps: int = 8,
        n_hidden=(64,) * 12,
        n_network_hidden=(64, 64, 128, 128, 256, 1024, 1024, 256, 128, 128, 64, 64),
        dilations=(1, 1, 2, 2, 4, 8, 8, 4, 2, 2, 1, 1),
        multiplicity: int = 4,
        shared_weights: bool = False,
        parametric_output: bool = True,
        depth: int | None = None,
        resolution: int = 320,
        memory_free: bool = True,
        n_householder: int = 3,
        *,
        rngs: nnx.Rngs,
    ):
        n_hidden = _as_list(n_hidden, depth, "n_hidden")
        depth = len(n_hidden)
        n_network_hidden = _as_list(n_network_hidden, depth, "n_network_hidden")
        dilations = _as_list(dilations, depth, "dilations")
        if not (len(n_hidden) == len(n_network_hidden) == len(dilations)) or depth == 0:
            raise ConfigError(
                "i-RIM config: n_hidden, n_network_hidden and dilations need the same nonzero "
                f"length, got {len(n_hidden)}, {len(n_network_hidden)}, {len(dilations)}"
            )
        if n_steps < 1 or multiplicity < 1:
            raise ConfigError(
                f"i-RIM config: n_steps ({n_steps}) and multiplicity ({multiplicity}) must be >= 1"
            )
        if n_hidden[0] < 4 * multiplicity + N_METADATA:
            raise ConfigError(
                f"i-RIM config: n_hidden[0] = {n_hidden[0]} state channels cannot hold 2m image, "
                f"2m gradient and {N_METADATA} metadata channels (m = {multiplicity}): need >= "
                f"{4 * multiplicity + N_METADATA}"
            )
        if any(c > n_hidden[0] or c < 2 for c in n_hidden) or any(
            d < 1 for d in dilations
        ):
            raise ConfigError(
                f"i-RIM config: every n_hidden must be in [2, {n_hidden[0]}] and every dilation >= 1"
            )
        self.n_steps = int(n_steps)
        self.n_latent = n_hidden[0]
        self.multiplicity = int(multiplicity)
        self.shared_weights = bool(shared_weights)
        self.parametric_output = bool(parametric_output)
        self.resolution = int(resolution)
        self.memory_free = bool(memory_free)
        n_cells = 1 if self.shared_weights else self.n_steps
        self.rnn = nnx.List(
            [
                InvertibleUnet(
                    n_hidden, n_network_hidden, dilations, n_householder, rngs=rngs
                )
                for _ in range(n_cells)
            ]
        )
        self.output_function = (
            ResidualBlock(self.n_latent, 2, self.n_latent, 1, use_glu=False, rngs=rngs)
            if self.parametric_output
            else None
        )

    # -- the invertible core ---------------------------------------------------------------

    def _chain(self):
        """Layer functions (forward, inverse, optional fused backward) and their parameters:
        DC, then per step its coupling layers (mix, couple, unmix each) and DC."""
        dc_f = functools.partial(_dc_f, multiplicity=self.multiplicity)
        dc_i = functools.partial(_dc_i, multiplicity=self.multiplicity)
        forwards, inverses, backwards, params = [dc_f], [dc_i], [None], [{}]
        for t in range(self.n_steps):
            cell = self.rnn[0 if self.shared_weights else t]
            for (n_ch, dil), p in zip(cell.layer_specs(), cell.layer_params()):
                # A coupling layer W^T c(W x) enters the chain as three layers, so that the
                # memory-free backward pass of c can share one evaluation of F between
                # inversion and VJP (additive_coupling_backward).
                spec = {"n_channels": n_ch, "dilation": dil}
                forwards += [_mix, functools.partial(_couple_f, **spec), _unmix]
                inverses += [_unmix, functools.partial(_couple_i, **spec), _mix]
                backwards += [None, functools.partial(_couple_b, **spec), None]
                params += [p["householder"], p["update"], p["householder"]]
            forwards.append(dc_f)
            inverses.append(dc_i)
            backwards.append(None)
            params.append({})
        return forwards, inverses, backwards, params

    def run_core(self, x0, ys, mask):
        """Final state from the initial state ``x0`` (N, H, W, C); ``ys = y / gamma``."""
        forwards, inverses, backwards, params = self._chain()
        data = (ys, mask.astype(jnp.float32))
        if self.memory_free:
            run = invertible.memory_free_chain(forwards, inverses, backwards)
            return run(params, x0, data)
        return invertible.chain_forward(forwards, params, x0, data)

    def inverse(self, x_final, ys, mask):
        """Exact inverse of ``run_core``: the initial state from the final one."""
        _, inverses, _, params = self._chain()
        return invertible.chain_inverse(
            inverses, params, x_final, (ys, mask.astype(jnp.float32))
        )

    # -- input and output ------------------------------------------------------------------

    def _check_inputs(self, y, mask, metadata):
        if y.ndim != 3 or not jnp.iscomplexobj(y):
            raise DataError(
                f"i-RIM input y: expected complex (N, H, W), got {y.dtype} {y.shape}"
            )
        if mask.shape != (y.shape[0], y.shape[2]):
            raise DataError(
                f"i-RIM mask: expected (N, W) = {(y.shape[0], y.shape[2])}, got {mask.shape}"
            )
        if metadata is not None and metadata.shape != (y.shape[0], N_METADATA):
            raise DataError(
                f"i-RIM metadata: expected (N, {N_METADATA}) one-hot, got {metadata.shape}"
            )

    def initial_state(self, ys, metadata=None):
        """State (N, H, W, n_latent): [Re ys x m, Im ys x m, zeros, metadata in the last 8]."""
        n, h, w = ys.shape
        m = self.multiplicity
        re = jnp.repeat(ys.real[..., None], m, axis=-1)
        im = jnp.repeat(ys.imag[..., None], m, axis=-1)
        zeros = jnp.zeros((n, h, w, self.n_latent - 2 * m - N_METADATA), jnp.float32)
        if metadata is None:
            meta = jnp.zeros((n, h, w, N_METADATA), jnp.float32)
        else:
            meta = jnp.broadcast_to(
                metadata.astype(jnp.float32)[:, None, None, :], (n, h, w, N_METADATA)
            )
        return jnp.concatenate([re, im, zeros, meta], -1).astype(jnp.float32)

    def head(self, x_final):
        """Complex image estimate (N, H, W) in the scaled units, from the final state."""
        if self.parametric_output:
            out = residual_block(
                self.output_function.params(), x_final, 1, use_glu=False
            )
            return jax.lax.complex(out[..., 0], out[..., 1])
        # The release's fixed read-out chunks the whole state into (re, im) halves and
        # keeps the first channel of each: channels 0 and n_latent // 2.
        return jax.lax.complex(x_final[..., 0], x_final[..., self.n_latent // 2])

    def estimate(self, y, mask, metadata=None):
        """Complex estimate (N, H, W) over the full field of view, in the units of ``y``."""
        y = jnp.asarray(y)
        mask = jnp.asarray(mask)
        self._check_inputs(y, mask, metadata)
        y = y.astype(jnp.complex64)
        gamma = scale_gamma(y)[:, None, None]
        ys = y / gamma
        x = self.run_core(self.initial_state(ys, metadata), ys, mask)
        return self.head(x) * gamma

    def __call__(self, y, mask, metadata=None):
        """Magnitude image (N, c, c), c = min(resolution, H, W), centre-cropped."""
        est = self.estimate(y, mask, metadata)
        h, w = est.shape[-2:]
        return jnp.abs(
            center_crop(est, (min(self.resolution, h), min(self.resolution, w)))
        )

    def reconstruct(self, u, mask, metadata=None):
        """Common entry point (docs/interfaces.md): zero-filled complex ``u`` -> magnitude.

        ``metadata`` None means unknown scanner (zeros). On a 320x320 ``u`` the crop is
        the identity.
        """
        return self(u, mask, metadata)


# Layer functions with the chain signature f(params, x, data).


def _dc_f(p, x, data, multiplicity):
    return dc_forward(p, x, data, multiplicity)


def _dc_i(p, y, data, multiplicity):
    return dc_inverse(p, y, data, multiplicity)


def _mix(p, x, data):
    del data
    return householder_mix(p, x)


def _unmix(p, x, data):
    del data
    return householder_mix(p, x, transpose=True)


def _couple_f(p, x, data, n_channels, dilation):
    del data
    return additive_coupling(p, x, n_channels, dilation)


def _couple_i(p, y, data, n_channels, dilation):
    del data
    return additive_coupling_inverse(p, y, n_channels, dilation)


def _couple_b(p, y, data, ct, n_channels, dilation):
    del data
    return additive_coupling_backward(p, y, ct, n_channels, dilation)
