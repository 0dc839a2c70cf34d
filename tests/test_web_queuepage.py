"""The queue page (`/queue`) in a real browser: Debian's chromium through Playwright, a
live `lipon-hw serve` with an operator and a viewer, whose own queue runner runs what the
page submits as `lipon-hw run` processes of the simulated lab on a real-time clock.

The test writes a screenshot of the page (`web_fixtures.shots`):
`LIPON_HW_SCREENSHOTS=docs/screenshots pytest tests/test_web_queuepage.py` renews the
README's.
"""

from __future__ import annotations

import json
import re
import signal
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("playwright.sync_api")

from served import cli_process  # noqa: E402
from web_fixtures import OPERATOR, VIEWER, WAIT_MS, get, shots  # noqa: E402

from lipon_hw.shipped import find_sequence, shipped_names  # noqa: E402

from recipes import LNMO, SHORT  # noqa: E402

BAD = SHORT.replace("THICKNESS", "5").replace("power_W: 50,", "power_W: -50,")
ENDED = ("done", "failed", "cancelled")


def post(url: str, token: str | None, body: dict | None = None) -> tuple[int, dict]:
    """(status, JSON answer) of a POST, refusals included."""
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    request = urllib.request.Request(url, json.dumps(body or {}).encode(), headers)
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def wait_lane(page, lane: str, entries: list[int]) -> None:
    """Wait until the lane shows these entries in this order (the page redraws its lanes
    when it next hears of the queue, not at once)."""
    page.wait_for_function("([lane, want]) => [...document.querySelectorAll(`#lane-${lane} "
                           "tr[data-entry]`)].map(r => r.dataset.entry).join() === want",
                           arg=[lane, ",".join(map(str, entries))], timeout=WAIT_MS)


def wait_text(page, selector: str, text: str) -> str:
    """Wait until the element's text holds `text`; its text."""
    page.wait_for_function("([s, t]) => (document.querySelector(s)?.textContent || '')"
                           ".includes(t)", arg=[selector, text], timeout=WAIT_MS)
    return page.text_content(selector)


def open_queue(browser, url: str, token: str | None):
    page = browser.new_page()
    page.set_viewport_size({"width": 1200, "height": 760})
    page.goto(f"{url}/queue")
    if token:
        page.fill("#token", token)
        page.press("#token", "Enter")  # kept in sessionStorage; the listing read with it
        page.wait_for_function("() => document.querySelector('#queue').dataset.entries "
                               "!== undefined", timeout=WAIT_MS)
    return page


def submit(page, path: Path | None = None, shipped: str | None = None, **options) -> str:
    """Submit from the page's form; what the page says of it."""
    page.evaluate("() => { document.querySelector('#submit-said').textContent = ''; }")
    if path is not None:
        page.set_input_files("#file", str(path))
        page.wait_for_function("(n) => document.querySelector('#chosen').textContent"
                               ".startsWith(n)", arg=path.name, timeout=WAIT_MS)
    else:
        page.select_option("#shipped", shipped)
    for name in ("seed", "speed"):
        page.fill(f"#{name}", str(options.get(name, "")))
    page.click("#send")
    page.wait_for_function("() => /queued as|refused/.test(document.querySelector("
                           "'#submit-said').textContent)", timeout=WAIT_MS)
    return page.text_content("#submit-said")


def end_queue_runs(url: str, data: Path) -> None:
    """Whatever the queue still runs is cancelled (its run aborted: hardware made safe) and
    waited for, so that no run outlives the test; a run the server cannot reach is sent
    SIGTERM by the pid its claim holds (as Ctrl-C)."""
    import os

    from lipon_hw.engine import claims
    from lipon_hw.engine.ownership import held_by

    try:
        entries = get(f"{url}/api/queue", VIEWER)["entries"]
    except OSError:
        entries = []
    for entry in entries:
        if entry["state"] == "running":
            post(f"{url}/api/queue/{entry['id']}/cancel", OPERATOR)
    deadline = time.monotonic() + 60
    for entry in entries:
        while entry["state"] == "running" and entry["run_id"] is not None:
            holder = held_by(data, claims.run(entry["run_id"]))
            if holder is None:
                break
            if time.monotonic() > deadline:
                found = re.search(r"\(pid (\d+)\)", holder)
                if found:
                    os.kill(int(found.group(1)), signal.SIGTERM)
                break
            time.sleep(0.2)


