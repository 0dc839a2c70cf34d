"""`lipon-hw serve`'s REST API and its security, over a store made by real runs.

The store holds a short simulated deposition (sample T-1) and a two-channel cell test,
both run through the lifecycle. Requests go through FastAPI's TestClient; one test starts
the real `lipon-hw serve` (uvicorn) on a free port and asks it over HTTP. Operator actions
are made while a deposition runs (from its start hook, in the engine's own thread, as an
operator elsewhere would) and read back from the store's request table.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Annotated

import pytest
from fastapi import Depends
from fastapi.testclient import TestClient
from served import stop_process
from stores import committed

from lipon_hw.celltest.session import start_cycling
from lipon_hw.deposition.session import start_run
from lipon_hw.errors import InputError, RunAborted
from lipon_hw.genealogy import lineage
from lipon_hw.store import DB_NAME, Store
from lipon_hw.web.app import create_app
from lipon_hw.web.security import Security, User, configure, load_token_file, require
from lipon_hw.web.server import SERVE_FILE, parse_bind, url_for

from recipes import LNMO, short_recipe

VIEWER, OPERATOR = "viewer-token-0123456789", "operator-token-0123456789"
TOKENS = {VIEWER: User("vera", "viewer"), OPERATOR: User("otto", "operator")}


def bearer(token: str) -> dict:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture(scope="module")
def made(tmp_path_factory) -> tuple[Path, int, int]:
    """A data directory with a finished deposition and a finished 2-channel cell test."""
    tmp = tmp_path_factory.mktemp("web")
    data = tmp / "data"
    deposition = start_run(str(short_recipe(tmp, 5)), data)
    protocol = tmp / "lnmo.yaml"
    protocol.write_text(LNMO.format(channels="1-2", cycles=2), encoding="utf-8")
    cells = start_cycling(str(protocol), data, workers=1)
    assert (deposition.status, cells.status) == ("completed", "completed")
    return data, deposition.run_id, cells.run_id


@pytest.fixture(scope="module")
def client(made) -> TestClient:
    return TestClient(create_app(made[0], Security(TOKENS)))


def test_runs_are_listed_and_detailed_for_a_token_holder(made, client):
    data, dep, cells = made
    assert client.get("/api/runs", headers=bearer(VIEWER)).status_code == 200
    runs = client.get("/api/runs", headers=bearer(OPERATOR)).json()
    assert [(r["id"], r["kind"], r["status"], r["sample"]) for r in runs] == [
        (dep, "deposition", "completed", "T-1"), (cells, "cycling", "completed", None)]
    assert all(r["ended_at"] > r["started_at"] for r in runs)

    detail = client.get(f"/api/runs/{dep}", headers=bearer(VIEWER)).json()
    store = Store(data, read_only=True)
    assert detail["summary"] == store.run(dep).summary
    assert [s["kind"] for s in detail["planned"]] == [s.kind for s in store.run_steps(dep)]
    deposit = next(s for s in detail["planned"] if s["kind"] == "deposit")
    assert deposit["film"]["material"] == "LiPON" and deposit["tool"] == "sputter"
    assert [s["status"] for s in detail["steps"]] == ["done"] * len(detail["planned"])
    assert detail["at"]["step"] is None and detail["at"]["t_s"] > 0  # ended: nothing running
    assert detail["alarms"] == [a.to_dict() for a in store.alarms(dep)]
    alarms = client.get(f"/api/runs/{dep}/alarms", headers=bearer(VIEWER)).json()
    assert alarms == detail["alarms"] and alarms
    late = alarms[-1]["t_s"]
    assert client.get(f"/api/runs/{dep}/alarms?since_t={late}", headers=bearer(VIEWER)
                      ).json() == [a for a in alarms if a["t_s"] >= late]
    store.close()

    missing = client.get("/api/runs/99", headers=bearer(VIEWER))
    assert missing.status_code == 404
    assert missing.json() == {"detail": "run 99 is not in this data directory"}
    bad = client.get("/api/runs/x", headers=bearer(VIEWER))
    assert bad.status_code == 422 and bad.json()["detail"].startswith("path run_id:")


def test_reads_need_a_known_token_and_the_engine_token_reads_nothing(made):
    security = Security(TOKENS)
    security.add("engine-token-0123456789", User("engine", "engine"))
    client = TestClient(create_app(made[0], security))
    for headers, status in (({}, 401), (bearer("not-a-token-0123456789"), 401),
                            ({"Authorization": "Basic dmVyYTp4"}, 401),
                            (bearer("engine-token-0123456789"), 403)):
        answer = client.get("/api/runs", headers=headers)
        assert answer.status_code == status, headers
        detail = answer.json()["detail"]
        assert isinstance(detail, str) and detail.count(".") <= 1 and "\n" not in detail
        if status == 401:
            assert answer.headers["WWW-Authenticate"] == "Bearer"


def test_the_engine_role_posts_events_and_no_one_else_does(made):
    """What the engine's endpoint (`require("engine")`) lets through."""
    security = Security(TOKENS)
    security.add("engine-token-0123456789", User("engine", "engine"))
    app = create_app(made[0], security)

    @app.post("/api/probe")
    def probe(user: Annotated[User, Depends(require("engine"))]) -> dict:
        return {"name": user.name}

    client = TestClient(app)
    engine = client.post("/api/probe", headers=bearer("engine-token-0123456789"))
    assert (engine.status_code, engine.json()) == (200, {"name": "engine"})
    refused = client.post("/api/probe", headers=bearer(OPERATOR))
    assert (refused.status_code, refused.json()) == (
        403, {"detail": "only an engine of this data directory posts a run's events"})
    assert client.post("/api/probe").status_code == 401
    with pytest.raises(ValueError, match="no role 'admin'"):
        require("admin")


