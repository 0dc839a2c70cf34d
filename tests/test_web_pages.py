"""The operator's pages in a real browser: Debian's chromium, driven by Playwright (its
own browsers are never downloaded), against a live `lipon-hw serve` and simulated runs on
a real-time clock (`--speed`), each in a process of its own, publishing as in the lab.

Each test writes a screenshot of its page: to the test's own directory, or to the
directory `LIPON_HW_SCREENSHOTS` names — `LIPON_HW_SCREENSHOTS=docs/screenshots pytest
tests/test_web_pages.py` renews the two the README shows (a plain test run leaves the
checkout as it was). The fixtures and helpers are `web_fixtures`' (shared with the other
pages' browser tests).
"""

from __future__ import annotations

import json
import signal
import sqlite3
import time

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("playwright.sync_api")

from served import cli_process, stop_process  # noqa: E402
from web_fixtures import (  # noqa: E402
    OPERATOR,
    VIEWER,
    WAIT_MS,
    count,
    get,
    open_run,
    shots,
    started,
)

from recipes import LNMO_EIS, short_recipe  # noqa: E402


def test_a_deposition_page_follows_the_run_and_its_operator_pauses_it(browser, served,
                                                                      tmp_path):
    url, data = served.url, served.data
    # a deposit of ~60 s at this speed (paused in it, then aborted): long enough to be still
    # going after a server restart on a loaded machine (100 nm ended the run there first)
    recipe = short_recipe(tmp_path, thickness_nm=600)
    run = cli_process("run", recipe, "--speed", 200, "--data", data, cwd=tmp_path)
    try:
        run_id = started(url, run)
        page = open_run(browser, url, run_id, OPERATOR)
        page.wait_for_function("() => +document.querySelector('#plots').dataset.points > 20",
                               timeout=WAIT_MS)
        first = count(page, "#plots", "points")
        page.wait_for_function(f"() => +document.querySelector('#plots').dataset.points > "
                               f"{first + 50}", timeout=WAIT_MS)
        served.restart()  # the page carries on with the new server, missing nothing
        page.wait_for_function("() => document.querySelector('#link').textContent "
                               "!== 'live'", timeout=WAIT_MS)
        page.wait_for_function("() => document.querySelector('#link').textContent "
                               "=== 'live'", timeout=WAIT_MS)
        first = count(page, "#plots", "points")
        page.wait_for_function(f"() => +document.querySelector('#plots').dataset.points > "
                               f"{first + 50}", timeout=WAIT_MS)
        # on to the deposit (step 5), where a pause matters: RF off, shutter closed
        page.wait_for_selector("#steps tr.step-running:nth-child(6)", timeout=WAIT_MS)
        page.wait_for_timeout(1000)
        assert page.locator("#steps tr.step-running").count() == 1

        page.click("#pause")
        page.wait_for_selector("#said.done", timeout=WAIT_MS)
        assert "pause requested by otto" in page.text_content("#said")
        page.wait_for_function("() => [...document.querySelectorAll('#alarms li')].some("
                               "li => li.textContent.includes('pause requested'))",
                               timeout=WAIT_MS)
        assert page.is_visible("#held")  # the run stands held
        db = sqlite3.connect(f"file:{data / 'lipon.db'}?mode=ro", uri=True)
        try:
            asked = db.execute("SELECT action, author FROM requests WHERE run_id=?",
                               (run_id,)).fetchall()
        finally:
            db.close()
        assert asked == [("pause", "otto")]

        stranger = browser.new_page()  # a tab without a token: its abort is refused
        stranger.goto(f"{url}/runs/{run_id}")
        stranger.wait_for_function("() => document.querySelector('#said').textContent"
                                   ".includes('cannot be read (401)')", timeout=WAIT_MS)
        stranger.click("#abort")
        stranger.wait_for_function("() => document.querySelector('#said').textContent"
                                   ".includes('abort refused')", timeout=WAIT_MS)
        said = stranger.text_content("#said")
        assert "abort refused (401)" in said and "needs a token" in said
        assert run.poll() is None  # the run holds on, paused

        page.wait_for_timeout(300)  # a frame drawn
        page.screenshot(path=str(shots(tmp_path) / "deposition-live.png"), full_page=True)
        page.click("#abort")
        page.wait_for_selector("#said.done", timeout=WAIT_MS)
        assert run.wait(60) == 3  # aborted by the operator
        page.wait_for_function("() => document.querySelector('#status').textContent === "
                               "'aborted'", timeout=WAIT_MS)
        # what the page followed, across the server's restart, is what the store holds:
        # nothing lost, nothing twice
        stored = get(f"{url}/api/runs/{run_id}/readings?limit=100000", VIEWER)
        assert stored["next"] is None
        deadline = time.monotonic() + 10  # a history read again after a resync may be due
        while True:
            plotted = page.evaluate("() => Object.fromEntries(liponPage.plots.flatMap("
                                    "p => p.series.map(s => [s.name, s.t.length])))")
            if plotted == {n: len(stored["series"][n]["t_s"]) for n in plotted} or \
                    time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert plotted == {n: len(stored["series"][n]["t_s"]) for n in plotted}
        page.goto(f"{url}/")  # the list of runs, with the token this tab keeps
        page.wait_for_selector(f"#runs a[href='/runs/{run_id}']", timeout=WAIT_MS)
        assert "aborted" in page.text_content("#runs")
    finally:
        stop_process(run, signal.SIGINT)


