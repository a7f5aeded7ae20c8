"""moto behind a simulated network: latency, throttling and per-operation call counts.

As a library, `Region` wraps moto's WSGI app and `serve()` runs it on a thread.
As a script (`python tools/fake_region.py`) it serves in its own process, so the
server's CPU stays off the client's GIL, and prints its URL on the first line.
Control it over HTTP: GET /_region/stats, POST /_region/config with JSON
{"latency_ms": 30, "throttle": {"CreateAccessKey": 2}, "lose": {"PutSecretValue": 1},
"propagation_s": 8}, POST /_region/reset. A throttled call is refused before moto
sees it; a lost one is applied by moto, then answered with a 500 as if the answer
never came. With propagation_s, STS refuses a new access key for that long after
CreateAccessKey made it, as IAM's eventual consistency does.
"""

from __future__ import annotations

import argparse
import collections
import io
import json
import logging
import re
import threading
import time
import urllib.parse
import urllib.request
from typing import Any

from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app
from werkzeug.serving import WSGIRequestHandler, make_server

from local_aws import make_moto_move_current_as_aws_does

THROTTLE_XML = (b"<ErrorResponse><Error><Type>Sender</Type><Code>Throttling</Code>"
                b"<Message>Rate exceeded</Message></Error><RequestId>throttled</RequestId></ErrorResponse>")
THROTTLE_JSON = json.dumps({"__type": "ThrottlingException", "message": "Rate exceeded"}).encode()
LOST_XML = (b"<ErrorResponse><Error><Type>Receiver</Type><Code>InternalFailure</Code>"
            b"<Message>answer lost</Message></Error><RequestId>lost</RequestId></ErrorResponse>")
LOST_JSON = json.dumps({"__type": "InternalFailure", "message": "answer lost"}).encode()
NOT_YET_XML = (b"<ErrorResponse><Error><Type>Sender</Type><Code>InvalidClientTokenId</Code>"
               b"<Message>The security token included in the request is invalid.</Message></Error>"
               b"<RequestId>propagating</RequestId></ErrorResponse>")
KEY_ID = re.compile(rb"<AccessKeyId>([A-Z0-9]+)</AccessKeyId>")
CREDENTIAL = re.compile(r"Credential=([A-Z0-9]+)/")


def operation_of(environ: dict) -> str:
    """The API operation of a request, from X-Amz-Target (JSON APIs) or the Action form field (query APIs)."""
    target = environ.get("HTTP_X_AMZ_TARGET")
    if target:
        return target.rsplit(".", 1)[-1]
    length = int(environ.get("CONTENT_LENGTH") or 0)
    body = environ["wsgi.input"].read(length) if length else b""
    environ["wsgi.input"] = io.BytesIO(body)  # moto reads it again
    action = urllib.parse.parse_qs(body.decode("utf-8", "replace")).get("Action")
    return action[0] if action else environ.get("PATH_INFO", "?")


