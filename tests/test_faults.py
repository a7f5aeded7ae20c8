"""Faults at every AWS call in every row: the secret always holds a working key,
no new key is left Active unheld (but after a crash), and a clean re-run converges."""

from __future__ import annotations

import pytest

from faults import CRASH, MODES, REFUSED, TIMEOUT, Crash, record_calls
from lambda_function import LOST_KEY_WAIT, RotationFailed
from seed import ROWS, seed_row, set_last_used


def calls_of_every_row() -> dict[str, list[str]]:
    """Each row's calls, recorded from a clean run on moto (not listed by hand): a call a row gains is
    fault-injected without anyone listing it."""
    import os

    import boto3
    from moto import mock_aws

    import lambda_function

    calls = {}
    for row in ROWS:
        with mock_aws():
            os.environ["sec"] = seed_row(boto3.client("iam"), boto3.client("secretsmanager"), row, "alice").secret
            try:
                calls[row.name] = record_calls(lambda: lambda_function.lambda_handler({}, None))
            finally:
                del os.environ["sec"]
    return calls


CALLS = calls_of_every_row()
CASES = [
    pytest.param(row, call, mode, id=f"{row.name}-{call}-{mode}")
    for row in ROWS
    for call in CALLS[row.name]
    for mode in MODES
]


def test_every_row_makes_the_calls_its_plan_says():
    # A sanity check of the recording, not a hand-kept list: each row reads, creates and stores once.
    for row in ROWS:
        assert CALLS[row.name][:2] == ["describe_secret", "batch_get_secret_value"], row.name
        assert CALLS[row.name].count("create_access_key") == 1 and CALLS[row.name].count("put_secret_value") == 1


def converge(aws, invoke, clock, secret: str, user: str) -> None:
    """Re-run as the daily schedule would, once IAM's last-used data covers what the faulted run made (a key the
    function made and lost is its own only once IAM can show it never used: LOST_KEY_WAIT). A key a crash made
    after CreateAccessKey is held by no secret and is young, so it is adopted (someone's key in use, for all
    the function can tell): kept Active, then deactivated through the usage gate once IAM shows it unused a day
    after the store. Where the secret holds no working key, no slot frees without deleting it: the run says
    so, and the operator's force frees it."""
    clock.advance(LOST_KEY_WAIT.total_seconds() + 60)
    try:
        invoke(secret)
    except RotationFailed as failed:
        assert "is held by no secret but in use" in str(failed) and '{"force": true}' in str(failed)
        (entry,) = invoke(secret, event={"force": True})["secrets"]
        assert entry["status"] == "rotated" and "force: deleted key" in entry["reason"]
    if len([s for s in aws.keys(user).values() if s == "Active"]) > 1:
        clock.advance(25 * 3600)
        assert invoke(secret)["retired"] == 1


@pytest.mark.parametrize("row, call, mode", CASES)
def test_fault_keeps_a_working_key_and_rerun_converges(aws, invoke, clock, faults, monkeypatch, row, call, mode):
    seeded = seed_row(aws.iam, aws.secrets, row, user="alice")
    had_working_key = row.held is not None and row.statuses[row.held] == "Active"
    unheld_before = aws.active_unheld(seeded.secret, "alice")
    method, _, nth = call.partition("#")
    fault = faults.inject(method, mode, int(nth or 1))

    try:
        invoke(seeded.secret)
    except (RotationFailed, Crash):
        pass
    assert fault.fired, f"{call} was never called for {row.name}"

    if had_working_key:
        assert aws.holds_working_key(seeded.secret)
    if mode != CRASH:
        assert aws.active_unheld(seeded.secret, "alice") <= unheld_before

    faults.clear()  # the faults go
    converge(aws, invoke, clock, seeded.secret, "alice")
    aws.assert_converged(seeded.secret)
    assert len(aws.keys("alice")) <= 2


def test_refused_store_deletes_new_key_and_keeps_old(aws, invoke, faults, monkeypatch):
    seeded = seed_row(aws.iam, aws.secrets, ROWS[1], user="alice")
    faults.inject("put_secret_value", REFUSED)
    with pytest.raises(RotationFailed, match="new key deleted, old key unchanged"):
        invoke(seeded.secret)
    assert aws.keys("alice") == {seeded.key_ids[0]: "Active"}
    assert len(aws.versions(seeded.secret)) == 1


def test_lost_answer_to_store_is_confirmed_and_rotation_completes(aws, invoke, faults, monkeypatch):
    seeded = seed_row(aws.iam, aws.secrets, ROWS[1], user="alice")
    faults.inject("put_secret_value", TIMEOUT)
    result = invoke(seeded.secret)
    assert result["rotated"] == 1
    assert aws.keys("alice")[seeded.key_ids[0]] == "Inactive"
    aws.assert_converged(seeded.secret)


def test_unconfirmable_store_leaves_new_key_for_next_run(aws, invoke, faults, monkeypatch):
    seeded = seed_row(aws.iam, aws.secrets, ROWS[1], user="alice")
    faults.inject("put_secret_value", REFUSED)
    faults.inject("get_secret_value", REFUSED)  # the re-read fails too (the first read was batched)
    with pytest.raises(RotationFailed, match="could not re-read the secret"):
        invoke(seeded.secret)
    assert len(aws.keys("alice")) == 2, "the new key is not deleted blindly"
    assert aws.holds_working_key(seeded.secret)


