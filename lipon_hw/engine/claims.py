"""What a run claims while it runs — itself, the ports of its instruments, its
potentiostat channels, its sample — and when it takes them (the locks: `ownership`).

"The same tool" is decided by the hardware, not by names. A deposition claims the
port of every instrument of every tool its recipe uses, by address: two recipes on
two station files that call the instruments differently, or group them into
differently named tools, still collide when they reach the same instruments (the
same `socket://host:port`, serial device, VISA resource or simulated instrument).
Instruments sharing one port (two gauge channels on one controller) are one claim.
A `sim://` address names an instrument of the simulated lab of this data directory,
so two rehearsals on the simulated sputter tool collide as two runs on the real one
would.

A cell test claims each of its channels: on an instrument with one port per channel
(a MultiEmStat4) that channel's port, so two protocols on different channels of one
potentiostat run side by side; on an instrument with one port for all channels, the
port and the channel number.

A deposition claims its sample exclusively; a cell test claims its channels'
samples shared (several tests may measure one sample, nobody while it is coated).

The run, its workers and its sample are claimed for every machine sharing a PostgreSQL
store too (`Resource.store_wide`, `store_claims`); ports and channels are this machine's.

A cell test's worker processes are spawned, so they inherit none of their parent's
locks. Each holds the run's worker lock shared until it ends; a resume waits for that
lock to be free, so it cannot start while the workers of a killed engine (told to stop
by the kernel on their parent's death, but still writing for a moment) are alive.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from lipon_hw.engine.ownership import Ownership, Resource, hold_shared_until_exit, wait_until_free
from lipon_hw.ports import VISA_PREFIXES
from lipon_hw.station import Station


def run(run_id: int) -> Resource:
    return Resource(f"run {run_id}",
                    f"run {run_id} is being driven by a live engine, {{holder}}; wait for it "
                    f"to end, or stop it with `lipon-hw abort {run_id}`, before resuming it",
                    store_wide=True)


def run_workers(run_id: int) -> Resource:
    """Held shared by each worker process of a cell test, until the process has ended."""
    return Resource(f"run {run_id} workers",
                    f"worker processes of an earlier engine of run {run_id} are still "
                    "stopping their channels, {holder}; resume it when they have ended",
                    store_wide=True)


def deposition(station: Station, recipe, sample_id: str | None) -> list[Resource]:
    """The ports of every instrument the recipe's tools use, and the run's sample."""
    claims: dict[str, Resource] = {}
    for tool, roles in recipe.tool_roles.items():
        for inst in roles.values():
            for address in station.instrument(inst).addresses:
                key = f"port {port_identity(address)}"
                claims.setdefault(key, Resource(
                    key, f"instrument {inst} of tool {tool} ({address}) is in use by "
                         "{holder}; one run at a time drives an instrument"))
    out = sorted(claims.values(), key=lambda r: r.key)
    if sample_id is not None:
        out.append(sample(sample_id, shared=False))
    return out


def cell_test(station: Station, proto, channels: list[int] | None = None) -> list[Resource]:
    """The protocol's channels (or only `channels`, those a resume will drive), and
    their samples, shared."""
    wanted = [p for p in proto.channels if channels is None or p.channel in channels]
    addresses = station.instrument(proto.potentiostat).addresses
    claims = []
    for plan in wanted:
        n = plan.channel
        if len(addresses) > 1 and 1 <= n <= len(addresses):
            key = f"port {port_identity(addresses[n - 1])}"
        else:
            key = f"port {port_identity(addresses[0])} channel {n}"
        claims.append(Resource(key, f"channel {n} of {proto.potentiostat} is in use by "
                                    "{holder}; one run at a time drives a channel"))
    samples = sorted({p.sample for p in wanted if p.sample is not None})
    return claims + [sample(s, shared=True) for s in samples]


def sample(sample_id: str, shared: bool) -> Resource:
    busy = (f"sample {sample_id!r} is being coated by {{holder}}; it cannot be measured "
            "until that run ends" if shared else
            f"sample {sample_id!r} is in use by {{holder}}; one run at a time deposits on "
            "a sample, and nobody while its cells are being tested")
    return Resource(f"sample {sample_id}", busy, shared=shared, store_wide=True)


def port_identity(address: str) -> str:
    """The physical port an address reaches, whatever the spelling of its options:
    serial settings dropped, VISA names case-folded, `localhost` as 127.0.0.1."""
    address = address.strip()
    if address.upper().startswith(VISA_PREFIXES):
        return address.lower()
    if "://" not in address or address.startswith("sim://"):
        return address
    parts = urlsplit(address)
    host = parts.hostname or ""
    if host == "localhost":
        host = "127.0.0.1"
    try:
        port = parts.port
    except ValueError:  # not a number: the link refuses it; here it is just a name
        return address
    if port is not None:
        return f"{parts.scheme.lower()}://{host}:{port}"
    return f"{parts.scheme.lower()}://{parts.netloc}{parts.path}"


# --- taking them ------------------------------------------------------------------------
#: how long a resume waits for the worker processes of a killed engine to stop their
#: channels (they are told to on their parent's death) before it gives up with a sentence
WORKERS_WAIT_S = 30.0


def take_run(owned: Ownership, run_id: int) -> None:
    """The run's own lock, taken first by a resume (before anything is read or rewound),
    right after its row by a new run; from then on the locks say whose they are."""
    owned.take([run(run_id)])
    owned.label(f"run {run_id}")


def take_cell_resume(owned: Ownership, store, run_id: int, station: Station, proto,
                     resumable: tuple[str, ...]) -> None:
    """The channels a cell-test resume will drive (those not ended), their samples; then
    wait for any worker of a killed engine of this run that is still writing."""
    ended = {c.channel for c in store.channels(run_id) if c.status not in resumable}
    owned.take(cell_test(station, proto, [p.channel for p in proto.channels
                                          if p.channel not in ended]))
    wait_until_free(owned.data_dir, run_workers(run_id), WORKERS_WAIT_S)


def join_workers(data_dir, run_id: int) -> Ownership:
    """In a worker process, before it checks that its parent lives: the shared lock that
    keeps a resume out until this process has ended (see `take_cell_resume`); its
    Ownership, whose `keep` the worker's store calls after its writes."""
    return hold_shared_until_exit(data_dir, run_workers(run_id), f"a worker of run {run_id}")
