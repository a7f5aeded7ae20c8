"""The 90-day deadline (CIS IAM.3): rotations fall due in time whatever ROTATE_AFTER_DAYS or a tag say, and
every summary entry says the held key's age, when it next rotates, and whether a managed key is overdue.
Time is simulated: keys are backdated in moto's state, never waited for."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest

import lambda_function
from between_runs import days_of_runs
from lambda_function import ConfigError
from seed import ROWS, backdate_key, enable_rotation, seed_row, seed_user, set_last_used


def held_for(aws, user: str, age_days: float):
    seeded = seed_user(aws.iam, aws.secrets, user, ("Inactive", "Active"), held=1)
    backdate_key(user, seeded.key_ids[1], age_days)
    return seeded


@pytest.mark.unit
@pytest.mark.parametrize("rotate_after, grace, expected", [
    (0, 0, 0), (120, 0, 81), (120, 24, 80), (30, 24, 30), (400, 0, 81)])  # an adopted key's gate, then the grace
def test_the_deadline_brings_the_rotation_forward(rotate_after, grace, expected):
    assert lambda_function.due_after_days(rotate_after, grace, 168, 90) == expected
    assert lambda_function.due_after_days(rotate_after, grace, 168, 0) == rotate_after, "0 turns it off"


def test_the_deadline_overrides_a_later_rotate_after_days(aws, invoke, monkeypatch, caplog):
    monkeypatch.setenv("ROTATE_AFTER_DAYS", "120")
    seeded = held_for(aws, "alice", 89)
    (entry,) = invoke(seeded.secret)["secrets"]
    assert entry["status"] == "rotated" and "rotation due at day 81, not 120" in entry["reason"]
    assert any('"action": "deadline"' in r.getMessage() and r.levelname == "WARNING" for r in caplog.records)


def test_with_a_grace_period_the_deadline_leaves_room_for_it(aws, invoke, monkeypatch):
    monkeypatch.setenv("ROTATE_AFTER_DAYS", "120")
    monkeypatch.setenv("GRACE_HOURS", "24")
    young, due = held_for(aws, "young", 79), held_for(aws, "due", 81)
    result = invoke(young.secret, due.secret)
    assert [e["status"] for e in result["secrets"]] == ["skipped", "rotated"]
    assert "rotate-after-days=80" in result["secrets"][0]["reason"]


def test_the_deadline_overrides_a_later_tag(aws, invoke):
    seeded = held_for(aws, "alice", 89)
    aws.secrets.tag_resource(SecretId=seeded.secret, Tags=[{"Key": "key-rotation:rotate-after-days", "Value": "200"}])
    (entry,) = invoke(seeded.secret)["secrets"]
    assert entry["status"] == "rotated"


def test_a_skipped_secret_past_the_deadline_is_overdue_and_untouched(aws, invoke):
    seeded = held_for(aws, "alice", 100)
    aws.secrets.tag_resource(SecretId=seeded.secret, Tags=[{"Key": "key-rotation:mode", "Value": "skip"}])
    result = invoke(seeded.secret)
    (entry,) = result["secrets"]
    assert entry["status"] == "skipped" and entry["overdue"] is True
    assert entry["overdue_key_id"] == seeded.key_ids[1] and entry["overdue_key_age_days"] >= 100
    assert result["overdue_keys"] == 1
    assert len(aws.versions(seeded.secret)) == 1


def test_a_previous_key_kept_active_past_the_deadline_is_overdue(aws, invoke, monkeypatch):
    monkeypatch.setenv("GRACE_HOURS", "24")
    seeded = held_for(aws, "alice", 95)
    (entry,) = invoke(seeded.secret)["secrets"]
    assert entry["status"] == "rotated" and entry["overdue"] is True  # kept Active through its grace period
    assert entry["overdue_key_id"] == seeded.key_ids[1]


def test_an_old_key_deactivated_in_the_run_is_no_longer_overdue(aws, invoke):
    seeded = held_for(aws, "alice", 95)
    (entry,) = invoke(seeded.secret)["secrets"]
    assert entry["status"] == "rotated" and entry["overdue"] is False


def test_key_age_and_next_rotation(aws, invoke, clock, monkeypatch):
    monkeypatch.setenv("ROTATE_AFTER_DAYS", "30")
    young = held_for(aws, "young", 10)
    (entry,) = invoke(young.secret)["secrets"]
    assert entry["status"] == "skipped" and 9.9 <= entry["key_age_days"] <= 10.1
    assert entry["next_rotation"] in {(clock.now() + timedelta(days=d)).strftime("%Y-%m-%d") for d in (19, 20, 21)}
    old = held_for(aws, "old", 40)
    (entry,) = invoke(old.secret)["secrets"]
    assert entry["status"] == "rotated" and entry["key_age_days"] == 0.0
    assert entry["next_rotation"] == (clock.now() + timedelta(days=30)).strftime("%Y-%m-%d")


def test_a_grace_period_that_alone_reaches_the_deadline_is_refused(aws, invoke, monkeypatch):
    monkeypatch.setenv("GRACE_HOURS", "24")
    monkeypatch.setenv("MAX_GRACE_HOURS", "2200")
    with pytest.raises(ConfigError, match="reaches MAX_KEY_AGE_DAYS"):
        invoke("any")


# --- the account: IAM's credential report ---------------------------------------------------------------------------


def test_the_report_lists_overdue_keys_managed_and_unmanaged_and_changes_nothing(aws, invoke):
    managed = held_for(aws, "managed", 120)
    aws.iam.create_user(UserName="stray")
    stray = [aws.iam.create_access_key(UserName="stray")["AccessKey"]["AccessKeyId"] for _ in range(2)]
    backdate_key("stray", stray[0], 200)
    backdate_key("stray", stray[1], 150)
    aws.iam.update_access_key(UserName="stray", AccessKeyId=stray[1], Status="Inactive")  # inactive: not listed
    aws.iam.create_user(UserName="fresh")
    aws.iam.create_access_key(UserName="fresh")
    keys_before = {u: aws.keys(u) for u in ("managed", "stray", "fresh")}
    result = invoke(managed.secret, event={"report": True})
    report = result["report"]
    assert [(e["user"], e["key_slot"]) for e in report["overdue_managed"]] == [("managed", 2)]
    assert [(e["user"], e["key_slot"]) for e in report["overdue_unmanaged"]] == [("stray", 1)]
    assert report["overdue_unmanaged"][0]["age_days"] >= 200 and report["root_key_active"] is False
    assert report["generated"] and result["dry_run"] is True and result["unmanaged_overdue_keys"] == 1
    assert {u: aws.keys(u) for u in ("managed", "stray", "fresh")} == keys_before, "the report changes nothing"
    assert len(aws.versions(managed.secret)) == 1


def test_a_report_that_does_not_complete_fails_naming_it_and_the_rest_is_unaffected(aws, invoke, clock):
    from seed import ROWS, seed_row

    seeded = seed_row(aws.iam, aws.secrets, ROWS[1], user="alice")

    def never_complete(parsed, **_):
        parsed["State"] = "STARTED"

    lambda_function.aws_clients(lambda_function.Settings()).iam.meta.events.register(
        "after-call.iam.GenerateCredentialReport", never_complete)
    result = invoke(seeded.secret, event={"report": True})  # a report run answers with its summary
    assert "credential report did not complete within 60s" in result["report"]["failed"]
    assert result["secrets"][0]["status"] == "planned"
    assert sum(clock.sleeps) <= 60
    assert len(aws.versions(seeded.secret)) == 1


@pytest.fixture
def one_clock(clock):
    """moto's clock (freezegun: IAM's key creation dates) moved with the function's: ``one_clock(seconds)``."""
    import freezegun

    with freezegun.freeze_time(clock.now(), tick=False, ignore=["_pytest"]) as frozen:
        def advance(seconds: float) -> None:
            clock.advance(seconds)
            frozen.move_to(clock.now())

        yield advance


