"""``fnaf report``: Tables 2 and 3 (Markdown, CSV, JSON) and figures from attack results
(``fnaf_jax.report.make_report``)."""

from __future__ import annotations

from fnaf_jax.commands.flags import add_fields, read_fields

HELP = {
    "out": "report folder",
    "checkpoint": "model checkpoint for Figure 1",
    "data": "data folder the attacks ran on (Figure 1)",
    "model_name": "model name of the records to draw in Figure 1 (default: checkpoint folder name)",
}


def register(subparsers) -> None:
    from fnaf_jax.report import ReportConfig

    p = subparsers.add_parser(
        "report",
        help="tables and figures from `fnaf attack` result files",
        description="Write report.md, table2.csv, table3.csv, summary.json and PNG figures. "
        "Figure 1 re-runs the model on a failed and a successful attack, so it needs "
        "--checkpoint and --data; without them it is skipped with a note.",
    )
    p.add_argument("results", nargs="+", help="attack results (JSON lines)")
    add_fields(p, ReportConfig, HELP, skip=("results",), required=("out",))
    p.set_defaults(func=run)


def run(args) -> int:
    from fnaf_jax.report import ReportConfig, make_report

    path = make_report(ReportConfig(results=tuple(args.results), **read_fields(args, ReportConfig, skip=("results",))))
    print(f"wrote {path}")
    return 0
