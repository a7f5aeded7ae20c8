"""Secure by default, tried as an attacker would: a writable secret gives its writer no key they could not
already get; invoking the function gives the invoker nothing beyond the listed secrets' rotation; no secret
value is echoed, AWS's own error messages included."""

from __future__ import annotations

import json
import logging
import traceback

import pytest
from awslambdaric.bootstrap import make_error

import lambda_function
from conftest import STEPS, LambdaContext, step
from faults import REFUSED
from lambda_function import RotationError, RotationFailed
from seed import FUNCTION_ARN, ROWS, begin_rotation, enable_rotation, seed_row, seed_user


def snapshot(aws, secret: str, user: str) -> tuple:
    return aws.keys(user), aws.stages(secret), aws.value(secret)


# --- a secret pointed at someone else's user ------------------------------------------------------------------------


@pytest.fixture
def admin(aws):
    """An admin with a key, and a listed secret its writer pointed at the admin."""
    aws.iam.create_user(UserName="admin")
    key = aws.iam.create_access_key(UserName="admin")["AccessKey"]["AccessKeyId"]
    aws.secrets.create_secret(Name="iam-keys/app", SecretString=json.dumps({"UserName": "admin"}))
    return key


def tag(aws, user: str, value: str) -> None:
    aws.iam.tag_user(UserName=user, Tags=[{"Key": "key-rotation-secret", "Value": value}])


TAGS = {
    "untagged": None,
    "tagged-with-the-name-only": "iam-keys/app",
    "tagged-for-another-secret": "arn:aws:secretsmanager:us-east-1:123456789012:secret:iam-keys/other-AbCdEf",
}


@pytest.mark.parametrize("how", TAGS)
def test_a_secret_pointed_at_an_admin_is_refused_in_batch(aws, invoke, admin, how):
    if TAGS[how]:
        tag(aws, "admin", TAGS[how])
    before = snapshot(aws, "iam-keys/app", "admin")
    with pytest.raises(RotationFailed) as failure:
        invoke("iam-keys/app")
    message = str(failure.value)
    arn = aws.secrets.describe_secret(SecretId="iam-keys/app")["ARN"]
    assert "refused: IAM user 'admin'" in message
    # It names the tag and the ARNs, never a ready-to-paste command that would grant.
    assert "key-rotation-secret" in message and arn in message
    assert "aws iam tag-user" not in message
    if how == "tagged-for-another-secret":
        assert TAGS[how] in message
    assert snapshot(aws, "iam-keys/app", "admin") == before
    assert aws.keys("admin") == {admin: "Active"}


@pytest.mark.parametrize("how", TAGS)
def test_a_secret_pointed_at_an_admin_is_refused_in_rotation_mode(aws, admin, how):
    if TAGS[how]:
        tag(aws, "admin", TAGS[how])
    token = begin_rotation("iam-keys/app")
    for name in ("createSecret", "finishSecret"):
        with pytest.raises(RotationError, match="refused: IAM user 'admin'"):
            step("iam-keys/app", token, name)
    assert aws.keys("admin") == {admin: "Active"}
    assert json.loads(aws.secrets.get_secret_value(SecretId="iam-keys/app")["SecretString"]) == {"UserName": "admin"}


def test_the_guard_is_on_unless_turned_off_explicitly(aws, invoke, monkeypatch):
    seeded = seed_user(aws.iam, aws.secrets, "untagged", ("Active",), held=0, tag=False)
    with pytest.raises(RotationFailed, match="has no tag"):
        invoke(seeded.secret)
    monkeypatch.setenv("REQUIRE_USER_TAG", "false")
    invoke(seeded.secret)
    aws.assert_converged(seeded.secret)


