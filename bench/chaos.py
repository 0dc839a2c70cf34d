"""Chaos benchmark: seeded runs of the shipped recipes, protocols and sheet screening (and
short variants of their shapes) on the simulated lab with 1-3 random faults from the
catalogue (docs/faults.md), some killed with SIGKILL at a random moment and resumed.

Each run is `python -m lipon_hw.cli run SEQ --station ST --data DIR --json` in a process
of its own (virtual time), ST being the built-in station with the drawn faults in its
`sim: faults:` (timed by `at_s` within the run). A run drawn for a kill is sent SIGKILL
once its store holds readings, a random share of its usual wall time later (a run that
ends first is counted as not killed), then `lipon-hw resume RUN --data DIR --json` until
it ends; a resume may itself be killed and resumed again (bounded by --max-kills). A
resume refused because the killed run's worker processes still hold its locks is tried
again (bounded).

Each run is then judged from its store (definitions in `bench/chaos_checks.py`): ended
safe (an end status, and the store says the hardware was made safe: every cell
disconnected, the deposition's safe-state alarm without a failure), resumed to completion
(a killed run whose resume reached `completed`; one aborted by an interlock its faults
tripped is counted apart, and so is one whose twin — the same run never killed — does not
complete either: its faults end it whatever the kill, so it was not resumable), readings
duplicated (the same reading stored twice, out of order, or step counts going back) and
readings lost (gaps beyond the record rule not explained by a hold, a pause or an
impedance spectrum).

    python bench/chaos.py [--runs 20] [--seed 1] [--kill-fraction 0.3] [--jobs 1]
    python bench/chaos.py --seed 1 --index 17 --keep DIR   # one run again, its files kept

A run's plan (sequence, faults, kill or not, when) depends only on --seed and its index;
the same run with --kill-fraction 0 has the same sequence and faults, never killed.

Prints a row per run and the totals, then one JSON line. Exit 1 when a run did not end
safe, a reading was lost or duplicated, or a resumable run did not resume to completion.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from chaos_checks import judge  # noqa: E402
from chaos_plan import SEQUENCES, Plan, label, plan_run, station_text  # noqa: E402

#: one process of a run may take this long before it is ended as hung
PROCESS_TIMEOUT_S = 600.0
#: a refused resume (the killed run's workers still hold its locks) is tried this often
RESUME_TRIES = 20
#: exit codes that mean "the run ended" (done, failed, aborted): anything else is a finding
ENDED_CODES = (0, 1, 3)


class Runner:
    """The processes of one chaos run: started in sessions of their own, so that worker
    processes left by a killed engine can be found (and, at the very end, ended)."""

    def __init__(self, plan: Plan, directory: Path):
        self.plan, self.dir = plan, directory
        self.data = directory / "data"
        self.sessions: list[int] = []
        self.codes: list[int | None] = []
        self.kills = 0
        self.stragglers = 0
        self.notes: list[str] = []

    def start(self, args: list[str], name: str) -> subprocess.Popen:
        out = open(self.dir / f"{name}.out", "w", encoding="utf-8")  # noqa: SIM115
        err = open(self.dir / f"{name}.err", "w", encoding="utf-8")  # noqa: SIM115
        proc = subprocess.Popen([sys.executable, "-m", "lipon_hw.cli", *args], cwd=self.dir,
                                stdout=out, stderr=err, start_new_session=True)
        out.close()
        err.close()
        self.sessions.append(proc.pid)
        return proc

    def finish(self, proc: subprocess.Popen) -> int | None:
        try:
            code = proc.wait(timeout=PROCESS_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self.notes.append(f"process {proc.pid} hung for {PROCESS_TIMEOUT_S:.0f} s")
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            code = proc.wait()
        self.codes.append(code)
        return code

    def kill_when_started(self, proc: subprocess.Popen, share: float) -> bool:
        """SIGKILL to the engine alone (its workers learn of it as they would of the OOM
        killer) once readings are stored, `share` of the sequence's usual wall time later."""
        deadline = time.monotonic() + PROCESS_TIMEOUT_S
        while proc.poll() is None and not _has_readings(self.data / "lipon.db"):
            if time.monotonic() > deadline:
                return False
            time.sleep(0.05)
        end = time.monotonic() + share * self.plan.sequence.wall_s
        while proc.poll() is None and time.monotonic() < end:
            time.sleep(0.02)
        if proc.poll() is not None:
            return False
        os.kill(proc.pid, signal.SIGKILL)
        self.kills += 1
        return True

    def run(self) -> None:
        plan = self.plan
        self.data.mkdir(parents=True, exist_ok=True)
        seq = plan.sequence
        if seq.text is not None:
            (self.dir / f"{seq.name}.yaml").write_text(seq.text, encoding="utf-8")
        (self.dir / "station.yaml").write_text(station_text(plan.faults, plan.seed),
                                               encoding="utf-8")
        target = seq.shipped or f"{seq.name}.yaml"
        proc = self.start(["run", target, "--station", "station.yaml", "--data", "data",
                           "--json"], "run")
        killed = plan.kill and self.kill_when_started(proc, plan.kill_at)
        self.finish(proc)
        rekills = iter(plan.rekill)
        tries = 0
        while killed and tries < RESUME_TRIES:
            tries += 1
            run_id = _run_id(self.data / "lipon.db")
            if run_id is None:
                self.notes.append("killed before its run was stored")
                break
            proc = self.start(["resume", str(run_id), "--data", "data", "--json"],
                              f"resume{tries}")
            again = next(rekills, False)
            killed = again and self.kill_when_started(proc, plan.kill_at)
            code = self.finish(proc)
            if not killed and code == 2 and _refused_as_live(self.dir / f"resume{tries}.err"):
                killed = True  # its workers are still ending: try again
                time.sleep(0.5)
        self._wait_for_sessions()

    def _wait_for_sessions(self) -> None:
        """Every process of the run's sessions gone (workers outliving their engine are a
        finding: they are ended after 15 s)."""
        for sid in self.sessions:
            deadline = time.monotonic() + 15
            while _alive(sid) and time.monotonic() < deadline:
                time.sleep(0.1)
            if _alive(sid):
                self.stragglers += 1
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(sid, signal.SIGKILL)


