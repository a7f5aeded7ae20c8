"""Every entry point against every rule: a new entry point or rule is added here.

Entry points: the daily batch, a targeted run, force, rollback, settling a previous key, and the four
rotation steps. Rules: authority (only the secret the user's tag names acts), holds (a skip tag or a dry
run binds every entry point), verify before retire (no held key is retired before the key the secret holds
has authenticated), and, for rotation steps, no value is read before the metadata guard.

Each case starts from the same state: alice rotated once with a grace period, so AWSPREVIOUS holds her old
key, still Active, and every entry point has something it could do. Each asserts the keys and secret
versions left behind. STS is the conftest's stand-in (moto's STS accepts any key).
"""

from __future__ import annotations

import json

import pytest

from between_runs import expire
from conftest import STEPS, step
from faults import record_calls
from lambda_function import ConfigError, RotationError, RotationFailed
from seed import ROWS, begin_rotation, enable_rotation, iam_secret_keys, seed_row, seed_user, set_last_used

BATCH_ENTRIES = {
    "batch": None,
    "targeted": "secrets",
    "force": "force",
    "rollback": "rollback",
    "settle": None,  # the batch, after the grace period: it retires the previous key
    "exposed": "exposed",  # a leak of the key the secret holds (AWS Health, or the operator)
}
ENTRIES = [*BATCH_ENTRIES, *STEPS]


@pytest.fixture
def alice(aws, invoke, clock, monkeypatch):
    """alice rotated once with GRACE_HOURS=1: AWSCURRENT holds the new key, AWSPREVIOUS the old, still Active."""
    monkeypatch.setenv("GRACE_HOURS", "1")
    seeded = seed_row(aws.iam, aws.secrets, ROWS[1], user="alice")
    invoke(seeded.secret)
    assert aws.keys("alice")[seeded.key_ids[0]] == "Active"
    return seeded


def enter(entry: str, secret: str, invoke, clock) -> None:
    """Run one entry point on the secret, as its trigger would."""
    if entry in STEPS:
        enable_rotation(secret)
        step(secret, begin_rotation(secret), entry)
        return
    if entry == "settle":
        clock.advance(2 * 3600)
    control = BATCH_ENTRIES[entry]
    event = {} if control is None else {control: True} if control == "force" else {control: [secret]}
    if control == "exposed":
        import boto3

        value = boto3.client("secretsmanager").get_secret_value(SecretId=secret)["SecretString"]
        event = {"exposed": [json.loads(value)["AccessKeyId"]]}
    invoke(secret, event=event)


def snapshot(aws, secret: str) -> tuple:
    """What an entry point may change: the user's keys and the secret's versions and labels."""
    return aws.keys("alice"), aws.stages(secret)


def without_pending(stages: dict) -> dict:
    """The stages, less the empty AWSPENDING version that begin_rotation (RotateSecret) itself stages."""
    return {v: labels for v, labels in stages.items() if labels != ["AWSPENDING"]}


# --- authority ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("entry", ENTRIES)
def test_a_secret_the_user_does_not_name_is_refused_at_every_entry_point(aws, invoke, clock, alice, entry):
    other = "arn:aws:secretsmanager:us-east-1:123456789012:secret:iam-keys/other-AbCdEf"
    aws.iam.tag_user(UserName="alice", Tags=[{"Key": "key-rotation-secret", "Value": other}])
    keys, stages = snapshot(aws, alice.secret)
    if entry == "exposed":  # the tag names another secret: a leak of alice's key is reported, nothing changed
        enter(entry, alice.secret, invoke, clock)
    else:
        with pytest.raises((RotationFailed, RotationError), match="refused: IAM user 'alice' has tag"):
            enter(entry, alice.secret, invoke, clock)
    assert aws.keys("alice") == keys
    assert without_pending(aws.stages(alice.secret)) == stages


@pytest.mark.parametrize("entry", ["batch", "targeted", "force"])
def test_a_secret_without_authority_holds_none_of_the_users_keys(aws, invoke, clock, entry):
    # Someone who may write secrets under the prefix names alice's current key in a secret of their own,
    # tagged skip. With the guard on it holds nothing: alice's old key is still retired.
    seeded = seed_row(aws.iam, aws.secrets, ROWS[1], user="alice")
    old = seeded.key_ids[0]
    aws.secrets.create_secret(Name="iam-keys/zz", SecretString=json.dumps(
        {"UserName": "alice", "AccessKeyId": old}), Tags=[{"Key": "key-rotation:mode", "Value": "skip"}])
    event = {} if entry == "batch" else {"force": True} if entry == "force" else {"secrets": [seeded.secret]}
    try:
        invoke(sec="iam-keys/*", event=event)
    except RotationFailed as failed:  # the squatter itself is refused, loudly; it changes nothing for alice
        assert str(failed).startswith("1 of 2") and "secret 'iam-keys/zz': refused" in str(failed)
    assert aws.keys("alice")[old] == "Inactive"
    aws.assert_converged(seeded.secret)


