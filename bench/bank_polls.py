"""Benchmark: polling a bank of potentiostat channels as a host on hardware does.

The default station's simulated lab is served on loopback TCP (`lipon-hw sim serve`), and
the MethodSCRIPT driver reaches its MultiEmStat4's 16 channels over `socket://`, one port
a channel, as on the instrument. Each channel runs an open-circuit measurement (a sample
every second, sent every `--record-s`), and the host polls the channels in turn for
`--seconds` of wall time, sleeping `--pause-s` between rounds. Prints the host's time per
poll (only the time inside `Run.poll`), the samples taken, and what that costs a host
polling `--bank` channels every 2 s (the engine's longest wait between polls on a
real-time clock): the share of each second spent polling. Then one JSON line.

    python bench/bank_polls.py [--record-s 30] [--seconds 5] [--pause-s 0.2] [--bank 128]

`--record-s 30` is a cycling protocol's rule: most polls find nothing; `--record-s 1`:
every poll finds a sample or more.
"""

from __future__ import annotations

import argparse
import json
import time

from lipon_hw.links import LinkPool
from lipon_hw.sim.serve import serve_lab
from lipon_hw.station import driver_class, load_station
from lipon_hw.techniques import OCV, Recording

POLL_EVERY_S = 2.0  # MAX_POLL_S["realtime"] of lipon_hw/celltest/channels.py


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--record-s", type=float, default=30.0)
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--pause-s", type=float, default=0.2)
    ap.add_argument("--bank", type=int, default=128)
    args = ap.parse_args()

    lab = serve_lab(load_station(None), "127.0.0.1", speed=1.0)
    pool = LinkPool()
    try:
        info = lab.instruments()["mes4"]
        links = [pool.open(f"socket://{c['tcp']}") for c in info["channels"]]
        pstat = driver_class("methodscript")("mes4", links)
        technique = OCV(3600.0, 1.0, Recording(dt_s=args.record_s))
        runs = [pstat.start(ch, technique) for ch in range(1, len(links) + 1)]
        polls, samples, in_polls = 0, 0, 0.0
        t_end = time.perf_counter() + args.seconds
        while time.perf_counter() < t_end:
            for run in runs:
                t = time.perf_counter()
                samples += len(run.poll())
                in_polls += time.perf_counter() - t
                polls += 1
            time.sleep(args.pause_s)
        pstat.make_safe()
    finally:
        pool.close()
        lab.stop()
    per_poll_s = in_polls / polls
    share = args.bank / POLL_EVERY_S * per_poll_s
    print(f"{len(runs)} channels over TCP, a sample sent every {args.record_s:g} s: {polls} "
          f"polls, {samples} samples; {per_poll_s * 1e3:.3f} ms a poll")
    print(f"a host polling {args.bank} channels every {POLL_EVERY_S:g} s would spend "
          f"{share * 100:.1f} % of each second in polls")
    print(json.dumps({"bench": "bank_polls", "channels": len(runs), "record_s": args.record_s,
                      "polls": polls, "samples": samples,
                      "ms_per_poll": round(per_poll_s * 1e3, 4), "bank": args.bank,
                      "bank_share_of_each_second": round(share, 4)}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
