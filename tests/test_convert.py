"""PyTorch checkpoint conversion: every checkpoint flavour, architecture/size inference,
key/shape error reports, unsafe and corrupt files, and the `fnaf convert` round trip."""

from __future__ import annotations

import argparse
import pathlib

import jax
import numpy as np
import pytest
import torch
from flax import nnx

from fnaf_jax import cli
from fnaf_jax.errors import CheckpointError, ConfigError
from fnaf_jax.models import store
from fnaf_jax.models.convert import (
    build_abstract_model,
    detect_arch,
    expected_torch_shapes,
    infer_unet_config,
    load_torch,
    parameter_count,
)


def params_of(model):
    return jax.tree_util.tree_map(np.asarray, nnx.to_pure_dict(nnx.state(model, nnx.Param)))


def assert_same_params(a, b):
    flat_a = jax.tree_util.tree_leaves_with_path(params_of(a))
    flat_b = dict(jax.tree_util.tree_leaves_with_path(params_of(b)))
    assert len(flat_a) == len(flat_b)
    for path, value in flat_a:
        np.testing.assert_array_equal(value, flat_b[path])


def nhwc_forward(model, x_nchw):
    return np.asarray(nnx.jit(lambda m, x: m(x))(model, x_nchw.transpose(0, 2, 3, 1))).transpose(0, 3, 1, 2)


@pytest.fixture(scope="module")
def fastmri_state(golden):
    return torch.load(golden / "unet_fastmri.pt", weights_only=True)


@pytest.fixture(scope="module")
def fastmri_model(golden):
    return load_torch(golden / "unet_fastmri.pt")[0]


@pytest.fixture(scope="module")
def v0_state(golden):
    return torch.load(golden / "unet_v0.pt", weights_only=True)


# ------------------------------------------------------------------ checkpoint flavours


def test_lightning_checkpoint(tmp_path, fastmri_state, fastmri_model):
    # fastMRI's UnetModule keeps the network as `self.unet`; Lightning adds its own entries.
    ckpt = {
        "epoch": 3,
        "global_step": 120,
        "pytorch-lightning_version": "2.4.0",
        "state_dict": {f"unet.{k}": v for k, v in fastmri_state.items()},
        "hyper_parameters": {"chans": 8, "num_pool_layers": 3, "drop_prob": 0.0, "lr": 1e-3},
        "optimizer_states": [{"state": {}, "param_groups": [{"lr": 1e-3, "params": [0, 1]}]}],
        "lr_schedulers": [],
    }
    torch.save(ckpt, tmp_path / "lightning.ckpt")
    model, config = load_torch(tmp_path / "lightning.ckpt")
    assert config["arch"] == "unet" and config["chans"] == 8
    assert_same_params(model, fastmri_model)


def test_module_prefix_state_dict(tmp_path, fastmri_state, fastmri_model):
    torch.save({f"module.{k}": v for k, v in fastmri_state.items()}, tmp_path / "dp.pt")
    model, _ = load_torch(tmp_path / "dp.pt", arch="unet")
    assert_same_params(model, fastmri_model)


def test_fnaf_training_checkpoint_with_args_legacy_format(tmp_path, golden, v0_state):
    # The FNAF / fastMRI-2019 training scripts save {'model', 'args', ...}; args holds paths.
    # torch 1.3 wrote the legacy (non-zip) format.
    args = argparse.Namespace(num_chans=8, num_pools=3, drop_prob=0.25, lr=1e-3,
                              data_path=pathlib.PosixPath("/data/knee"), exp_dir=pathlib.PosixPath("/tmp/exp"))
    ckpt = {"epoch": 7, "args": args, "model": {f"module.{k}": v for k, v in v0_state.items()},
            "optimizer": {"state": {}, "param_groups": []}, "best_dev_loss": 0.1,
            "exp_dir": pathlib.PosixPath("/tmp/exp")}
    torch.save(ckpt, tmp_path / "fnaf.pt", _use_new_zipfile_serialization=False)
    assert (tmp_path / "fnaf.pt").read_bytes()[:2] == b"\x80\x02"  # legacy pickle, not a zip

    model, config = load_torch(tmp_path / "fnaf.pt")
    assert config == {"arch": "unet-v0", "in_chans": 1, "out_chans": 1, "chans": 8,
                      "num_pool_layers": 3, "drop_prob": 0.25}  # drop_prob read from args
    io = np.load(golden / "unet_v0_io.npz")  # eval mode: dropout off, golden outputs hold
    out = nhwc_forward(model, io["x"])
    assert np.abs(out - io["y"]).max() <= 1e-5 * np.abs(io["y"]).max()