def test_a_cell_test_page_shows_sixteen_channels_updating(browser, served, tmp_path):
    url, data = served.url, served.data
    protocol = tmp_path / "lnmo16.yaml"
    protocol.write_text(LNMO_EIS.format(channels="1-16", cycles=20), encoding="utf-8")
    # a cycle (about an hour of the run clock) in 2 s: the page waits for two to end
    run = cli_process("run", protocol, "--speed", 1800, "--data", data, cwd=tmp_path)
    try:
        run_id = started(url, run)
        page = open_run(browser, url, run_id, VIEWER)
        page.wait_for_function("() => +document.querySelector('#channels').dataset.channels "
                               "=== 16", timeout=WAIT_MS)
        page.wait_for_function("() => [...document.querySelectorAll('#channels .tile')]"
                               ".every(t => +t.dataset.samples > 5)", timeout=WAIT_MS)
        before = [count(page, f".tile[data-channel='{c}']", "samples") for c in range(1, 17)]
        page.wait_for_function(
            "(before) => [...document.querySelectorAll('#channels .tile')].every("
            "(t, i) => +t.dataset.samples > before[i])", arg=before, timeout=WAIT_MS)
        page.click(".tile[data-channel='3']")
        assert page.text_content("#detail-title") == "Channel 3"
        # two cycles end: their capacities and CE as the store has them (`cycle` events)
        page.wait_for_function("() => +document.querySelector('#detail').dataset.cycles >= 2",
                               timeout=WAIT_MS)
        assert "CE –" not in page.text_content(".tile[data-channel='3']")
        page.wait_for_timeout(300)
        page.screenshot(path=str(shots(tmp_path) / "celltest-live.png"), full_page=True)
    finally:
        stop_process(run, signal.SIGINT)


