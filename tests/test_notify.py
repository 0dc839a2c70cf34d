"""The station's notification hook (issue 11, item 5): a command (the event's JSON on stdin)
and/or a webhook (an HTTP POST), called on every alarm from warning up, on an abort and at
the end of a run; checked when the station loads; a hook that fails is a warning in the
run's log, never an alarm, never a change to how the run ends, never in the way of the
safe state."""

from __future__ import annotations

import json
import shlex
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from interlocked import cli, interlocked_recipe, station_with

from lipon_hw.deposition.session import start_run
from lipon_hw.engine.runlog import log_path
from lipon_hw.errors import InputError, RunAborted
from lipon_hw.station import load_station
from lipon_hw.store import Store

#: a hook: appends the event it got on stdin, and the run's status as it saw it, to a
#: file; on an alarm it first waits (up to 20 s) for the run to end, as a slow hook would
HOOK = """\
import json, sqlite3, sys, time
out, db = sys.argv[1], sys.argv[2]
event = json.load(sys.stdin)
def status():
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)
    try:
        return con.execute("SELECT status FROM runs WHERE id=?", (event["run_id"],)).fetchone()[0]
    finally:
        con.close()
if event["event"] == "alarm" and "--slow" in sys.argv:
    deadline = time.monotonic() + 20
    while status() == "running" and time.monotonic() < deadline:
        time.sleep(0.05)
event["seen_status"] = status()
with open(out, "a", encoding="utf-8") as f:
    f.write(json.dumps(event) + "\\n")
"""


def command_station(tmp_path: Path, *flags: str, timeout_s: float = 30) -> tuple[Path, Path]:
    hook = tmp_path / "hook.py"
    hook.write_text(HOOK, encoding="utf-8")
    out = tmp_path / "heard.jsonl"
    words = [sys.executable, str(hook), str(out), str(tmp_path / "d" / "lipon.db"), *flags]
    command = json.dumps(shlex.join(words))  # a YAML double-quoted string
    return station_with(tmp_path, f"{{command: {command}, timeout_s: {timeout_s}}}"), out


def heard(out: Path) -> list[dict]:
    return [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]


@pytest.mark.parametrize(("notify", "field", "words"), [
    ('{url: "ftp://lab.example/alarms"}', "notify.url", "is not an http:// or https:// URL"),
    ('{url: "file:///etc/passwd"}', "notify.url", "is not an http:// or https:// URL"),
    ('{url: "https://"}', "notify.url", "names no host"),
    ('{url: "https://lab.example:99999/x"}', "notify.url", "is not a URL"),
    ("{}", "notify", "names no hook"),
    ('{command: "mail \'operator"}', "notify.command", "cannot be split into words"),
    ('{command: "  "}', "notify.command", "is empty"),
    ('{command: "true", timeout_s: 0}', "notify.timeout_s", "greater than 0"),
    ('{command: "true", mail: "x"}', "notify.mail", "is not a known field"),
])
def test_a_hook_that_could_never_be_called_is_refused_at_load(tmp_path, notify, field, words):
    path = station_with(tmp_path, notify)
    line = len(path.read_text(encoding="utf-8").splitlines())
    with pytest.raises(InputError) as caught:
        load_station(path)
    assert str(caught.value).startswith(f"{path}:{line}: {field}: "), caught.value
    assert words in str(caught.value)


def test_a_refused_hook_is_one_sentence_before_any_run(tmp_path):
    station = station_with(tmp_path, '{url: "gopher://lab.example"}')
    proc = cli("run", interlocked_recipe(tmp_path, "abort"), "--station", station, "--data",
               tmp_path / "d", cwd=tmp_path)
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and "notify.url" in proc.stderr, proc.stderr
    assert not (tmp_path / "d" / "lipon.db").exists()


def test_both_hooks_load(tmp_path):
    spec = load_station(station_with(
        tmp_path, '{command: "notify-send lab", url: "https://lab.example/hook"}')).spec
    assert spec.notify.argv == ["notify-send", "lab"]
    assert spec.notify.url == "https://lab.example/hook" and spec.notify.timeout_s == 10


def test_a_command_hears_the_abort_alarm_then_the_abort_after_the_safe_state(tmp_path):
    station, out = command_station(tmp_path)
    with pytest.raises(RunAborted):
        start_run(str(interlocked_recipe(tmp_path, "abort")), tmp_path / "d", str(station))
    alarm, end = heard(out)  # not the safe state's info alarm: warnings and up only
    assert alarm["event"] == "alarm" and alarm["run_id"] == 1
    assert alarm["station"].startswith("Simulated LiPON line")
    assert alarm["run"] == "short LiPON" and alarm["time"].endswith("+00:00")
    assert alarm["alarm"] == {"t_s": 1125.0, "severity": "error", "source": "interlock",
                              "rule": "interlock 1", "reaction": "abort",
                              "message": "interlock 1 (forward_power_W > 10) tripped: the run "
                                         "is aborted"}
    assert end["event"] == "abort" and end["status"] == "aborted"
    assert end["message"].startswith("interlock 1 (forward_power_W > 10) tripped")
    assert end["alarms"] == {"count": 2, "by_severity": {"info": 1, "error": 1}}
    assert end["seen_status"] == "aborted"  # sent once the end was stored