def test_readings_come_in_bounded_pages_that_add_up_to_the_run(made, client):
    data, dep, _ = made
    store = Store(data, read_only=True)
    everything = sorted(store.readings(dep))
    names = store.quantity_names(dep)
    store.close()
    assert len(everything) > 2500
    seen, url, pages = [], f"/api/runs/{dep}/readings?limit=1000", 0
    while url is not None:
        page = client.get(url, headers=bearer(VIEWER)).json()
        assert page["rows"] <= 1000
        rows = [(t, name, v) for name, s in page["series"].items()
                for t, v in zip(s["t_s"], s["value"], strict=True)]
        assert len(rows) == page["rows"]
        seen += rows
        url, pages = page["next"], pages + 1
    assert pages == -(-len(everything) // 1000)  # the last page is the one that ends it
    assert sorted(seen) == everything  # nothing lost, nothing twice

    chosen = [n for n in names if n.endswith("pressure_torr")][:1] + names[:1]
    t0 = everything[len(everything) // 2][0]
    page = client.get(f"/api/runs/{dep}/readings", headers=bearer(VIEWER),
                      params={"since_t": t0, "quantities": ",".join(chosen)}).json()
    assert page["next"] is None and set(page["series"]) == set(chosen)
    assert sorted((t, n, v) for n, s in page["series"].items()
                  for t, v in zip(s["t_s"], s["value"], strict=True)) == \
        [r for r in everything if r[0] >= t0 and r[1] in chosen]
    for query, field in (("limit=0", "query limit"), ("limit=100001", "query limit"),
                         ("after=nonsense", "after")):
        bad = client.get(f"/api/runs/{dep}/readings?{query}", headers=bearer(VIEWER))
        assert bad.status_code == 422 and field in bad.json()["detail"], query


def test_a_cell_tests_channels_stand_as_stored(made, client):
    data, dep, cells = made
    channels = client.get(f"/api/runs/{cells}/channels", headers=bearer(VIEWER)).json()
    store = Store(data, read_only=True)
    assert [(c["channel"], c["status"], c["cycle"]) for c in channels] == [
        (c.channel, c.status, c.cycle) for c in store.channels(cells)]
    for ch in channels:
        t, v, i = list(store.cell_samples(cells, ch["channel"]))[-1][:3]
        assert ch["last"] == {"t_s": t, "voltage_V": v, "current_A": i}
        ce = store.cycles(cells, ch["channel"])[-1]["coulombic_efficiency"]
        assert ch["last_ce"] == ce and 0.9 < ce <= 1.0
    store.close()
    assert [c["status"] for c in channels] == ["completed", "completed"]
    none = client.get(f"/api/runs/{dep}/channels", headers=bearer(VIEWER))
    assert none.status_code == 404 and "deposition run" in none.json()["detail"]


def test_a_samples_lineage_is_genealogys(made, client):
    data, dep, _ = made
    got = client.get("/api/samples/T-1", headers=bearer(VIEWER)).json()
    store = Store(data, read_only=True)
    assert got == json.loads(json.dumps(lineage(store, "T-1").to_dict()))
    store.close()
    assert [(la["run_id"], la["material"]) for la in got["layers"]] == [(dep, "LiPON")]
    missing = client.get("/api/samples/nope", headers=bearer(VIEWER))
    assert (missing.status_code, missing.json()) == (
        404, {"detail": "sample 'nope' is not in this data directory"})


def test_samples_are_listed_newest_first_a_page_at_a_time(made, client, tmp_path):
    data, _dep, _ = made
    listed = client.get("/api/samples", headers=bearer(VIEWER)).json()
    store = Store(data, read_only=True)
    stack = store.film_stack("T-1")
    store.close()
    t1 = next(s for s in listed["samples"] if s["id"] == "T-1")
    assert t1["layers"] == len(stack) == 1
    assert abs(t1["thickness_nm"] - sum(la.thickness_nm for la in stack)) < 1e-9
    assert listed["total"] == len(listed["samples"]) >= 1
    assert client.get("/api/samples?containing=t-", headers=bearer(VIEWER)).json()[
        "samples"][0]["id"] == "T-1"
    assert client.get("/api/samples?containing=%25", headers=bearer(VIEWER)).json() == {
        "total": 0, "offset": 0, "samples": []}  # % is a character here, not a wildcard
    assert client.get("/api/samples?limit=0", headers=bearer(VIEWER)).status_code == 422
    assert client.get("/api/samples").status_code == 401
    # many, paged: newest first, each once
    more = tmp_path / "more"
    store = Store(more)
    for i in range(7):
        store.ensure_sample(f"S-{i}", "glass")
        store.flush()
    store.close()
    other = TestClient(create_app(more, Security(TOKENS)))
    pages = [other.get(f"/api/samples?limit=3&offset={o}", headers=bearer(VIEWER)).json()
             for o in (0, 3, 6)]
    ids = [s["id"] for page in pages for s in page["samples"]]
    assert pages[0]["total"] == 7 and sorted(ids) == [f"S-{i}" for i in range(7)]
    created = [s["created_at"] for page in pages for s in page["samples"]]
    assert created == sorted(created, reverse=True)


def test_actions_need_an_operator_and_are_stored_with_their_author(tmp_path):
    data = tmp_path / "d"
    client = TestClient(create_app(data, Security(TOKENS)))
    answers: dict[str, object] = {}

    def start(run_id, _recipe):  # the run's row exists and its engine holds it
        url = f"/api/runs/{run_id}"
        answers["none"] = client.post(f"{url}/pause")
        answers["viewer"] = client.post(f"{url}/pause", headers=bearer(VIEWER))
        answers["pause"] = client.post(f"{url}/pause", headers=bearer(OPERATOR))
        answers["abort"] = client.post(f"{url}/abort", headers=bearer(OPERATOR))

    with pytest.raises(RunAborted, match="aborted by the operator"):
        start_run(str(short_recipe(tmp_path, 30)), data, on_start=start)
    (run_id, status), = committed(data / DB_NAME, "SELECT id, status FROM runs")
    assert status == "aborted"
    assert (answers["none"].status_code, answers["none"].headers["WWW-Authenticate"]) == \
        (401, "Bearer")
    assert answers["viewer"].status_code == 403
    assert answers["viewer"].json() == {"detail": "vera is a viewer; this needs an operator"}
    assert answers["pause"].status_code == answers["abort"].status_code == 202
    assert answers["abort"].json()["author"] == "otto"
    assert committed(data / DB_NAME, "SELECT run_id, action, author, taken FROM requests"
                                     " ORDER BY rowid") == [
        (run_id, "pause", "otto", 1), (run_id, "abort", "otto", 1)]

    late = client.post(f"/api/runs/{run_id}/continue", headers=bearer(OPERATOR))
    assert (late.status_code, late.json()) == (
        409, {"detail": f"run {run_id} is aborted, not running"})
    assert client.post("/api/runs/7/abort", headers=bearer(OPERATOR)).status_code == 404
    assert committed(data / DB_NAME, "SELECT count(*) FROM requests") == [(2,)]


def test_loopback_without_tokens_is_the_local_operator_and_nothing_else_binds(made):
    data, dep, _ = made
    security = configure("127.0.0.1", None, environ={})
    local = security.local_operator
    assert local is not None and local.role == "operator" and local.name
    app = create_app(data, security)
    here = TestClient(app, base_url="http://127.0.0.1:8765", client=("127.0.0.1", 40000))
    assert here.get("/api/runs").status_code == 200
    finished = here.post(f"/api/runs/{dep}/abort")  # past the operator check: it has ended
    assert finished.status_code == 409
    own_page = {"Origin": "http://127.0.0.1:8765", "Sec-Fetch-Site": "same-origin"}
    assert here.post(f"/api/runs/{dep}/abort", headers=own_page).status_code == 409
    for host in ("::1", "::ffff:127.0.0.1"):
        assert TestClient(app, base_url="http://[::1]:8765", client=(host, 1)).get(
            "/api/runs").status_code == 200
    # another site open in the lab PC's browser, posting here: CSRF, DNS rebinding
    for headers, named in (({"Origin": "https://evil.example"}, "origin 'https://evil.example'"),
                           ({"Origin": "null"}, "origin 'null'"),
                           ({"Sec-Fetch-Site": "cross-site"}, "a cross-site page"),
                           ({"Host": "evil.example:8765"}, "host 'evil.example:8765'"),
                           ({"Host": "[::1"}, "host '[::1'")):
        refused = here.post(f"/api/runs/{dep}/abort", headers=headers)
        assert (refused.status_code, refused.json()) == (401, {
            "detail": f"a request without a token must come from this server's own pages, "
                      f"not {named}"}), headers
    assert TestClient(app, client=("127.0.0.1", 1)).get("/api/runs").status_code == 401
    away = TestClient(create_app(data, security), client=("192.168.1.20", 40000))
    assert away.get("/api/runs").status_code == 401

    for host in ("0.0.0.0", "192.168.1.20", "::", "lab-pc.example"):
        with pytest.raises(InputError, match="needs tokens: pass --token-file FILE or set "
                                             "LIPON_HW_TOKEN"):
            configure(host, None, environ={})
    with pytest.raises(InputError, match="at least 16 characters"):
        configure("0.0.0.0", None, environ={"LIPON_HW_TOKEN": "short"})
    one = configure("0.0.0.0", None, environ={"LIPON_HW_TOKEN": OPERATOR})
    assert one.local_operator is None
    assert one.authorize(f"Bearer {OPERATOR}", "192.168.1.20", "operator") == \
        User("operator", "operator")


def test_a_token_file_is_refused_unless_its_owner_alone_may_read_it(tmp_path):
    path = tmp_path / "tokens"
    path.write_text(f"# name role token\nvera viewer {VIEWER}\n\notto operator {OPERATOR}"
                    "  # the shift lead\n", encoding="utf-8")
    for mode in (0o644, 0o640, 0o604, 0o620):
        path.chmod(mode)
        with pytest.raises(InputError) as refused:
            load_token_file(path)
        assert str(refused.value) == (f"the token file {path} may be read or written by "
                                      f"others than its owner (mode {mode:03o}): "
                                      f"`chmod 600 {path}`")
    path.chmod(0o600)
    assert load_token_file(path) == TOKENS
    for text, why in ((f"vera viewer {VIEWER} extra\n", "a user is `NAME ROLE TOKEN`"),
                      (f"vera admin {VIEWER}\n", "role 'admin' is not one of viewer, operator"),
                      ("vera viewer short\n", "at least 16 characters, not 5"),
                      (f"vera viewer {VIEWER}\nvic viewer {VIEWER}\n", "vic's token is also"),
                      ("# nobody\n", "names no users")):
        path.write_text(text, encoding="utf-8")
        with pytest.raises(InputError, match=why):
            load_token_file(path)
    path.write_text(f"vera viewer {VIEWER}\nvera operator {OPERATOR}\n", encoding="utf-8")
    with pytest.raises(InputError, match=f"^{path}:2: user 'vera' is named twice$"):
        load_token_file(path)


def test_bind_addresses_and_the_urls_engines_use():
    assert parse_bind("127.0.0.1:8765") == ("127.0.0.1", 8765)
    assert parse_bind("[::1]:0") == ("::1", 0)
    assert parse_bind("0.0.0.0:80") == ("0.0.0.0", 80)
    for bad in ("8765", "::1:8765", "host:", "host:99999", ":80", "[::1]8765"):
        with pytest.raises(InputError, match="--bind must be HOST:PORT"):
            parse_bind(bad)
    assert url_for("0.0.0.0", 5) == "http://127.0.0.1:5"
    assert url_for("::", 5) == url_for("::1", 5) == "http://[::1]:5"


def cli(*args, cwd, env=None, timeout=60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "lipon_hw.cli", *map(str, args)], cwd=cwd,
                          capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})})


