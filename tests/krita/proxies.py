"""TCP proxies between a client and the test server that hold back, stall or cut its traffic."""

import socket
import threading
import time


class Proxy:
    """A TCP proxy to the server; `forward` decides what each chunk does on its way (see the subclasses)."""

    upstream_timeout = 60
    client_timeout: "float | None" = 60

    def __init__(self, port: int) -> None:
        self.target = port
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.url = "http://127.0.0.1:%d" % self.sock.getsockname()[1]
        self.open = True
        threading.Thread(target=self._accept, daemon=True).start()

    def close(self) -> None:
        self.open = False
        self.sock.close()

    def _accept(self) -> None:
        while self.open:
            try:
                client, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def forward(self, data: bytes, from_client: bool, connection: dict) -> bool:
        """Called before each chunk is passed on; False ends the connection after it."""
        return True

    def _serve(self, client: socket.socket) -> None:
        upstream = socket.create_connection(("127.0.0.1", self.target), timeout=self.upstream_timeout)
        client.settimeout(self.client_timeout)
        connection: dict = {}

        def pump(src, dst, from_client):
            try:
                while True:
                    data = src.recv(65536)
                    if not data:
                        break
                    go_on = self.forward(data, from_client, connection)
                    dst.sendall(data)
                    if not go_on:
                        break
            except OSError:
                pass
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

        t = threading.Thread(target=pump, args=(client, upstream, True), daemon=True)
        t.start()
        pump(upstream, client, False)
        t.join(5)
        client.close()
        upstream.close()


class DropProxy(Proxy):
    """Cuts the first event stream after its first bytes."""

    def __init__(self, port: int) -> None:
        self.drops = 0
        super().__init__(port)

    def forward(self, data: bytes, from_client: bool, connection: dict) -> bool:
        if from_client and b"/events " in data and self.drops == 0:
            connection["drop"] = True
        if not from_client and connection.get("drop"):
            self.drops += 1
            return False
        return True


class StallProxy(Proxy):
    """Holds each upload of an image (`POST /v1/jobs`) back for `stall_s` seconds before passing it on: it
    reads nothing more from that client meanwhile."""

    upstream_timeout = 120
    client_timeout = None

    def __init__(self, port: int, stall_s: float) -> None:
        self.stall_s = stall_s
        self.stalls = 0
        super().__init__(port)

    def forward(self, data: bytes, from_client: bool, connection: dict) -> bool:
        if from_client and b"POST /v1/jobs " in data:
            self.stalls += 1
            time.sleep(self.stall_s)
        return True


class AnswerDelayProxy(Proxy):
    """Holds the server's answer to each upload of an image (`POST /v1/jobs`) back for `delay_s` seconds:
    the moment when the client has sent the whole image and the server has not yet named the job."""

    def __init__(self, port: int, delay_s: float) -> None:
        self.delay_s = delay_s
        self.delayed = 0
        super().__init__(port)

    def forward(self, data: bytes, from_client: bool, connection: dict) -> bool:
        if from_client and b"POST /v1/jobs " in data:
            connection["upload"] = True
        elif not from_client and connection.pop("upload", False):
            self.delayed += 1
            time.sleep(self.delay_s)
        return True