def test_plain_legacy_state_dict(tmp_path, fastmri_state, fastmri_model):
    torch.save(fastmri_state, tmp_path / "legacy.pt", _use_new_zipfile_serialization=False)
    model, _ = load_torch(tmp_path / "legacy.pt")
    assert_same_params(model, fastmri_model)


def test_irim_checkpoint_is_dispatched(golden, monkeypatch):
    # The i-RIM converter itself is tested with its model; here: detection and hand-over.
    from fnaf_jax.models import convert_irim

    calls = []
    monkeypatch.setattr(convert_irim, "from_torch",
                        lambda state, args, source: calls.append((state, args, source)) or ("model", {}))
    assert load_torch(golden / "irim_small.pt") == ("model", {})  # legacy format, Namespace args
    state, args, source = calls[0]
    assert len(state) == 88 and not any(k.startswith("module.") for k in state)
    assert all(isinstance(v, np.ndarray) and v.dtype == np.float32 for v in state.values())
    assert args.n_steps == 2 and source.endswith("irim_small.pt")
    load_torch(state, config={"n_steps": 2})  # an explicit config replaces the args
    assert calls[1][1] == {"n_steps": 2}


# -------------------------------------------------------------------------- inference


def read_keys_file(path):
    shapes = {}
    for line in path.read_text().splitlines():
        if line.startswith("#") or not line.strip():
            continue
        key, shape, _ = line.split("\t")
        shapes[key] = tuple(int(s) for s in shape.strip("()").split(",") if s.strip())
    return shapes


def test_leaderboard_unet_inferred_and_matched_abstractly(golden):
    # The released knee single-coil U-Net: 496M parameters, never allocated here.
    shapes = read_keys_file(golden / "unet_sc_leaderboard_keys.txt")
    assert detect_arch(shapes) == "unet"
    config = infer_unet_config("unet", shapes)
    assert config == {"arch": "unet", "in_chans": 1, "out_chans": 1, "chans": 256,
                      "num_pool_layers": 4, "drop_prob": 0.0}
    model = build_abstract_model(config)
    assert expected_torch_shapes(model, "unet") == shapes
    assert parameter_count(model) == 496_372_225


def test_detect_arch_from_keys(golden):
    assert detect_arch(np.load(golden / "unet_v0_state.npz").files) == "unet-v0"
    assert detect_arch(np.load(golden / "unet_fastmri_state.npz").files) == "unet"
    irim_keys = read_keys_file(golden / "irim_released_keys.txt")
    assert detect_arch(k.removeprefix("module.") for k in irim_keys) == "irim"
    with pytest.raises(CheckpointError, match="cannot tell the architecture"):
        detect_arch(["encoder.weight", "decoder.bias"])


# ------------------------------------------------------------------------------ errors


def test_every_mismatch_is_listed_in_one_error(golden):
    state = dict(np.load(golden / "unet_fastmri_state.npz"))
    del state["up_conv.1.layers.4.weight"]
    state["up_conv.1.layers.4.bias"] = np.zeros(16, np.float32)
    state["extra.running_mean"] = np.zeros(3, np.float32)
    state["conv.layers.0.weight"] = np.zeros((64, 32, 5, 5), np.float32)
    with pytest.raises(CheckpointError) as info:
        load_torch(state)
    message = str(info.value)
    assert "<state dict>" in message
    assert "1 missing: up_conv.1.layers.4.weight" in message
    assert "2 unexpected:" in message and "up_conv.1.layers.4.bias" in message and "extra.running_mean" in message
    assert "1 with the wrong shape: conv.layers.0.weight (64, 32, 5, 5) (expected (64, 32, 3, 3))" in message