def _alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _query(db: Path, sql: str):
    if not db.exists():
        return None
    try:
        con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=1)
        try:
            return con.execute(sql).fetchone()
        finally:
            con.close()
    except sqlite3.Error:
        return None


def _has_readings(db: Path) -> bool:
    row = _query(db, "SELECT (SELECT COUNT(*) FROM runs), (SELECT COUNT(*) FROM"
                     " (SELECT 1 FROM readings LIMIT 3)) + (SELECT COUNT(*) FROM"
                     " (SELECT 1 FROM cell_blocks LIMIT 3)) + (SELECT COUNT(*) FROM"
                     " (SELECT 1 FROM screen_cells LIMIT 3))")
    return bool(row and row[0] and row[1] >= 3)


def _run_id(db: Path) -> int | None:
    row = _query(db, "SELECT MAX(id) FROM runs")
    return row[0] if row else None


def _refused_as_live(err: Path) -> bool:
    text = err.read_text(encoding="utf-8", errors="replace").lower()
    return any(w in text for w in ("another", "running", "live", "lock", "in use"))


def _twin(plan: Plan, directory: Path) -> str:
    """The status the same run (sequence, station, faults) reaches when never killed: a
    killed run that did not resume to completion is resumable only if its twin completes
    (a run whose faults end it anyway — a lasting outage, a shorted cell — cannot)."""
    twin_dir = directory / "twin"
    twin_dir.mkdir(parents=True, exist_ok=True)
    runner = Runner(dataclasses.replace(plan, kill=False, rekill=[]), twin_dir)
    runner.run()
    return judge(runner.data / "lipon.db").status


