"""i-RIM training task (crops, masks, SSIM loss, Adam schedule) and an FNAF attack on an i-RIM."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from fnaf_jax.data.transforms import crop_field_of_view
from fnaf_jax.data.transforms import fft2c as fft2c_np
from fnaf_jax.errors import DataError
from fnaf_jax.masks import column_mask, create_mask_for_mask_type, file_seed
from fnaf_jax.models.irim import IRIM
from fnaf_jax.train.irim_task import IrimTask, train_step

TINY = {
    "n_steps": 2,
    "n_hidden": [12],
    "n_network_hidden": [8],
    "dilations": [2],
    "multiplicity": 1,
}


def _ifft2c(k):
    return np.fft.fftshift(np.fft.ifft2(np.fft.ifftshift(k), norm="ortho"))


def _item(seed, h=40, w=36, fname="file1000001.h5"):
    rng = np.random.default_rng(seed)
    image = rng.normal(size=(h, w)) + 1j * rng.normal(size=(h, w))
    image[10:30, 8:28] += 4.0  # a bright block, so SSIM has structure to match
    target = np.abs(image[(h - 32) // 2 :][:32, (w - 32) // 2 :][:, :32]).astype(
        np.float32
    )
    return {
        "kspace": fft2c_np(image).astype(np.complex64),
        "target_raw": target,
        "max_value": float(target.max()),
        "metadata": np.eye(8, dtype=np.float32)[7],
        "fname": fname,
        "slice_num": seed,
    }


@pytest.mark.parametrize("size", [30, 47])  # crop, and zero-pad beyond the 40x36 image
def test_field_of_view_crop_is_the_release_pad_and_crop(size):
    rng = np.random.default_rng(0)
    image = rng.normal(size=(40, 36)) + 1j * rng.normal(size=(40, 36))
    got = _ifft2c(crop_field_of_view(fft2c_np(image), size))
    # the release pads every side by max(H - size, W - size) // 2 + 1, then centre-crops
    # (for size > H, W that is negative, F.pad would crop: pad generously instead)
    p = max(40 - size, 36 - size) // 2 + 1 if size < 36 else size
    padded = np.pad(image, p)
    r, c = (padded.shape[0] - size) // 2, (padded.shape[1] - size) // 2
    np.testing.assert_allclose(got, padded[r : r + size, c : c + size], atol=1e-5)


def test_prepare_batch_masks_crops_and_targets():
    task = IrimTask(mask_func=create_mask_for_mask_type("random", [0.08], [4]), crop=24)
    items = [_item(0), _item(1, fname="file1000002.h5")]
    train = task.prepare_batch(items, np.random.default_rng([0, 0, 0]))
    assert train["y"].shape == (2, 24, 24) and train["y"].dtype == np.complex64
    assert train["target"].shape == (2, 24, 24) and train["target_raw"].shape == (
        2,
        32,
        32,
    )
    again = task.prepare_batch(items, np.random.default_rng([0, 0, 0]))
    np.testing.assert_array_equal(train["mask"], again["mask"])  # replayable from rng
    # y is the zero-filled image of the cropped field of view
    k = crop_field_of_view(items[0]["kspace"], 24) * train["mask"][0][None, :]
    np.testing.assert_allclose(train["y"][0], _ifft2c(k), atol=1e-5)
    np.testing.assert_array_equal(
        train["target"][0], items[0]["target_raw"][4:28, 4:28]
    )
    # validation: masks seeded by the file name; the output covers the whole target
    val = task.prepare_batch(items, None)
    assert val["y"].shape == (2, 32, 32) and val["target"].shape == (2, 32, 32)
    want, _ = column_mask(task.mask_func, 32, seed=file_seed("file1000002.h5"))
    np.testing.assert_array_equal(val["mask"][1], want)
    with pytest.raises(DataError, match="no target"):
        task.prepare_batch([{**items[0], "target_raw": None}], None)


def test_adam_step_decay_schedule():
    task = IrimTask(lr=1e-3, lr_step_epochs=2, lr_gamma=0.1)
    tx = task.optimizer(steps_per_epoch=3)
    params = jnp.zeros(2)
    state = tx.init(params)
    steps = []
    for _ in range(7):  # constant gradient: each Adam update is -lr
        update, state = tx.update(jnp.ones(2), state, params)
        steps.append(float(-update[0]))
    np.testing.assert_allclose(steps[:6], 1e-3, rtol=1e-4)
    np.testing.assert_allclose(steps[6], 1e-4, rtol=1e-4)  # after 2 epochs x 3 steps


def test_training_steps_reduce_the_ssim_loss():
    task = IrimTask(crop=24, lr=3e-3)
    batch = task.prepare_batch([_item(0), _item(1)], np.random.default_rng(0))
    model = IRIM(**TINY, rngs=nnx.Rngs(0))  # memory-free gradients (the default)
    optimizer = nnx.Optimizer(model, task.optimizer(), wrt=nnx.Param)
    step = nnx.jit(lambda m, o, b: train_step(m, o, task, b))
    losses = [float(step(model, optimizer, batch)[0]) for _ in range(6)]
    assert all(np.isfinite(losses)) and 0 < losses[0] < 2
    assert losses[-1] < losses[0], losses
    pred = task.predict(model, batch)
    assert pred.shape == (2, 24, 24)


def test_random_search_attack_on_a_tiny_irim():
    from fnaf_jax.attacks.config import AttackConfig
    from fnaf_jax.attacks.random_search import random_search
    from fnaf_jax.features import FeatureConfig
    from fnaf_jax.objective import make_scorer

    model = IRIM(**TINY, rngs=nnx.Rngs(1))
    rng = np.random.default_rng(2)
    y = np.abs(rng.normal(size=(2, 48, 48))).astype(np.float32)
    mask = np.stack(
        [
            column_mask(create_mask_for_mask_type("random", [0.08], [4]), 48, seed=s)[0]
            for s in (1, 2)
        ]
    )
    batch = {
        "target_raw": y,
        "mask": mask,
        "metadata": np.eye(8, dtype=np.float32)[[0, 5]],
    }
    cfg = AttackConfig(k=3, features=FeatureConfig(image_shape=(48, 48), box_size=24))
    result = random_search(
        make_scorer(model), batch, jax.random.split(jax.random.key(0), 2), cfg
    )
    losses = np.asarray(result.losses)
    assert losses.shape[0] == 2 and np.all(np.isfinite(losses))
    assert np.all(losses >= 0)
