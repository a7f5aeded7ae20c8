"""Fault injection at the boto3 call: refused, applied with the answer lost, process killed, a bug below us."""

from __future__ import annotations

from typing import Any

from botocore.exceptions import ClientError, ReadTimeoutError

import lambda_function

REFUSED, TIMEOUT, CRASH, BROKEN = "refused", "timeout", "crash", "broken"
MODES = (REFUSED, TIMEOUT, CRASH, BROKEN)


class Crash(BaseException):
    """The process dies: nothing in the function may catch this."""


class Faulty:
    """A boto3 client whose `method` fails the `nth` time it is called."""

    def __init__(self, client: Any, method: str, mode: str, nth: int = 1) -> None:
        self.client, self.method, self.mode, self.nth = client, method, mode, nth
        self.calls = 0

    @property
    def fired(self) -> bool:
        return self.calls >= self.nth

    def __getattr__(self, name: str) -> Any:
        real = getattr(self.client, name)
        if name != self.method:
            return real

        def call(**kwargs: Any) -> Any:
            self.calls += 1
            if self.calls != self.nth:
                return real(**kwargs)
            if self.mode == REFUSED:  # a 5xx: AWS says it failed, which may or may not be so
                error = {"Error": {"Code": "ServiceUnavailable", "Message": "injected refusal"},
                         "ResponseMetadata": {"HTTPStatusCode": 503}}
                raise ClientError(error, "".join(part.title() for part in name.split("_")))
            if self.mode == BROKEN:  # not an AWS error at all: a bug below us, before anything was sent
                raise RuntimeError("injected failure")
            real(**kwargs)  # AWS applies it ...
            if self.mode == TIMEOUT:  # ... and the answer never arrives
                raise ReadTimeoutError(endpoint_url="https://injected.invalid")
            raise Crash(name)

        return call


def service_of(method: str) -> str:
    """Which of the function's clients has `method`."""
    clients = lambda_function.aws_clients(lambda_function.Settings())
    return next(s for s in ("iam", "secrets", "sns") if hasattr(getattr(clients, s), method))


def inject(monkeypatch, method: str, mode: str, nth: int = 1) -> Faulty:
    """Make the function's `method` fail the nth time; return the proxy."""
    real_clients = lambda_function.aws_clients
    service = service_of(method)
    faulty = Faulty(getattr(real_clients(lambda_function.Settings()), service), method, mode, nth)

    def patched(settings, clock=lambda_function.SYSTEM_CLOCK):
        clients = real_clients(settings, clock)
        return lambda_function.Clients(**{**clients.__dict__, service: faulty})

    monkeypatch.setattr(lambda_function, "aws_clients", patched)
    return faulty


def record_calls(run) -> list[str]:
    """The boto3 methods the function's clients call while `run()` goes, in order, a repeat as
    "method#2": what a fault can be injected into."""
    from botocore import xform_name

    seen: list[str] = []
    clients = lambda_function.aws_clients(lambda_function.Settings())
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
