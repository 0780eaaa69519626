"""``fnaf reproduce``: the whole FNAF study end to end, cached and resumable."""

from __future__ import annotations

from pathlib import Path


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "reproduce",
        help="run the whole study (data, training, attacks, transfer, Tables 1-4, report)",
        description="Synthesize data (unless --data), train the U-Net, fine-tune the "
        "FNAF-robust U-Net, train a small i-RIM (or convert the released one), reconstruct "
        "and evaluate, attack every model with random search and finite differences at each "
        "acceleration, transfer U-Net features to the i-RIM, score annotated abnormalities, "
        "and write DIR/report.md and DIR/report.html. Every stage is cached: running the "
        "same command again skips finished stages and resumes an interrupted one.",
    )
    p.add_argument("--preset", required=True,
                   help="mini | smoke | paper, or the path of a preset JSON file")
    p.add_argument("--out", required=True, type=Path, help="study folder")
    p.add_argument("--data", type=Path, default=None,
                   help="fastMRI folder holding singlecoil_train/ and singlecoil_val/ "
                   "(default: synthesize the preset's data set)")
    p.add_argument("--irim-checkpoint", type=Path, default=None, metavar="PT",
                   help="released i-RIM PyTorch checkpoint (presets with irim.source = convert)")
    p.add_argument("--annotations", type=Path, default=None, metavar="CSV",
                   help="fastMRI+ knee.csv or an FNAF box table for Table 4 (default: "
                   "VAL/annotations.csv, which the synthetic data set writes)")
    p.set_defaults(func=run)


def _interrupt(signum, frame):
    raise KeyboardInterrupt


def run(args) -> int:
    import signal

    from fnaf_jax.study.build import reproduce
    from fnaf_jax.study.presets import load_preset

    preset = load_preset(args.preset)
    # SIGTERM (a scheduler's kill) ends the run like Ctrl-C: logged, resumable. Verbs that
    # checkpoint (fnaf train) install their own handler while they run.
    try:
        previous = signal.signal(signal.SIGTERM, _interrupt)
    except ValueError:  # not the main thread
        previous = None
    try:
        result = reproduce(preset, args.out, data=args.data, irim_checkpoint=args.irim_checkpoint,
                           annotations=args.annotations)
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    print(f"report: {result['report']} (and report.html)")
    return 0
