"""A small fault-injecting TCP proxy on loopback, to cut and slow real connections.

    with FaultProxy(target_port) as proxy:
        proxy.cut_after(upstream_bytes=200_000, times=2)   # drop mid-APPEND, twice
        proxy.cut_after(downstream_bytes=300_000, times=1) # drop mid-FETCH
        proxy.delay = 0.02                                  # every chunk 20 ms late

Only 127.0.0.1 is ever used; threads stop when the proxy closes.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time


class FaultProxy:
    def __init__(self, target_port: int, target_host: str = "127.0.0.1"):
        self.target = (target_host, target_port)
        self.listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(64)
        self.port = self.listener.getsockname()[1]
        self.delay = 0.0
        self.cuts = 0
        self.connections = 0
        self._plans: list[dict] = []
        self._lock = threading.Lock()
        self._open: list[socket.socket] = []
        self._closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def cut_after(self, upstream_bytes: int | None = None, downstream_bytes: int | None = None, times: int = 1):
        """The next `times` connections are dropped after that many bytes in one direction."""
        with self._lock:
            for _ in range(times):
                self._plans.append({"up": upstream_bytes, "down": downstream_bytes})

    def cut_all_now(self):
        """Drop every open connection at once (like a server crash seen from the network)."""
        with self._lock:
            socks, self._open = self._open, []
        for s in socks:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
                s.close()

    def close(self):
        self._closed = True
        with contextlib.suppress(OSError):
            self.listener.close()
        self.cut_all_now()

    def _accept(self):
        while not self._closed:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            try:
                server = socket.create_connection(self.target, timeout=10)
            except OSError:
                client.close()
                continue
            with self._lock:
                plan = self._plans.pop(0) if self._plans else {"up": None, "down": None}
                self._open += [client, server]
                self.connections += 1
            cut = threading.Event()
            threading.Thread(target=self._pump, args=(client, server, plan["up"], cut), daemon=True).start()
            threading.Thread(target=self._pump, args=(server, client, plan["down"], cut), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, limit: int | None, cut: threading.Event):
        sent = 0
        try:
            while not cut.is_set():
                data = src.recv(65536)
                if not data:
                    break
                if self.delay:
                    time.sleep(self.delay)
                if limit is not None and sent + len(data) >= limit:
                    dst.sendall(data[: max(limit - sent, 0)])
                    with self._lock:
                        self.cuts += 1
                    cut.set()
                    break
                dst.sendall(data)
                sent += len(data)
        except OSError:
            pass
        finally:
            cut.set()
            for s in (src, dst):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)
                    s.close()
