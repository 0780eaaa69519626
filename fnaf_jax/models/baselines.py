"""Reconstructions without a network, used as controls beside the models (SPEC 8).

Each is a pure ``recon_fn(u, mask, metadata) -> (N, h, w)`` like ``model.reconstruct``.
"""

from __future__ import annotations

import jax.numpy as jnp


def zero_filled(u, mask, metadata=None):
    """The zero-filled input ``|u|`` as the reconstruction: what under-sampling alone loses."""
    return jnp.abs(u)


BASELINES = {"zero-filled": zero_filled}
