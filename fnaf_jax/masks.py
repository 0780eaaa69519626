"""fastMRI column under-sampling masks, bit-exact with fastMRI 0.3.0 (``fastmri.data.subsample``).

A mask function is called like fastMRI's: ``mask_func(shape, offset=None, seed=None)``
returns ``(mask, num_low_frequencies)``, where ``mask`` is a float32 numpy array of 1s
except along axis -2, which holds the ``shape[-2]`` k-space columns.

Bit-exactness rests on drawing the same numbers in the same order from a numpy
``RandomState`` (legacy MT19937; JAX's PRNG cannot reproduce them, so masks are built
on the host):

1. a seeded call saves the generator state, reseeds, samples, then restores the state;
2. one draw chooses (center fraction, acceleration): ``randint(len)``, which consumes
   nothing when there is a single option, or two ``choice`` draws when
   ``allow_any_combination`` is set;
3. ``num_low = round(num_cols * center_fraction)`` with Python's round (half to even);
4. the type-specific draw of the outer columns (uniforms or an offset).

Seeds for validation files are ``file_seed(fname) = tuple(map(ord, fname))``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import math
import os
from collections.abc import Sequence

import numpy as np

from fnaf_jax.errors import ConfigError

Seed = int | tuple[int, ...] | None


def file_seed(fname: str | os.PathLike) -> tuple[int, ...]:
    """fastMRI's per-file mask seed: the code points of the file *name* (e.g. "file1000001.h5").

    Only the base name counts (fastMRI seeds with ``Path.name``), so a path and its
    name give the same seed.
    """
    name = os.path.basename(os.fspath(fname))
    if not name:
        raise ConfigError(
            f"cannot derive a mask seed from an empty file name: {fname!r}"
        )
    return tuple(map(ord, name))


@contextlib.contextmanager
def _seeded(rng: np.random.RandomState, seed: Seed):
    """Reseed ``rng`` for the duration of the block and restore its state afterwards."""
    if seed is None:
        yield
        return
    saved = rng.get_state()
    rng.seed(seed)
    try:
        yield
    finally:
        rng.set_state(saved)


def _check_number_list(name: str, values) -> list:
    try:
        values = list(values)
    except TypeError:
        raise ConfigError(f"{name} must be a list of numbers, got {values!r}") from None
    if not values:
        raise ConfigError(f"{name} must not be empty")
    for v in values:
        if isinstance(v, bool) or not isinstance(
            v, (int, float, np.integer, np.floating)
        ):
            raise ConfigError(f"{name} must hold numbers, got {v!r}")
        if not math.isfinite(float(v)):
            raise ConfigError(f"{name} must hold finite numbers, got {v!r}")
    return values


class MaskFunc:
    """Base class: a densely sampled centre plus a type-specific set of outer columns.

    Subclasses implement ``calculate_acceleration_mask`` (fastMRI's hook); the
    centre block, the choice of (center fraction, acceleration) and the seeding
    follow fastMRI exactly.
    """

    def __init__(
        self,
        center_fractions: Sequence[float],
        accelerations: Sequence[float],
        allow_any_combination: bool = False,
        seed: Seed = None,
    ):
        center_fractions = _check_number_list("center_fractions", center_fractions)
        accelerations = _check_number_list("accelerations", accelerations)
        if len(center_fractions) != len(accelerations) and not allow_any_combination:
            raise ConfigError(
                f"center_fractions {center_fractions} and accelerations {accelerations} "
                "must have the same length unless allow_any_combination is set"
            )
        for cf in center_fractions:
            if not 0 <= cf < 1:
                raise ConfigError(f"center fraction {cf!r} is outside [0, 1)")
        for acc in accelerations:
            if acc < 1:
                raise ConfigError(f"acceleration {acc!r} is below 1")
        self.center_fractions = center_fractions
        self.accelerations = accelerations
        self.allow_any_combination = bool(allow_any_combination)
        self.rng = np.random.RandomState(seed)

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(center_fractions={self.center_fractions}, "
            f"accelerations={self.accelerations}, "
            f"allow_any_combination={self.allow_any_combination})"
        )

    def __call__(
        self, shape: Sequence[int], offset: int | None = None, seed: Seed = None
    ) -> tuple[np.ndarray, int]:
        """Sample a mask for k-space of ``shape`` (columns = ``shape[-2]``)."""
        shape = tuple(shape)
        if len(shape) < 3:
            raise ConfigError(
                f"mask shape {shape} must have 3 or more dimensions "
                "(fastMRI k-space layout: ..., rows, columns, 2)"
            )
        num_cols = int(shape[-2])
        if num_cols < 1:
            raise ConfigError(
                f"mask shape {shape} has no columns (shape[-2] = {num_cols})"
            )
        with _seeded(self.rng, seed):
            center, outer, num_low = self.sample_mask(shape, offset)
        return np.maximum(center, outer), num_low

    def sample_mask(
        self, shape: Sequence[int], offset: int | None
    ) -> tuple[np.ndarray, np.ndarray, int]:
        """Centre mask, outer-column mask (both reshaped like fastMRI's) and num_low."""
        num_cols = int(shape[-2])
        center_fraction, acceleration = self.choose_acceleration()
        # Python round (half to even); int() because numpy < 2 rounds np.float64 to float.
        num_low = int(round(num_cols * center_fraction))  # noqa: RUF046
        if num_low >= num_cols:
            raise ConfigError(
                f"center fraction {center_fraction} keeps all {num_cols} columns; "
                "nothing is left to under-sample"
            )
        center = self.calculate_center_mask(shape, num_low)
        outer = self.calculate_acceleration_mask(
            num_cols, acceleration, offset, num_low
        )
        return (
            self.reshape_mask(center, shape),
            self.reshape_mask(outer, shape),
            num_low,
        )

    def choose_acceleration(self):
        """One (center fraction, acceleration) pair, drawn exactly as fastMRI draws it."""
        if self.allow_any_combination:
            return self.rng.choice(self.center_fractions), self.rng.choice(
                self.accelerations
            )
        # randint(1) draws nothing, so a single option leaves the stream untouched.
        choice = self.rng.randint(len(self.center_fractions))
        return self.center_fractions[choice], self.accelerations[choice]

    @staticmethod
    def reshape_mask(mask: np.ndarray, shape: Sequence[int]) -> np.ndarray:
        """(W,) -> float32 array of ones except axis -2 (fastMRI's broadcastable layout)."""
        mask_shape = [1] * len(shape)
        mask_shape[-2] = int(shape[-2])
        return np.asarray(mask).reshape(mask_shape).astype(np.float32)

    @staticmethod
    def calculate_center_mask(shape: Sequence[int], num_low: int) -> np.ndarray:
        """Ones on the ``num_low`` central columns, starting at ``(W - num_low + 1) // 2``."""
        num_cols = int(shape[-2])
        mask = np.zeros(num_cols, dtype=np.float32)
        start = (num_cols - num_low + 1) // 2
        mask[start : start + num_low] = 1
        return mask

    def calculate_acceleration_mask(
        self, num_cols: int, acceleration: float, offset: int | None, num_low: int
    ) -> np.ndarray:
        raise NotImplementedError


class RandomMaskFunc(MaskFunc):
    """Outer columns kept independently with probability ``(W/acc - num_low)/(W - num_low)``,
    so that ``W/acc`` columns are sampled on average."""

    def calculate_acceleration_mask(self, num_cols, acceleration, offset, num_low):
        prob = (num_cols / acceleration - num_low) / (num_cols - num_low)
        return self.rng.uniform(size=num_cols) < prob


def _integer_acceleration(acceleration) -> int:
    if float(acceleration) != int(acceleration):
        raise ConfigError(
            f"equispaced masks need an integer acceleration, got {acceleration!r}"
        )
    return int(acceleration)


class EquispacedMaskFunc(MaskFunc):
    """Every ``acc``-th column from a random (or given) offset, plus the dense centre.

    As in fastMRI, the centre makes the true acceleration lower than ``acc``.
    """

    def calculate_acceleration_mask(self, num_cols, acceleration, offset, num_low):
        acceleration = _integer_acceleration(acceleration)
        if offset is None:
            offset = self.rng.randint(0, high=round(acceleration))
        mask = np.zeros(num_cols, dtype=np.float32)
        mask[offset::acceleration] = 1
        return mask


# fastMRI spells the class with a capital S; keep that name working too.
EquiSpacedMaskFunc = EquispacedMaskFunc


class EquispacedMaskFractionFunc(MaskFunc):
    """Equispaced outer columns with the spacing adjusted for the centre, so the total
    matches ``W/acc``. Spacing is fractional; positions are rounded half to even
    (``np.around``), so the lines are only approximately equispaced (as in fastMRI)."""

    def calculate_acceleration_mask(self, num_cols, acceleration, offset, num_low):
        denominator = num_low * acceleration - num_cols
        if denominator >= 0:
            # The centre alone already reaches W/acc columns: sample nothing outside it
            # (fastMRI does the same when given an offset, and fails without one).
            return np.zeros(num_cols)
        spacing = acceleration * (num_low - num_cols) / denominator
        if offset is None:
            offset = self.rng.randint(0, high=round(spacing))
        mask = np.zeros(num_cols)
        positions = np.around(np.arange(offset, num_cols - 1, spacing)).astype(np.uint)
        mask[positions] = 1.0
        return mask


MASK_TYPES = {
    "random": RandomMaskFunc,
    "equispaced": EquispacedMaskFunc,
    "equispaced_fraction": EquispacedMaskFractionFunc,
}


#: fastMRI's pairing of acceleration and centre fraction (4x keeps 8%, 8x keeps 4%).
CENTER_FRACTIONS = {4: 0.08, 8: 0.04}


def default_center_fraction(acceleration) -> float:
    """The centre fraction fastMRI pairs with ``acceleration``; ConfigError for others."""
    if acceleration not in CENTER_FRACTIONS:
        raise ConfigError(f"acceleration {acceleration}: give a centre fraction "
                          f"(known pairs: {CENTER_FRACTIONS})")
    return CENTER_FRACTIONS[acceleration]


def create_mask_for_mask_type(
    mask_type_str: str,
    center_fractions: Sequence[float],
    accelerations: Sequence[float],
    allow_any_combination: bool = False,
    seed: Seed = None,
) -> MaskFunc:
    """The mask function named ``mask_type_str`` ("random", "equispaced", "equispaced_fraction")."""
    try:
        cls = MASK_TYPES[mask_type_str]
    except KeyError:
        known = ", ".join(sorted(MASK_TYPES))
        raise ConfigError(
            f"unknown mask type {mask_type_str!r}; known: {known}"
        ) from None
    return cls(center_fractions, accelerations, allow_any_combination, seed)


def column_mask(
    mask_func: MaskFunc, num_cols: int, seed: Seed = None, offset: int | None = None
) -> tuple[np.ndarray, int]:
    """A flat (W,) float32 column mask and its number of low frequencies.

    Same draws as ``mask_func((640, num_cols, 2), offset, seed)``: only the column
    count matters to a mask function.
    """
    mask, num_low = mask_func((1, int(num_cols), 1), offset=offset, seed=seed)
    return mask.reshape(int(num_cols)), num_low


SEED_RANGE = 2**32  # numpy RandomState seeds must be < 2**32


def draw_column_mask(mask_func: MaskFunc, num_cols: int, fname, rng: np.random.Generator | None) -> np.ndarray:
    """The (W,) float32 mask of one slice: seeded by the file name when ``rng`` is None
    (fastMRI's validation convention), else drawn from ``rng`` (training: the loop derives
    ``rng`` from the position in training, so a resumed run replays the same masks)."""
    seed = file_seed(fname) if rng is None else int(rng.integers(SEED_RANGE))
    return np.asarray(column_mask(mask_func, num_cols, seed=seed)[0], np.float32)


@dataclasses.dataclass(frozen=True)
class MaskSpec:
    """One under-sampling pattern: type, acceleration, centre fraction (None: fastMRI's
    pairing, 4x 0.08 and 8x 0.04)."""

    acceleration: int = 4
    center_fraction: float | None = None
    mask_type: str = "random"

    def fraction(self) -> float:
        if self.center_fraction is not None:
            return float(self.center_fraction)
        return default_center_fraction(self.acceleration)

    def mask_func(self) -> MaskFunc:
        return create_mask_for_mask_type(self.mask_type, [self.fraction()], [self.acceleration])


DEFAULT_MASK = MaskSpec()


@functools.lru_cache(maxsize=4096)
def _file_mask(spec: MaskSpec, name: str, num_cols: int) -> np.ndarray:
    mask = draw_column_mask(spec.mask_func(), num_cols, name, None)
    mask.flags.writeable = False  # shared by every caller: nobody may change it
    return mask


def file_mask(spec: MaskSpec, fname, num_cols: int) -> np.ndarray:
    """The (W,) mask of every slice of ``fname`` (seeded by the file name; memoised)."""
    return _file_mask(spec, os.path.basename(os.fspath(fname)), int(num_cols))
