"""A run's own log file, `<data>/runs/<id>/run.log`, through Python `logging`.

Opened by the lifecycle when a run starts or resumes (a resume appends), closed when it
ends. It takes what the `lipon_hw` loggers say while the run is driven from this thread —
every module logs through `logging.getLogger(__name__)` — and whatever is logged with
`extra={"run_id": id}` from another thread (the notification hooks'). The lifecycle logs
the run's notes, steps, alarms, the safe state and how the run ended.

Nothing goes to the terminal from here: the console prints what the operator sees, once.
The `lipon_hw` logger gets a NullHandler, so a record logged outside a run is not printed
by logging's last-resort handler either; an application that configures logging itself
gets the records through the root logger as usual.
"""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path

ROOT = "lipon_hw"
LOG_NAME = "run.log"
FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"

logging.getLogger(ROOT).addHandler(logging.NullHandler())

_level_lock = threading.Lock()
_open_logs = 0
_saved_level = logging.NOTSET


def log_path(data_dir: str | Path, run_id: int) -> Path:
    return Path(data_dir) / "runs" / str(run_id) / LOG_NAME


class _ThisRun(logging.Filter):
    """Records of this run: logged with its `run_id`, or with none from its own thread."""

    def __init__(self, run_id: int):
        super().__init__()
        self.run_id, self.thread = run_id, threading.get_ident()

    def filter(self, record: logging.LogRecord) -> bool:
        run_id = getattr(record, "run_id", None)
        return run_id == self.run_id or (run_id is None and record.thread == self.thread)


class RunLog:
    """The open log file of one run; `close` is safe to call twice."""

    def __init__(self, data_dir: str | Path, run_id: int):
        self.path = log_path(data_dir, run_id)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.handler = logging.FileHandler(self.path, mode="a", encoding="utf-8")
        formatter = logging.Formatter(FORMAT, datefmt="%Y-%m-%dT%H:%M:%SZ")
        formatter.converter = time.gmtime
        self.handler.setFormatter(formatter)
        self.handler.setLevel(logging.INFO)
        self.handler.addFilter(_ThisRun(run_id))
        _info_while_open(+1)
        logging.getLogger(ROOT).addHandler(self.handler)

    def close(self) -> None:
        if self.handler is None:
            return
        handler, self.handler = self.handler, None
        logging.getLogger(ROOT).removeHandler(handler)
        handler.close()
        _info_while_open(-1)


def _info_while_open(change: int) -> None:
    """The `lipon_hw` loggers pass INFO while any run log is open (their level as it was
    once none is), unless they were set to pass more already."""
    global _open_logs, _saved_level
    logger = logging.getLogger(ROOT)
    with _level_lock:
        if change > 0 and _open_logs == 0:
            _saved_level = logger.level
            if logger.level == logging.NOTSET or logger.level > logging.INFO:
                logger.setLevel(logging.INFO)
        _open_logs += change
        if change < 0 and _open_logs == 0:
            logger.setLevel(_saved_level)
