"""Shared command line of the experiment scripts: each runs (or reuses, from the cache)
the study stages its result needs, then prints where the result is."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def main(doc: str, targets: list[str], show) -> int:
    """Parse ``--preset/--out/--data/--irim-checkpoint/--annotations``, run ``targets`` (and
    the stages they depend on), then call ``show(layout, preset, result)``."""
    from fnaf_jax.errors import FnafError
    from fnaf_jax.study.build import make_layout, reproduce
    from fnaf_jax.study.presets import load_preset

    parser = argparse.ArgumentParser(description=doc.strip().splitlines()[0],
                                     epilog=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="smoke", help="mini | smoke | paper | PATH (default smoke)")
    parser.add_argument("--out", type=Path, default=None, help="study folder (default runs/PRESET)")
    parser.add_argument("--data", type=Path, default=None)
    parser.add_argument("--irim-checkpoint", type=Path, default=None)
    parser.add_argument("--annotations", type=Path, default=None)
    args = parser.parse_args()
    try:
        preset = load_preset(args.preset)
        out = (args.out or Path("runs") / preset.name).absolute()
        result = reproduce(preset, out, data=args.data, irim_checkpoint=args.irim_checkpoint,
                           annotations=args.annotations, targets=targets)
        show(make_layout(out, preset, args.data), preset, result)
    except FnafError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


def gather_results(layout, preset) -> dict:
    """The study's collected results (``fnaf_jax.study.results.gather``) at the preset's
    evaluation accelerations, for every model and attack method."""
    from fnaf_jax.study import results, stages

    accs = stages.eval_accs(preset)
    return results.gather(layout, accs, [*stages.model_names(preset), stages.BASELINE], stages.METHODS)
