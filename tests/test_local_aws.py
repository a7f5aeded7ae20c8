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
from typing import Any

import boto3
import pytest

from conftest import drain, read_exports
from local_aws import served_hosts
from seed import ACCOUNT_ID, seed_user

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


# --- where moto 5.2.5 is not AWS: each of tools/local_aws.py's patches, checked still needed -------------------------
# Each test runs moto without the patch (moto's own method, which the patch keeps as ``original``) and asserts moto
# still answers the documented wrong way. When one fails, moto has fixed that behaviour: remove the patch it names.


def unpatched(monkeypatch, owner: Any, name: str) -> None:
    """moto's own ``owner.name`` back in place for this test, whatever patch of local_aws's is on."""
    method = getattr(owner, name)
    while getattr(method, "original", None) is not None:
        method = method.original
    monkeypatch.setattr(owner, name, method)


def stack_template(value: str) -> dict:
    """A stack of one SNS topic (named: moto names it from the stack's name, which a stack set's has a colon in)
    and one output, ``Which``: ``value``."""
    return {"Resources": {"Topic": {"Type": "AWS::SNS::Topic", "Properties": {"TopicName": "which"}}},
            "Outputs": {"Which": {"Value": value}}}


def outputs(stack: str) -> dict[str, str]:
    described = boto3.client("cloudformation").describe_stacks(StackName=stack)["Stacks"][0]
    return {o["OutputKey"]: o["OutputValue"] for o in described.get("Outputs", [])}


def test_moto_still_leaves_its_default_version_where_awscurrent_was(aws, monkeypatch):
    """When this fails, moto has fixed UpdateSecretVersionStage (AWSCURRENT moved, GetSecretValue answers the version
    it moved to, and the next PutSecretValue leaves one AWSCURRENT): remove the patch
    (local_aws.make_moto_move_current_as_aws_does)."""
    from moto.secretsmanager.models import SecretsManagerBackend

    unpatched(monkeypatch, SecretsManagerBackend, "update_secret_version_stage")
    first = aws.secrets.create_secret(Name="s", SecretString="one")["VersionId"]
    second = aws.secrets.put_secret_value(SecretId="s", SecretString="two")["VersionId"]
    aws.secrets.update_secret_version_stage(SecretId="s", VersionStage="AWSCURRENT", MoveToVersionId=first,
                                            RemoveFromVersionId=second)
    assert aws.secrets.get_secret_value(SecretId="s")["SecretString"] == "two", "AWS answers AWSCURRENT's: one"
    aws.secrets.put_secret_value(SecretId="s", SecretString="three")
    current = [v for v in aws.secrets.list_secret_version_ids(SecretId="s")["Versions"]
               if "AWSCURRENT" in v["VersionStages"]]
    assert len(current) == 2, "AWS keeps AWSCURRENT on one version at a time"


def test_moto_still_counts_a_parameter_left_at_its_default_as_changed_in_a_stack_update(aws, monkeypatch):
    """When this fails, moto's stack update compares a parameter with the value the stack resolved (an unchanged
    value updates nothing): remove build_resource_diff's patch (local_aws.make_moto_update_stacks_as_aws_does)."""
    from moto.cloudformation.models import cloudformation_backends
    from moto.cloudformation.parsing import ResourceMap

    unpatched(monkeypatch, ResourceMap, "build_resource_diff")
    template = {"Parameters": {"Name": {"Type": "String", "Default": "team"}},
                "Resources": {"Topic": {"Type": "AWS::SNS::Topic", "Properties": {"TopicName": {"Ref": "Name"}}}}}
    stack_id = boto3.client("cloudformation").create_stack(StackName="s", TemplateBody=json.dumps(template))["StackId"]
    stack = cloudformation_backends[ACCOUNT_ID]["us-east-1"].stacks[stack_id]
    # the CLI's UsePreviousValue sends the value the stack has: on AWS, nothing to modify
    assert stack.resource_map.build_resource_diff(template, {"Name": "team"})["Modify"] == ["Topic"]