def test_the_tag_is_checked_again_just_before_the_key_is_made(aws, invoke):
    # Read pass and rotate pass can be far apart: the tag is read in the pass that creates the key.
    seeded = seed_row(aws.iam, aws.secrets, ROWS[1], user="alice")
    clients = lambda_function.aws_clients(lambda_function.Settings())
    order = []
    clients.iam.meta.events.register("before-call.iam.*", lambda model, **_: order.append(model.name))
    invoke(seeded.secret)
    assert order.index("ListUserTags") < order.index("CreateAccessKey")
    assert order[0] == "ListUserTags", "nothing of the user's is touched before the tag is read"


# --- rotation events are authorised ---------------------------------------------------------------------------------


@pytest.mark.parametrize("case", ["rotation-off", "another-function", "no-context", "no-such-version"])
def test_a_step_event_that_is_not_this_functions_rotation_is_refused(aws, case):
    seeded = seed_row(aws.iam, aws.secrets, ROWS[1], user="alice")
    token = begin_rotation(seeded.secret, function_arn=None if case == "rotation-off" else FUNCTION_ARN)
    context = LambdaContext()
    if case == "another-function":
        context = LambdaContext("arn:aws:lambda:us-east-1:123456789012:function:someone-elses")
    if case == "no-context":
        context = object()
    if case == "no-such-version":
        token = "0" * 36
    before = snapshot(aws, seeded.secret, "alice")
    with pytest.raises(RotationError, match="refused"):
        step(seeded.secret, token, "createSecret", context)
    assert snapshot(aws, seeded.secret, "alice") == before


def test_a_step_event_for_an_alias_or_version_of_this_function_is_served(aws):
    seeded = seed_row(aws.iam, aws.secrets, ROWS[1], user="alice")
    token = begin_rotation(seeded.secret)
    for name in STEPS:
        step(seeded.secret, token, name, LambdaContext(f"{FUNCTION_ARN}:live"))
    aws.assert_converged(seeded.secret)


def test_a_step_event_for_a_secret_outside_sec_is_served_only_by_its_rotation_config(aws, monkeypatch):
    # sec does not list it: what authorises a step is the secret's own rotation naming this function.
    monkeypatch.setenv("sec", "iam-keys/something-else")
    seeded = seed_row(aws.iam, aws.secrets, ROWS[1], user="alice")
    enable_rotation(seeded.secret, "arn:aws:lambda:us-east-1:123456789012:function:other")
    token = begin_rotation(seeded.secret, function_arn=None)
    with pytest.raises(RotationError, match="refused"):
        step(seeded.secret, token, "createSecret")
    assert aws.keys("alice") == {seeded.key_ids[0]: "Active"}


# --- identity checks compare the account ----------------------------------------------------------------------------


def test_a_key_that_authenticates_as_the_same_name_in_another_account_is_refused(aws, invoke, sts):
    seeded = seed_row(aws.iam, aws.secrets, ROWS[1], user="alice")
    sts.answer = {"Arn": "arn:aws:iam::999999999999:user/alice"}
    with pytest.raises(RotationFailed, match="not as user 'alice' of account 123456789012"):
        invoke(seeded.secret)
    assert aws.keys("alice")[seeded.key_ids[0]] == "Active", "old key left Active"
    assert aws.value(seeded.secret, "AWSPREVIOUS")["AccessKeyId"] == seeded.key_ids[0]


# --- nothing echoed -------------------------------------------------------------------------------------------------


def lambda_error_response(err: BaseException) -> str:
    """The error response Lambda's runtime (awslambdaric) builds from an exception the handler raised."""
    stack = traceback.format_list(traceback.extract_tb(err.__traceback__))
    return json.dumps(make_error(str(err), type(err).__name__, stack, "request-id"))


def chain_text(err: BaseException | None) -> str:
    """Every exception an error chains (cause or context), as text, with their attributes."""
    seen = []
    while err is not None:
        seen.append(f"{err!r} {vars(err) if hasattr(err, '__dict__') else ''}")
        err = err.__cause__ or err.__context__
    return "\n".join(seen)


