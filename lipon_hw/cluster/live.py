"""A campaign's samples from its shards to the live view of the engine's process, through
the scheduler: `celltest.relay` as it is (a `SampleRelay` tap in each shard's store, the
engine's watching loop passing batches on with `relay.pass_on`), over a Dask `Queue`
(bounded: a full one drops the batch and the next says so) and a Dask `Variable` for the
engine's "someone is watching" flag (read at most once a wall second by a shard). The
samples are stored by the shards either way; only their live copy travels here."""

from __future__ import annotations

import pickle
import queue
import time

from lipon_hw.celltest import relay

#: wall seconds a shard trusts the last flag it read
FLAG_EVERY_S = 1.0
#: how long a shard's batch waits for room in a full queue before it is dropped (an
#: asyncio put with no time at all is never tried)
PUT_WAIT_S = 0.05


def names(run_id: int, token: str) -> tuple[str, str]:
    """The campaign's queue and flag, by name."""
    return (f"lipon-hw run {run_id} samples {token}",
            f"lipon-hw run {run_id} publishing {token}")


class Inbox:
    """The engine's end of the queue: `get_nowait` as `relay.pass_on` takes it."""

    def __init__(self, name: str, client):
        import distributed

        self.queue = distributed.Queue(name, client=client, maxsize=relay.MAX_BATCHES)
        self.taken: list = []

    def get_nowait(self):
        if not self.taken:
            self.taken = list(self.queue.get(batch=True))
        if not self.taken:
            raise queue.Empty
        return pickle.loads(self.taken.pop(0))


class Flag:
    """The "someone is watching" flag: set by the engine (only when it changes), read by
    the shards (at most once every FLAG_EVERY_S)."""

    def __init__(self, name: str, client=None, value: int | None = None):
        import distributed

        self.variable = distributed.Variable(name, client=client)
        self._value = 0
        self._read_at = -FLAG_EVERY_S
        if value is not None:
            self.variable.set(value)
            self._value, self._read_at = value, float("inf")  # the engine's own: never read

    @property
    def value(self) -> int:
        now = time.monotonic()
        if now - self._read_at >= FLAG_EVERY_S:
            self._read_at = now
            try:
                self._value = int(self.variable.get(timeout=1))
            except Exception:  # noqa: BLE001 - the scheduler is away: nobody watches
                self._value = 0
        return self._value

    @value.setter
    def value(self, value: int) -> None:
        if value != self._value:
            self._value = value
            self.variable.set(value)


class Outbox:
    """A shard's end of the queue: `put_nowait` as `SampleRelay` gives it."""

    def __init__(self, name: str):
        import distributed

        self.queue = distributed.Queue(name)

    def put_nowait(self, item) -> None:
        """The batch as pickled bytes (the scheduler's queue carries msgpack values)."""
        try:
            self.queue.put(pickle.dumps(item), timeout=PUT_WAIT_S)
        except TimeoutError:
            raise queue.Full from None


def shard_tap(order_relay: tuple[str, str] | None) -> relay.SampleRelay | None:
    """The tap a shard's store gets, or None when the campaign relays nothing."""
    if order_relay is None:
        return None
    inbox, flag = order_relay
    return relay.SampleRelay(Outbox(inbox), Flag(flag))