class Region:
    """WSGI middleware in front of moto: sleeps `latency` per call, refuses throttled calls, counts."""

    def __init__(self, app: Any, latency: float = 0.0) -> None:
        self.app, self.latency = app, latency
        self.counts: collections.Counter = collections.Counter()
        self.throttled: collections.Counter = collections.Counter()
        self.throttle: dict[str, int] = {}
        self.lose: dict[str, int] = {}
        self.propagation = 0.0
        self.key_created: dict[str, float] = {}  # access key id -> when CreateAccessKey made it
        self.lock = threading.Lock()

    def __call__(self, environ: dict, start_response: Any) -> Any:
        if environ.get("PATH_INFO", "").startswith("/_region/"):
            return self.control(environ, start_response)
        operation = operation_of(environ)
        with self.lock:
            self.counts[operation] += 1
            refuse = self.throttle.get(operation, 0) > 0
            if refuse:
                self.throttle[operation] -= 1
                self.throttled[operation] += 1
            lose = not refuse and self.lose.get(operation, 0) > 0
            if lose:
                self.lose[operation] -= 1
        if self.latency:
            time.sleep(self.latency)
        if refuse:
            is_json = bool(environ.get("HTTP_X_AMZ_TARGET"))
            body = THROTTLE_JSON if is_json else THROTTLE_XML
            content_type = "application/x-amz-json-1.1" if is_json else "text/xml"
            start_response("400 Bad Request", [("Content-Type", content_type), ("Content-Length", str(len(body)))])
            return [body]
        if operation == "GetCallerIdentity" and self.propagation:
            signer = CREDENTIAL.search(environ.get("HTTP_AUTHORIZATION", ""))
            made = self.key_created.get(signer.group(1)) if signer else None
            if made is not None and time.monotonic() - made < self.propagation:
                start_response("403 Forbidden", [("Content-Type", "text/xml"),
                                                  ("Content-Length", str(len(NOT_YET_XML)))])
                return [NOT_YET_XML]
        if operation == "LookupEvents":  # moto has no CloudTrail LookupEvents: CloudTrail's answer for no events
            body = b'{"Events": []}'
            start_response("200 OK", [("Content-Type", "application/x-amz-json-1.1"),
                                      ("Content-Length", str(len(body)))])
            return [body]
        answer: list = []
        body = b"".join(self.app(environ, lambda status, headers, exc_info=None: answer.append((status, headers))))
        if operation == "CreateAccessKey":
            with self.lock:
                for key_id in KEY_ID.findall(body):
                    self.key_created[key_id.decode()] = time.monotonic()
        if lose:  # applied, but not answered
            body = LOST_JSON if environ.get("HTTP_X_AMZ_TARGET") else LOST_XML
            start_response("500 Internal Server Error", [("Content-Length", str(len(body)))])
            return [body]
        start_response(*answer[0])
        return [body]

    def control(self, environ: dict, start_response: Any) -> Any:
        path = environ["PATH_INFO"]
        with self.lock:
            if path == "/_region/config":
                config = json.loads(environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0)) or b"{}")
                if "latency_ms" in config:
                    self.latency = config["latency_ms"] / 1000
                self.throttle.update(config.get("throttle", {}))
                self.lose.update(config.get("lose", {}))
                self.propagation = float(config.get("propagation_s", self.propagation))
            elif path == "/_region/reset":
                self.counts.clear()
                self.throttled.clear()
                self.throttle.clear()
                self.lose.clear()
            body = json.dumps({"calls": self.counts, "throttled": self.throttled,
                               "latency_ms": self.latency * 1000}).encode()
        start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
        return [body]


class KeepAliveHandler(WSGIRequestHandler):
    """HTTP/1.1, so clients keep their connections open, as they do with AWS."""

    protocol_version = "HTTP/1.1"


def serve(host: str = "127.0.0.1", port: int = 0, latency: float = 0.0):
    """Start a Region server on a thread; return (server, region, url)."""
    make_moto_move_current_as_aws_does()
    region = Region(DomainDispatcherApplication(create_backend_app), latency)
    server = make_server(host, port, region, threaded=True, request_handler=KeepAliveHandler)
    # stopped within 50 ms (serve_forever looks for a stop every half second by default: half a second a test)
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    return server, region, f"http://{host}:{server.server_port}"


def control(url: str, path: str, payload: dict | None = None) -> dict:
    """Call a Region server's control endpoint."""
    data = json.dumps(payload or {}).encode() if payload is not None else None
    request = urllib.request.Request(f"{url}/_region/{path}", data=data, method="POST" if data else "GET")
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--latency-ms", type=float, default=0.0)
    args = parser.parse_args()
    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # no line per request
    server, _, url = serve(port=args.port, latency=args.latency_ms / 1000)
    print(url, flush=True)
    threading.Event().wait()


if __name__ == "__main__":
    main()