def test_an_operator_queues_reorders_and_cancels_from_the_queue_page(browser, served,
                                                                     tmp_path):
    url, data = served.url, served.data
    bad, big = tmp_path / "bad.yaml", tmp_path / "big.yaml"
    bad.write_text(BAD, encoding="utf-8")
    big.write_text(SHORT.replace("THICKNESS", "3") + ("# " + "x" * 98 + "\n") * 3000,
                   encoding="utf-8")
    hold, tiny, cells = tmp_path / "hold.yaml", tmp_path / "tiny.yaml", tmp_path / "cells.yaml"
    hold.write_text(SHORT.replace("THICKNESS", "500"), encoding="utf-8")  # runs for minutes
    tiny.write_text(SHORT.replace("THICKNESS", "3"), encoding="utf-8")
    cells.write_text(LNMO.format(channels="1-2", cycles=1), encoding="utf-8")
    validate = cli_process("validate", bad.name, cwd=tmp_path)
    _, said = validate.communicate(timeout=60)
    assert validate.returncode == 2 and said.startswith("error: bad.yaml:")
    sentence = said.removeprefix("error: ").strip()

    page = open_queue(browser, url, OPERATOR)
    try:
        assert page.text_content("#lanes") == "Nothing is queued or running."
        # refusals come back as the server's one sentence: validate's file:line: field
        assert submit(page, bad) == f"bad.yaml refused (422): {sentence}"
        assert submit(page, big).startswith(
            "big.yaml refused (413): the submission is larger than 256 kB (")
        assert get(f"{url}/api/queue", VIEWER)["entries"] == []  # nothing stored

        assert submit(page, hold, speed=5) == \
            "queued as entry 1 on sputter: short LiPON (deposition)"
        assert submit(page, cells, speed=1e6).startswith("queued as entry 2 on mes4: ")
        assert submit(page, tiny, speed=1e6).startswith("queued as entry 3 on sputter")
        # a shipped recipe, chosen from the list, its text shown before it is sent
        page.select_option("#shipped", "lipon_rf_sputter.yaml")
        assert page.text_content("#preview") == \
            Path(find_sequence("lipon_rf_sputter")).read_text(encoding="utf-8")
        assert page.eval_on_selector_all("#shipped option[value$='.yaml']", "o => o.length") \
            == len(shipped_names())
        assert submit(page, shipped="lipon_rf_sputter.yaml", seed=7).startswith(
            "queued as entry 4 on sputter")
        assert get(f"{url}/api/queue/4", VIEWER)["options"] == {"seed": 7}
        assert get(f"{url}/api/queue/1", VIEWER)["options"] == {"speed": 5.0}

        # the first runs; its run's id links to its live page (the entries behind it wait)
        page.wait_for_selector("#lane-sputter tr[data-entry='1'] a.run-link", timeout=WAIT_MS)
        run_1 = get(f"{url}/api/queue/1", VIEWER)["run_id"]
        assert page.get_attribute("#lane-sputter tr[data-entry='1'] a.run-link", "href") == \
            f"/runs/{run_1}"
        wait_lane(page, "sputter", [1, 3, 4])
        # the cell test runs beside it, in its own lane, and ends
        page.wait_for_selector("#ended tr[data-entry='2'][data-state='done'] a.run-link",
                               timeout=WAIT_MS)

        page.click("#lane-sputter tr[data-entry='4'] button.up")
        assert wait_text(page, "#said", "moved") == "entry 4 moved to 1 of lane sputter by otto"
        wait_lane(page, "sputter", [1, 4, 3])

        # a tab without a token reads nothing and submits nothing; a viewer cancels nothing
        stranger = open_queue(browser, url, None)
        code, unsent = post(f"{url}/api/queue", None, {"name": "tiny.yaml", "text": "x"})
        assert code == 401
        assert wait_text(stranger, "#said", "cannot be read") == \
            f"the queue cannot be read (401): {unsent['detail']}"
        assert submit(stranger, tiny) == f"tiny.yaml refused (401): {unsent['detail']}"
        stranger.fill("#token", VIEWER)
        stranger.press("#token", "Enter")
        stranger.wait_for_selector("#lane-sputter tr[data-entry='4']", timeout=WAIT_MS)
        code, viewers = post(f"{url}/api/queue/4/cancel", VIEWER)
        assert code == 403
        stranger.click("#lane-sputter tr[data-entry='4'] button.cancel")
        assert wait_text(stranger, "#said", "refused") == \
            f"cancel of entry 4 refused (403): {viewers['detail']}"
        assert get(f"{url}/api/queue/4", VIEWER)["state"] == "queued"
        stranger.close()

        page.click("#lane-sputter tr[data-entry='4'] button.cancel")
        assert wait_text(page, "#said", "cancelled") == "queue entry 4 cancelled by otto"
        page.wait_for_selector("#ended tr[data-entry='4'][data-state='cancelled']",
                               timeout=WAIT_MS)
        wait_lane(page, "sputter", [1, 3])
        page.wait_for_timeout(200)  # a frame drawn
        page.screenshot(path=str(shots(tmp_path) / "queue.png"), full_page=True)

        # the running entry's run: paused from the page, then cancelled (its run aborted)
        page.click("#lane-sputter tr[data-entry='1'] button.pause")
        assert wait_text(page, "#said", "pause").startswith(
            f"run {run_1}: pause requested by otto")
        row = "#lane-sputter tr[data-entry='1']"
        assert wait_text(page, f"{row} .status.asked", "pause") == "pause asked by otto"
        assert page.is_disabled(f"{row} button.pause") and \
            page.is_enabled(f"{row} button.continue")
        asked = get(f"{url}/api/queue", VIEWER)["entries"]
        assert [(e["operator_asked"], e["operator_asked_by"]) for e in asked
                if e["id"] == 1] == [("pause", "otto")]
        page.click(f"{row} button.continue")
        assert wait_text(page, "#said", "continue").startswith(
            f"run {run_1}: continue requested by otto")
        page.wait_for_selector(f"{row} .status.asked", state="detached", timeout=WAIT_MS)
        assert page.is_enabled(f"{row} button.pause") and \
            page.is_disabled(f"{row} button.continue")
        page.click("#lane-sputter tr[data-entry='1'] button.cancel")
        assert wait_text(page, "#said", "abort") == \
            f"queue entry 1: abort of run {run_1} requested by otto"
        page.wait_for_selector("#ended tr[data-entry='1'][data-state='cancelled']",
                               timeout=WAIT_MS)
        # its lane free, the next runs to its end; its entry links to its run's page
        page.wait_for_selector("#ended tr[data-entry='3'][data-state='done'] a.run-link",
                               timeout=WAIT_MS)
        listing = get(f"{url}/api/queue", VIEWER)
        assert listing["lanes"] == {}
        states = {e["id"]: (e["state"], e["changed_by"]) for e in listing["entries"]}
        assert states == {1: ("cancelled", "queue runner"), 2: ("done", "queue runner"),
                          3: ("done", "queue runner"), 4: ("cancelled", "otto")}
        run_3 = get(f"{url}/api/queue/3", VIEWER)["run_id"]
        assert get(f"{url}/api/runs/{run_1}", VIEWER)["status"] == "aborted"
        # the click starts a navigation: wait for the run page before looking into it (the
        # queue page, still shown for a moment, has no #status)
        with page.expect_navigation(url=f"{url}/runs/{run_3}", timeout=WAIT_MS):
            page.click("#ended tr[data-entry='3'] a.run-link")
        page.wait_for_function("() => document.querySelector('#status')?.textContent === "
                               "'completed'", timeout=WAIT_MS)
        with page.expect_navigation(url=f"{url}/queue", timeout=WAIT_MS):
            page.click("header a[href='/queue']")  # the run page's header leads back
        page.wait_for_selector("#ended tr[data-entry='3']", timeout=WAIT_MS)
        page.goto(f"{url}/")
        assert page.get_attribute("header a[href='/queue']", "href") == "/queue"
    finally:
        end_queue_runs(url, data)


def test_the_queue_page_is_served_and_linked_from_the_others(tmp_path):
    """`/queue` and its script are served to anyone (the page holds no data); the list of
    runs and a run's page link to it."""
    from fastapi.testclient import TestClient

    from lipon_hw.web.app import create_app
    from lipon_hw.web.security import Security, User

    client = TestClient(create_app(tmp_path, Security({VIEWER: User("vera", "viewer")})))
    page = client.get("/queue")
    assert page.status_code == 200 and "/static/queue.js" in page.text
    assert "javascript" in client.get("/static/queue.js").headers["content-type"]
    for path in ("/", "/runs/1"):
        assert 'href="/queue"' in client.get(path).text, path
    assert client.get("/api/queue").status_code == 401  # the data still needs a token