def active_ages(aws, clock, user: str) -> dict[str, float]:
    """Each Active key's age in days, on the test's clock."""
    listed = aws.iam.list_access_keys(UserName=user)["AccessKeyMetadata"]
    return {k["AccessKeyId"]: (clock.now() - k["CreateDate"]).total_seconds() / 86400 for k in listed
            if k["Status"] == "Active"}


def test_two_waits_in_a_row_still_leave_no_key_past_the_deadline(aws, invoke, clock, one_clock, monkeypatch):
    # The deploy defaults (rotate at 80 days, GRACE_HOURS=24, MAX_GRACE_HOURS=168, MAX_KEY_AGE_DAYS=90). Just as
    # the held key falls due a weekly job's key appears (adopted: it holds the rotation back 168 h), and the
    # application on the held key never moves to the new one (its old key is still used after the grace
    # period). Neither wait, nor both in a row, keeps any Active key past day 90: the old key goes, loudly, on the
    # last run before the deadline.
    monkeypatch.setenv("ROTATE_AFTER_DAYS", "80")
    monkeypatch.setenv("GRACE_HOURS", "24")
    seeded = seed_user(aws.iam, aws.secrets, "alice", ("Active",), held=0)
    (held,) = seeded.key_ids
    backdate_key("alice", held, 80)
    job = []

    def the_world(day: int) -> None:
        if day == 1:
            job.append(aws.iam.create_access_key(UserName="alice")["AccessKey"]["AccessKeyId"])
        for key_id in (held, *job):  # the job and the application use their keys every day while they work
            if active_ages(aws, clock, "alice").get(key_id) is not None:
                set_last_used("alice", key_id, clock.now())

    entries = []
    for day in range(1, 16):
        one_clock(24 * 3600)
        the_world(day)
        entries.append(invoke(seeded.secret)["secrets"][0])
        ages = active_ages(aws, clock, "alice")
        assert all(age <= 90 for age in ages.values()), (day, ages, entries[-3:])
    assert any(e.get("forced_in_use") and "MAX_KEY_AGE_DAYS" in (e.get("reason") or "") for e in entries)


