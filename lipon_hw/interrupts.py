"""Ctrl-C and SIGTERM wait while an in-process instrument answers.

A simulated instrument (`ports.SimPort`) does its work in the host's own thread. A signal
whose handler raises (KeyboardInterrupt) could land in the middle of it — a cell's
physics moved on and the instrument's clock not yet — and leave the simulated hardware
unable to do the next thing the host asks of it: disconnect its cell on the way out.
Real hardware is never interrupted by the host's signals, so neither is the simulated
one: a handler wrapped by `deferring` only notes a signal that comes while the main
thread is inside `hold()` … `release()`, and `release()` acts on it once the instrument
has answered.

Cheap on purpose (a counter, no system call): every exchange with an in-process
instrument holds. `deferring_run()` wraps the handlers in place for a run (the engine's
lifecycle); a process that installs its own (a worker) wraps it itself.
"""

from __future__ import annotations

import contextlib
import signal
import threading

_MAIN = threading.main_thread().ident
_held = 0  # depth of hold() in the main thread
_noted: list[tuple[object, int]] = []  # (handler, signal) that came while held


def hold() -> None:
    """The main thread enters an instrument: signals wait (other threads get none)."""
    global _held
    if threading.get_ident() == _MAIN:
        _held += 1


def release() -> None:
    """The main thread leaves an instrument: a signal that came meanwhile is acted on now
    (its handler may raise here)."""
    global _held
    if threading.get_ident() != _MAIN:
        return
    _held -= 1
    if _held == 0 and _noted:
        noted = list(_noted)
        _noted.clear()
        for handler, signum in noted:
            handler(signum, None)


def deferring(handler):
    """`handler` (a Python signal handler), acting at once outside an instrument and on
    leaving it inside one. A handler wrapped already is returned as it is."""
    if not callable(handler) or getattr(handler, "defers", None) is not None:
        return handler

    def on_signal(signum, frame):
        if _held:
            _noted.append((handler, signum))
            return
        handler(signum, frame)

    on_signal.defers = handler
    return on_signal


@contextlib.contextmanager
def deferring_run():
    """For a run in the main thread: its Ctrl-C and SIGTERM handlers (Python's own
    KeyboardInterrupt for Ctrl-C, a caller's for SIGTERM) wrapped by `deferring`; put back
    as they were at its end. Elsewhere (a thread) nothing to do: signals go to the main
    thread."""
    if threading.get_ident() != _MAIN:
        yield
        return
    saved = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    for sig, handler in saved.items():
        if callable(handler):
            signal.signal(sig, deferring(handler))
    try:
        yield
    finally:
        for sig, handler in saved.items():  # unless the run put another one in since
            if callable(handler) and getattr(signal.getsignal(sig), "defers", None) is handler:
                signal.signal(sig, handler)
