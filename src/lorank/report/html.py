"""One self-contained HTML report: tables, figures (PNG inlined as data URIs), provenance.

The page needs no server and no network. A tiny inline script counts the images that decoded and
writes ``data-images-loaded="k/n"`` on ``<body>`` — what the headless-browser test reads.
"""

from __future__ import annotations

import base64
import json
from html import escape
from pathlib import Path
from typing import Any

from lorank.report.tables import Table, to_html

_STYLE = """
body{font-family:system-ui,sans-serif;max-width:1500px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:.5em 0 1.5em;font-size:.85em}
table{display:block;overflow-x:auto;max-width:100%}
th,td{border:1px solid #ccc;padding:.25em .6em;text-align:right;white-space:nowrap}
th{background:#f3f3f3} td:first-child,th:first-child{text-align:left}
figure{margin:1em 0} img{max-width:100%} .note{color:#555;font-size:.85em}
table.prov td,table.prov th{text-align:left} table.prov td.v{font-family:monospace}
"""

_SCRIPT = """
window.addEventListener('load', function () {
  var imgs = document.images, ok = 0;
  for (var i = 0; i < imgs.length; i++) {
    if (imgs[i].complete && imgs[i].naturalWidth > 0) ok++;
  }
  document.body.setAttribute('data-images-loaded', ok + '/' + imgs.length);
});
"""


def data_uri(path: Path) -> str:
    """A PNG file as a ``data:image/png;base64,...`` URI."""
    return "data:image/png;base64," + base64.b64encode(Path(path).read_bytes()).decode("ascii")


def render(title: str, summary: list[str], tables: list[Table], figures: list[tuple[str, Path]],
           provenance: dict) -> str:
    """The report page as one HTML string (figures given as (caption, PNG path))."""
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>{escape(title)}</title>",
             f"<style>{_STYLE}</style><script>{_SCRIPT}</script></head><body>",
             f"<h1>{escape(title)}</h1>"]
    if summary:
        parts.append("<h2>Findings</h2><ul>" + "".join(f"<li>{escape(s)}</li>" for s in summary)
                     + "</ul>")
    parts.append("<h2>Tables</h2>")
    parts += [to_html(t) for t in tables]
    parts.append("<h2>Figures</h2>")
    for caption, png in figures:
        parts.append(f"<figure><img alt='{escape(caption)}' src='{data_uri(png)}'>"
                     f"<figcaption>{escape(caption)}</figcaption></figure>")
    parts.append("<h2>Provenance</h2>" + provenance_html(provenance))
    parts.append("</body></html>")
    return "\n".join(parts)


def readable(value: Any) -> str:
    """A provenance value as a reader wants it: strings bare (``float32``, not ``"float32"``),
    lists joined with ", ", mappings as ``key: value`` pairs, None as ``none``."""
    if value is None:
        return "none"
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list | tuple):
        return "[" + ", ".join(readable(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {readable(v)}" for k, v in sorted(value.items())) + "}"
    return json.dumps(value)


def _values(values: Any) -> str:
    """A list of alternatives (one per distinct value) joined with " | "; anything else as is."""
    if isinstance(values, list):
        return " | ".join(readable(v) for v in values) or "-"
    return readable(values)


def provenance_html(provenance: dict) -> str:
    """Provenance as two-column tables: the run set (store, runs, sweeps, commits), package
    versions, and every config field with the values it took (one cell per field)."""
    def table(rows: list[tuple[str, str]], head: tuple[str, str]) -> str:
        body = "".join(f"<tr><td>{escape(k)}</td><td class='v'>{escape(v)}</td></tr>"
                       for k, v in rows)
        return (f"<table class='prov'><thead><tr><th>{escape(head[0])}</th>"
                f"<th>{escape(head[1])}</th></tr></thead><tbody>{body}</tbody></table>")

    general = [(k, _values(v)) for k, v in provenance.items() if k not in ("versions", "configs")]
    parts = [table(general, ("item", "value"))]
    if provenance.get("versions"):
        parts.append("<h3>Package versions</h3>" + table(
            [(k, _values(v)) for k, v in sorted(provenance["versions"].items())],
            ("package", "versions")))
    if provenance.get("configs"):
        parts.append("<h3>Run configurations (values taken across the runs)</h3>" + table(
            [(k, _values(v)) for k, v in provenance["configs"].items()], ("field", "values")))
    return "".join(parts)
