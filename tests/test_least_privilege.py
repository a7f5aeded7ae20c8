"""Least privilege: the role's actions suffice and each is needed (moto enforcing IAM), and the user-tag guard."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import boto3
import pytest
from moto import mock_aws
from moto.core import set_initial_no_auth_action_count

import lambda_function
from conftest import STEPS, LambdaContext
from seed import begin_rotation, seed_user

ROOT = Path(__file__).parent.parent
POLICY = json.loads((ROOT / "LambdaExecutionRole.json").read_text())
ACTIONS = sorted({
    action
    for statement in POLICY["Statement"]
    for action in ([statement["Action"]] if isinstance(statement["Action"], str) else statement["Action"])
})  # once each (iam:TagUser is in two statements: the marks, and OWNERS=true's key-rotation-told)
OPTIONAL = ("iam:GenerateCredentialReport", "iam:GetCredentialReport")  # ACCOUNT_REPORT only (make policy drops them)
# Read only when a key leaks (whether AWS quarantined the user): without it the report says "not known".
LEAK_ONLY = ("iam:ListAttachedUserPolicies",)
CODE_ACTIONS = [a for a in ACTIONS if a.split(":")[0] in ("iam", "secretsmanager") and a not in OPTIONAL + LEAK_ONLY]


def admin_clients():
    """Unauthenticated calls 1-3 make an admin; everything after is checked by moto."""
    iam = boto3.client("iam")
    iam.create_user(UserName="admin")
    iam.put_user_policy(UserName="admin", PolicyName="all", PolicyDocument=json.dumps(
        {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}))
    key = iam.create_access_key(UserName="admin")["AccessKey"]
    creds = {"aws_access_key_id": key["AccessKeyId"], "aws_secret_access_key": key["SecretAccessKey"]}
    return boto3.client("iam", **creds), boto3.client("secretsmanager", **creds)


def run_as_role(monkeypatch, actions: list[str]) -> str | None:
    """Rotate in batch (with REQUIRE_USER_TAG) and in rotation mode as a principal holding `actions`.

    moto checks actions, not resources or conditions, so the principal's policy
    has the role's actions on every resource. Returns None, or the failure.
    """

    @set_initial_no_auth_action_count(3)
    def scenario() -> str | None:
        iam, secrets = admin_clients()
        # found by the prefix: a steady-state rotation, and a previous key still Active to retire
        batch = seed_user(iam, secrets, "app-batch", ("Inactive", "Active"), held=1, secret="iam-keys/app-batch")
        settle = seed_user(iam, secrets, "app-settle", ("Active", "Active"), held=0, secret="iam-keys/app-settle")
        newer = iam_key(iam, "app-settle", settle.key_ids[1])
        secrets.put_secret_value(SecretId=settle.secret, SecretString=json.dumps(newer))
        rotated = seed_user(iam, secrets, "app-rotated", ("Active",), held=0, secret="iam-keys/rotated")
        iam.create_user(UserName="rotator")
        iam.put_user_policy(UserName="rotator", PolicyName="role", PolicyDocument=json.dumps(
            {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": actions, "Resource": "*"}]}))
        key = iam.create_access_key(UserName="rotator")["AccessKey"]
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", key["AccessKeyId"])
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", key["SecretAccessKey"])
        monkeypatch.setenv("sec", "iam-keys/app-*")
        try:
            result = lambda_function.lambda_handler({}, None)
            assert (result["rotated"], result["retired"]) == (1, 1), result
            token = begin_rotation(rotated.secret)
            for step in STEPS:
                lambda_function.lambda_handler(
                    {"Step": step, "SecretId": rotated.secret, "ClientRequestToken": token}, LambdaContext())
        except Exception as err:  # noqa: BLE001 - the failure is the result
            return f"{type(err).__name__}: {err}"
        for seeded in (batch, rotated):  # the rotations really happened, with working keys
            value = json.loads(secrets.get_secret_value(SecretId=seeded.secret, VersionStage="AWSCURRENT")[
                "SecretString"])
            keys = {k["AccessKeyId"]: k["Status"] for k in
                    iam.list_access_keys(UserName=seeded.user)["AccessKeyMetadata"]}
            assert value["AccessKeyId"] not in seeded.key_ids and keys[value["AccessKeyId"]] == "Active"
            assert [k for k, s in keys.items() if s == "Active"] == [value["AccessKeyId"]]
        return None

    from moto.moto_api._internal.models import moto_api_backend

    with mock_aws():
        moto_api_backend.reset()  # inside the worker's moto (conftest), an empty account of its own
        return scenario()


def iam_key(iam, user: str, key_id: str) -> dict:
    """A secret value holding one of the user's keys (its SecretAccessKey from moto's state)."""
    from seed import iam_secret_keys

    return {"UserName": user, "AccessKeyId": key_id, "SecretAccessKey": iam_secret_keys(user)[key_id]}


@pytest.mark.aws  # moto in-process, under mock_aws of its own
def test_the_roles_actions_suffice(monkeypatch):
    assert run_as_role(monkeypatch, ACTIONS) is None


@pytest.mark.aws
@pytest.mark.parametrize("missing", CODE_ACTIONS)
def test_each_action_is_needed(monkeypatch, missing):
    failure = run_as_role(monkeypatch, [a for a in ACTIONS if a != missing])
    assert failure is not None, f"the rotation worked without {missing}"
    # moto answers a Secrets Manager denial without an error code (botocore then uses the HTTP status), and
    # the function repeats only the code of a call that carries a secret value.
    assert "AccessDenied" in failure or "failed: 403" in failure


def test_the_rest_are_logs_kms_via_secrets_manager_and_optional_events():
    # events:PutEvents is in the file for EVENT_BUS; make policy drops it unless EVENT_BUS= is given.
    assert set(ACTIONS) - set(CODE_ACTIONS) == {
        "logs:CreateLogGroup", "logs:CreateLogStream", "logs:PutLogEvents", "kms:Decrypt", "kms:GenerateDataKey",
        "events:PutEvents", "iam:GenerateCredentialReport", "iam:GetCredentialReport", "cloudtrail:LookupEvents",
        "ses:SendEmail", "sns:Publish", *LEAK_ONLY}  # the owners' (OWNERS=true only)
    (kms,) = [s for s in POLICY["Statement"] if s["Sid"] == "UseSecretsKeyOnlyViaSecretsManager"]
    assert kms["Condition"] == {
        "StringEquals": {"kms:ViaService": "secretsmanager.REGION.amazonaws.com"},
        "StringLike": {"kms:EncryptionContext:SecretARN": "arn:aws:secretsmanager:REGION:ACCOUNT_ID:secret:iam-keys/*"}}


def test_every_statement_is_scoped_but_listing_secrets():
    for statement in POLICY["Statement"]:
        if statement["Sid"] == "ListAndBatchReadSecrets":  # these take no resource: AWS allows only "*"
            assert statement["Action"] == ["secretsmanager:ListSecrets", "secretsmanager:BatchGetSecretValue"]
            assert statement["Resource"] == "*"
            continue
        if statement["Sid"] == "ReadCredentialReport":  # account-wide reads, no resource: only "*" (and optional)
            assert statement["Action"] == list(OPTIONAL) and statement["Resource"] == "*"
            continue
        if statement["Sid"] == "LookUpHoldouts":  # LookupEvents takes no resource: only "*" (and optional)
            assert statement["Action"] == ["cloudtrail:LookupEvents"] and statement["Resource"] == "*"
            continue
        assert "*" not in statement["Resource"].split(":")[2:5], statement["Sid"]
        assert statement["Resource"].startswith("arn:aws:"), statement["Sid"]


def test_changing_users_keys_needs_the_user_to_name_a_key_secret():
    (keys,) = [s for s in POLICY["Statement"] if "iam:CreateAccessKey" in s["Action"]]
    assert keys["Condition"] == {"StringLike": {
        "aws:ResourceTag/key-rotation-secret": "arn:aws:secretsmanager:REGION:ACCOUNT_ID:secret:iam-keys/*"}}
    # (the roles report's ListEveryUsersKeys, ROLES=true only, reads any user's key ids: it changes nothing)
    unconditioned = [a for s in POLICY["Statement"] if "Condition" not in s and s["Sid"] != "ListEveryUsersKeys"
                     for a in s["Action"]]
    assert not [a for a in unconditioned if a.startswith("iam:") and a != "iam:ListUserTags" and a not in OPTIONAL]


@pytest.mark.e2e  # the linter runs as make lint runs it, in a process of its own
def test_policy_linter_flags_what_is_not_explained(tmp_path):
    loose = tmp_path / "loose.json"
    loose.write_text(json.dumps({"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Action": ["secretsmanager:GetSecretValue"], "Resource": "*"}]}))
    done = subprocess.run([sys.executable, "tools/lint_policy.py", str(loose)], cwd=ROOT, capture_output=True,
                          text=True)
    assert done.returncode == 1 and "RESOURCE_STAR" in done.stdout
    ours = subprocess.run([sys.executable, "tools/lint_policy.py", "LambdaExecutionRole.json"], cwd=ROOT,
                          capture_output=True, text=True)
    assert ours.returncode == 0, ours.stdout
