"""Keys someone holds are never destroyed: both triggers on one secret, tokens, shared users, failed
verification, hand edits. Each test asserts the keys and secret versions left behind.

A key is held by its secret's AWSCURRENT, AWSPREVIOUS or AWSPENDING version, or by another secret of the
run naming the same user. Verification uses the conftest's STS stand-in, which (unlike moto's STS)
refuses a deleted or Inactive key.
"""

from __future__ import annotations

import json
import random
from datetime import timedelta

import pytest

import lambda_function
from between_runs import days_of_runs
from conftest import STEPS, load_event, step
from faults import REFUSED
from lambda_function import RotationError, RotationFailed
from seed import (
    ROWS,
    backdate_key,
    begin_rotation,
    enable_rotation,
    iam_secret_keys,
    seed_row,
    seed_user,
    set_last_used,
)


def version_of(aws, secret: str, stage: str) -> str:
    return next(v for v, labels in aws.stages(secret).items() if stage in labels)


def assert_current_works(aws, secret: str) -> None:
    """The invariant every test ends on: AWSCURRENT holds an existing, Active, working key."""
    assert aws.holds_working_key(secret), (aws.value(secret).get("AccessKeyId"), aws.held_keys(secret))


# --- 1. both triggers on one secret ---------------------------------------------------------------------------------


def test_batch_leaves_a_secret_with_rotation_enabled_alone(aws, invoke):
    seeded = seed_row(aws.iam, aws.secrets, ROWS[1], user="alice")
    enable_rotation(seeded.secret)
    result = invoke(seeded.secret)
    (entry,) = result["secrets"]
    assert entry["status"] == "skipped" and "Secrets Manager rotation is enabled" in entry["reason"]
    assert aws.keys("alice") == {seeded.key_ids[0]: "Active"} and len(aws.versions(seeded.secret)) == 1


def test_batch_during_a_rotation_in_flight_keeps_the_pending_key_and_finish_promotes_a_working_key(aws, invoke):
    seeded = seed_row(aws.iam, aws.secrets, ROWS[4], user="alice")  # 1 inactive + 1 active (held)
    token = begin_rotation(seeded.secret)
    step(seeded.secret, token, "createSecret")
    pending_key = aws.value(seeded.secret, "AWSPENDING")["AccessKeyId"]
    enable_rotation(seeded.secret, enabled=False)  # even with rotation turned off meanwhile

    with pytest.raises(RotationFailed) as failure:  # fails, not skipped: an alarm fires
        invoke(seeded.secret)

    assert f"version {token} is staged AWSPENDING but the secret's rotation is not enabled" in str(failure.value)
    assert "update-secret-version-stage" in str(failure.value)
    assert aws.keys("alice")[pending_key] == "Active"
    enable_rotation(seeded.secret)
    for name in STEPS[1:]:
        step(seeded.secret, token, name)
    assert aws.value(seeded.secret)["AccessKeyId"] == pending_key
    assert_current_works(aws, seeded.secret)


# --- 2. rotation steps check their token ----------------------------------------------------------------------------


@pytest.fixture
def rotated_once(aws):
    """alice, rotated once by Secrets Manager: AWSPREVIOUS holds an Inactive key, AWSCURRENT the new one."""
    seeded = seed_row(aws.iam, aws.secrets, ROWS[1], user="alice")
    token = begin_rotation(seeded.secret)
    for name in STEPS:
        step(seeded.secret, token, name)
    return seeded, token


def test_finish_with_the_previous_token_is_refused_and_changes_nothing(aws, rotated_once):
    seeded, _ = rotated_once
    previous = version_of(aws, seeded.secret, "AWSPREVIOUS")
    before = (aws.stages(seeded.secret), aws.keys("alice"))
    with pytest.raises(RotationError, match="not staged AWSPENDING; nothing changed"):
        step(seeded.secret, previous, "finishSecret")
    assert (aws.stages(seeded.secret), aws.keys("alice")) == before
    assert_current_works(aws, seeded.secret)


