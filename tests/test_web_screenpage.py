"""A sheet screening's live page in a real browser (Debian's chromium through Playwright,
`web_fixtures`), against a live `lipon-hw serve` and the shipped screening recipe run on
the simulated lab on a real-time clock: the page opens mid-sheet, the map fills in, the
bin counts always add up to the cells tested, and at the end they are the store's.

Writes `screening-live.png` (see `web_fixtures` for where: `LIPON_HW_SCREENSHOTS=
docs/screenshots` renews the README's).
"""

from __future__ import annotations

import signal
from collections import Counter

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("playwright.sync_api")

from served import cli_process, stop_process  # noqa: E402
from web_fixtures import VIEWER, WAIT_MS, count, open_run, shots, started  # noqa: E402

from lipon_hw.store import Store  # noqa: E402

#: 600 cells in 20 touchdowns, 52 s of prober time: about 13 s of wall time
SPEED = 4
CELLS = 600

#: the page's counts in one look: cells on the map, in the bins, in the yield line
TALLY = """() => ({
    map: +document.querySelector('#sheet-map').dataset.tested,
    bins: [...document.querySelectorAll('#bins tr[data-soft-bin]')]
        .reduce((n, tr) => n + +tr.dataset.count, 0),
    yield: +document.querySelector('#yield').dataset.tested,
    kept: liponPage.cells.size,
    at: document.querySelector('#sheet-map').dataset.touchdown,
    status: document.querySelector('#status').textContent })"""


def cell_centre(page, row: int, col: int) -> tuple[float, float]:
    """Where cell (row, col) is drawn on the page."""
    box = page.locator("#sheet-map").bounding_box()
    size = page.evaluate("() => liponPage.geometry().size")
    return box["x"] + 28 + (col - 0.5) * size, box["y"] + 16 + (row - 0.5) * size


def test_a_screening_page_fills_its_sheet_map_as_the_prober_steps(browser, served, tmp_path):
    url, data = served.url, served.data
    run = cli_process("run", "sheet_screening", "--speed", SPEED, "--data", data, cwd=tmp_path)
    try:
        run_id = started(url, run)
        page = open_run(browser, url, run_id, VIEWER)
        page.set_viewport_size({"width": 1280, "height": 760})
        page.wait_for_function("() => +document.querySelector('#sheet-map').dataset.total "
                               f"=== {CELLS}", timeout=WAIT_MS)
        assert page.text_content("#sheet-title").startswith("Sheet SHEET-0001: 20 × 30 cells")
        page.wait_for_function("() => +document.querySelector('#sheet-map').dataset.tested "
                               "> 0", timeout=WAIT_MS)
        first = page.evaluate(TALLY)
        assert first["map"] < CELLS and first["status"] == "running"  # opened mid-sheet
        assert first["map"] == first["bins"] == first["yield"] == first["kept"]

        # the map fills in, touchdown by touchdown, the one the prober is at outlined
        page.wait_for_function("(n) => +document.querySelector('#sheet-map').dataset.tested "
                               f">= n + 64 && +document.querySelector('#sheet-map').dataset"
                               f".tested < {CELLS}", arg=first["map"], timeout=WAIT_MS)
        mid = page.evaluate(TALLY)
        assert mid["map"] == mid["bins"] == mid["yield"] == mid["kept"]
        if mid["at"]:  # outlined: a touchdown none of whose cells is on the map yet
            assert page.evaluate(f"() => !liponPage.seen.has({mid['at']})")
        page.mouse.move(*cell_centre(page, 1, 1))  # touchdown 1's first site
        page.wait_for_function("() => document.querySelector('#cell').dataset.cell === "
                               "'SHEET-0001-R01C01'", timeout=WAIT_MS)
        shown = page.text_content("#cell")
        assert "soft bin" in shown and "OCV" in shown and "|Z| at 10 kHz" in shown

        # a failing cell kept on show while the sheet goes on: the screenshot
        failed = page.evaluate("() => [...liponPage.cells.values()].filter(c => !c.passed)"
                               ".map(c => [c.row, c.col])[0] || [1, 1]")
        page.mouse.click(*cell_centre(page, *failed))
        page.mouse.move(5, 5)
        page.wait_for_function(f"(n) => +document.querySelector('#sheet-map').dataset.tested "
                               f">= Math.min(n + 32, {CELLS})", arg=mid["map"], timeout=WAIT_MS)
        page.evaluate("() => new Promise(r => requestAnimationFrame(() => r()))")
        page.screenshot(path=str(shots(tmp_path) / "screening-live.png"), full_page=True)

        page.wait_for_function("() => document.querySelector('#status').textContent === "
                               "'completed'", timeout=WAIT_MS)
        page.wait_for_function(f"() => +document.querySelector('#sheet-map').dataset.tested "
                               f"=== {CELLS}", timeout=WAIT_MS)
        store = Store(data, read_only=True)
        try:
            assert store.run(run_id).status == "completed"
            cells = store.screen_cells(run_id)
        finally:
            store.close()
        assert len(cells) == CELLS
        end = page.evaluate(TALLY)
        assert end["map"] == end["bins"] == end["yield"] == end["kept"] == CELLS
        assert end["at"] == ""  # the prober is done: no touchdown outlined
        on_page = {int(tr.get_attribute("data-soft-bin")): int(tr.get_attribute("data-count"))
                   for tr in page.query_selector_all("#bins tr[data-soft-bin]")}
        binned = Counter(c.soft_bin for c in cells)
        assert {b: n for b, n in on_page.items() if n} == dict(binned)
        assert count(page, "#yield", "passed") == sum(c.passed for c in cells)

        later = open_run(browser, url, run_id, VIEWER)  # the sheet read whole from REST
        later.wait_for_function(f"() => +document.querySelector('#sheet-map').dataset.tested "
                                f"=== {CELLS}", timeout=WAIT_MS)
        assert later.evaluate(TALLY) == end
    finally:  # the run may still be drawing its maps
        stop_process(run, signal.SIGINT)