@pytest.mark.parametrize("operation", ["put_secret_value", "batch_get_secret_value"])
@pytest.mark.parametrize("status", [400, 500])
def test_an_aws_error_that_echoes_the_secret_is_not_repeated(aws, invoke, faults, monkeypatch, caplog, capsys,
                                                             operation, status):
    # The error answer, at the wire, quotes the value sent (PutSecretValue) or held (BatchGetSecretValue).
    caplog.set_level(logging.DEBUG)
    monkeypatch.setenv("LOG_LEVEL", "DEBUG")
    seeded = seed_row(aws.iam, aws.secrets, ROWS[1], user="alice")
    held = aws.secrets.get_secret_value(SecretId=seeded.secret)["SecretString"]
    echoed: list[str] = []

    def echo(request) -> str:
        echoed.append(json.loads(request.body)["SecretString"] if operation == "put_secret_value" else held)
        return f"bad value: {echoed[-1]}"

    code = "ValidationException" if status == 400 else "InternalServiceError"
    faults.inject(operation, REFUSED, error=(code, echo, status))
    with pytest.raises(RotationFailed) as failure:
        invoke(seeded.secret)
    faults.clear()

    secret_parts = {json.loads(text)["SecretAccessKey"] for text in echoed if "SecretAccessKey" in text}
    assert secret_parts
    seen = caplog.text + capsys.readouterr().out + lambda_error_response(failure.value) + chain_text(failure.value)
    for part in secret_parts:
        assert part not in seen
    assert aws.holds_working_key(seeded.secret)


def test_records_holding_a_secret_do_not_show_it(aws):
    seeded = seed_row(aws.iam, aws.secrets, ROWS[1], user="alice")
    clients = lambda_function.aws_clients(lambda_function.Settings())
    (record,) = lambda_function.read_secrets(clients, [seeded.secret], map)
    secret = record.value["SecretAccessKey"]
    key = lambda_function.held_key(record)
    for thing in (record, key, lambda_function.Check(record, key)):
        assert secret not in repr(thing)


def test_a_bad_json_value_does_not_travel_in_the_error(aws, invoke):
    # json's error keeps the whole document: it must not be chained to what the function raises (a rotation
    # step's error reaches Lambda's runtime as it is).
    aws.secrets.create_secret(Name="iam-keys/broken", SecretString='{"UserName": "x", "SecretAccessKey": "S3CR3T"')
    with pytest.raises(RotationFailed) as failure:
        invoke("iam-keys/broken")
    token = begin_rotation("iam-keys/broken")
    with pytest.raises(RotationError) as step_failure:
        step("iam-keys/broken", token, "createSecret")
    for err in (failure.value, step_failure.value):
        assert "S3CR3T" not in lambda_error_response(err) + chain_text(err)


def test_verification_signs_with_the_key_being_checked_and_not_the_role(aws, monkeypatch):
    # One STS client serves every key (botocore's per-request signing credentials): prove the request is
    # signed with the key under test and carries no session token of the function's role.
    monkeypatch.setenv("AWS_SESSION_TOKEN", "the-roles-session-token")
    lambda_function.clients_for.cache_clear()
    aws.iam.create_user(UserName="u")
    key = aws.iam.create_access_key(UserName="u")["AccessKey"]
    clients = lambda_function.aws_clients(lambda_function.Settings())
    sent = []
    clients.identity.client.meta.events.register(
        "before-send.sts.GetCallerIdentity", lambda request, **_: sent.append(
            {k: v.decode() if isinstance(v, bytes) else v for k, v in request.headers.items()}))
    answer = clients.identity.caller_identity(lambda_function.AccessKey(key["AccessKeyId"], key["SecretAccessKey"]))
    assert f"Credential={key['AccessKeyId']}/" in sent[0]["Authorization"]
    assert "X-Amz-Security-Token" not in sent[0]
    assert answer["Arn"].endswith(":user/u")
    with pytest.raises(RuntimeError, match="without a key"):  # never signed as the role by mistake
        clients.identity.client.get_caller_identity()
