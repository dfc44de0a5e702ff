"""The web app's HTTP server: the standard library's, with a real listen backlog, a bounded pool of worker
threads, a 503 with ``Retry-After`` beyond it, and a read timeout for stalled clients. Every request goes to
:meth:`omg.serve.app.ServeApp.handle`, which any other transport (the Ray Serve deployment) calls the same way."""

from __future__ import annotations

import contextlib
import json
import socket
import threading
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, HTTPServer

from omg.inference.schema import Limits, RequestError
from omg.serve.app import ServeApp


class Handler(BaseHTTPRequestHandler):
    app: ServeApp  # set on the subclass made by make_server
    quiet: bool = False
    server_version = "omg-serve"

    def setup(self) -> None:
        self.timeout = self.app.limits.read_timeout_s  # a stalled client cannot hold a worker
        super().setup()

    def log_message(self, fmt: str, *args) -> None:
        if not self.quiet:
            super().log_message(fmt, *args)

    def _send(self, status: int, body: bytes, ctype: str, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)

    def _body(self, limit: int) -> bytes:
        length = self.headers.get("Content-Length")
        if length is None:
            raise RequestError(411, "a Content-Length header is required")
        try:
            n = int(length)
        except ValueError:
            raise RequestError(400, f"bad Content-Length {length!r}") from None
        if n < 0:
            raise RequestError(400, f"bad Content-Length {length!r}")
        if n > limit:
            raise RequestError(413, f"request body of {n} bytes exceeds the limit of {limit} bytes")
        data = self.rfile.read(n)
        if len(data) != n:
            raise RequestError(400, f"request body ended after {len(data)} of {n} bytes")
        return data

    def _reply(self, status: int, ctype: str, body: bytes, headers: dict) -> None:
        if status == 413:
            self.close_connection = True  # an unread body must not be parsed as the next request
        self._send(status, body, ctype, headers)

    def _serve(self, method: str) -> None:
        try:
            path = self.path.split("?", 1)[0]
            body = b""
            if method == "POST":
                try:
                    body = self._body(self.app.body_limit(path))
                except RequestError as err:
                    self._reply(err.status, "application/json", json.dumps({"error": str(err)}).encode(), {})
                    return
            self._reply(*self.app.handle(method, self.path, self.headers.get("Content-Type") or "", body))
        except (socket.timeout, ConnectionError):
            self.close_connection = True  # the client stalled or left: nothing to answer

    def do_GET(self) -> None:
        self._serve("GET")

    def do_POST(self) -> None:
        self._serve("POST")

    def do_PUT(self) -> None:
        self._serve("PUT")

    do_DELETE = do_PATCH = do_PUT


BUSY = (
    b"HTTP/1.0 503 Service Unavailable\r\nContent-Type: application/json\r\nRetry-After: 1\r\n"
    b"Connection: close\r\nContent-Length: %d\r\n\r\n%s"
)


class PoolHTTPServer(HTTPServer):
    """An HTTP server with a real listen backlog and a bounded pool of worker threads.

    The stdlib ``ThreadingHTTPServer`` listens with a backlog of 5 (connections beyond it are reset under a
    burst) and starts a thread per connection without bound. Here the accept loop hands each connection
    to ``workers`` threads; at most ``max_pending`` connections wait for one, and a connection beyond that
    is answered 503 with ``Retry-After`` by a separate small pool (which reads what the client sent before
    closing, so the client sees the answer rather than a reset)."""

    daemon_threads = True

    def __init__(self, address, handler, limits: Limits):
        self.request_queue_size = limits.backlog
        self.limits = limits
        self._pool = ThreadPoolExecutor(max_workers=limits.workers, thread_name_prefix="omg-serve")
        self._rejects = ThreadPoolExecutor(max_workers=2, thread_name_prefix="omg-serve-busy")
        self._pending = threading.BoundedSemaphore(limits.max_pending)
        super().__init__(address, handler)

    def process_request(self, request, client_address) -> None:
        if not self._pending.acquire(blocking=False):
            self._rejects.submit(self._busy, request)
            return
        self._pool.submit(self._work, request, client_address)

    def _work(self, request, client_address) -> None:
        try:
            self.finish_request(request, client_address)
        except Exception:  # noqa: BLE001 - as socketserver does: report, keep serving
            self.handle_error(request, client_address)
        finally:
            self.shutdown_request(request)
            self._pending.release()

    def _busy(self, request) -> None:
        body = json.dumps({"error": "the server is busy; retry in a second"}).encode()
        try:
            request.settimeout(2.0)
            with contextlib.suppress(OSError):
                request.recv(65536)  # the request line and headers, so closing does not reset the client
            request.sendall(BUSY % (len(body), body))
            request.shutdown(socket.SHUT_WR)
            while request.recv(65536):  # drain until the client closes (or the timeout)
                pass
        except OSError:
            pass
        finally:
            self.shutdown_request(request)

    def server_close(self) -> None:
        super().server_close()
        self._pool.shutdown(wait=False, cancel_futures=True)
        self._rejects.shutdown(wait=False, cancel_futures=True)


def make_server(app: ServeApp, host: str = "127.0.0.1", port: int = 8765, quiet: bool = False) -> PoolHTTPServer:
    handler = type("OMGHandler", (Handler,), {"app": app, "quiet": quiet})
    return PoolHTTPServer((host, port), handler, app.limits)
