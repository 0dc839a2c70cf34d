"""A cell-test channel's history over REST (`web.cells`): its samples paged or decimated,
its cycles and its impedance spectra as stored; and its spectra and cycles published live
(`spectrum` and `cycle` events) exactly as stored.

The store holds a real simulated two-channel cell test with an impedance spectrum opening
each cycle, run through the lifecycle in two worker processes (their spectra and cycles
reach the run's publisher through `celltest.relay`) while a live server's hub took its
events. (A run in one process publishes from its own store: `test_web_cellpage`.)
"""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")

from fastapi.testclient import TestClient  # noqa: E402
from test_web_live import LiveServer, announce, hub_events  # noqa: E402

from lipon_hw.celltest.session import start_cycling  # noqa: E402
from lipon_hw.store import Store  # noqa: E402
from lipon_hw.web.app import create_app  # noqa: E402
from lipon_hw.web.cells import decimate  # noqa: E402
from lipon_hw.web.live import Hub  # noqa: E402
from lipon_hw.web.security import Security, User  # noqa: E402

from recipes import LNMO_EIS  # noqa: E402

VIEWER = "viewer-token-0123456789"
AS_VIEWER = {"Authorization": f"Bearer {VIEWER}"}
CYCLES = 3
EIS_POINTS = 21  # 100 kHz to 1 Hz, 4 a decade


@pytest.fixture(scope="module")
def made(tmp_path_factory) -> tuple[Path, int, list[dict]]:
    """The data directory, the run's id and the events its engine published."""
    tmp = tmp_path_factory.mktemp("cells")
    data = tmp / "data"
    hub = Hub(ring=100_000)
    server = LiveServer(hub)
    announce(data, server.port)
    protocol = tmp / "lnmo-eis.yaml"
    protocol.write_text(LNMO_EIS.format(channels="1-2", cycles=CYCLES), encoding="utf-8")
    try:
        result = start_cycling(str(protocol), data, workers=2)
    finally:
        server.stop()
    assert result.status == "completed"
    return data, result.run_id, hub_events(hub, result.run_id)


@pytest.fixture(scope="module")
def client(made) -> TestClient:
    return TestClient(create_app(made[0], Security({VIEWER: User("vera", "viewer")})))


@pytest.fixture(scope="module")
def store(made):
    store = Store(made[0], read_only=True)
    yield store
    store.close()


def get(client: TestClient, path: str) -> dict:
    answer = client.get(path, headers=AS_VIEWER)
    assert answer.status_code == 200, answer.text
    return answer.json()


def rows_of(page: dict) -> list[tuple]:
    return list(zip(page["t_s"], page["V"], page["I"], page["cycle"], strict=True))


