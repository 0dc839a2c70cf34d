"""The cell-test page's chosen channel in a real browser (Debian's chromium through
Playwright, as `test_web_pages`): its V–Q curves, capacity and CE per cycle and Nyquist
plot, their history read from the REST API (`web/cells.py`) and extended live.

A two-channel cell test with an impedance spectrum opening each cycle runs on a real-time
clock; the server is restarted once some cycles have run, so its ring of live events
starts after them: the page, opened then, can have them from the store only. It writes a
screenshot of the page with the channel's plots (`celltest-channel.png`, to the test's
own directory unless `LIPON_HW_SCREENSHOTS` names one).
"""

from __future__ import annotations

import signal
import time

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("playwright.sync_api")

from served import cli_process, stop_process  # noqa: E402
from web_fixtures import VIEWER, WAIT_MS, get, open_run, shots, started  # noqa: E402

from recipes import LNMO_EIS  # noqa: E402

SPEED = 3000  # a cycle (~3600 s of the run clock) in about 1.2 s
#: cycles run before the page is opened: the page reads the first ones decimated (all but
#: its last 5 cycles), the others at full resolution
BEFORE = 6


def detail(page, name: str) -> int:
    return int(page.get_attribute("#detail", f"data-{name}") or 0)


def drawn(page, box: str) -> int:
    return int(page.get_attribute(f"#{box} canvas", "data-drawn") or 0)


def wait_until(page, condition: str, arg=None) -> None:
    page.wait_for_function(condition, arg=arg, timeout=WAIT_MS)


def stored_cycles(url: str, run_id: int, channel: int) -> list[dict]:
    return get(f"{url}/api/runs/{run_id}/channels/{channel}/cycles", VIEWER)["cycles"]


def test_the_chosen_channels_history_comes_from_the_store_then_grows_live(
        browser, served, tmp_path):  # noqa: F811
    url, data = served.url, served.data
    protocol = tmp_path / "lnmo-eis.yaml"
    protocol.write_text(LNMO_EIS.format(channels="1-2", cycles=60), encoding="utf-8")
    run = cli_process("run", protocol, "--speed", SPEED, "--data", data, cwd=tmp_path)
    try:
        run_id = started(url, run)
        deadline = time.monotonic() + WAIT_MS / 1000
        while len(stored_cycles(url, run_id, 1)) < BEFORE:  # in the store only
            assert run.poll() is None and time.monotonic() < deadline, run.stderr.read()
            time.sleep(0.2)
        served.restart()  # the server's ring starts anew: the cycles before are stored only
        before = get(f"{url}/api/runs/{run_id}/channels/1/samples?limit=100000", VIEWER)
        first_t = before["t_s"][0]
        cycles = stored_cycles(url, run_id, 1)

        page = open_run(browser, url, run_id, VIEWER)
        wait_until(page, "() => document.querySelector('#detail').dataset.history === 'loaded'"
                         " && document.querySelector('#detail').dataset.channel === '1'")
        # the whole history: from the run's first sample, every cycle, every spectrum
        assert page.evaluate("() => liponPage.channels.get(1).data.t[0]") == first_t
        full_from = page.evaluate("() => liponPage.channels.get(1).data.fullFrom")
        ends = [c["t_end_s"] for c in stored_cycles(url, run_id, 1)]
        assert full_from in ends[len(cycles) - 5:]  # a cycle's end: the decimated read's
        assert detail(page, "samples") >= len(before["t_s"])
        assert detail(page, "cycles") >= len(cycles) >= BEFORE
        assert detail(page, "spectra") >= len(cycles) + 1  # one opens each cycle
        assert detail(page, "spectrum-points") >= 21 * (len(cycles) + 1)
        shown = page.evaluate("() => [...liponPage.channels.get(1).data.cycles.values()]"
                              ".sort((a, b) => a.cycle - b.cycle)"
                              ".map(s => [s.cycle, s.coulombic_efficiency])")
        assert shown[:len(cycles)] == [[c["cycle"], c["coulombic_efficiency"]] for c in cycles]
        # the plots drew them: V–Q half-cycles of the last cycles, a point per cycle,
        # a curve per spectrum
        assert detail(page, "vq-curves") >= 6 and detail(page, "vq-points") > 100
        wait_until(page, """(n) => {
            const drawn = (id) => +document.querySelector(`#${id} canvas`).dataset.drawn;
            return drawn('vq') > 50 && drawn('nyquist') >= 4 * 10 && drawn('capacity') >= 2 * n
                && drawn('ce') >= n && drawn('vt') > 100;
        }""", len(cycles))
        assert int(page.get_attribute("#nyquist canvas", "data-curves")) >= len(cycles) + 1
        vq_max = page.evaluate("() => Math.max(...liponPage.vq.curves.map(c => c.x.at(-1)))")
        assert 1.0 < vq_max < 2.0  # µAh: the cell's 1.47 µAh, give or take

        # live: a cycle more, its spectrum, its samples, each drawn — after the history's
        # tail was read again (2.5 s after a resync), from the live events alone
        wait_until(page, "() => +document.querySelector('#detail').dataset.fills >= 1")
        now = {k: detail(page, k) for k in ("cycles", "spectra", "samples")}
        now["nyquist"] = drawn(page, "nyquist")
        wait_until(page, """(now) => {
            const d = document.querySelector('#detail').dataset;
            return +d.cycles > now.cycles && +d.spectra > now.spectra
                && +d.samples > now.samples
                && +document.querySelector('#nyquist canvas').dataset.drawn > now.nyquist;
        }""", now)

        page.click(".tile[data-channel='2']")  # another channel: its history read too
        wait_until(page, "() => document.querySelector('#detail').dataset.channel === '2' && "
                         "document.querySelector('#detail').dataset.history === 'loaded'")
        assert page.evaluate("() => liponPage.channels.get(2).data.t[0]") == \
            get(f"{url}/api/runs/{run_id}/channels/2/samples?limit=1", VIEWER)["t_s"][0]
        assert detail(page, "cycles") >= len(cycles) and detail(page, "spectra") > len(cycles)
        page.wait_for_timeout(300)  # a frame drawn
        page.screenshot(path=str(shots(tmp_path) / "celltest-channel.png"), full_page=True)
    finally:
        stop_process(run, signal.SIGINT)
