"""Regenerate tests/data/report_reference.png, the stored screenshot that test_report_browser
compares a report page of the built-in demo records against.

Run it only on purpose, after a deliberate change to how the page or its figures look
(`make reference-images`), and look at the new image before committing it.

The records are the demo's (four generated scans, `builtin:shapes-seg`, Integrated
Gradients with few steps and Grad-CAM), made in a folder with relative paths so the page
shows the same sources wherever it runs. The screenshot is the controls and the first
rows of the table: the summary above them holds the xai version and every option of
every step, which change for reasons that are not the page's.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
REFERENCE = HERE / "data" / "report_reference.png"
WINDOW = (1100, 1400)          # CSS pixels; tall enough for every row of the demo
CROP_HEIGHT = 420              # pixels from the top of the controls
TOLERANCE = 5.0                # RMS of the difference in 0-255 levels: a missing thumbnail is 27, a 2-pixel shift 23
STEPS = "4"


def make_demo_records(folder: Path) -> Path:
    """The demo's records in `folder`: seg/ (scans and masks/), seg.tar (predict | attribute | cam),
    stats.jsonl (`xai stats --mask seg/masks/`). Returns seg.tar."""
    sys.path.insert(0, str(HERE))
    from conftest import invoke

    folder.mkdir(parents=True, exist_ok=True)
    subprocess.run([sys.executable, "-m", "xaicli.models.builtin.shapes", str(folder / "seg"), "--count", "4",
                    "--task", "segmentation"], check=True, stdout=subprocess.DEVNULL)
    here = os.getcwd()
    os.chdir(folder)               # relative source paths: the page reads the same in every run
    try:
        for args in (["predict", "-m", "builtin:shapes-seg", "seg", "-o", "pred.tar"],
                     ["attribute", "-m", "builtin:shapes-seg", "pred.tar", "--steps", STEPS, "-o", "ig.tar"],
                     ["cam", "-m", "builtin:shapes-seg", "ig.tar", "-o", "seg.tar"],
                     ["stats", "seg.tar", "--mask", "seg/masks/", "-o", "stats.jsonl"]):
            r = invoke(args)
            assert r.exit_code == 0, (args, r.stderr)
    finally:
        os.chdir(here)
    return folder / "seg.tar"


def make_report(folder: Path) -> Path:
    """The report of the demo records, with their stats: returns index.html."""
    from xaicli.io.inputs import resolve
    from xaicli.report import ReportOptions, build_report

    records = resolve([str(folder / "seg.tar")], images=False, records=True)
    return build_report(records, folder / "report", ReportOptions(title="demo"), stats=[folder / "stats.jsonl"])


def screenshot(page, path: Path) -> Path:
    """The controls and the first rows of the table of an open page, as PNG."""
    import matplotlib.image

    page.settle()
    top = int(page.eval("Math.round(document.getElementById('controls').getBoundingClientRect().top + scrollY)"))
    page.eval("scrollTo(0, 0)")
    page.settle()
    full = path.with_suffix(".full.png")
    page.screenshot(full)
    pixels = matplotlib.image.imread(full)[top:top + CROP_HEIGHT, :, :3]
    full.unlink()
    h, w = pixels.shape[0] // 2 * 2, pixels.shape[1] // 2 * 2    # half size: a few 10 kB in the repository
    half = pixels[:h, :w].reshape(h // 2, 2, w // 2, 2, 3).mean(axis=(1, 3))
    matplotlib.image.imsave(path, half)
    return path


def make_reference(folder: Path, out: Path) -> Path:
    from browser import Browser

    make_demo_records(folder)
    page_path = make_report(folder)
    with Browser() as browser:
        page = browser.open(page_path.resolve().as_uri(), *WINDOW)
        page.wait_for("document.documentElement.dataset.ready")
        return screenshot(page, out)


if __name__ == "__main__":
    import tempfile

    sys.path.insert(0, str(HERE))
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else REFERENCE
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        print(make_reference(Path(tmp) / "demo", out))
