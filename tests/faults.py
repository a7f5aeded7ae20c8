"""Faults where AWS makes them: per attempt, at the wire, on the function's own clients.

The nth call of an operation fails, on every attempt botocore makes (or on the first ``attempts`` of them):

- ``REFUSED``: each attempt is answered HTTP 503 ServiceUnavailable and never reaches moto's backend, so
  nothing is applied; botocore's retry handler retries it with its backoff (on the test's clock) until
  AWS_MAX_ATTEMPTS or the function's CallBudget stops it, and the call fails as it would on AWS.
- ``TIMEOUT``: each attempt is applied by moto and its answer is lost (ReadTimeoutError, as urllib3 raises
  it), so botocore retries it; every retry is applied too, as on AWS (a lost CreateAccessKey retried makes a
  second key).
- ``CRASH``: the first attempt is applied, then the process dies (``Crash``, a BaseException nothing may
  catch): the crash is at the call.
- ``BROKEN``: a bug below the function before anything is sent (RuntimeError at ``before-call``).
- ``LOST_ONCE``: the first attempt is applied and its answer lost; botocore's retry is answered as AWS would
  answer it (a retried CreateAccessKey makes a second key; a retried write of the same version is a no-op).

How: botocore emits ``before-send`` for every attempt and takes the first answer a handler gives. moto (in
process) answers there too; a refusal is registered ahead of it and points the attempt at an address moto
leaves alone, a lost answer or crash behind it, once moto has applied the request. The function's code,
botocore's retries and the budget's hooks all run unchanged. Use the ``faults`` fixture (conftest), which
also puts botocore's backoff on the test's clock.
"""

from __future__ import annotations

import json
from typing import Any
from xml.sax.saxutils import escape

from botocore import xform_name
from botocore.awsrequest import AWSResponse
from botocore.exceptions import ReadTimeoutError

import lambda_function

REFUSED, TIMEOUT, CRASH, BROKEN, LOST_ONCE = "refused", "timeout", "crash", "broken", "lost-once"
MODES = (REFUSED, TIMEOUT, CRASH, BROKEN, LOST_ONCE)
NOWHERE = "https://injected-fault.invalid/"  # an address moto's in-process stub does not answer


class Crash(BaseException):
    """The process dies: nothing in the function may catch this."""


class Raw:
    """An HTTP body as botocore reads it."""

    def __init__(self, body: bytes) -> None:
        self.body = body

    def stream(self, **_: Any) -> Any:
        yield self.body


def error_answer(request: Any, code: str = "ServiceUnavailable", message: str = "injected refusal",
                 status: int = 503) -> AWSResponse:
    """An AWS error answer in the service's own protocol: JSON (Secrets Manager, EventBridge) or query XML (IAM,
    SNS). botocore retries it or not as it would AWS's (a 5xx or a throttling code: yes)."""
    if request.headers.get("X-Amz-Target"):
        body = json.dumps({"__type": code, "message": message}).encode()
        headers = {"Content-Type": "application/x-amz-json-1.1", "x-amzn-RequestId": "injected"}
    else:
        kind = "Receiver" if status >= 500 else "Sender"
        body = (f"<ErrorResponse><Error><Type>{kind}</Type><Code>{code}</Code><Message>{escape(message)}</Message>"
                f"</Error><RequestId>injected</RequestId></ErrorResponse>").encode()
        headers = {"Content-Type": "text/xml"}
    return AWSResponse(NOWHERE, status, headers, Raw(body))