def test_moto_still_tags_no_function_a_stack_makes(aws, monkeypatch):
    """When this fails, moto tags a stack's function as CloudFormation does (aws:cloudformation:stack-name ...):
    remove the patch (local_aws.make_moto_tag_stack_functions_as_aws_does)."""
    from moto.cloudformation.parsing import ResourceMap

    unpatched(monkeypatch, ResourceMap, "create")
    trust = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "sts:AssumeRole",
                                                     "Principal": {"Service": "lambda.amazonaws.com"}}]}
    role = aws.iam.create_role(RoleName="r", AssumeRolePolicyDocument=json.dumps(trust))["Role"]["Arn"]
    function = {"Type": "AWS::Lambda::Function", "Properties": {
        "Runtime": "python3.13", "Handler": "index.handler", "Role": role,
        "Code": {"ZipFile": "def handler(event, context):\n    return event\n"}}}
    boto3.client("cloudformation").create_stack(StackName="s", TemplateBody=json.dumps(
        {"Resources": {"Function": function}}))
    lam = boto3.client("lambda")
    (made,) = lam.list_functions()["Functions"]
    assert "aws:cloudformation:stack-name" not in lam.list_tags(Resource=made["FunctionArn"]).get("Tags", {})


def test_moto_still_runs_a_function_s_code_only_in_docker(aws, monkeypatch):
    """When this fails, moto runs a Python function's code without Docker: remove the patch, or keep it only for
    what moto's runner lacks (local_aws.make_moto_run_lambda_in_process). Docker itself is stood in for by a client
    that refuses: the test asks only whether moto goes to it."""
    import docker
    from moto.awslambda.models import LambdaFunction

    unpatched(monkeypatch, LambdaFunction, "invoke")
    asked = []

    def no_docker(*_, **__):
        asked.append("docker")
        raise docker.errors.DockerException("no Docker in this test")

    monkeypatch.setattr(docker, "from_env", no_docker)
    create_function("in-process", {}, code=b"def lambda_handler(event, context):\n    return 'ran'\n")
    answer = boto3.client("lambda").invoke(FunctionName="in-process", Payload=b"{}")
    assert asked and answer.get("FunctionError") and b"error running docker" in answer["Payload"].read()


