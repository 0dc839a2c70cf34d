"""A throwaway PostgreSQL server for the tests: `initdb` in a temporary directory, started
on a Unix socket of its own (no TCP port), trust authentication, torn down at the end.

Used by `.ci/run` (`python tests/pgcluster.py start DIR` prints the URL to export as
LIPON_HW_TEST_PG; `stop DIR` ends it) and by the tests' fixture when no URL is given,
which also starts `watch DIR`: the cluster is stopped when the test process ends, even
killed.
PostgreSQL refuses to run as root: run as root (CI), the server runs as the `postgres`
user that Debian's package creates, and the tests connect through the socket as that
role. Never a mock: a real server, its data in a temporary directory.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
import sys
from pathlib import Path

#: the database the tests' stores live in (each test in a schema of its own)
DATABASE = "lipon_test"


def bin_dir() -> Path | None:
    """Where initdb and pg_ctl are: on PATH, or Debian's /usr/lib/postgresql/N/bin."""
    found = shutil.which("initdb")
    if found:
        return Path(found).resolve().parent
    versions = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"),
                      key=lambda p: int(Path(p).parent.parent.name))
    return Path(versions[-1]).parent if versions else None


def _as_server_user(cmd: list[str]) -> list[str]:
    if os.geteuid() != 0:
        return cmd
    return ["runuser", "-u", "postgres", "--", *cmd]


def _server_user() -> str:
    return "postgres" if os.geteuid() == 0 else pwd.getpwuid(os.geteuid()).pw_name


def start(root: Path) -> str:
    """A new cluster in `root` (made, emptied first), started; its URL."""
    bins = bin_dir()
    if bins is None:
        raise RuntimeError("no PostgreSQL server here (initdb not found): install Debian's "
                           "postgresql package")
    root = Path(root)
    shutil.rmtree(root, ignore_errors=True)
    (root / "socket").mkdir(parents=True)
    os.chmod(root, 0o755)
    if os.geteuid() == 0:
        entry = pwd.getpwnam("postgres")
        for path in (root, root / "socket"):
            os.chown(path, entry.pw_uid, entry.pw_gid)
    data = root / "data"
    user = _server_user()
    run = {"check": True, "stdout": subprocess.DEVNULL, "stderr": subprocess.PIPE,
           "cwd": root}
    _checked(_as_server_user([str(bins / "initdb"), "-D", str(data), "-A", "trust",
                                    "-U", user, "--no-sync", "-E", "UTF8",
                                    "--locale=C"]), **run)
    # nothing the tests need survives a crash of this server: no fsync, small and quick
    options = (f"-k {root / 'socket'} -c listen_addresses='' -c fsync=off "
               "-c full_page_writes=off -c synchronous_commit=on -c max_connections=200 "
               "-c shared_buffers=64MB")
    _checked(_as_server_user([str(bins / "pg_ctl"), "-D", str(data), "-l",
                                    str(root / "server.log"), "-w", "-t", "60", "-o", options,
                                    "start"]), **run)
    base = f"postgresql:///postgres?host={root / 'socket'}&user={user}"
    _checked([str(bins / "psql"), "-q", "-d", base, "-c",
                    f"CREATE DATABASE {DATABASE}"], **run)
    return f"postgresql:///{DATABASE}?host={root / 'socket'}&user={user}"


def _checked(cmd: list[str], **run) -> None:
    """Run a server command; its failure raises with what it said."""
    try:
        subprocess.run(cmd, **run)
    except subprocess.CalledProcessError as exc:
        said = (exc.stderr or b"").decode(errors="replace").strip()
        raise RuntimeError(f"{Path(cmd[0]).name if cmd[0] != 'runuser' else cmd[4]} failed: "
                           f"{said}") from None


def sql(url: str, statement: str) -> None:
    """One statement on the server (psycopg: the tests' own client, not the store's)."""
    import psycopg

    with psycopg.connect(url, autocommit=True) as con:
        con.execute(statement)


def in_schema(url: str, schema: str) -> str:
    """The address with its search_path set to `schema` (where a store's tables go)."""
    joiner = "&" if "?" in url else "?"
    return f"{url}{joiner}options=-csearch_path%3D{schema}"


def watch(root: Path) -> subprocess.Popen:
    """A process that stops the cluster in `root` once this one has ended, however it
    ended: it waits for the end of its standard input, which the kernel gives it when the
    last holder of the pipe's other end exits (a test process killed with SIGKILL too).
    Its own session, so a Ctrl-C at the terminal leaves it to do so. Close its `stdin`
    (after `stop`) when done."""
    return subprocess.Popen([sys.executable, str(Path(__file__).resolve()), "watch",
                             str(root)], stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)


def stop(root: Path) -> None:
    bins = bin_dir()
    data = Path(root) / "data"
    if bins is not None and data.exists():
        subprocess.run(_as_server_user([str(bins / "pg_ctl"), "-D", str(data), "-m",
                                        "immediate", "-w", "stop"]),
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
    shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    if len(sys.argv) != 3 or sys.argv[1] not in ("start", "stop", "watch"):
        sys.exit("usage: pgcluster.py start|stop|watch DIR")
    if sys.argv[1] == "start":
        try:
            print(start(Path(sys.argv[2])))
        except RuntimeError as exc:
            sys.exit(f"the test PostgreSQL server did not start: {exc}")
    else:
        if sys.argv[1] == "watch":
            sys.stdin.buffer.read()  # until whoever started it has ended
        stop(Path(sys.argv[2]))
