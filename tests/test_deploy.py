"""make create/deploy/schedule with the real AWS CLI against a moto server on 127.0.0.1."""

from __future__ import annotations

import json
import os
import subprocess
import zipfile
from pathlib import Path

import boto3
import pytest

from local_aws import moto_server

ROOT = Path(__file__).parent.parent


def make(*args: str) -> subprocess.CompletedProcess:
    done = subprocess.run(["make", "-s", *args], cwd=ROOT, env=dict(os.environ), capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr
    return done


@pytest.fixture
def server():
    with moto_server() as endpoint:
        yield endpoint


def test_package_holds_only_the_function():
    make("package")
    with zipfile.ZipFile(ROOT / "dist" / "lambda.zip") as archive:
        assert archive.namelist() == ["lambda_function.py"]
        assert archive.read("lambda_function.py") == (ROOT / "lambda_function.py").read_bytes()


def test_create_schedule_and_deploy_with_the_aws_cli(server):
    role = boto3.client("iam").create_role(RoleName="key-rotation", AssumeRolePolicyDocument=json.dumps({
        "Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "sts:AssumeRole",
                                                 "Principal": {"Service": "lambda.amazonaws.com"}}]}))["Role"]["Arn"]
    make("create", "FUNCTION=rotate-keys", f"ROLE={role}", "SEC=iam-keys/a;iam-keys/b")
    make("schedule", "FUNCTION=rotate-keys")
    make("schedule", "FUNCTION=rotate-keys")  # again: idempotent
    deployed = make("deploy", "FUNCTION=rotate-keys")

    lam, events = boto3.client("lambda"), boto3.client("events")
    config = lam.get_function(FunctionName="rotate-keys")["Configuration"]
    assert config["Runtime"] == "python3.12"
    assert config["Handler"] == "lambda_function.lambda_handler"
    assert config["Role"] == role and config["Timeout"] == 900
    assert config["Environment"]["Variables"] == {"sec": "iam-keys/a;iam-keys/b"}
    assert config["CodeSha256"] in deployed.stdout
    assert lam.get_function_concurrency(FunctionName="rotate-keys")["ReservedConcurrentExecutions"] == 1
    assert lam.get_function_event_invoke_config(FunctionName="rotate-keys")["MaximumRetryAttempts"] == 2

    (rule,) = events.list_rules(NamePrefix="rotate-keys")["Rules"]
    assert rule["ScheduleExpression"] == "cron(0 6 * * ? *)" and rule["State"] == "ENABLED"
    (target,) = events.list_targets_by_rule(Rule=rule["Name"])["Targets"]
    assert target["Arn"] == config["FunctionArn"]
    (grant,) = json.loads(lam.get_policy(FunctionName="rotate-keys")["Policy"])["Statement"]
    assert grant["Principal"] == {"Service": "events.amazonaws.com"}
    assert grant["Condition"]["ArnLike"]["AWS:SourceArn"] == rule["Arn"]


def test_create_refuses_without_role_or_secrets(server):
    done = subprocess.run(["make", "-s", "create", "FUNCTION=x", "SEC=a"], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode != 0 and "needs ROLE=" in done.stderr