def test_config_that_does_not_fit_the_weights(golden):
    state = dict(np.load(golden / "unet_v0_state.npz"))
    with pytest.raises(CheckpointError, match="wrong shape"):
        load_torch(state, config={"chans": 16})
    with pytest.raises(CheckpointError, match="unexpected: down_sample_layers.2"):
        load_torch(state, config={"num_pool_layers": 2})
    with pytest.raises(ConfigError, match="unknown config entries"):
        load_torch(state, config={"width": 3})
    with pytest.raises(ConfigError, match="contradicts"):
        load_torch(state, arch="unet", config={"arch": "unet-v0"})


def test_unknown_arch(golden):
    with pytest.raises(ConfigError, match="unknown architecture 'resnet'"):
        load_torch(golden / "unet_fastmri.pt", arch="resnet")


def test_wrong_arch_lists_the_mismatch(golden):
    with pytest.raises(CheckpointError, match="missing: .*up_transpose_conv"):
        load_torch(golden / "unet_v0.pt", arch="unet")


def test_corrupt_and_missing_files(tmp_path, fastmri_state):
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(np.random.default_rng(0).bytes(4096))
    with pytest.raises(CheckpointError, match="garbage.pt: not a readable PyTorch checkpoint"):
        load_torch(garbage)

    torch.save(fastmri_state, tmp_path / "whole.pt")
    data = (tmp_path / "whole.pt").read_bytes()
    (tmp_path / "truncated.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated.pt: not a readable PyTorch checkpoint"):
        load_torch(tmp_path / "truncated.pt")

    with pytest.raises(CheckpointError, match="nothing.pt: no such checkpoint file"):
        load_torch(tmp_path / "nothing.pt")

    torch.save([1, 2, 3], tmp_path / "list.pt")
    with pytest.raises(CheckpointError, match="list.pt: expected a state dict"):
        load_torch(tmp_path / "list.pt")


class _Payload:
    """Unpickling this would create a file: the loader must refuse it instead."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (pathlib.Path.touch, (self.path,))


def test_arbitrary_objects_are_never_unpickled(tmp_path, fastmri_state):
    marker = tmp_path / "executed"
    torch.save({"model": dict(fastmri_state), "hook": _Payload(marker)}, tmp_path / "evil.pt")
    with pytest.raises(CheckpointError, match="evil.pt: not loaded: it holds "):
        load_torch(tmp_path / "evil.pt")
    assert not marker.exists()


# ---------------------------------------------------------------------------- the CLI


def test_fnaf_convert_round_trip(tmp_path, capsys):
    # A tiny random fastMRI U-Net keeps the checkpoint rebuild (random init, then restore) cheap.
    config = {"arch": "unet", "in_chans": 1, "out_chans": 1, "chans": 2, "num_pool_layers": 1, "drop_prob": 0.0}
    rng = np.random.default_rng(0)
    shapes = expected_torch_shapes(build_abstract_model(config), "unet")
    torch.save({k: torch.from_numpy(rng.normal(size=v).astype(np.float32)) for k, v in shapes.items()},
               tmp_path / "tiny.pt")
    out = tmp_path / "ckpt"
    status = cli.main(["convert", str(tmp_path / "tiny.pt"), "--arch", "unet", "--out", str(out)])
    printed = capsys.readouterr().out
    assert status == 0
    n_params = sum(int(np.prod(v)) for v in shapes.values())
    assert "arch: unet" in printed and f"parameters: {n_params:,}" in printed and '"chans": 2' in printed

    restored, record = store.load_model(out)
    assert record["config"] == config
    assert record["meta"]["source"].endswith("tiny.pt")
    converted, _ = load_torch(tmp_path / "tiny.pt")
    assert_same_params(restored, converted)
    x = rng.normal(size=(1, 1, 10, 12)).astype(np.float32)
    np.testing.assert_array_equal(nhwc_forward(restored, x), nhwc_forward(converted, x))


def test_fnaf_convert_reports_errors_in_one_line(tmp_path, capsys):
    bad = tmp_path / "bad.pt"
    bad.write_text("not a checkpoint")
    assert cli.main(["convert", str(bad), "--out", str(tmp_path / "ckpt")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("fnaf convert: error:") and "bad.pt" in err and "\n" not in err
    assert cli.main(["convert", str(bad), "--config", "[1]", "--out", str(tmp_path / "c")]) == 2
    assert "--config" in capsys.readouterr().err
    assert not (tmp_path / "ckpt").exists()
