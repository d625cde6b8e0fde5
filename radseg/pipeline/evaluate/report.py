"""``report.html``: one self-contained page (pictures embedded) with the summary, box plots, lesion
detection, FROC, and the worst cases with a quick-look image each."""

from __future__ import annotations

import base64
import html
import io
import math

import numpy as np
from matplotlib.figure import Figure

#: metrics shown as box plots, with their axis titles
BOX_PLOTS = {
    "dice": "Dice", "iou": "IoU", "surface_dice": "normalised surface Dice",
    "hd95_mm": "HD95 (mm)", "assd_mm": "ASSD (mm)", "volume_error_rel": "relative volume error",
}
_STYLE = """
body{font-family:system-ui,sans-serif;margin:24px;color:#222;max-width:1320px}
table{border-collapse:collapse;margin:8px 0 16px}td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}
th{background:#f0f0f0}td.l,th.l{text-align:left}.plots img{width:32%;margin:0 1% 8px 0}
.note{color:#555;font-size:0.92em}.worst img{width:100%;max-width:1100px}h2{border-bottom:1px solid #ddd}
"""


def render_report(summary: dict, rows: list[dict], worst: list[dict], review: str | None = None) -> str:
    """The HTML page.

    Args:
        summary: the content of ``summary.json``.
        rows: the rows of ``metrics.csv``.
        worst: ``{"case_id", "class", "dice", "hd95_mm", "png": bytes}`` per worst case.
        review: the relative link of a ``radseg review`` index beside the report, or None (the page
            then gives the command that writes one).

    Returns:
        The page, with every picture embedded as a base64 PNG.
    """
    parts = [f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>radseg evaluate</title>"
             f"<style>{_STYLE}</style></head><body><h1>radseg evaluate</h1>", _review(summary, review), _inputs(summary),
             "<h2>Summary over cases</h2>", _summary_table(summary), _notes(summary),
             "<h2>Distributions</h2><div class='plots'>", *_box_plots(rows, summary), "</div>"]
    if summary.get("lesions"):
        parts += ["<h2>Lesions as objects</h2>", _lesion_tables(summary)]
    parts += ["<h2>Worst cases</h2>", _worst(worst), "<h2>Per case</h2>", _per_case(rows, summary), "</body></html>"]
    return "\n".join(parts)


def _review(summary: dict, review: str | None) -> str:
    if review:
        return f"<p><a href='{html.escape(review)}'>Review every case in the browser</a>, worst first, on its scan.</p>"
    command = f"radseg review --pred {summary['pred']} --truth {summary['truth']} --images SCANS --output REPORT_FOLDER/review"
    return f"<p class='note'>To review every case on its scan in the browser: <code>{html.escape(command)}</code></p>"


def _inputs(summary: dict) -> str:
    items = [("predictions", summary["pred"]), ("truth", summary["truth"]), ("cases", summary["truth_set"]),
             ("scored", str(summary["num_scored"])),
             ("missing predictions", ", ".join(summary["missing_predictions"]) or "none"),
             ("predictions without truth (not scored)", ", ".join(summary["extra_predictions"]) or "none"),
             ("resampled onto the truth grid (nearest)", ", ".join(summary["resampled"]) or "none")]
    return "<table>" + "".join(f"<tr><th class='l'>{k}</th><td class='l'>{html.escape(v)}</td></tr>" for k, v in items) + "</table>"


def _summary_table(summary: dict) -> str:
    head = ("<tr><th class='l'>class</th><th class='l'>metric</th><th>n</th><th>mean</th><th>n_undefined</th>"
            "<th>std</th><th>median</th><th>95% CI</th></tr>")
    body = []
    for name, metrics in summary["metrics"].items():
        for metric, s in metrics.items():
            body.append(f"<tr><td class='l'>{html.escape(name)}</td><td class='l'>{metric}</td><td>{s['n']}</td>"
                        f"<td>{_f(s['mean'])}</td><td>{s['n_undefined']}</td><td>{_f(s['std'])}</td>"
                        f"<td>{_f(s['median'])}</td><td>{_f(s['ci_low'])} – {_f(s['ci_high'])}</td></tr>")
    return f"<table>{head}{''.join(body)}</table>"


def _notes(summary: dict) -> str:
    boot = summary["bootstrap"]
    lines = [f"95% confidence intervals: percentile bootstrap of the mean over cases, {boot['resamples']} "
             f"resamples, seed {boot['seed']}.",
             "Surface Dice tolerance: " + ", ".join(f"{k} {v:g} mm" for k, v in summary["tolerance_mm"].items()) + "."]
    lines += [f"{html.escape(k)}: {html.escape(v)}." for k, v in summary.get("definitions", {}).items()]
    lines += [f"{html.escape(k)}: {html.escape(v)}." for k, v in summary["conventions"].items()]
    return "<div class='note'><b>Conventions.</b><ul>" + "".join(f"<li>{line}</li>" for line in lines) + "</ul></div>"


