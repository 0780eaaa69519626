"""PyTorch i-RIM checkpoint -> NNX: parity with tests/golden/irim_small*, key checks,
released-config shapes (built abstractly), round trip through the model store."""

from __future__ import annotations

import argparse

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from fnaf_jax.errors import CheckpointError, ConfigError
from fnaf_jax.models.convert_irim import (
    check_entries,
    config_from_args,
    from_torch,
    load_irim_checkpoint,
    strip_prefix,
    to_state_dict,
)
from fnaf_jax.models.irim import IRIM, RELEASED_CONFIG, scale_gamma
from fnaf_jax.models.store import load_model, save_model


@pytest.fixture(scope="module")
def small(golden):
    model, config = load_irim_checkpoint(golden / "irim_small.pt")
    return model, config, np.load(golden / "irim_small_io.npz")


def _crop32(x_nhwc):
    h, w = x_nhwc.shape[1:3]
    r, c = (h - 32) // 2, (w - 32) // 2
    return np.moveaxis(np.asarray(x_nhwc)[:, r : r + 32, c : c + 32], -1, 1)


def test_golden_small_parity(small):
    model, config, io = small
    assert (
        config["n_steps"] == 2
        and config["multiplicity"] == 2
        and config["parametric_output"]
    )
    y = jnp.asarray(io["y"][:, 0, ..., 0] + 1j * io["y"][:, 0, ..., 1])
    mask = jnp.asarray(io["mask"][:, 0, 0, :, 0])
    meta = jnp.asarray(io["metadata"])

    @jax.jit
    def run(y):
        gamma = scale_gamma(y)
        ys = y / gamma[:, None, None]
        x0 = model.initial_state(ys, meta)
        return (
            gamma,
            x0,
            model.run_core(x0, ys, mask),
            model.estimate(y, mask, meta),
            model(y, mask, meta),
        )

    gamma, x0, xt, est, image = run(y)
    np.testing.assert_allclose(np.asarray(gamma), io["gamma"].ravel(), rtol=1e-6)
    ref = io["x0_crop32"]
    assert np.max(np.abs(_crop32(x0) - ref)) <= 1e-6 * np.max(
        np.abs(ref)
    )  # measured 2.3e-8
    ref = io["xT_crop32"]
    assert np.max(np.abs(_crop32(xt) - ref)) <= 1e-5 * np.max(
        np.abs(ref)
    )  # measured 2.2e-6
    ref = io["output"][:, 0]
    got = np.stack([np.asarray(est).real, np.asarray(est).imag], -1)
    assert np.max(np.abs(got - ref)) <= 1e-5 * np.max(np.abs(ref))  # measured 3.9e-6
    ref = io["image_center64"]
    assert image.shape == (2, 320, 320)
    assert (
        np.max(np.abs(np.asarray(image)[:, 128:192, 128:192] - ref)) <= 1e-5 * ref.max()
    )


def test_state_dict_problems_are_listed_together(small):
    model, config, _ = small
    sd = {"module." + k: v for k, v in to_state_dict(model).items()}
    del sd["module.model.model.rnn.1.layers.2.update_right.l1.bias"]
    sd["module.model.model.rnn.0.extra.weight"] = np.zeros(3, np.float32)
    sd["module.output_function.l2.weight_v"] = np.zeros((16, 16, 1, 1), np.float32)
    with pytest.raises(CheckpointError) as info:
        from_torch(sd, config, source="ckpt.pt")
    msg = str(info.value)
    assert "ckpt.pt" in msg and "3 problems" in msg
    assert "missing model.model.rnn.1.layers.2.update_right.l1.bias" in msg
    assert "unexpected model.model.rnn.0.extra.weight" in msg
    assert (
        "output_function.l2.weight_v: shape (16, 16, 1, 1) != expected (16, 16, 3, 3)"
        in msg
    )