def test_samples_come_in_pages_that_add_up_to_the_channel(made, client, store):
    _, run, _ = made
    stored = [r[:4] for r in store.cell_samples(run, 2)]
    assert len(stored) > 500
    path = f"/api/runs/{run}/channels/2/samples"
    whole = get(client, path + "?limit=100000")
    assert whole["next"] is None and whole["decimated"] is False
    assert rows_of(whole) == stored
    got, pages, nxt = [], 0, path + "?limit=97"
    while nxt:
        page = get(client, nxt)
        assert page["rows"] <= 97
        got += rows_of(page)
        pages += 1
        nxt = page["next"]
    assert got == stored and pages == -(-len(stored) // 97)
    t0, t1 = stored[100][0], stored[300][0]
    span = get(client, f"{path}?since_t={t0!r}&until_t={t1!r}&limit=50")
    assert rows_of(span) == stored[100:150] and "until_t" in span["next"]
    rest = get(client, span["next"] + "&limit=1000")
    assert rows_of(rest) == stored[150:301] and rest["next"] is None


def test_a_decimated_span_keeps_each_buckets_ends_and_extremes(made, client, store):
    _, run, _ = made
    stored = [r[:4] for r in store.cell_samples(run, 1)]
    answer = get(client, f"/api/runs/{run}/channels/1/samples?max_points=200")
    kept = rows_of(answer)
    assert answer["decimated"] is True and answer["total"] == len(stored)
    assert answer["next"] is None and 100 < len(kept) <= 200
    assert kept == sorted(kept) and set(kept) <= set(stored)
    assert kept[0] == stored[0] and kept[-1] == stored[-1]
    # each of the 50 buckets' lowest and highest voltage is there (a trip is never lost)
    width = (stored[-1][0] - stored[0][0]) / 50
    buckets: dict[int, list] = {}
    for row in stored:
        buckets.setdefault(min(int((row[0] - stored[0][0]) / width), 49), []).append(row)
    for rows in buckets.values():
        voltages = {r[1] for r in kept if rows[0][0] <= r[0] <= rows[-1][0]}
        assert min(r[1] for r in rows) in voltages and max(r[1] for r in rows) in voltages
    everything = get(client, f"/api/runs/{run}/channels/1/samples?max_points=100000")
    assert rows_of(everything) == stored and everything["decimated"] is False


def test_decimation_of_a_long_channel_is_bounded_and_keeps_a_spike():
    rows = [(i * 10.0, 4.0 + 0.001 * (i % 400), 3e-6, i // 400) for i in range(250_000)]
    rows[123_457] = (rows[123_457][0], 2.4, -1e-3, rows[123_457][3])  # one short
    kept = decimate(rows, 4000)
    assert len(kept) <= 4000 and rows[123_457] in kept
    assert kept[0] == rows[0] and kept[-1] == rows[-1]
    assert decimate(rows[:10], 100) == rows[:10]
    same_time = [(5.0, 4.0 - 0.1 * i, 0.0, 1) for i in range(500)]  # a zero span
    assert decimate(same_time, 100) == [same_time[0], same_time[-1]]


def test_cycles_and_spectra_stand_as_stored(made, client, store):
    _, run, _ = made
    for channel in (1, 2):
        cycles = get(client, f"/api/runs/{run}/channels/{channel}/cycles")["cycles"]
        assert cycles == store.cycles(run, channel)
        assert [c["cycle"] for c in cycles] == list(range(1, CYCLES + 1))
        assert all(0.9 < c["coulombic_efficiency"] <= 1.0 for c in cycles[1:])
        spectra = get(client, f"/api/runs/{run}/channels/{channel}/spectra")["spectra"]
        assert [s["cycle"] for s in spectra] == list(range(1, CYCLES + 1))
        assert all(len(s["f_Hz"]) == EIS_POINTS for s in spectra)
        assert spectra[0]["f_Hz"][0] == pytest.approx(1e5) and \
            spectra[0]["f_Hz"][-1] == pytest.approx(1.0)
        flat = [(s["cycle"], s["step_count"], f, re, im) for s in spectra
                for f, re, im in zip(s["f_Hz"], s["z_re_ohm"], s["z_im_ohm"], strict=True)]
        assert flat == [r[1:] for r in store.spectra(run, channel)]


def test_a_run_or_channel_not_stored_is_404_in_one_sentence(made, client):
    _, run, _ = made
    for what in ("samples", "cycles", "spectra"):
        answer = client.get(f"/api/runs/{run}/channels/7/{what}", headers=AS_VIEWER)
        assert answer.status_code == 404
        assert answer.json()["detail"] == (f"run {run} (cycling) has no channel 7 stored "
                                           "(its channels: 1, 2)")
        answer = client.get(f"/api/runs/99/channels/1/{what}", headers=AS_VIEWER)
        assert answer.status_code == 404
        assert answer.json()["detail"] == "run 99 is not in this data directory"
        assert client.get(f"/api/runs/{run}/channels/1/{what}").status_code == 401
    base = f"/api/runs/{run}/channels/1/samples"
    assert client.get(base + "?after=x", headers=AS_VIEWER).status_code == 422
    assert client.get(base + "?max_points=3", headers=AS_VIEWER).status_code == 422


def test_spectra_and_cycles_are_published_live_as_stored(made, store):
    _, run, events = made
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    for channel in (1, 2):
        pieces = [e["data"] for e in events if e["kind"] == "spectrum"
                  and e["data"]["channel"] == channel]
        published = [point for d in pieces for point in zip(
            d["t"], d["cycle"], d["step_count"], d["f_Hz"], d["z_re_ohm"], d["z_im_ohm"],
            strict=True)]
        assert published == store.spectra(run, channel)
        assert len(pieces) > 1  # a spectrum comes in pieces, as it is measured
        cycles = [e for e in events if e["kind"] == "cycle"
                  and e["data"]["channel"] == channel]
        assert [e["data"]["stats"] for e in cycles] == store.cycles(run, channel)
        assert [e["t_s"] for e in cycles] == [c["t_end_s"] for c in store.cycles(run, channel)]
