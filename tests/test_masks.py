"""fastMRI column masks: bit-exact against tests/golden/masks.json, plus the rules behind them."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from fnaf_jax import masks
from fnaf_jax.errors import ConfigError

CASES = json.loads((Path(__file__).parent / "golden" / "masks.json").read_text())[
    "cases"
]


def _case_id(case):
    return f"{case['mask_type']}-{case['center_fractions']}-{case['accelerations']}-{case['seed']}"


@pytest.mark.parametrize("case", CASES, ids=[_case_id(c) for c in CASES])
def test_golden_masks_bit_exact(case):
    cls = masks.MASK_TYPES[case["mask_type"]]
    if case["allow_any_combination"]:
        func = cls(
            case["center_fractions"], case["accelerations"], allow_any_combination=True
        )
    else:
        func = masks.create_mask_for_mask_type(
            case["mask_type"], case["center_fractions"], case["accelerations"]
        )
    mask, num_low = func(
        case["shape"], offset=case["offset"], seed=masks.file_seed(case["seed"])
    )

    assert mask.dtype == np.float32
    assert mask.shape == (1, case["num_cols"], 1)  # ones except axis -2, like fastMRI
    assert set(np.unique(mask)) <= {0.0, 1.0}
    assert np.flatnonzero(mask.ravel()).tolist() == case["sampled_columns"]
    assert num_low == case["num_low_frequencies"] and isinstance(num_low, int)

    # column_mask is the same draw, flattened
    flat, flat_low = masks.column_mask(
        func, case["num_cols"], seed=masks.file_seed(case["seed"])
    )
    assert flat.shape == (case["num_cols"],) and flat.dtype == np.float32
    np.testing.assert_array_equal(flat, mask.ravel())
    assert flat_low == num_low


def test_file_seed_uses_the_file_name():
    assert masks.file_seed("file1000001.h5") == tuple(ord(c) for c in "file1000001.h5")
    assert masks.file_seed("/data/knee/val/file1000001.h5") == masks.file_seed(
        "file1000001.h5"
    )
    with pytest.raises(ConfigError):
        masks.file_seed("")


def test_centre_block_is_sampled_and_placed_like_fastmri():
    # W = 33, 0.1 -> round(3.3) = 3 columns starting at (33 - 3 + 1) // 2 = 15
    func = masks.RandomMaskFunc([0.1], [4])
    mask, num_low = masks.column_mask(func, 33, seed=3)
    assert num_low == 3
    assert mask[15:18].tolist() == [1, 1, 1]
    # Python round is half to even: 0.125 * 20 = 2.5 -> 2 centre columns, at (20 - 2 + 1)//2 = 9
    mask, num_low = masks.column_mask(
        masks.EquispacedMaskFunc([0.125], [4]), 20, seed=0, offset=1
    )
    assert num_low == 2
    expected = np.zeros(20, np.float32)
    expected[1::4] = 1
    expected[9:11] = 1
    np.testing.assert_array_equal(mask, expected)


def test_seeded_call_restores_the_generator_state():
    a = masks.RandomMaskFunc([0.08], [4], seed=123)
    b = masks.RandomMaskFunc([0.08], [4], seed=123)
    seeded, _ = masks.column_mask(b, 368, seed=masks.file_seed("file1000001.h5"))
    again, _ = masks.column_mask(b, 368, seed=masks.file_seed("file1000001.h5"))
    np.testing.assert_array_equal(seeded, again)
    # b's own stream continues as if the seeded calls never happened
    for _ in range(3):
        np.testing.assert_array_equal(
            masks.column_mask(a, 368)[0], masks.column_mask(b, 368)[0]
        )


def test_random_mask_matches_an_independent_draw_with_any_combination():
    """allow_any_combination: two rng.choice draws pick (cf, acc), then W uniforms."""
    cfs, accs, num_cols, seed = [0.08, 0.04], [4, 8, 6], 101, (7, 8, 9)
    func = masks.RandomMaskFunc(cfs, accs, allow_any_combination=True)
    for offset_seed in range(4):
        s = seed + (offset_seed,)
        mask, num_low = masks.column_mask(func, num_cols, seed=s)

        rs = np.random.RandomState(s)
        cf, acc = rs.choice(cfs), rs.choice(accs)
        n_low = round(num_cols * cf)
        prob = (num_cols / acc - n_low) / (num_cols - n_low)
        expected = (rs.uniform(size=num_cols) < prob).astype(np.float32)
        start = (num_cols - n_low + 1) // 2
        expected[start : start + n_low] = 1
        assert num_low == n_low
        np.testing.assert_array_equal(mask, expected)


def test_equispaced_with_given_offset_draws_nothing():
    func = masks.EquispacedMaskFunc([0.08], [4], seed=5)
    ref = np.random.RandomState(5)
    mask, num_low = masks.column_mask(func, 64, offset=2)
    assert num_low == 5  # round(64 * 0.08) = 5 columns from (64 - 5 + 1) // 2 = 30
    expected = np.zeros(64, np.float32)
    expected[2::4] = 1
    expected[30:35] = 1
    np.testing.assert_array_equal(mask, expected)
    # randint(1) and the given offset consumed nothing from the function's stream
    assert func.rng.uniform() == ref.uniform()


@pytest.mark.parametrize("mask_type", sorted(masks.MASK_TYPES))
def test_sampling_rate_is_close_to_the_acceleration(mask_type):
    func = masks.create_mask_for_mask_type(mask_type, [0.08], [4])
    counts = [masks.column_mask(func, 368, seed=s)[0].sum() for s in range(40)]
    # random: 92 expected on average; equispaced: 92 + centre overlap; fraction: about 92
    assert 80 <= np.mean(counts) <= 120


def test_same_seed_same_mask_other_seed_other_mask():
    func = masks.RandomMaskFunc([0.08], [4])
    a, _ = masks.column_mask(func, 368, seed=masks.file_seed("file1000001.h5"))
    b, _ = masks.column_mask(func, 368, seed=masks.file_seed("file1000001.h5"))
    c, _ = masks.column_mask(func, 368, seed=masks.file_seed("file1000002.h5"))
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda: masks.RandomMaskFunc([0.08, 0.04], [4]), "same length"),
        (lambda: masks.RandomMaskFunc([0.08], [0.5]), "below 1"),
        (lambda: masks.RandomMaskFunc([1.2], [4]), "outside"),
        (lambda: masks.RandomMaskFunc([], []), "empty"),
        (lambda: masks.RandomMaskFunc(["a"], [4]), "numbers"),
        (
            lambda: masks.create_mask_for_mask_type("spiral", [0.08], [4]),
            "unknown mask type",
        ),
        (lambda: masks.RandomMaskFunc([0.08], [4])((368, 2)), "3 or more dimensions"),
        (
            lambda: masks.EquispacedMaskFunc([0.08], [2.5])((1, 368, 1)),
            "integer acceleration",
        ),
    ],
)
def test_bad_arguments_raise_config_error(make, match):
    with pytest.raises(ConfigError, match=match):
        make()


def test_config_error_is_a_value_error_like_fastmri():
    with pytest.raises(ValueError):
        masks.RandomMaskFunc([0.08, 0.04], [4])


def test_default_center_fraction_follows_fastmri_pairing():
    assert masks.default_center_fraction(4) == 0.08
    assert masks.default_center_fraction(8) == 0.04
    with pytest.raises(ConfigError, match="acceleration 6"):
        masks.default_center_fraction(6)
