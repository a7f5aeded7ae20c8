"""Shared fixtures: moto-backed AWS, seeded users, and state assertions."""

from __future__ import annotations

import json
import os

import boto3
import pytest
from moto import mock_aws

import lambda_function
from seed import iam_secret_keys

os.environ.update(
    AWS_DEFAULT_REGION="us-east-1",
    AWS_ACCESS_KEY_ID="testing",
    AWS_SECRET_ACCESS_KEY="testing",
)
os.environ.pop("AWS_ENDPOINT_URL", None)
os.environ.pop("AWS_PROFILE", None)



class Aws:
    """boto3 clients onto moto plus readers of the state the function leaves."""

    def __init__(self) -> None:
        self.iam = boto3.client("iam")
        self.secrets = boto3.client("secretsmanager")

    def keys(self, user: str) -> dict[str, str]:
        """Key id -> status."""
        listed = self.iam.list_access_keys(UserName=user)["AccessKeyMetadata"]
        return {k["AccessKeyId"]: k["Status"] for k in listed}

    def value(self, secret: str, stage: str = "AWSCURRENT") -> dict:
        return json.loads(self.secrets.get_secret_value(SecretId=secret, VersionStage=stage)["SecretString"])

    def versions(self, secret: str) -> list[dict]:
        return self.secrets.list_secret_version_ids(SecretId=secret)["Versions"]

    def holds_working_key(self, secret: str, stage: str = "AWSCURRENT") -> bool:
        """The secret's key exists, is Active, and its SecretAccessKey is the real one."""
        value = self.value(secret, stage)
        key_id = value.get("AccessKeyId")
        return (
            self.keys(value["UserName"]).get(key_id) == "Active"
            and iam_secret_keys(value["UserName"]).get(key_id) == value.get("SecretAccessKey")
        )

    def assert_converged(self, secret: str) -> None:
        """Steady state: one Active key, the secret's and working, at most one Inactive."""
        value = self.value(secret)
        keys = self.keys(value["UserName"])
        active = [k for k, s in keys.items() if s == "Active"]
        assert active == [value["AccessKeyId"]], (keys, value["AccessKeyId"])
        assert len(keys) - len(active) <= 1, keys
        assert self.holds_working_key(secret)


@pytest.fixture
def aws(monkeypatch):
    """In-process moto, with the function's cached clients reset."""
    monkeypatch.delenv("sec", raising=False)
    monkeypatch.delenv("LOG_LEVEL", raising=False)
    with mock_aws():
        yield Aws()


@pytest.fixture
def invoke(monkeypatch):
    """Run the handler with `sec` set to the given secrets."""

    def run(*secrets: str, event: dict | None = None, sec: str | None = None):
        monkeypatch.setenv("sec", sec if sec is not None else ";".join(secrets))
        return lambda_function.lambda_handler(event if event is not None else {"key1": "value1"}, None)

    return run
