"""Values are data (issue 29): no make target runs what a value holds, and make policy builds the policy as data.

Each target runs with values holding a quote, backquotes, `$(...)`, `;`, a newline and make's own `$(shell ...)`,
each payload touching a canary file if any shell (or make) ever ran it. AWS is an endpoint that records each
request reaching it (make's targets), or answers at the wire (tests/aws_wire.py, the tool run in-process): a
refused value calls nothing, an accepted one reaches the call as one parameter, exactly as typed.
"""

from __future__ import annotations

import io
import itertools
import json
import os
import re
import subprocess
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import boto3
import deploy_config
import deploy_policy
import pytest
from aws_wire import Wire
from deploy_config import Refused, check, render_policy

ROOT = Path(__file__).parent.parent
TARGETS = tuple(deploy_config.TARGETS)  # every deploy target of the Makefile
PAYLOADS = {  # each runs `touch` where a shell (or make) would read the value as code in one quoting or another
    "quote": "x'; touch {canary} #",
    "double-quote": 'x"; touch {canary} #',
    "backquotes": "x`touch {canary}`",
    "command-substitution": "x$(touch {canary})",
    "semicolon": "x; touch {canary} #",
    "newline": "x\ntouch {canary}\n",
    "make-shell": "$(shell touch {canary})",
}


@pytest.fixture
def fake_aws():
    """An AWS endpoint recording each request that reaches it (answered 500: nothing is ever done there); returns
    (its URL, the requests so far). make's targets are pointed at it with AWS_ENDPOINT_URL, as botocore reads it."""
    requests: list[str] = []

    class Recorder(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            requests.append(f"{self.command} {self.path}")
            self.send_response(500)
            self.end_headers()

        do_GET = do_PUT = do_HEAD = do_DELETE = do_POST

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Recorder)
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}", lambda: list(requests)
    server.shutdown()


def make(target: str, values: dict[str, str], aws: str) -> subprocess.CompletedProcess:
    args = [f"{name}={value}" for name, value in values.items()]
    return subprocess.run(["make", "-s", target, *args], cwd=ROOT, env={**os.environ, "AWS_ENDPOINT_URL": aws},
                          capture_output=True, text=True, timeout=60)


def every_value(target: str, canary: Path, turn: int) -> dict[str, str]:
    """A payload in every value the target takes and in two of the function's settings by name, each value
    another payload (`turn` says which comes first)."""
    names = (*deploy_config.TARGETS[target].needs, *deploy_config.TARGETS[target].takes, "SEC", "METRICS_NAMESPACE")
    payloads = list(PAYLOADS.values())
    return {name: payloads[(turn + i) % len(payloads)].format(canary=canary) for i, name in enumerate(names)}


@pytest.mark.parametrize("target", TARGETS)
def test_no_target_runs_what_a_value_holds(tmp_path, fake_aws, target):
    aws, calls = fake_aws
    canary = tmp_path / "canary"
    done = make(target, every_value(target, canary, TARGETS.index(target)), aws)
    assert not canary.exists(), f"make {target} ran a value: {done.stderr}"
    assert done.returncode == 2, done.stderr
    first = (*deploy_config.TARGETS[target].needs, *deploy_config.TARGETS[target].takes)[0]  # the first checked
    assert f"{first} must be {deploy_config.VALUES[first].meaning}" in done.stderr
    assert calls() == [], "nothing called"


@pytest.mark.parametrize("payload", PAYLOADS)
def test_no_payload_runs_in_any_value(tmp_path, fake_aws, payload):
    # Each payload in every value of one target: FUNCTION, ROLE, REGION, TIMEOUT, MEMORY, RETRIES, SEC, a setting.
    aws, calls = fake_aws
    canary = tmp_path / "canary"
    value = PAYLOADS[payload].format(canary=canary)
    create = deploy_config.TARGETS["create"]
    done = make("create", dict.fromkeys((*create.needs, *create.takes, "SEC", "GRACE_HOURS"), value), aws)
    assert not canary.exists(), f"make create ran a value: {done.stderr}"
    assert done.returncode == 2 and calls() == [], done.stderr


