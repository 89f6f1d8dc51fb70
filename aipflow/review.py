"""A self-contained review page for label issues (``label_issues.html``): one file, no server, no network: the rows
are embedded as JSON and drawn by a small script: image rows as thumbnails, text rows as snippets, table rows as their
values, each with its given and suggested label and score; filters by given and suggested label, flagged rows only,
and a sort. A person opens it in a browser and fixes the data."""

from __future__ import annotations

import base64
import html
import io
import json
from collections.abc import Sequence
from typing import Any

__all__ = ["image_preview", "review_page", "table_preview", "text_preview"]

#: rows drawn at once; the rest are reached by the filters and the sort (the page says how many are hidden)
MAX_SHOWN = 1000


def image_preview(image, side: int = 64) -> dict[str, str]:
    """A PIL image as a PNG thumbnail (at most ``side`` pixels a side) embedded as a data URI."""
    thumb = image.copy()
    thumb.thumbnail((side, side))
    buffer = io.BytesIO()
    thumb.save(buffer, format="PNG")
    return {"image": "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")}


def text_preview(text: str, chars: int = 280) -> dict[str, str]:
    """The first ``chars`` characters of a text row (the page escapes it)."""
    text = " ".join(str(text).split())
    return {"text": text if len(text) <= chars else text[: chars - 1] + "…"}


def table_preview(values: dict[str, Any], columns: int = 12) -> dict[str, str]:
    """A table row's first ``columns`` values as ``name=value`` pairs."""
    items = list(values.items())
    shown = ", ".join(f"{k}={_short(v)}" for k, v in items[:columns])
    return {"values": shown + (f", … ({len(items) - columns} more)" if len(items) > columns else "")}


def _short(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def review_page(
    records: Sequence[dict[str, Any]],
    previews: dict[Any, dict[str, str]] | None = None,
    title: str = "Label issues",
    summary: str = "",
) -> str:
    """The page's HTML for ``records`` (:meth:`aipflow.label_issues.LabelIssues.records`: worst first) and
    ``previews`` by row id (:func:`image_preview`, :func:`text_preview`, :func:`table_preview`)."""
    previews = previews or {}
    rows = [{**r, **previews.get(r["row"], {})} for r in records]
    labels = sorted({str(r["given_label"]) for r in rows} | {str(r["predicted_label"]) for r in rows}, key=_natural)
    data = json.dumps({"rows": rows, "labels": labels, "maxShown": MAX_SHOWN}, ensure_ascii=False)
    data = data.replace("</", "<\\/")  # a text row holding "</script>" must not end the script
    flagged = sum(1 for r in rows if r["is_label_issue"])
    return _PAGE.format(
        title=html.escape(title),
        summary=html.escape(summary),
        flagged=flagged,
        total=len(rows),
        data=data,
    )


def _natural(label: str):
    return (0, int(label), "") if label.lstrip("-").isdigit() else (1, 0, label)


_PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 1.5rem; color: #1b1b1b; }}
h1 {{ font-size: 1.4rem; margin: 0 0 .3rem; }}
#summary {{ white-space: pre-wrap; font-size: .8rem; color: #444; background: #f6f6f6; padding: .6rem; }}
#controls {{ display: flex; flex-wrap: wrap; gap: 1rem; align-items: center; margin: .8rem 0; }}
table {{ border-collapse: collapse; width: 100%; }}
th, td {{ border-bottom: 1px solid #ddd; padding: .35rem .5rem; text-align: left; vertical-align: top; }}
th {{ background: #fafafa; position: sticky; top: 0; }}
td.preview img {{ image-rendering: pixelated; width: 64px; height: 64px; object-fit: contain; background: #eee; }}
td.preview .text, td.preview .values {{ max-width: 48rem; font-size: .85rem; }}
tr.issue td.labels {{ color: #a40000; font-weight: 600; }}
.score {{ font-variant-numeric: tabular-nums; }}
#shown {{ color: #555; font-size: .85rem; }}
</style>
</head>
<body>
<h1>{title}</h1>
<p><strong><span id="flagged-count">{flagged}</span></strong> of <span id="row-count">{total}</span> rows flagged as
likely label issues (worst first). Fix the label in your data, or pass the rows to
<code>data.exclude_rows</code> / <code>data.relabel</code>.</p>
<details><summary>Summary</summary><div id="summary">{summary}</div></details>
<div id="controls">
  <label>Given label <select id="given-filter"><option value="">all</option></select></label>
  <label>Suggested label <select id="suggested-filter"><option value="">all</option></select></label>
  <label><input type="checkbox" id="only-flagged" checked> flagged rows only</label>
  <label>Sort <select id="sort">
    <option value="score-asc">score, worst first</option>
    <option value="score-desc">score, best first</option>
    <option value="row">row id</option>
  </select></label>
  <span id="shown"></span>
</div>
<table>
<thead><tr><th>row</th><th>preview</th><th>given → suggested</th><th>score</th></tr></thead>
<tbody id="rows"></tbody>
</table>
<script id="data" type="application/json">{data}</script>
<script>
"use strict";
const DATA = JSON.parse(document.getElementById("data").textContent);
const body = document.getElementById("rows");
const controls = {{
  given: document.getElementById("given-filter"),
  suggested: document.getElementById("suggested-filter"),
  flagged: document.getElementById("only-flagged"),
  sort: document.getElementById("sort"),
}};
for (const select of [controls.given, controls.suggested]) {{
  for (const label of DATA.labels) {{
    const option = document.createElement("option");
    option.value = label;
    option.textContent = label;
    select.appendChild(option);
  }}
}}
function cell(row, content) {{
  const td = document.createElement("td");
  if (typeof content === "string") td.textContent = content; else td.appendChild(content);
  row.appendChild(td);
  return td;
}}
function preview(item) {{
  if (item.image) {{
    const img = document.createElement("img");
    img.src = item.image;
    img.alt = "row " + item.row;
    return img;
  }}
  const div = document.createElement("div");
  div.className = item.text !== undefined ? "text" : "values";
  div.textContent = item.text !== undefined ? item.text : (item.values || "");
  return div;
}}
function compare(a, b) {{
  const mode = controls.sort.value;
  if (mode === "score-desc") return b.label_score - a.label_score;
  if (mode === "row") return String(a.row).localeCompare(String(b.row), undefined, {{numeric: true}});
  return a.label_score - b.label_score;
}}
function render() {{
  const given = controls.given.value, suggested = controls.suggested.value;
  const visible = DATA.rows.filter(r =>
    (!controls.flagged.checked || r.is_label_issue) &&
    (given === "" || String(r.given_label) === given) &&
    (suggested === "" || String(r.predicted_label) === suggested));
  visible.sort(compare);
  const shown = visible.slice(0, DATA.maxShown);
  body.replaceChildren();
  for (const item of shown) {{
    const tr = document.createElement("tr");
    tr.className = item.is_label_issue ? "issue" : "";
    tr.dataset.row = item.row;
    cell(tr, String(item.row));
    cell(tr, preview(item)).className = "preview";
    cell(tr, item.given_label + " → " + item.predicted_label).className = "labels";
    cell(tr, item.label_score.toFixed(4)).className = "score";
    body.appendChild(tr);
  }}
  document.getElementById("shown").textContent = "showing " + shown.length + " of " + visible.length +
    " matching rows" + (visible.length > shown.length ? " (narrow the filters to see the rest)" : "");
}}
for (const control of Object.values(controls)) control.addEventListener("change", render);
render();
</script>
</body>
</html>
"""
