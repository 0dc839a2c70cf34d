"""An exchange cut short from outside (Ctrl-C, SIGTERM) leaves the wire in an unknown
state: half a packet in the instrument's buffer, or a reply it still waits to have
acknowledged. The next exchange, the safe state's, must go through on its first try."""

from __future__ import annotations

import pytest
from conftest import sim_link

from lipon_hw.drivers.ae_bus import ACK, AEBusGenerator
from lipon_hw.links import Health
from lipon_hw.sim.emulators.ae_bus import AEBusEmulator


class InterruptedWire:
    """Hands the emulator only the first `cut` bytes of write number `at`, then raises
    KeyboardInterrupt, as a signal landing in the middle of a write does."""

    def __init__(self, emulator, at: int, cut: int):
        self.emulator, self.name = emulator, emulator.name
        self.at, self.cut = at, cut
        self.writes = 0
        self.log: list[tuple[bytes, bytes]] = []

    def handle(self, data: bytes) -> bytes:
        self.writes += 1
        if self.writes == self.at:
            self.emulator.handle(data[:self.cut])
            raise KeyboardInterrupt
        reply = self.emulator.handle(data)
        self.log.append((data, reply))
        return reply

    def reset_connection(self) -> None:
        self.emulator.reset_connection()


# the writes of set_power_setpoint_W(100) once in host control: its packet, then the ACK
@pytest.mark.parametrize(("at", "cut"), [
    (1, 2),  # half of the setpoint packet is in the unit's buffer
    (1, 4),  # all but its checksum
    (2, 0),  # the unit's reply arrived; the host's ACK never went out
])
def test_the_safe_state_after_an_interrupted_exchange_goes_through_first_time(world, at, cut):
    # a unit whose inter-byte gap is long (command 40), so a half packet would stay
    emulator = AEBusEmulator("rf", world.sputter, inter_byte_timeout_s=60)
    wire = InterruptedWire(emulator, 0, 0)
    gen = AEBusGenerator("rf-gen", sim_link(wire))
    gen.set_output(True)
    wire.writes, wire.at, wire.cut = 0, at, cut
    with pytest.raises(KeyboardInterrupt):
        gen.set_power_setpoint_W(100)
    wire.log.clear()
    gen.make_safe()
    assert wire.log[0][1].startswith(ACK)  # the RF-off packet was understood at once
    assert not world.sputter.rf_readings()["rf_on"]
    assert gen.link.health is Health.OK
