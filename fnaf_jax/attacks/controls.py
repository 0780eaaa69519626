"""The no-feature control of each slice, computed once and shared by the attacks run on it.

Every attack record is measured against the model's output for the slice without a
feature (``Scorer.clean_output``: the feature-lost fraction, the no-feature row). It is
one model image per slice, the same for every method run with the same model and mask:
alone, random search at K = 4 spends a fifth of its model work on it. A ``ControlCache``
handed to several runs (``run_attack(..., controls=cache)``; the study's attack stages
hand one to all the methods of a model) computes it on the first run and reads it on the
others, so a stage pays one control image per slice whatever its methods.

A cache serves one dataset: entries are keyed by model (name and checkpoint), mask
(``MaskSpec``) and slice (file name and number). It holds at most ``max_bytes`` of
outputs; once full it keeps what it has and stores no more (a later run over the same
slices in the same order then still finds its first batches).
"""

from __future__ import annotations

import numpy as np


class ControlCache:
    """No-feature outputs by (model, mask, slice); see the module docstring."""

    def __init__(self, max_bytes: int = 1 << 30):
        self.max_bytes = int(max_bytes)
        self._outputs: dict[tuple, np.ndarray] = {}
        self._bytes = 0
        self.hits = 0  # batches read from the cache
        self.misses = 0  # batches computed

    def _keys(self, model: tuple, spec, batch: dict) -> list[tuple]:
        return [(model, spec, f, int(s)) for f, s in zip(batch["fname"], batch["slice_num"], strict=True)]

    def lookup(self, model: tuple, spec, batch: dict) -> np.ndarray | None:
        """The (B, h, w) outputs of every slice of ``batch``, or None unless all are held."""
        keys = self._keys(model, spec, batch)
        if not all(k in self._outputs for k in keys):
            self.misses += 1
            return None
        self.hits += 1
        return np.stack([self._outputs[k] for k in keys])

    def store(self, model: tuple, spec, batch: dict, outputs) -> None:
        """Keep ``outputs`` (B, h, w), one per slice of ``batch``, while there is room."""
        outputs = np.asarray(outputs)
        for key, out in zip(self._keys(model, spec, batch), outputs, strict=True):
            if key in self._outputs:
                continue
            if self._bytes + out.nbytes > self.max_bytes:
                return
            self._outputs[key] = out.copy()
            self._bytes += out.nbytes