def chaos_run(plan: Plan, workdir: Path) -> dict:
    """One run: its processes, then its verdict, as a row of the table."""
    directory = workdir / f"run{plan.index:04d}"
    directory.mkdir(parents=True, exist_ok=True)
    wall = time.perf_counter()
    runner = Runner(plan, directory)
    runner.run()
    wall = time.perf_counter() - wall
    v = judge(runner.data / "lipon.db")
    safe = v.safe and v.status != "missing"
    why = v.why_unsafe
    odd = [c for c in runner.codes if c not in ENDED_CODES]
    if runner.kills and runner.codes[-1] == -signal.SIGKILL:
        safe, why = False, "the last process was killed and never resumed"
    elif odd and not runner.kills:
        why = (why + "; " if why else "") + f"exit codes {runner.codes}"
    if runner.kills:
        resumed = ("completed" if v.status == "completed" else
                   "interlock abort" if v.aborted_by_interlock else "no")
        if resumed == "no":  # resumable? its twin, never killed, says what its faults do
            twin = _twin(plan, directory)
            if twin != "completed":
                resumed = f"as twin: {twin}"
    else:
        resumed = "-"
    err_tail = ""
    if not safe or v.gaps or v.duplicated:
        errs = sorted(directory.glob("*.err"))
        err_tail = errs[-1].read_text(encoding="utf-8", errors="replace")[-400:] if errs else ""
    return {"index": plan.index, "seed": plan.seed, "sequence": plan.sequence.name,
            "faults": [label(f) for f in plan.faults], "fault_entries": plan.faults,
            "kills": runner.kills, "codes": runner.codes, "status": v.status,
            "message": v.message[:200], "safe": safe, "why_unsafe": why, "resumed": resumed,
            "resumes": v.resumes, "readings": v.readings, "duplicates": v.duplicates,
            "identical_duplicates": v.identical_duplicates, "disorder": v.disorder,
            "gaps": len(v.gaps), "told_gaps": len(v.told_gaps),
            "told_gap_list": [(q, round(a, 3), round(b, 3)) for q, a, b in v.told_gaps[:3]],
            "gap_list": [(q, round(a, 3), round(b, 3))
                                              for q, a, b in v.gaps[:5]],
            "twin_list": [(q, round(t, 3)) for q, t in v.twins[:5]],
            "stragglers": runner.stragglers, "notes": runner.notes, "stderr_tail": err_tail,
            "wall_s": round(wall, 2), "dir": str(directory)}


def row_text(r: dict) -> str:
    safe = "safe" if r["safe"] else "NOT SAFE"
    kill = f"kill×{r['kills']}" if r["kills"] else "-"
    return (f"{r['index']:4d} {r['seed']:>8d} {r['sequence']:<18} {kill:<6} "
            f"{r['status']:<10} {safe:<8} {r['resumed']:<22} dup {r['duplicates']}"
            f"/{r['disorder']} gaps {r['gaps']}+{r['told_gaps']:<2} {r['wall_s']:6.1f}s  "
            f"{'; '.join(r['faults'])}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=20, help="how many runs (default 20)")
    ap.add_argument("--seed", type=int, default=1, help="the benchmark's seed (default 1)")
    ap.add_argument("--kill-fraction", type=float, default=0.3,
                    help="share of runs killed with SIGKILL and resumed (default 0.3)")
    ap.add_argument("--max-kills", type=int, default=2,
                    help="kills of one run at most, resumes included (default 2)")
    ap.add_argument("--jobs", type=int, default=1, help="runs side by side (default 1)")
    ap.add_argument("--index", type=int, action="append",
                    help="only run number INDEX of this seed (repeatable): a finding again")
    ap.add_argument("--sequence", action="append", choices=[q.name for q in SEQUENCES],
                    help="draw only from these sequences (repeatable; default: all)")
    ap.add_argument("--keep", type=Path, help="keep every run's files under this directory")
    args = ap.parse_args(argv)
    if args.runs < 1 or args.jobs < 1 or not 0 <= args.kill_fraction <= 1 \
            or args.max_kills < 1 or not 0 <= args.seed < 40_000:
        ap.error("--runs, --jobs and --max-kills must be ≥ 1, --kill-fraction within 0…1, "
                 "--seed within 0…39999")
    indices = args.index or list(range(args.runs))
    pool = [q for q in SEQUENCES if q.name in args.sequence] if args.sequence else None
    plans = [plan_run(i, args.seed, args.kill_fraction, args.max_kills, pool)
             for i in indices]
    wall = time.perf_counter()
    with contextlib.ExitStack() as stack:
        if args.keep:
            args.keep.mkdir(parents=True, exist_ok=True)
            workdir = args.keep
        else:
            workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="chaos-")))
        print(f"{'run':>4} {'seed':>8} {'sequence':<18} {'kill':<6} {'status':<10} "
              f"{'safe?':<8} {'resumed':<22} dup/order gaps lost+told  wall  faults", flush=True)
        lock = threading.Lock()
        rows = []

        def one(plan: Plan) -> dict:
            row = chaos_run(plan, workdir)
            with lock:
                print(row_text(row), flush=True)
                rows.append(row)
            return row

        with ThreadPoolExecutor(max_workers=args.jobs) as pool:
            list(pool.map(one, plans))
    wall = time.perf_counter() - wall
    rows.sort(key=lambda r: r["index"])
    figures = summary(rows, args, wall)
    print(totals_text(figures))
    print(json.dumps(figures))
    return 0 if figures["runs"] == figures["ended_safe"] and not figures["readings_lost"] \
        and not figures["readings_duplicated"] and not figures["resumed_otherwise"] else 1