# --- holds ----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("hold", ["tag-skip", "tag-dry-run", "env-dry-run"])
@pytest.mark.parametrize("entry", ENTRIES)
def test_a_hold_binds_every_entry_point(aws, invoke, clock, monkeypatch, alice, entry, hold):
    if hold == "env-dry-run":
        monkeypatch.setenv("DRY_RUN", "true")
    else:
        aws.secrets.tag_resource(SecretId=alice.secret,
                                 Tags=[{"Key": "key-rotation:mode", "Value": hold.removeprefix("tag-")}])
    keys, stages = snapshot(aws, alice.secret)
    refuses = entry in STEPS and (hold == "tag-skip" or entry in ("createSecret", "finishSecret"))
    if refuses:
        with pytest.raises(RotationError, match="refused"):
            enter(entry, alice.secret, invoke, clock)
    else:
        try:
            enter(entry, alice.secret, invoke, clock)
        except RotationError as err:  # testSecret of a version createSecret never filled: nothing to test
            assert entry == "testSecret" and "holds no access key" in str(err)
    assert aws.keys("alice") == keys
    assert without_pending(aws.stages(alice.secret)) == stages


# --- verify before retire -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("entry", ["batch", "targeted", "force", "settle", "exposed", "finishSecret"])
def test_no_held_key_is_retired_before_the_current_key_authenticates(aws, invoke, clock, sts, monkeypatch, alice,
                                                                      entry):
    monkeypatch.setenv("VERIFY_TIMEOUT_SECONDS", "4")
    old, current = alice.key_ids[0], aws.value(alice.secret)["AccessKeyId"]
    if entry == "finishSecret":  # a rotation with room for its new key: the old key retires at finish
        aws.iam.delete_access_key(UserName="alice", AccessKeyId=old)
        aws.secrets.put_secret_value(SecretId=alice.secret, SecretString=aws.secrets.get_secret_value(
            SecretId=alice.secret)["SecretString"])  # AWSPREVIOUS no longer names the deleted key
        old = current
        enable_rotation(alice.secret)
        token = begin_rotation(alice.secret)
        for name in ("createSecret", "setSecret"):
            step(alice.secret, token, name)
    sts.refusals = 10**6  # no key authenticates
    with pytest.raises((RotationFailed, RotationError), match="did not authenticate"):
        if entry == "finishSecret":  # on the test's clock: the 4 s the check waits pass on it, not in real time
            step(alice.secret, token, "finishSecret", clock=clock)
        else:
            enter(entry, alice.secret, invoke, clock)
    keys = aws.keys("alice")
    assert keys.get(old) == "Active" and keys.get(current) == "Active"
    assert aws.value(alice.secret)["AccessKeyId"] == current


# --- rotation steps: metadata before the value ---------------------------------------------------------------------


@pytest.mark.parametrize("entry", STEPS)
def test_a_refused_step_reads_no_value(aws, alice, entry):
    enable_rotation(alice.secret, function_arn="arn:aws:lambda:us-east-1:123456789012:function:someone-else")
    token = begin_rotation(alice.secret, function_arn=None)
    calls = []

    def run():
        with pytest.raises(RotationError, match="not enabled with this function"):
            step(alice.secret, token, entry)

    calls = record_calls(run)
    assert calls == ["describe_secret"], calls


# --- rotation mode carries out the shared plan, and knows the other secrets ------------------------------------------


def test_finish_secret_carries_out_the_plan_when_the_secret_held_no_key(aws):
    # Two Active keys nobody uses, AWSCURRENT holding none: the plan deletes one and deactivates the other.
    seeded = seed_user(aws.iam, aws.secrets, "alice", ("Active", "Active"), held=None)
    token = begin_rotation(seeded.secret)
    for name in STEPS:
        step(seeded.secret, token, name)
    new = aws.value(seeded.secret)["AccessKeyId"]
    assert aws.keys("alice") == {seeded.key_ids[1]: "Inactive", new: "Active"}


def test_rotation_mode_never_touches_a_key_another_listed_secret_holds(aws, monkeypatch):
    monkeypatch.setenv("REQUIRE_USER_TAG", "false")
    monkeypatch.setenv("sec", "iam-keys/*")
    first = seed_user(aws.iam, aws.secrets, "bob", ("Active", "Active"), held=0, secret="iam-keys/bob-a", tag=False)
    second = first.key_ids[1]
    aws.secrets.create_secret(Name="iam-keys/bob-b", SecretString=json.dumps(
        {"UserName": "bob", "AccessKeyId": second, "SecretAccessKey": iam_secret_keys("bob")[second]}))
    token = begin_rotation(first.secret)
    with pytest.raises(RotationError, match="held by secret 'iam-keys/bob-b'"):
        step(first.secret, token, "createSecret")
    assert aws.keys("bob") == {k: "Active" for k in first.key_ids}


# --- an Expired key -----------------------------------------------------------------------------------


