"""Benchmark: polling a bank of potentiostat channels as a host on hardware does.

A simulated lab holding one MultiEmStat4-like bank of `--channels` channels (one port a
channel, as on the instrument) is served on loopback TCP (`lipon-hw sim serve`), and the
MethodSCRIPT driver reaches every channel over `socket://`. Each channel runs an
open-circuit measurement (a sample every second, sent every `--record-s`), and the host
polls the channels in turn, a round every `--round-s` of wall time (2 s: the engine's
longest wait between polls on a real-time clock), for `--seconds`. Prints the host's time
per poll (only the time inside `Run.poll`), the samples taken, and the share of each
second the host spent polling; then one JSON line.

    python bench/bank_polls.py [--channels 128] [--record-s 30] [--seconds 10] [--round-s 2]

`--record-s 30` is a cycling protocol's rule: most polls find nothing; `--record-s 1`:
every poll finds a sample or two. The samples counted are those the rounds took: what is
still on its way when the last round ends is the next round's, as in a run.
"""

from __future__ import annotations

import argparse
import json
import time

from lipon_hw.links import LinkPool
from lipon_hw.sim.serve import serve_lab
from lipon_hw.station import driver_class, load_station
from lipon_hw.techniques import OCV, Recording

BANK = """name: a bank of {n} channels
sim:
  seed: 1
instruments:
  bank:
    driver: methodscript
    address: "sim://bank/{{1-{n}}}"
    sim:
      cells: {{"1-{n}": {{kind: lnmo}}}}
"""


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--channels", type=int, default=128)
    ap.add_argument("--record-s", type=float, default=30.0)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--round-s", type=float, default=2.0)
    args = ap.parse_args()

    station = load_station("bank.yaml", text=BANK.format(n=args.channels))
    lab = serve_lab(station, "127.0.0.1", speed=1.0)
    pool = LinkPool()
    try:
        info = lab.instruments()["bank"]
        links = [pool.open(f"socket://{c['tcp']}") for c in info["channels"]]
        pstat = driver_class("methodscript")("bank", links)
        technique = OCV(3600.0, 1.0, Recording(dt_s=args.record_s))
        runs = [pstat.start(ch, technique) for ch in range(1, len(links) + 1)]
        polls, samples, in_polls, late = 0, 0, 0.0, 0.0
        t_start = time.perf_counter()
        next_round = t_start
        while next_round < t_start + args.seconds:
            for run in runs:
                t = time.perf_counter()
                samples += len(run.poll())
                in_polls += time.perf_counter() - t
                polls += 1
            next_round += args.round_s
            wait = next_round - time.perf_counter()
            if wait > 0:
                time.sleep(wait)
            else:  # a round took longer than the round: the host falls behind
                late = max(late, -wait)
        wall = time.perf_counter() - t_start
        pstat.make_safe()
    finally:
        pool.close()
        lab.stop()
    per_poll_s = in_polls / polls
    print(f"{len(runs)} channels over TCP, a sample sent every {args.record_s:g} s, a round "
          f"every {args.round_s:g} s: {polls} polls, {samples} samples; {per_poll_s * 1e3:.3f} "
          f"ms a poll; {in_polls / wall * 100:.1f} % of each second in polls"
          + (f"; the host fell up to {late:.1f} s behind its rounds" if late else ""))
    print(json.dumps({"bench": "bank_polls", "channels": len(runs), "record_s": args.record_s,
                      "round_s": args.round_s, "wall_s": round(wall, 3), "polls": polls,
                      "samples": samples, "ms_per_poll": round(per_poll_s * 1e3, 4),
                      "share_of_each_second": round(in_polls / wall, 4),
                      "behind_s": round(late, 3)}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
