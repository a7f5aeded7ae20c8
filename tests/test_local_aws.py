"""`make local-aws`: the function's invocations run in the local AWS's own process, not in Docker.

moto's STS accepts any access key, so the new key's check passes here whether or not the key works: a local
demo of the steps, not a proof of the key (tests/conftest.py's AwsLikeSts is that proof).
"""

from __future__ import annotations

import base64
import http.client
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
from local_aws import served_hosts
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

        dry = make("invoke", "FUNCTION=rotate-keys", "OUTPUT=json", env=env)
        assert dry.returncode == 0, dry.stderr
        assert json.loads(dry.stdout)["planned"] == 1
        report = make("report", "FUNCTION=rotate-keys", env=env)
        assert report.returncode == 0, report.stdout + report.stderr
        assert "alice" in report.stdout
        logs = make("logs", "FUNCTION=rotate-keys", env=env)
        assert logs.returncode == 0, logs.stderr
        assert '"action": "run_complete", "dry_run": true' in logs.stdout
        assert all(not line.startswith("START") or line.count("RequestId") == 1 for line in logs.stdout.splitlines())
        port = exports["AWS_ENDPOINT_URL"].rsplit(":", 1)[1]
        assert sent_as(exports["AWS_ENDPOINT_URL"], f"attacker.example:{port}", CREATE_USER)[0] == 403
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


# A DNS rebinding page's requests reach 127.0.0.1 with the page's own name in Host: the server refuses them.
CREATE_USER = ("POST", "/", "Action=CreateUser&UserName=mallory&Version=2010-05-08",
               {"Content-Type": "application/x-www-form-urlencoded", "Authorization": "AWS4-HMAC-SHA256 "
                "Credential=testing/20250101/us-east-1/iam/aws4_request, SignedHeaders=host, Signature=0"})


def sent_as(endpoint: str, host: str | None, request: tuple[str, str, str, dict]) -> tuple[int, bytes]:
    """``request`` (method, path, body, headers) sent to ``endpoint`` as a browser would, with ``host`` (None: no
    Host header at all) in Host, whatever address it connects to; the status and body of the answer."""
    method, path, body, headers = request
    address, port = endpoint.removeprefix("http://").rsplit(":", 1)
    connection = http.client.HTTPConnection(address, int(port), timeout=10)
    try:
        connection.putrequest(method, path, skip_host=True, skip_accept_encoding=True)
        for name, value in {**({"Host": host} if host is not None else {}), **headers,
                            "Content-Length": str(len(body))}.items():
            connection.putheader(name, value)
        connection.endheaders(body.encode())
        answer = connection.getresponse()
        return answer.status, answer.read()
    finally:
        connection.close()


def users() -> list[str]:
    return [user["UserName"] for user in boto3.client("iam").list_users()["Users"]]


@pytest.mark.parametrize("host", ["attacker.example:{port}", "attacker.example:5000", "attacker.example", None,
                                  "127.0.0.1:{other}", "localhost:{other}", "127.0.0.1", "[::1]:{port}",
                                  "127.0.0.1:{port}.attacker.example"])
def test_a_request_naming_any_other_host_or_port_is_refused_and_creates_nothing(server, host):
    port = int(server.rsplit(":", 1)[1])
    forged = host and host.format(port=port, other=port + 1)

    status, body = sent_as(server, forged, CREATE_USER)

    assert status == 403 and body.startswith(b"Forbidden: ")
    assert "mallory" not in users()  # never reached moto


@pytest.mark.parametrize("name", ["127.0.0.1", "localhost", "LOCALHOST"])
def test_a_request_naming_the_printed_host_and_port_is_answered(server, name):
    port = server.rsplit(":", 1)[1]

    status, body = sent_as(server, f"{name}:{port}", CREATE_USER)

    assert status == 200, body
    assert users() == ["mallory"]


@pytest.mark.parametrize("origin", ["http://attacker.example", "null", "http://127.0.0.1:{port}"])
def test_a_request_from_a_web_page_any_origin_is_refused_even_with_the_right_host(server, origin):
    # A page may post to http://127.0.0.1:PORT itself, no rebinding needed; its browser says where it comes
    # from (Origin), which boto3 and the AWS CLI never send.
    port = server.rsplit(":", 1)[1]
    method, path, body, headers = CREATE_USER
    status, _ = sent_as(server, f"127.0.0.1:{port}", (method, path, body, {**headers,
                                                                          "Origin": origin.format(port=port)}))
    assert status == 403 and "mallory" not in users()


def test_a_rebinding_page_cannot_create_a_function_to_run_its_code_in_the_server(server):
    port = server.rsplit(":", 1)[1]
    trust = {"Statement": [{"Effect": "Allow", "Action": "sts:AssumeRole",
                            "Principal": {"Service": "lambda.amazonaws.com"}}]}
    role = boto3.client("iam").create_role(RoleName="any", AssumeRolePolicyDocument=json.dumps(trust))["Role"]["Arn"]
    code = base64.b64encode(zipped(b"def lambda_handler(event, context):\n    raise SystemExit\n")).decode()
    create = ("POST", "/2015-03-31/functions", json.dumps({
        "FunctionName": "pwn", "Runtime": "python3.13", "Role": role, "Handler": "lambda_function.lambda_handler",
        "Code": {"ZipFile": code}}), {"Content-Type": "application/json", "Authorization": "AWS4-HMAC-SHA256 "
                                     "Credential=testing/20250101/us-east-1/lambda/aws4_request, Signature=0"})

    status, _ = sent_as(server, f"attacker.example:{port}", create)

    assert status == 403
    assert boto3.client("lambda").list_functions()["Functions"] == []
    assert sent_as(server, f"127.0.0.1:{port}", create)[0] == 201  # the same request, for this server: made


def test_the_server_answers_its_own_names_with_the_port_and_bare_only_on_port_80():
    assert served_hosts(5000) == {"127.0.0.1:5000", "localhost:5000"}
    assert served_hosts(80) == {"127.0.0.1:80", "localhost:80", "127.0.0.1", "localhost"}