def _box_plots(rows: list[dict], summary: dict) -> list[str]:
    names = list(summary["metrics"])
    images = []
    for metric, title in BOX_PLOTS.items():
        data = [[r[metric] for r in rows if r["class"] == name and r["status"] == "scored" and not math.isnan(r[metric])]
                for name in names]
        figure = Figure(figsize=(4.2, 3.2), dpi=90)
        ax = figure.add_subplot(1, 1, 1)
        ax.boxplot([d if d else [math.nan] for d in data], showfliers=False)
        ax.set_xticks(range(1, len(names) + 1), names)
        for position, values in enumerate(data, start=1):
            jitter = np.random.default_rng(position).uniform(-0.12, 0.12, len(values))
            ax.plot(position + jitter, values, "o", markersize=3, alpha=0.6, color="#1f77b4")
        ax.set_title(title, fontsize=10)
        ax.grid(axis="y", alpha=0.3)
        figure.tight_layout()
        images.append(_img(_png(figure), f"box plot of {title}"))
    return images


def _lesion_tables(summary: dict) -> str:
    head = ("<tr><th class='l'>class</th><th>true lesions</th><th>predicted</th><th>TP</th><th>FN</th><th>FP</th>"
            "<th>sensitivity</th><th>precision</th><th>F1</th><th>mean lesion Dice (true lesions)</th></tr>")
    rows, froc_rows = [], []
    for name, lesion in summary["lesions"].items():
        rows.append(f"<tr><td class='l'>{html.escape(name)}</td><td>{lesion['true_lesions']}</td><td>{lesion['predicted_lesions']}</td>"
                    f"<td>{lesion['tp']}</td><td>{lesion['fn']}</td><td>{lesion['fp']}</td><td>{_f(lesion['sensitivity'])}</td>"
                    f"<td>{_f(lesion['precision'])}</td><td>{_f(lesion['f1'])}</td><td>{_f(lesion['mean_lesion_dice'])}</td></tr>")
        if lesion.get("froc"):
            froc_rows.append(f"<tr><td class='l'>{html.escape(name)}</td>"
                             + "".join(f"<td>{_f(v)}</td>" for v in lesion["froc"].values()) + "</tr>")
    text = f"<p class='note'>{html.escape(summary['lesion_rule'])}. Every lesion is listed in lesions.csv.</p>"
    if summary.get("probability_grid_unchecked"):
        text += ("<p class='note'>Probability maps without an affine (.npy; only their shape was checked against the "
                 f"label map): {html.escape(', '.join(summary['probability_grid_unchecked']))}.</p>")
    text += f"<table>{head}{''.join(rows)}</table>"
    if froc_rows:
        rates = next(iter(lesion["froc"] for lesion in summary["lesions"].values() if lesion.get("froc")))
        text += ("<h3>FROC: sensitivity at false positives per scan</h3><table><tr><th class='l'>class</th>"
                 + "".join(f"<th>{r}</th>" for r in rates) + f"</tr>{''.join(froc_rows)}</table>")
    else:
        text += f"<p class='note'>FROC: {html.escape(summary.get('froc_note', 'no probability maps'))}</p>"
    return text


def _worst(worst: list[dict]) -> str:
    if not worst:
        return "<p>no scored cases</p>"
    parts = ["<p class='note'>Lowest Dice per class; truth outlined in green, prediction in magenta; slices through "
             "the centre of their disagreement.</p>"]
    for item in worst:
        parts.append(f"<div class='worst'><h3>{html.escape(item['case_id'])} · {html.escape(item['class'])} · Dice "
                     f"{_f(item['dice'])} · HD95 {_f(item['hd95_mm'])} mm</h3>"
                     f"{_img(item['png'], 'quick look of ' + item['case_id'])}</div>")
    return "\n".join(parts)


def _per_case(rows: list[dict], summary: dict) -> str:
    names = list(summary["metrics"])
    cases = list(dict.fromkeys(r["case_id"] for r in rows))
    lookup = {(r["case_id"], r["class"]): r for r in rows}
    head = "<tr><th class='l'>case</th>" + "".join(f"<th>{html.escape(n)} Dice</th><th>{html.escape(n)} HD95</th>" for n in names) + "</tr>"
    body = []
    for case in cases:
        cells = []
        for name in names:
            row = lookup[(case, name)]
            cells += ["<td colspan=2>missing</td>"] if row["status"] != "scored" else [f"<td>{_f(row['dice'])}</td><td>{_f(row['hd95_mm'])}</td>"]
        body.append(f"<tr><td class='l'>{html.escape(case)}</td>{''.join(cells)}</tr>")
    return f"<table>{head}{''.join(body)}</table>"


def _png(figure: Figure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()


def _img(png: bytes, alt: str) -> str:
    return f"<img alt='{html.escape(alt)}' src='data:image/png;base64,{base64.b64encode(png).decode()}'>"


def _f(value) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return f"{value:.3f}" if abs(value) < 1000 else f"{value:.0f}"
