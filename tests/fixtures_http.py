"""A local HTTP server for the download tests (test_download.py, test_faults_download.py): on a
free port of 127.0.0.1, never the internet, its bodies and failures set by the test.

``server.files[path]`` is served; per path, ``server.style[path]`` says how: 'length' (a
Content-Length; ``Range: bytes=N-`` honoured unless ``server.honour_range`` is False), 'close'
(no length: the body ends when the connection closes) or 'chunked'; ``server.cut[path]`` sends only
that many bytes of the body, then closes (once). Every request is logged in ``server.requests``
as (path, Range header)."""

from __future__ import annotations

import threading
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self):  # noqa: N802 (http.server naming)
        srv = self.server
        rng = self.headers.get("Range")
        srv.requests.append((self.path, rng))
        data = srv.files.get(self.path)
        self.close_connection = True
        if data is None:
            self.send_error(404, "Not Found")
            return
        style = srv.style.get(self.path, "length")
        start = 0
        if rng and style == "length" and srv.honour_range:
            start = int(rng.split("=")[1].rstrip("-"))
            if start >= len(data):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(data)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            self.send_response(200)
        body = data[start:]
        cut = srv.cut.pop(self.path, None)
        sent = body if cut is None else body[:cut]
        if style == "length":
            self.send_header("Content-Length", str(len(body)))
        elif style == "chunked":
            self.send_header("Transfer-Encoding", "chunked")
        self.send_header("Connection", "close")
        self.end_headers()
        if style == "chunked":
            for i in range(0, len(sent), 1000):
                piece = sent[i : i + 1000]
                self.wfile.write(f"{len(piece):x}\r\n".encode() + piece + b"\r\n")
            if cut is None:
                self.wfile.write(b"0\r\n\r\n")
        else:
            self.wfile.write(sent)
        self.wfile.flush()

    def log_message(self, *args):
        pass


@contextmanager
def local_server():
    """A threaded server on a free port of 127.0.0.1 (``.url``), stopped at the end."""
    srv = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    srv.url = f"http://127.0.0.1:{srv.server_address[1]}"
    reset(srv)
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield srv
    finally:
        srv.shutdown()
        srv.server_close()


def reset(srv):
    """No files, no requests logged, no failures set: a test's fresh start on a shared server."""
    srv.files, srv.style, srv.cut, srv.requests, srv.honour_range = {}, {}, {}, [], True
    return srv