def test_a_repeated_alarm_is_sent_once(tmp_path):
    station, out = command_station(tmp_path)
    with pytest.raises(RunAborted):
        start_run(str(interlocked_recipe(tmp_path, "pause")), tmp_path / "d", str(station))
    events = heard(out)
    # three pauses by the same rule, in the same words: one sent; then the abort's alarm
    # (held more than three times) and the abort itself
    assert [e["event"] for e in events] == ["alarm", "alarm", "abort"]
    assert [e["alarm"]["reaction"] for e in events[:2]] == ["pause", "abort"]
    stored = Store(tmp_path / "d", read_only=True).alarms(1)
    assert sum(a.reaction == "pause" for a in stored) == 3


def test_the_end_of_a_completed_run_is_sent(tmp_path):
    station, out = command_station(tmp_path)
    result = start_run(str(interlocked_recipe(tmp_path, "alarm")), tmp_path / "d",
                       str(station))
    assert result.status == "completed"
    events = heard(out)
    assert [e["event"] for e in events] == ["alarm", "end"]  # info alarms are not sent
    assert events[1]["status"] == "completed"
    assert events[1]["alarms"] == {"count": 3, "by_severity": {"info": 2, "warning": 1}}


def test_a_slow_hook_never_holds_up_the_safe_state(tmp_path):
    """The hook, given the abort's alarm, waits for the run to end before it answers: were
    the engine waiting for the hook, the run would still be running when it looked."""
    station, out = command_station(tmp_path, "--slow")
    with pytest.raises(RunAborted):
        start_run(str(interlocked_recipe(tmp_path, "abort")), tmp_path / "d", str(station))
    alarm, end = heard(out)
    assert alarm["event"] == "alarm" and alarm["seen_status"] == "aborted"
    assert end["event"] == "abort"
    safe = Store(tmp_path / "d", read_only=True).alarms(1)[-1]
    assert safe.reaction == "safe state" and "FAILED" not in safe.message


class _Hooked(BaseHTTPRequestHandler):
    answer = 204

    def do_POST(self):  # noqa: N802 - http.server's name
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.server.posts.append((self.path, self.headers["Content-Type"], json.loads(body)))
        self.send_response(self.answer)
        self.end_headers()

    def log_message(self, *_args):
        pass


@pytest.fixture
def webhook():
    """A local HTTP server in a thread, keeping every POST: (path, content type, JSON)."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Hooked)
    server.posts = []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def test_a_webhook_gets_each_event_as_a_json_post(tmp_path, webhook):
    url = f"http://127.0.0.1:{webhook.server_address[1]}/lab/alarms"
    station = station_with(tmp_path, f'{{url: "{url}", timeout_s: 20}}')
    with pytest.raises(RunAborted):
        start_run(str(interlocked_recipe(tmp_path, "abort")), tmp_path / "d", str(station))
    assert [(path, kind) for path, kind, _ in webhook.posts] == [
        ("/lab/alarms", "application/json")] * 2
    alarm, end = (doc for _, _, doc in webhook.posts)
    assert alarm["event"] == "alarm" and alarm["alarm"]["reaction"] == "abort"
    assert end["event"] == "abort" and end["status"] == "aborted" and end["run_id"] == 1


def test_a_failing_hook_is_a_warning_in_the_log_and_changes_nothing(tmp_path, webhook):
    """A command that exits non-zero, one that outlives its timeout, and a webhook that
    answers 500: the run ends as it would have, its alarms are its own, the operator's
    terminal is not cluttered, and the run's log says what failed."""
    _Hooked.answer = 500
    try:
        url = f"http://127.0.0.1:{webhook.server_address[1]}/"
        failing = json.dumps(shlex.join([sys.executable, "-c", "import sys; sys.stdin.read(); "
                                         "sys.exit('no mail today')"]))
        station = station_with(tmp_path, f'{{command: {failing}, url: "{url}"}}')
        proc = cli("run", interlocked_recipe(tmp_path, "alarm"), "--station", station,
                   "--data", tmp_path / "d", cwd=tmp_path)
    finally:
        _Hooked.answer = 204
    assert proc.returncode == 0, proc.stderr
    assert "hook" not in proc.stderr and "no mail today" not in proc.stderr
    assert len(webhook.posts) == 2  # it was called: an alarm, the end
    store = Store(tmp_path / "d", read_only=True)
    assert store.run(1).status == "completed"
    assert len(store.alarms(1)) == 3 and not any("hook" in a.message
                                                 for a in store.alarms(1))
    log = log_path(tmp_path / "d", 1).read_text(encoding="utf-8")
    failures = [line for line in log.splitlines() if "notification hook failed" in line]
    assert len(failures) == 4, log  # two events, two hooks each
    assert all(" WARNING " in line for line in failures)
    assert sum("exited with code 1: no mail today" in line for line in failures) == 2
    assert sum("webhook answered HTTP 500" in line for line in failures) == 2

    slow = json.dumps(shlex.join([sys.executable, "-c", "import time; time.sleep(60)"]))
    station = station_with(tmp_path, f"{{command: {slow}, timeout_s: 0.5}}", "slow.yaml")
    result = start_run(str(interlocked_recipe(tmp_path, "alarm")), tmp_path / "d2",
                       str(station))
    assert result.status == "completed"
    assert result.wall_s < 45  # not the 60 s the hook would have taken per event
    log = log_path(tmp_path / "d2", 1).read_text(encoding="utf-8")
    assert log.count("took longer than 0.5 s (killed)") == 2
