"""Serve emulators on loopback TCP sockets, as a terminal server would serve a serial port.

Each emulator gets its own port; each connection is a fresh serial session with its
own framing state (`Emulator.open_session`), so a client that left half a frame or
half a script behind leaves nothing for the next, and two clients of one port never
mix their bytes. What the instrument itself holds (an output on, a running
measurement) persists across connections, as on the real instrument.

An idle connection still polls its emulator, so an instrument that streams (a
potentiostat's samples) pushes them as they fall due; a poll with nothing received
is a silence on the line, which ends a partial frame where the protocol says so.

Locks: one per port serialises its connections (the emulator's sessions are
handled one at a time); the world lock guards what emulators share, and an emulator
takes it only around the bounded work of one frame on that state, so no port's
input, however long or malformed, holds up another. A connection whose handling
raises is logged in one line and closed; the port and its other connections go on.
A port serves at most MAX_CONNECTIONS at once and closes any more as they come.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import socketserver
import threading

#: how often an idle connection asks its emulator for output it produced on its own
POLL_S = 0.05
#: bytes taken from the socket at once: one request's work is bounded by this
RECV_BYTES = 4096
#: connections one port serves at once; more are closed as they come (assumption: a
#: terminal server takes a handful of hosts per serial port), so a client opening
#: connections in a loop costs a bounded number of threads
MAX_CONNECTIONS = 8

log = logging.getLogger(__name__)


class _Handler(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        server: EmulatorServer = self.server  # type: ignore[assignment]
        try:
            _serve_connection(server, self.request)
        except Exception as exc:  # this connection only: the port serves on
            log.warning("sim serve: %s: closed the connection from %s:%s after %s: %s",
                        server.emulator.name, *self.client_address[:2],
                        type(exc).__name__, exc)

    def finish(self) -> None:
        self.server.connections.release()  # type: ignore[attr-defined]


def _serve_connection(server: EmulatorServer, sock: socket.socket) -> None:
    """One connection, one session: opened on connect, closed however it ends."""
    emulator = server.emulator
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    with server.port_lock:
        session = emulator.open_session()
    with server.open_lock:
        server.open_sockets.add(sock)
    try:
        _exchange(server, sock, session)
    finally:
        with server.open_lock:
            server.open_sockets.discard(sock)
        with server.port_lock:
            emulator.close_session(session)


def _exchange(server: EmulatorServer, sock: socket.socket, session) -> None:
    emulator = server.emulator
    sock.settimeout(POLL_S)
    while not server.stopping.is_set():
        try:
            data = sock.recv(RECV_BYTES)
        except TimeoutError:
            data = None  # a silence: a streaming instrument may still have output due
        except OSError:
            return
        else:
            if not data:
                return
        if server.stopping.is_set():  # bytes that came as the server stopped: unanswered
            return
        with server.port_lock:
            if data is None:
                emulator.line_silent(session)
            reply = emulator.handle(data or b"", session)
        if reply:
            try:
                sock.sendall(reply)
            except OSError:
                return


class EmulatorServer(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, emulator, host: str, port: int, world_lock: threading.Lock):
        self.emulator = emulator
        emulator.world_lock = world_lock
        self.port_lock = threading.Lock()
        self.connections = threading.BoundedSemaphore(MAX_CONNECTIONS)
        self.stopping = threading.Event()
        self.open_sockets: set[socket.socket] = set()  # the connections being served
        self.open_lock = threading.Lock()
        super().__init__((host, port), _Handler)

    def verify_request(self, request, client_address) -> bool:
        if self.connections.acquire(blocking=False):
            return True
        log.warning("sim serve: %s: refused a connection from %s:%s; %d are open already",
                    self.emulator.name, *client_address[:2], MAX_CONNECTIONS)
        return False

    def process_request(self, request, client_address) -> None:
        try:
            super().process_request(request, client_address)
        except BaseException:
            self.connections.release()  # no handler thread came to release it
            raise

    @property
    def port(self) -> int:
        return self.server_address[1]

    def start(self) -> EmulatorServer:
        threading.Thread(target=self.serve_forever, kwargs={"poll_interval": 0.1},
                         name=f"serve-{self.emulator.name}", daemon=True).start()
        return self

    def stop(self) -> None:
        """Stopped when this returns: no new connection, and every open one cut (a client
        sees its peer gone at once, not after a handler thread's next poll)."""
        self.stopping.set()
        self.shutdown()
        self.server_close()
        with self.open_lock:
            for sock in self.open_sockets:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)


def serve(emulator, host: str = "127.0.0.1", port: int = 0,
          world_lock: threading.Lock | None = None) -> EmulatorServer:
    """Start serving `emulator` in a background thread; port 0 picks a free port.

    `world_lock` is the lock of the state this emulator shares with others (the
    World of a lab); without one the emulator shares nothing and gets its own.
    """
    return EmulatorServer(emulator, host, port, world_lock or threading.Lock()).start()
