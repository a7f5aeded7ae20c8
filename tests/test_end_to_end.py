"""End to end over HTTP: a moto server on 127.0.0.1, the handler invoked as Lambda does."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import boto3
import pytest

import lambda_function
from conftest import load_event
from lambda_function import RotationFailed
from local_aws import LambdaContext
from seed import ROWS, iam_secret_keys, seed_row

# The shared scheduled event, at the time it is delivered (a redelivery repeats it within hours)
SCHEDULED = load_event("eventbridge-scheduled", time=datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"))



def test_every_row_rotates_over_http(server, monkeypatch):
    iam, secrets = boto3.client("iam"), boto3.client("secretsmanager")
    assert iam.meta.endpoint_url == server
    seeded = [seed_row(iam, secrets, row) for row in ROWS]
    monkeypatch.setenv("sec", ";".join(s.secret for s in seeded))

    result = lambda_function.lambda_handler(SCHEDULED, LambdaContext())

    assert lambda_function.aws_clients(lambda_function.Settings()).iam.meta.endpoint_url == server
    assert result["rotated"] == len(ROWS)
    json.dumps(result)  # what the console shows must serialise
    for s in seeded:
        value = json.loads(secrets.get_secret_value(SecretId=s.secret)["SecretString"])
        keys = {k["AccessKeyId"]: k["Status"] for k in iam.list_access_keys(UserName=s.user)["AccessKeyMetadata"]}
        assert [k for k, status in keys.items() if status == "Active"] == [value["AccessKeyId"]]
        assert len(keys) <= 2
        assert iam_secret_keys(s.user)[value["AccessKeyId"]] == value["SecretAccessKey"]

    again = lambda_function.lambda_handler(SCHEDULED, LambdaContext())  # EventBridge redelivers
    assert again["skipped"] == len(ROWS)


def test_failed_secret_fails_the_invocation_over_http(server, monkeypatch):
    iam, secrets = boto3.client("iam"), boto3.client("secretsmanager")
    good = seed_row(iam, secrets, ROWS[1])
    secrets.create_secret(Name="broken", SecretString="not json")
    monkeypatch.setenv("sec", f"broken;{good.secret}")
    with pytest.raises(RotationFailed, match="secret 'broken': value is not valid JSON"):
        lambda_function.lambda_handler({"key1": "value1"}, LambdaContext())
    assert len(secrets.list_secret_version_ids(SecretId=good.secret)["Versions"]) == 2