class Fault:
    """The nth call of one operation fails at the wire (see the module's docstring)."""

    def __init__(self, method: str, mode: str, nth: int = 1, attempts: int | None = None,
                 error: tuple[str, Any, int] = ("ServiceUnavailable", "injected refusal", 503)) -> None:
        if mode == LOST_ONCE:
            mode, attempts = TIMEOUT, 1
        self.method, self.mode, self.nth, self.attempts = method, mode, nth, attempts
        self.error = error  # REFUSED: (code, message or message(request), HTTP status)
        self.calls = 0  # calls of the operation seen
        self.failed = 0  # attempts of the nth call failed
        self.active = True

    @property
    def fired(self) -> bool:
        return self.calls >= self.nth

    def on_call(self, model: Any, context: dict, **_: Any) -> None:
        """before-call: count the calls; mark the nth."""
        if not self.active or xform_name(model.name) != self.method:
            return
        self.calls += 1
        if self.calls == self.nth:
            context.setdefault("injected_faults", []).append(self)
            if self.mode == BROKEN:
                raise RuntimeError("injected failure")

    def _fails(self, request: Any) -> bool:
        mine = self in (getattr(request, "context", None) or {}).get("injected_faults", [])
        if not (self.active and mine) or (self.attempts is not None and self.failed >= self.attempts):
            return False
        if self.mode == CRASH and self.failed:
            return False
        self.failed += 1
        return True

    def before_moto(self, request: Any, **_: Any) -> AWSResponse | None:
        """before-send, ahead of moto: a refusal the backend never sees."""
        if self.mode == REFUSED and self._fails(request):
            code, message, status = self.error
            answer = error_answer(request, code, message(request) if callable(message) else message, status)
            request.url = NOWHERE
            return answer
        return None

    def after_moto(self, request: Any, **_: Any) -> None:
        """before-send, behind moto (which has applied the request): the answer is lost, or the process dies."""
        if self.mode in (TIMEOUT, CRASH) and self._fails(request):
            if self.mode == CRASH:
                raise Crash(self.method)
            raise ReadTimeoutError(endpoint_url=request.url)


def function_clients() -> lambda_function.Clients:
    """The clients the function will use for the environment as it is now (cached per environment)."""
    import os

    return lambda_function.aws_clients(lambda_function.load_settings(os.environ, {}))


def client_of(method: str) -> Any:
    """Which of the function's clients has `method`. The optional clients are made only when looked at: the
    function makes them on first use, and making all three for each fault was half the clients the fault matrix
    made."""
    clients = function_clients()
    return next(client for name in ("iam", "secrets", "sns", "events", "ses")
                if hasattr(client := getattr(clients, name), method))


class Faults:
    """The ``faults`` fixture: inject faults on the function's clients; ``clear()`` ends them all."""

    def __init__(self) -> None:
        self.made: list[Fault] = []

    def inject(self, method: str, mode: str, nth: int = 1, attempts: int | None = None,
               error: tuple[str, Any, int] | None = None) -> Fault:
        """The nth call of ``method`` fails (every attempt, or the first ``attempts``); a refusal answers
        ``error`` (code, message, status), by default 503 ServiceUnavailable."""
        fault = Fault(method, mode, nth, attempts, *([error] if error else []))
        events = client_of(method).meta.events
        events.register("before-call", fault.on_call)
        events.register_first("before-send", fault.before_moto)
        events.register_last("before-send", fault.after_moto)
        self.made.append(fault)
        return fault

    def watch(self, method: str) -> list[dict]:
        """The parameters of each call of ``method`` the function makes, as botocore is given them."""
        seen: list[dict] = []

        def record(model: Any, params: dict, **_: Any) -> None:
            if xform_name(model.name) == method:
                seen.append(dict(params))

        client_of(method).meta.events.register("before-call", record)
        return seen

    def clear(self) -> None:
        for fault in self.made:
            fault.active = False


def record_calls(run) -> list[str]:
    """The boto3 methods the function's clients call while `run()` goes, in order, a repeat as
    "method#2": what a fault can be injected into."""
    seen: list[str] = []
    clients = function_clients()
    for client in (clients.iam, clients.secrets):
        client.meta.events.register("before-call", lambda model, **_: seen.append(xform_name(model.name)))
    try:
        run()
    finally:
        lambda_function.clients_for.cache_clear()  # the recording hooks go with the clients
    numbered, counts = [], {}
    for method in seen:
        counts[method] = counts.get(method, 0) + 1
        numbered.append(method if counts[method] == 1 else f"{method}#{counts[method]}")
    return numbered
