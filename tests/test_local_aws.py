"""`make local-aws`: the function's invocations run in the local AWS's own process, not in Docker.

moto's STS accepts any access key, so the new key's check passes here whether or not the key works: a local
demo of the steps, not a proof of the key (tests/conftest.py's AwsLikeSts is that proof).
"""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import boto3
import pytest

from conftest import read_exports
from seed import seed_user

ROOT = Path(__file__).parent.parent
AWS_CLI = str(Path(sys.executable).parent / "aws")

pytestmark = pytest.mark.e2e


def zipped(code: bytes | None = None) -> bytes:
    """The zip `make package` uploads: lambda_function.py alone (or the given code in its place)."""
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as made:
        made.writestr("lambda_function.py", code if code is not None else (ROOT / "lambda_function.py").read_bytes())
    return archive.getvalue()


def create_function(name: str, variables: dict, code: bytes | None = None, **clients) -> str:
    """What `make create` does, with boto3 (the CLI costs about a second a call)."""
    iam = clients.get("iam") or boto3.client("iam")
    trust = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "sts:AssumeRole",
                                                     "Principal": {"Service": "lambda.amazonaws.com"}}]}
    role = iam.create_role(RoleName=f"{name}-role", AssumeRolePolicyDocument=json.dumps(trust))["Role"]["Arn"]
    lam = clients.get("lam") or boto3.client("lambda")
    return lam.create_function(FunctionName=name, Runtime="python3.13", Role=role,
                               Handler="lambda_function.lambda_handler", Code={"ZipFile": zipped(code)},
                               Timeout=900, MemorySize=256, Environment={"Variables": variables})["FunctionArn"]


def invoke(name: str, event: dict) -> tuple[str | None, dict]:
    answer = boto3.client("lambda").invoke(FunctionName=name, Payload=json.dumps(event).encode())
    assert answer["StatusCode"] == 200
    return answer.get("FunctionError"), json.loads(answer["Payload"].read())


def keys(user: str) -> dict[str, str]:
    return {k["AccessKeyId"]: k["Status"]
            for k in boto3.client("iam").list_access_keys(UserName=user)["AccessKeyMetadata"]}


def held(secret: str) -> str:
    return json.loads(boto3.client("secretsmanager").get_secret_value(SecretId=secret)["SecretString"])["AccessKeyId"]


def log_lines(name: str) -> list[str]:
    answer = boto3.client("logs").filter_log_events(logGroupName=f"/aws/lambda/{name}")
    return [event["message"] for event in answer["events"]]


def test_a_dry_run_then_a_rotation_run_the_zip_against_the_local_aws(server):
    iam, secrets = boto3.client("iam"), boto3.client("secretsmanager")
    alice = seed_user(iam, secrets, "alice", ("Active",), 0)
    create_function("rotate-keys", {"sec": alice.secret, "REQUIRE_USER_TAG": "true"})
    (old,) = alice.key_ids

    error, dry = invoke("rotate-keys", {"dry_run": True})
    assert error is None, dry
    assert dry["dry_run"] is True and dry["planned"] == 1 and dry["rotated"] == 0
    assert keys("alice") == {old: "Active"} and held(alice.secret) == old

    error, run = invoke("rotate-keys", {})
    assert error is None, run
    new = held(alice.secret)
    assert run["rotated"] == 1 and run["secrets"][0]["new_key_id"] == new != old
    assert keys("alice") == {old: "Inactive", new: "Active"}

    lines = log_lines("rotate-keys")
    complete = [line for line in lines if '"action": "run_complete"' in line]
    assert len(complete) == 2 and '"dry_run": true' in complete[0] and '"rotated": 1' in complete[1]
    assert re.match(r"\[INFO\]\t\d{4}-\d\d-\d\dT[\d:.]+Z\t[0-9a-f-]{36}\t\{", complete[1])  # Lambda's line
    assert sum(line.startswith("START RequestId: ") for line in lines) == 2
    assert any(line.startswith('{"_aws"') for line in lines)  # the metrics line the function prints


def test_a_failing_invocation_answers_as_lambda_does(server):
    create_function("unset", {})  # no `sec`: the function refuses to run

    error, answer = invoke("unset", {})

    assert error == "Unhandled"
    assert answer["errorType"] == "ConfigError" and "'sec'" in answer["errorMessage"]
    assert answer["requestId"] and any("lambda_function.py" in frame for frame in answer["stackTrace"])
    assert any(line.startswith("[ERROR] ConfigError: ") for line in log_lines("unset"))


