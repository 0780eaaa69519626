"""Build a model from its config dict alone (``{"arch": NAME, **constructor kwargs}``).

The constructor of each architecture is named by its family (``fnaf_jax.models.families``).
"""

from __future__ import annotations

import jax
from flax import nnx

from fnaf_jax.errors import ConfigError
from fnaf_jax.models.families import family, resolve


def check_config(config: dict):
    """The constructor and kwargs of ``config``, with unknown or missing keyword
    arguments refused by name (before anything is built or written)."""
    import inspect

    if "arch" not in config:
        raise ConfigError(f"model config has no 'arch' entry: {config!r}")
    kwargs = {k: v for k, v in config.items() if k != "arch"}
    constructor = resolve(family(config["arch"]).constructor)
    # NNX modules hide __init__'s signature behind their metaclass: read it directly
    signature = inspect.signature(constructor.__init__ if inspect.isclass(constructor) else constructor)
    try:
        if inspect.isclass(constructor):
            signature.bind(None, **kwargs, rngs=None)
        else:
            signature.bind(**kwargs, rngs=None)
    except TypeError as exc:
        names = [p for p in signature.parameters if p not in ("self", "rngs")]
        raise ConfigError(f"model {config['arch']!r}: {exc} (its arguments: {', '.join(names)})") from None
    return constructor, kwargs


# Weight initialisation runs once: XLA's optimisation passes cost 10x its run time there
# (threefry unrolled for every tensor: a chans-4 U-Net's init compiled 20-30 s on a CPU,
# 3 s with these options). The same draws: U-Net weights to the bit, i-RIM weights within
# one float32 rounding (its weight norm's g = ||v|| is summed in another order).
_INIT_COMPILER_OPTIONS = {"xla_backend_optimization_level": 0, "xla_llvm_disable_expensive_passes": True}


def construct(build, rngs: nnx.Rngs):
    """``build(rngs)`` (an NNX module constructor call) as one unoptimised compiled program.

    Run eagerly, every random initialiser compiles a program of its own for each new
    shape; here the whole construction is one. ``rngs`` is advanced as the eager call would.
    """
    rng_def, rng_state = nnx.split(rngs)
    if any(isinstance(leaf, jax.core.Tracer) for leaf in jax.tree.leaves(rng_state)):
        return build(rngs)  # already inside a traced program: it is compiled with it
    structure = {}

    def states(state):
        streams = nnx.merge(rng_def, state)
        structure["model"], model_state = nnx.split(build(streams))  # filled while tracing
        return model_state, nnx.state(streams)

    program = jax.jit(states).lower(rng_state).compile(compiler_options=_INIT_COMPILER_OPTIONS)
    model_state, advanced = program(rng_state)
    nnx.update(rngs, advanced)
    return nnx.merge(structure["model"], model_state)


def build_model(config: dict, rngs: nnx.Rngs | None = None):
    """Build the model described by ``config`` (``{"arch": ..., **kwargs}``)."""
    constructor, kwargs = check_config(config)
    return construct(lambda r: constructor(**kwargs, rngs=r), rngs if rngs is not None else nnx.Rngs(0))


def build_abstract_model(config: dict):
    """The model of ``config`` whose parameters are shapes only (``jax.ShapeDtypeStruct``).

    Non-parameter state (dropout RNG keys and counts) is made real: under ``jit`` XLA drops
    the unused weight initialisers, so only that small state is computed. Fill the
    parameters with ``nnx.update`` before running the model.
    """
    constructor, kwargs = check_config(config)

    def build():
        return constructor(**kwargs, rngs=nnx.Rngs(0))

    model = nnx.eval_shape(build)
    if jax.tree_util.tree_leaves(nnx.state(model, nnx.Not(nnx.Param))):
        nnx.update(model, jax.jit(lambda: nnx.state(build(), nnx.Not(nnx.Param)))())
    return model
