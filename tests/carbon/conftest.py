from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

FIXTURES = Path(__file__).parent / "fixtures"


@dataclass
class Route:
    status: int
    body: bytes
    delay_s: float = 0.0
    headers: dict[str, str | None] = field(default_factory=dict)
    drip_s: float = 0.0


class FakeApi:
    """A real HTTP server on 127.0.0.1; ``routes[prefix] = Route(status, body, delay_s, headers, drip_s)``."""

    def __init__(self) -> None:
        self.routes: dict[str, Route] = {}
        self.requests: list[tuple[str, dict[str, str]]] = []
        api = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802
                api.requests.append((self.path, dict(self.headers)))
                for prefix, route in api.routes.items():
                    if self.path.startswith(prefix):
                        time.sleep(route.delay_s)
                        try:
                            self.send_response(route.status)
                            for key, value in {"Content-Type": "application/json", **route.headers}.items():
                                if value is not None:
                                    self.send_header(key, value)
                            self.end_headers()
                            if route.drip_s:  # a byte at a time: each read is prompt, the whole answer is not
                                for i in range(len(route.body)):
                                    self.wfile.write(route.body[i:i + 1])
                                    self.wfile.flush()
                                    time.sleep(route.drip_s)
                            else:
                                self.wfile.write(route.body)
                        except (BrokenPipeError, ConnectionResetError):
                            pass
                        return
                self.send_response(404)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
        self.thread.start()

    def serve(self, prefix: str, fixture: str | None = None, status: int = 200, body: bytes | None = None,
              delay_s: float = 0.0, headers: dict[str, str | None] | None = None, drip_s: float = 0.0) -> None:
        """Answer GETs under ``prefix``; ``headers`` adds or (with ``None``) drops response headers."""
        payload = body if body is not None else (FIXTURES / fixture).read_bytes() if fixture else b""
        self.routes[prefix] = Route(status, payload, delay_s, headers or {}, drip_s)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def fake_api():
    api = FakeApi()
    yield api
    api.close()
