"""UnetTask: host-side batches equal fastMRI's UnetDataTransform; loss and predict by hand."""

from __future__ import annotations

import jax
import numpy as np
import pytest
from flax import nnx

from fnaf_jax.data.fastmri import SliceDataset
from fnaf_jax.errors import DataError
from fnaf_jax.masks import create_mask_for_mask_type
from fnaf_jax.models.registry import build_abstract_model
from fnaf_jax.train.task import Task
from fnaf_jax.train.unet_task import UnetTask, image_loss


@pytest.fixture(scope="module")
def raw_items(synthetic_dir):
    ds = SliceDataset(synthetic_dir, transform="raw")
    return [ds[0], ds[4]]  # one slice of each volume


def _random_unet():
    """A tiny U-Net with numpy-drawn weights (compiling jax initialisers is slow on CPU)."""
    model = build_abstract_model({"arch": "unet", "chans": 4, "num_pool_layers": 2})
    rng = np.random.default_rng(0)
    nnx.update(model, jax.tree.map(lambda s: (0.2 * rng.normal(size=s.shape)).astype(s.dtype),
                                   nnx.state(model, nnx.Param)))
    return model


def test_is_a_task():
    assert isinstance(UnetTask(), Task)
    assert UnetTask.transform == "raw"


def test_validation_batch_equals_the_datasets_unet_transform(synthetic_dir, raw_items):
    """rng=None seeds masks by file name: same numbers as SliceDataset(transform="unet")."""
    mask_func = create_mask_for_mask_type("random", [0.08], [4])
    reference = SliceDataset(synthetic_dir, transform="unet", mask_func=mask_func, use_seed=True)
    batch = UnetTask(mask_func=mask_func).prepare_batch(raw_items, None)
    for b, index in enumerate((0, 4)):
        ref = reference[index]
        for key in ("image", "target", "mean", "std", "target_raw"):
            np.testing.assert_allclose(batch[key][b], ref[key], rtol=1e-6, atol=1e-6, err_msg=key)
    assert batch["image"].shape == (2, 320, 320) and batch["image"].dtype == np.float32
    assert batch["metadata"].shape == (2, 8)


def test_training_masks_follow_the_rng(raw_items):
    task = UnetTask()
    a = task.prepare_batch(raw_items, np.random.default_rng([0, 1, 2]))
    b = task.prepare_batch(raw_items, np.random.default_rng([0, 1, 2]))
    c = task.prepare_batch(raw_items, np.random.default_rng([0, 1, 3]))
    np.testing.assert_array_equal(a["image"], b["image"])
    assert not np.array_equal(a["image"], c["image"])
    np.testing.assert_array_equal(a["target_raw"], c["target_raw"])


def test_test_files_cannot_be_trained_on(raw_items):
    item = dict(raw_items[0], target_raw=None)
    with pytest.raises(DataError, match=r"file1000001.h5 slice 0: no target"):
        UnetTask().prepare_batch([item], None)


@pytest.mark.parametrize("name", ["l1", "mse", "ssim"])
def test_loss_and_predict_by_hand(raw_items, name):
    task = UnetTask(loss=name, crop=32)
    batch = task.prepare_batch(raw_items, None)
    model = _random_unet()
    crop = slice(144, 176)

    @jax.jit
    def run(b):  # one compiled call: eager U-Net calls compile op by op (slow)
        loss, aux = task.loss(model, b, jax.random.key(0))
        out = model(b["image"][:, crop, crop, None])[..., 0]
        full = model(b["image"][..., None])[..., 0]
        return loss, aux, out, full, task.predict(model, b)

    loss, aux, out, full, pred = (np.asarray(v) if not isinstance(v, dict) else v
                                  for v in run(batch))
    diff = out - batch["target"][:, crop, crop]
    expected = {"l1": np.abs(diff).mean(), "mse": np.square(diff).mean()}
    if name == "ssim":
        from fnaf_jax.metrics import ssim_map

        target = batch["target"][:, crop, crop].astype(np.float64)
        ranges = target.max(axis=(1, 2)) - target.min(axis=(1, 2))
        expected["ssim"] = 1 - np.mean([ssim_map(t, o, r).mean()
                                        for t, o, r in zip(target, out, ranges)])
    np.testing.assert_allclose(float(loss), expected[name], rtol=1e-4)
    np.testing.assert_allclose(float(aux["l1"]), np.abs(diff).mean(), rtol=1e-5)
    np.testing.assert_allclose(pred, full * batch["std"][:, None, None]
                               + batch["mean"][:, None, None], rtol=1e-5, atol=1e-6)


def test_image_loss_rejects_unknown_names():
    with pytest.raises(ValueError, match="huber"):
        image_loss("huber", np.zeros((1, 8, 8)), np.zeros((1, 8, 8)))


def test_slices_of_different_widths_batch_together(raw_items, tmp_path):
    """fastMRI mixes k-space widths (368, 372, ...): batches hold 320 x 320 images."""
    from fnaf_jax.data.synthetic import write_dataset
    from fnaf_jax.train.loop import item_batches

    write_dataset(tmp_path, n_volumes=1, n_slices=1, width=372, seed=1)
    wide = SliceDataset(tmp_path, transform="raw")[0]
    assert wide["kspace"].shape[-1] == 372 != raw_items[0]["kspace"].shape[-1]
    batch = UnetTask().prepare_batch([raw_items[0], wide], np.random.default_rng(0))
    assert batch["image"].shape == (2, 320, 320)
    # the loop reads items itself, in make_loader's (seed, epoch) order
    from fnaf_jax.data.loader import epoch_order

    order = epoch_order(7, shuffle=True, seed=5, epoch=2)
    got = list(item_batches(list(range(7)), 3, shuffle=True, seed=5, epoch=2,
                            drop_remainder=True))
    assert got == [order[:3].tolist(), order[3:6].tolist()]
