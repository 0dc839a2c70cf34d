"""A screening run's REST API (`web.screening`: its sheet, its cells by cursor) and its live
`screen_cells` events, over a real simulated screening: a 4 × 16 sheet under a prober
whose needles miss half the time (so tester faults are among the cells), run through the
lifecycle while `lipon-hw serve`'s app listens (uvicorn in a thread), so the engine
publishes each touchdown's cells as the lab's would."""

from __future__ import annotations

import json
import shutil
import sqlite3
from collections import Counter
from pathlib import Path

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")

from fastapi.testclient import TestClient  # noqa: E402
from served import ThreadServer  # noqa: E402

from lipon_hw.engine import lifecycle  # noqa: E402
from lipon_hw.kinds import RunOptions  # noqa: E402
from lipon_hw.screening.kind import KIND  # noqa: E402
from lipon_hw.store import Store  # noqa: E402
from lipon_hw.web.app import create_app  # noqa: E402
from lipon_hw.web.security import Security, User  # noqa: E402

from recipes import LNMO  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
RECIPE = ROOT / "sequences" / "sheet_screening.yaml"
VIEWER, ENGINE = "viewer-token-0123456789", "engine-token-0123456789"


def bearer(token: str = VIEWER) -> dict:
    return {"Authorization": f"Bearer {token}"}


def security() -> Security:
    found = Security({VIEWER: User("vera", "viewer")})
    found.add(ENGINE, User("engine", "engine"))
    return found


class Serving(ThreadServer):
    """The web app of `data` served by uvicorn in a thread, announced in `serve.json` as
    `lipon-hw serve` announces itself, so a run of that data directory publishes to it."""

    def __init__(self, data: Path):
        super().__init__(create_app(data, security()))
        data.mkdir(parents=True, exist_ok=True)
        (data / "serve.json").write_text(json.dumps(
            {"url": f"http://127.0.0.1:{self.port}", "engine_token": ENGINE}))


@pytest.fixture(scope="module")
def screened(tmp_path_factory):
    """(data, run id, the hub's events of the run, a cell test's run id)."""
    tmp = tmp_path_factory.mktemp("screened")
    data = tmp / "data"
    station = tmp / "station.yaml"
    text = (ROOT / "lipon_hw" / "data" / "sim_lab.yaml").read_text(encoding="utf-8")
    assert "contact_miss: 0.003" in text
    station.write_text(text.replace("contact_miss: 0.003", "contact_miss: 0.5"),
                       encoding="utf-8")
    recipe = tmp / "small.yaml"
    recipe.write_text(RECIPE.read_text(encoding="utf-8").replace("rows: 20", "rows: 4")
                      .replace("cols: 30", "cols: 16"), encoding="utf-8")
    serving = Serving(data)
    try:
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(lifecycle, "draw_plots", lambda *_: [])  # the maps: not these tests'
            result = lifecycle.start(KIND, str(recipe), RunOptions(str(data), str(station),
                                                                   seed=3))
        stream = serving.app.state.hub.streams[result.run_id]
        events = [json.loads(t) for t in stream.texts[stream.start:]]
    finally:
        serving.stop()
    (data / "serve.json").unlink()
    assert result.status == "completed", result.message
    protocol = tmp / "lnmo.yaml"
    protocol.write_text(LNMO.format(channels="1", cycles=1), encoding="utf-8")
    from lipon_hw.celltest.session import start_cycling

    cycling = start_cycling(str(protocol), data, workers=1)
    return data, result.run_id, events, cycling.run_id


@pytest.fixture(scope="module")
def client(screened) -> TestClient:
    return TestClient(create_app(screened[0], security()))


def stored(data: Path, run_id: int) -> list[dict]:
    store = Store(data, read_only=True)
    try:
        return [c.to_dict() for c in store.screen_cells(run_id)]
    finally:
        store.close()


def test_the_sheet_its_touchdowns_bins_and_metrics(screened, client):
    data, run_id, _, _ = screened
    got = client.get(f"/api/runs/{run_id}/sheet", headers=bearer()).json()
    assert got["sheet"] == {"id": "SHEET-0001", "roll": "ROLL-0001", "rows": 4, "cols": 16,
                            "pitch_x_mm": 5.0, "pitch_y_mm": 5.0, "first_run": run_id}
    assert got["cells"] == 64 and got["card"] == {"rows": 4, "cols": 8, "sites": 32}
    # 4 × 8 sites over 4 × 16 cells: two touchdowns, side by side
    assert got["touchdowns"] == [[1, 1, 1, 32], [2, 1, 9, 32]]
    assert {c["touchdown"] for c in stored(data, run_id)} == {1, 2}
    assert [(b["soft_bin"], b["name"]) for b in got["bins"]] == [
        (1, "grade_A"), (2, "grade_B"), (10, "hard_short"), (11, "soft_short"),
        (20, "high_impedance"), (30, "thin_electrolyte"), (98, "no_contact")]
    fault = got["bins"][-1]
    assert fault["tester_fault"] and fault["hard_name"] == "tester fault"
    assert [b["passed"] for b in got["bins"]] == [True, True] + [False] * 5
    names = [m["name"] for m in got["metrics"]]
    assert names[0] == "ocv_V" and names[1:3] == ["z_10Hz_ohm", "z_100Hz_ohm"]
    assert set(names) == set(stored(data, run_id)[0]["metrics"])
    assert got["metrics"][1] == {"name": "z_10Hz_ohm", "quantity": "|Z| at 10 Hz",
                                 "unit": "Ω"}


