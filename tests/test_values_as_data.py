"""Values are data (issue 29): no make target runs what a value holds, and make policy builds the policy as data.

Each target runs with values holding a quote, backquotes, `$(...)`, `;`, a newline and make's own `$(shell ...)`,
each payload touching a canary file if any shell (or make) ever ran it. The AWS CLI is a stand-in that records
its calls: a refused value calls nothing, an accepted one reaches the CLI as one argument, exactly as typed.
"""

from __future__ import annotations

import itertools
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import deploy_config
import pytest
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
FAKE_AWS = """#!{python}
import json, os, sys
with open({log!r}, "a") as log:
    log.write(json.dumps(sys.argv[1:]) + "\\n")
if sys.argv[1:3] == ["lambda", "invoke"]:
    open(sys.argv[sys.argv.index("--payload") + 2], "w").write('{{"secrets": []}}')
    print("None")
elif sys.argv[1:3] == ["secretsmanager", "describe-secret"]:
    print("skip")  # the key-rotation:mode tag make unskip asks for
else:
    print("{{}}")
"""


@pytest.fixture
def fake_aws(tmp_path):
    """A stand-in `aws` recording each call's arguments; returns (its path, the calls so far)."""
    log = tmp_path / "aws-calls.jsonl"
    program = tmp_path / "aws"
    program.write_text(FAKE_AWS.format(python=sys.executable, log=str(log)))
    program.chmod(0o755)

    def calls() -> list[list[str]]:
        return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []

    return program, calls


def make(target: str, values: dict[str, str], aws: Path) -> subprocess.CompletedProcess:
    args = [f"{name}={value}" for name, value in values.items()]
    return subprocess.run(["make", "-s", target, *args, f"AWS={aws}"], cwd=ROOT, env=dict(os.environ),
                          capture_output=True, text=True, timeout=60)


def every_value(target: str, canary: Path, turn: int) -> dict[str, str]:
    """A payload in every value the target takes and in two of the function's settings by name, each value
    another payload (`turn` says which comes first)."""
    needed, optional = deploy_config.TARGETS[target]
    names = (*needed, *optional, "SEC", "METRICS_NAMESPACE")
    payloads = list(PAYLOADS.values())
    return {name: payloads[(turn + i) % len(payloads)].format(canary=canary) for i, name in enumerate(names)}


@pytest.mark.parametrize("target", TARGETS)
def test_no_target_runs_what_a_value_holds(tmp_path, fake_aws, target):
    aws, calls = fake_aws
    canary = tmp_path / "canary"
    done = make(target, every_value(target, canary, TARGETS.index(target)), aws)
    assert not canary.exists(), f"make {target} ran a value: {done.stderr}"
    assert done.returncode == 2, done.stderr
    needed, optional = deploy_config.TARGETS[target]
    first = (*needed, *optional)[0]  # the first value checked: FUNCTION, SECRET for skip/unskip, OUS for org-...
    assert f"{first} must be {deploy_config.RULES[first][1]}" in done.stderr
    assert calls() == [], "nothing called"


@pytest.mark.parametrize("payload", PAYLOADS)
def test_no_payload_runs_in_any_value(tmp_path, fake_aws, payload):
    # Each payload in every value of one target: FUNCTION, ROLE, REGION, TIMEOUT, MEMORY, RETRIES, SEC, a setting.
    aws, calls = fake_aws
    canary = tmp_path / "canary"
    value = PAYLOADS[payload].format(canary=canary)
    needed, optional = deploy_config.TARGETS["create"]
    done = make("create", dict.fromkeys((*needed, *optional, "SEC", "GRACE_HOURS"), value), aws)
    assert not canary.exists(), f"make create ran a value: {done.stderr}"
    assert done.returncode == 2 and calls() == [], done.stderr


