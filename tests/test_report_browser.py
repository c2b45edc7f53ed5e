"""The report page in a real browser: headless Chromium (Debian's `chromium`; .ci/run installs
it as root) driven over the DevTools protocol (tests/browser.py), on a report of the built-in
demo records (predict | attribute | cam with builtin:shapes-seg). Without Chromium these tests
skip and say why."""

from __future__ import annotations

import json
import time
from pathlib import Path
from urllib.parse import quote

import numpy as np
import pytest
from browser import Browser, BrowserError, chromium_path
from conftest import make_record

import make_report_reference as ref

IG = "attr/integrated_gradients/black#0"
CAM = "cam/gradcam/decoder_last#0"
ROWS = "Array.from(document.querySelectorAll('tr.row')).map(r => r.dataset.id)"

pytestmark = pytest.mark.skipif(chromium_path() is None,
                                reason="chromium is not installed (apt-get install chromium; .ci/run does it as root)")


@pytest.fixture(scope="module")
def browser():
    try:
        b = Browser()
    except BrowserError as exc:
        pytest.skip(f"chromium does not start here: {exc}")
    yield b
    b.close()


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    """The demo records (4 scans), their `xai stats --mask` rows, and their report."""
    folder = tmp_path_factory.mktemp("demo")
    ref.make_demo_records(folder)
    page = ref.make_report(folder)
    stats = [json.loads(s) for s in (folder / "stats.jsonl").read_text().splitlines()]
    return page, stats


def open_page(browser, page_path: Path, hash_: str = "", height: int = 1600):
    page = browser.open(page_path.resolve().as_uri() + hash_, 1100, height)
    page.wait_for("document.documentElement.dataset.ready")
    page.settle()
    return page


def focus(stats: list[dict], key: str) -> dict[str, float]:
    return {r["id"]: r["focus_ratio"] for r in stats if r["map"] == key.split("#")[0]}


def wait_rows(page, expected: list[str]) -> list[str]:
    end = time.monotonic() + 5
    while (got := page.eval(ROWS)) != expected and time.monotonic() < end:
        page.browser.pump(0.05)
    return got


def test_loads_offline_with_one_row_per_record_and_its_thumbnails(browser, demo):
    page_path, _ = demo
    page = open_page(browser, page_path)
    assert page.eval(ROWS) == ["seg_000", "seg_001", "seg_002", "seg_003"]
    thumbs = page.eval("""Array.from(document.querySelectorAll('tr.row')).map(r =>
        Array.from(r.querySelectorAll('img')).map(i => [i.getAttribute('src'), i.naturalWidth, i.naturalHeight]))""")
    for rid, row in zip(["seg_000", "seg_001", "seg_002", "seg_003"], thumbs):
        assert [src for src, _, _ in row] == [f"thumbs/{rid}.png", f"thumbs/{rid}__integrated_gradients__black__blob.png",
                                              f"thumbs/{rid}__gradcam__decoder_last__blob.png"]
        assert all(w == h == 96 for _, w, h in row), row          # loaded, one panel each
    folder = page_path.parent.resolve().as_uri() + "/"
    requests = page.requests()
    assert requests and all(u.startswith(folder) for u in requests), requests   # nothing beyond the report folder
    assert len(requests) == 1 + 12
    assert page.failed_requests() == []
    assert page.console_errors() == []


def test_sorting_by_focus_ratio_orders_the_rows(browser, demo):
    page_path, stats = demo
    page = open_page(browser, page_path)
    for key in (IG, CAM):
        ratios = focus(stats, key)
        page.click(f"th[data-col='{key}|focus_ratio']")
        assert page.eval(ROWS) == sorted(ratios, key=ratios.get)
        assert f"sort={quote(key + '|focus_ratio', safe='')}" in page.eval("location.hash")
        page.click(f"th[data-col='{key}|focus_ratio']")
        assert page.eval(ROWS) == sorted(ratios, key=ratios.get, reverse=True)
        assert "desc=1" in page.eval("location.hash")
    assert page.console_errors() == []


def test_filters_hide_rows(browser, demo):
    page_path, stats = demo
    page = open_page(browser, page_path)
    page.type("#q", "seg_001")
    assert wait_rows(page, ["seg_001"]) == ["seg_001"]
    assert page.eval("document.getElementById('count').textContent").startswith("Showing 1 of 4 records")
    page = open_page(browser, page_path)
    ratios = focus(stats, IG)
    cut = float(np.median(list(ratios.values())))
    page.click("#add-range")
    page.eval(f"""(() => {{ const s = document.querySelector('#ranges select');
        s.value = {json.dumps(IG + '|focus_ratio')}; s.dispatchEvent(new Event('change')); }})()""")
    page.type("#ranges input[placeholder=min]", repr(cut))
    expected = [i for i in sorted(ratios) if ratios[i] >= cut]
    assert 0 < len(expected) < 4
    assert wait_rows(page, expected) == expected
    assert "range=" in page.eval("location.hash")
    assert page.console_errors() == []


