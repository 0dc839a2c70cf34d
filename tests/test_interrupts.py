"""Ctrl-C and SIGTERM wait while an in-process instrument answers (`lipon_hw.interrupts`):
a simulated instrument is never cut off in the middle of its work by the host's signals,
and the signal still acts, right after. Provoked at a known point: the handler runs
inside `signal.raise_signal`, called from the instrument's own code."""

from __future__ import annotations

import signal
import threading

import pytest

from lipon_hw import interrupts
from lipon_hw.ports import SimPort


class Instrument:
    """An endpoint that is signalled half-way through its answer."""

    def __init__(self, signum: int):
        self.signum, self.steps = signum, []

    def handle(self, data: bytes) -> bytes:
        self.steps.append("began")
        signal.raise_signal(self.signum)  # the host's handler runs here, unless it waits
        self.steps.append("ended")
        return b"ok\n"

    def reset_connection(self) -> None:
        pass


def stop(_signum, _frame):
    raise KeyboardInterrupt


@pytest.fixture
def sigterm_handler():
    old = signal.signal(signal.SIGTERM, interrupts.deferring(stop))
    yield
    signal.signal(signal.SIGTERM, old)


def test_a_signal_waits_for_the_instruments_answer_then_acts(sigterm_handler):
    instrument = Instrument(signal.SIGTERM)
    port = SimPort(instrument)
    with pytest.raises(KeyboardInterrupt):
        port.write(b"poll\n")
    assert instrument.steps == ["began", "ended"], "the instrument was cut off"
    assert port.read_available() == b"ok\n", "its answer is there for the host"
    assert signal.getsignal(signal.SIGTERM).defers is stop


def test_without_the_wait_the_instrument_would_be_cut_off():
    """What the wrapper prevents, shown with the bare handler."""
    old = signal.signal(signal.SIGTERM, stop)
    try:
        instrument = Instrument(signal.SIGTERM)
        with pytest.raises(KeyboardInterrupt):
            SimPort(instrument).write(b"poll\n")
        assert instrument.steps == ["began"]
    finally:
        signal.signal(signal.SIGTERM, old)


def test_outside_an_instrument_the_signal_acts_at_once(sigterm_handler):
    with pytest.raises(KeyboardInterrupt):
        signal.raise_signal(signal.SIGTERM)


def test_a_run_wraps_pythons_ctrl_c_and_puts_it_back():
    before = signal.getsignal(signal.SIGINT)
    with interrupts.deferring_run():
        inside = signal.getsignal(signal.SIGINT)
        assert inside.defers is before
        assert interrupts.deferring(inside) is inside, "wrapped once only"
    assert signal.getsignal(signal.SIGINT) is before


def test_an_instrument_answering_in_another_thread_holds_nothing(sigterm_handler):
    """Signals go to the main thread: a shard's instrument in a thread of its own must not
    make the main thread's signal wait, nor act on it in the shard's thread."""
    entered, leave = threading.Event(), threading.Event()

    class Slow:
        def handle(self, data: bytes) -> bytes:
            entered.set()
            leave.wait(10)
            return b""

        def reset_connection(self) -> None:
            pass

    shard = threading.Thread(target=SimPort(Slow()).write, args=(b"x\n",))
    shard.start()
    try:
        assert entered.wait(10)
        with pytest.raises(KeyboardInterrupt):  # at once, in this (the main) thread
            signal.raise_signal(signal.SIGTERM)
    finally:
        leave.set()
        shard.join(10)