def test_settings_and_event_files_reach_the_cli_as_typed(tmp_path, fake_aws):
    # Values the checks accept (a setting's text, a file's name) are arguments to the CLI, never shell text: every
    # payload at once, in two orders (the function's settings parser is loaded per run: one run, not seven).
    aws, calls = fake_aws
    canary = tmp_path / "canary"
    payloads = [payload.format(canary=canary) for payload in PAYLOADS.values()]
    sec, namespace = "".join(payloads), "".join(reversed(payloads))
    done = make("configure", {"FUNCTION": "rotate-keys", "SEC": sec, "METRICS_NAMESPACE": namespace}, aws)
    assert done.returncode == 0, done.stderr
    (_read, update) = calls()
    environment = json.loads(update[update.index("--environment") + 1])
    assert environment == {"Variables": {"sec": sec, "METRICS_NAMESPACE": namespace}}
    event = tmp_path / "events" / sec
    event.parent.mkdir(parents=True, exist_ok=True)
    event.write_text("{}")
    done = make("invoke", {"FUNCTION": "rotate-keys", "EVENT": str(event)}, aws)
    assert done.returncode == 0, done.stderr
    invoke = calls()[-1]
    assert invoke[invoke.index("--payload") + 1] == f"fileb://{event}"
    assert not canary.exists()


def test_a_secret_name_reaches_the_cli_and_the_event_as_data(tmp_path, fake_aws):
    # SECRET accepts what a secret's name may hold ('+', '=', '@' ...): it reaches the tag call as one argument and
    # the rollback event as a JSON string, never shell text.
    aws, calls = fake_aws
    secret = "iam-keys/team+a=b@c.d_e-f"
    for target in ("skip", "unskip", "rollback"):
        done = make(target, {"FUNCTION": "rotate-keys", "SECRET": secret}, aws)
        assert done.returncode == 0, done.stderr
    tag, describe, untag, plan, invoke = calls()  # make rollback plans (a dry run) first
    assert tag[:2] == ["secretsmanager", "tag-resource"] and tag[tag.index("--secret-id") + 1] == secret
    assert describe[describe.index("--secret-id") + 1] == secret == untag[untag.index("--secret-id") + 1]
    assert plan[:2] == invoke[:2] == ["lambda", "invoke"]
    sent = invoke[invoke.index("--payload") + 1].removeprefix("fileb://")
    assert json.loads((ROOT / sent).read_text()) == {"rollback": [secret]}


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
    needed, optional = deploy_config.TARGETS[target]
    for name, payload in itertools.product((*needed, *optional), PAYLOADS.values()):
        with pytest.raises(Refused) as refused:
            check(target, {**valid(target), name: payload.format(canary="/tmp/canary")})
        assert refused.value.code == 2 and name in str(refused.value)


# Every value of every target, from the tool's own table: each reaches the AWS CLI's argument list (--function-name,
# --secret-id, --log-group-name, --profile, --regions...) or what the CLI is given (a file, JSON), so none may start
# with '-', which the CLI would read as an option (FUNCTION=--help, SECRET=-x).
EACH_VALUE = [(target, name) for target, (needed, optional) in deploy_config.TARGETS.items()
              for name in (*needed, *optional)]


@pytest.mark.unit
@pytest.mark.parametrize("value", ["--help", "-x"])
@pytest.mark.parametrize("target, name", EACH_VALUE)
def test_a_value_with_a_leading_dash_is_refused_by_its_name_and_nothing_is_called(fake_aws, capsys, target, name,
                                                                                   value):
    aws, calls = fake_aws
    code = deploy_config.main([target], {**valid(target), name: value, "AWS": str(aws)})
    (said,) = capsys.readouterr().err.splitlines()
    assert code == 2 and said.startswith(f"{name} must ") and said.endswith(f"not {value!r}"), said
    if re.fullmatch(deploy_config.RULES[name][0], value, re.ASCII):  # what it names allows a '-', but not first
        assert said == f"{name} must not start with '-' (the AWS CLI would read it as an option), not {value!r}"
    assert calls() == [], "nothing called"


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
        deploy_config.least_privilege(policy)
    policy = {"Statement": [{"Sid": "X", "Effect": "Allow", "Action": ["iam:ListUserTags"], "Resource": "*"}]}
    with pytest.raises(Refused, match="every resource"):
        deploy_config.least_privilege(policy)


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
