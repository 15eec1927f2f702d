"""A minimal Lambda Runtime API on 127.0.0.1, enough to run a real function binary (lambda_runtime's loop) the way
the Lambda service does: the first `GET …/invocation/next` marks the end of init, each queued event is handed out
once, responses and errors are recorded. Used by bench/run.py for cold start (process start → ready for an event)
and for the peak RSS of one invocation."""

from __future__ import annotations

import http.server
import threading
import time
import uuid


class RuntimeApi:
    def __init__(self):
        self.events: list[bytes] = []
        self.first_next: float | None = None  # time.perf_counter() of the first `next` call
        self.nexts = 0
        self.responses: list[tuple[str, bytes]] = []  # ("response" | "error", body)
        self._cv = threading.Condition()
        api = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # quiet
                pass

            def do_GET(self):
                if not self.path.endswith("/runtime/invocation/next"):
                    self.send_error(404)
                    return
                with api._cv:
                    if api.first_next is None:
                        api.first_next = time.perf_counter()
                    api.nexts += 1
                    api._cv.notify_all()
                    while not api.events:
                        api._cv.wait()
                    body = api.events.pop(0)
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Lambda-Runtime-Aws-Request-Id", str(uuid.uuid4()))
                self.send_header("Lambda-Runtime-Deadline-Ms", str(int(time.time() * 1000) + 900_000))
                self.send_header("Lambda-Runtime-Invoked-Function-Arn", "arn:aws:lambda:us-east-1:123456789012:function:bench")
                self.send_header("Lambda-Runtime-Trace-Id", "Root=1-00000000-000000000000000000000000")
                self.end_headers()
                self.wfile.write(body)

            def do_POST(self):
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                kind = "error" if self.path.endswith("/error") else "response"
                self.send_response(202)
                self.send_header("Content-Length", "0")
                self.end_headers()
                with api._cv:
                    api.responses.append((kind, body))
                    api._cv.notify_all()

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.address = f"127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def queue(self, body: bytes):
        with self._cv:
            self.events.append(body)
            self._cv.notify_all()

    def wait(self, predicate, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        with self._cv:
            while not predicate():
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cv.wait(left)
        return True

    def close(self):
        self.server.shutdown()
        self.server.server_close()
