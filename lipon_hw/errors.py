"""Error types. Every message is one sentence a user can act on.

`InputError` is bad input (recipe, station, command line): exit code 2, nothing moved.
`LinkError` and its children are the wire: timeouts, garbled frames, a lost port.
`InstrumentError` is an instrument that answered but refused or reported a fault.
`RunAborted` ends a run after the hardware was put in its safe state.
"""


class LiponError(Exception):
    """Base of every error the CLI reports as one sentence, without a traceback."""

    exit_code = 1


class InputError(LiponError):
    """A recipe, station file or command-line value is wrong; nothing was touched."""

    exit_code = 2


class LinkError(LiponError):
    """The byte link to an instrument failed."""


class LinkTimeout(LinkError):
    """The instrument did not answer in time."""


class FrameError(LinkError):
    """The instrument answered with bytes that are not a valid frame (bad CRC, length, header)."""


class LinkLost(LinkError):
    """The link failed repeatedly and is now considered lost."""


class InstrumentError(LiponError):
    """The instrument answered with a refusal (NAK, error status, out-of-range code)."""


class RunAborted(LiponError):
    """A run was stopped (interlock, fault, operator) and the hardware left safe."""

    exit_code = 3


class StoreUnavailable(LiponError):
    """The run database refuses writes (locked by another process, full, read-only)."""
