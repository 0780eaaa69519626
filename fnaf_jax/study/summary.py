"""``report.md`` and ``report.html`` of a study: measured tables beside the paper's numbers,
figures, and whether each finding holds."""

from __future__ import annotations

import html
import re
from pathlib import Path

from fnaf_jax.study.paper import MODEL_NAMES, PUBLISHED, findings

MODEL_ORDER = ("unet", "robust", "irim")


def _f(value, fmt="{:.4f}"):
    return "-" if value is None else fmt.format(value)


def _models(tree: dict) -> list[str]:
    return [m for m in MODEL_ORDER if m in tree] + sorted(m for m in tree if m not in MODEL_ORDER)


def table1_md(t1: dict) -> str:
    lines = ["| model | acceleration | SSIM | NMSE | PSNR (dB) | volumes | paper SSIM |",
             "|---|---|---|---|---|---|---|"]
    for model in _models(t1):
        for acc in sorted(t1[model]):
            r = t1[model][acc]
            paper = PUBLISHED["table1_ssim"].get((model, acc))
            lines.append(f"| {MODEL_NAMES.get(model, model)} | {acc}x | {_f(r.get('ssim'))} | "
                         f"{_f(r.get('nmse'))} | {_f(r.get('psnr'), '{:.2f}')} | {r.get('volumes', '-')} "
                         f"| {_f(paper)} |")
    return "\n".join(lines) + "\n"


def table2_md(t2: dict) -> str:
    lines = [("| model | acceleration | attack rate RS % | attack rate FD % | mean worst loss RS | "
             "mean worst loss FD | slices | paper RS / FD % | paper loss RS |"),
             "|---|---|---|---|---|---|---|---|---|"]
    for model in _models(t2):
        for acc in sorted(t2[model]):
            rs, fd = t2[model][acc].get("rs", {}), t2[model][acc].get("fd", {})
            paper = PUBLISHED["table2"].get((model, acc), {})
            ptxt = f"{paper['rs']:.2f} / {paper['fd']:.2f}" if paper else "-"
            lines.append(
                f"| {MODEL_NAMES.get(model, model)} | {acc}x | {_f(rs.get('attack_rate'), '{:.2f}')} | "
                f"{_f(fd.get('attack_rate'), '{:.2f}')} | {_f(rs.get('mean_worst_loss'), '{:.3g}')} | "
                f"{_f(fd.get('mean_worst_loss'), '{:.3g}')} | {rs.get('slices', fd.get('slices', '-'))} | "
                f"{ptxt} | {_f(paper.get('loss_rs'), '{:.3g}')} |")
    return "\n".join(lines) + "\n"


def table3_md(t2: dict) -> str:
    lo, hi = PUBLISHED["table3"]["acceptance_range"]
    lines = ["| model | acceleration | method | acceptance % | mean IP |", "|---|---|---|---|---|"]
    for model in _models(t2):
        for acc in sorted(t2[model]):
            for method in ("rs", "fd"):
                r = t2[model][acc].get(method)
                if r:
                    lines.append(f"| {MODEL_NAMES.get(model, model)} | {acc}x | {method.upper()} | "
                                 f"{_f(r.get('acceptance'), '{:.2f}')} | {_f(r.get('mean_ip'), '{:.3g}')} |")
    lines.append(f"\nPaper: acceptance {lo}-{hi}%, mean IP about {PUBLISHED['table3']['mean_ip']:.0e}.")
    return "\n".join(lines) + "\n"


def transfer_md(transfer: dict) -> str:
    lines = [("| acceleration | source | target | transfer attack rate % | source's own rate % | "
             "target's own rate % | mean worst loss | paper % |"),
             "|---|---|---|---|---|---|---|---|"]
    for acc in sorted(transfer):
        r = transfer[acc]
        paper = PUBLISHED["transfer_unet_to_irim"] if acc == 4 else None
        lines.append(f"| {acc}x | U-Net | i-RIM | {_f(r.get('attack_rate'), '{:.2f}')} | "
                     f"{_f(r.get('source_rate'), '{:.2f}')} | {_f(r.get('target_rate'), '{:.2f}')} | "
                     f"{_f(r.get('mean_worst_loss'), '{:.3g}')} | {_f(paper, '{:.2f}')} |")
    return "\n".join(lines) + "\n"


def findings_md(items: list[dict]) -> str:
    lines = []
    for item in items:
        verdict = {True: "**holds**", False: "**does not hold**", None: "**not measured**"}[item["holds"]]
        lines.append(f"- {verdict}: {item['finding']}.  \n  Measured: {item['evidence']}.  "
                     f"\n  Paper: {item['paper']}.")
    return "\n".join(lines) + "\n"