@pytest.mark.parametrize("name", STEPS)
def test_every_step_with_the_current_token_is_a_no_op(aws, rotated_once, name):
    seeded, token = rotated_once
    before = (aws.stages(seeded.secret), aws.keys("alice"))
    assert step(seeded.secret, token, name)["status"] == "already current"
    assert (aws.stages(seeded.secret), aws.keys("alice")) == before


@pytest.mark.parametrize("what", ["deleted", "deactivated"])
def test_finish_refuses_a_pending_key_that_is_gone_or_inactive(aws, what):
    seeded = seed_row(aws.iam, aws.secrets, ROWS[1], user="alice")
    token = begin_rotation(seeded.secret)
    step(seeded.secret, token, "createSecret")
    pending_key = aws.value(seeded.secret, "AWSPENDING")["AccessKeyId"]
    if what == "deleted":
        aws.iam.delete_access_key(UserName="alice", AccessKeyId=pending_key)
    else:
        aws.iam.update_access_key(UserName="alice", AccessKeyId=pending_key, Status="Inactive")
    with pytest.raises(RotationError, match="refused"):
        step(seeded.secret, token, "finishSecret")
    assert aws.value(seeded.secret)["AccessKeyId"] == seeded.key_ids[0]
    assert_current_works(aws, seeded.secret)


def test_create_retried_after_its_pending_key_was_deleted_converges(aws):
    # moto lets PutSecretValue rewrite the pending version; AWS refuses (next test).
    seeded = seed_row(aws.iam, aws.secrets, ROWS[1], user="alice")
    token = begin_rotation(seeded.secret)
    step(seeded.secret, token, "createSecret")
    lost = aws.value(seeded.secret, "AWSPENDING")["AccessKeyId"]
    aws.iam.delete_access_key(UserName="alice", AccessKeyId=lost)
    for name in STEPS:  # Secrets Manager retries the same rotation
        step(seeded.secret, token, name)
    assert aws.value(seeded.secret)["AccessKeyId"] != lost
    aws.assert_converged(seeded.secret)


def test_create_with_a_dead_pending_key_where_versions_cannot_be_rewritten_fails_clearly(aws, faults):
    # As AWS answers (moto lets a version's value change): a version's value cannot (ResourceExistsException).
    from faults import REFUSED

    seeded = seed_row(aws.iam, aws.secrets, ROWS[1], user="alice")
    token = begin_rotation(seeded.secret)
    step(seeded.secret, token, "createSecret")
    aws.iam.delete_access_key(UserName="alice", AccessKeyId=aws.value(seeded.secret, "AWSPENDING")["AccessKeyId"])
    faults.inject("put_secret_value", REFUSED, error=("ResourceExistsException", "version exists", 400))
    with pytest.raises(RotationError, match="cancel-rotate-secret") as failure:
        step(seeded.secret, token, "createSecret")
    assert "new key deleted" in str(failure.value)
    assert aws.keys("alice") == {seeded.key_ids[0]: "Active"}
    assert_current_works(aws, seeded.secret)


# --- 3. two secrets, one user ---------------------------------------------------------------------------------------


@pytest.fixture
def shared_user(aws, monkeypatch):
    """Two secrets naming bob, each holding one of his two Active keys (the tag can name only one)."""
    monkeypatch.setenv("REQUIRE_USER_TAG", "false")
    first = seed_user(aws.iam, aws.secrets, "bob", ("Active", "Active"), held=0, secret="iam-keys/bob-a", tag=False)
    second_key = first.key_ids[1]
    aws.secrets.create_secret(Name="iam-keys/bob-b", SecretString=json.dumps(
        {"UserName": "bob", "AccessKeyId": second_key, "SecretAccessKey": iam_secret_keys("bob")[second_key]}))
    return first


