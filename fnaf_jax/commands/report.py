"""``fnaf report``: Tables 2 and 3 (Markdown, CSV, JSON) and figures from attack results."""

from __future__ import annotations

from pathlib import Path


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "report",
        help="tables and figures from `fnaf attack` result files",
        description="Write report.md, table2.csv, table3.csv, summary.json and PNG figures. "
        "Figure 1 re-runs the model on a failed and a successful attack, so it needs "
        "--checkpoint and --data; without them it is skipped with a note.",
    )
    p.add_argument("results", nargs="+", type=Path, help="attack results (JSON lines)")
    p.add_argument("--out", required=True, type=Path, help="report folder")
    p.add_argument("--checkpoint", type=Path, default=None, help="model checkpoint for Figure 1")
    p.add_argument("--data", type=Path, default=None, help="data folder the attacks ran on (Figure 1)")
    p.add_argument("--model-name", default=None,
                   help="model name of the records to draw in Figure 1 (default: checkpoint folder name)")
    p.set_defaults(func=run)


def run(args) -> int:
    from fnaf_jax.report import write_report

    path = write_report(args.results, args.out, checkpoint=args.checkpoint, data=args.data,
                        figure_model=args.model_name)
    print(f"wrote {path}")
    return 0
