"""A standalone `/metrics` HTTP server on a daemon thread, for when no supervisor port exists
(`rlguard watch`, tests). The supervisor mounts `RunExporter.asgi_route()` instead.

Plain http.server: one small response per scrape needs nothing more, and it starts in
milliseconds with no event loop to share.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class MetricsServer:
    """Serves GET /metrics (and / with a pointer to it) until `close()`.

    body: accept header -> exposition bytes.
    content_type: accept header -> the Content-Type of that body.
    host, port: where to listen; port 0 picks a free port (read it back from `.port`).
    """

    def __init__(
        self,
        body: Callable[[str], bytes],
        content_type: Callable[[str], str],
        host: str = "127.0.0.1",
        port: int = 0,
    ):
        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 (http.server's name)
                path = self.path.split("?", 1)[0]
                if path == "/metrics":
                    accept = self.headers.get("Accept", "")
                    payload, ctype, code = body(accept), content_type(accept), 200
                elif path == "/":
                    payload, ctype, code = b"rlguard exporter: see /metrics\n", "text/plain", 200
                else:
                    payload, ctype, code = b"not found: try /metrics\n", "text/plain", 404
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, format, *args):  # noqa: A002 (http.server's name)
                pass  # one line per scrape would drown the supervisor's log

        try:
            self._httpd = ThreadingHTTPServer((host, port), Handler)
        except OSError as e:
            raise OSError(f"cannot serve metrics on {host}:{port}: {e.strerror or e}") from e
        self._httpd.daemon_threads = True
        self.host = host
        self.port = self._httpd.server_address[1]
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="rlguard-metrics", daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/metrics"

    def close(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)