def summary(rows: list[dict], args, wall: float) -> dict:
    killed = [r for r in rows if r["kills"]]
    findings = [{k: r[k] for k in ("index", "seed", "sequence", "fault_entries", "kills",
                                   "codes", "status", "message", "safe", "why_unsafe",
                                   "duplicates", "identical_duplicates", "disorder",
                                   "twin_list", "gap_list", "told_gap_list", "stragglers",
                                   "notes", "stderr_tail")}
                for r in rows if not r["safe"] or r["gaps"] or r["duplicates"] or r["disorder"]
                or r["stragglers"] or r["resumed"] == "no"]
    figures = {
        "bench": "chaos", "runs": len(rows), "seed": args.seed,
        "sequences_drawn_from": args.sequence or [q.name for q in SEQUENCES],
        "kill_fraction": args.kill_fraction,
        "ended_safe": sum(r["safe"] for r in rows),
        "killed": len(killed), "kills": sum(r["kills"] for r in rows),
        "resumed_to_completion": sum(r["resumed"] == "completed" for r in killed),
        "resumed_to_interlock_abort": sum(r["resumed"] == "interlock abort" for r in killed),
        "resumed_as_twin": sum(r["resumed"].startswith("as twin") for r in killed),
        "resumed_otherwise": sum(r["resumed"] == "no" for r in killed),
        "readings_checked": sum(r["readings"] for r in rows),
        "readings_lost": sum(r["gaps"] for r in rows),
        "readings_not_taken_told": sum(r["told_gaps"] for r in rows),
        "readings_duplicated": sum(r["duplicates"] + r["disorder"] for r in rows),
        "identical_duplicates": sum(r["identical_duplicates"] for r in rows),
        "stragglers": sum(r["stragglers"] for r in rows),
        "statuses": dict(Counter(r["status"] for r in rows)),
        "sequences": dict(Counter(r["sequence"] for r in rows)),
        "wall_s": round(wall, 1), "findings": findings,
    }
    return figures


def totals_text(f: dict) -> str:
    return (f"\n{f['runs']} runs in {f['wall_s']} s: {f['ended_safe']} ended safe; "
            f"{f['killed']} killed ({f['kills']} kills), {f['resumed_to_completion']} resumed "
            f"to completion, {f['resumed_to_interlock_abort']} to an interlock's abort, "
            f"{f['resumed_as_twin']} as their never-killed twin ended (not resumable), "
            f"{f['resumed_otherwise']} otherwise; {f['readings_checked']} readings checked, "
            f"{f['readings_lost']} gaps ({f['readings_not_taken_told']} more where an "
            f"instrument's alarm told of it), {f['readings_duplicated']} duplicated or out of "
            f"order ({f['identical_duplicates']} identical twins); statuses {f['statuses']}")


if __name__ == "__main__":
    sys.exit(main())