def test_a_key_turned_on_again_and_again_gets_no_new_wait_at_the_deadline_and_the_overdue_key_is_said(
        aws, invoke, clock, one_clock, monkeypatch):
    # Someone may turn their unheld key in use on again every time the function retires it, before the next run:
    # a new adoption each time (KEY@off) would hold the rotation back a week at a time. Once
    # the held key is at its deadline a key turned on again gets no new wait: each run deactivates it, loudly.
    # A key in use is never deleted to make room, so a person who turns it on before every run holds the
    # rotation: the held key is then reported overdue on every run, never silently.
    monkeypatch.setenv("ROTATE_AFTER_DAYS", "80")
    monkeypatch.setenv("GRACE_HOURS", "24")
    seeded = seed_user(aws.iam, aws.secrets, "alice", ("Active",), held=0)
    (held,) = seeded.key_ids
    backdate_key("alice", held, 79)
    person = aws.iam.create_access_key(UserName="alice")["AccessKey"]["AccessKeyId"]

    def the_world() -> None:
        if aws.keys("alice").get(person) == "Inactive":
            aws.iam.update_access_key(UserName="alice", AccessKeyId=person, Status="Active")
        for key_id in (person, held):
            if aws.keys("alice").get(key_id) == "Active":
                set_last_used("alice", key_id, clock.now())

    entries = []
    for _ in range(16):
        one_clock(24 * 3600)
        the_world()
        entries.append(invoke(seeded.secret)["secrets"][0])
    at_deadline = [e for e in entries if e["key_age_days"] >= 88]  # (at 87 its first adoption ended as usual)
    assert all(e["status"] == "retired" and e["forced_in_use"] and "MAX_KEY_AGE_DAYS" in e["reason"]
               for e in at_deadline), at_deadline[:2]
    assert all(e["overdue"] for e in entries if e["key_age_days"] > 90)
    assert aws.value(seeded.secret)["AccessKeyId"] == held and person in aws.keys("alice"), "nothing in use deleted"


def test_a_rotation_late_after_a_hold_still_gives_the_old_key_its_grace_period(aws, invoke, clock, monkeypatch):
    # Found by make fuzz: a hold (Secrets Manager's rotation, a skip tag) let the held key age past the deadline;
    # once it rotates, its consumers still get GRACE_HOURS to move (the grace period is a promise; the deadline
    # ends only a usage gate after it). Overdue is said all along.
    monkeypatch.setenv("GRACE_HOURS", "24")
    seeded = held_for(aws, "alice", 95)
    old = seeded.key_ids[1]
    (entry,) = invoke(seeded.secret)["secrets"]
    assert entry["status"] == "rotated" and aws.keys("alice")[old] == "Active"
    clock.advance(12 * 3600)
    set_last_used("alice", old, clock.now())
    (entry,) = invoke(seeded.secret)["secrets"]
    assert entry["status"] == "waiting" and aws.keys("alice")[old] == "Active" and entry["overdue"]
    clock.advance(13 * 3600)
    (entry,) = invoke(seeded.secret)["secrets"]
    assert entry["status"] == "retired" and entry["forced_in_use"] and aws.keys("alice")[old] == "Inactive"


# --- the overdue report: held secrets, users who do not name them back, odd reports -----------------------------------


def test_a_secret_with_rotation_enabled_still_reports_its_overdue_key(aws, invoke):
    seeded = seed_row(aws.iam, aws.secrets, ROWS[1], user="alice")
    backdate_key("alice", seeded.key_ids[0], 100)
    enable_rotation(seeded.secret)
    (entry,) = invoke(seeded.secret)["secrets"]
    assert entry["status"] == "skipped" and entry["overdue"] and entry["overdue_key_id"] == seeded.key_ids[0]
    assert aws.keys("alice") == {seeded.key_ids[0]: "Active"}


