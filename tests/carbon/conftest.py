from __future__ import annotations

import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

FIXTURES = Path(__file__).parent / "fixtures"


class FakeApi:
    """A real HTTP server on 127.0.0.1; ``routes[prefix] = (status, body_bytes, delay_s)``."""

    def __init__(self) -> None:
        self.routes: dict[str, tuple[int, bytes, float]] = {}
        self.requests: list[tuple[str, dict[str, str]]] = []
        api = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802
                api.requests.append((self.path, dict(self.headers)))
                for prefix, (status, body, delay_s) in api.routes.items():
                    if self.path.startswith(prefix):
                        time.sleep(delay_s)
                        try:
                            self.send_response(status)
                            self.send_header("Content-Type", "application/json")
                            self.end_headers()
                            self.wfile.write(body)
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
              delay_s: float = 0.0) -> None:
        payload = body if body is not None else (FIXTURES / fixture).read_bytes() if fixture else b""
        self.routes[prefix] = (status, payload, delay_s)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def fake_api():
    api = FakeApi()
    yield api
    api.close()