def test_settings_and_event_files_reach_aws_as_typed(server, tmp_path, monkeypatch):
    # Values the checks accept (a setting's text, a file's name) are parameters of a call, never shell text: every
    # payload at once, in two orders (the function's settings parser is loaded per run: one run, not seven).
    canary = tmp_path / "canary"
    payloads = [payload.format(canary=canary) for payload in PAYLOADS.values()]
    sec, namespace = "".join(payloads), "".join(reversed(payloads))
    lam, iam = boto3.client("lambda"), boto3.client("iam")
    role = iam.create_role(RoleName="r", AssumeRolePolicyDocument="{}")["Role"]["Arn"]
    lam.create_function(FunctionName="rotate-keys", Runtime="python3.13", Role=role, Handler="lambda_function.x",
                        Code={"ZipFile": b"PK"}, Environment={"Variables": {}})
    done = make("configure", {"FUNCTION": "rotate-keys", "SEC": sec, "METRICS_NAMESPACE": namespace}, server)
    assert done.returncode == 0, done.stderr
    variables = lam.get_function_configuration(FunctionName="rotate-keys")["Environment"]["Variables"]
    assert variables == {"sec": sec, "METRICS_NAMESPACE": namespace}
    event = tmp_path / "events" / sec
    event.parent.mkdir(parents=True, exist_ok=True)
    event.write_text('{"a": 1}')
    monkeypatch.chdir(tmp_path)  # the answer file, dist/invoke-FUNCTION.json, lands here
    wire = Wire({"lambda Invoke": lambda params: {"Payload": io.BytesIO(b'{"secrets": []}')}})
    assert deploy_config.main(["invoke"], {"FUNCTION": "rotate-keys", "EVENT": str(event)}, wire) == 0
    (invoke,) = wire.named("Invoke")
    assert invoke.params["Payload"] == b'{"a": 1}', "the file of that very name, read as data"
    assert not canary.exists()


def test_a_secret_name_reaches_the_call_and_the_event_as_data(tmp_path, monkeypatch):
    # SECRET accepts what a secret's name may hold ('+', '=', '@' ...): it reaches the tag call as one parameter and
    # the rollback event as a JSON string, never shell text.
    monkeypatch.chdir(tmp_path)
    secret = "iam-keys/team+a=b@c.d_e-f"
    wire = Wire({"secretsmanager DescribeSecret": {"Tags": [{"Key": "key-rotation:mode", "Value": "skip"}]},
                 "lambda Invoke": lambda params: {"Payload": io.BytesIO(b'{"secrets": []}')}})
    for target in ("skip", "unskip", "rollback"):
        assert deploy_config.main([target], {"FUNCTION": "rotate-keys", "SECRET": secret}, wire) == 0
    tag, describe, untag, plan, invoke = wire.calls  # make rollback plans (a dry run) first
    assert (tag.service, tag.operation) == ("secretsmanager", "TagResource") and tag.params["SecretId"] == secret
    assert describe.params["SecretId"] == secret == untag.params["SecretId"]
    assert plan.operation == invoke.operation == "Invoke"
    assert json.loads(plan.params["Payload"]) == {"rollback": [secret], "dry_run": True}
    assert json.loads(invoke.params["Payload"]) == {"rollback": [secret]}


