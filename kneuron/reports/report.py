"""report.md and a self-contained report.html from the experiments' results.

Layout of an output directory:

    report.md, report.html     the report (the HTML embeds every figure as a base64 PNG)
    tables/NAME.csv            every table shown in the report
    figures/NAME.png           every figure
    data/NAME.csv              the row-level data behind them (per edit, per prompt, ...)
    config.json                settings, seeds, model, data, timings

In the HTML each table is `<table id="table-NAME">` and each figure `<img id="figure-NAME">`.
"""

from __future__ import annotations

import base64
import html
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from kneuron.reports.figures import png_bytes


@dataclass
class Item:
    kind: str  # "table" | "figure" | "text"
    name: str = ""
    caption: str = ""
    frame: pd.DataFrame | None = None
    png: bytes = b""
    text: str = ""


@dataclass
class Section:
    title: str
    anchor: str
    items: list[Item] = field(default_factory=list)


def fmt(value) -> str:
    """A table cell: integers as such, floats with 3 decimals (1 from 100 on), NaN as '–'."""
    if value is None:
        return "–"
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int) or (hasattr(value, "dtype") and getattr(value.dtype, "kind", "") in "iu"):
        return str(int(value))
    if isinstance(value, float) or (hasattr(value, "dtype") and getattr(value.dtype, "kind", "") == "f"):
        v = float(value)
        if math.isnan(v):
            return "–"
        if v != 0 and abs(v) < 0.001:
            return f"{v:.2e}"
        return f"{v:,.1f}" if abs(v) >= 100 else f"{v:.3f}"
    return str(value)


class Report:
    """Sections of text, tables and figures; `write(out_dir)` renders md + html and the files."""

    def __init__(self, title: str):
        self.title = title
        self.sections: list[Section] = []

    def section(self, title: str, anchor: str | None = None) -> Section:
        s = Section(title, anchor or "".join(c if c.isalnum() else "-" for c in title.lower()).strip("-"))
        self.sections.append(s)
        return s

    def _current(self) -> Section:
        return self.sections[-1] if self.sections else self.section("Results")

    def text(self, text: str) -> None:
        self._current().items.append(Item("text", text=text))

    def table(self, name: str, frame: pd.DataFrame, caption: str = "") -> None:
        self._current().items.append(Item("table", name, caption, frame=frame.reset_index(drop=True)))

    def figure(self, name: str, fig_or_png, caption: str = "") -> None:
        """A matplotlib figure (rendered to PNG and closed now) or PNG bytes."""
        png = fig_or_png if isinstance(fig_or_png, bytes) else png_bytes(fig_or_png)
        self._current().items.append(Item("figure", name, caption, png=png))

    @property
    def tables(self) -> list[Item]:
        return [i for s in self.sections for i in s.items if i.kind == "table"]

    @property
    def figures(self) -> list[Item]:
        return [i for s in self.sections for i in s.items if i.kind == "figure"]

    # -- output ------------------------------------------------------------------------------------
    def write(self, out_dir, data: dict[str, pd.DataFrame] | None = None) -> dict[str, Path]:
        out = Path(out_dir)
        (out / "tables").mkdir(parents=True, exist_ok=True)
        (out / "figures").mkdir(parents=True, exist_ok=True)
        for item in self.figures:
            (out / "figures" / f"{item.name}.png").write_bytes(item.png)
        for item in self.tables:
            item.frame.to_csv(out / "tables" / f"{item.name}.csv", index=False)
        data_files = []
        if data:
            (out / "data").mkdir(parents=True, exist_ok=True)
            for name, frame in data.items():
                frame.to_csv(out / "data" / f"{name}.csv", index=False)
                data_files.append(f"data/{name}.csv")
        md = self._markdown(data_files)
        (out / "report.md").write_text(md, encoding="utf-8")
        (out / "report.html").write_text(self._html(data_files), encoding="utf-8")
        return {"md": out / "report.md", "html": out / "report.html"}

    def _markdown(self, data_files: list[str]) -> str:
        lines = [f"# {self.title}", ""]
        lines += [f"- [{s.title}](#{s.anchor})" for s in self.sections]
        lines.append("")
        for s in self.sections:
            lines += [f'<a id="{s.anchor}"></a>', "", f"## {s.title}", ""]
            for item in s.items:
                if item.kind == "text":
                    lines += [item.text, ""]
                elif item.kind == "table":
                    if item.caption:
                        lines += [f"**{item.caption}** ([csv](tables/{item.name}.csv))", ""]
                    lines += [markdown_table(item.frame), ""]
                else:
                    lines += [f"![{item.caption or item.name}](figures/{item.name}.png)", ""]
                    if item.caption:
                        lines += [f"*{item.caption}*", ""]
        if data_files:
            lines += ["## Data files", ""] + [f"- [{f}]({f})" for f in data_files] + [""]
        return "\n".join(lines)

    def _html(self, data_files: list[str]) -> str:
        e = html.escape
        body = [f"<h1>{e(self.title)}</h1>", '<nav><ul>']
        body += [f'<li><a href="#{s.anchor}">{e(s.title)}</a></li>' for s in self.sections]
        body.append("</ul></nav>")
        for s in self.sections:
            body.append(f'<section id="{s.anchor}"><h2>{e(s.title)}</h2>')
            for item in s.items:
                if item.kind == "text":
                    body.append(_md_inline_to_html(item.text))
                elif item.kind == "table":
                    body.append(_html_table(item))
                else:
                    b64 = base64.b64encode(item.png).decode("ascii")
                    body.append(f'<figure><img id="figure-{e(item.name)}" alt="{e(item.caption or item.name)}" '
                                f'src="data:image/png;base64,{b64}"><figcaption>{e(item.caption)}</figcaption></figure>')
            body.append("</section>")
        if data_files:
            body.append('<section id="data-files"><h2>Data files</h2><ul>')
            body += [f'<li><a href="{e(f)}">{e(f)}</a></li>' for f in data_files]
            body.append("</ul></section>")
        return (f"<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{e(self.title)}</title>"
                f"<style>{CSS}</style></head><body>\n" + "\n".join(body) + "\n</body></html>\n")


CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;max-width:1400px;margin:2em auto;padding:0 1em;
color:#222;line-height:1.45}
h1{font-size:1.7em}h2{border-bottom:1px solid #ccc;padding-bottom:.2em;margin-top:2em}
table{border-collapse:collapse;margin:.5em 0 1.5em;font-size:.85em}
th,td{border:1px solid #ccc;padding:.25em .55em;text-align:right}
th{background:#f2f2f2}td.s{text-align:left}caption{caption-side:top;text-align:left;font-weight:600;padding:.3em 0}
figure{margin:1em 0 2em}img{max-width:100%;border:1px solid #eee}figcaption{font-size:.9em;color:#555}
nav ul{columns:2}.tw{overflow-x:auto;max-width:100%}code{background:#f4f4f4;padding:0 .2em}
"""


def markdown_table(frame: pd.DataFrame, cell=fmt, right: bool = False) -> str:
    """`frame` as a markdown table, each value through `cell` (default `fmt`); `right` aligns columns right."""
    cols = [str(c) for c in frame.columns]
    rule = "---:" if right else "---"
    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join(rule for _ in cols) + "|"]
    for row in frame.itertuples(index=False):
        lines.append("| " + " | ".join(cell(v).replace("|", "\\|") for v in row) + " |")
    return "\n".join(lines)


def _html_table(item: Item) -> str:
    e = html.escape
    frame = item.frame
    out = [f'<div class="tw"><table id="table-{e(item.name)}" data-rows="{len(frame)}">']
    cap = e(item.caption) + f' <a href="tables/{e(item.name)}.csv">(csv)</a>'
    out.append(f"<caption>{cap}</caption>")
    out.append("<thead><tr>" + "".join(f"<th>{e(str(c))}</th>" for c in frame.columns) + "</tr></thead><tbody>")
    for row in frame.itertuples(index=False):
        cells = []
        for v in row:
            cls = ' class="s"' if isinstance(v, str) else ""
            cells.append(f"<td{cls}>{e(fmt(v))}</td>")
        out.append("<tr>" + "".join(cells) + "</tr>")
    out.append("</tbody></table></div>")
    return "\n".join(out)


def _md_inline_to_html(text: str) -> str:
    """Paragraphs and '- ' lists, with `code` and **bold** (enough for the report's own text)."""
    import re

    e = html.escape
    blocks, out = text.strip().split("\n\n"), []
    for block in blocks:
        lines = block.split("\n")

        def inline(s: str) -> str:
            s = e(s)
            s = re.sub(r"`([^`]+)`", r"<code>\1</code>", s)
            return re.sub(r"\*\*([^*]+)\*\*", r"<strong>\1</strong>", s)

        if all(line.startswith("- ") for line in lines):
            out.append("<ul>" + "".join(f"<li>{inline(line[2:])}</li>" for line in lines) + "</ul>")
        else:
            out.append("<p>" + " ".join(inline(line) for line in lines) + "</p>")
    return "\n".join(out)


def write_config(out_dir, config: dict) -> Path:
    path = Path(out_dir) / "config.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(config, indent=2, default=str) + "\n", encoding="utf-8")
    return path


def compare_section(report: Report, methods: pd.DataFrame, deletion_png: bytes, config: dict) -> Section:
    """The `kneuron compare` section: the methods table and the deletion curves."""
    section = report.section("Comparing localization methods", "compare")
    report.text(f"Model `{config.get('model')}`, data `{config.get('data')}`, seed {config.get('seed')}. "
                "Suppress/amplify: the paper's metric in percent (per relation, change of the mean gold "
                "probability over the mean original, then the mean over relations), each fact's neurons x0/x2 at "
                "the blank, on the prompts that chose them (in-sample); suppress_heldout/amplify_heldout: the same "
                f"on {config.get('heldout')} held-out prompts per fact that chose nothing (facts with at least "
                f"{(config.get('heldout') or 0) + 3} prompts); other_relations_suppress: the same on prompts of "
                "other relations' facts (collateral damage; those facts and their answers judged no neuron)"
                + (f"; every row on the test facts, the effect rule's fraction chosen on a {config.get('tune_share'):g} "
                   "share of tune facts (tuning.csv)" if config.get("tune_share") else "")
                + "; consistency: Jaccard of the sets chosen on two halves of each fact's prompts. Rows with "
                "budget 0 have variable size (neurons_per_fact): ig_refined, the paper's refined sets, and "
                f"ig_specific, those sets without generic neurons by rule `{config.get('specific_rule')}`"
                + (f" (fraction {config.get('specific_fraction')})" if config.get("specific_rule") == "effect" and not config.get("tune_share") else "")
                + ", a named deviation from the paper.")
    report.table("compare_methods", methods, "Methods by budget")
    report.figure("deletion_curve", deletion_png, "Suppression against budget, one line per method")
    return section