def test_the_plotter_draws_100k_points_as_a_few_segments_per_pixel_column(browser, served):
    """Two series of 100 000 points in view: one pass each, at most a few path operations
    per pixel column (min..max), and the draw's time measured in the browser."""
    url = served.url
    page = browser.new_page()
    page.goto(f"{url}/static/index.html")
    got = page.evaluate("""async () => {
        const { Plot } = await import('/static/plot.js');
        const box = document.createElement('div');
        box.style.width = '1000px';
        document.body.appendChild(box);
        const plot = new Plot(box, { height: 200 });
        for (const [k, f] of [['a', Math.sin], ['b', Math.cos]]) {
            const s = plot.add(k, k);
            for (let i = 0; i < 100000; i++) s.add(i * 0.01, f(i * 1e-3) + (i % 7) * 0.01);
        }
        const g = plot.canvas.getContext('2d');
        let ops = 0;
        for (const name of ['moveTo', 'lineTo']) {
            const real = g[name].bind(g);
            g[name] = (...a) => { ops++; return real(...a); };
        }
        plot.dirty = true;
        const t0 = performance.now();
        plot.draw();
        return { ms: performance.now() - t0, ops, width: plot.canvas.clientWidth,
                 points: plot.points };
    }""")
    assert got["points"] == 200_000
    assert got["ops"] < 2 * 5 * got["width"] + 200, got  # not one per point
    print(f"plotter: 200k points drawn in {got['ms']:.1f} ms ({got['ops']} path ops)")


def test_pages_are_served_and_a_websocket_takes_its_token_as_access_token(tmp_path):
    """The pages and their scripts are served to anyone (they hold no data); a WebSocket,
    which a browser cannot give a header, may send its token as `access_token`, which the
    server's log does not show."""
    import logging

    from fastapi.testclient import TestClient
    from starlette.websockets import WebSocketDisconnect

    from lipon_hw.web.app import create_app
    from lipon_hw.web.security import Security, User
    from lipon_hw.web.server import _HideTokens

    app = create_app(tmp_path, Security({VIEWER: User("vera", "viewer")}))
    client = TestClient(app)
    for path, kind in (("/", "text/html"), ("/runs/3", "text/html"),
                       ("/static/plot.js", "javascript"), ("/static/style.css", "text/css")):
        answer = client.get(path)
        assert answer.status_code == 200 and kind in answer.headers["content-type"], path
    assert "run.js" in client.get("/runs/3").text
    assert client.get("/api/runs").status_code == 401  # the data still needs a token
    app.state.hub.publish(3, [{"seq": 1, "t_s": 0.0, "kind": "status",
                               "data": {"status": "running", "message": ""}}])
    with client.websocket_connect(f"/ws/runs/3?access_token={VIEWER}") as ws:
        assert [e["seq"] for e in json.loads(ws.receive_text())] == [1]
    for query in ("", "?access_token=not-a-token-0123456789"):
        with pytest.raises(WebSocketDisconnect), \
                client.websocket_connect(f"/ws/runs/3{query}") as ws:
            ws.receive_text()
    record = logging.LogRecord("uvicorn.error", logging.INFO, __file__, 1,
                               '%s - "WebSocket %s" [accepted]',
                               ("127.0.0.1:5", f"/ws/runs/3?since_seq=4&access_token={VIEWER}"),
                               None)
    assert _HideTokens().filter(record)
    assert VIEWER not in record.getMessage() and "since_seq=4&access_token=…" in \
        record.getMessage()


def test_the_samples_pages_list_samples_and_show_a_film_stack(browser, served, tmp_path):
    """`/samples` lists the data directory's samples; a sample's page shows its film stack
    with the run that grew each layer linked to its page."""
    from lipon_hw.deposition.session import start_run

    done = start_run(str(short_recipe(tmp_path, 5)), served.data)
    assert done.status == "completed"
    page = browser.new_page()
    page.goto(f"{served.url}/samples")
    page.fill("#token", VIEWER)
    page.press("#token", "Enter")
    page.wait_for_selector("#samples a:text('T-1')", timeout=WAIT_MS)
    assert count(page, "#samples", "total") == 1
    page.click("#samples a:text('T-1')")
    page.wait_for_selector("#stack td:text('LiPON')", timeout=WAIT_MS)
    assert page.url.endswith("/samples/T-1")
    link = page.get_attribute("#stack a", "href")
    assert link == f"/runs/{done.run_id}"
    page.screenshot(path=str(shots(tmp_path) / "sample.png"))
