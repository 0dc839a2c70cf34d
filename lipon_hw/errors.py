"""Error types. Every message is one sentence a user can act on.

`InputError` is bad input (recipe, station, command line): exit code 2, nothing moved.
`LinkError` and its children are the wire: timeouts, garbled frames, a lost port.
`InstrumentError` is an instrument that answered but refused or reported a fault.
`RunAborted` ends a run after the hardware was put in its safe state.
`StoreError` and its children are the run database: `StoreUnusable` (exit 2) when it is
not a sound lipon-hw database or cannot be written at all, `StoreFull`, `StoreBusy`
(and `StoreUnreachable`, a shared store's server that cannot be reached for now).
`MissingExtra` is an optional stack (an extra of the install) asked for but not installed.
"""


class LiponError(Exception):
    """Base of every error the CLI reports as one sentence, without a traceback."""

    exit_code = 1


class InputError(LiponError):
    """A recipe, station file or command-line value is wrong; nothing was touched."""

    exit_code = 2


class MissingExtra(InputError):
    """What was asked needs an optional stack this install lacks; the sentence names the
    extra that installs it (`lipon_hw.extras`)."""


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


class NeedsPerson(InstrumentError):
    """The instrument is in a state only a person may take it out of (a motion controller
    whose position was lost must be homed): trying it again cannot help."""


class RunAborted(LiponError):
    """A run was stopped (interlock, fault, operator) and the hardware left safe."""

    exit_code = 3


class StoreError(LiponError):
    """The run database could not be read or written (disk full, I/O error, locked)."""


class StoreBusy(StoreError):
    """Another process holds the run database locked for longer than this one waits."""


class StoreUnreachable(StoreBusy):
    """A shared store's database server cannot be reached (down, restarting, the network
    cut): like a lock, it may pass; writes stay buffered meanwhile."""


class ClaimLost(StoreError):
    """A claim the engine held in a shared store (its run, its sample) was lost with its
    connection, and another engine holds it now: two would drive one run."""


class RunTakenOver(ClaimLost):
    """Another engine took the run over (its driver epoch moved on: `Store.take_over`)
    while this one still wrote: its writes since are refused, none of them stored."""


class ShardTakenOver(RunTakenOver):
    """Another attempt of the same cluster shard took its channels up (`Store.take_shard`)
    while this one still wrote: its writes since are refused, none of them stored."""


class StoreFull(StoreError):
    """A write to the run database failed for want of space (disk full, file-size limit)."""


class StoreUnusable(StoreError, InputError):
    """The run database is not one this lipon-hw can use (not SQLite, damaged, another
    program's, a newer layout, read-only for a writer); nothing was written to it."""

    exit_code = 2


class OutputError(LiponError):
    """An export's output file could not be written (disk full, permissions)."""


class CellParamError(ValueError):
    """A lab's cell check refusing one model parameter's value (validation turns it into
    the protocol's FILE:LINE: field sentence)."""

    def __init__(self, key: str, message: str):
        super().__init__(f"{key}: {message}")
        self.key, self.message = key, message
