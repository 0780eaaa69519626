"""The under-sampling flags ``fnaf attack`` and ``fnaf reconstruct`` share with ``fnaf train``:
``--accelerations`` and ``--center-fractions`` take lists; one run per acceleration."""

from __future__ import annotations

import argparse
from pathlib import Path

from fnaf_jax.errors import ConfigError


class ListOnce(argparse.Action):
    """A list flag given once: ``--acceleration 4 --accelerations 8`` is refused rather than
    one value silently winning."""

    def __call__(self, parser, namespace, values, option_string=None):
        seen = namespace.__dict__.setdefault("_given", set())
        if self.dest in seen:
            parser.error(f"{option_string}: given twice; list every value after one flag (e.g. "
                         f"{self.option_strings[0]} 4 8)")
        seen.add(self.dest)
        setattr(namespace, self.dest, values)


def add_mask_arguments(parser) -> None:
    from fnaf_jax.masks import DEFAULT_MASK

    parser.add_argument("--accelerations", "--acceleration", type=int, nargs="+", action=ListOnce,
                        default=[DEFAULT_MASK.acceleration], metavar="ACC",
                        help=f"under-sampling factors, one run each (default: {DEFAULT_MASK.acceleration})")
    parser.add_argument("--center-fractions", "--center-fraction", type=float, nargs="+", default=None,
                        action=ListOnce,
                        metavar="CF", help="centre columns kept, one per acceleration "
                        "(default: fastMRI's pairing, 0.08 at 4x and 0.04 at 8x)")
    parser.add_argument("--mask-type", default=DEFAULT_MASK.mask_type,
                        choices=("random", "equispaced", "equispaced_fraction"),
                        help=f"mask type (default: {DEFAULT_MASK.mask_type})")


def suffixed(out: Path, acceleration: int) -> Path:
    """OUT.jsonl -> OUT_4x.jsonl; a folder OUT -> OUT_4x."""
    return out.with_name(f"{out.stem}_{acceleration}x{out.suffix}")


def mask_jobs(args, out: Path) -> list[tuple]:
    """[(MaskSpec, output path)], one per acceleration, each mask checked."""
    from fnaf_jax.masks import MaskSpec

    accs, fractions = list(args.accelerations), args.center_fractions
    if fractions is not None and len(fractions) != len(accs):
        raise ConfigError(f"--center-fractions: {len(fractions)} values for {len(accs)} accelerations "
                          f"({accs}); give one per acceleration, or none for fastMRI's pairing")
    if len(set(accs)) != len(accs):
        raise ConfigError(f"--accelerations: {accs} repeats a value")
    specs = [MaskSpec(a, None if fractions is None else fractions[i], args.mask_type) for i, a in enumerate(accs)]
    for spec in specs:
        spec.mask_func()  # bad mask options fail before anything runs
    if len(specs) == 1:
        return [(specs[0], out)]
    return [(spec, suffixed(out, spec.acceleration)) for spec in specs]