def test_moto_still_sends_every_event_to_a_schedule_rule_s_targets(aws, monkeypatch):
    """When this fails, moto's schedule rules match no event put on the bus: remove that part of the patch
    (local_aws.delivered_as_aws_does)."""
    from moto.events.models import Rule

    unpatched(monkeypatch, Rule, "send_to_targets")
    sqs, events = boto3.client("sqs"), boto3.client("events")
    queue = sqs.create_queue(QueueName="daily")["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    events.put_rule(Name="daily", ScheduleExpression="rate(1 day)")
    events.put_targets(Rule="daily", Targets=[{"Id": "queue", "Arn": arn}])
    events.put_events(Entries=[{"Source": "test", "DetailType": "anything", "Detail": "{}"}])
    assert drain(sqs, queue), "AWS runs a schedule rule on its schedule, never on an event"


def test_moto_still_forwards_an_event_to_another_region_s_bus_as_a_new_event_of_that_region(aws, monkeypatch):
    """When this fails, moto forwards an event to another bus as itself (its account, region and time): remove
    that part of the patch (local_aws.delivered_as_aws_does)."""
    from moto.events.models import Rule

    unpatched(monkeypatch, Rule, "send_to_targets")
    here, there = boto3.client("events"), boto3.client("events", region_name="eu-west-1")
    sqs = boto3.client("sqs", region_name="eu-west-1")
    queue = sqs.create_queue(QueueName="there")["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    pattern = json.dumps({"source": ["test"]})
    there.put_rule(Name="arrived", EventPattern=pattern)
    there.put_targets(Rule="arrived", Targets=[{"Id": "queue", "Arn": arn}])
    here.put_rule(Name="forward", EventPattern=pattern)
    here.put_targets(Rule="forward", Targets=[{"Id": "bus", "Arn": f"arn:aws:events:eu-west-1:{ACCOUNT_ID}:"
                                                                  "event-bus/default"}])
    here.put_events(Entries=[{"Source": "test", "DetailType": "anything", "Detail": "{}"}])
    (arrived,) = drain(sqs, queue)
    assert arrived["region"] == "eu-west-1", "AWS keeps the region the event was put in: us-east-1"


def test_moto_still_gives_a_target_no_account_in_its_default_event_template():
    """When this fails, moto's default input template has the event's account: remove that patch
    (local_aws.organisation_stand_ins's EventTemplateParser.DEFAULT_EVENT_INPUT_TEMPLATE)."""
    from moto.events.utils import EventTemplateParser

    assert '"account"' not in EventTemplateParser.DEFAULT_EVENT_INPUT_TEMPLATE


def test_moto_still_deploys_a_stack_set_to_every_account_of_the_ous_whatever_the_account_filter(aws, monkeypatch):
    """When this fails, moto counts DeploymentTargets' Accounts and AccountFilterType: remove the patch
    (local_aws.targeted_as_aws_does)."""
    from moto.cloudformation.models import StackInstances

    unpatched(monkeypatch, StackInstances, "create_instances")
    org = boto3.client("organizations")
    org.create_organization(FeatureSet="ALL")
    root = org.list_roots()["Roots"][0]["Id"]
    ou = org.create_organizational_unit(ParentId=root, Name="workloads")["OrganizationalUnit"]["Id"]
    accounts = []
    for name in ("dev", "prod"):
        made = org.create_account(AccountName=name, Email=f"{name}@example.com")["CreateAccountStatus"]["AccountId"]
        org.move_account(AccountId=made, SourceParentId=root, DestinationParentId=ou)
        accounts.append(made)
    cfn = boto3.client("cloudformation")
    cfn.create_stack_set(StackSetName="set", TemplateBody=json.dumps(stack_template("one")),
                         PermissionModel="SERVICE_MANAGED", AutoDeployment={"Enabled": False})
    cfn.create_stack_instances(StackSetName="set", Regions=["us-east-1"], DeploymentTargets={
        "OrganizationalUnitIds": [ou], "Accounts": [accounts[0]], "AccountFilterType": "INTERSECTION"})
    deployed = {i["Account"] for i in cfn.list_stack_instances(StackSetName="set")["Summaries"]}
    assert deployed == set(accounts), "AWS deploys to the listed account of the OU only"


def test_moto_still_updates_a_stack_set_s_record_and_not_its_instances_stacks(aws, monkeypatch):
    """When this fails, moto's UpdateStackSet updates every instance's stack: remove the patch
    (local_aws.updated_as_aws_does)."""
    from moto.cloudformation.models import StackSet, cloudformation_backends

    unpatched(monkeypatch, StackSet, "update")
    cfn = boto3.client("cloudformation")
    cfn.create_stack_set(StackSetName="set", TemplateBody=json.dumps(stack_template("one")))
    cfn.create_stack_instances(StackSetName="set", Accounts=[ACCOUNT_ID], Regions=["us-east-1"])
    cfn.update_stack_set(StackSetName="set", TemplateBody=json.dumps(stack_template("two")))
    (stack,) = [s for s in cloudformation_backends[ACCOUNT_ID]["us-east-1"].stacks.values() if "set" in s.name]
    assert outputs(stack.stack_id) == {"Which": "one"}, "AWS updates the instance's stack: two"


def test_moto_still_leaves_a_stack_made_by_a_change_set_without_its_outputs(aws, monkeypatch):
    """When this fails, moto's ExecuteChangeSet gives the stack its template's outputs: remove the patch
    (local_aws.outputs_as_aws_does)."""
    from moto.cloudformation.models import ChangeSet

    unpatched(monkeypatch, ChangeSet, "apply")
    cfn = boto3.client("cloudformation")
    cfn.create_change_set(StackName="s", ChangeSetName="c", ChangeSetType="CREATE",
                          TemplateBody=json.dumps(stack_template("one")))
    cfn.execute_change_set(ChangeSetName="c", StackName="s")
    assert outputs("s") == {}, "AWS gives the stack its template's outputs: Which"