def test_the_key_another_secret_holds_is_never_touched_and_no_room_names_both(aws, invoke, shared_user):
    with pytest.raises(RotationFailed) as failure:
        invoke("iam-keys/bob-a", "iam-keys/bob-b")
    message = str(failure.value)
    assert "secret 'iam-keys/bob-a': no room for a new key" in message and "held by secret 'iam-keys/bob-b'" in message
    assert "secret 'iam-keys/bob-b': IAM user 'bob' is also named by secret 'iam-keys/bob-a'" in message
    assert aws.keys("bob") == {k: "Active" for k in shared_user.key_ids}
    assert_current_works(aws, "iam-keys/bob-a") and assert_current_works(aws, "iam-keys/bob-b")


def test_a_key_both_secrets_hold_stays_active(aws, invoke, monkeypatch):
    monkeypatch.setenv("REQUIRE_USER_TAG", "false")
    first = seed_user(aws.iam, aws.secrets, "carol", ("Active",), held=0, secret="iam-keys/carol-a", tag=False)
    aws.secrets.create_secret(Name="iam-keys/carol-b", SecretString=aws.secrets.get_secret_value(
        SecretId=first.secret)["SecretString"])
    with pytest.raises(RotationFailed, match="also named by"):
        invoke("iam-keys/carol-a", "iam-keys/carol-b")
    assert aws.keys("carol")[first.key_ids[0]] == "Active", "carol-b still uses it"
    assert_current_works(aws, "iam-keys/carol-a") and assert_current_works(aws, "iam-keys/carol-b")


# --- 4. failed verification -----------------------------------------------------------------------------------------


def test_retry_of_a_scheduled_event_verifies_before_retiring_and_never_deletes_the_last_working_key(
        aws, invoke, sts, clock, monkeypatch):
    monkeypatch.setenv("VERIFY_TIMEOUT_SECONDS", "4")
    seeded = seed_row(aws.iam, aws.secrets, ROWS[1], user="alice")
    old = seeded.key_ids[0]
    event = load_event("eventbridge-scheduled", time=clock.now().strftime("%Y-%m-%dT%H:%M:%SZ"))
    sts.refusals = 1000  # the new key never authenticates

    for _attempt in range(3):  # the run, then Lambda's two retries of the same event
        with pytest.raises(RotationFailed, match="did not authenticate"):
            invoke(seeded.secret, event=event)
        assert aws.keys("alice")[old] == "Active", "the previous key, the last that worked, is kept Active"
        assert aws.value(seeded.secret, "AWSPREVIOUS")["AccessKeyId"] == old
    assert len(aws.versions(seeded.secret)) == 2, "one rotation, not one per retry"

    sts.refusals = 0
    result = invoke(seeded.secret, event=event)  # once the key works, the retry retires the old key
    assert result["retired"] == 1 and aws.keys("alice")[old] == "Inactive"
    aws.assert_converged(seeded.secret)


# --- 5. the README's manual undo ------------------------------------------------------------------------------------


def test_a_previous_key_reactivated_by_hand_is_not_deleted_by_the_next_run(aws, invoke):
    seeded = seed_row(aws.iam, aws.secrets, ROWS[1], user="alice")
    invoke(seeded.secret)
    old = seeded.key_ids[0]
    aws.iam.update_access_key(UserName="alice", AccessKeyId=old, Status="Active")  # the manual undo

    result = invoke(seeded.secret)

    assert old in aws.keys("alice"), "never deleted while Active"
    assert result["secrets"][0]["status"] in ("retired", "waiting")
    assert_current_works(aws, seeded.secret)


# --- 6. hand edits during a run -------------------------------------------------------------------------------------


def test_an_old_key_deleted_by_hand_before_it_is_deactivated_is_the_goal_reached(aws, invoke):
    seeded = seed_row(aws.iam, aws.secrets, ROWS[1], user="alice")
    clients = lambda_function.aws_clients(lambda_function.Settings())

    def delete_old_by_hand(**_):
        aws.iam.delete_access_key(UserName="alice", AccessKeyId=seeded.key_ids[0])

    clients.secrets.meta.events.register("after-call.secrets-manager.PutSecretValue", delete_old_by_hand)
    result = invoke(seeded.secret)
    assert result["rotated"] == 1
    assert list(aws.keys("alice")) == [aws.value(seeded.secret)["AccessKeyId"]]
    assert_current_works(aws, seeded.secret)


