"""LambdaExecutionRole.json allows exactly the calls the function makes, plus its logs."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

import lambda_function
from conftest import STEPS, step
from faults import REFUSED, TIMEOUT
from lambda_function import RotationFailed
from seed import ROWS, begin_rotation, iam_secret_keys, seed_row, set_last_used

POLICY = Path(__file__).parent.parent / "LambdaExecutionRole.json"
LOG_ACTIONS = {"logs:CreateLogGroup", "logs:CreateLogStream", "logs:PutLogEvents"}  # Lambda writes the logs
KMS_ACTIONS = {"kms:Decrypt", "kms:GenerateDataKey"}  # Secrets Manager calls them for a customer key
SERVICE_PREFIX = {"iam": "iam", "secrets-manager": "secretsmanager"}


def policy_actions() -> set[str]:
    actions = set()
    for statement in json.loads(POLICY.read_text())["Statement"]:
        assert statement["Effect"] == "Allow"
        listed = statement["Action"]
        assert statement["Resource"] != "*" or statement["Sid"] in ("ListAndBatchReadSecrets", "ReadCredentialReport",
                                                                    "LookUpHoldouts"), statement["Sid"]
        actions |= {listed} if isinstance(listed, str) else set(listed)
    return actions


@pytest.fixture
def called(aws):
    """Every AWS action the function's clients make, as 'service:Operation'."""
    seen: set[str] = set()
    clients = lambda_function.aws_clients(lambda_function.Settings())

    def record(model, **_):
        seen.add(f"{SERVICE_PREFIX[model.service_model.service_id.hyphenize()]}:{model.name}")

    for client in (clients.iam, clients.secrets):
        client.meta.events.register("before-call.*.*", lambda model, **kw: record(model))
    return seen


def test_policy_allows_exactly_what_the_code_calls(aws, invoke, faults, monkeypatch, called):
    seeded = [seed_row(aws.iam, aws.secrets, row) for row in ROWS]
    invoke(sec="iam-keys/*")  # found by prefix
    # a previous key still Active: the next run retires it
    two = seeded[-1]
    current = aws.value(two.secret)
    spare = next(k for k in aws.keys(two.user) if k != current["AccessKeyId"])
    aws.iam.update_access_key(UserName=two.user, AccessKeyId=spare, Status="Active")
    aws.secrets.put_secret_value(SecretId=two.secret, SecretString=json.dumps(
        {**current, "AccessKeyId": spare, "SecretAccessKey": iam_secret_keys(two.user)[spare]}))
    # Its verification (GetCallerIdentity) was its last use, as IAM records it; moto dates the version just
    # written to the whole second, so date that use an hour back rather than within the same second.
    set_last_used(two.user, current["AccessKeyId"], datetime.now(UTC) - timedelta(hours=1), service="sts")
    second = invoke(two.secret)
    assert second["retired"] == 1, json.dumps(second["secrets"])
    for mode in (REFUSED, TIMEOUT):  # the failure paths' calls count too
        fault = faults.inject("put_secret_value", mode)
        try:
            invoke(seeded[1].secret)
        except RotationFailed:
            pass
        assert fault.fired
        faults.clear()
    faults.inject("create_access_key", TIMEOUT)
    with pytest.raises(RotationFailed):
        invoke(seeded[1].secret)
    faults.clear()
    token = begin_rotation(seeded[2].secret)  # Secrets Manager rotation mode
    for name in STEPS:
        step(seeded[2].secret, token, name)
    # a leaked key: its user, the quarantine policy, a rotation (CloudTrail's lookup: LookupEvents, below)
    invoke(seeded[3].secret, event={"exposed": [aws.value(seeded[3].secret)["AccessKeyId"]]}, sec="iam-keys/*")
    # events:PutEvents only with EVENT_BUS (make policy EVENT_BUS=...; test_events covers the calls)
    # ... the credential report's two actions only with ACCOUNT_REPORT (test_compliance covers the calls)
    # ... and cloudtrail:LookupEvents only with LOOKUP_HOLDOUTS (test_holdouts covers the call)
    assert policy_actions() == called | LOG_ACTIONS | KMS_ACTIONS | {
        "events:PutEvents", "iam:GenerateCredentialReport", "iam:GetCredentialReport", "cloudtrail:LookupEvents",
        "ses:SendEmail", "sns:Publish"}  # the owners' messages only with OWNERS=true (test_owners covers the calls)


