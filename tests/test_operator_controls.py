"""Operator controls: verify the new key, dry run, age threshold, targeted runs, metrics."""

from __future__ import annotations

import json

import pytest

import lambda_function
from lambda_function import ConfigError, RotationFailed
from seed import ROWS, backdate_key, seed_row, seed_user

ONE_ACTIVE = ROWS[1]


# --- verification -------------------------------------------------------------------------------------------------


def test_new_key_is_verified_before_old_key_is_deactivated(aws, invoke, sts, clock):
    seeded = seed_row(aws.iam, aws.secrets, ONE_ACTIVE, user="alice")
    sts.refusals = 3
    old_key_states = []
    sts.on_call = lambda: old_key_states.append(aws.keys("alice")[seeded.key_ids[0]])
    invoke(seeded.secret)
    assert len(sts.calls) == 4
    assert clock.sleeps == [1.0, 2.0, 4.0]
    # While STS was being asked, the old key was still Active.
    assert old_key_states == ["Active"] * 4
    assert aws.keys("alice")[seeded.key_ids[0]] == "Inactive"
    aws.assert_converged(seeded.secret)


def test_key_that_never_verifies_fails_and_keeps_old_key_active(aws, invoke, sts, clock, monkeypatch):
    monkeypatch.setenv("VERIFY_TIMEOUT_SECONDS", "20")
    seeded = seed_row(aws.iam, aws.secrets, ONE_ACTIVE, user="alice")
    sts.refusals = 1000
    with pytest.raises(RotationFailed, match="did not authenticate within 20s"):
        invoke(seeded.secret)
    assert sum(clock.sleeps) <= 20 and len(sts.calls) >= 3
    new_key = aws.value(seeded.secret)["AccessKeyId"]
    assert aws.keys("alice") == {seeded.key_ids[0]: "Active", new_key: "Active"}
    assert aws.holds_working_key(seeded.secret)
    sts.refusals = 0
    result = invoke(seeded.secret)  # the next run verifies the new key, then retires the old one
    assert result["retired"] == 1
    aws.assert_converged(seeded.secret)


def test_key_of_another_identity_fails_at_once(aws, invoke, sts, clock):
    seeded = seed_row(aws.iam, aws.secrets, ONE_ACTIVE, user="alice")
    sts.answer = {"Arn": "arn:aws:iam::123456789012:user/admin"}
    with pytest.raises(RotationFailed, match="authenticates as 'arn:aws:iam::123456789012:user/admin'"):
        invoke(seeded.secret)
    assert clock.sleeps == []
    assert aws.keys("alice")[seeded.key_ids[0]] == "Active"


def test_verification_off_makes_no_sts_call(aws, invoke, sts, monkeypatch):
    monkeypatch.setenv("VERIFY_TIMEOUT_SECONDS", "0")
    seeded = seed_row(aws.iam, aws.secrets, ONE_ACTIVE, user="alice")
    sts.refusals = 1000
    invoke(seeded.secret)
    assert sts.calls == []
    aws.assert_converged(seeded.secret)


@pytest.mark.parametrize("arn, user, expected", [
    ("arn:aws:iam::123456789012:user/alice", "alice", True),
    ("arn:aws:iam::123456789012:user/team/ops/alice", "alice", True),
    ("arn:aws:iam::123456789012:user/alice2", "alice", False),
    ("arn:aws:sts::123456789012:assumed-role/alice/x", "alice", False),
    ("arn:aws:iam::123456789012:user/Alice", "alice", True),
    ("arn:aws:iam::999999999999:user/alice", "alice", False),  # same name, another account
    ("arn:aws-cn:iam::123456789012:user/alice", "alice", False),  # another partition
    ("not-an-arn", "alice", False),
])
def test_arn_is_user_compares_partition_account_and_name(arn, user, expected):
    assert lambda_function.arn_is_user(arn, user, "aws", "123456789012") is expected


# --- age threshold ------------------------------------------------------------------------------------------------


def steady_state(aws, user: str, held_age_days: float):
    """Held key Active and `held_age_days` old, previous key Inactive."""
    seeded = seed_user(aws.iam, aws.secrets, user, ("Inactive", "Active"), held=1)
    backdate_key(user, seeded.key_ids[0], held_age_days + 90)
    backdate_key(user, seeded.key_ids[1], held_age_days)
    return seeded


def test_young_key_in_steady_state_is_skipped(aws, invoke, monkeypatch):
    monkeypatch.setenv("ROTATE_AFTER_DAYS", "60")
    seeded = steady_state(aws, "alice", held_age_days=10)
    result = invoke(seeded.secret)
    assert (result["rotated"], result["skipped"]) == (0, 1)
    assert "younger than rotate-after-days=60" in result["secrets"][0]["reason"]
    assert len(aws.versions(seeded.secret)) == 1


def test_old_key_is_rotated(aws, invoke, monkeypatch):
    monkeypatch.setenv("ROTATE_AFTER_DAYS", "90")
    seeded = steady_state(aws, "alice", held_age_days=91)
    assert invoke(seeded.secret)["rotated"] == 1
    aws.assert_converged(seeded.secret)


def test_force_ignores_the_threshold(aws, invoke, monkeypatch):
    monkeypatch.setenv("ROTATE_AFTER_DAYS", "90")
    seeded = steady_state(aws, "alice", held_age_days=1)
    assert invoke(seeded.secret, event={"force": True})["rotated"] == 1


