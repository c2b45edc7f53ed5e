"""The page: one `index.html` holding its CSS, its script and the table as JSON, written atomically.

Everything is inline, so the page works from the file system with nothing fetched (a
`file://` page may not fetch a JSON file next to it) and the page and its data are
replaced by one rename: a cron job that rewrites it never shows a reader half a page or a
page with another run's data. The script is plain ES2017 with no framework or build step,
for browsers of five years ago; `assets/` holds its sources.
"""

from __future__ import annotations

import html
import json
import re
from pathlib import Path
from typing import Any

from xaicli.io.atomic import atomic_write

ASSETS = Path(__file__).with_name("assets")
PAGE = "index.html"


def page_html(data: dict[str, Any]) -> str:
    template = (ASSETS / "page.html").read_text(encoding="utf-8")
    # JSON inside <script>: '<' only occurs in strings, where \u003c keeps "</script>" and "<!--" out.
    payload = json.dumps(data, allow_nan=False, ensure_ascii=False, separators=(",", ":")).replace("<", "\\u003c")
    parts = {"TITLE": html.escape(str(data.get("title", ""))),
             "CSS": (ASSETS / "report.css").read_text(encoding="utf-8"),
             "JS": (ASSETS / "report.js").read_text(encoding="utf-8"),
             "DATA": payload}
    # one pass: text put in (a title, the table's strings) is never read as a placeholder
    return re.sub(r"\{\{(TITLE|CSS|JS|DATA)\}\}", lambda m: parts[m.group(1)], template)


def write_page(data: dict[str, Any], out: Path) -> Path:
    path = out / PAGE
    atomic_write(path, page_html(data).encode("utf-8"))
    return path