def test_serve_refuses_in_one_sentence(tmp_path):
    env = {"LIPON_HW_TOKEN": ""}
    done = cli("serve", "--bind", "0.0.0.0:0", "--data", tmp_path / "d", cwd=tmp_path, env=env)
    assert (done.returncode, done.stderr) == (
        2, "error: serving on 0.0.0.0, beyond this machine, needs tokens: pass --token-file "
           "FILE or set LIPON_HW_TOKEN (or bind 127.0.0.1)\n")
    tokens = tmp_path / "tokens"
    tokens.write_text(f"otto operator {OPERATOR}\n", encoding="utf-8")
    tokens.chmod(0o644)
    done = cli("serve", "--token-file", tokens, "--data", tmp_path / "d", cwd=tmp_path)
    assert done.returncode == 2 and "chmod 600" in done.stderr
    assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr
    assert not (tmp_path / "d" / SERVE_FILE).exists()


def _get(url: str, token: str | None = None) -> tuple[int, object]:
    request = urllib.request.Request(url, headers=bearer(token) if token else {})
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def _has_ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as probe:
            probe.bind(("::1", 0))
    except OSError:
        return False
    return True


def test_the_real_server_serves_announces_itself_and_cleans_up(made, tmp_path):
    data = made[0]
    tokens = tmp_path / "tokens"
    tokens.write_text(f"vera viewer {VIEWER}\n", encoding="utf-8")
    tokens.chmod(0o600)
    announced = data / SERVE_FILE
    server = subprocess.Popen([sys.executable, "-m", "lipon_hw.cli", "serve", "--bind",
                               "localhost:0", "--token-file", str(tokens), "--data", str(data)],
                              cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True)
    try:
        deadline = time.monotonic() + 30
        while not announced.exists():
            assert server.poll() is None and time.monotonic() < deadline, server.stderr.read()
            time.sleep(0.05)
        line = server.stdout.readline()  # written once the socket is bound
        assert announced.stat().st_mode & 0o777 == 0o600
        found = json.loads(announced.read_text(encoding="utf-8"))
        assert found["url"].startswith("http://127.0.0.1:") and found["url"] in line
        assert len(found["engine_token"]) >= 32
        status, runs = _get(f"{found['url']}/api/runs", VIEWER)
        assert status == 200 and [r["id"] for r in runs] == [made[1], made[2]]
        assert _get(f"{found['url']}/api/runs")[0] == 401
        if _has_ipv6_loopback():  # localhost is both loopbacks, on one port
            port = found["url"].rpartition(":")[2]
            assert _get(f"http://[::1]:{port}/api/runs", VIEWER) == (status, runs)
        assert _get(f"{found['url']}/api/runs", found["engine_token"])[0] == 403

        second = cli("serve", "--bind", "127.0.0.1:0", "--token-file", tokens, "--data", data,
                     cwd=tmp_path)
        assert second.returncode == 2
        assert "serves this data directory already" in second.stderr
        assert json.loads(announced.read_text(encoding="utf-8")) == found  # left as it was
    finally:
        stop_process(server, wait_s=20)
    assert server.returncode == 0, server.stderr.read()
    assert not announced.exists()


