"""Data-parallel mesh: a step sharded over 8 (fake CPU) devices equals the 1-device step."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import jax
import numpy as np
import pytest

from fnaf_jax import parallel
from fnaf_jax.errors import ConfigError

# Runs in a fresh interpreter: the device count flag must be set before jax is imported.
SHARDED_SCRIPT = textwrap.dedent("""
    import json, os
    os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=8"
    os.environ["JAX_PLATFORMS"] = "cpu"
    import jax, numpy as np
    from flax import nnx
    from fnaf_jax import parallel
    from fnaf_jax.errors import ConfigError
    from fnaf_jax.models import build_model
    from fnaf_jax.train.config import TrainConfig
    from fnaf_jax.train.steps import init_state, make_optimizer, make_train_step, step_key
    from fnaf_jax.train.unet_task import UnetTask

    assert jax.device_count() == 8
    cfg = TrainConfig(chans=4, num_pools=2)
    rng = np.random.default_rng(0)
    batch = {"image": rng.normal(size=(8, 32, 32)).astype(np.float32),
             "target": rng.normal(size=(8, 32, 32)).astype(np.float32)}
    task = UnetTask(loss="l1")

    def random_model():
        # eval_shape + numpy values: the same model without compiling its initialisers
        model = nnx.eval_shape(lambda: build_model(cfg.model_config(), nnx.Rngs(0)))
        graphdef, params = nnx.split(model)
        init = np.random.default_rng(1)
        params = jax.tree.map(lambda s: (0.3 * init.normal(size=s.shape)).astype(s.dtype), params)
        return nnx.merge(graphdef, params)
    # fastMRI's RMSprop with lr 1 and eps 1: the first update g / (0.1 |g| + 1) is close to
    # the gradient itself, so parameters compare at float32 precision (with eps 1e-8 it
    # would be lr * sign(g), which amplifies rounding of near-zero gradients).
    tx = make_optimizer(cfg.replace(lr=1.0, rms_eps=1.0), 10)
    out = {"runs": []}
    for devices in (jax.devices()[:1], jax.devices()):
        mesh = parallel.make_mesh(devices)
        model = random_model()
        graphdef, state = init_state(model, tx)
        state = parallel.replicate(state, mesh)
        sharded = parallel.shard_batch(batch, mesh)
        step = make_train_step(task, graphdef, tx, mesh).lower(
            state, sharded, step_key(0, 0)).compile()
        if len(devices) == 8:
            out["image_devices"] = len(sharded["image"].sharding.device_set)
            out["shard_rows"] = sorted({s.data.shape[0]
                                        for s in sharded["image"].addressable_shards})
            out["all_reduce"] = "all-reduce" in step.as_text()
        new, loss, _ = step(state, sharded, step_key(0, 0))
        out["runs"].append({
            "loss": float(loss),
            "params": [np.asarray(x).ravel().tolist() for x in jax.tree.leaves(new["params"])],
            "replicated": all(x.sharding.is_fully_replicated
                              for x in jax.tree.leaves(new["params"]))})
    try:
        parallel.check_batch_size(12, parallel.make_mesh())
    except ConfigError as exc:
        out["error"] = str(exc)
    print("RESULT" + json.dumps(out))
""")


@pytest.fixture(scope="module")
def sharded_result():
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    env.pop("XLA_FLAGS", None)
    proc = subprocess.run([sys.executable, "-c", SHARDED_SCRIPT], check=False,
                          capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = next(x for x in proc.stdout.splitlines() if x.startswith("RESULT"))
    return json.loads(line[len("RESULT"):])


def test_batch_really_is_split_over_8_devices(sharded_result):
    assert sharded_result["image_devices"] == 8
    assert sharded_result["shard_rows"] == [1]  # one slice per device
    assert sharded_result["all_reduce"]  # gradients are summed across devices


def test_sharded_step_equals_single_device_step(sharded_result):
    one, eight = sharded_result["runs"]
    assert eight["replicated"] and one["replicated"]
    np.testing.assert_allclose(eight["loss"], one["loss"], rtol=1e-6)
    assert len(one["params"]) == len(eight["params"]) > 0
    for a, b in zip(one["params"], eight["params"]):
        # float32 sums run in another order over 8 devices: rounding-level differences
        np.testing.assert_allclose(np.array(b), np.array(a), rtol=1e-5, atol=1e-6)


def test_indivisible_batch_is_a_clear_error(sharded_result):
    assert "batch_size=12 does not divide evenly over 8 devices" in sharded_result["error"]


def test_single_device_is_a_plain_placement():
    mesh = parallel.make_mesh()
    assert mesh.axis_names == ("data",) and mesh.devices.size == jax.device_count()
    batch = {"x": np.arange(6.0 * mesh.devices.size).reshape(-1, 1)}
    placed = parallel.shard_batch(batch, mesh)
    np.testing.assert_array_equal(np.asarray(placed["x"]), batch["x"])
    with pytest.raises(ConfigError, match="'s'.*scalar"):
        parallel.shard_batch({"s": np.float32(1.0)}, mesh)
    assert not parallel.maybe_initialize_distributed()  # no cluster in the environment
