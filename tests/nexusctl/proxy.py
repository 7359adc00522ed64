"""A TCP proxy in front of the real API that cuts the first event stream after a few events, the
way a flaky network would: nexusctl has to resume with Last-Event-ID and lose nothing."""

import contextlib
import re
import socket
import threading

from nexus.dev.servers import free_port

_EVENT_ID = re.compile(rb"(?:^|\n)id: ")
_END = re.compile(rb"\r?\n\r?\n")


class CuttingProxy:
    def __init__(self, upstream_port: int, *, cut_after_events: int = 3) -> None:
        self.upstream_port = upstream_port
        self.cut_after = cut_after_events
        self.port = free_port()
        self.cuts = 0
        self.requests: list[bytes] = []
        self._server = socket.create_server(("127.0.0.1", self.port))
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def close(self) -> None:
        self._server.close()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._server.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        upstream = socket.create_connection(("127.0.0.1", self.upstream_port))
        state = {"cut_here": False}

        def client_to_upstream() -> None:
            try:
                while data := client.recv(65536):
                    self.requests.append(data)
                    # Decided before the request is forwarded, so before any byte of its answer.
                    if b"/events" in data and b"last-event-id" not in data.lower() and self.cuts == 0:
                        self.cuts += 1
                        state["cut_here"] = True
                    upstream.sendall(data)
            except OSError:
                pass

        threading.Thread(target=client_to_upstream, daemon=True).start()
        pending = b""
        try:
            while data := upstream.recv(65536):
                if not state["cut_here"]:
                    client.sendall(data)
                    continue
                pending += data
                ids = list(_EVENT_ID.finditer(pending))
                if len(ids) >= self.cut_after and (end := _END.search(pending, ids[self.cut_after - 1].end())):
                    client.sendall(pending[: end.end()])  # whole events only, then the line goes dead
                    break
        except OSError:
            pass
        finally:
            for s in (client, upstream):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)
                s.close()