def test_an_empty_data_directory_has_no_runs_and_a_damaged_store_is_503(tmp_path):
    client = TestClient(create_app(tmp_path, Security(TOKENS)))
    assert client.get("/api/runs", headers=bearer(VIEWER)).json() == []
    assert client.get("/api/runs/1", headers=bearer(VIEWER)).status_code == 404
    assert client.get("/api/samples/T-1", headers=bearer(VIEWER)).status_code == 404
    (tmp_path / DB_NAME).write_bytes(b"not a database at all, " * 100)
    damaged = client.get("/api/runs", headers=bearer(VIEWER))
    assert damaged.status_code == 503
    assert damaged.json()["detail"].startswith(f"{tmp_path / DB_NAME} is not")
    assert (tmp_path / DB_NAME).read_bytes() == b"not a database at all, " * 100


def test_concurrent_requests_each_read_their_own_store(made):
    """Requests answered concurrently each open and close their own read-only store."""
    client = TestClient(create_app(made[0], Security(TOKENS)))
    answers: list[int] = []

    def ask():
        for _ in range(5):
            answers.append(client.get(f"/api/runs/{made[1]}", headers=bearer(VIEWER)
                                      ).status_code)

    threads = [threading.Thread(target=ask) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert answers == [200] * 20


def test_the_served_app_takes_an_engines_events_and_streams_them_to_a_viewer(made):
    """`create_app` holds one hub: the engine's token posts a run's events, a viewer's
    WebSocket receives them, in order; a viewer may not post."""
    security = Security(TOKENS)
    security.add("engine-token-0123456789", User("engine", "engine"))
    client = TestClient(create_app(made[0], security))
    batch = {"events": [{"seq": n, "t_s": float(n), "kind": "readings",
                         "data": {"qcm.rate_A_s": 0.46}} for n in (1, 2, 3)],
             "dropped": 0, "resync_from_seq": None}
    refused = client.post("/api/engine/runs/1/events", json=batch, headers=bearer(VIEWER))
    assert refused.status_code == 403
    taken = client.post("/api/engine/runs/1/events", json=batch,
                        headers=bearer("engine-token-0123456789"))
    assert taken.status_code in (200, 202), taken.text
    with client.websocket_connect("/ws/runs/1?since_seq=0", headers=bearer(VIEWER)) as ws:
        got = json.loads(ws.receive_text())
    assert [e["seq"] for e in got] == [1, 2, 3]


def test_the_server_reads_the_data_directorys_store_on_either_back_end(tmp_path, backend):
    """A data directory whose store is PostgreSQL is served as one whose store is its
    SQLite file: its runs, a run, its readings."""
    data = tmp_path / "d"
    done = start_run(str(short_recipe(tmp_path, 3)), data)
    assert done.status == "completed"
    assert (data / DB_NAME).exists() == (backend is None)
    client = TestClient(create_app(data, Security(TOKENS)))
    runs = client.get("/api/runs", headers=bearer(VIEWER)).json()
    assert [(r["id"], r["status"]) for r in runs] == [(done.run_id, "completed")]
    got = client.get(f"/api/runs/{done.run_id}/readings?quantities=qcm.thickness_nm",
                     headers=bearer(VIEWER)).json()
    assert got["rows"] > 10 and got["series"]["qcm.thickness_nm"]["value"][-1] > 2.5