def test_shared_weights_round_trip_and_store(tmp_path):
    config = {
        "arch": "irim",
        "n_steps": 3,
        "n_hidden": [12, 12],
        "n_network_hidden": [4, 4],
        "dilations": [1, 2],
        "multiplicity": 1,
        "shared_weights": True,
        "parametric_output": True,
    }
    model = IRIM(**{k: v for k, v in config.items() if k != "arch"}, rngs=nnx.Rngs(7))
    sd = to_state_dict(model)
    assert (
        "model.model.rnn.2.embeddings.1.weights" in sd
    )  # torch lists the shared cell 3 times
    back, back_config = from_torch(sd, config)
    for a, b in zip(
        jax.tree.leaves(nnx.state(model)), jax.tree.leaves(nnx.state(back))
    ):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    # the copies of a shared cell must agree
    sd["model.model.rnn.1.layers.0.update_right.l2.bias"] = (
        sd["model.model.rnn.1.layers.0.update_right.l2.bias"] + 1
    )
    with pytest.raises(CheckpointError, match="differs from rnn.0"):
        from_torch(sd, config)
    # the converted config is JSON-able and rebuilds the model through the store
    save_model(tmp_path / "ckpt", back, back_config)
    loaded, record = load_model(tmp_path / "ckpt")
    assert record["config"] == back_config
    for a, b in zip(
        jax.tree.leaves(nnx.state(back)), jax.tree.leaves(nnx.state(loaded))
    ):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_released_config_shapes_without_allocating(golden):
    shapes = {}
    for line in (golden / "irim_released_keys.txt").read_text().splitlines():
        if line.startswith("#") or not line.strip():
            continue
        key, shape, _ = line.split("\t")
        shapes[key] = tuple(int(s) for s in shape.strip("()").split(",") if s.strip())
    assert len(shapes) == 968
    kwargs = {k: v for k, v in RELEASED_CONFIG.items() if k != "arch"}
    abstract = nnx.eval_shape(lambda: IRIM(**kwargs, rngs=nnx.Rngs(0)))
    entries = check_entries(abstract, strip_prefix(shapes), "irim_released_keys.txt")
    n_params = sum(int(np.prod(s)) for path, s in entries.values() if path is not None)
    assert n_params == 275_247_552
    # a full-size slice (640 x 368, dilation 8 layers) runs through it, traced abstractly
    graphdef, state = nnx.split(abstract)
    out = jax.eval_shape(
        lambda st, y, m: nnx.merge(graphdef, st)(y, m, None),
        state,
        jax.ShapeDtypeStruct((1, 640, 368), jnp.complex64),
        jax.ShapeDtypeStruct((1, 368), jnp.float32),
    )
    assert out.shape == (1, 320, 320) and out.dtype == jnp.float32
    # and the released args map to that config
    args = argparse.Namespace(
        n_steps=8, n_hidden=[64] * 12, n_network_hidden=kwargs["n_network_hidden"],
        dilations=kwargs["dilations"], multiplicity=4, parametric_output=True,
        shared_weights=False, n_slices=1, challenge="singlecoil", depth=None, use_rim=False,
        data_parallel=True, lr=1e-4,
    )  # fmt: skip
    assert config_from_args(args) == RELEASED_CONFIG


@pytest.mark.parametrize(
    "change, words",
    [
        ({"challenge": "multicoil"}, "multicoil"),
        ({"use_rim": True}, "use_rim"),
        ({"n_slices": 3}, "n_slices=3"),
        ({"dilations": None}, "lack dilations"),
    ],
)
def test_unsupported_args_are_config_errors(change, words):
    args = {
        "n_steps": 2,
        "n_hidden": [16] * 2,
        "n_network_hidden": [4] * 2,
        "dilations": [1] * 2,
    }
    with pytest.raises(ConfigError, match=words):
        config_from_args(argparse.Namespace(**{**args, **change}))


def test_unreadable_checkpoint_file(tmp_path):
    with pytest.raises(CheckpointError, match="no such checkpoint"):
        load_irim_checkpoint(tmp_path / "missing.pt")
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="bad.pt"):
        load_irim_checkpoint(bad)


def test_state_dict_without_args_or_config_names_what_is_missing(golden):
    # A U-Net file forced to --arch irim has no 'args': a clear error, not a TypeError.
    from fnaf_jax.models.convert import load_torch

    with pytest.raises(CheckpointError, match="unet_v0.pt.*does not give the model's sizes"):
        load_torch(golden / "unet_v0.pt", arch="irim")


def test_args_follow_the_original_build_model():
    base = {"n_steps": 2, "n_network_hidden": [4, 4], "dilations": [1, 2]}
    # InvertibleUnet zips the lists: the shortest sets the number of layers
    cfg = config_from_args(argparse.Namespace(**base, n_hidden=[16, 16, 16]))
    assert cfg["n_hidden"] == [16, 16] and cfg["multiplicity"] == 1
    # an int n_hidden is repeated `depth` times
    cfg = config_from_args(argparse.Namespace(**base, n_hidden=16, depth=2))
    assert cfg["n_hidden"] == [16, 16] and "depth" not in cfg
