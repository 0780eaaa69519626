"""The Task protocol: what the generic training loop needs from a model family.

A task turns dataset items into a batch of arrays (host side, numpy), defines the loss
of a model on such a batch (pure and jittable: the loop merges the model from its
graphdef/state inside the compiled step and calls ``task.loss``), and predicts images in
the units of ``target_raw`` for validation metrics. The U-Net task is
``fnaf_jax.train.unet_task.UnetTask``; ``fnaf_jax.train.robust.RobustTask`` wraps any task
to add the FNAF loss; the i-RIM task lives in ``fnaf_jax.train.irim_task``.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import jax
import numpy as np


@runtime_checkable
class Task(Protocol):
    """Adapter between one model family and the training loop (see docs/interfaces.md)."""

    #: ``SliceDataset`` transform the task reads: "unet" or "raw".
    transform: str

    def prepare_batch(self, items: list[dict], rng: np.random.Generator) -> dict[str, np.ndarray]:
        """Stack dataset items into a dict of numpy arrays (leading axis = batch).

        Host-side only (masks, crops, random choices drawn from ``rng``); the arrays are
        what ``loss`` and ``predict`` receive, possibly sharded over devices on axis 0.
        """
        ...

    def loss(self, model, batch: dict, key: jax.Array) -> tuple[jax.Array, dict[str, jax.Array]]:
        """Scalar training loss and a dict of scalar diagnostics; pure, called under jit."""
        ...

    def predict(self, model, batch: dict) -> jax.Array:
        """Reconstructions (B, 320, 320) float32 in the units of ``target_raw``."""
        ...


def stack_items(items: list[dict], keys) -> dict[str, np.ndarray]:
    """Stack the numpy values of ``keys`` across ``items`` on a new leading axis.

    Shared helper for ``prepare_batch`` implementations; a missing key or a ``None``
    value (e.g. ``target_raw`` of a test file) is an error naming the key and the slice.
    """
    from fnaf_jax.errors import DataError

    out = {}
    for key in keys:
        values = []
        for item in items:
            value = item.get(key)
            if value is None:
                where = f"{item.get('fname', '?')} slice {item.get('slice_num', '?')}"
                raise DataError(f"{where}: item has no {key!r} (needed for training)")
            values.append(np.asarray(value))
        out[key] = np.stack(values)
    return out