def test_a_click_opens_the_full_figure(browser, demo):
    import imageio.v3 as iio

    page_path, _ = demo
    page = open_page(browser, page_path)
    assert page.eval("document.getElementById('viewer').hidden") is True
    name = "seg_002__integrated_gradients__black__blob.png"
    page.click(f"tr.row[data-id=seg_002] a.thumb[href='figures/{name}']")
    page.wait_for("document.getElementById('viewer-img').complete")
    shown = page.eval("""(() => { const v = document.getElementById('viewer'), i = document.getElementById('viewer-img');
        return [v.hidden, i.getAttribute('src'), i.naturalWidth, i.naturalHeight,
                document.getElementById('viewer-caption').textContent]; })()""")
    height, width = iio.imread(page_path.parent / "figures" / name).shape[:2]
    assert shown[:4] == [False, f"figures/{name}", width, height]
    assert "seg_002" in shown[4] and "integrated_gradients" in shown[4]
    page.call("Input.dispatchKeyEvent", {"type": "keyDown", "key": "Escape", "code": "Escape",
                                         "windowsVirtualKeyCode": 27})
    page.wait_for("document.getElementById('viewer').hidden")
    page.click("tr.row[data-id=seg_000] a.thumb[href='figures/seg_000.png']")    # the image: the whole panel
    assert page.eval("document.getElementById('viewer-img').getAttribute('src')") == "figures/seg_000.png"
    assert page.console_errors() == []


def test_the_view_lives_in_the_url(browser, demo):
    page_path, stats = demo
    page = open_page(browser, page_path)
    page.click(f"th[data-col='{CAM}|focus_ratio']")
    page.click(f"th[data-col='{CAM}|focus_ratio']")
    page.click("#choose-maps summary")
    page.click(f"#choose-maps input[value='{IG}']")                 # hide the IG map
    page.type("#q", "seg_00")
    ratios = focus(stats, CAM)
    expected = sorted(ratios, key=ratios.get, reverse=True)
    assert wait_rows(page, expected) == expected
    link = page.wait_for("location.hash.indexOf('q=seg_00') > 0 && location.href")
    view = "Array.from(document.querySelectorAll('#head th')).map(t => t.textContent)"
    head = page.eval(view)
    assert not any("integrated_gradients" in h for h in head) and any("gradcam" in h for h in head)
    again = open_page(browser, Path(page_path), hash_="#" + link.split("#", 1)[1])
    assert again.eval(ROWS) == expected
    assert again.eval(view) == head
    assert again.eval("document.getElementById('q').value") == "seg_00"
    only = open_page(browser, page_path, hash_="#metrics=1&metric=pointing_game&sort=id&desc=1")
    assert only.eval(ROWS) == ["seg_003", "seg_002", "seg_001", "seg_000"]
    assert only.eval("document.querySelectorAll('th[data-col$=\"|pointing_game\"]').length") == 2
    assert only.eval("document.querySelectorAll('th[data-col$=\"|focus_ratio\"]').length") == 0


def test_screenshot_matches_the_stored_reference(browser, demo, tmp_path):
    """Regenerate only on purpose: `make reference-images` (tests/make_report_reference.py)."""
    from matplotlib.testing.compare import compare_images

    assert ref.REFERENCE.exists(), "reference screenshot missing: run `make reference-images`"
    assert ref.REFERENCE.stat().st_size < 150_000
    page_path, _ = demo
    page = open_page(browser, page_path, height=ref.WINDOW[1])
    new = ref.screenshot(page, tmp_path / "report.png")
    assert compare_images(str(ref.REFERENCE), str(new), tol=ref.TOLERANCE) is None


def test_rows_of_bad_records_and_thousands_of_rows(browser, tmp_path):
    """A record without maps, one with maps, one with nothing to draw; then 1,000 rows, drawn
    lazily: only those in sight are in the document. (A map of a wrong shape never gets this
    far: records are validated as they are read, test_report.py.)"""
    from xaicli.io.record import Record
    from xaicli.report import build_report
    from xaicli.report.figures import RecordFigures, Ref
    from xaicli.report.page import write_page
    from xaicli.report.table import Table

    cam = {"kind": "cam", "method": "gradcam", "layer": "l", "targets": [{"kind": "mask", "label": "blob", "index": 0}]}
    bad = make_record("bad", maps={"cam/gradcam/l": (np.random.default_rng(0).random((1, 16, 16), np.float32), cam)})
    out = tmp_path / "bad"
    page_path = build_report([make_record("nomaps"), bad, Record.new("empty")], out)
    page = open_page(browser, page_path)
    assert page.eval(ROWS) == ["nomaps", "bad", "empty"]
    texts = page.eval("Array.from(document.querySelectorAll('tr.row')).map(r => r.textContent)")
    assert "cannot draw: nothing to draw" in texts[2]
    assert page.eval("document.querySelectorAll('tr.row[data-id=nomaps] img').length") == 1
    assert page.eval("document.querySelectorAll('tr.row[data-id=bad] img').length") == 2      # image, good map
    assert page.console_errors() == []

    table = Table()
    for i in range(1000):
        rec = make_record(f"r{i:04d}", size=(8, 8), seed=i, maps={"cam/gradcam/l": (
            np.random.default_rng(i).random((1, 8, 8), np.float32), cam)})
        table.add(rec, RecordFigures(Ref(error="not drawn in this test"), {("cam/gradcam/l", 0): Ref(error="-")}))
    (tmp_path / "big").mkdir()
    big = write_page(table.data("big", 96), tmp_path / "big")
    page = open_page(browser, big, height=900)
    drawn = page.eval(ROWS)
    assert drawn[0] == "r0000" and 5 < len(drawn) < 60
    page.eval("scrollTo(0, document.body.scrollHeight)")
    page.settle()
    page.browser.pump(0.2)
    assert page.eval(ROWS)[-1] == "r0999"
    page.click("th[data-col='id']")
    page.click("th[data-col='id']")
    page.eval("scrollTo(0, 0)")
    page.settle()
    page.browser.pump(0.2)
    assert page.eval(ROWS)[0] == "r0999"
    assert page.console_errors() == []