@pytest.mark.parametrize("target, values, says", [
    ("deploy", {"FUNCTION": "f" * 65}, "FUNCTION must be a Lambda function name"),
    ("deploy", {"FUNCTION": "arn:aws:lambda:us-east-1:123456789012:function:f"}, "FUNCTION must be"),
    ("pause", {"FUNCTION": "f", "STACK": "1-keys"}, "STACK must be a CloudFormation stack name"),
    ("pause", {"FUNCTION": "f", "STACK": "keys_prod"}, "STACK must be a CloudFormation stack name"),
    ("logs", {"FUNCTION": "f", "SINCE": "ten"}, "SINCE must be minutes: a whole number"),
    ("logs", {"FUNCTION": "f", "SINCE": "-5"}, "SINCE must be minutes: a whole number"),
    ("invoke", {"FUNCTION": "f", "EVENT": "events/no-such-event.json"}, "EVENT must be an existing JSON file"),
    ("invoke", {"FUNCTION": "f", "EVENT": "events"}, "EVENT must be an existing JSON file"),
    ("schedule", {"FUNCTION": "f", "SCHEDULE": "cron(0 6 * * ? *)'"}, "SCHEDULE must be an EventBridge schedule"),
    ("alarms", {"FUNCTION": "f", "TOPIC": "arn:aws:sns:us-east-1:123456789012:ops x"}, "TOPIC must be"),
    ("create", {"FUNCTION": "f", "ROLE": "admin", "SEC": "iam-keys/*"}, "ROLE must be a role ARN"),
    ("create", {"FUNCTION": "f", "ROLE": "arn:aws:iam::123456789012:role/r", "SEC": "iam-keys/*",
                "TIMEOUT": "901"}, "TIMEOUT must be seconds"),
    ("configure", {"FUNCTION": "f", "GRACE_HOURS": "1'"}, "GRACE_HOURS=\"1'\" is not understood"),
    ("configure", {"FUNCTION": "f", "DRYRUN": "true"}, "did you mean DRY_RUN?"),
    ("policy", {"FUNCTION": "f", "REGION": "eu-west-1;"}, "REGION must be a region"),
    ("policy", {"FUNCTION": "f", "USER_PATH": "/*/"}, "USER_PATH must be a user path"),
    ("rollback", {"FUNCTION": "f"}, "give SECRET="),
    ("rollback", {"FUNCTION": "f", "SECRET": "iam-keys/*"}, "SECRET must be a secret's name"),
    ("skip", {"SECRET": "iam-keys/a b"}, "SECRET must be a secret's name"),
    ("unskip", {"SECRET": "arn:aws:secretsmanager:eu-west-1:1:secret:x"}, "SECRET must be a secret's name"),
    ("status", {"FUNCTION": "f", "SINCE": "1d"}, "SINCE must be minutes: a whole number"),
    ("org-deploy", {"REGIONS": "eu-west-1", "ARTIFACT_PREFIX": "acme"}, "give OUS="),
    ("org-deploy", {"OUS": "ou-ab12-cd34ef56", "REGIONS": "eu-west-1", "ARTIFACT_PREFIX": "acme",
                    "SecretNames": "iam-keys/*", "OVERRIDES": "111122223333:GraceHours=1;id"},
     "GraceHours must be what the template allows"),
    ("org-remove", {"OUS": "ou-ab12-cd34ef56"}, "give REGIONS="),
    ("skip", {"SECRET": "-x"}, "SECRET must not start with '-'"),
    ("org-report", {"LOG_GROUP": "-foo"}, "LOG_GROUP must not start with '-'"),
])
def test_a_refused_value_is_named_and_nothing_is_called(fake_aws, target, values, says):
    aws, calls = fake_aws
    done = make(target, values, aws)
    assert done.returncode == 2 and says in done.stderr, done.stderr
    assert calls() == []


def valid(target: str) -> dict[str, str]:
    """Values the target accepts, with its needed ones."""
    return {"FUNCTION": "rotate-keys", "ROLE": "arn:aws:iam::123456789012:role/key-rotation", "SEC": "iam-keys/*",
            "GRACE_HOURS": "24", "GIVEN_SETTINGS": "SEC GRACE_HOURS" if target in ("create", "configure") else "",
            "EVENT": "events/dry-run.json", "SECRET": "iam-keys/ci-deployer",
            "OUS": "ou-ab12-cd34ef56", "REGIONS": "eu-west-1 us-east-1", "ARTIFACT_PREFIX": "acme-keys"}


@pytest.mark.unit
@pytest.mark.parametrize("target", TARGETS)
def test_each_value_of_each_target_is_checked_alone(target):
    # With every other value valid, a payload in any one value a target takes is refused (exit 2).
    check(target, valid(target))
    declared = deploy_config.TARGETS[target]
    for name, payload in itertools.product((*declared.needs, *declared.takes), PAYLOADS.values()):
        with pytest.raises(Refused) as refused:
            check(target, {**valid(target), name: payload.format(canary="/tmp/canary")})
        assert refused.value.code == 2 and name in str(refused.value)


# Every value of every target, from the tool's own table: each is a parameter of a call, or a name the target prints
# in the `aws` commands it suggests (aws cloudformation delete-stack --stack-name STACK...), so none may start with
# '-', which the CLI would read as an option (FUNCTION=--help, SECRET=-x).
EACH_VALUE = [(name, value) for name, target in deploy_config.TARGETS.items()
              for value in (*target.needs, *target.takes)]