HANDLER = b"""
import os
calls = 0

def lambda_handler(event, context):
    global calls
    calls += 1
    if event.get("fail"):
        raise ValueError("asked to")
    return {"version": VERSION, "calls": calls, "sec": os.environ.get("sec"), "stray": os.environ.get("STRAY"),
            "endpoint": os.environ.get("AWS_ENDPOINT_URL"), "name": context.function_name,
            "arn": context.invoked_function_arn, "memory": context.memory_limit_in_mb,
            "left_ms": context.get_remaining_time_in_millis(), "request": context.aws_request_id}
"""


def test_each_invocation_runs_the_deployed_code_fresh_with_the_functions_own_environment(server, monkeypatch):
    monkeypatch.setenv("STRAY", "this shell's")  # a Lambda never sees the server's environment
    arn = create_function("probe", {"sec": "iam-keys/*"}, b"VERSION = 1\n" + HANDLER)

    _, first = invoke("probe", {})
    _, second = invoke("probe", {})
    assert first == {**first, "version": 1, "calls": 1, "sec": "iam-keys/*", "stray": None, "endpoint": server,
                     "name": "probe", "arn": arn, "memory": "256"}
    assert 0 < first["left_ms"] <= 900_000
    assert second["calls"] == 1 and second["request"] != first["request"]  # a fresh module each time
    assert os.environ["STRAY"] == "this shell's" and "sec" not in os.environ  # restored

    boto3.client("lambda").update_function_code(FunctionName="probe", ZipFile=zipped(b"VERSION = 2\n" + HANDLER))
    _, deployed = invoke("probe", {})
    assert deployed["version"] == 2  # `make deploy` takes effect at once

    error, failed = invoke("probe", {"fail": True})
    assert error == "Unhandled" and failed["errorType"] == "ValueError" and failed["errorMessage"] == "asked to"

    boto3.client("lambda").update_function_configuration(FunctionName="probe", Handler="lambda_function.missing")
    error, missing = invoke("probe", {})
    assert error == "Unhandled" and missing["errorType"] == "Runtime.HandlerNotFound"


def make(*args: str, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run(["make", "-s", *args, f"AWS={AWS_CLI}"], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=120)


def test_make_invoke_report_and_logs_against_make_local_aws():
    """The README's steps as a user takes them: `make local-aws` in one shell, the CLI in another."""
    server = subprocess.Popen([sys.executable, "tools/local_aws.py", "0"], cwd=ROOT, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True)
    try:
        exports = read_exports(server.stdout)
        env = {**os.environ, **exports}
        env.pop("AWS_PROFILE", None)
        clients = {name: boto3.client(service, endpoint_url=exports["AWS_ENDPOINT_URL"], region_name="us-east-1")
                   for name, service in (("iam", "iam"), ("secrets", "secretsmanager"), ("lam", "lambda"))}
        alice = seed_user(clients["iam"], clients["secrets"], "alice", ("Active",), 0)
        create_function("rotate-keys", {"sec": alice.secret}, **clients)

        dry = make("invoke", "FUNCTION=rotate-keys", env=env)
        assert dry.returncode == 0, dry.stderr
        assert json.loads(dry.stdout)["planned"] == 1
        report = make("report", "FUNCTION=rotate-keys", env=env)
        assert report.returncode == 0, report.stdout + report.stderr
        assert "alice" in report.stdout
        logs = make("logs", "FUNCTION=rotate-keys", env=env)
        assert logs.returncode == 0, logs.stderr
        assert '"action": "run_complete", "dry_run": true' in logs.stdout
    finally:
        server.terminate()  # as Ctrl-C: the server removes its organisation's profiles
        server.wait(timeout=30)


def test_secrets_managers_own_rotation_runs_the_four_steps_through_the_zip(server):
    iam, secrets = boto3.client("iam"), boto3.client("secretsmanager")
    alice = seed_user(iam, secrets, "alice", ("Active",), 0)
    arn = create_function("iam-key-rotation", {"sec": alice.secret})

    secrets.rotate_secret(SecretId=alice.secret, RotationLambdaARN=arn, RotationRules={"AutomaticallyAfterDays": 30})

    new = held(alice.secret)
    assert keys("alice") == {alice.key_ids[0]: "Inactive", new: "Active"}
    steps = [json.loads(line.split("\t")[3])["step"] for line in log_lines("iam-key-rotation")
             if '"action": "rotation_step"' in line]
    assert steps == ["createSecret", "setSecret", "testSecret", "finishSecret"]