# --- any interleaving -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(12))
def test_no_interleaving_destroys_a_held_key(aws, invoke, sts, clock, monkeypatch, seed):
    """Scheduled runs and their retries, Secrets Manager rotations step by step, failed verification and hand
    edits, in a random order: AWSCURRENT always holds a working key, and no key a version held while Active
    is deleted."""
    rng = random.Random(seed)
    monkeypatch.setenv("VERIFY_TIMEOUT_SECONDS", "2")
    seeded = seed_row(aws.iam, aws.secrets, ROWS[rng.randrange(1, len(ROWS))], user="alice")
    if not aws.holds_working_key(seeded.secret):
        invoke(seeded.secret)  # start from a working key
    state = {"token": None, "event": load_event("eventbridge-scheduled", id="e0",
                                                time=clock.now().strftime("%Y-%m-%dT%H:%M:%SZ"))}

    def scheduled_run():
        if rng.random() < 0.5:
            state["event"] = {**state["event"], "id": f"e{rng.randrange(1000)}"}
        invoke(seeded.secret, event=state["event"])

    def rotation_step():
        if state["token"] is None:
            state["token"] = begin_rotation(seeded.secret)
        name = STEPS[rng.randrange(len(STEPS))]
        step(seeded.secret, state["token"], name)
        if name == "finishSecret":
            state["token"] = None

    def rotation_off():
        enable_rotation(seeded.secret, enabled=False)

    def sts_flaky():
        sts.refusals = len(sts.calls) + rng.choice([0, 1000])

    def hand_reactivate():
        for key_id, status in aws.keys("alice").items():
            if status == "Inactive":
                aws.iam.update_access_key(UserName="alice", AccessKeyId=key_id, Status="Active")
                return

    def hand_delete_inactive():
        for key_id, status in aws.keys("alice").items():
            if status == "Inactive" and key_id not in aws.held_keys(seeded.secret):
                aws.iam.delete_access_key(UserName="alice", AccessKeyId=key_id)
                return

    actions = [scheduled_run, scheduled_run, rotation_step, rotation_step, rotation_off, sts_flaky,
               hand_reactivate, hand_delete_inactive]
    for _ in range(10):
        held_before = {k for k, status in aws.held_keys(seeded.secret).items() if status == "Active"}
        try:
            rng.choice(actions)()
        except (RotationFailed, RotationError):
            pass  # refusals and failures are allowed; destroying a held key is not
        keys = aws.keys("alice")
        assert held_before <= set(keys), f"a held Active key was deleted: {held_before - set(keys)}"
        assert aws.keys("alice").get(aws.value(seeded.secret).get("AccessKeyId")) == "Active"
        assert len(keys) <= 2


@pytest.fixture
def previous_shared(aws, invoke, monkeypatch):
    """dave rotated by iam-keys/dave-a, whose previous key (Active again) iam-keys/dave-b holds as its current."""
    monkeypatch.setenv("REQUIRE_USER_TAG", "false")
    first = seed_user(aws.iam, aws.secrets, "dave", ("Active",), held=0, secret="iam-keys/dave-a", tag=False)
    invoke(first.secret)
    old = first.key_ids[0]
    aws.iam.update_access_key(UserName="dave", AccessKeyId=old, Status="Active")
    aws.secrets.create_secret(Name="iam-keys/dave-b", SecretString=json.dumps(
        {"UserName": "dave", "AccessKeyId": old, "SecretAccessKey": iam_secret_keys("dave")[old]}))
    return first