@pytest.mark.unit
@pytest.mark.parametrize("value", ["--help", "-x"])
@pytest.mark.parametrize("target, name", EACH_VALUE)
def test_a_value_with_a_leading_dash_is_refused_by_its_name_and_nothing_is_called(capsys, target, name, value):
    calls = Wire()
    code = deploy_config.main([target], {**valid(target), name: value}, calls)
    (said,) = capsys.readouterr().err.splitlines()
    assert code == 2 and said.startswith(f"{name} must ") and said.endswith(f"not {value!r}"), said
    if re.fullmatch(deploy_config.VALUES[name].pattern, value, re.ASCII):  # what it names allows a '-', but not first
        assert said == f"{name} must not start with '-' (the AWS CLI would read it as an option), not {value!r}"
    assert calls.calls == [], "nothing called"


@pytest.mark.unit
def test_a_setting_name_that_is_not_a_name_is_refused():
    for name in ("GRACE_HOURS;touch", "$(shell", "1ABC"):
        with pytest.raises(Refused, match="is not a setting of the function"):
            check("configure", {"FUNCTION": "f", "GIVEN_SETTINGS": name, name: "1"})


# --- make policy: built as data --------------------------------------------------------------------------------

ESCAPE = 'x/*", "Action": "*", "Resource": "*", "Sid2": "'


def test_make_policy_refuses_a_prefix_that_would_rewrite_the_policy(fake_aws):
    # (dist/policy.json is written only once render_policy returns; other tests write it too, so it is not
    # compared here: exit 2 before any call is what shows nothing was written)
    aws, calls = fake_aws
    done = make("policy", {"FUNCTION": "rotate-keys", "REGION": "eu-west-1", "ACCOUNT_ID": "111122223333",
                           "PREFIX": ESCAPE}, aws)
    assert done.returncode == 2 and "PREFIX must be a secret-name prefix" in done.stderr, done.stderr
    assert calls() == []


@pytest.mark.unit
@pytest.mark.parametrize("name, value", [
    ("prefix", ESCAPE), ("prefix", "iam-keys/*"), ("prefix", ""), ("prefix", "a" * 513),
    ("kms_key_id", 'abc", "Action": "*'), ("kms_key_id", "abc"), ("kms_key_id", "*"), ("kms_key_id", "alias/*"),
    ("kms_key_id", "arn:aws:kms:eu-west-1:111122223333:key/*"),
    ("function", 'f", "Action": "*'), ("user_path", '/", "Action": "*'), ("user_path", "/*"),
    ("event_bus", 'keys", "Action": "*'), ("event_bus", "*"), ("notify_topic_arn", "arn:aws:sns:eu-west-1:*:t"),
    ("central_account_id", "*"),
])
def test_render_policy_refuses_what_a_value_cannot_be(name, value):
    arguments = {"account_id": "111122223333", "region": "eu-west-1", "function": "rotate-keys", name: value}
    with pytest.raises(Refused):
        render_policy(**arguments)


KMS_KEYS = ["", "1234abcd-12ab-34cd-56ef-1234567890ab", "mrk-1234abcd12ab34cd56ef1234567890ab", "alias/secrets",
            "arn:aws:kms:eu-west-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab",
            "arn:aws:kms:eu-west-1:111122223333:alias/secrets"]


@pytest.mark.unit
def test_no_policy_make_policy_writes_allows_every_action_or_a_wildcard_action():
    for kms, bus, on, topic, prefix, path in itertools.product(
            KMS_KEYS, ["", "keys", "arn:aws:events:eu-west-1:111122223333:event-bus/keys"], ["", "true"],
            ["", "arn:aws:sns:eu-west-1:111122223333:ops"], ["iam-keys/", "team+a/keys.=@_-"], ["/", "/k/r/"]):
        policy = render_policy("111122223333", "eu-west-1", "rotate-keys", prefix, kms, path, bus, on, on, topic)
        for statement in policy["Statement"]:
            actions = statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]
            assert all("*" not in action and ":" in action for action in actions), statement
            assert statement["Effect"] == "Allow"
        assert json.loads(json.dumps(policy)) == policy


