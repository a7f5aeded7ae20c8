"""Secrets Manager's own rotation: the four steps, idempotent, crash-safe, and through RotateSecret."""

from __future__ import annotations

import io
import json
import zipfile
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta

import pytest

import lambda_function
from conftest import STEPS, LambdaContext, step
from faults import CRASH, LOST_ONCE, REFUSED, TIMEOUT, Crash
from lambda_function import ConfigError, RotationError
from seed import ROWS, begin_rotation, enable_rotation, seed_row


def run_steps(secret: str, token: str) -> None:
    for name in STEPS:
        step(secret, token, name)


@contextmanager
def once_iam_can_show_use():
    """Every clock of the process (the function's, moto's) past LOST_KEY_WAIT: a key made now is the function's
    own lost key only once IAM's last-used data covers its life (tests/test_lagging_aws.py)."""
    import freezegun

    later = datetime.now(UTC) + lambda_function.LOST_KEY_WAIT + timedelta(minutes=1)
    with freezegun.freeze_time(later, tick=True, ignore=["_pytest.timing"]):
        yield


def assert_finished(aws, secret: str, token: str) -> None:
    """AWSCURRENT on the token's version, AWSPENDING nowhere, the keys in the steady state."""
    labels = aws.stages(secret)
    assert "AWSCURRENT" in labels[token]
    assert not any("AWSPENDING" in v for v in labels.values()), labels
    aws.assert_converged(secret)


@pytest.mark.parametrize("row", ROWS, ids=[r.name for r in ROWS])
def test_four_steps_rotate_every_row(aws, monkeypatch, row):
    seeded = seed_row(aws.iam, aws.secrets, row, user="alice")
    before = aws.value(seeded.secret)
    monkeypatch.delenv("sec", raising=False)  # not needed in this mode
    token = begin_rotation(seeded.secret)

    step(seeded.secret, token, "createSecret")
    pending = aws.value(seeded.secret, "AWSPENDING")
    assert aws.value(seeded.secret) == before, "AWSCURRENT untouched until finishSecret"
    if row.held is not None and row.statuses[row.held] == "Active":
        assert aws.holds_working_key(seeded.secret)
    assert aws.keys("alice")[pending["AccessKeyId"]] == "Active"

    for name in STEPS[1:]:
        step(seeded.secret, token, name)

    assert_finished(aws, seeded.secret, token)
    assert aws.value(seeded.secret) == pending
    assert aws.value(seeded.secret, "AWSPREVIOUS") == before
    if row.held is not None and row.statuses[row.held] == "Active":
        assert aws.keys("alice")[before["AccessKeyId"]] == "Inactive", "previous key kept as fallback"


def test_every_step_twice_converges(aws):
    seeded = seed_row(aws.iam, aws.secrets, ROWS[1], user="alice")
    token = begin_rotation(seeded.secret)
    for name in STEPS:
        step(seeded.secret, token, name)
        step(seeded.secret, token, name)
    assert_finished(aws, seeded.secret, token)
    assert len(aws.keys("alice")) == 2
    run_steps(seeded.secret, token)  # the whole rotation again: nothing more happens
    assert len(aws.versions(seeded.secret)) == 2 and len(aws.keys("alice")) == 2


def test_create_secret_leaves_the_current_key_alone_when_its_version_is_current(aws):
    seeded = seed_row(aws.iam, aws.secrets, ROWS[1], user="alice")
    enable_rotation(seeded.secret)
    current = next(v for v, s in aws.stages(seeded.secret).items() if "AWSCURRENT" in s)
    assert step(seeded.secret, current, "createSecret")["status"] == "already current"
    assert aws.keys("alice") == {seeded.key_ids[0]: "Active"}


@pytest.mark.parametrize("event, error", [
    ({"Step": "dance", "SecretId": "s", "ClientRequestToken": "t"}, ConfigError),
    ({"Step": "createSecret", "SecretId": "iam-keys/alice", "ClientRequestToken": "no-such-version-token-000000000000"},
     RotationError),
])
def test_bad_rotation_events_are_refused(aws, event, error):
    seed_row(aws.iam, aws.secrets, ROWS[1], user="alice")
    with pytest.raises(error):
        lambda_function.lambda_handler(event, None)
    assert len(aws.keys("alice")) == 1


