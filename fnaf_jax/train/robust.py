"""Defenses in one harness (paper section 3.3, SPEC 4): clean loss + a robustness term.

``RobustTask(base_task, mode=..., ...)`` (or ``RobustTask.from_config``) wraps any task of
the Task protocol; the training loop takes one optimizer step on the sum, and model
selection stays on the clean loss (``base_task``). Modes (``fnaf train --robust MODE``):

- ``rs`` (the paper's): the Eq. 5 FNAF loss (alpha 1, beta 100) of a random feature that
  passes information preservation (augmentation);
- ``worst-of-k``: of the worst of ``worst_of`` features scored with the current weights
  under ``stop_gradient``;
- ``pgd``: of the random feature after ``adv_steps`` steps of the gradient attack
  (``attacks.pgd``) through the current weights: true adversarial training;
- ``jitter``: ``alpha`` times the whole-image MSE (z-scored, as Eq. 5) of the output for
  the under-sampled k-space plus complex Gaussian noise of norm ``jitter * ||y_k||`` on
  the sampled columns (Krainovic, Soltanolkotabi, Heckel 2023);
- ``kspace-adv``: the same term for the worst perturbation of norm ``kspace_eps * ||y_k||``
  found by ``adv_steps`` steps of projected gradient ascent (``attacks.kspace``).

No gradient flows through a search: the chosen feature or perturbation is a constant of
the step.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from fnaf_jax import features
from fnaf_jax import objective as O
from fnaf_jax.attacks.config import AttackConfig, take_candidate, worst_of_k
from fnaf_jax.errors import DataError
from fnaf_jax.masks import create_mask_for_mask_type, draw_column_mask
from fnaf_jax.objective import ATTACK, ObjectiveConfig, information_preserved, score
from fnaf_jax.physics import ifft2c, undersample

_FEATURE_STREAM = 0x464E4146  # "FNAF": a key stream apart from the base task's
_NOISE_STREAM = 0x4E4F4953  # "NOIS": jitter noise and k-space starts
#: random draws per sample in the paper's mode (worst_of = 1): the first one that passes
#: information preservation is trained on (at 8x about 27% of single draws fail; all four
#: fail for well under 1% of samples, which are then left out of the FNAF term)
SPARES = 4


class RobustTask:
    """Task protocol wrapper adding the FNAF loss (see the module docstring)."""

    def __init__(self, base_task, *, worst_of: int = 1, alpha: float = 1.0, beta: float = 100.0,
                 ip_threshold: float = 1e-4, mask_func=None,
                 feature_config: features.FeatureConfig = features.DEFAULT_FEATURES, mode: str | None = None,
                 adv_steps: int = 2, jitter: float = 0.02, kspace_eps: float = 0.01):
        self.mode = mode or ("rs" if int(worst_of) == 1 else "worst-of-k")
        self.adv_steps, self.jitter, self.kspace_eps = int(adv_steps), float(jitter), float(kspace_eps)
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
                   ip_threshold=cfg.ip_threshold, mode=cfg.robust, adv_steps=cfg.adv_steps,
                   jitter=cfg.jitter, kspace_eps=cfg.kspace_eps,
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
        n = self.worst_of if self.mode == "worst-of-k" else SPARES
        cands = features.sample(key, y.shape[0], n, self.features, lo=lo, hi=hi)
        if self.mode != "worst-of-k":
            ok = information_preserved(fb, cands) >= self.ip_threshold
            index = jnp.argmax(ok, axis=-1)  # the first accepted draw
            chosen, valid = take_candidate(cands, index), ok.any(axis=-1)
            if self.mode == "pgd":
                chosen = self._ascend_feature(model, fb, chosen, lo, hi)
                valid = valid & (information_preserved(fb, chosen)[:, 0] >= self.ip_threshold)
            return chosen, valid

        def frozen(u, mask, metadata):
            return jax.lax.stop_gradient(model.reconstruct(u, mask, metadata))

        loss, ip = score(frozen, fb, cands, ATTACK)
        index, accepted = worst_of_k(loss, ip, self.ip_threshold)
        return take_candidate(cands, index), accepted

    def _ascend_feature(self, model, fb, cands, lo, hi):
        """``adv_steps`` steps of the gradient attack (``attacks.pgd``) from ``cands`` (B, 1)."""
        from fnaf_jax.attacks.pgd import ascent_step
        from fnaf_jax.gradients import sensitivity

        cfg = AttackConfig(features=self.features, pgd_steps=self.adv_steps)
        stop = jax.lax.stop_gradient  # the search sees the weights as constants
        state = {**fb, "u_clean": undersample(fb["target_raw"], fb["mask"])}
        state["clean_output"] = stop(O.clean_outputs(model.reconstruct, fb))
        b = cands.location.shape[0]
        point = cands.location.astype(jnp.float32)
        for t in range(self.adv_steps):
            frac = (self.adv_steps - t) / self.adv_steps
            _, grad = sensitivity(model.reconstruct, state, jnp.arange(b), O._flat(cands), cfg.pgd_sigma * frac,
                                  ATTACK, cfg.objective.radius + 2 * cfg.pgd_sigma)
            cands, point = ascent_step(cands, point, stop(grad)[:, None], lo, hi, jnp.float32(frac), cfg)
        return jax.tree.map(stop, cands)

    def _noisy_term(self, model, fb, key):
        """Whole-image MSE (z-scored) of the output for k-space plus noise (jitter) or plus
        the worst perturbation found (kspace-adv), both of norm level * ||y_k||."""
        from fnaf_jax.attacks.kspace import ascend, sphere

        y, mask = fb["target_raw"], fb["mask"]
        b, h, _ = y.shape
        u0 = undersample(y, mask)
        radius = jnp.sqrt((jnp.abs(u0) ** 2).sum((-2, -1))) * (self.jitter if self.mode == "jitter"
                                                             else self.kspace_eps)
        with features.pinned_prng():
            keys = jax.random.split(key, b)
        er, ei = sphere(keys, mask, radius, h)
        whole = ObjectiveConfig(alpha=1.0, beta=0.0)
        zeros = jnp.zeros_like(y)
        idx = jnp.arange(b)

        def mse(er, ei):  # no controls: the term needs no no-feature output
            u = u0 + ifft2c(mask[:, None, :] * (er + 1j * ei))
            out = O.forward_images(model.reconstruct, y, mask, fb.get("metadata"), u, idx, zeros,
                                   zeros.astype(bool))
            return O.fnaf_loss(out["output"], out["target"], out["region"], whole)

        if self.mode == "kspace-adv":
            for _ in range(self.adv_steps):
                gr, gi = jax.grad(lambda a, c: mse(a, c).sum(), argnums=(0, 1))(er, ei)
                er, ei = ascend(er, ei, gr, gi, radius, jnp.float32(0.5))
            # the search's result is a constant of the step: no gradient through it
            er, ei = jax.lax.stop_gradient(er), jax.lax.stop_gradient(ei)
        return mse(er, ei).mean()

    def loss(self, model, batch, key):
        clean, aux = self.base_task.loss(model, batch, key)
        if self.mode in ("jitter", "kspace-adv"):
            term = self.objective.alpha * self._noisy_term(model, self.fnaf_batch(batch),
                                                           jax.random.fold_in(key, _NOISE_STREAM))
            return clean + term, {**aux, "clean_loss": clean, "noisy_loss": term}
        chosen, valid = self.choose_features(model, batch, jax.random.fold_in(key, _FEATURE_STREAM))
        fnaf, _ = score(model.reconstruct, self.fnaf_batch(batch), chosen, self.objective)
        weight = valid.astype(fnaf.dtype)
        fnaf = (fnaf[:, 0] * weight).sum() / jnp.maximum(weight.sum(), 1.0)
        return clean + fnaf, {**aux, "clean_loss": clean, "fnaf_loss": fnaf,
                              "fnaf_rejected": 1.0 - weight.mean()}

    def predict(self, model, batch):
        return self.base_task.predict(model, batch)
