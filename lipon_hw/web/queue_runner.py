"""The queue's runner, in the `lipon-hw serve` process: starts each lane's head.

A thread looks at the queue (`store_queue`) when told (a submission, a move, a cancel:
`wake`) and every `POLL_S`. Each queued entry that heads every lane it stands in, with
nothing running in any of them, starts: its sequence text is written to
`<data>/queue/<id>/<name>` and `python -m lipon_hw.cli run FILE --data DATA --json
[--station S] [--seed N] [--speed X]` runs in a process of its own session (a run is
not stopped by the server stopping: it ends as it would from a terminal, and the next
server finds it). The run publishes to the server through `<data>/serve.json` like any
run. The run's id is read from the store by the file's path while it runs, and from the
`--json` line at its end; its output is kept beside the file (`run.out`, `run.err`).

A lane is busy while its entry's process lives. An entry found `running` with no process
of this server (a server restarted): busy while an engine still drives its run (the run's
claim is held), else ended by the run's stored status.

States at the end: `done` (the run completed), `cancelled` (an operator cancelled it and
it did not complete), `failed` (otherwise; the message says why, in the run's words).
"""

from __future__ import annotations

import contextlib
import json
import logging
import signal
import subprocess
import sys
import threading
from pathlib import Path

from lipon_hw.errors import InputError, LiponError
from lipon_hw.store import Store
from lipon_hw.store_location import has_store
from lipon_hw.store_queue import QueueEntry

log = logging.getLogger("lipon_hw.web")

POLL_S = 0.5
RUNNER = "queue runner"
CANCEL_NOTE = "cancel requested by "