def test_a_secret_its_user_does_not_name_back_does_not_make_the_user_managed(aws, invoke):
    # iam-keys/claim names mallory, whose tag names no secret; the secret is held (rotation enabled), so it is
    # skipped before authority is asked. mallory's old key is the account's unmanaged overdue key.
    aws.iam.create_user(UserName="mallory")
    key = aws.iam.create_access_key(UserName="mallory")["AccessKey"]
    backdate_key("mallory", key["AccessKeyId"], 120)
    aws.secrets.create_secret(Name="iam-keys/claim", SecretString=json.dumps({"UserName": "mallory"}))
    enable_rotation("iam-keys/claim")
    result = invoke("iam-keys/claim", event={"report": True})
    assert [e["user"] for e in result["report"]["overdue_unmanaged"]] == ["mallory"]
    assert result["report"]["overdue_managed"] == []


@pytest.mark.parametrize("content", [b"user,arn\nshort", b"arn,access_key_1_active\nx,true\n", b"\xff\xfe",
                                     b"user,access_key_1_active,access_key_1_last_rotated\n,true,2020-01-01\n"])
def test_a_credential_report_not_as_documented_is_said_and_the_summary_kept(aws, invoke, content):
    seeded = seed_row(aws.iam, aws.secrets, ROWS[1], user="alice")

    def odd_report(parsed, **_):
        parsed["Content"] = content

    lambda_function.aws_clients(lambda_function.Settings()).iam.meta.events.register(
        "after-call.iam.GetCredentialReport", odd_report)
    result = invoke(seeded.secret, event={"report": True})
    assert result["secrets"][0]["status"] == "planned"
    assert "not understood" in result["report"].get("failed", "not understood")


def test_a_report_run_with_a_refused_secret_returns_its_report(aws, invoke):
    seeded = seed_row(aws.iam, aws.secrets, ROWS[1], user="alice")
    refused = seed_user(aws.iam, aws.secrets, "bob", ("Active",), held=0, tag=False)
    result = invoke(seeded.secret, refused.secret, event={"report": True})
    assert result["failed"] == 1 and "report" in result and result["report"]["generated"]
    assert [e["status"] for e in result["secrets"]] == ["planned", "failed"]


# --- an adopted key in use near the deadline --------------------------------------------------------------------------


def test_a_key_in_use_adopted_near_the_deadline_still_leaves_the_rotation_inside_it(aws, invoke, clock,
                                                                                   monkeypatch):
    # The deploy defaults: rotate at 80 days, GRACE_HOURS=24, MAX_KEY_AGE_DAYS=90. A person's key appears when the
    # held key is 79 days old and is used every day: it is adopted, forced off MAX_GRACE_HOURS later, and the held
    # key still rotates before day 90 (the deadline counts the usage gate).
    monkeypatch.setenv("ROTATE_AFTER_DAYS", "80")
    monkeypatch.setenv("GRACE_HOURS", "24")
    seeded = seed_row(aws.iam, aws.secrets, ROWS[1], user="alice")
    (held,) = seeded.key_ids
    backdate_key("alice", held, 79)
    person = aws.iam.create_access_key(UserName="alice")["AccessKey"]["AccessKeyId"]
    set_last_used("alice", person, clock.now())
    def person_works(day: int) -> None:
        if aws.keys("alice").get(person) == "Active":
            set_last_used("alice", person, clock.now())

    entries = days_of_runs(invoke, clock, seeded.secret, 10, person_works)
    rotated_on = next(day for day, e in enumerate(entries, 1) if e["status"] == "rotated")
    assert 79 + rotated_on < 90, entries
    assert held not in aws.keys("alice") or aws.keys("alice")[held] != "Active"


def test_a_secret_whose_holders_cannot_be_read_still_says_its_key_s_age_and_that_it_is_overdue(aws, invoke, faults,
                                                                                              caplog):
    # The keys are listed before their holders are worked out: when IAM refuses a key's last use, the secret
    # fails, and the run still counts its overdue key, from the keys it listed.
    from faults import REFUSED

    seeded = seed_user(aws.iam, aws.secrets, "alice", ("Active", "Active"), held=0, stale=False)
    backdate_key("alice", seeded.key_ids[0], 100)
    faults.inject("get_access_key_last_used", REFUSED, error=("AccessDenied", "not allowed", 403))
    with pytest.raises(lambda_function.RotationFailed, match="GetAccessKeyLastUsed failed"):
        invoke(seeded.secret)
    (complete,) = [json.loads(r.getMessage()) for r in caplog.records if '"action": "run_complete"' in r.getMessage()]
    assert complete["failed"] == 1 and complete["overdue_keys"] == 1 and complete["oldest_key_age_days"] >= 100
    assert aws.keys("alice") == {seeded.key_ids[0]: "Active", seeded.key_ids[1]: "Active"}