def test_threshold_zero_rotates_every_run(aws, invoke):
    seeded = steady_state(aws, "alice", held_age_days=0)
    assert invoke(seeded.secret)["rotated"] == 1


@pytest.mark.parametrize("statuses, held", [
    (("Active", "Active"), 1),    # a second Active key the secret does not hold
    (("Active",), None),          # the secret holds no key
    (("Inactive", "Active"), 0),  # the held key is inactive
    ((), None),                   # no key at all
], ids=["second-active", "held-missing", "held-inactive", "no-keys"])
def test_young_keys_needing_repair_are_rotated(aws, invoke, monkeypatch, statuses, held):
    monkeypatch.setenv("ROTATE_AFTER_DAYS", "90")
    seeded = seed_user(aws.iam, aws.secrets, "alice", statuses, held=held)
    assert invoke(seeded.secret)["rotated"] == 1
    aws.assert_converged(seeded.secret)


# --- targeted runs ------------------------------------------------------------------------------------------------


def test_targeted_run_rotates_only_named_secrets(aws, invoke):
    a, b, c = (seed_row(aws.iam, aws.secrets, ONE_ACTIVE, user=u) for u in ("a", "b", "c"))
    result = invoke(a.secret, b.secret, c.secret, event={"secrets": [c.secret, " ", a.secret]})
    assert [s["secret"] for s in result["secrets"]] == [c.secret, a.secret]
    assert len(aws.versions(b.secret)) == 1 and len(aws.keys("b")) == 1
    aws.assert_converged(a.secret)
    aws.assert_converged(c.secret)


@pytest.mark.parametrize("secrets", [["iam-keys/a", "iam-keys/not-listed"], "iam-keys/not-listed", [], [7]])
def test_targeted_run_cannot_widen_or_be_malformed(aws, invoke, secrets):
    a = seed_row(aws.iam, aws.secrets, ONE_ACTIVE, user="a")
    seed_row(aws.iam, aws.secrets, ONE_ACTIVE, user="not-listed")
    with pytest.raises(ConfigError, match='secrets'):
        invoke(a.secret, event={"secrets": secrets})
    assert len(aws.versions(a.secret)) == 1 and len(aws.keys("not-listed")) == 1


# --- metrics and settings -----------------------------------------------------------------------------------------


def emf_lines(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.startswith('{"_aws"')]


def test_one_emf_line_counts_rotated_skipped_failed(aws, invoke, capsys):
    good = seed_row(aws.iam, aws.secrets, ONE_ACTIVE, user="a")
    aws.secrets.create_secret(Name="bad", SecretString="[]")
    arn = aws.secrets.describe_secret(SecretId=good.secret)["ARN"]
    with pytest.raises(RotationFailed):
        invoke(sec=f"{good.secret};{arn};bad")
    (line,) = emf_lines(capsys.readouterr().out)
    assert (line["Rotated"], line["Skipped"], line["Failed"]) == (1, 1, 1)
    (directive,) = line["_aws"]["CloudWatchMetrics"]
    assert {"Rotated", "Skipped", "Failed", "Retired", "Waiting", "ForcedWhileInUse", "RolledBack", "Succeeded",
            "OverdueKeys", "StoppedEarly", "UnmanagedOverdueKeys", "OldestKeyAgeDays"} == {
        m["Name"] for m in directive["Metrics"]}
    units = {m["Name"]: m["Unit"] for m in directive["Metrics"]}
    assert units.pop("OldestKeyAgeDays") == "None" and set(units.values()) == {"Count"}, "a level, in days"
    assert line["OldestKeyAgeDays"] == 0, "the held keys were made this run"

    assert directive["Dimensions"] == [["FunctionName"]] and "FunctionName" in line


@pytest.mark.parametrize("name, value", [
    ("ROTATE_AFTER_DAYS", "ninety"), ("ROTATE_AFTER_DAYS", "-1"), ("VERIFY_TIMEOUT_SECONDS", "x"),
    ("MAX_WORKERS", "0"), ("MAX_WORKERS", "2.5"), ("TIME_MARGIN_SECONDS", "soon"),
])
def test_bad_setting_is_named_and_nothing_changes(aws, invoke, monkeypatch, name, value):
    seeded = seed_row(aws.iam, aws.secrets, ONE_ACTIVE)
    monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError, match=name):
        invoke(seeded.secret)
    assert len(aws.versions(seeded.secret)) == 1


def test_new_keys_wait_out_propagation_together_not_one_after_another(aws, invoke, clock, monkeypatch):
    # Each key is refused until 5 s after it was first tried, as IAM's propagation delay does.
    monkeypatch.setenv("MAX_WORKERS", "3")
    monkeypatch.setenv("MAX_FAILURES", "0")  # no first wave (MAX_FAILURES verifies a first wave on its own)
    seeded = [seed_row(aws.iam, aws.secrets, ONE_ACTIVE, user=f"u{i}") for i in range(12)]
    first_tried: dict[str, float] = {}

    def not_yet(key_id: str) -> bool:
        first_tried.setdefault(key_id, clock.monotonic())
        return clock.monotonic() - first_tried[key_id] < 5

    aws.sts.not_yet = not_yet
    result = invoke(*(s.secret for s in seeded))
    assert result["rotated"] == 12
    assert clock.sleeps == [1.0, 2.0, 4.0], "one shared wait, not one per secret"
    for s in seeded:
        aws.assert_converged(s.secret)
