"""Link recovery for commands that act again when sent again (issue 11, item 2).

Each test loses or garbles the instrument's answer AFTER the emulator has carried the
command out (`faults.drop_replies` / `garble_replies` count down one reply), then shows the
command took effect exactly once: the driver read the state back instead of resending it
blindly. Before `Link.exchange(..., verify=)` each of these commands ran twice (or was
refused the second time while it had in fact taken).
"""

from __future__ import annotations

import pytest
from conftest import ManualClock
from faulty import at, connect

from lipon_hw.errors import LinkLost
from lipon_hw.links import Health, Link
from lipon_hw.ports import SimPort
from lipon_hw.techniques import OCV, ConstantCurrent

# --- MethodSCRIPT: a script upload ---------------------------------------------------------


@pytest.mark.parametrize("fault", ["drop_replies", "garble_replies"])
def test_a_script_whose_echo_is_lost_runs_once(fault):
    lab, clock = connect([])
    channel, mes4 = lab.sim.emulators["mes4/1"], lab.instruments["mes4"]
    setattr(channel.faults, fault, 1)
    run = mes4.start(1, OCV(60.0, 10.0))
    assert channel.scripts_started == 1 and channel.running
    at(clock, 70.0)
    samples = run.poll()
    assert run.finished and run.end_reason == "done"
    assert [round(s.t_s) for s in samples][-3:] == [40, 50, 60]  # one script's samples
    link = lab.pool.link("sim://mes4/1")
    assert link.health is Health.OK


def test_a_script_that_never_arrived_is_sent_again():
    """The read-back finds the channel idle (the upload was lost on the way in), so the
    script is sent once more and runs once."""
    lab, clock = connect([])
    channel, mes4 = lab.sim.emulators["mes4/1"], lab.instruments["mes4"]
    channel.faults.link_down = True
    link = lab.pool.link("sim://mes4/1")
    original = link._port.write
    calls = []

    def write(data: bytes) -> None:  # the first upload is lost on the wire
        calls.append(data)
        channel.faults.link_down = len(calls) == 1
        original(data)

    link._port.write = write
    mes4.start(1, ConstantCurrent(1e-6, 60.0, v_max_V=4.2))
    assert channel.scripts_started == 1 and channel.running
    assert calls[1] == b"e\n\n"  # the read-back came before the second upload


def test_a_read_back_that_never_answers_ends_lost_saying_it_may_have_run():
    lab, _clock = connect([])
    channel, mes4 = lab.sim.emulators["mes4/1"], lab.instruments["mes4"]
    link = lab.pool.link("sim://mes4/1")
    original = link._port.write

    def write(data: bytes) -> None:  # the upload arrives; every answer is lost after it
        channel.faults.drop_replies = 10
        original(data)

    link._port.write = write
    with pytest.raises(LinkLost, match="may or may not have taken effect"):
        mes4.start(1, OCV(60.0, 10.0))
    assert channel.scripts_started == 1  # never sent a second time


# --- INFICON SQM-160 and SQC-310: zero, start layer ------------------------------------------


@pytest.mark.parametrize(("instrument", "endpoint"), [("qcm", "qcm"),
                                                      ("evap_controller", "evap_ctrl")])
def test_a_zero_whose_answer_is_lost_zeroes_once(instrument, endpoint):
    lab, clock = connect([])
    emulator, monitor = lab.sim.emulators[endpoint], lab.instruments[instrument]
    monitor.thickness_nm()
    emulator.faults.drop_replies = 1
    before = emulator.crystal_sensor.zeros
    monitor.zero()
    assert emulator.crystal_sensor.zeros == before + 1
    assert monitor.thickness_nm() == pytest.approx(0.0, abs=0.1)


def test_a_garbled_zero_reply_zeroes_once():
    lab, _clock = connect([])
    emulator, monitor = lab.sim.emulators["qcm"], lab.instruments["qcm"]
    emulator.faults.garble_replies = 1
    before = emulator.crystal_sensor.zeros
    monitor.zero()
    assert emulator.crystal_sensor.zeros == before + 1


def test_a_layer_start_whose_answer_is_lost_starts_once():
    """A second `U2` would be refused ('E', a layer is running) though the first took."""
    lab, clock = connect([])
    emulator, ctrl = lab.sim.emulators["evap_ctrl"], lab.instruments["evap_controller"]
    ctrl.set_rate_control(1.0, 100, 8, 40, 0, 30)
    emulator.faults.drop_replies = 1
    ctrl.start_layer()
    assert emulator.rate_loop.layers_started == 1
    assert ctrl.phase() == "ramp"


def test_a_layer_start_that_never_arrived_is_sent_again():
    lab, _clock = connect([])
    emulator, ctrl = lab.sim.emulators["evap_ctrl"], lab.instruments["evap_controller"]
    ctrl.set_rate_control(1.0, 100, 8, 40, 0, 30)
    link = lab.pool.link("sim://evap_ctrl")
    original, sent = link._port.write, []

    def write(data: bytes) -> None:
        sent.append(data)
        if len(sent) > 1:  # the first U2 never reaches the controller
            original(data)

    link._port.write = write
    ctrl.start_layer()
    assert emulator.rate_loop.layers_started == 1 and ctrl.phase() == "ramp"


# --- the rule itself, on a bare Link -------------------------------------------------------


class Counter:
    """An endpoint that counts `go` commands and answers `ok`; `state?` reads the count."""

    def __init__(self):
        self.count = 0
        self.drop = 0

    def handle(self, data: bytes) -> bytes:
        if data == b"go\n":
            self.count += 1
            if self.drop:
                self.drop -= 1
                return b""
            return b"ok\n"
        return f"{self.count}\n".encode()

    def reset_connection(self) -> None:
        pass


def _go(link: Link) -> str:
    link.write(b"go\n")
    return link.read_until(b"\n").decode()


def _took(link: Link) -> bool:
    link.write(b"state?\n")
    return int(link.read_until(b"\n")) >= 1


def test_an_idempotent_exchange_is_resent_and_a_verified_one_is_not():
    blind = Counter()
    blind.drop = 1
    Link("sim://blind", SimPort(blind)).exchange(_go)
    assert blind.count == 2  # the plain rule: sent again
    once = Counter()
    once.drop = 1
    assert Link("sim://once", SimPort(once)).exchange(_go, verify=_took) is None
    assert once.count == 1
    fine = Counter()
    assert Link("sim://fine", SimPort(fine)).exchange(_go, verify=_took) == "ok\n"


def test_attempts_stay_bounded_with_a_read_back():
    endpoint = Counter()
    endpoint.drop = 100
    link = Link("sim://c", SimPort(endpoint), retries=2, clock=ManualClock())

    def never(link: Link) -> bool:
        link.write(b"state?\n")
        link.read_until(b"\n")
        return False  # the instrument says the command did not take: resend

    with pytest.raises(LinkLost, match="after 3 attempts"):
        link.exchange(_go, verify=never)
    assert endpoint.count == 3 and link.health is Health.LOST

