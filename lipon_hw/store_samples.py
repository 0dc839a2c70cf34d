"""Samples and their film stacks in the store, and calibrated tooling factors.

A mixin of `store.Store`, kept in a module of its own for size only: a layer is written
through the store's buffered writes, in order with the run's readings and checkpoints.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping

from lipon_hw.errors import InputError
from lipon_hw.store_schema import Layer, Sample


class SampleRecords:
    # --- calibrated tooling factors (override the station's, newest wins) ------------
    def set_tooling(self, instrument: str, film: str, tooling_pct: float, run_id: int) -> None:
        self._db.execute("INSERT INTO tooling (instrument, film, tooling_pct, run_id, set_at)"
                         " VALUES (?,?,?,?,?)",
                         (instrument, film, tooling_pct, run_id, time.time()))

    def tooling(self, instrument: str, film: str) -> float | None:
        row = self._db.execute("SELECT tooling_pct FROM tooling WHERE instrument=? AND film=?"
                               " ORDER BY rowid DESC LIMIT 1", (instrument, film)).fetchone()
        return None if row is None else row[0]

    # --- samples and their film stacks --------------------------------------------
    def ensure_sample(self, sample_id: str, substrate: str = "") -> None:
        row = (sample_id, substrate, time.time())
        self._write_soon(lambda db: db.execute(
            "INSERT INTO samples (id, substrate, created_at) VALUES (?,?,?)"
            " ON CONFLICT DO NOTHING", row))

    def add_layer(self, sample_id: str, run_id: int, material: str, thickness_nm: float,
                  rate_A_s: float | None, tool: str, t_s: float,
                  properties: Mapping | None = None) -> None:
        """A layer on top of the sample's stack; a layer of the same run and step that was
        recorded partial (the run stopped while it grew, then resumed) is replaced."""
        props = dict(properties or {})
        text = json.dumps(props)

        def write(db) -> None:
            db.serialize(f"layers of sample {sample_id}")
            partial = self._partial_layer(db, sample_id, run_id, props.get("step"))
            if partial is not None:
                db.execute("UPDATE layers SET material=?, thickness_nm=?, rate_A_s=?, tool=?,"
                           " t_s=?, properties=? WHERE sample_id=? AND seq=?",
                           (material, thickness_nm, rate_A_s, tool, t_s, text, sample_id,
                            partial))
                return
            seq = db.execute("SELECT COALESCE(MAX(seq), 0) + 1 FROM layers WHERE sample_id=?",
                             (sample_id,)).fetchone()[0]
            db.execute("INSERT INTO layers (sample_id, seq, run_id, material, thickness_nm,"
                       " rate_A_s, tool, t_s, properties) VALUES (?,?,?,?,?,?,?,?,?)",
                       (sample_id, seq, run_id, material, thickness_nm, rate_A_s, tool, t_s,
                        text))

        self._write_soon(write)

    def _partial_layer(self, db, sample_id: str, run_id: int, step) -> int | None:
        """The seq of the run's layer of `step` on the sample recorded partial, if any."""
        if step is None:
            return None
        for seq, text in db.execute("SELECT seq, properties FROM layers WHERE sample_id=? AND"
                                    " run_id=? ORDER BY seq", (sample_id, run_id)).fetchall():
            props = self._json(text)
            if isinstance(props, dict) and props.get("step") == step and \
                    props.get("partial") == 1:
                return seq
        return None

    def film_stack(self, sample_id: str) -> list[Layer]:
        """The sample's layers, bottom first (none for a sample not in the store)."""
        self.try_flush()
        rows = self._db.execute(
            "SELECT seq, run_id, material, thickness_nm, rate_A_s, tool, properties FROM layers"
            " WHERE sample_id=? ORDER BY seq", (sample_id,)).fetchall()
        return [Layer(*r[:-1], properties=self._json(r[-1])) for r in rows]

    def samples(self, limit: int, offset: int = 0, containing: str = ""
                ) -> tuple[int, list[tuple[str, str, float, int, float]]]:
        """(how many match, a page of them newest first): (id, substrate, created_at,
        layers, total thickness nm), the ids containing `containing` (any case)."""
        self.try_flush()
        like = "%" + containing.replace("\\", "\\\\").replace("%", "\\%").replace(
            "_", "\\_") + "%"
        like_sql = self._db.like_any_case  # any case: SQLite's LIKE, PostgreSQL's ILIKE
        total = self._db.execute(f"SELECT COUNT(*) FROM samples WHERE id {like_sql} ? ESCAPE"
                                 " '\\'", (like,)).fetchone()[0]
        rows = self._db.execute(
            "SELECT s.id, s.substrate, s.created_at, COUNT(l.seq), COALESCE(SUM(l.thickness_nm),"
            " 0) FROM samples s LEFT JOIN layers l ON l.sample_id = s.id"
            f" WHERE s.id {like_sql} ? ESCAPE '\\' GROUP BY s.id ORDER BY s.created_at DESC, s.id"
            " LIMIT ? OFFSET ?", (like, limit, offset)).fetchall()
        return total, rows

    def sample(self, sample_id: str) -> Sample:
        row = self._db.execute("SELECT id, substrate, created_at FROM samples WHERE id=?",
                               (sample_id,)).fetchone()
        if row is None:
            raise InputError(f"sample {sample_id!r} is not in {self.where}")
        return Sample(*row, layers=tuple(self.film_stack(sample_id)))

    # --- the simulated lab's ground truth, apart from measurements (read by sim/ only) ---
    def put_sim_truth(self, kind: str, run_id: int, sample_id: str, position: int,
                      truth: Mapping) -> None:
        """The simulated truth of one film ('film': position = the recipe step that laid it
        down) or cell ('cell': position = its channel); a second one of the same key wins."""
        row = (kind, run_id, sample_id, position, json.dumps(dict(truth)))
        self._write_soon(lambda db: db.execute(
            "INSERT INTO sim_truth (kind, run_id, sample_id, position, truth) VALUES (?,?,?,?,?)"
            " ON CONFLICT (kind, run_id, sample_id, position) DO UPDATE SET"
            " truth=excluded.truth", row))

    def sim_truths(self, kind: str, sample_id: str) -> dict[tuple[int, int], dict]:
        """(run_id, position) → truth of the sample's `kind` records (none in a store of a
        layout before 3, read as it is)."""
        if self.layout < 3:
            return {}
        self.try_flush()
        rows = self._db.execute("SELECT run_id, position, truth FROM sim_truth WHERE kind=? AND"
                                " sample_id=?", (kind, sample_id)).fetchall()
        return {(r[0], r[1]): self._json(r[2]) for r in rows}
