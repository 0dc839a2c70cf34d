"""`lipon-hw serve`: bind, announce the server to the data directory's engines, run uvicorn.

The socket is bound before anything is announced (port 0 takes a free one), then
`<data>/serve.json` is written, mode 0600: `{"url": "http://HOST:PORT", "engine_token":
...}`, a token made for this serving alone, which an engine of the data directory uses to
post its run's events (role `engine`). The file is removed on every exit that runs
Python's cleanup (Ctrl-C, SIGTERM); one left by a killed server is replaced by the next.
One server per data directory: it holds the directory's `serve` lock while it serves
(`engine.ownership`), so a second is refused with a sentence.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import secrets
import signal
import socket
from pathlib import Path

from lipon_hw.engine.ownership import Ownership, Resource
from lipon_hw.errors import InputError
from lipon_hw.web.security import ENGINE, User, configure, is_loopback

#: `localhost` is 127.0.0.1 and, where the machine has IPv6, ::1, on one port
DEFAULT_BIND = "localhost:8765"
SERVE_FILE = "serve.json"
SERVING = Resource("serve", "{holder} serves this data directory already; stop it first")


def parse_bind(text: str) -> tuple[str, int]:
    """`HOST:PORT` (an IPv6 host in brackets: `[::1]:8765`) → (host, port)."""
    text = text.strip()
    if text.startswith("["):
        host, sep, port = text[1:].partition("]:")
    else:
        host, sep, port = text.rpartition(":")
        sep = "" if ":" in host else sep
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        raise InputError(f"--bind must be HOST:PORT (e.g. {DEFAULT_BIND} or [::1]:8765), "
                         f"not {text!r}")
    return host, int(port)


def url_for(host: str, port: int) -> str:
    """Where an engine on this machine reaches a server bound to `host`."""
    host = {"0.0.0.0": "127.0.0.1", "::": "::1", "localhost": "127.0.0.1"}.get(host, host)
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def bind(host: str, port: int) -> socket.socket:
    try:
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
        sock = socket.socket(family, socket.SOCK_STREAM)
    except (OSError, UnicodeError) as exc:
        raise InputError(f"cannot bind {host}:{port} ({_why(exc)})") from None
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(128)
    except OSError as exc:
        sock.close()
        raise InputError(f"cannot bind {host}:{port} ({_why(exc)})") from None
    sock.set_inheritable(True)
    return sock


def bind_all(host: str, port: int) -> list[socket.socket]:
    """The listening sockets: `localhost` binds both loopbacks (::1 only where it can)."""
    if host != "localhost":
        return [bind(host, port)]
    first = bind("127.0.0.1", port)
    if socket.has_ipv6:
        with contextlib.suppress(InputError):  # a machine without IPv6 loopback
            return [first, bind("::1", first.getsockname()[1])]
    return [first]


def announce(data: Path, url: str, engine_token: str) -> Path:
    """`<data>/serve.json`, mode 0600, written whole or not at all."""
    path = data / SERVE_FILE
    part = data / f".{SERVE_FILE}.{os.getpid()}"
    fd = os.open(part, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        json.dump({"url": url, "engine_token": engine_token}, fh)
    os.chmod(part, 0o600)
    os.replace(part, path)
    return path


def withdraw(path: Path, engine_token: str) -> None:
    """Remove the announcement if it is still this server's."""
    with contextlib.suppress(OSError, ValueError):
        if json.loads(path.read_text(encoding="utf-8")).get("engine_token") == engine_token:
            path.unlink()


def serve(bind_text: str, token_file: str | None, data_dir: str,
          echo=print, log_level: str = "info", station_path: str | None = None) -> int:
    """Serve `data_dir` until SIGINT/SIGTERM, its queue's runs on the station at
    `station_path` (default: the built-in lab); returns the exit code."""
    import uvicorn

    from lipon_hw.station import load_station
    from lipon_hw.web.app import create_app
    from lipon_hw.web.queue_runner import QueueRunner

    host, port = parse_bind(bind_text)
    security = configure(host, token_file)
    load_station(station_path)  # a bad station file is refused before anything is bound
    station_path = None if station_path is None else str(Path(station_path).resolve())
    data = Path(data_dir)
    if data.exists() and not data.is_dir():
        raise InputError(f"{data} is not a directory")
    data.mkdir(parents=True, exist_ok=True)
    with Ownership(data, "lipon-hw serve") as owned:
        owned.take([SERVING])
        sockets = bind_all(host, port)
        engine_token = secrets.token_urlsafe(32)
        security.add(engine_token, User("engine", ENGINE))
        url = url_for(host, sockets[0].getsockname()[1])
        announced = announce(data, url, engine_token)
        runner = None
        try:
            _log_actions()
            who = (f"local requests act as {security.local_operator.name} (operator); "
                   "no tokens" if security.local_operator else "tokens required")
            port = sockets[0].getsockname()[1]
            bound = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
            where = url if is_loopback(host) else f"{bound}, from this machine {url}"
            echo(f"serving {data} on {where} ({who}); Ctrl-C stops")
            # no per-message deflate: the server would compress every small event once per
            # watcher (50 watchers: 10.9 % of a deposition's throughput with it, 2 % without)
            app = create_app(data, security, station_path)
            app.state.queue_runner = runner = QueueRunner(data, station_path).start()
            config = uvicorn.Config(app, log_level=log_level,
                                    lifespan="off", ws_per_message_deflate=False)
            with _stop_on_sigterm():  # uvicorn stops, then raises again what stopped it
                uvicorn.Server(config).run(sockets=sockets)
        except KeyboardInterrupt:
            pass  # the server was asked to stop, and did
        finally:
            if runner is not None:  # its runs go on; the next server watches them
                runner.stop()
            withdraw(announced, engine_token)
            for sock in sockets:
                sock.close()
    return 0


class _HideTokens(logging.Filter):
    """uvicorn logs a WebSocket's path with its query, where a browser's token goes
    (`access_token=`): the log shows `access_token=…` instead."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple) and any(
                isinstance(a, str) and "access_token=" in a for a in record.args):
            record.args = tuple(_TOKEN_IN_QUERY.sub(r"\1…", a) if isinstance(a, str) else a
                                for a in record.args)
        return True


_TOKEN_IN_QUERY = re.compile(r"(access_token=)[^&\s]*")


def _log_actions() -> None:
    """Operators' actions (`runs`: who asked what of which run) beside uvicorn's log."""
    for name in ("uvicorn.error", "uvicorn.access"):
        logging.getLogger(name).addFilter(_HideTokens())
    log = logging.getLogger("lipon_hw.web")
    if not log.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(levelname)s:     %(message)s"))
        log.addHandler(handler)
        log.setLevel(logging.INFO)


@contextlib.contextmanager
def _stop_on_sigterm():
    """SIGTERM ends the serving as Ctrl-C does (the announcement withdrawn on the way)."""
    def stop(_signum, _frame):
        raise KeyboardInterrupt

    old = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)


def _why(exc: BaseException) -> str:
    return getattr(exc, "strerror", None) or str(exc)
