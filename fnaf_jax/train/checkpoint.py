"""Resumable training checkpoints: Orbax ``CheckpointManager`` under ``WORKDIR/checkpoints``.

Each checkpoint (one per saved step) holds the training state ``{"params", "rest",
"opt_state"}`` and a small JSON record of the loop (step, last validated epoch, best
validation loss). Typed PRNG keys (NNX RNG streams) are stored as their raw key data and
re-wrapped on restore. Restoring needs a template state of the same structure (a freshly
initialised one, or its abstract shapes), so the arrays come back with the template's
dtypes and the requested placement.

These are training checkpoints; the model checkpoints users pass around
(``WORKDIR/best``, ``WORKDIR/last``) are written by ``fnaf_jax.models.store.save_model``.
"""

from __future__ import annotations

from pathlib import Path

import jax
import numpy as np
import orbax.checkpoint as ocp

from fnaf_jax.errors import CheckpointError

CHECKPOINT_DIR = "checkpoints"


def _is_key(x) -> bool:
    return hasattr(x, "dtype") and jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key)


def _to_storable(tree):
    return jax.tree.map(lambda x: jax.random.key_data(x) if _is_key(x) else x, tree)


def _from_storable(restored, template, sharding=None):
    def back(r, t):
        if _is_key(t):
            return jax.device_put(jax.random.wrap_key_data(r, impl=jax.random.key_impl(t)),
                                  sharding if sharding is not None else t.sharding)
        return r

    return jax.tree.map(back, restored, template)


def _abstract(tree, sharding=None):
    def spec(x):
        where = sharding if sharding is not None else getattr(x, "sharding", None)
        return jax.ShapeDtypeStruct(np.shape(x), x.dtype, sharding=where)

    return jax.tree.map(spec, _to_storable(tree))


class TrainCheckpoints:
    """Save and restore training states in ``workdir/checkpoints`` (a thin Orbax wrapper)."""

    def __init__(self, workdir, max_to_keep: int = 2):
        self.directory = Path(workdir).absolute() / CHECKPOINT_DIR
        options = ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True)
        self.manager = ocp.CheckpointManager(self.directory, options=options,
                                             item_names=("state", "loop"))

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def save(self, step: int, state: dict, loop: dict) -> None:
        """Write ``state`` and the JSON-able ``loop`` record as checkpoint ``step`` (blocking)."""
        if step in self.manager.all_steps():
            # e.g. a periodic save at the last step of an epoch, now with the validation
            # record: the newer save wins
            self.manager.delete(step)
        self.manager.save(step, args=ocp.args.Composite(
            state=ocp.args.StandardSave(_to_storable(state)),
            loop=ocp.args.JsonSave(loop)))
        self.manager.wait_until_finished()

    def restore(self, template: dict, step: int | None = None,
                sharding=None) -> tuple[int, dict, dict]:
        """``(step, state, loop)`` of checkpoint ``step`` (default: the latest).

        ``template`` may be abstract (``jax.ShapeDtypeStruct`` leaves, no weights computed);
        ``sharding`` places every restored array (default: the template's placement).
        Without ``step``, a latest checkpoint that cannot be read (a save cut short by a
        second interrupt) is passed over for the newest complete one.
        """
        if step is None:
            steps = sorted(self.manager.all_steps(), reverse=True)
            if not steps:
                raise CheckpointError(f"{self.directory}: no training checkpoint to resume from")
            for candidate in steps[:-1]:
                try:
                    return self._restore(candidate, template, sharding)
                except CheckpointError:
                    continue  # try the one before
            return self._restore(steps[-1], template, sharding)  # the oldest: its error is the answer
        return self._restore(step, template, sharding)

    def _restore(self, step: int, template: dict, sharding) -> tuple[int, dict, dict]:
        try:
            restored = self.manager.restore(step, args=ocp.args.Composite(
                state=ocp.args.StandardRestore(_abstract(template, sharding)),
                loop=ocp.args.JsonRestore()))
        except Exception as exc:  # orbax raises many types for corrupt or mismatched trees
            raise CheckpointError(
                f"{self.directory / str(step)}: cannot restore the training state ({exc}); "
                "was it written by a run with another model config?") from exc
        state = _from_storable(restored["state"], template, sharding)
        return step, state, dict(restored["loop"])

    def close(self) -> None:
        self.manager.close()
