"""A TCP proxy on loopback that can cut or freeze the connections going through it."""

from __future__ import annotations

import socket
import threading


class FaultProxy:
    """Forwards 127.0.0.1:<port> to 127.0.0.1:<target_port>.

    cut(): closes every open connection and refuses new ones (a network partition, a reset).
    freeze(): keeps connections open but forwards nothing (a frozen peer, a black hole).
    restore(): back to normal.
    """

    def __init__(self, target_port: int):
        self.target_port = target_port
        self.mode = "pass"
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._pairs: list[tuple[socket.socket, socket.socket]] = []
        self._lock = threading.Lock()
        self._closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            if self.mode != "pass":
                client.close()
                continue
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target_port), timeout=5)
                upstream.settimeout(None)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._pairs.append((client, upstream))
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(source, sink), daemon=True).start()

    def _pipe(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            while True:
                data = source.recv(65536)
                if not data:
                    break
                while self.mode == "freeze":
                    threading.Event().wait(0.05)
                if self.mode == "cut":
                    break
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for s in (source, sink):
                try:
                    s.close()
                except OSError:
                    pass

    def cut(self) -> None:
        self.mode = "cut"
        with self._lock:
            pairs, self._pairs = self._pairs, []
        for pair in pairs:
            for s in pair:
                try:
                    s.shutdown(socket.SHUT_RDWR)
                    s.close()
                except OSError:
                    pass

    def freeze(self) -> None:
        self.mode = "freeze"

    def restore(self) -> None:
        self.mode = "pass"

    def close(self) -> None:
        self._closed = True
        self.cut()
        self._listener.close()
