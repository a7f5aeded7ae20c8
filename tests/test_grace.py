"""No downtime for consumers that cache the key: the grace period, usage-gated retirement, rollback.

Time is simulated, never slept: the injected clock moves forward; keys' last use is set in moto's backend.
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, timedelta

import pytest

from conftest import load_event
from faults import CRASH, REFUSED, TIMEOUT, Crash
from lambda_function import RotationFailed
from seed import ROWS, iam_secret_keys, seed_row, set_last_used

HOUR = 3600


@pytest.fixture
def graced(aws, invoke, clock, monkeypatch):
    """alice rotated once with GRACE_HOURS=24: her old key kept Active."""
    monkeypatch.setenv("GRACE_HOURS", "24")
    seeded = seed_row(aws.iam, aws.secrets, ROWS[1], user="alice")
    result = invoke(seeded.secret)
    return seeded, result


def old_and_new(aws, seeded) -> tuple[str, str]:
    return seeded.key_ids[0], aws.value(seeded.secret)["AccessKeyId"]


def test_a_rotation_with_grace_keeps_the_old_key_active_and_says_until_when(aws, graced, clock):
    seeded, result = graced
    old, new = old_and_new(aws, seeded)
    (entry,) = result["secrets"]
    until = (clock.now() + timedelta(hours=24)).strftime("%Y-%m-%dT%H:%M:%SZ")
    assert entry["status"] == "rotated" and entry["retire_after"] == until
    assert entry["steps"][-1] == f"keep {old} Active until {until}"
    assert aws.keys("alice") == {old: "Active", new: "Active"}
    assert aws.holds_working_key(seeded.secret) and aws.holds_working_key(seeded.secret, "AWSPREVIOUS")


def test_during_grace_no_new_rotation_starts_and_both_keys_stay(aws, invoke, graced, clock):
    seeded, _ = graced
    old, new = old_and_new(aws, seeded)
    clock.advance(12 * HOUR)
    result = invoke(seeded.secret)
    assert result["secrets"][0]["status"] == "waiting" and "grace period until" in result["secrets"][0]["reason"]
    assert aws.keys("alice") == {old: "Active", new: "Active"} and len(aws.versions(seeded.secret)) == 2


def test_after_grace_an_unused_old_key_is_retired(aws, invoke, graced, clock):
    seeded, _ = graced
    old, new = old_and_new(aws, seeded)
    set_last_used("alice", old, clock.now().replace(tzinfo=None) - timedelta(hours=1))  # before the store
    clock.advance(25 * HOUR)
    result = invoke(seeded.secret)
    assert result["retired"] == 1 and result["secrets"][0]["steps"] == [f"deactivate {old}"]
    assert aws.keys("alice") == {old: "Inactive", new: "Active"}
    assert invoke(seeded.secret)["rotated"] == 1, "the next run rotates again, deleting the Inactive key"
    assert old not in aws.keys("alice")


def test_after_grace_an_old_key_still_in_use_waits_and_says_where(aws, invoke, graced, clock):
    seeded, _ = graced
    old, new = old_and_new(aws, seeded)
    clock.advance(30 * HOUR)
    set_last_used("alice", old, clock.now().replace(tzinfo=None) - timedelta(hours=2), "ec2", "eu-west-1")
    result = invoke(seeded.secret)
    (entry,) = result["secrets"]
    assert entry["status"] == "waiting" and result["failed"] == 0
    assert "last used" in entry["reason"] and "ec2 in eu-west-1" in entry["reason"]
    assert aws.keys("alice") == {old: "Active", new: "Active"}


def test_past_max_grace_a_key_still_in_use_is_deactivated_loudly(aws, invoke, graced, clock, caplog, capsys):
    seeded, _ = graced
    old, new = old_and_new(aws, seeded)
    clock.advance(169 * HOUR)
    set_last_used("alice", old, clock.now().replace(tzinfo=None) - timedelta(hours=1), "lambda", "us-east-1")
    capsys.readouterr()
    with caplog.at_level(logging.WARNING):
        result = invoke(seeded.secret)
    assert result["retired"] == 1 and result["forced_in_use"] == 1
    assert aws.keys("alice") == {old: "Inactive", new: "Active"}
    warning = [r for r in caplog.records if r.levelno == logging.WARNING and "forced_while_in_use" in r.getMessage()]
    assert warning and "lambda in us-east-1" in warning[0].getMessage()
    (emf,) = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith('{"_aws"')]
    assert emf["ForcedWhileInUse"] == 1


def test_a_daily_schedule_retires_at_the_next_days_run_a_few_seconds_short_of_24_hours(aws, invoke, clock,
                                                                                       monkeypatch):
    monkeypatch.setenv("GRACE_HOURS", "24")
    seeded = seed_row(aws.iam, aws.secrets, ROWS[1], user="alice")
    day = lambda: load_event("eventbridge-scheduled", id=str(clock.now().date()),  # noqa: E731
                             time=clock.now().strftime("%Y-%m-%dT%H:%M:%SZ"))
    invoke(seeded.secret, event=day())
    clock.advance(24 * HOUR - 5)  # the next run starts a few seconds earlier in the day than the store
    result = invoke(seeded.secret, event=day())
    assert result["retired"] == 1
    assert aws.keys("alice")[seeded.key_ids[0]] == "Inactive"


def test_force_during_grace_retires_the_previous_key_then_rotates(aws, invoke, graced, clock):
    seeded, _ = graced
    old, middle = old_and_new(aws, seeded)
    clock.advance(HOUR)
    result = invoke(seeded.secret, event={"force": True})
    (entry,) = result["secrets"]
    assert entry["status"] == "rotated" and entry["steps"][:2] == [f"deactivate {old}", f"delete {old}"]
    newest = aws.value(seeded.secret)["AccessKeyId"]
    assert aws.keys("alice") == {middle: "Active", newest: "Active"}, "the middle key starts its own grace"
    assert aws.holds_working_key(seeded.secret)


# --- rollback -------------------------------------------------------------------------------------------------------


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


# --- faults at the new calls ----------------------------------------------------------------------------------------

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


@pytest.mark.parametrize("mode", [REFUSED, TIMEOUT, CRASH])
@pytest.mark.parametrize("call", ["get_access_key_last_used", "update_access_key"])
def test_a_fault_while_retiring_keeps_the_previous_key_and_a_rerun_converges(aws, invoke, graced, clock,
                                                                           faults, monkeypatch, call, mode):
    seeded, _ = graced
    old, new = old_and_new(aws, seeded)
    clock.advance(25 * HOUR)
    fault = faults.inject(call, mode)
    with pytest.raises((RotationFailed, Crash)):
        invoke(seeded.secret)
    assert fault.fired
    assert old in aws.keys("alice"), "the previous key is never deleted while Active"
    assert aws.holds_working_key(seeded.secret)
    faults.clear()
    invoke(seeded.secret)  # retires the old key, or (if the deactivation was applied) rotates again, with grace
    if list(aws.keys("alice").values()).count("Active") > 1:
        # ... whose previous key the next day's run retires. That run verified it just before the store, which
        # IAM records as a use; moto dates the store to the whole second (of real time), so date that use an
        # hour before the store.
        previous = aws.value(seeded.secret, "AWSPREVIOUS")["AccessKeyId"]
        (stored,) = [v["CreatedDate"] for v in aws.versions(seeded.secret) if "AWSCURRENT" in v["VersionStages"]]
        set_last_used("alice", previous, stored.astimezone(UTC).replace(tzinfo=None) - timedelta(hours=1), "sts")
        clock.advance(25 * HOUR)
        invoke(seeded.secret)
    aws.assert_converged(seeded.secret)
    if fault.mode == REFUSED:
        assert aws.keys("alice") == {old: "Inactive", new: "Active"}
        assert iam_secret_keys("alice")[new] == aws.value(seeded.secret)["SecretAccessKey"]