def test_pending_key_that_never_verifies_fails_test_step_and_keeps_current(aws, monkeypatch):
    monkeypatch.setenv("VERIFY_TIMEOUT_SECONDS", "0.5")  # one try, then give up (no sleep)
    aws.sts.refusals = 1000
    seeded = seed_row(aws.iam, aws.secrets, ROWS[1], user="alice")
    token = begin_rotation(seeded.secret)
    step(seeded.secret, token, "createSecret")
    step(seeded.secret, token, "setSecret")
    with pytest.raises(RotationError, match="did not authenticate"):
        step(seeded.secret, token, "testSecret")
    assert aws.holds_working_key(seeded.secret)
    assert aws.keys("alice")[seeded.key_ids[0]] == "Active"


# Every mutating call of the steps, per row that makes it (create: delete/create/put; finish: labels, deactivate).
FAULT_CALLS = [
    ("one-active", "create_access_key"),
    ("one-active", "put_secret_value"),
    ("one-active", "update_secret_version_stage"),
    ("one-active", "update_secret_version_stage#2"),
    ("one-active", "update_access_key"),
    ("old-active-new-inactive", "delete_access_key"),
    ("two-active", "delete_access_key"),
    ("two-active", "update_access_key"),
]


@pytest.mark.parametrize("mode", [CRASH, REFUSED, TIMEOUT, LOST_ONCE])
@pytest.mark.parametrize("row_name, call", FAULT_CALLS, ids=[f"{r}-{c}" for r, c in FAULT_CALLS])
def test_fault_then_same_token_retry_then_new_rotation_converge(aws, faults, monkeypatch, row_name, call, mode):
    row = next(r for r in ROWS if r.name == row_name)
    seeded = seed_row(aws.iam, aws.secrets, row, user="alice")
    token = begin_rotation(seeded.secret)
    method, _, nth = call.partition("#")
    fault = faults.inject(method, mode, int(nth or 1))

    try:
        run_steps(seeded.secret, token)
        failed = False
    except (Crash, RotationError):
        failed = True
    assert fault.fired
    assert failed or mode in (TIMEOUT, LOST_ONCE), "a refusal or a crash is not hidden"
    if row.statuses[row.held] == "Active":
        assert aws.holds_working_key(seeded.secret)

    faults.clear()
    with once_iam_can_show_use():  # a key the fault left is judged once IAM can show it unused
        if failed:  # (a lost answer botocore's retry or the function's re-read recovered from needs no retry)
            run_steps(seeded.secret, token)  # Secrets Manager retries the same rotation
        assert_finished(aws, seeded.secret, token)

        later = begin_rotation(seeded.secret)  # and a later rotation
        run_steps(seeded.secret, later)
        assert_finished(aws, seeded.secret, later)


def test_retried_create_after_crash_deletes_the_key_the_crashed_attempt_made(aws, faults, monkeypatch):
    # A crash between CreateAccessKey and the store leaves a key no secret holds, never used, made just after
    # the function marked the user (key-rotation-made): its own, whose secret was only in the lost answer. A retry
    # before IAM's last-used data covers the key's life refuses (no room, and IAM cannot yet show the key unused:
    # it may be a person's); the retry after deletes it first and converges.
    seeded = seed_row(aws.iam, aws.secrets, ROWS[3], user="alice")  # 1 active + 1 inactive: no room to spare
    token = begin_rotation(seeded.secret)
    faults.inject("create_access_key", CRASH)
    with pytest.raises(Crash):
        step(seeded.secret, token, "createSecret")
    (orphan,) = set(aws.keys("alice")) - set(seeded.key_ids)
    faults.clear()
    with pytest.raises(RotationError, match=f"{orphan} may be this function's own unstored key"):
        step(seeded.secret, token, "createSecret")
    assert aws.keys("alice")[orphan] == "Active"
    with once_iam_can_show_use():
        run_steps(seeded.secret, token)
    assert orphan not in aws.keys("alice")
    assert_finished(aws, seeded.secret, token)