def test_lost_answer_to_create_removes_the_orphan_key(aws, invoke, faults, monkeypatch):
    seeded = seed_row(aws.iam, aws.secrets, ROWS[1], user="alice")
    faults.inject("create_access_key", TIMEOUT)
    with pytest.raises(RotationFailed, match="old key unchanged"):
        invoke(seeded.secret)
    assert aws.keys("alice") == {seeded.key_ids[0]: "Active"}


def crashed_after_create(aws, invoke, faults):
    """alice's rotation dies right after CreateAccessKey (IAM made the key; its answer, with the secret, is lost):
    the seeded user and the key the crash left."""
    seeded = seed_row(aws.iam, aws.secrets, ROWS[1], user="alice")
    faults.inject("create_access_key", CRASH)
    with pytest.raises(Crash):
        invoke(seeded.secret)
    (made,) = set(aws.keys("alice")) - set(seeded.key_ids)
    faults.clear()
    return seeded, made


@pytest.mark.parametrize("rotate_after_days", ["0", "30"])
def test_a_key_the_function_made_and_lost_in_a_crash_is_deleted_once_iam_can_show_it_unused(
        aws, invoke, faults, monkeypatch, clock, rotate_after_days):
    # The crashed run's key is held by no secret, never used, and made just after the run marked the user
    # (key-rotation-made): the function's own, whose secret was only in the lost answer. The first run once IAM's
    # last-used data covers the key's life deletes it, whether it rotates (the plan deletes it first) or nothing
    # is due (a clean-up alone). (tests/test_lagging_aws.py: the runs before that.)
    seeded, orphan = crashed_after_create(aws, invoke, faults)
    monkeypatch.setenv("ROTATE_AFTER_DAYS", rotate_after_days)
    clock.advance(LOST_KEY_WAIT.total_seconds() + 60)
    (entry,) = invoke(seeded.secret)["secrets"]
    assert orphan not in aws.keys("alice")
    assert f"deleted {orphan}: made by this function, never stored" in entry["reason"]
    assert entry["status"] == ("rotated" if rotate_after_days == "0" else "skipped")
    assert aws.holds_working_key(seeded.secret)


def test_a_key_a_person_made_and_used_beside_the_function_s_mark_is_adopted_not_deleted(aws, invoke, faults, clock):
    # The same moment, but the key is someone's: IAM shows it used. It is never the function's to delete.
    seeded, made = crashed_after_create(aws, invoke, faults)
    set_last_used("alice", made, clock.now())
    (entry,) = invoke(seeded.secret)["secrets"]
    assert aws.keys("alice")[made] == "Active" and entry["adopted"] == made


@pytest.mark.parametrize("row, call", [pytest.param(row, call, id=f"{row.name}-{call}") for row in ROWS
                                        for call in CALLS[row.name]])
def test_one_refused_attempt_is_retried_by_botocore_and_the_run_is_as_without_it(aws, invoke, faults, row, call):
    # A 503 on the first attempt only: botocore's retry handler sends the call again (its backoff on the test's
    # clock), and the rotation ends as an unfaulted one does. Were botocore's retries lost, this would fail.
    seeded = seed_row(aws.iam, aws.secrets, row, user="alice")
    method, _, nth = call.partition("#")
    fault = faults.inject(method, REFUSED, int(nth or 1), attempts=1)
    result = invoke(seeded.secret)
    assert fault.failed == 1 and result["failed"] == 0
    aws.assert_converged(seeded.secret)
    assert len(aws.keys("alice")) <= 2


def test_refused_on_every_attempt_botocore_retries_until_the_budget_stops_it(aws, invoke, faults, clock,
                                                                             monkeypatch):
    import random

    random.seed(7)  # botocore's backoff jitter: the same waits each run
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "20")
    monkeypatch.setenv("TIME_MARGIN_SECONDS", "40")  # one call may retry for 10 s
    seeded = seed_row(aws.iam, aws.secrets, ROWS[1], user="alice")
    fault = faults.inject("put_secret_value", REFUSED)
    started = clock.monotonic()
    with pytest.raises(RotationFailed, match="past its share of TIME_MARGIN_SECONDS") as failure:
        invoke(seeded.secret)
    assert 1 < fault.failed < 20, "botocore retried, then the budget stopped it before AWS_MAX_ATTEMPTS"
    assert 10 <= clock.monotonic() - started <= 10 + 20 + 10, "the budget, one backoff past it, the clean-up"
    assert "new key deleted, old key unchanged" in str(failure.value)
    assert aws.keys("alice") == {seeded.key_ids[0]: "Active"} and aws.holds_working_key(seeded.secret)


def test_within_the_budget_botocore_stops_at_aws_max_attempts(aws, invoke, faults, monkeypatch):
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "3")
    seeded = seed_row(aws.iam, aws.secrets, ROWS[1], user="alice")
    fault = faults.inject("put_secret_value", REFUSED)
    with pytest.raises(RotationFailed, match="ServiceUnavailable"):
        invoke(seeded.secret)
    assert fault.failed == 3, "AWS_MAX_ATTEMPTS counts every attempt, the first included"
    assert aws.keys("alice") == {seeded.key_ids[0]: "Active"}
