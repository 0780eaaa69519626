"""Chains of invertible layers, with a memory-free backward pass ("invert to learn").

A chain is a sequence of layers ``x <- f_i(p_i, x, data)``, each with an exact inverse
``g_i(p_i, y, data)``. Plain autodiff of the chain keeps every intermediate state for
the backward pass, so activation memory grows with depth. ``memory_free_chain`` wraps
the chain in a ``jax.custom_vjp`` whose residuals are only the parameters, the data and
the FINAL state: the backward pass walks the layers in reverse, recomputes each layer's
input by inversion, and differentiates that one layer (``jax.vjp``). Memory for
activations is then one layer's worth, whatever the depth; the price is one extra
inverse per layer (whose residual-block evaluation XLA shares with the recomputed forward).

``data`` is any pytree the layers read but do not change (for the i-RIM: the scaled
zero-filled image and the mask); it gets a proper cotangent too, so gradients with
respect to the measurements are available.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import jax

Layer = Callable  # f(params, x, data) -> x


def chain_forward(forwards: Sequence[Layer], params: Sequence, x, data):
    """Apply the layers in order (plain autodiff keeps every intermediate state)."""
    for f, p in zip(forwards, params):
        x = f(p, x, data)
    return x


def chain_inverse(inverses: Sequence[Layer], params: Sequence, y, data):
    """Undo ``chain_forward``: apply the inverses in reverse order."""
    for g, p in zip(reversed(inverses), reversed(params)):
        y = g(p, y, data)
    return y


def _tree_add(a, b):
    return jax.tree_util.tree_map(lambda u, v: u + v, a, b)


def memory_free_chain(
    forwards: Sequence[Layer],
    inverses: Sequence[Layer],
    backwards: Sequence | None = None,
):
    """``run(params, x, data) -> y`` equal to ``chain_forward`` with a constant-memory VJP.

    ``forwards[i]`` and ``inverses[i]`` must be exact inverses of each other for every
    parameter value; gradients are then those of plain autodiff up to the rounding of
    the reconstructed states. ``backwards[i]``, when given (not None), does a layer's
    inversion and VJP in one go, ``(p, y, data, ct) -> (x, grad_p, grad_x)`` (the layer
    must not read ``data``), so that work the two share is done once.
    """
    forwards, inverses = tuple(forwards), tuple(inverses)
    backwards = tuple(backwards) if backwards is not None else (None,) * len(forwards)
    if not len(forwards) == len(inverses) == len(backwards):
        raise ValueError("memory_free_chain: need one inverse (and backward) per layer")

    @jax.custom_vjp
    def run(params, x, data):
        return chain_forward(forwards, params, x, data)

    def run_fwd(params, x, data):
        y = chain_forward(forwards, params, x, data)
        return y, (params, y, data)  # only the final state is kept

    def run_bwd(residuals, ct):
        params, y, data = residuals
        param_grads = [None] * len(forwards)
        data_grad = jax.tree_util.tree_map(jax.numpy.zeros_like, data)
        for i in reversed(range(len(forwards))):
            # The barrier ties the state to the cotangent of the layer above, so XLA cannot
            # hoist the whole chain of inversions ahead of the VJPs (which would keep every
            # state alive again, as plain autodiff does).
            y, ct = jax.lax.optimization_barrier((y, ct))
            if backwards[i] is not None:
                x, param_grads[i], ct = backwards[i](params[i], y, data, ct)
            else:
                x = inverses[i](params[i], y, data)  # this layer's input, recomputed
                _, vjp = jax.vjp(forwards[i], params[i], x, data)
                param_grads[i], ct, d_data = vjp(ct)
                data_grad = _tree_add(data_grad, d_data)
            y = x
        return (
            type(params)(param_grads) if isinstance(params, tuple) else param_grads,
            ct,
            data_grad,
        )

    run.defvjp(run_fwd, run_bwd)
    return run