@pytest.mark.parametrize("row", [r for r in ROWS if r.statuses], ids=lambda r: r.name)
def test_an_expired_key_in_any_position_is_planned_like_an_inactive_one(aws, invoke, clock, row):
    seeded = seed_row(aws.iam, aws.secrets, row, user="alice")
    for key_id, status in zip(seeded.key_ids, row.statuses, strict=True):
        if status == "Inactive":
            expire("alice", key_id)
    invoke(seeded.secret)
    after = aws.keys("alice")
    for key_id, status in zip(seeded.key_ids, row.statuses, strict=True):
        if status == "Inactive":
            assert key_id not in after, "an Expired key is deleted, like an Inactive one"
    aws.assert_converged(seeded.secret)
    assert clock.sleeps == []


# --- scheduled events -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("time", [None, 1764568800, "yesterday", "", "missing"])
def test_a_scheduled_event_without_a_readable_time_is_refused_before_anything(aws, invoke, time):
    seeded = seed_row(aws.iam, aws.secrets, ROWS[1], user="alice")
    event = {"id": "e1", "source": "aws.events", "detail-type": "Scheduled Event", "time": time}
    if time == "missing":
        del event["time"]
    with pytest.raises(ConfigError, match='scheduled event "time"'):
        invoke(seeded.secret, event=event)
    assert aws.keys("alice") == {seeded.key_ids[0]: "Active"} and len(aws.versions(seeded.secret)) == 1


# --- adopted keys: the first run cannot break a key in use ----------------------------------------------------------


@pytest.fixture
def first_run(aws):
    """The README's step 1 for a user whose key an application uses: a secret naming only the user."""
    seeded = seed_user(aws.iam, aws.secrets, "alice", ("Active",), held=None, stale=False)
    return seeded


def test_a_key_in_use_that_no_secret_holds_is_adopted_and_kept_active(aws, invoke, first_run):
    (entry,) = invoke(first_run.secret)["secrets"]
    (in_use,) = first_run.key_ids
    assert entry["status"] == "rotated" and entry["adopted"] == in_use and entry["retire_after"]
    assert aws.keys("alice")[in_use] == "Active"
    assert aws.holds_working_key(first_run.secret)


def test_an_adopted_key_is_deactivated_quietly_max_grace_hours_after_its_adoption_if_unused(aws, invoke, clock,
                                                                                          first_run):
    (in_use,) = first_run.key_ids
    invoke(first_run.secret)
    for hours in (12, 13, 24 * 6 - 25):  # half a day, a day, six days after its adoption: someone's key in use
        clock.advance(hours * 3600)
        (entry,) = invoke(first_run.secret)["secrets"]
        assert entry["status"] == "waiting" and aws.keys("alice")[in_use] == "Active"
    clock.advance(24 * 3600)
    (entry,) = invoke(first_run.secret)["secrets"]
    assert entry["status"] == "retired" and not entry.get("forced_in_use") and aws.keys("alice")[in_use] == "Inactive"
    aws.assert_converged(first_run.secret)


def test_an_adopted_key_still_used_is_kept_then_deactivated_loudly_at_max_grace(aws, invoke, clock, first_run):
    (in_use,) = first_run.key_ids
    invoke(first_run.secret)
    clock.advance(25 * 3600)
    set_last_used("alice", in_use, clock.now())
    (entry,) = invoke(first_run.secret)["secrets"]
    assert entry["status"] == "waiting" and aws.keys("alice")[in_use] == "Active"
    clock.advance(7 * 24 * 3600)
    set_last_used("alice", in_use, clock.now())
    (entry,) = invoke(first_run.secret)["secrets"]
    assert entry["status"] == "retired" and entry["forced_in_use"] and aws.keys("alice")[in_use] == "Inactive"


def test_a_stale_unheld_key_is_handled_as_a_table_row(aws, invoke):
    seeded = seed_user(aws.iam, aws.secrets, "alice", ("Active",), held=None)  # made 30 days ago, never used
    (entry,) = invoke(seeded.secret)["secrets"]
    assert "adopted" not in entry and aws.keys("alice")[seeded.key_ids[0]] == "Inactive"


def test_no_room_but_an_adopted_key_fails_naming_it_and_force_frees_the_least_recently_used(aws, invoke, clock):
    seeded = seed_user(aws.iam, aws.secrets, "alice", ("Active", "Active"), held=None, stale=False)
    first, second = seeded.key_ids
    set_last_used("alice", second, clock.now())
    with pytest.raises(RotationFailed) as failure:
        invoke(seeded.secret)
    assert first in str(failure.value) and second in str(failure.value)
    assert aws.keys("alice") == {first: "Active", second: "Active"}
    (entry,) = invoke(seeded.secret, event={"force": True})["secrets"]
    assert f"deleted key {first}" in entry["reason"] and entry["adopted"] == second
    assert first not in aws.keys("alice") and aws.keys("alice")[second] == "Active"
    assert aws.holds_working_key(seeded.secret)