class QueueRunner:
    def __init__(self, data: Path | str, station_path: str | None = None,
                 poll_s: float = POLL_S):
        self.data = Path(data).resolve()
        self.station_path = None if station_path is None else str(Path(station_path).resolve())
        self.poll_s = poll_s
        self._procs: dict[int, subprocess.Popen] = {}
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    # --- the thread -----------------------------------------------------------------
    def start(self) -> QueueRunner:
        self._thread = threading.Thread(target=self._loop, name="lipon-hw queue", daemon=True)
        self._thread.start()
        return self

    def stop(self, end_runs: bool = False, wait_s: float = 60.0) -> None:
        """Stop looking at the queue; `end_runs`: stop the runs started too (SIGTERM, as
        Ctrl-C: each leaves its hardware safe) and wait for them."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(wait_s)
        if end_runs:
            for proc in list(self._procs.values()):
                with contextlib.suppress(ProcessLookupError):
                    proc.send_signal(signal.SIGTERM)
            for proc in list(self._procs.values()):
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(wait_s)
            self.tick()  # their ends stored

    def wake(self) -> None:
        self._wake.set()

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.tick()
            except LiponError as exc:  # a store busy or unwritable now: next time
                log.warning("queue: %s", exc)
            except Exception:  # noqa: BLE001 - the runner must outlive a bug of one entry
                log.exception("queue runner")
            self._wake.wait(self.poll_s)
            self._wake.clear()

    # --- one look ---------------------------------------------------------------------
    def tick(self) -> None:
        """End what has ended, start what may start."""
        if not has_store(self.data):
            return
        with self._lock:
            # read read-only (a writer's opening checks the whole file): a writer is
            # opened only to write, when an entry starts or its run is learnt or ends
            reader = Store(self.data, read_only=True)
            try:
                running = [(e, e.run_id if e.run_id is not None else self.run_of(e, reader))
                           for e in reader.queue_entries(("running",))]
                startable = reader.startable()
            finally:
                reader.close()
            writer = _Writer(self.data)
            try:
                for entry, run_id in running:
                    self._watch(writer, entry, run_id)
                for entry in startable:
                    if not self._stop.is_set():
                        self._start(writer, entry)
            finally:
                writer.close()

    def sequence_file(self, entry: QueueEntry) -> Path:
        return self.data / "queue" / str(entry.id) / entry.sequence_name

    def run_of(self, entry: QueueEntry, store: Store | None = None) -> int | None:
        """The run the entry's process made, by its sequence file's path (None: not yet)."""
        own = store is None
        store = Store(self.data, read_only=True) if own else store
        try:
            return store.queue_run_id(str(self.sequence_file(entry)))
        finally:
            if own:
                store.close()

    def stop_unstarted(self, entry_id: int) -> bool:
        """Stop an entry's process that has not made its run yet (SIGTERM: as Ctrl-C)."""
        proc = self._procs.get(entry_id)
        if proc is None or proc.poll() is not None:
            return False
        proc.send_signal(signal.SIGTERM)
        return True

    def _start(self, store: Store, entry: QueueEntry) -> None:
        if not store.queue_set(entry.id, "running", RUNNER, "starting", only_from=("queued",)):
            return
        path = self.sequence_file(entry)
        args = [sys.executable, "-m", "lipon_hw.cli", "run", str(path), "--data",
                str(self.data), "--json"]
        if self.station_path is not None:
            args += ["--station", self.station_path]
        if entry.options.get("seed") is not None:
            args += ["--seed", str(entry.options["seed"])]
        if entry.options.get("speed") is not None:
            args += ["--speed", repr(float(entry.options["speed"]))]
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(entry.sequence_text, encoding="utf-8")
            with open(path.parent / "run.out", "wb") as out, \
                    open(path.parent / "run.err", "wb") as err:
                self._procs[entry.id] = subprocess.Popen(
                    args, cwd=path.parent, stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                    start_new_session=True)
        except OSError as exc:
            store.queue_set(entry.id, "failed", RUNNER,
                            f"its run could not be started ({exc.strerror or exc})")
            log.warning("queue %d: not started (%s)", entry.id, exc)
            return
        store.queue_note(entry.id, message="started")
        log.info("queue %d: %s started on %s (pid %d)", entry.id, entry.sequence_name,
                 ",".join(entry.lanes), self._procs[entry.id].pid)

    def _watch(self, store: Store, entry: QueueEntry, run_id: int | None) -> None:
        if run_id is not None and entry.run_id is None:
            store.queue_note(entry.id, run_id=run_id, message=f"run {run_id} running")
        proc = self._procs.get(entry.id)
        if proc is not None:
            if proc.poll() is None:
                return
            del self._procs[entry.id]
            self._ended(store, entry, proc.returncode, run_id)
            self._wake.set()  # its lanes are free: look again at once
            return
        if run_id is not None and _driven(self.data, run_id):
            return  # an engine started before this server still drives it
        self._adopted_end(store, entry, run_id)
        self._wake.set()

    def _ended(self, store: Store, entry: QueueEntry, code: int, run_id: int | None) -> None:
        folder = self.sequence_file(entry).parent
        summary = _last_json(folder / "run.out")
        run_id = summary.get("run_id", run_id)
        said = _last_line(folder / "run.err").removeprefix("error: ")
        message = said or summary.get("message") or f"its run ended with exit code {code}"
        if code == 0:
            state, message = "done", summary.get("message") or "completed"
        elif entry.message.startswith(CANCEL_NOTE):
            state, message = "cancelled", f"{entry.message}; {message}"
        else:
            state = "failed"
        if run_id is not None:
            message = f"run {run_id}: {message}"
        store.queue_set(entry.id, state, RUNNER, message, run_id)
        log.info("queue %d: %s (%s)", entry.id, state, message)

    def _adopted_end(self, store: Store, entry: QueueEntry, run_id: int | None) -> None:
        if run_id is None:
            store.queue_set(entry.id, "failed", RUNNER,
                            "its process ended (the server stopped) before its run started")
            return
        try:
            run = store.run(run_id)
        except InputError:
            store.queue_set(entry.id, "failed", RUNNER, f"run {run_id} is not stored")
            return
        if run.status == "completed":
            state, message = "done", run.message or "completed"
        elif entry.message.startswith(CANCEL_NOTE):
            state, message = "cancelled", f"{entry.message}; run {run.status}"
        elif run.status == "running":  # its engine died without ending it
            state, message = "failed", (f"its engine stopped without ending it; "
                                        f"`lipon-hw resume {run_id}` continues it")
        else:
            state, message = "failed", f"{run.status}: {run.message}"
        store.queue_set(entry.id, state, RUNNER, f"run {run_id}: {message}", run_id)


class _Writer:
    """The data directory's store, opened to write at its first use."""

    def __init__(self, data: Path):
        self.data, self.store = data, None

    def __getattr__(self, name: str):
        if self.store is None:
            self.store = Store(self.data)
        return getattr(self.store, name)

    def close(self) -> None:
        if self.store is not None:
            self.store.close()


def _driven(data: Path, run_id: int) -> bool:
    from lipon_hw.engine import claims
    from lipon_hw.engine.ownership import held_by

    return held_by(data, claims.run(run_id)) is not None


def _last_line(path: Path) -> str:
    with contextlib.suppress(OSError):
        lines = [ln for ln in path.read_text(encoding="utf-8", errors="replace").splitlines()
                 if ln.strip()]
        return lines[-1].strip() if lines else ""
    return ""


def _last_json(path: Path) -> dict:
    with contextlib.suppress(ValueError):
        found = json.loads(_last_line(path) or "{}")
        return found if isinstance(found, dict) else {}
    return {}