# --- through moto's RotateSecret ------------------------------------------------------------------------------------


@pytest.fixture
def rotation_function(aws, monkeypatch):
    """A Lambda function in moto whose invocations run our handler in-process."""
    from moto.awslambda.models import LambdaBackend

    role = aws.iam.create_role(RoleName="rotation", AssumeRolePolicyDocument=json.dumps({
        "Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "sts:AssumeRole",
                                                 "Principal": {"Service": "lambda.amazonaws.com"}}]}))["Role"]["Arn"]
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as zf:
        zf.write(lambda_function.__file__, "lambda_function.py")
    import boto3

    function = boto3.client("lambda").create_function(
        FunctionName="iam-key-rotation", Runtime="python3.12", Role=role, Handler="lambda_function.lambda_handler",
        Code={"ZipFile": archive.getvalue()})["FunctionArn"]
    invoked = []

    def invoke(self, function_name, qualifier, body, headers, response_headers):
        event = json.loads(body)
        invoked.append(event["Step"])
        return json.dumps(lambda_function.lambda_handler(event, LambdaContext(function))).encode()

    monkeypatch.setattr(LambdaBackend, "invoke", invoke)
    return function, invoked


def test_rotate_secret_runs_the_four_steps_through_the_handler(aws, rotation_function):
    function, invoked = rotation_function
    seeded = seed_row(aws.iam, aws.secrets, ROWS[3], user="alice")
    for _ in range(3):
        before = aws.value(seeded.secret)
        # moto enables rotation only for AutomaticallyAfterDays rules (AWS does for any rule).
        aws.secrets.rotate_secret(SecretId=seeded.secret, RotationLambdaARN=function,
                                  RotationRules={"AutomaticallyAfterDays": 30})
        after = aws.value(seeded.secret)
        assert after["AccessKeyId"] != before["AccessKeyId"]
        assert aws.keys("alice") == {before["AccessKeyId"]: "Inactive", after["AccessKeyId"]: "Active"}
        aws.assert_converged(seeded.secret)
        labels = aws.stages(seeded.secret)
        assert not any("AWSPENDING" in v for v in labels.values())
    assert invoked == list(STEPS) * 3


def test_batch_run_after_a_rotation_reads_the_new_current_version(aws, invoke):
    seeded = seed_row(aws.iam, aws.secrets, ROWS[1], user="alice")
    token = begin_rotation(seeded.secret)
    run_steps(seeded.secret, token)
    enable_rotation(seeded.secret, enabled=False)  # rotation turned off: the schedule takes the secret over
    rotated_in = aws.value(seeded.secret)["AccessKeyId"]
    result = invoke(seeded.secret)
    assert result["secrets"][0]["old_key_id"] == rotated_in
    assert aws.keys("alice") == {rotated_in: "Inactive", result["secrets"][0]["new_key_id"]: "Active"}


def test_refused_pending_write_deletes_the_new_key_at_once(aws, faults, monkeypatch):
    seeded = seed_row(aws.iam, aws.secrets, ROWS[1], user="alice")
    token = begin_rotation(seeded.secret)
    faults.inject("put_secret_value", REFUSED)
    with pytest.raises(RotationError, match="new key deleted, old key unchanged"):
        step(seeded.secret, token, "createSecret")
    assert aws.keys("alice") == {seeded.key_ids[0]: "Active"}


def test_a_step_whose_describe_secret_times_out_fails_as_a_refusal_not_a_crash(aws, faults):
    # Found by the model: no answer to DescribeSecret (every attempt's answer lost) escaped the handler as
    # botocore's ReadTimeoutError. It is the secret's failure, said as the others are; nothing changed.
    seeded = seed_row(aws.iam, aws.secrets, ROWS[1], user="alice")
    token = begin_rotation(seeded.secret)
    faults.inject("describe_secret", TIMEOUT)
    with pytest.raises(RotationError, match="DescribeSecret"):
        step(seeded.secret, token, "createSecret")
    faults.clear()
    assert aws.keys("alice") == {seeded.key_ids[0]: "Active"}


