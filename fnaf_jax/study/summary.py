"""``report.md`` and ``report.html`` of a study: measured tables beside the paper's numbers,
figures, and whether each finding holds."""

from __future__ import annotations

import base64
import html
import re
from pathlib import Path

from fnaf_jax.fileio import write_text
from fnaf_jax.published import MODEL_NAMES, PUBLISHED
from fnaf_jax.report import (
    CONTROLS_NOTE,
    KSPACE_NOTE,
    controls_markdown,
    kspace_markdown,
    table2_markdown,
    table3_markdown,
    transfer_markdown,
)
from fnaf_jax.study.paper import findings, instrument_checks
from fnaf_jax.tabulation import fmt_mean

MODEL_ORDER = ("unet", "cleanft", "robust", "robust_wk", "robust_pgd", "jitter", "kspace_adv", "irim", "zero-filled")


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


def attack_rows(t2: dict) -> list[dict]:
    """Table 2/3 rows of the study's models, in display order, with the paper's numbers."""
    from fnaf_jax.report import attack_row
    from fnaf_jax.study.stages import ROLES

    return [attack_row(MODEL_NAMES.get(model, model), ROLES.get(model), acc, method, t2[model][acc][method])
            for model in _models(t2) for acc in sorted(t2[model]) for method in ("rs", "fd", "pgd")
            if method in t2[model][acc]]


def transfer_rows(transfer: dict) -> list[dict]:
    return [{"model": MODEL_NAMES["irim"], "source_model": MODEL_NAMES["unet"], "acceleration": acc,
             "method": "rs", **transfer[acc],
             "paper_attack_rate": PUBLISHED["transfer_unet_to_irim"] if acc == 4 else None}
            for acc in sorted(transfer)]


def paired_md(paired: dict) -> str:
    lines = [("| acceleration | comparison (A - B) | paired slices (volumes) | attack rate A - B, points "
              "[95% CI] | hits only A / only B (McNemar p) | worst loss A - B [95% CI] (Wilcoxon p) "
              "| feature-lost fraction A - B [95% CI] (Wilcoxon p) |"),
             "|---|---|---|---|---|---|---|"]
    for acc in sorted(paired):
        for key, p in paired[acc].items():
            if key.startswith("rs-fd:"):
                name = f"{MODEL_NAMES.get(key[6:], key[6:])}: RS - FD"
            else:
                a, b = key.split("-", 1)
                name = f"{MODEL_NAMES.get(a, a)} - {MODEL_NAMES.get(b, b)}"
            wl, lf = p["worst_loss_difference"], p["lost_fraction_difference"]
            lines.append(f"| {acc}x | {name} | {p['both_accepted']} ({p['volumes']}) | "
                         f"{fmt_mean(p['rate_difference'], '{:+.1f}')} | {p['only_first_hit']} / "
                         f"{p['only_second_hit']} ({p['mcnemar_p']:.2g}) | {fmt_mean(wl, '{:+.2g}')} "
                         f"({wl['wilcoxon_p']:.2g}) | {fmt_mean(lf, '{:+.3f}')} ({lf['wilcoxon_p']:.2g}) |")
    return "\n".join(lines) + "\n"


def findings_md(items: list[dict]) -> str:
    lines = []
    for item in items:
        why = f"  \n  Why: {item['why']}." if item.get("why") else ""
        lines.append(f"- **{item['verdict']}**: {item['finding']}.  \n  Measured: {item['evidence']}.  "
                     f"\n  Paper: {item['paper']}.{why}")
    return "\n".join(lines) + "\n"


def kspace_md(results: dict, figures: dict[str, list[str]]) -> str:
    """The k-space curves of every model (``tabulation.summarize_kspace``) and their figures;
    empty in a study without k-space methods."""
    tree = results.get("kspace", {})
    curves = {f"{MODEL_NAMES.get(m, m)} {acc}x {method}": rows for m in _models(tree)
              for acc in sorted(tree[m]) for method, rows in tree[m][acc].items()}
    if not curves:
        return ""
    text = "## k-space worst cases and hallucinations\n\n" + KSPACE_NOTE + "\n\n" + kspace_markdown(curves)
    for png in figures.get("kspace", []):
        text += (f"\n![{Path(png).stem}]({png})\n\n*NMSE and the lost or shown fraction against eps, "
                 f"every run ({Path(png).parent.name}).*\n")
    return text


def defenses_md(results: dict, preset, timings: dict[str, float], figures: dict[str, list[str]]) -> str:
    """The defenses section (``fnaf_jax.study.defenses``) with its trade-off figures; empty
    in a study without the clean fine-tune."""
    from fnaf_jax.attacks.config import forward_equivalents
    from fnaf_jax.study import defenses

    methods = preset.attack.methods
    budgets = {m: forward_equivalents(m, preset.attack.config) for m in methods}
    text = defenses.markdown(results, sorted(results.get("table1", {}).get("cleanft", {})), methods,
                             preset.train, timings, budgets)
    for png in figures.get("defenses", []):
        text += (f"\n![{Path(png).stem}]({png})\n\n*Each model's clean SSIM against its feature-lost "
                 "(hallucinations: shown) fraction under each attack, with 95% intervals "
                 f"({Path(png).parent.name}).*\n")
    return text


