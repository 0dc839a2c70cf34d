"""Who drives a run, as fencing tokens every write of the store checks: the run's driver
epoch (`take_over`, `follow`) and, within one engine's epoch, a cluster shard's attempt
(`take_shard`).

A mixin of `store.Store`, kept in a module of its own for size and for its one job: a
shared store's claims are advisory locks a server restart or a cut network drops, and
Dask may run a shard's task again while its first attempt lives; whatever an earlier
driver or attempt still writes lands whole before the take-over or not at all
(`_check_fences`, called last in every write transaction).
"""

from __future__ import annotations

from lipon_hw.errors import InputError, RunTakenOver, ShardTakenOver


class Fences:
    """The store's fencing tokens (its `_fences` and `_shard_fences`, set up by `Store`)."""

    def take_over(self, run_id: int, new: bool = False) -> int:
        """This store's writes of `run_id` are its driver's from now on: the run's driver
        epoch moves on by one (`new`: a run this store just made is at its first, 1), and
        every later write of this store checks it in its own transaction. An engine calls
        it once it holds the run's claim and before it reads where to go on from, so
        whatever an engine before it still writes (one that lost its claim without knowing
        yet: a shared store's server dropped the claim's session) is either stored before
        that point or refused (RunTakenOver), never mixed with this engine's."""
        if new:
            epoch = 1
        else:
            self.flush()
            with self._transaction():
                self._db.execute("UPDATE runs SET driver_epoch = driver_epoch + 1 WHERE id=?",
                                 (run_id,))
                row = self._db.execute("SELECT driver_epoch FROM runs WHERE id=?",
                                       (run_id,)).fetchone()
            if row is None:
                raise InputError(f"run {run_id} is not in {self.where}")
            epoch = row[0]
        self._fences[run_id] = epoch
        return epoch

    def follow(self, run_id: int, epoch: int) -> None:
        """Write `run_id` under its driver's `epoch` (a worker process or a cluster shard
        of that driver): refused once another engine has taken the run over."""
        self._fences[run_id] = epoch

    def epoch(self, run_id: int) -> int | None:
        """The driver epoch this store writes `run_id` under (None: it is not fenced)."""
        return self._fences.get(run_id)

    def take_shard(self, run_id: int, shard: str) -> int:
        """This store writes cluster shard `shard` of `run_id` (the campaign's name for
        it, the same for every attempt of its task) as that shard's latest attempt: the
        shard's attempt number moves on by one (1 for its first), and every later write of
        this store checks it as `take_over`'s epoch is checked. A shard calls it once it
        holds its claim and before it reads where its channels go on from, so an earlier
        attempt still alive (Dask ran the task again: the first worker was cut off from
        the scheduler, not from the store) has its writes either stored before that point
        or refused (ShardTakenOver), never mixed with this attempt's."""
        self.flush()
        with self._transaction():
            self._db.execute("INSERT INTO shard_attempts (run_id, shard, attempt) VALUES"
                             " (?,?,1) ON CONFLICT (run_id, shard) DO UPDATE SET"
                             " attempt = shard_attempts.attempt + 1", (run_id, shard))
            attempt = self._db.execute("SELECT attempt FROM shard_attempts WHERE run_id=?"
                                       " AND shard=?", (run_id, shard)).fetchone()[0]
        self._shard_fences[(run_id, shard)] = attempt
        return attempt

    def _check_fences(self) -> None:
        """Inside a write transaction: every fenced run is still at this store's epoch and
        every fenced shard at its attempt, their rows held to the commit (PostgreSQL: FOR
        SHARE; a take-over waits for it), else RunTakenOver (ShardTakenOver) and the
        transaction rolls back. Nothing to do for a store that writes no run as its driver
        (a reader, a tool's own queue)."""
        for run_id, epoch in self._fences.items():
            row = self._db.execute(f"SELECT driver_epoch FROM runs WHERE id=?"
                                   f"{self._db.row_share}", (run_id,)).fetchone()
            if row is None or row[0] != epoch:
                raise RunTakenOver(
                    f"run {run_id} was taken over by another engine in the store "
                    f"{self.where} (its driver epoch is {row[0] if row else 'gone'}, this "
                    f"engine's {epoch}), so this engine stores nothing more of it")
        for (run_id, shard), attempt in self._shard_fences.items():
            row = self._db.execute(f"SELECT attempt FROM shard_attempts WHERE run_id=? AND"
                                   f" shard=?{self._db.row_share}", (run_id, shard)).fetchone()
            if row is None or row[0] != attempt:
                raise ShardTakenOver(
                    f"shard {shard} of run {run_id} was taken up again by another attempt "
                    f"in the store {self.where} (attempt {row[0] if row else 'gone'}, this "
                    f"one {attempt}), so this attempt stores nothing more of it")