def test_create_secret_writes_down_the_person_s_key_it_adopts_as_the_batch_does(aws):
    # Found by make fuzz: createSecret met a person's new key (held by no secret) and planned around it as
    # adopted, but wrote nothing down; the batch skips a secret in rotation mode, so no run recorded it while it
    # was young. Weeks later, rotation off, the first batch run found an old key IAM showed idle (its newest use
    # not shown yet) and deleted it. Every entry point records what it adopts (record_adoptions).
    seeded = seed_row(aws.iam, aws.secrets, ROWS[1], user="alice")
    person = aws.iam.create_access_key(UserName="alice")["AccessKey"]["AccessKeyId"]
    token = begin_rotation(seeded.secret)
    with pytest.raises(RotationError, match="no room"):
        step(seeded.secret, token, "createSecret")
    tags = {t["Key"]: t["Value"] for t in aws.iam.list_user_tags(UserName="alice")["Tags"]}
    assert person in tags.get(lambda_function.ADOPTED_TAG, ""), tags
    assert aws.keys("alice")[person] == "Active"


def test_a_key_adopted_in_rotation_mode_is_told_and_given_its_whole_wait_by_the_batch_s_first_run(
        aws, invoke, clock, monkeypatch):
    # Rotation mode tells no owner, and the adoption createSecret wrote down starts the gate: weeks later, rotation
    # off, the batch must not deactivate the key at once, its owner never told. The batch's first run adopts it
    # afresh: its owner hears, and the key stays Active for the whole wait.
    import boto3

    seeded = seed_row(aws.iam, aws.secrets, ROWS[1], user="alice")
    person = aws.iam.create_access_key(UserName="alice")["AccessKey"]["AccessKeyId"]
    token = begin_rotation(seeded.secret)
    with pytest.raises(RotationError, match="no room"):
        step(seeded.secret, token, "createSecret")
    aws.secrets.update_secret_version_stage(SecretId=seeded.secret, VersionStage="AWSPENDING",
                                            RemoveFromVersionId=token)  # the operator turns rotation off
    enable_rotation(seeded.secret, enabled=False)
    clock.advance(30 * 86400)
    boto3.client("ses").verify_email_identity(EmailAddress="keys@example.com")
    monkeypatch.setenv("OWNER_SENDER", "keys@example.com")
    aws.iam.tag_user(UserName="alice", Tags=[{"Key": lambda_function.OWNER_TAG, "Value": "alice@example.com"}])
    result = invoke(seeded.secret)
    assert aws.keys("alice")[person] == "Active", result["secrets"]
    assert [(e["case"], e["key_id"], e["status"]) for e in result["owners_told"]] == [("adopted", person, "told")]


def test_a_retried_finish_reads_the_previous_version_once(aws, faults):
    # finishSecret after AWSCURRENT already moved (a retry): the key AWSPREVIOUS holds is the old key; it is read
    # once, and the plan's holders use that same read.
    seeded = seed_row(aws.iam, aws.secrets, next(r for r in ROWS if r.name == "two-active"), user="alice")
    token = begin_rotation(seeded.secret)
    for name in STEPS[:3]:
        step(seeded.secret, token, name)
    faults.inject("update_access_key", REFUSED, error=("AccessDenied", "not allowed", 403))
    with pytest.raises(RotationError):
        step(seeded.secret, token, "finishSecret")
    faults.clear()
    reads = faults.watch("get_secret_value")
    step(seeded.secret, token, "finishSecret")
    assert_finished(aws, seeded.secret, token)
    stages = [json.loads(r["body"]).get("VersionStage") for r in reads]
    assert stages.count("AWSPREVIOUS") == 1, stages
