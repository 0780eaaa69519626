"""FNAF-robust training (paper section 3.3, SPEC 4): clean loss + Eq. 5 FNAF loss, one step.

``RobustTask(base_task, worst_of=..., ...)`` (or ``RobustTask.from_config``) wraps any task of the Task protocol. Each step draws
features on the same batch, at random (``worst_of = 1``, augmentation) or as the worst of
``worst_of`` candidates scored with the current weights under ``stop_gradient``
(adversarial), and adds the FNAF loss of the chosen feature (alpha 1, beta 100 by
default) to the base task's clean loss. The training loop takes one optimizer step on
the sum. Model selection stays on the clean loss (``base_task``).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from fnaf_jax import features
from fnaf_jax.attacks.config import take_candidate, worst_of_k
from fnaf_jax.errors import DataError
from fnaf_jax.masks import create_mask_for_mask_type, draw_column_mask
from fnaf_jax.objective import ATTACK, ObjectiveConfig, information_preserved, score

_FEATURE_STREAM = 0x464E4146  # "FNAF": a key stream apart from the base task's
#: random draws per sample in the paper's mode (worst_of = 1): the first one that passes
#: information preservation is trained on (at 8x about 27% of single draws fail; all four
#: fail for well under 1% of samples, which are then left out of the FNAF term)
SPARES = 4


class RobustTask:
    """Task protocol wrapper adding the FNAF loss (see the module docstring)."""

    def __init__(self, base_task, *, worst_of: int = 1, alpha: float = 1.0, beta: float = 100.0,
                 ip_threshold: float = 1e-4, mask_func=None,
                 feature_config: features.FeatureConfig = features.DEFAULT_FEATURES):
        self.base_task = base_task
        self.transform = base_task.transform
        self.worst_of = int(worst_of)
        self.objective = ObjectiveConfig(alpha=float(alpha), beta=float(beta))
        self.features = feature_config
        self.ip_threshold = float(ip_threshold)
        self.mask_func = mask_func or create_mask_for_mask_type("random", [0.08], [4])

    @classmethod
    def from_config(cls, base_task, cfg) -> RobustTask:
        """From a ``TrainConfig``: its FNAF fields and its training masks."""
        return cls(base_task, worst_of=cfg.worst_of, alpha=cfg.alpha, beta=cfg.beta,
                   ip_threshold=cfg.ip_threshold,
                   mask_func=create_mask_for_mask_type(cfg.mask_type, list(cfg.center_fractions),
                                                       list(cfg.accelerations)))

    # --- host side ---------------------------------------------------------------------
    def prepare_batch(self, items: list[dict], rng: np.random.Generator | None) -> dict:
        """The base batch plus ``target_raw`` and ``fnaf_mask`` (B, W): column masks of the
        image the features are added to, random in training, seeded by file name otherwise."""
        batch = dict(self.base_task.prepare_batch(items, rng))
        if "target_raw" not in batch:
            batch["target_raw"] = np.stack([self._target(it) for it in items])
        width = batch["target_raw"].shape[-1]
        batch["fnaf_mask"] = np.stack([draw_column_mask(self.mask_func, width, item["fname"], rng)
                                       for item in items])
        return batch

    @staticmethod
    def _target(item):
        target = item.get("target_raw")
        if target is None:
            raise DataError(f"{item.get('fname', '?')} slice {item.get('slice_num', '?')}: "
                            "no target_raw (FNAF-robust training needs the ground truth)")
        return np.asarray(target, np.float32)

    # --- jitted side -------------------------------------------------------------------
    def fnaf_batch(self, batch):
        return {"target_raw": batch["target_raw"], "mask": batch["fnaf_mask"],
                "metadata": batch.get("metadata")}

    def choose_features(self, model, batch, key):
        """(B, 1) candidates and a (B,) bool saying which samples have one to train on.

        Only features that pass information preservation (IP >= ``ip_threshold``) are ever
        trained on (paper 4.2): with ``worst_of = 1`` the first accepted of ``SPARES``
        random draws (IP needs no model call), with ``worst_of > 1`` the worst accepted of
        the ``worst_of`` scored under the current weights (no gradient flows through the
        search). A sample with no accepted candidate is masked out of the FNAF loss.
        """
        fb = self.fnaf_batch(batch)
        y = jnp.asarray(fb["target_raw"], jnp.float32)
        lo, hi = features.intensity_range(y)
        n = SPARES if self.worst_of == 1 else self.worst_of
        cands = features.sample(key, y.shape[0], n, self.features, lo=lo, hi=hi)
        if self.worst_of == 1:
            ok = information_preserved(fb, cands) >= self.ip_threshold
            index = jnp.argmax(ok, axis=-1)  # the first accepted draw
            return take_candidate(cands, index), ok.any(axis=-1)

        def frozen(u, mask, metadata):
            return jax.lax.stop_gradient(model.reconstruct(u, mask, metadata))

        loss, ip = score(frozen, fb, cands, ATTACK)
        index, accepted = worst_of_k(loss, ip, self.ip_threshold)
        return take_candidate(cands, index), accepted

    def loss(self, model, batch, key):
        clean, aux = self.base_task.loss(model, batch, key)
        chosen, valid = self.choose_features(model, batch, jax.random.fold_in(key, _FEATURE_STREAM))
        fnaf, _ = score(model.reconstruct, self.fnaf_batch(batch), chosen, self.objective)
        weight = valid.astype(fnaf.dtype)
        fnaf = (fnaf[:, 0] * weight).sum() / jnp.maximum(weight.sum(), 1.0)
        return clean + fnaf, {**aux, "clean_loss": clean, "fnaf_loss": fnaf,
                              "fnaf_rejected": 1.0 - weight.mean()}

    def predict(self, model, batch):
        return self.base_task.predict(model, batch)
