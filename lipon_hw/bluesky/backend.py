"""An ophyd-async signal whose value is a driver's reading or setpoint.

`DriverBackend` is the one place a bluesky signal touches an instrument: reading calls
the driver's query (`qcm.thickness_nm()`), writing its command (`n2_mfc.set_flow_sccm(20)`),
both on the station's worker thread (`calls.DriverCalls`) and so through the driver's
own framing and the station's `Link.exchange()`. A written value is first checked
against the setpoint's station range (`limits.Range`): outside it, nothing is sent.

The instruments are polled, not streaming: a read asks the instrument, and a
subscription (`signal.subscribe`, a staged cache) polls it every `POLL_S` seconds.
Descriptors carry the quantity's units, its precision, and its limits where the
station gives them.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

from bluesky.protocols import Reading
from event_model import DataKey
from ophyd_async.core import (
    Callback,
    SignalBackend,
    SignalMetadata,
    SignalR,
    SignalRW,
    StrictEnum,
    make_datakey,
)

from lipon_hw.bluesky.calls import DriverCalls
from lipon_hw.bluesky.limits import Range
from lipon_hw.errors import LiponError

#: seconds between polls of a subscribed signal
POLL_S = 0.5

log = logging.getLogger(__name__)


class DriverBackend(SignalBackend):
    """Reads with `read()`, writes with `write(value)` (None: read-only), both driver
    methods; `convert` turns a driver's answer into the signal's datatype."""

    def __init__(self, calls: DriverCalls, instrument: str, quantity: str, datatype: type,
                 read: Callable[[], Any], write: Callable[[Any], None] | None = None, *,
                 units: str | None = None, precision: int | None = None,
                 limits: dict | None = None, setpoint: Range | None = None,
                 convert: Callable[[Any], Any] | None = None):
        super().__init__(datatype)
        self.calls = calls
        self.instrument = instrument
        self.quantity = quantity
        self._read = read
        self._write = write
        self._convert = convert or datatype
        self._metadata = _metadata(datatype, units, precision)
        self._limits = limits or (setpoint.datakey_limits() if setpoint else None)
        self._range = setpoint
        self._last_set: Any = None
        self._poll: asyncio.Task | None = None

    def source(self, name: str, read: bool) -> str:
        return f"lipon-hw://{self.instrument}/{self.quantity}"

    async def connect(self, timeout: float) -> None:
        """The station connected the instrument's link already; a dead instrument is
        reported by the first read, naming it."""

    async def put(self, value: Any) -> None:
        if self._write is None:
            raise LiponError(f"{self.instrument}: {self.quantity} is read-only")
        if self._range is not None:
            value = self._range.check(value)  # raises before anything is sent
        await self.calls.run(self.instrument, f"set {self.quantity} to {value}",
                             self._write, value)
        self._last_set = value

    async def get_value(self) -> Any:
        raw = await self.calls.run(self.instrument, f"read {self.quantity}", self._read)
        return self._convert(raw)

    async def get_reading(self) -> Reading:
        value = await self.get_value()
        return {"value": value, "timestamp": time.time(), "alarm_severity": 0}

    async def get_setpoint(self) -> Any:
        return self._last_set if self._last_set is not None else await self.get_value()

    async def get_datakey(self, source: str) -> DataKey:
        key = make_datakey(self.datatype, await self.get_value(), source, self._metadata)
        if self._limits:
            key["limits"] = self._limits
        return key

    def set_callback(self, callback: Callback[Reading] | None) -> None:
        if self._poll is not None:
            self._poll.cancel()
            self._poll = None
        if callback is not None:
            self._poll = asyncio.get_running_loop().create_task(self._watch(callback))

    async def _watch(self, callback: Callback[Reading]) -> None:
        while True:
            try:
                callback(await self.get_reading())
            except LiponError as exc:  # the next poll tries again; a read() raises it
                log.warning("%s", exc)
            await asyncio.sleep(POLL_S)


def _metadata(datatype: type, units: str | None, precision: int | None) -> SignalMetadata:
    meta: SignalMetadata = {}
    if units is not None:
        meta["units"] = units
    if precision is not None:
        meta["precision"] = precision
    if isinstance(datatype, type) and issubclass(datatype, StrictEnum):
        meta["choices"] = [member.value for member in datatype]
    return meta


def driver_r(calls: DriverCalls, instrument: str, quantity: str, read: Callable[[], Any],
             datatype: type = float, **meta) -> SignalR:
    """A read-only signal of one driver query."""
    return SignalR(DriverBackend(calls, instrument, quantity, datatype, read, **meta))


def driver_rw(calls: DriverCalls, instrument: str, quantity: str, read: Callable[[], Any],
              write: Callable[[Any], None], datatype: type = float, **meta) -> SignalRW:
    """A signal that reads one driver query and writes one driver command."""
    return SignalRW(DriverBackend(calls, instrument, quantity, datatype, read, write, **meta))
