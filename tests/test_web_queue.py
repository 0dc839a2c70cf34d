"""The run queue of `lipon-hw serve`: its REST API, its runner, `lipon-hw submit` and `queue`.

The REST goes through FastAPI's TestClient; the runner starts real `lipon-hw run`
processes of small simulated runs (tests/recipes.py); the CLI talks to a real uvicorn
server (`lipon-hw serve` on a free port) whose own runner runs what it is given.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from served import stop_process

from lipon_hw.shipped import find_sequence, shipped_names
from lipon_hw.store import DB_NAME, Store
from lipon_hw.web.app import create_app
from lipon_hw.web.queue import MAX_BYTES
from lipon_hw.web.queue_runner import QueueRunner
from lipon_hw.web.security import Security, User
from lipon_hw.web.server import SERVE_FILE

from recipes import LNMO, SHORT, short_recipe

VIEWER, OPERATOR = "viewer-token-0123456789", "operator-token-0123456789"
TOKENS = {VIEWER: User("vera", "viewer"), OPERATOR: User("otto", "operator")}
BAD = SHORT.replace("THICKNESS", "5").replace("power_W: 50,", "power_W: -50,")


def bearer(token: str) -> dict:
    return {"Authorization": f"Bearer {token}"}


def shipped(name: str) -> str:
    return Path(find_sequence(name)).read_text(encoding="utf-8")


def short(thickness_nm: float = 5) -> str:
    return SHORT.replace("THICKNESS", f"{thickness_nm:g}")


def cells(channels: str = "1-2", cycles: int = 1) -> str:
    return LNMO.format(channels=channels, cycles=cycles)


@pytest.fixture
def app(tmp_path):
    return create_app(tmp_path / "data", Security(TOKENS))


@pytest.fixture
def client(app) -> TestClient:
    return TestClient(app)


def submit(client, name, text, token=OPERATOR, **options):
    return client.post("/api/queue", headers=bearer(token),
                       json={"name": name, "text": text, "options": options})


def cli(*args, cwd, env=None, timeout=120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "lipon_hw.cli", *map(str, args)], cwd=cwd,
                          capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})})


def test_lanes_are_the_tools_and_potentiostats_a_sequence_needs(client):
    got = {}
    for name, text in [("short.yaml", short()), ("fs_lipon_cell.yaml", shipped("fs_lipon_cell")),
                       ("lnmo.yaml", cells()), ("sheet.yaml", shipped("sheet_screening"))]:
        answer = submit(client, name, text)
        assert answer.status_code == 201, answer.json()
        got[name] = (answer.json()["kind"], answer.json()["lanes"])
    assert got == {"short.yaml": ("deposition", ["sputter"]),
                   "fs_lipon_cell.yaml": ("deposition", ["sputter", "evaporator"]),
                   "lnmo.yaml": ("cycling", ["mes4"]),
                   "sheet.yaml": ("screening", ["prober", "probe_pstat"])}
    listing = client.get("/api/queue", headers=bearer(VIEWER)).json()
    assert listing["lanes"] == {"sputter": [1, 2], "evaporator": [2], "mes4": [3],
                                "prober": [4], "probe_pstat": [4]}
    assert [(e["state"], e["submitted_by"]) for e in listing["entries"]] == \
        [("queued", "otto")] * 4
    assert client.get("/api/queue/2", headers=bearer(VIEWER)).json()["sequence_text"] == \
        shipped("fs_lipon_cell")


def test_a_refused_sequence_gets_validates_sentence_and_nothing_is_stored(client, app,
                                                                          tmp_path):
    (tmp_path / "bad.yaml").write_text(BAD, encoding="utf-8")
    said = cli("validate", "bad.yaml", cwd=tmp_path)
    assert said.returncode == 2 and said.stderr.startswith("error: bad.yaml:")
    answer = submit(client, "bad.yaml", BAD)
    assert answer.status_code == 422
    assert f"error: {answer.json()['detail']}\n" == said.stderr
    protocol = cells().replace("channels: 1-2", "channels: 1-99")
    (tmp_path / "p.yaml").write_text(protocol, encoding="utf-8")
    answer = submit(client, "p.yaml", protocol)
    assert f"error: {answer.json()['detail']}\n" == cli("validate", "p.yaml", cwd=tmp_path).stderr
    assert not (app.state.data_dir / DB_NAME).exists()  # nothing stored, nothing written
    for body, why in [({"name": "../x.yaml", "text": short()}, "bare file name"),
                      ({"name": "x", "text": 5}, "text must be"),
                      ({"name": "x", "text": short(), "options": {"seed": -1}}, "seed must"),
                      ({"name": "x", "text": short(), "options": {"speed": 0}}, "speed must"),
                      ({"name": "x", "text": short(), "options": {"workers": 2}}, "seed and")]:
        answer = client.post("/api/queue", headers=bearer(OPERATOR), json=body)
        assert answer.status_code == 422 and why in answer.json()["detail"], answer.json()
    assert not (app.state.data_dir / DB_NAME).exists()


def test_the_shipped_sequences_are_listed_with_their_text_for_a_viewer(client):
    """What a page offers to submit when the browser has no copy of them."""
    assert client.get("/api/queue/shipped").status_code == 401
    got = client.get("/api/queue/shipped", headers=bearer(VIEWER))
    assert got.status_code == 200
    assert [s["name"] for s in got.json()["sequences"]] == [f"{n}.yaml" for n in
                                                            shipped_names()]
    assert "lipon_rf_sputter.yaml" in [s["name"] for s in got.json()["sequences"]]
    for one in got.json()["sequences"]:
        assert one["text"] == shipped(one["name"])


def test_a_submission_past_256_kB_is_413(client, app):
    padding = "# " + "x" * 100 + "\n"
    big = short() + padding * (MAX_BYTES // len(padding) + 1)
    answer = submit(client, "big.yaml", big)
    assert answer.status_code == 413
    assert answer.json()["detail"].startswith("the submission is larger than 256 kB")
    assert not (app.state.data_dir / DB_NAME).exists()
    assert submit(client, "ok.yaml", short() + padding * 100).status_code == 201


def test_only_an_operator_submits_moves_and_cancels(client):
    assert submit(client, "a.yaml", short(), token=VIEWER).status_code == 403
    unsent = client.post("/api/queue", json={"name": "a.yaml", "text": short()})
    assert unsent.status_code == 401
    assert client.get("/api/queue").status_code == 401
    assert submit(client, "a.yaml", short()).status_code == 201
    assert client.post("/api/queue/1/move", headers=bearer(VIEWER),
                       json={"position": 1}).status_code == 403
    assert client.post("/api/queue/1/cancel", headers=bearer(VIEWER)).status_code == 403
    assert client.post("/api/queue/1/cancel").status_code == 401
    assert client.get("/api/queue", headers=bearer(VIEWER)).json()["lanes"] == {"sputter": [1]}


def test_moves_stay_within_a_lane_and_cancels_are_stored_with_their_author(client, app):
    for name, text in [("a.yaml", short()), ("b.yaml", short()), ("c.yaml", cells()),
                       ("d.yaml", short())]:
        assert submit(client, name, text).status_code == 201
    moved = client.post("/api/queue/4/move", headers=bearer(OPERATOR), json={"position": 1})
    assert moved.status_code == 200 and moved.json()["changed_by"] == "otto"
    lanes = client.get("/api/queue", headers=bearer(VIEWER)).json()["lanes"]
    assert lanes == {"sputter": [4, 1, 2], "mes4": [3]}
    client.post("/api/queue/4/move", headers=bearer(OPERATOR), json={"position": 2})
    client.post("/api/queue/2/move", headers=bearer(OPERATOR), json={"position": 99})
    assert client.get("/api/queue", headers=bearer(VIEWER)).json()["lanes"]["sputter"] == \
        [1, 4, 2]
    bad = client.post("/api/queue/4/move", headers=bearer(OPERATOR), json={"position": 0})
    assert bad.status_code == 422

    cancelled = client.post("/api/queue/1/cancel", headers=bearer(OPERATOR))
    assert cancelled.status_code == 202 and "cancelled by otto" in cancelled.json()["detail"]
    again = client.post("/api/queue/1/cancel", headers=bearer(OPERATOR))
    assert again.status_code == 409 and "is cancelled" in again.json()["detail"]
    assert client.post("/api/queue/1/move", headers=bearer(OPERATOR),
                       json={"position": 1}).status_code == 409
    assert client.post("/api/queue/9/cancel", headers=bearer(OPERATOR)).status_code == 404
    listing = client.get("/api/queue", headers=bearer(VIEWER)).json()
    assert listing["lanes"] == {"sputter": [4, 2], "mes4": [3]}
    ended = [e for e in listing["entries"] if e["state"] == "cancelled"]
    assert [(e["id"], e["changed_by"], e["message"]) for e in ended] == [
        (1, "otto", "cancelled by otto")]
    store = Store(app.state.data_dir, read_only=True)
    assert store.startable()[0].id == 4 and {e.id for e in store.startable()} == {4, 3}
    store.close()


def _wait_until_ended(runner: QueueRunner, data: Path, ids, timeout_s: float = 120):
    deadline = time.monotonic() + timeout_s
    while True:
        runner.tick()
        store = Store(data, read_only=True)
        entries = {e.id: e for e in store.queue_entries()}
        store.close()
        if all(entries[i].state in ("done", "failed", "cancelled") for i in ids):
            return entries
        assert time.monotonic() < deadline, entries
        time.sleep(0.2)


def test_the_runner_runs_lanes_side_by_side_and_one_run_per_lane(client, app):
    data = app.state.data_dir
    runner = app.state.queue_runner = QueueRunner(data)
    try:
        assert submit(client, "first.yaml", short(3), seed=7).status_code == 201
        assert submit(client, "cells.yaml", cells("1", 1)).status_code == 201
        assert submit(client, "second.yaml", short(3)).status_code == 201
        runner.tick()  # one look: each lane's head starts, the second deposition waits
        store = Store(data, read_only=True)
        assert [(e.id, e.state) for e in store.queue_entries()] == [
            (1, "running"), (2, "running"), (3, "queued")]
        store.close()
        assert (data / "queue" / "1" / "first.yaml").read_text(encoding="utf-8") == short(3)
        entries = _wait_until_ended(runner, data, [1, 2, 3])
    finally:
        runner.stop(end_runs=True)
    assert [(e.state, e.changed_by) for e in entries.values()] == [("done", "queue runner")] * 3
    store = Store(data, read_only=True)
    runs = {e.id: store.run(e.run_id) for e in entries.values()}
    store.close()
    assert [runs[i].kind for i in (1, 2, 3)] == ["deposition", "cycling", "deposition"]
    assert all(r.status == "completed" for r in runs.values())
    assert runs[1].seed == 7 and runs[1].sequence_path == str(data / "queue/1/first.yaml")
    assert runs[3].started_at >= runs[1].ended_at  # one run of a lane at a time
    assert entries[1].message.startswith(f"run {runs[1].id}: ")


def test_a_restarted_server_ends_entries_whose_process_is_gone_by_their_runs_status(
        client, app, tmp_path):
    data = app.state.data_dir
    from lipon_hw.deposition.session import start_run

    done = start_run(str(short_recipe(tmp_path, 3)), data)
    for name in ("ran.yaml", "never.yaml"):
        assert submit(client, name, short(3)).status_code == 201
    store = Store(data)
    store.queue_set(1, "running", "queue runner", run_id=done.run_id)  # an earlier server's
    store.queue_set(2, "running", "queue runner")
    store.close()
    QueueRunner(data).tick()
    store = Store(data, read_only=True)
    ended = {e.id: (e.state, e.message) for e in store.queue_entries()}
    store.close()
    assert ended[1] == ("done", f"run {done.run_id}: {done.message or 'completed'}")
    assert ended[2] == ("failed", "its process ended (the server stopped) before its run "
                                  "started")


def test_cancelling_a_running_entry_aborts_its_run_with_the_author(client, app):
    data = app.state.data_dir
    runner = app.state.queue_runner = QueueRunner(data)
    try:
        assert submit(client, "slow.yaml", short(50), speed=20).status_code == 201
        deadline = time.monotonic() + 60
        while True:  # until its run is stored
            runner.tick()
            store = Store(data, read_only=True)
            entry = store.queue_entry(1)
            store.close()
            if entry.run_id is not None:
                break
            assert time.monotonic() < deadline
            time.sleep(0.1)
        answer = client.post("/api/queue/1/cancel", headers=bearer(OPERATOR))
        assert answer.status_code == 202, answer.json()
        assert answer.json()["detail"] == \
            f"queue entry 1: abort of run {entry.run_id} requested by otto"
        entries = _wait_until_ended(runner, data, [1])
    finally:
        runner.stop(end_runs=True)
    assert entries[1].state == "cancelled"
    assert entries[1].message.startswith(f"run {entry.run_id}: cancel requested by otto")
    store = Store(data, read_only=True)
    assert store.run(entry.run_id).status == "aborted"
    assert store._db.execute("SELECT action, author FROM requests WHERE run_id=?",
                             (entry.run_id,)).fetchall() == [("abort", "otto")]
    store.close()


def test_the_cli_submits_lists_and_cancels_on_a_real_server(tmp_path):
    data = tmp_path / "data"
    env = {"LIPON_HW_TOKEN": OPERATOR}
    down = cli("queue", "--server", "http://127.0.0.1:9", cwd=tmp_path)
    assert down.returncode == 1 and down.stderr.startswith(
        "error: no lipon-hw server answers at http://127.0.0.1:9 (") and \
        down.stderr.count("\n") == 1
    server = subprocess.Popen([sys.executable, "-m", "lipon_hw.cli", "serve", "--bind",
                               "127.0.0.1:0", "--data", str(data)], cwd=tmp_path,
                              env={**os.environ, **env}, stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 30
        while not (data / SERVE_FILE).exists():
            assert server.poll() is None and time.monotonic() < deadline, server.stderr.read()
            time.sleep(0.05)
        (tmp_path / "bad.yaml").write_text(BAD, encoding="utf-8")
        refused = cli("submit", "bad.yaml", "--data", data, cwd=tmp_path, env=env)
        assert refused.returncode == 2
        assert refused.stderr == cli("validate", "bad.yaml", cwd=tmp_path).stderr
        unauthorized = cli("submit", "bad.yaml", "--data", data, "--token", "x" * 20,
                           cwd=tmp_path)
        assert unauthorized.returncode == 2 and unauthorized.stderr == (
            "error: the server refused: the token sent is not one this server knows\n")

        short_recipe(tmp_path, 3, name="one.yaml")
        (tmp_path / "two.yaml").write_text(short(3), encoding="utf-8")
        queued = cli("submit", "one.yaml", "--data", data, "--seed", 3, cwd=tmp_path, env=env)
        assert (queued.returncode, queued.stdout) == (0, "queued as 1 on sputter\n")
        second = cli("submit", "two.yaml", "--data", data, "--json", cwd=tmp_path, env=env)
        assert json.loads(second.stdout)["id"] == 2
        cancelled = cli("queue", "--data", data, "--cancel", 2, cwd=tmp_path, env=env)
        assert cancelled.returncode == 0, cancelled.stderr
        # the server's runner started the first (its process lives) or already ended it
        url = json.loads((data / SERVE_FILE).read_text(encoding="utf-8"))["url"]
        deadline = time.monotonic() + 120
        while True:
            with urllib.request.urlopen(urllib.request.Request(
                    f"{url}/api/queue", headers=bearer(OPERATOR)), timeout=10) as answer:
                listing = json.loads(answer.read())
            states = {e["id"]: e["state"] for e in listing["entries"]}
            if states[1] == "done":
                break
            assert states[1] in ("queued", "running") and time.monotonic() < deadline, listing
            time.sleep(0.3)
        assert states[2] == "cancelled"
        lines = cli("queue", "--data", data, cwd=tmp_path, env=env).stdout.splitlines()
        assert [line.split()[:2] for line in lines] == [["2", "cancelled"], ["1", "done"]]
        assert lines[0].endswith("two.yaml (short LiPON) by operator: cancelled by operator")
        assert lines[1].split()[2:4] == ["sputter", "run"] and "one.yaml" in lines[1]
    finally:
        stop_process(server, wait_s=20)
    assert server.returncode == 0, server.stderr.read()


def test_a_runs_last_pause_or_continue_is_read_with_who_asked_on_either_store(tmp_path,
                                                                             backend):
    """What the queue page shows of a running entry's run: the operator's last pause or
    continue (taken by the engine or not), an abort or another run's toggle aside."""
    store = Store(tmp_path)
    run_id = store.create_run("r", "cycling", "r.yaml", "", "", 1, None)
    other = store.create_run("o", "cycling", "o.yaml", "", "", 1, None)
    assert store.requests.last_toggle(run_id) is None
    store.requests.make(run_id, "pause", "otto")
    store.requests.make(other, "continue", "ada")
    assert store.requests.last_toggle(run_id) == ("pause", "otto")
    store.requests.take(run_id)  # the engine acted on it: still what was last asked
    store.flush()
    store.requests.make(run_id, "abort", "ada")
    assert store.requests.last_toggle(run_id) == ("pause", "otto")
    store.requests.make(run_id, "continue", None)
    assert store.requests.last_toggle(run_id) == ("continue", None)
    store.close()
