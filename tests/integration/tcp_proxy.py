"""A TCP proxy for outage tests: a server's clients go through it, and the test takes the
server away from them and gives it back, data and all.

moto_server keeps its data in memory, so it cannot be killed and restarted the way
redis-server with an append-only file can. Between the client and the server, this
proxy plays the outage instead: ``down()`` closes the listening socket (new connections
are refused, as by a dead server: ECONNREFUSED) and resets every relayed connection
(pooled ones included, as a crashed server's are); ``up()`` listens again on the same
port, and the server behind it still has everything it had. Threads and sockets only.

    with TcpProxy(("127.0.0.1", server_port)) as proxy:
        client = make_client(proxy.url("http"))
        proxy.down()
        ...
        proxy.up()
"""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
from types import TracebackType


class TcpProxy:
    def __init__(self, target: tuple[str, int], port: int = 0):
        self.target = target
        self.port = port
        self.relayed = 0            # connections relayed so far
        self._listener: socket.socket | None = None
        self._pairs: set[tuple[socket.socket, socket.socket]] = set()
        self._ended: dict[tuple[socket.socket, socket.socket], int] = {}
        self._lock = threading.Lock()
        self.up()

    @property
    def serving(self) -> bool:
        return self._listener is not None

    def url(self, scheme: str, path: str = "") -> str:
        return f"{scheme}://127.0.0.1:{self.port}{path}"

    def up(self) -> None:
        """Listen (again, on the same port) and relay new connections to the target."""
        with self._lock:
            if self._listener is not None:
                return
            listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            listener.bind(("127.0.0.1", self.port))
            listener.listen(64)
            self.port = listener.getsockname()[1]
            self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), name=f"proxy-{self.port}", daemon=True).start()

    def down(self) -> None:
        """Refuse new connections and reset every open one: the server is gone."""
        with self._lock:
            listener, self._listener = self._listener, None
            pairs, self._pairs = set(self._pairs), set()
        if listener is not None:
            with contextlib.suppress(OSError):
                listener.shutdown(socket.SHUT_RDWR)
            listener.close()
        for pair in pairs:
            for sock in pair:
                _reset(sock)

    def close(self) -> None:
        self.down()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return              # down(): the listener was closed
            try:
                server = socket.create_connection(self.target, timeout=5)
                server.settimeout(None)
            except OSError:
                _reset(client)      # the target itself is not there
                continue
            with self._lock:
                if self._listener is not listener:   # went down meanwhile
                    _reset(client)
                    _reset(server)
                    return
                pair = (client, server)
                self._pairs.add(pair)
                self.relayed += 1
            for source, sink in ((client, server), (server, client)):
                threading.Thread(target=self._pump, args=(source, sink, pair), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket, pair: tuple[socket.socket, socket.socket]) -> None:
        try:
            while True:
                data = source.recv(65536)
                if not data:
                    break
                sink.sendall(data)
        except OSError:
            pass
        with contextlib.suppress(OSError):
            sink.shutdown(socket.SHUT_WR)   # pass the end of the stream on
        with self._lock:                    # the second pump to end closes the pair
            self._ended[pair] = self._ended.get(pair, 0) + 1
            if self._ended[pair] < 2:
                return
            del self._ended[pair]
            self._pairs.discard(pair)
        for sock in pair:
            with contextlib.suppress(OSError):
                sock.close()

    def __enter__(self) -> TcpProxy:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


def _reset(sock: socket.socket) -> None:
    """Close with an RST, as a dead peer's connection ends (not a polite FIN)."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    with contextlib.suppress(OSError):
        sock.close()