def test_the_cells_page_by_cursor_each_once_as_stored(screened, client):
    data, run_id, _, _ = screened
    everything = stored(data, run_id)
    assert len(everything) == 64
    lost = [c for c in everything if c["contact"] == "lost"]
    assert lost and all(c["soft_bin"] == 98 for c in lost)  # tester faults are among them

    whole = client.get(f"/api/runs/{run_id}/cells", headers=bearer()).json()
    assert whole["next"] is None and whole["cursor"] > 0
    key = lambda c: (c["row"], c["col"])  # noqa: E731
    assert sorted(whole["cells"], key=key) == everything

    pages, url = [], f"/api/runs/{run_id}/cells?limit=10"
    while url:
        page = client.get(url, headers=bearer()).json()
        pages.append(page)
        url = page["next"]
    assert [len(p["cells"]) for p in pages] == [10] * 6 + [4]
    assert [c for p in pages for c in p["cells"]] == whole["cells"]  # the order stored
    assert pages[-1]["cursor"] == whole["cursor"]
    # stored a touchdown at a time: the first touchdown's cells come before the second's
    assert [c["touchdown"] for c in whole["cells"]] == sorted(c["touchdown"]
                                                             for c in whole["cells"])
    after = client.get(f"/api/runs/{run_id}/cells?since={whole['cursor']}",
                       headers=bearer()).json()
    assert after == {"run_id": run_id, "cells": [], "cursor": whole["cursor"], "next": None}
    middle = pages[2]["cursor"]
    rest = client.get(f"/api/runs/{run_id}/cells?since={middle}", headers=bearer()).json()
    assert rest["cells"] == whole["cells"][30:]


def test_refusals_are_one_sentence(screened, client):
    _, run_id, _, cycling = screened
    for path in ("sheet", "cells"):
        assert client.get(f"/api/runs/{run_id}/{path}").status_code == 401
        missing = client.get(f"/api/runs/99/{path}", headers=bearer())
        assert (missing.status_code, missing.json()) == (
            404, {"detail": "run 99 is not in this data directory"})
        other = client.get(f"/api/runs/{cycling}/{path}", headers=bearer())
        assert (other.status_code, other.json()) == (
            404, {"detail": f"run {cycling} is a cycling run, which screens no sheet"})
    for query in ("since=-1", "limit=0", "limit=100001", "since=x"):
        bad = client.get(f"/api/runs/{run_id}/cells?{query}", headers=bearer())
        assert bad.status_code == 422, query
        assert bad.json()["detail"].startswith("query ")


def test_a_recipe_that_no_longer_reads_leaves_the_cells_own_bins(screened, tmp_path):
    data, run_id, _, _ = screened
    copy = tmp_path / "data"
    shutil.copytree(data, copy)
    db = sqlite3.connect(copy / "lipon.db")
    with db:
        db.execute("UPDATE runs SET sequence_text='kind: screening' WHERE id=?", (run_id,))
    db.close()
    client = TestClient(create_app(copy, security()))
    got = client.get(f"/api/runs/{run_id}/sheet", headers=bearer()).json()
    assert (got["sheet"]["rows"], got["sheet"]["cols"]) == (4, 16)
    assert (got["card"], got["touchdowns"], got["bins"], got["metrics"]) == (None, None, [], [])
    assert len(client.get(f"/api/runs/{run_id}/cells", headers=bearer()).json()["cells"]) == 64


def test_each_touchdown_is_published_once_as_stored(screened, client):
    """The live `screen_cells` events carry every cell once, as the REST API gives it."""
    data, run_id, events, _ = screened
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    touchdowns = [e for e in events if e["kind"] == "screen_cells"]
    assert [Counter(c["touchdown"] for c in e["data"]["cells"]) for e in touchdowns] == [
        {1: 32}, {2: 32}]
    published = [c for e in touchdowns for c in e["data"]["cells"]]
    assert published == client.get(f"/api/runs/{run_id}/cells", headers=bearer()
                                   ).json()["cells"]
    assert all(e["t_s"] == e["data"]["cells"][-1]["t_s"] for e in touchdowns)
    statuses = [e["data"]["status"] for e in events if e["kind"] == "status"]
    assert statuses[0] == "running" and statuses[-1] == "completed"
    done = next(i for i, e in enumerate(events) if e["kind"] == "status"
                and e["data"]["status"] == "completed")
    assert max(events.index(e) for e in touchdowns) < done
