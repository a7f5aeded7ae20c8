"""Fault injection at the boto3 call: refused, or applied with the answer lost."""

from __future__ import annotations

from typing import Any

from botocore.exceptions import ClientError, ReadTimeoutError

import lambda_function

REFUSED, TIMEOUT, CRASH, BROKEN = "refused", "timeout", "crash", "broken"


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
            if self.mode == REFUSED:
                error = {"Error": {"Code": "ServiceUnavailable", "Message": "injected refusal"}}
                raise ClientError(error, "".join(part.title() for part in name.split("_")))
            if self.mode == BROKEN:  # not an AWS error at all: a bug below us, before anything was sent
                raise RuntimeError("injected failure")
            real(**kwargs)  # AWS applies it ...
            if self.mode == TIMEOUT:  # ... and the answer never arrives
                raise ReadTimeoutError(endpoint_url="https://injected.invalid")
            raise Crash(name)

        return call


SERVICE_OF = {
    "get_secret_value": "secrets",
    "put_secret_value": "secrets",
    "describe_secret": "secrets",
    "update_secret_version_stage": "secrets",
    "list_access_keys": "iam",
    "create_access_key": "iam",
    "delete_access_key": "iam",
    "update_access_key": "iam",
}


def inject(monkeypatch, method: str, mode: str, nth: int = 1) -> Faulty:
    """Make the function's `method` fail the nth time; return the proxy."""
    clients = lambda_function.aws_clients()
    service = SERVICE_OF[method]
    faulty = Faulty(getattr(clients, service), method, mode, nth)
    patched = lambda_function.Clients(**{**clients.__dict__, service: faulty})
    monkeypatch.setattr(lambda_function, "aws_clients", lambda: patched)
    return faulty
