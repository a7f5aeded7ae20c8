"""AWS answering tools/deploy_config.py at the wire, for the tests whose subject is what a target asks and says.

``Wire`` is given to ``deploy_config.main(..., wire=...)``, which hands it each boto3 session the target makes. It
adds two botocore event hooks there: one records each call (service, operation, the parameters as the tool
built them, once botocore has checked them against the service's model; the session's profile and region),
the other answers it as AWS would, from a script, before anything is sent: an answer's parsed shape (HTTP 200)
or an error code (HTTP 400, which botocore raises as the service's ClientError). The tool runs unchanged.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from botocore.awsrequest import AWSResponse


@dataclass
class Call:
    service: str
    operation: str
    params: dict
    profile: str | None
    region: str | None


def error(code: str, message: str = "") -> dict:
    """A script's answer that is AWS's error ``code``."""
    return {"Error": {"Code": code, "Message": message or code}}


class Wire:
    """answers: "service Operation" (optionally with words every one of which is a parameter's value, e.g.
    "s3 HeadObject acme-keys-us-west-2") -> the answer (a dict, error(...), or a function of the parameters); the
    most specific key answers. Unscripted calls answer {}."""

    def __init__(self, answers: dict[str, Any] | None = None) -> None:
        self.answers: dict[str, Any] = dict(answers or {})
        self.calls: list[Call] = []

    def __call__(self, session: Any) -> None:
        profile, region = session.profile_name, session.region_name

        def record(params: dict, model: Any, **_: Any) -> None:
            self.calls.append(Call(model.service_model.service_name, model.name, dict(params), profile, region))

        def answer(model: Any, **_: Any) -> tuple[AWSResponse, dict]:
            call = self.calls[-1]
            words = {str(v) for v in call.params.values()}
            keys = [key for key in self.answers if key.split()[:2] == [call.service, call.operation]
                    and set(key.split()[2:]) <= words]
            found = self.answers[max(keys, key=len)] if keys else {}
            found = found(call.params) if isinstance(found, Callable) else found
            status = 400 if "Error" in found else 200
            return AWSResponse("https://aws.test", status, {}, None), {**found, "ResponseMetadata": {}}

        session.events.register("before-parameter-build", record)
        session.events.register("before-call", answer)

    def named(self, operation: str) -> list[Call]:
        return [call for call in self.calls if call.operation == operation]

    def changes(self, operations: tuple[str, ...]) -> list[Call]:
        return [call for call in self.calls if call.operation in operations]
