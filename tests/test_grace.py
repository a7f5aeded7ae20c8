"""No downtime for consumers that cache the key: the grace period, usage-gated retirement, rollback.

Time is simulated, never slept: the injected clock moves forward; keys' last use is set in moto's backend.
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, timedelta

import pytest

from between_runs import days_of_runs, resave
from conftest import load_event
from faults import CRASH, REFUSED, TIMEOUT, Crash
from lambda_function import RotationFailed
from seed import ROWS, backdate_key, iam_secret_keys, seed_row, set_last_used

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


# --- faults while retiring ----------------------------------------------------------------------------------------


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


# --- a writer re-saving the secret moves no clock ---------------------------------------------------------------------


def test_re_saving_the_secret_does_not_restart_the_usage_gate(aws, invoke, clock, monkeypatch):
    # The old key is used every day and an application re-saves the secret every day: the usage gate still counts
    # from the rotation (the new key's creation in IAM), so the old key goes off at MAX_GRACE_HOURS, loudly.
    monkeypatch.setenv("GRACE_HOURS", "24")
    monkeypatch.setenv("MAX_GRACE_HOURS", "72")
    seeded = seed_row(aws.iam, aws.secrets, ROWS[1], user="alice")
    (old,) = seeded.key_ids
    invoke(seeded.secret)

    def used_and_resaved(day: int) -> None:
        set_last_used("alice", old, clock.now())
        resave(aws, clock, seeded.secret, day=day)

    *_, last = days_of_runs(invoke, clock, seeded.secret, 3, used_and_resaved)
    assert aws.keys("alice")[old] == "Inactive", "forced off at MAX_GRACE_HOURS after the rotation"
    assert last["status"] == "retired" and last["forced_in_use"]


def test_a_writer_re_saving_the_secret_in_the_grace_period_gets_no_key_deleted(aws, invoke, clock, monkeypatch):
    # Shrunk by Hypothesis (ScheduledAccount): a rotation keeps the old key Active for GRACE_HOURS; an application
    # re-saves the secret, so AWSPREVIOUS now holds the new key and the old key is held by no secret; the next
    # run (the console's) took the old key for a stale one and deleted it, breaking every consumer still on it.
    # It is the last create's old key (key-rotation-made lists it): kept, under the usage gate from that create.
    monkeypatch.setenv("GRACE_HOURS", "24")
    seeded = seed_row(aws.iam, aws.secrets, ROWS[1], user="alice")
    (old,) = seeded.key_ids
    backdate_key("alice", old, 30)
    invoke(seeded.secret)
    resave(aws, clock, seeded.secret, note="re-saved")
    (entry,) = invoke(seeded.secret)["secrets"]
    assert aws.keys("alice").get(old) == "Active", entry
    assert entry["status"] == "waiting" and aws.holds_working_key(seeded.secret)