@pytest.mark.unit
def test_make_policy_carries_each_optional_statement_only_when_its_setting_is_on():
    from deploy_config import render_policy

    def sids(*options: str) -> set[str]:
        return {s["Sid"] for s in render_policy("111122223333", "eu-west-1", "rotate-keys", "iam-keys/", "", "/",
                                                *options)["Statement"]}

    optional = {"PublishRotationEvents", "ReadCredentialReport", "LookUpHoldouts"}
    assert not sids() & optional, "off by default: the least the function needs"
    assert sids("keys") & optional == {"PublishRotationEvents"}
    assert sids("", "true") & optional == {"ReadCredentialReport"}
    assert sids("", "", "true") & optional == {"LookUpHoldouts"}
    assert sids("", "false", "no") & optional == set()
    (lookup,) = [s for s in render_policy("111122223333", "eu-west-1", "f", "iam-keys/", "", "/", "", "", "true")[
        "Statement"] if s["Sid"] == "LookUpHoldouts"]
    assert lookup["Action"] == ["cloudtrail:LookupEvents"] and lookup["Resource"] == "*"


@pytest.mark.unit
def test_make_policy_owners_sends_mail_only_from_owner_sender_and_publishes_to_this_account_s_topics():
    from deploy_config import render_policy

    def statements(**options: str) -> dict[str, dict]:
        return {s["Sid"]: s for s in render_policy("111122223333", "eu-west-1", "f", "iam-keys/", "", "/",
                                                   **options)["Statement"]}

    owners = {"TellOwnersByEmail", "TellOwnersTopics", "MarkToldOwners"}
    assert not set(statements()) & owners, "off by default"
    assert set(statements(owners="true")) & owners == {"TellOwnersTopics", "MarkToldOwners"}, "no sender: no mail"
    made = statements(owners="true", owner_sender="keys@example.com", central_account_id="444455556666")
    assert made["TellOwnersByEmail"]["Condition"] == {"StringEquals": {"ses:FromAddress": "keys@example.com"}}
    assert made["TellOwnersByEmail"]["Resource"] == "arn:aws:ses:eu-west-1:111122223333:identity/*"
    assert made["TellOwnersTopics"]["Resource"] == ["arn:aws:sns:eu-west-1:111122223333:*",
                                                    "arn:aws:sns:eu-west-1:444455556666:*"]
    assert made["MarkToldOwners"]["Condition"] == {"ForAllValues:StringEquals": {"aws:TagKeys": ["key-rotation-told"]}}


@pytest.mark.unit
def test_roles_true_grants_the_roles_report_cloudtrail_and_every_user_s_key_ids_and_nothing_else():
    # Issue 41: the roles report judges keys no secret holds too: it lists their ids (iam:ListAccessKeys, on the
    # users under USER_PATH, unconditioned: it reads only) and asks CloudTrail (LookupEvents). Only with ROLES=true.
    import deploy_config

    def made(**values: str) -> dict:
        policy = deploy_config.render_policy("111122223333", "eu-west-1", "f", user_path="/key-rotation/", **values)
        return {s["Sid"]: s for s in policy["Statement"]}

    plain, roles = made(), made(roles="true")
    assert set(roles) - set(plain) == {"ListEveryUsersKeys", "LookUpHoldouts"}
    assert roles["ListEveryUsersKeys"]["Action"] == ["iam:ListAccessKeys"]
    assert roles["ListEveryUsersKeys"]["Resource"] == "arn:aws:iam::111122223333:user/key-rotation/*"


@pytest.mark.unit
@pytest.mark.parametrize("values", [{"notify_topic_arn": "arn:aws:sns:*:111122223333:alerts"},
                                    {"notify_topic_arn": "arn:*:sns:eu-west-1:111122223333:alerts"},
                                    {"event_bus": "arn:*:events:eu-west-1:111122223333:event-bus/central"},
                                    {"event_bus": "arn:aws:events:eu-*:111122223333:event-bus/central"}])
def test_make_policy_grants_no_wildcard_a_topic_or_bus_value_carries(values):
    import deploy_config

    with pytest.raises(SystemExit) as refused:
        deploy_config.render_policy("111122223333", "eu-west-1", "f", **values)
    assert refused.value.code == 2
