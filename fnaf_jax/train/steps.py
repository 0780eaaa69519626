"""Compiled training and evaluation steps over a model taken apart as a pure function.

The NNX model is split once, at the compiled boundary, into a graph definition (static)
and two state trees: ``params`` (``nnx.Param``, differentiated and optimised) and
``rest`` (everything else, e.g. dropout RNG counters, carried through unchanged in
value semantics). A training state is the plain dict ``{"params", "rest", "opt_state"}``.
The task (``fnaf_jax.train.task.Task``) supplies the loss; the step merges the model
inside ``jit``, so the same code serves every model family and every loss.
"""

from __future__ import annotations

import jax
import optax
from flax import nnx

from fnaf_jax.parallel import batch_sharding, replicated


def split_model(model):
    """``(graphdef, params, rest)``; ``rest`` holds every non-Param variable."""
    return nnx.split(model, nnx.Param, ...)


def make_optimizer(cfg, steps_per_epoch: int) -> optax.GradientTransformation:
    """fastMRI's RMSprop (PyTorch semantics: eps outside the square root) with StepLR.

    The learning rate drops by ``lr_gamma`` once, after ``lr_step_fraction`` of the epochs
    (fastMRI: epoch 40 of 50); the schedule counts optimizer steps.
    """
    boundary = max(1, round(cfg.lr_step_fraction * cfg.epochs)) * steps_per_epoch
    schedule = optax.piecewise_constant_schedule(cfg.lr, {boundary: cfg.lr_gamma})
    parts = []
    if cfg.weight_decay:
        parts.append(optax.add_decayed_weights(cfg.weight_decay))  # torch RMSprop's L2 term
    parts.append(optax.rmsprop(schedule, decay=cfg.rms_decay, eps=cfg.rms_eps,
                               eps_in_sqrt=False))
    return optax.chain(*parts)


def init_state(model, tx, abstract: bool = False) -> tuple[nnx.GraphDef, dict]:
    """Split ``model`` (in training mode) into its graphdef and a fresh training state;
    ``abstract``: the model's parameters are shapes only, and so is the optimizer state
    (a template to restore a checkpoint into)."""
    graphdef, params, rest = split_model(model)
    opt_state = jax.eval_shape(tx.init, params) if abstract else tx.init(params)
    return graphdef, {"params": params, "rest": rest, "opt_state": opt_state}


def train_step_fn(task, graphdef, tx):
    """The un-jitted step ``(state, batch, key) -> (state, loss, aux)``."""

    def step(state, batch, key):
        def loss_fn(params):
            # copy: fresh Variables owned by this trace, so dropout may advance its
            # RNG counter under grad (sharing them raises TraceContextError)
            model = nnx.merge(graphdef, params, state["rest"], copy=True)
            loss, aux = task.loss(model, batch, key)
            _, _, rest = split_model(model)
            return loss, (aux, rest)

        (loss, (aux, rest)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state["params"])
        updates, opt_state = tx.update(grads, state["opt_state"], state["params"])
        params = optax.apply_updates(state["params"], updates)
        return {"params": params, "rest": rest, "opt_state": opt_state}, loss, aux

    return step


def make_train_step(task, graphdef, tx, mesh):
    """Jitted train step: state replicated, batch sharded on axis 0, state buffers donated."""
    rep = replicated(mesh)
    return jax.jit(train_step_fn(task, graphdef, tx), donate_argnums=0,
                   in_shardings=(rep, batch_sharding(mesh), rep), out_shardings=rep)


def make_eval_fn(task, graphdef, mesh):
    """Jitted ``evaluate(state, batch, key) -> (predictions, loss)`` with the model in
    evaluation mode (``graphdef`` must come from a model switched to ``.eval()``); one
    compiled call, so XLA shares the forward pass where the two agree."""
    rep, shard = replicated(mesh), batch_sharding(mesh)

    def evaluate(state, batch, key):
        model = nnx.merge(graphdef, state["params"], state["rest"], copy=True)
        return task.predict(model, batch), task.loss(model, batch, key)[0]

    return jax.jit(evaluate, in_shardings=(rep, shard, rep), out_shardings=rep)


def step_key(seed: int, step: int) -> jax.Array:
    """The PRNG key of optimizer step ``step``: a pure function of (seed, step)."""
    return jax.random.fold_in(jax.random.key(seed), step)