def build_markdown(results: dict, preset, figures: dict[str, list[str]],
                   table4_md: str | None, timings: dict[str, float], notes: list[str]) -> str:
    items = findings(results)
    rows = attack_rows(results.get("table2", {}))
    parts = [
        f"# FNAF study: preset `{preset.name}`\n",
        f"{preset.description}\n",
        ("Reproduces Cheng, Caliva et al., *Addressing the false negative problem of deep "
        "learning MRI reconstruction models by adversarial attacks and robust training* "
        "(MIDL 2020). Paper numbers are from fastMRI knee single-coil validation data; "
        "measured numbers are from the data and models of this run, so they agree only "
        "when the preset is `paper`.\n"),
        ("Every rate shows its 95% interval (Wilson) and its denominator; means and paired "
         "differences a 95% bootstrap interval over volumes. A finding *holds* when its whole "
         "interval clears the stated threshold, *does not hold* when the interval lies wholly on "
         "the other side, and is *inconclusive* otherwise.\n"),
        "## Can the instrument tell an eraser from a perfect model?\n", findings_md(instrument_checks(results)),
        "## Does each finding hold?\n", findings_md(items),
        "## Table 1: reconstruction quality (fastMRI metrics, validation volumes)\n",
        table1_md(results.get("table1", {})),
        "## Table 2: FNAF attack rate (hits / accepted slices, gamma = 1e-3)\n",
        table2_markdown(rows),
        "## Controls beside each attack rate\n", CONTROLS_NOTE + "\n", controls_markdown(rows),
        "## Paired comparisons (same slices, masks and candidate features)\n",
        paired_md(results.get("paired", {})),
        defenses_md(results, preset, timings, figures),
        "## Table 3: information preservation\n", table3_markdown(rows),
        kspace_md(results, figures),
        "## Transfer (Section 4.7): worst U-Net features scored on the i-RIM\n",
        transfer_markdown(transfer_rows(results.get("transfer", {}))),
        "## Table 4: real abnormalities (region NMSE / SSIM inside annotated boxes)\n",
        ("Region NMSE and SSIM (the SSIM map averaged inside each box) per label, on the annotated "
        "validation slices (`fnaf_jax.abnormalities`); no published numbers are compared here.\n"),
        table4_md or "No annotated slice of the data was found, so Table 4 is empty.\n",
    ]
    for title, key in (("Figure 1: a successful and a failed attack on the U-Net (re-run)", "figure1"),
                       ("Figure 1b: random slices through every model", "figure1b"),
                       ("Figure 2: information preservation vs. FNAF loss", "figure2"),
                       ("Figure 3: locations of the features found", "figure3")):
        parts.append(f"## {title}\n")
        pngs = figures.get(key, [])
        for png in pngs:
            acc = Path(png).parent.name
            parts.append(f"![{Path(png).stem}]({png})\n\n*{FIGURE_CAPTIONS[key]} ({acc}).*\n")
        if not pngs:
            parts.append("Not produced.\n")
    if notes:
        parts += ["## Notes\n", "\n".join(f"- {n}" for n in notes) + "\n"]
    if timings:
        total = sum(timings.values())
        parts += ["## Stage timings\n",
                  "| stage | seconds |\n|---|---|\n"
                  + "\n".join(f"| {k} | {v:.1f} |" for k, v in timings.items())
                  + f"\n| total | {total:.1f} |\n"]
    return "\n".join(parts)


FIGURE_CAPTIONS = {
    "figure1": ("The U-Net's worst hit and mildest miss, re-run: zero-filled input, ground truth with "
                "the feature, reconstruction and |error| (z-scored; the loss region outlined; 10-pixel "
                "scale bar in the zoomed panels)"),
    "figure1b": ("Slices drawn at random among those every model attacked; for each model its own worst "
                 "random-search feature, the target and the model's output, marked hit (red) or kept "
                 "(green) against gamma"),
    "figure2": ("Information preservation against the worst FNAF loss, one point per accepted slice and "
                "model; dashed: gamma, dotted: the IP threshold"),
    "figure3": ("Where each accepted slice's worst feature lies in the central box (dot = hit, cross = "
                "miss), coloured by its loss on one shared scale, over the mean clean image"),
}


def _inline(text: str) -> str:
    text = html.escape(text, quote=False)
    text = re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", text)
    text = re.sub(r"\*(.+?)\*", r"<em>\1</em>", text)
    return re.sub(r"`(.+?)`", r"<code>\1</code>", text)


def _embedded(src: str, base: Path | None) -> str:
    """A PNG next to the report as a data URI, so report.html is one self-contained file."""
    path = Path(src) if base is None else base / src
    if path.suffix.lower() == ".png" and path.is_file():
        return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode("ascii")
    return src


def markdown_to_html(md: str, title: str = "FNAF study", base: Path | None = None) -> str:
    """The small Markdown subset ``build_markdown`` writes: headings, lists, pipe tables,
    images (embedded from ``base``), paragraphs."""
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
            src = _embedded(img.group(2), base)
            out.append(f'<img alt="{html.escape(img.group(1))}" src="{html.escape(src)}" '
                       'style="max-width:100%">')
        elif line.strip():
            out.append(f"<p>{_inline(line)}</p>")
        i += 1
    style = ("body{font-family:sans-serif;max-width:70em;margin:auto}table{border-collapse:collapse}"
             "td,th{border:1px solid #999;padding:2px 6px}")
    return (f"<!DOCTYPE html>\n<html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<style>{style}</style></head><body>\n" + "\n".join(out) + "\n</body></html>\n")


def write_study_report(out_dir, results, preset, figures, table4_md, timings, notes) -> tuple[Path, Path]:
    out_dir = Path(out_dir)
    md = build_markdown(results, preset, figures, table4_md, timings, notes)
    md_path, html_path = out_dir / "report.md", out_dir / "report.html"
    write_text(md_path, md)
    write_text(html_path, markdown_to_html(md, f"FNAF study: {preset.name}", base=out_dir))
    return md_path, html_path
