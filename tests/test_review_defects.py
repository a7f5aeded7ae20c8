"""The defects a careful review (and the model-based test) found, each as an ordinary test of what AWS is left
holding. Each failed on the code before its fix."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest

import lambda_function
from conftest import LambdaContext
from faults import REFUSED
from lambda_function import ConfigError, RotationFailed
from seed import ROWS, backdate_key, begin_rotation, enable_rotation, seed_row, seed_user, set_last_used

HOUR, DAY = 3600, 24 * 3600


def days_of_runs(invoke, clock, secret: str, days: int, each=None) -> list[dict]:
    """The daily schedule for ``days`` days: one run a day, ``each(day)`` before it."""
    entries = []
    for day in range(1, days + 1):
        clock.advance(DAY)
        if each:
            each(day)
        try:
            entries.append(invoke(secret)["secrets"][0])
        except RotationFailed as failed:
            entries.append({"status": "failed", "reason": str(failed)})
    return entries


def resave(aws, clock, secret: str, **extra) -> None:
    """A writer re-saves the secret (an application adding a field): a new version, dated now as AWS would date
    it (moto dates it by the real clock, which the tests' clock has left behind)."""
    from moto.secretsmanager.models import secretsmanager_backends

    from seed import ACCOUNT_ID

    value = aws.value(secret)
    version = aws.secrets.put_secret_value(SecretId=secret, SecretString=json.dumps({**value, **extra}))["VersionId"]
    stored = secretsmanager_backends[ACCOUNT_ID]["us-east-1"].secrets[secret]
    stored.versions[version]["createdate"] = int(clock.now().timestamp())


# --- 2. clocks a writer of the secret can move ------------------------------------------------------------------------


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


# --- 3. the first wave holds rotations that will act ------------------------------------------------------------------


def test_the_first_wave_counts_rotations_not_secrets(aws, invoke, sts, monkeypatch):
    # Four secrets not due, then four due, STS refusing every new key: MAX_FAILURES=2 rotations are left half done,
    # the rest not attempted.
    monkeypatch.setenv("MAX_FAILURES", "2")
    monkeypatch.setenv("ROTATE_AFTER_DAYS", "30")
    monkeypatch.setenv("VERIFY_TIMEOUT_SECONDS", "2")
    seeded = [seed_row(aws.iam, aws.secrets, ROWS[1], user=f"u{i}") for i in range(8)]
    for s in seeded[4:]:
        backdate_key(s.user, s.key_ids[0], 40)
    known = {k for s in seeded for k in s.key_ids}
    sts.not_yet = lambda key_id: key_id not in known
    with pytest.raises(RotationFailed):
        invoke(sec="iam-keys/*")
    half_done = [s.user for s in seeded if aws.value(s.secret)["AccessKeyId"] not in known]
    assert len(half_done) == 2, half_done
    untouched = [s.user for s in seeded if aws.keys(s.user) == {s.key_ids[0]: "Active"}]
    assert len(untouched) == 6


# --- 4. one act-or-plan decision; strict controls ---------------------------------------------------------------------


@pytest.mark.parametrize("control", [{"dry_run": True}, {"dry run": True}, {"force": True}])
def test_a_rotation_step_with_a_control_is_refused_before_anything_is_read(aws, faults, control):
    seeded = seed_row(aws.iam, aws.secrets, ROWS[1], user="alice")
    token = begin_rotation(seeded.secret)
    reads = faults.watch("describe_secret")
    with pytest.raises(ConfigError, match="takes no control"):
        lambda_function.lambda_handler({"Step": "createSecret", "SecretId": seeded.secret,
                                        "ClientRequestToken": token, **control}, LambdaContext())
    assert reads == [] and aws.keys("alice") == {seeded.key_ids[0]: "Active"}


# --- 5. the deadline and the report -----------------------------------------------------------------------------------


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


# --- 7. the first run and a key in use --------------------------------------------------------------------------------


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


# --- found by the model-based test ---------------------------------------------------------------------------------


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


# --- found by the security review of this round ---------------------------------------------------------------------


def test_two_leaked_keys_of_one_user_are_both_revoked_and_neither_deleted(aws, invoke, clock, monkeypatch):
    monkeypatch.setenv("GRACE_HOURS", "24")
    seeded = seed_row(aws.iam, aws.secrets, ROWS[1], user="alice")
    invoke(seeded.secret)  # the previous key kept Active for a day
    (previous,) = seeded.key_ids
    current = aws.value(seeded.secret)["AccessKeyId"]
    for order in ([previous, current], [current, previous]):
        result = invoke(seeded.secret, event={"exposed": order, "dry_run": True})
        assert result["secrets"][0]["exposed"]
    (entry,) = invoke(seeded.secret, event={"exposed": [previous, current]})["secrets"]
    keys = aws.keys("alice")
    assert keys[previous] == "Inactive" and previous in keys, "a leaked key is evidence: never deleted"
    assert keys[current] == "Active" and "NOT replaced" in entry["reason"], "no room without deleting evidence"
    assert aws.holds_working_key(seeded.secret)


def test_a_leak_never_frees_a_person_s_key_in_use_for_room(aws, invoke, clock):
    seeded = seed_user(aws.iam, aws.secrets, "alice", ("Active", "Active"), held=0, stale=False)
    held, person = seeded.key_ids
    set_last_used("alice", person, clock.now())
    with pytest.raises(RotationFailed, match="NOT replaced"):
        invoke(seeded.secret, event={"exposed": [held]})
    assert aws.keys("alice") == {held: "Active", person: "Active"}


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


def test_a_leak_whose_secret_fails_still_says_the_key_was_not_revoked(aws, invoke, topic):
    # A writer pointed alice's secret at bob: the secret is refused, and the leak is reported as such.
    seeded = seed_row(aws.iam, aws.secrets, ROWS[1], user="alice")
    aws.iam.create_user(UserName="bob")
    aws.secrets.put_secret_value(SecretId=seeded.secret, SecretString=json.dumps({"UserName": "bob"}))
    with pytest.raises(RotationFailed):
        invoke(seeded.secret, event={"exposed": [seeded.key_ids[0]]})
    (message,) = topic()
    assert f"EXPOSED key {seeded.key_ids[0]}: NOT revoked" in message
    assert aws.keys("alice") == {seeded.key_ids[0]: "Active"}


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