def test_a_previous_key_another_secret_holds_is_not_retired(aws, invoke, previous_shared):
    old = previous_shared.key_ids[0]
    with pytest.raises(RotationFailed):  # dave-b is refused (dave-a has the user); dave-a has no room
        invoke("iam-keys/dave-a", "iam-keys/dave-b")
    assert aws.keys("dave")[old] == "Active", "iam-keys/dave-b still uses it"
    assert_current_works(aws, "iam-keys/dave-a") and assert_current_works(aws, "iam-keys/dave-b")


def test_a_targeted_run_respects_keys_held_by_secrets_it_does_not_target(aws, invoke, shared_user):
    # bob-b is listed in sec but not targeted: it is not rotated, yet its key is still held.
    with pytest.raises(RotationFailed, match="held by secret 'iam-keys/bob-b'"):
        invoke("iam-keys/bob-a", "iam-keys/bob-b", event={"secrets": ["iam-keys/bob-a"]})
    assert aws.keys("bob") == {k: "Active" for k in shared_user.key_ids}
    assert_current_works(aws, "iam-keys/bob-b")


# --- a person's key: adopted, never broken, never taken for the function's --------------------------------------------


def test_a_weekly_job_s_key_is_never_broken_by_the_run_that_adopts_it_nor_a_day_later(aws, invoke, clock):
    # alice's second key, held by no secret, made ten days ago and used three days ago by a weekly job; the
    # secret (and its key) is a month old. The run that adopts the key keeps it Active, and so does every run for
    # MAX_GRACE_HOURS (7 days) after it; then, used again meanwhile, it is deactivated loudly.
    seeded = seed_user(aws.iam, aws.secrets, "alice", ("Active", "Active"), held=0, stale=False)
    held, weekly = seeded.key_ids
    backdate_key("alice", held, 30)
    backdate_key("alice", weekly, 10)
    set_last_used("alice", weekly, clock.now() - timedelta(days=3))
    (first,) = invoke(seeded.secret)["secrets"]
    assert aws.keys("alice")[weekly] == "Active" and first["adopted"] == weekly
    assert not first.get("forced_in_use")

    def job(day: int) -> None:
        if day == 4:
            set_last_used("alice", weekly, clock.now())

    entries = days_of_runs(invoke, clock, seeded.secret, 6, job)
    assert all(e["status"] == "waiting" for e in entries) and aws.keys("alice")[weekly] == "Active"
    (last,) = days_of_runs(invoke, clock, seeded.secret, 1)
    assert last["status"] == "retired" and last["forced_in_use"] and aws.keys("alice")[weekly] == "Inactive"
    assert aws.holds_working_key(seeded.secret)


def test_a_person_s_key_made_after_a_refused_create_is_never_taken_for_the_function_s(aws, invoke, faults, clock):
    # A person makes a key between the function's mark and its create, which IAM refuses outright
    # (LimitExceeded, as AWS answers at two keys; moto does not count them, so the refusal is injected): the mark
    # then says no key was made, and the person's key, new and not yet used, is kept by every later run.
    seeded = seed_row(aws.iam, aws.secrets, ROWS[1], user="alice")
    person = []

    def a_person_makes_a_key(**_):
        if not person:
            person.append(aws.iam.create_access_key(UserName="alice")["AccessKey"]["AccessKeyId"])

    import lambda_function

    lambda_function.aws_clients(lambda_function.Settings()).iam.meta.events.register(
        "before-call.iam.CreateAccessKey", a_person_makes_a_key)
    faults.inject("create_access_key", REFUSED, error=("LimitExceeded", "Cannot exceed quota for "
                                                                        "AccessKeysPerUser: 2", 409))
    with pytest.raises(RotationFailed, match="LimitExceeded"):
        invoke(seeded.secret)
    faults.clear()
    clock.advance(3600)
    (entry,) = invoke(seeded.secret)["secrets"]
    assert aws.keys("alice")[person[0]] == "Active" and entry["adopted"] == person[0], "adopted, not deleted"
