"""A small stand-in for the Lambda Runtime API, for running the zip under awslambdaric."""

from __future__ import annotations

import json
import queue
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

PREFIX = "/2018-06-01/runtime"


class RuntimeApi:
    """Hands out queued events to /invocation/next and records what comes back."""

    def __init__(self, function_arn: str) -> None:
        self.function_arn = function_arn
        self.events: queue.Queue = queue.Queue()
        self.results: dict[str, dict] = {}
        self.done = threading.Condition()
        api = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # as the real API: keep-alive, and 100-continue for large posts

            def log_message(self, *args):  # quiet
                pass

            def do_GET(self):
                if self.path != f"{PREFIX}/invocation/next":
                    return self.reply(404, {})
                request_id, event = api.events.get()  # blocks like the real API between invocations
                self.send_response(200)
                self.send_header("Lambda-Runtime-Aws-Request-Id", request_id)
                self.send_header("Lambda-Runtime-Deadline-Ms", str(int(time.time() * 1000) + 300_000))
                self.send_header("Lambda-Runtime-Invoked-Function-Arn", api.function_arn)
                self.send_header("Lambda-Runtime-Trace-Id", "Root=1-00000000-000000000000000000000000")
                body = json.dumps(event).encode()
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                parts = self.path[len(PREFIX):].strip("/").split("/")
                if parts[0] == "invocation" and len(parts) == 3:
                    with api.done:
                        api.results[parts[1]] = {"kind": parts[2], "body": json.loads(body or b"null"),
                                                 "error_type": self.headers.get("Lambda-Runtime-Function-Error-Type")}
                        api.done.notify_all()
                elif parts == ["init", "error"]:
                    with api.done:
                        api.results["init"] = {"kind": "init-error", "body": json.loads(body or b"null")}
                        api.done.notify_all()
                self.reply(202, {"status": "OK"})

            def reply(self, status, payload):
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.address = f"127.0.0.1:{self.server.server_port}"

    def invoke(self, event: dict, timeout: float = 60) -> dict:
        """Queue an event and wait for the function's response or error."""
        request_id = str(uuid.uuid4())
        self.events.put((request_id, event))
        with self.done:
            if not self.done.wait_for(lambda: request_id in self.results or "init" in self.results, timeout):
                raise TimeoutError("the runtime did not answer")
        if "init" in self.results:
            raise RuntimeError(f"init error: {self.results['init']}")
        return self.results[request_id]

    def close(self) -> None:
        self.server.shutdown()