@pytest.mark.unit
def test_kms_key_ids_aliases_and_arns_each_name_the_key():
    def kms(key: str) -> dict:
        (statement,) = [s for s in render_policy("111122223333", "eu-west-1", "f", kms_key_id=key)["Statement"]
                        if s["Sid"] == "UseSecretsKeyOnlyViaSecretsManager"]
        return statement

    uuid = KMS_KEYS[1]
    assert kms(uuid)["Resource"] == f"arn:aws:kms:eu-west-1:111122223333:key/{uuid}"
    assert kms(KMS_KEYS[4])["Resource"] == KMS_KEYS[4]
    for alias in ("alias/secrets", "arn:aws:kms:eu-west-1:111122223333:alias/secrets"):
        statement = kms(alias)
        assert statement["Resource"] == "arn:aws:kms:eu-west-1:111122223333:key/*"
        assert statement["Condition"]["ForAnyValue:StringEquals"] == {"kms:ResourceAliases": "alias/secrets"}
        assert statement["Condition"]["StringEquals"] == {"kms:ViaService": "secretsmanager.eu-west-1.amazonaws.com"}


@pytest.mark.unit
def test_the_last_check_refuses_a_wildcard_action_whatever_built_it():
    policy = {"Statement": [{"Sid": "X", "Effect": "Allow", "Action": "*", "Resource": "*"}]}
    with pytest.raises(Refused, match="would allow"):
        deploy_policy.least_privilege(policy)
    policy = {"Statement": [{"Sid": "X", "Effect": "Allow", "Action": ["iam:ListUserTags"], "Resource": "*"}]}
    with pytest.raises(Refused, match="every resource"):
        deploy_policy.least_privilege(policy)


# --- another account's topic or bus ----------------------------------------------------------------------------

OTHER = "222233334444"


@pytest.mark.unit
@pytest.mark.parametrize("setting, arn", [
    ("notify_topic_arn", f"arn:aws:sns:eu-west-1:{OTHER}:key-rotation"),
    ("event_bus", f"arn:aws:events:eu-west-1:{OTHER}:event-bus/central"),
])
def test_a_topic_or_bus_in_another_account_is_refused_unless_central_account_id_names_it(setting, arn):
    with pytest.raises(Refused, match=f"in account {OTHER}, not this account"):
        render_policy("111122223333", "eu-west-1", "f", **{setting: arn})
    with pytest.raises(Refused, match=f"in account {OTHER}"):
        render_policy("111122223333", "eu-west-1", "f", central_account_id="333344445555", **{setting: arn})
    policy = render_policy("111122223333", "eu-west-1", "f", central_account_id=OTHER, **{setting: arn})
    (granted,) = [s for s in policy["Statement"] if s["Sid"] in ("PublishRunSummaries", "PublishRotationEvents")]
    assert granted["Resource"] == arn


@pytest.mark.unit
def test_a_bus_by_name_or_a_topic_here_is_this_accounts():
    policy = render_policy("111122223333", "eu-west-1", "f", event_bus="keys",
                           notify_topic_arn="arn:aws:sns:eu-west-1:111122223333:ops")
    resources = {s["Sid"]: s["Resource"] for s in policy["Statement"]}
    assert resources["PublishRotationEvents"] == "arn:aws:events:eu-west-1:111122223333:event-bus/keys"
    assert resources["PublishRunSummaries"] == "arn:aws:sns:eu-west-1:111122223333:ops"
    assert {s["Sid"]: s["Action"] for s in policy["Statement"]}["PublishRunSummaries"] == ["sns:Publish"]


def test_make_policy_refuses_another_accounts_bus_and_writes_nothing(fake_aws):
    aws, calls = fake_aws
    values = {"FUNCTION": "rotate-keys", "REGION": "eu-west-1", "ACCOUNT_ID": "111122223333",
              "EVENT_BUS": f"arn:aws:events:eu-west-1:{OTHER}:event-bus/central"}
    done = make("policy", values, aws)
    assert done.returncode == 2 and f"give CENTRAL_ACCOUNT_ID={OTHER}" in done.stderr, done.stderr
    assert calls() == []
