"""End to end over HTTP: a moto server on 127.0.0.1, the handler invoked as Lambda does."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import boto3
import pytest

import lambda_function
from conftest import load_event
from lambda_function import RotationFailed
from local_aws import LambdaContext
from seed import ROWS, iam_secret_keys, seed_row

ROOT = Path(__file__).parent.parent
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


def test_make_demo_script_rotates_every_row():
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_") and k != "sec"}
    done = subprocess.run([sys.executable, "tools/demo.py"], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert f"rotated {len(ROWS)}, skipped 0, failed 0" in out
    assert "two-active (2 active)" in out
    for label in ("1. Dry run", "2. Rotation", "3. What the Lambda console shows", "4. Refused", "5. Day to day"):
        assert label in out
    for status in ("rotated", "waiting", "retired", "rolled_back", "skipped"):
        assert f" {status} " in out.split("5. Day to day")[1], status
    assert "refused: IAM user 'admin' has no tag 'key-rotation-secret'" in out
    assert '"_aws"' not in out and '"action"' not in out, "quiet: no metrics or log lines"
    assert len(out.splitlines()) < 60, "a first-time user reads it without scrolling"
