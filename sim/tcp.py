"""Serve emulators on loopback TCP sockets, as a terminal server would serve a serial port.

Each emulator gets its own port; each connection is a fresh serial session
(half-received frames are dropped). An idle connection still polls its emulator, so
an instrument that streams (a potentiostat's samples) pushes them as they fall due.
One lock guards the World, because the emulators of one lab share its physical state.
"""

from __future__ import annotations

import socket
import socketserver
import threading

#: how often an idle connection asks its emulator for output it produced on its own
POLL_S = 0.05


class _Handler(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        server: EmulatorServer = self.server  # type: ignore[assignment]
        sock: socket.socket = self.request
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        with server.world_lock:
            server.emulator.reset_connection()
        sock.settimeout(POLL_S)
        while not server.stopping.is_set():
            try:
                data = sock.recv(4096)
            except TimeoutError:
                data = b""  # nothing sent: a streaming instrument may still have output due
            except OSError:
                return
            else:
                if not data:
                    return
            with server.world_lock:
                reply = server.emulator.handle(data)
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
        self.world_lock = world_lock
        self.stopping = threading.Event()
        super().__init__((host, port), _Handler)

    @property
    def port(self) -> int:
        return self.server_address[1]

    def start(self) -> EmulatorServer:
        threading.Thread(target=self.serve_forever, kwargs={"poll_interval": 0.1},
                         name=f"serve-{self.emulator.name}", daemon=True).start()
        return self

    def stop(self) -> None:
        self.stopping.set()
        self.shutdown()
        self.server_close()


def serve(emulator, host: str = "127.0.0.1", port: int = 0,
          world_lock: threading.Lock | None = None) -> EmulatorServer:
    """Start serving `emulator` in a background thread; port 0 picks a free port."""
    return EmulatorServer(emulator, host, port, world_lock or threading.Lock()).start()
