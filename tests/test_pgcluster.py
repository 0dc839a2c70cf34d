"""The tests' own PostgreSQL server (`tests/pgcluster.py`): a test process that is killed
does not leave its throwaway server running (its watcher stops it and removes its
directory)."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pgcluster
import pytest

TESTS = Path(__file__).resolve().parent


def _alive(pid: int) -> bool:
    """The process runs (a zombie that no one has reaped yet has ended: both the server
    and the watcher outlive the process that started them, so reaping is init's)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat[stat.rindex(")") + 2] != "Z"


def test_a_killed_test_process_leaves_no_server_behind():
    if pgcluster.bin_dir() is None:
        if os.environ.get("CI"):
            pytest.fail("no PostgreSQL server here (initdb not found)")
        pytest.skip("no PostgreSQL server here (initdb not found)")
    root = Path(tempfile.mkdtemp(prefix="lipon-hw-pg-"))
    # a test process as the fixture makes one: the server started, then its watcher
    child = subprocess.Popen([sys.executable, "-c", (
        "import sys, time\n"
        f"sys.path.insert(0, {str(TESTS)!r})\n"
        "from pathlib import Path\n"
        "import pgcluster\n"
        "root = Path(sys.argv[1])\n"
        "print(pgcluster.start(root), flush=True)\n"
        "watcher = pgcluster.watch(root)\n"
        "print(watcher.pid, flush=True)\n"
        "time.sleep(600)\n"), str(root)], stdout=subprocess.PIPE, text=True)
    try:
        url = child.stdout.readline().strip()
        watcher = int(child.stdout.readline())
        assert url.startswith("postgresql://"), url
        server = int((root / "data" / "postmaster.pid").read_text().split()[0])
        pgcluster.sql(url, "SELECT 1")  # it answers
        child.kill()
        child.wait()
        deadline = time.monotonic() + 60
        while _alive(server) or (root / "data").exists():
            assert time.monotonic() < deadline, "the server outlived its test process"
            time.sleep(0.1)
        while _alive(watcher):  # it ends once its work is done
            assert time.monotonic() < deadline, "the watcher did not end"
            time.sleep(0.1)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        pgcluster.stop(root)
