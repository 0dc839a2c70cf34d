"""A cell test's samples from its worker processes to the live view of the run's own
process: each worker's store has a `SampleRelay` tap that passes the samples it is given
(and its impedance points and finished cycles) on through a bounded multiprocessing
queue, while the run's process has a publisher (`publishing`, a shared flag the watching
loop keeps up to date); the watching loop hands them to its store's taps (`pass_on`), as
if its own store had been given them.

The relay never slows a worker: a batch leaves at most every `EVERY_S` of wall time, and
when the queue is full it is dropped, and the next batch that gets through says so (the
publisher then leaves a seq out, and every watcher reads those samples from the store).
The samples are stored by the worker's own store either way: only their live copy is at
stake here.
"""

from __future__ import annotations

import contextlib
import queue
import time

from lipon_hw.store_plumbing import tell

EVERY_S = 0.25
#: batches waiting in the queue before a worker drops the next
MAX_BATCHES = 64


class SampleRelay:
    """A worker store's tap (`Store.taps`): samples into `out` while `publishing` is set."""

    def __init__(self, out, publishing, every_s: float = EVERY_S):
        self.out, self.publishing, self.every_s = out, publishing, every_s
        self.rows: dict[int, list[tuple]] = {}
        self.told: list[tuple] = []  # (event, args) of the spectra and cycles, in order
        self.sent_at = time.monotonic()
        self.lost = False

    def cell_samples(self, run_id: int, channel: int, rows: list[tuple]) -> None:
        if self._publishing():
            self.rows.setdefault(channel, []).extend(r[:6] for r in rows)
            self._maybe_send(run_id)

    def spectrum(self, run_id: int, channel: int, rows: list[tuple]) -> None:
        if self._publishing():
            self.told.append(("spectrum", (run_id, channel, list(rows))))
            self._maybe_send(run_id)

    def cycle(self, run_id: int, channel: int, cycle: int, stats) -> None:
        if self._publishing():
            self.told.append(("cycle", (run_id, channel, cycle, dict(stats))))
            self._maybe_send(run_id)

    def _publishing(self) -> bool:
        if not self.publishing.value:
            if self.rows or self.told:
                self.rows.clear()
                self.told.clear()
                self.lost = True  # a publisher may come back: its watchers must re-read
            return False
        return True

    def _maybe_send(self, run_id: int) -> None:
        if time.monotonic() - self.sent_at >= self.every_s:
            self.send(run_id)

    def send(self, run_id: int) -> None:
        self.sent_at = time.monotonic()
        if not self.rows and not self.told:
            return
        try:
            self.out.put_nowait((run_id, self.lost, self.rows, self.told))
        except queue.Full:
            self.lost = True
        else:
            self.lost = False
        self.rows, self.told = {}, []

    def close(self, run_id: int) -> None:
        """The worker's last samples (it stops after this)."""
        self.send(run_id)

    # the other events: the worker's alarms reach the run's process through the store
    # (`AlarmRelay`), its steps and status are the run's process's own
    def readings(self, *_args) -> None: ...
    def alarm(self, *_args) -> None: ...
    def step(self, *_args, **_kwargs) -> None: ...
    def status(self, *_args) -> None: ...


def pass_on(store, inbox, publishing) -> None:
    """In the run's process: the workers' batches waiting in `inbox`, told to `store`'s
    taps; `publishing` set to whether anyone taps the store now."""
    publishing.value = 1 if store.taps else 0
    while True:
        try:
            run_id, lost, rows, told = inbox.get_nowait()
        except (queue.Empty, EOFError, OSError):
            return
        if not store.taps:
            continue
        if lost:
            tell(store.taps, "lost", run_id)
        for channel, samples in rows.items():
            tell(store.taps, "cell_samples", run_id, channel, samples)
        for event, args in told:
            tell(store.taps, event, *args)


def drain(inbox) -> None:
    """Empty `inbox` (a worker's queue flushes into its pipe before it exits)."""
    with contextlib.suppress(queue.Empty, EOFError, OSError):
        while True:
            inbox.get_nowait()
