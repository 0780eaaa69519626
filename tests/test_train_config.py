"""TrainConfig, its CLI flags, the workdir config guard, and the optimizer recipe."""

from __future__ import annotations

import dataclasses
import json

import jax.numpy as jnp
import numpy as np
import optax
import pytest

from fnaf_jax.cli import build_parser
from fnaf_jax.commands.train import config_from_args
from fnaf_jax.errors import ConfigError
from fnaf_jax.train.config import TrainConfig, read_config, write_or_check
from fnaf_jax.train.steps import make_optimizer


def test_defaults_are_the_fastmri_unet_recipe():
    cfg = TrainConfig()
    assert (cfg.lr, cfg.rms_decay, cfg.rms_eps, cfg.weight_decay) == (1e-3, 0.99, 1e-8, 0.0)
    assert (cfg.epochs, cfg.lr_step_fraction, cfg.lr_gamma) == (50, 0.8, 0.1)
    assert (cfg.loss, cfg.batch_size, cfg.chans, cfg.num_pools) == ("l1", 1, 32, 4)
    assert (cfg.mask_type, cfg.accelerations, cfg.center_fractions) == ("random", (4,), (0.08,))
    assert (cfg.alpha, cfg.beta) == (1.0, 100.0)  # robust training weights (paper)


def test_every_field_has_exactly_one_flag_and_parses_back():
    parser = build_parser()
    args = parser.parse_args([
        "train", "--data", "D", "--workdir", "W", "--worst-of", "11", "--robust",
        "--accelerations", "4", "8", "--center-fractions", "0.08", "0.04", "--crop", "64",
        "--model-kwargs", '{"num_steps": 2}', "--loss", "ssim", "--lr", "0.01"])
    cfg = config_from_args(args)
    assert cfg == TrainConfig(data="D", worst_of=11, robust=True, accelerations=(4, 8),
                              center_fractions=(0.08, 0.04), crop=64,
                              model_kwargs={"num_steps": 2}, loss="ssim", lr=0.01)
    train_parser = parser._subparsers._group_actions[0].choices["train"]
    dests = {a.dest for a in train_parser._actions}
    for field in dataclasses.fields(TrainConfig):
        assert field.name in dests, field.name


def test_json_round_trip_and_workdir_guard(tmp_path):
    cfg = TrainConfig(data="D", accelerations=(4, 8), center_fractions=(0.08, 0.04))
    path = write_or_check(cfg, tmp_path)
    assert read_config(path) == cfg
    assert json.loads(path.read_text())["accelerations"] == [4, 8]
    write_or_check(cfg, tmp_path)  # same config: fine (resume)
    with pytest.raises(ConfigError, match=r"config.json.*chans: 32 -> 8.*--force"):
        write_or_check(cfg.replace(chans=8), tmp_path)
    write_or_check(cfg.replace(chans=8), tmp_path, force=True)
    assert read_config(path).chans == 8


@pytest.mark.parametrize("changes, message", [
    ({"loss": "l2"}, "loss='l2'"),
    ({"model": "resnet"}, "model='resnet'"),
    ({"accelerations": (4, 8)}, "one center fraction each"),
    ({"batch_size": 0}, "batch_size=0"),
    ({"crop": 8}, "crop=8"),
    ({"limit_val": 0}, "limit_val=0"),
])
def test_bad_values_are_named(changes, message):
    with pytest.raises(ConfigError, match=message):
        TrainConfig(**changes)


def test_unknown_keys_in_a_config_file(tmp_path):
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"data": "D", "learning_rate": 1}))
    with pytest.raises(ConfigError, match=r"config.json.*learning_rate"):
        read_config(path)


def test_optimizer_is_torch_rmsprop_with_step_decay():
    """optax chain vs a hand-written torch.optim.RMSprop (eps outside the sqrt) + StepLR."""
    cfg = TrainConfig(epochs=5, lr=0.1, rms_eps=1e-2, lr_step_fraction=0.6)  # drop after epoch 3
    steps_per_epoch = 2
    tx = make_optimizer(cfg, steps_per_epoch)
    rng = np.random.default_rng(0)
    grads = rng.normal(size=(10, 3)).astype(np.float32)
    p = np.zeros(3, np.float64)
    sq = np.zeros(3, np.float64)
    params = jnp.zeros(3)
    state = tx.init(params)
    for step, g in enumerate(grads):
        lr = 0.1 * (0.1 if step >= 3 * steps_per_epoch else 1.0)
        sq = 0.99 * sq + 0.01 * g.astype(np.float64) ** 2
        p = p - lr * g / (np.sqrt(sq) + 1e-2)
        updates, state = tx.update(jnp.asarray(g), state, params)
        params = optax.apply_updates(params, updates)
    np.testing.assert_allclose(np.asarray(params), p, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("model", ["unet", "unet-v0"])
def test_model_config_builds_the_architecture(model):
    from fnaf_jax.models.registry import build_abstract_model

    cfg = TrainConfig(model=model, chans=8, num_pools=3, drop_prob=0.1)
    net = build_abstract_model(cfg.model_config())
    assert (net.chans, net.num_pool_layers, net.drop_prob) == (8, 3, 0.1)


def test_irim_gets_the_release_recipe_unless_flags_say_otherwise():
    irim = config_from_args(build_parser().parse_args(["train", "--data", "d", "--workdir", "w", "--model", "irim"]))
    assert (irim.lr, irim.loss, irim.lr_step_fraction) == (1e-4, "ssim", 0.6)
    tuned = config_from_args(build_parser().parse_args(
        ["train", "--data", "d", "--workdir", "w", "--model", "irim", "--lr", "1e-3", "--loss", "l1"]))
    assert (tuned.lr, tuned.loss, tuned.lr_step_fraction) == (1e-3, "l1", 0.6)
    assert TrainConfig.from_dict(irim.to_dict()) == irim
