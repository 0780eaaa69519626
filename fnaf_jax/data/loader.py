"""Batches of dataset items with Grain, in an order fixed by (seed, epoch).

``make_loader`` permutes the item indices with ``numpy.random.default_rng([seed, epoch])``
(so a resumed run replays the same epoch exactly), reads items through a Grain
``MapDataset`` and collates them: array and number values are stacked on a new leading
axis, strings and ``None`` values are kept as lists. ``num_workers > 0`` reads in that
many Grain worker processes (the dataset is pickled into them; it holds no open file).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import grain
import numpy as np

from fnaf_jax.errors import ConfigError, DataError

__all__ = ["Loader", "SliceSource", "collate", "epoch_order", "make_loader"]


class SliceSource:
    """Grain ``RandomAccessDataSource`` view of a map-style dataset (len + getitem)."""

    def __init__(self, dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> dict:
        return self.dataset[int(index)]

    def __repr__(self) -> str:  # Grain checkpoints identify a source by its repr
        return f"SliceSource({self.dataset!r})"


def epoch_order(n: int, *, shuffle: bool, seed: int, epoch: int = 0) -> np.ndarray:
    """Item order of one epoch: a pure function of (n, shuffle, seed, epoch)."""
    if not shuffle:
        return np.arange(n)
    return np.random.default_rng([int(seed), int(epoch)]).permutation(n)


def collate(items: Sequence[dict]) -> dict:
    """Stack arrays and numbers of equal shape; keep strings and None as lists."""
    out = {}
    for key in items[0]:
        values = [item[key] for item in items]
        if any(v is None or isinstance(v, str) for v in values):
            out[key] = values
            continue
        arrays = [np.asarray(v) for v in values]
        shapes = {a.shape for a in arrays}
        if len(shapes) > 1:
            where = ", ".join(f"{it.get('fname', '?')}:{it.get('slice_num', '?')}"
                              for it in items)
            raise DataError(f"cannot batch key {key!r}: shapes {sorted(shapes)} differ "
                            f"across slices ({where}); use batch_size 1 or equal widths")
        out[key] = np.stack(arrays)
    return out


class _ReadItem:
    """Picklable map function: position in the epoch order -> dataset item."""

    def __init__(self, source: SliceSource):
        self.source = source

    def __call__(self, index) -> dict:
        return self.source[int(index)]


def _absl_flags_ready() -> None:
    """Grain's worker processes read absl flags; outside an absl app they are unparsed
    and reading them raises, so accept the defaults (a no-op when already parsed)."""
    from absl import flags

    if not flags.FLAGS.is_parsed():
        flags.FLAGS.mark_as_parsed()


def _own_copy(array) -> np.ndarray:
    """Plain numpy copy of a worker's output; Grain's shared-memory arrays must be
    unlinked by their last user (us), else they leak until the process exits."""
    out = np.array(array)
    if hasattr(array, "unlink_on_del"):
        array.unlink_on_del()
    return out


class Loader:
    """Iterable of collated batches for one epoch; iterating again replays it."""

    def __init__(self, batches: grain.MapDataset, num_workers: int):
        self.batches = batches
        self.num_workers = num_workers

    def __len__(self) -> int:
        return len(self.batches)

    def __iter__(self) -> Iterator[dict]:
        if self.num_workers == 0:
            return (self.batches[i] for i in range(len(self.batches)))
        return self._iter_workers()

    def _iter_workers(self) -> Iterator[dict]:
        _absl_flags_ready()
        batches = self.batches.to_iter_dataset(
            grain.ReadOptions(num_threads=1, prefetch_buffer_size=1))
        iterator = iter(batches.mp_prefetch(
            grain.MultiprocessingOptions(num_workers=self.num_workers)))
        try:
            for batch in iterator:
                yield {k: v if isinstance(v, list) else _own_copy(v) for k, v in batch.items()}
        finally:
            iterator.close()


def make_loader(dataset, batch_size: int, *, shuffle: bool, seed: int, epoch: int = 0,
                drop_remainder: bool = False, num_workers: int = 0) -> Loader:
    """Batches of ``dataset`` for one epoch (see module docstring)."""
    if batch_size < 1:
        raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
    if num_workers < 0:
        raise ConfigError(f"num_workers must be >= 0, got {num_workers}")
    order = epoch_order(len(dataset), shuffle=shuffle, seed=seed, epoch=epoch)
    items = grain.MapDataset.source(order.tolist()).map(_ReadItem(SliceSource(dataset)))
    batches = items.batch(batch_size, drop_remainder=drop_remainder, batch_fn=collate)
    return Loader(batches, num_workers)
