"""`xai report` with 10,000 records: first paint and sorting of the page in headless Chromium.

    python bench/bench_report.py [--rows 10000] [--reps 3]

Synthetic segmentation records (32x32, an Integrated Gradients map and two CAMs each) go
through the report's own table code (`xaicli.report.table.Table`: metrics by xai stats's
code, summary, provenance); their figures are those of 8 records drawn for real, reused
in turn (drawing 40,000 figures would measure matplotlib, not the page). The page is
opened in a fresh tab per repetition; printed are the medians of: first contentful paint,
table built and painted (the page's own performance marks), sorting by a metric (ascending,
descending) and by id, and applying a view from a link (hash with a range filter), each
from the click to the next painted frame, against the goals first paint <= 2 s and
sort <= 0.5 s. Timings are printed, never asserted.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from browser import Browser, BrowserError, chromium_path  # noqa: E402

GOAL_PAINT_S, GOAL_SORT_S = 2.0, 0.5
TARGET = [{"kind": "mask", "label": "blob", "index": 0}]
IG = "attr/integrated_gradients/black"


def synthetic(i: int):
    """A 32x32 segmentation record: image, predicted mask, one IG map and two CAMs."""
    from xaicli.io.record import Record

    rng = np.random.default_rng(i)
    size = 32
    rec = Record.new(f"scan_{i:05d}", {"path": f"scans/scan_{i:05d}.png", "sha256": f"{i:064x}",
                                       "shape": [size, size], "dtype": "uint8"})
    rec.meta.update(task="segmentation", model={"spec": "builtin:shapes-seg", "sha256": "1" * 64,
                                                "arch": "UnetPlusPlus", "labels": ["blob"]})
    mask = np.zeros((size, size), np.uint8)
    y, x = rng.integers(4, 20, 2)
    mask[y:y + 8, x:x + 8] = 1
    rec.arrays.update({"image": rng.integers(0, 255, (size, size), dtype=np.uint8), "pred/mask": mask,
                       "pred/probs": mask[None].astype(np.float32)})
    rec.meta["prediction"] = {"threshold": 0.5, "area_fraction": {"blob": float(mask.mean())}}
    ig = rng.normal(size=(1, 3, size, size)).astype(np.float32) + 3 * rng.random() * mask
    rec.add_map(IG, ig, {"kind": "attribution", "method": "integrated_gradients", "baseline": "black",
                         "targets": TARGET, "steps": 32, "delta": [1e-3], "relative_delta": [rng.random() / 50]})
    for method in ("gradcam", "gradcam++"):
        cam = rng.random((1, size, size)).astype(np.float32) + rng.random() * mask
        rec.add_map(f"cam/{method}/decoder_last", cam, {"kind": "cam", "method": method, "layer": "decoder_last",
                                                        "targets": TARGET})
    rec.add_history("attribute", {"steps": 32, "baselines": ["black"]}, 1.0, "cpu")
    return rec


def build(folder: Path, rows: int) -> tuple[Path, float]:
    """The page of `rows` records (figures of 8 drawn for real, reused); returns it and the table's time."""
    from xaicli.report import ReportOptions, build_report
    from xaicli.report.figures import Drawer
    from xaicli.report.page import write_page
    from xaicli.report.table import Table

    opts = ReportOptions()
    drawn = [synthetic(i) for i in range(8)]
    build_report(drawn, folder)
    drawer = Drawer(folder, opts, skip_existing=True)
    figures = [drawer.draw(rec) for rec in drawn]          # all skipped: the refs of the drawn figures
    t0 = time.perf_counter()
    table = Table()
    for i in range(rows):
        table.add(synthetic(i), figures[i % len(figures)])
    data = table.data(f"{rows} synthetic records", opts.thumb_size)
    page = write_page(data, folder)
    return page, time.perf_counter() - t0


MEASURE = """(async () => {
  const t0 = performance.now();
  %s;
  await new Promise(r => requestAnimationFrame(() => setTimeout(r, 0)));
  return (performance.now() - t0) / 1000;
})()"""


def measure(browser: Browser, page_path: Path) -> dict[str, float]:
    page = browser.open(page_path.resolve().as_uri(), 1400, 900)
    page.wait_for("performance.getEntriesByName('xai-painted').length > 0", timeout=60)
    marks = page.eval("""(() => {
        const one = n => (performance.getEntriesByName(n)[0] || {}).startTime / 1000;
        return {fcp: one('first-contentful-paint'), table: one('xai-table'), painted: one('xai-painted')}; })()""")
    col = f"{IG}#0|focus_ratio"
    click = "document.querySelector(%s).click()"
    out = {"first contentful paint": marks["fcp"], "table built": marks["table"], "table painted": marks["painted"],
           "sort by focus ratio": page.eval(MEASURE % (click % json.dumps(f"th[data-col='{col}']"))),
           "sort by focus ratio, reversed": page.eval(MEASURE % (click % json.dumps(f"th[data-col='{col}']"))),
           "sort by id": page.eval(MEASURE % (click % json.dumps("th[data-col='id']"))),
           "view from a link (range filter)": page.eval(MEASURE % (
               "location.hash = %s" % json.dumps("#sort=score&range=2~~" + col)))}
    rows = page.eval("document.querySelectorAll('tr.row').length")
    errors = page.console_errors()
    page.call("Page.close")
    if errors:
        raise SystemExit(f"console errors: {errors[:3]}")
    out["rows in the document"] = rows
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=10_000)
    ap.add_argument("--reps", type=int, default=3, help="fresh page loads (median taken)")
    args = ap.parse_args(argv)
    if chromium_path() is None:
        print("chromium is not installed (apt-get install chromium): nothing measured")
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        page, table_s = build(Path(tmp), args.rows)
        print(f"page of {args.rows} records: {page.stat().st_size / 1e6:.1f} MB (table and page written in "
              f"{table_s:.1f} s, figures not drawn)")
        try:
            with Browser(timeout=120) as browser:
                runs = [measure(browser, page) for _ in range(args.reps)]
        except BrowserError as exc:
            print(f"chromium does not start here ({exc}): nothing measured")
            return 0
    for name in runs[0]:
        value = statistics.median(r[name] for r in runs)
        if name == "rows in the document":
            print(f"{name:34s} {value:7.0f}    (of {args.rows}: drawn lazily)")
            continue
        goal = GOAL_PAINT_S if "paint" in name or "built" in name else GOAL_SORT_S
        print(f"{name:34s} {value:7.3f} s  (goal <= {goal:.1f} s: {'met' if value <= goal else 'NOT met'}; "
              f"{value / goal:.2f} of it; median of {args.reps})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
