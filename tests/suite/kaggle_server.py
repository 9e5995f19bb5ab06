"""A small stand-in for Kaggle's API on 127.0.0.1, recording what the real ``kaggle`` CLI sends.

The CLI (kaggle 2.2.5) talks to ``http://localhost/api/v1/<service>/<method>`` when
``KAGGLE_API_ENVIRONMENT=LOCALHOST``; with ``HTTP_PROXY`` pointing here (and an empty
``NO_PROXY``) every request, file uploads included, arrives at this server and never leaves the
machine. ``responses`` maps a method name (e.g. ``SaveKernel``) to a function of the request
body returning ``(status, json_body)``; unknown methods answer 404.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit


@dataclass
class Recorded:
    method: str  # HTTP method
    path: str  # the URL path, e.g. /api/v1/kernels.KernelsApiService/SaveKernel
    body: bytes

    @property
    def name(self) -> str:
        """The API method (last path component), e.g. ``SaveKernel``."""
        return self.path.rstrip("/").rsplit("/", 1)[-1]

    def json(self):
        return json.loads(self.body.decode("utf-8"))


@dataclass
class FakeKaggle:
    responses: dict = field(default_factory=dict)
    requests: list = field(default_factory=list)

    def __post_init__(self):
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def _handle(self):
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                recorded = Recorded(self.command, urlsplit(self.path).path, body)
                fake.requests.append(recorded)
                respond = fake.responses.get(recorded.name)
                if respond is None:
                    status, payload = 404, {"code": 404, "message": f"no fake for {recorded.path}"}
                else:
                    status, payload = respond(recorded)
                data = json.dumps(payload).encode("utf-8")
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_PUT = _handle

            def log_message(self, *args):  # keep test output quiet
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def port(self) -> int:
        return self.server.server_address[1]

    def environment(self, config_dir) -> dict:
        """Environment variables that point the real CLI at this server."""
        return {
            "KAGGLE_API_ENVIRONMENT": "LOCALHOST",
            "HTTP_PROXY": f"http://127.0.0.1:{self.port}",
            "http_proxy": f"http://127.0.0.1:{self.port}",
            "HTTPS_PROXY": f"http://127.0.0.1:{self.port}",
            "https_proxy": f"http://127.0.0.1:{self.port}",
            "NO_PROXY": "",
            "no_proxy": "",
            "KAGGLE_USERNAME": "whale-tester",
            "KAGGLE_KEY": "0123456789abcdef0123456789abcdef",
            "KAGGLE_CONFIG_DIR": str(config_dir),
        }

    def named(self, name: str) -> list[Recorded]:
        return [r for r in self.requests if r.name == name]

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)
