"""Rollback: {"rollback": [secret, ...]} puts the previous key back in AWSCURRENT (AWSPREVIOUS's version, its
other fields as they were) and deactivates the key the rotation made, inside ROLLBACK_HOURS; and the repair a run
makes on its own when the key the secret holds is gone or Expired and AWSPREVIOUS holds a working one.

Each test asserts the keys and secret versions left behind. Time is the test's clock, never slept."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
import test_entry_points
from test_holders import assert_current_works
from test_smtp import assert_consistent, smtp_secret

from between_runs import expire, resave
from faults import CRASH, REFUSED, TIMEOUT, Crash
from lambda_function import LIST_LAG, RotationFailed
from seed import ROWS, backdate_key, seed_row, seed_user, set_last_used

HOUR = 3600

alice = test_entry_points.alice  # the fixture: alice rotated once with a grace period, both keys Active


@pytest.fixture
def rotated(aws, invoke):
    """alice rotated once without grace: the previous key Inactive in AWSPREVIOUS."""
    seeded = seed_row(aws.iam, aws.secrets, ROWS[1], user="alice", )
    aws.secrets.put_secret_value(SecretId=seeded.secret, SecretString=json.dumps(
        {**json.loads(aws.secrets.get_secret_value(SecretId=seeded.secret)["SecretString"]), "Region": "eu"}))
    invoke(seeded.secret)
    return seeded


def test_rollback_restores_the_previous_key_and_version_and_deactivates_the_new(aws, invoke, rotated):
    old, bad = rotated.key_ids[0], aws.value(rotated.secret)["AccessKeyId"]
    previous_value = aws.value(rotated.secret, "AWSPREVIOUS")
    result = invoke(rotated.secret, event={"rollback": [rotated.secret]})
    assert result["rolled_back"] == 1
    assert aws.value(rotated.secret) == previous_value, "AWSCURRENT is the previous version, other fields as then"
    assert aws.value(rotated.secret, "AWSPREVIOUS")["AccessKeyId"] == bad
    assert aws.keys("alice") == {old: "Active", bad: "Inactive"}, "deactivated, not deleted"
    assert aws.holds_working_key(rotated.secret)


def test_the_run_after_a_rollback_rotates_unless_the_secret_is_held_by_its_tag(aws, invoke, rotated):
    invoke(rotated.secret, event={"rollback": [rotated.secret]})
    aws.secrets.tag_resource(SecretId=rotated.secret, Tags=[{"Key": "key-rotation:mode", "Value": "skip"}])
    before = aws.keys("alice")
    assert invoke(rotated.secret)["skipped"] == 1 and aws.keys("alice") == before
    aws.secrets.untag_resource(SecretId=rotated.secret, TagKeys=["key-rotation:mode"])
    assert invoke(rotated.secret)["rotated"] == 1
    aws.assert_converged(rotated.secret)


def test_rollback_when_the_previous_key_is_gone_fails_and_changes_nothing(aws, invoke, rotated):
    aws.iam.delete_access_key(UserName="alice", AccessKeyId=rotated.key_ids[0])
    before = (aws.keys("alice"), aws.stages(rotated.secret))
    with pytest.raises(RotationFailed, match="no longer exists; nothing changed"):
        invoke(rotated.secret, event={"rollback": [rotated.secret]})
    assert (aws.keys("alice"), aws.stages(rotated.secret)) == before


def test_rollback_in_a_dry_run_plans_and_changes_nothing(aws, invoke, rotated):
    before = (aws.keys("alice"), aws.stages(rotated.secret))
    result = invoke(rotated.secret, event={"rollback": [rotated.secret], "dry_run": True})
    assert result["planned"] == 1 and result["secrets"][0]["steps"][0] == f"activate {rotated.key_ids[0]}"
    assert (aws.keys("alice"), aws.stages(rotated.secret)) == before


def test_rollback_of_a_secret_not_in_sec_is_refused(aws, invoke, rotated):
    with pytest.raises(Exception, match="does not select"):
        invoke(rotated.secret, event={"rollback": ["iam-keys/someone-else"]})


def test_rollback_whose_previous_key_does_not_authenticate_puts_it_back(aws, invoke, rotated, sts, monkeypatch):
    monkeypatch.setenv("VERIFY_TIMEOUT_SECONDS", "0.5")
    sts.refusals = 1000
    before = (aws.keys("alice"), aws.stages(rotated.secret))
    with pytest.raises(RotationFailed, match="did not authenticate"):
        invoke(rotated.secret, event={"rollback": [rotated.secret]})
    assert (aws.keys("alice"), aws.stages(rotated.secret)) == before


def test_a_rollback_does_not_deactivate_a_key_another_secret_holds(aws, invoke, monkeypatch):
    monkeypatch.setenv("REQUIRE_USER_TAG", "false")
    first = seed_user(aws.iam, aws.secrets, "erin", ("Active",), held=0, secret="iam-keys/erin-a", tag=False)
    invoke(first.secret)
    current = aws.secrets.get_secret_value(SecretId=first.secret)["SecretString"]
    aws.secrets.create_secret(Name="iam-keys/erin-b", SecretString=current)  # holds erin-a's current key
    result = invoke("iam-keys/erin-a", "iam-keys/erin-b", event={"rollback": ["iam-keys/erin-a"]})
    assert result["secrets"][0]["status"] == "rolled_back"
    assert aws.keys("erin") == {first.key_ids[0]: "Active", json.loads(current)["AccessKeyId"]: "Active"}
    assert_current_works(aws, "iam-keys/erin-a") and assert_current_works(aws, "iam-keys/erin-b")


def test_a_rollback_restores_the_previous_keys_passwords_with_it(aws, invoke):
    seeded = smtp_secret(aws)
    invoke(seeded.secret)
    before = assert_consistent(aws, seeded.secret)
    invoke(seeded.secret)
    assert invoke(seeded.secret, event={"rollback": [seeded.secret]})["rolled_back"] == 1
    assert assert_consistent(aws, seeded.secret) == before
    assert aws.holds_working_key(seeded.secret)


# --- the rollback window: ROLLBACK_HOURS from the rotation, whatever a writer does ------------------------------------


@pytest.mark.parametrize("dry_run", [False, True])
def test_a_rollback_past_rollback_hours_is_refused_and_changes_nothing(aws, invoke, clock, dry_run):
    seeded = seed_row(aws.iam, aws.secrets, ROWS[1], user="alice")
    invoke(seeded.secret)
    keys, versions = aws.keys("alice"), aws.stages(seeded.secret)
    clock.advance(timedelta(hours=169).total_seconds())
    event = {"rollback": [seeded.secret], **({"dry_run": True} if dry_run else {})}
    if dry_run:  # a dry run answers with its whole summary, the failed entries in it
        (entry,) = invoke(seeded.secret, event=event)["secrets"]
        assert entry["status"] == "failed" and "past ROLLBACK_HOURS=168" in entry["reason"]
    else:
        with pytest.raises(RotationFailed, match="past ROLLBACK_HOURS=168"):
            invoke(seeded.secret, event=event)
    assert aws.keys("alice") == keys and aws.stages(seeded.secret) == versions


def test_a_rollback_inside_the_window_restores(aws, invoke, clock):
    seeded = seed_row(aws.iam, aws.secrets, ROWS[1], user="alice")
    invoke(seeded.secret)
    clock.advance(3600)
    (entry,) = invoke(seeded.secret, event={"rollback": [seeded.secret]})["secrets"]
    assert entry["status"] == "rolled_back" and entry["restored_key_id"] == seeded.key_ids[0]
    assert json.loads(aws.secrets.get_secret_value(SecretId=seeded.secret)["SecretString"])["AccessKeyId"] == \
        seeded.key_ids[0]


def test_re_saving_the_secret_does_not_reopen_the_rollback_window(aws, invoke, clock):
    seeded = seed_row(aws.iam, aws.secrets, ROWS[1], user="alice")
    invoke(seeded.secret)
    keys = aws.keys("alice")
    clock.advance(200 * HOUR)
    resave(aws, clock, seeded.secret, note="re-saved")
    stages = aws.stages(seeded.secret)
    with pytest.raises(RotationFailed, match="past ROLLBACK_HOURS=168"):
        invoke(seeded.secret, event={"rollback": [seeded.secret]})
    assert aws.keys("alice") == keys and aws.stages(seeded.secret) == stages


# --- after a writer re-saved the secret or copied the previous value back ---------------------------------------------


def test_a_rollback_after_a_writer_re_saved_the_secret_says_there_is_nothing_to_move(aws, invoke, clock,
                                                                                     monkeypatch):
    # After a re-save AWSPREVIOUS holds the very key AWSCURRENT holds: a rollback would move a label, deactivate
    # nothing and call it rolled back. It says so and changes nothing.
    monkeypatch.setenv("GRACE_HOURS", "24")
    seeded = seed_row(aws.iam, aws.secrets, ROWS[1], user="alice")
    invoke(seeded.secret)
    held = aws.value(seeded.secret)["AccessKeyId"]
    resave(aws, clock, seeded.secret, note="re-saved")
    stages = aws.stages(seeded.secret)
    with pytest.raises(RotationFailed, match=f"nothing to roll back: AWSPREVIOUS holds the key AWSCURRENT holds, "
                                             f"{held}"):
        invoke(seeded.secret, event={"rollback": [seeded.secret]})
    assert aws.stages(seeded.secret) == stages and aws.value(seeded.secret)["AccessKeyId"] == held


def test_a_hand_rollback_does_not_make_the_new_key_s_gate_count_from_the_old_key(aws, invoke, clock, monkeypatch):
    # The rotation replaced an 85-day-old key; a writer copies the previous value back by hand. The key the
    # rotation made (now the previous one, in use) keeps its grace period from its own creation.
    monkeypatch.setenv("GRACE_HOURS", "24")
    monkeypatch.setenv("ROTATE_AFTER_DAYS", "80")
    seeded = seed_row(aws.iam, aws.secrets, ROWS[1], user="alice")
    (old,) = seeded.key_ids
    backdate_key("alice", old, 85)
    invoke(seeded.secret)
    new = aws.value(seeded.secret)["AccessKeyId"]
    previous = aws.value(seeded.secret, "AWSPREVIOUS")
    resave(aws, clock, seeded.secret, **previous)
    clock.advance(3600)
    set_last_used("alice", new, clock.now())
    (entry,) = invoke(seeded.secret)["secrets"]
    assert aws.keys("alice")[new] == "Active" and not entry.get("forced_in_use"), entry


# --- faults in a rollback ---------------------------------------------------------------------------------------------


ROLLBACK_CALLS = ["update_access_key", "update_access_key#2", "update_secret_version_stage"]


@pytest.mark.parametrize("mode", [REFUSED, TIMEOUT, CRASH])
@pytest.mark.parametrize("call", ROLLBACK_CALLS)
def test_a_fault_in_a_rollback_keeps_a_working_key_and_a_rerun_converges(aws, invoke, rotated, faults, call, mode):
    method, _, nth = call.partition("#")
    fault = faults.inject(method, mode, int(nth or 1))
    with pytest.raises((RotationFailed, Crash)):
        invoke(rotated.secret, event={"rollback": [rotated.secret]})
    assert fault.fired
    assert aws.holds_working_key(rotated.secret)
    assert rotated.key_ids[0] in aws.keys("alice")
    faults.clear()
    result = None
    try:
        result = invoke(rotated.secret, event={"rollback": [rotated.secret]})
    except RotationFailed:
        pass
    if result is None or result["rolled_back"] != 1:  # the fault struck after the move: already rolled back
        assert aws.value(rotated.secret)["AccessKeyId"] == rotated.key_ids[0]
    assert aws.holds_working_key(rotated.secret)
    assert invoke(rotated.secret)["failed"] == 0
    assert aws.holds_working_key(rotated.secret)


# --- the repair: a held key IAM no longer has, or Expired -------------------------------------------------------------


def test_a_held_key_deleted_by_hand_moves_current_back_to_the_working_previous_key(aws, invoke, clock, sts, alice):
    current = aws.value(alice.secret)["AccessKeyId"]
    clock.advance(LIST_LAG.total_seconds())  # (sooner after its create, IAM may not list it yet)
    aws.iam.delete_access_key(UserName="alice", AccessKeyId=current)
    sleeps_before = len(clock.sleeps)
    (entry,) = invoke(alice.secret)["secrets"]
    assert entry["status"] == "rolled_back" and "no longer exists in IAM" in entry["reason"]
    assert entry["restored_key_id"] == alice.key_ids[0]
    assert aws.value(alice.secret)["AccessKeyId"] == alice.key_ids[0]
    assert aws.holds_working_key(alice.secret)
    assert len(clock.sleeps) == sleeps_before, "no STS wait for a key IAM does not have"


def test_a_held_key_deleted_by_hand_without_a_previous_key_rotates_afresh(aws, invoke, clock):
    seeded = seed_row(aws.iam, aws.secrets, ROWS[1], user="alice")
    aws.iam.delete_access_key(UserName="alice", AccessKeyId=seeded.key_ids[0])
    (entry,) = invoke(seeded.secret)["secrets"]
    assert entry["status"] == "rotated" and "rotated afresh" in entry["reason"]
    aws.assert_converged(seeded.secret)
    assert clock.sleeps == []


def test_a_held_expired_key_with_a_working_previous_key_is_repaired(aws, invoke, clock, alice):
    current = aws.value(alice.secret)["AccessKeyId"]
    expire("alice", current)
    (entry,) = invoke(alice.secret)["secrets"]
    assert entry["status"] == "rolled_back" and "is Expired" in entry["reason"]
    assert aws.value(alice.secret)["AccessKeyId"] == alice.key_ids[0]