def build_markdown(results: dict, preset: dict, figures: dict[str, list[str]],
                   table4_md: str | None, timings: dict[str, float], notes: list[str]) -> str:
    items = findings(results)
    parts = [
        f"# FNAF study: preset `{preset.get('name')}`\n",
        f"{preset.get('description', '')}\n",
        ("Reproduces Cheng, Caliva et al., *Addressing the false negative problem of deep "
        "learning MRI reconstruction models by adversarial attacks and robust training* "
        "(MIDL 2020). Paper numbers are from fastMRI knee single-coil validation data; "
        "measured numbers are from the data and models of this run, so they agree only "
        "when the preset is `paper`.\n"),
        "## Does each finding hold?\n", findings_md(items),
        "## Table 1: reconstruction quality (fastMRI metrics, validation volumes)\n",
        table1_md(results.get("table1", {})),
        "## Table 2: FNAF attack rate (hits / accepted samples, gamma = 1e-3)\n",
        table2_md(results.get("table2", {})),
        "## Table 3: information preservation\n", table3_md(results.get("table2", {})),
        "## Transfer (Section 4.7): worst U-Net features scored on the i-RIM\n",
        transfer_md(results.get("transfer", {})),
        "## Table 4: real abnormalities (region NMSE / SSIM inside annotated boxes)\n",
        ("Region NMSE and SSIM (the SSIM map averaged inside each box) per label, on the annotated "
        "validation slices (`fnaf_jax.abnormalities`); no published numbers are compared here.\n"),
        table4_md or "No annotated slice of the data was found, so Table 4 is empty.\n",
    ]
    for title, key in (("Figure 1: a successful and a failed attack on the U-Net (re-run)", "figure1"),
                       ("Figure 1b: the U-Net's worst features through every model", "figure1b"),
                       ("Figure 2: information preservation vs. FNAF loss", "figure2"),
                       ("Figure 3: locations of the features found", "figure3")):
        parts.append(f"## {title}\n")
        pngs = figures.get(key, [])
        parts.append("\n".join(f"![{Path(p).stem}]({p})" for p in pngs) + "\n" if pngs else "Not produced.\n")
    if notes:
        parts += ["## Notes\n", "\n".join(f"- {n}" for n in notes) + "\n"]
    if timings:
        total = sum(timings.values())
        parts += ["## Stage timings\n",
                  "| stage | seconds |\n|---|---|\n"
                  + "\n".join(f"| {k} | {v:.1f} |" for k, v in timings.items())
                  + f"\n| total | {total:.1f} |\n"]
    return "\n".join(parts)


def _inline(text: str) -> str:
    text = html.escape(text, quote=False)
    text = re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", text)
    text = re.sub(r"\*(.+?)\*", r"<em>\1</em>", text)
    return re.sub(r"`(.+?)`", r"<code>\1</code>", text)


def markdown_to_html(md: str, title: str = "FNAF study") -> str:
    """The small Markdown subset ``build_markdown`` writes: headings, lists, pipe tables,
    images, paragraphs."""
    out, i = [], 0
    lines = md.splitlines()
    while i < len(lines):
        line = lines[i]
        if line.startswith("|"):
            rows = []
            while i < len(lines) and lines[i].startswith("|"):
                rows.append([c.strip() for c in lines[i].strip("|").split("|")])
                i += 1
            body = [r for r in rows[1:] if not all(re.fullmatch(r"-+", c) for c in r)]
            out.append("<table><tr>" + "".join(f"<th>{_inline(c)}</th>" for c in rows[0]) + "</tr>"
                       + "".join("<tr>" + "".join(f"<td>{_inline(c)}</td>" for c in r) + "</tr>" for r in body)
                       + "</table>")
            continue
        if line.startswith("- "):
            items = []
            while i < len(lines) and (lines[i].startswith("- ") or lines[i].startswith("  ")):
                if lines[i].startswith("- "):
                    items.append(lines[i][2:].rstrip())
                else:
                    items[-1] += "<br>" + _inline(lines[i].strip())
                    i += 1
                    continue
                items[-1] = _inline(items[-1])
                i += 1
            out.append("<ul>" + "".join(f"<li>{it}</li>" for it in items) + "</ul>")
            continue
        m = re.match(r"(#+) (.*)", line)
        if m:
            n = len(m.group(1))
            out.append(f"<h{n}>{_inline(m.group(2))}</h{n}>")
        elif (img := re.fullmatch(r"!\[(.*?)\]\((.*?)\)", line.strip())):
            out.append(f'<img alt="{html.escape(img.group(1))}" src="{html.escape(img.group(2))}" '
                       'style="max-width:100%">')
        elif line.strip():
            out.append(f"<p>{_inline(line)}</p>")
        i += 1
    style = ("body{font-family:sans-serif;max-width:70em;margin:auto}table{border-collapse:collapse}"
             "td,th{border:1px solid #999;padding:2px 6px}")
    return (f"<!DOCTYPE html>\n<html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<style>{style}</style></head><body>\n" + "\n".join(out) + "\n</body></html>\n")


def write_report(out_dir, results, preset, figures, table4_md, timings, notes) -> tuple[Path, Path]:
    out_dir = Path(out_dir)
    md = build_markdown(results, preset, figures, table4_md, timings, notes)
    md_path, html_path = out_dir / "report.md", out_dir / "report.html"
    md_path.write_text(md)
    html_path.write_text(markdown_to_html(md, f"FNAF study: {preset.get('name')}"))
    return md_path, html_path
