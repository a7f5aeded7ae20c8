"""A leaked key: replaced and revoked at once, consumers told, who used it named.

Two triggers, one path: AWS Health's RISK event (tests/events, a copy of ../shared/events) and the operator's
{"exposed": [...]}. What AWS is left holding is read back from moto; what consumers and operators are told from
SQS behind the bus and the topic; CloudTrail through its stand-in (conftest.CloudTrailLookups)."""

from __future__ import annotations

import json
import logging

import pytest

from between_runs import resave
from conftest import load_event
from lambda_function import ConfigError, RotationFailed
from seed import ROWS, backdate_key, iam_secret_keys, seed_row, seed_user, set_last_used


def health_event(*key_ids: str, code: str = "AWS_RISK_CREDENTIALS_EXPOSED") -> dict:
    event = load_event("aws-health-risk-credentials-exposed")
    event["detail"] = {**event["detail"], "eventTypeCode": code,
                       "affectedEntities": [{"entityValue": k} for k in key_ids]}
    return event


def operator_event(*key_ids: str) -> dict:
    return {"exposed": list(key_ids)}


TRIGGERS = [pytest.param(health_event, id="aws-health"), pytest.param(operator_event, id="operator")]


@pytest.fixture
def alice(aws, monkeypatch):
    """alice's key, a day old, held by her secret; a grace period is set (a leak ignores it)."""
    monkeypatch.setenv("GRACE_HOURS", "24")
    monkeypatch.setenv("ROTATE_AFTER_DAYS", "80")
    seeded = seed_row(aws.iam, aws.secrets, ROWS[1], user="alice")
    backdate_key("alice", seeded.key_ids[0], 1)
    return seeded


@pytest.mark.parametrize("trigger", TRIGGERS)
def test_a_leaked_current_key_is_replaced_and_deactivated_at_once_never_deleted(aws, invoke, alice, bus, topic,
                                                                                caplog, trigger):
    caplog.set_level(logging.INFO)
    (leaked,) = alice.key_ids
    result = invoke(sec="iam-keys/*", event=trigger(leaked))
    new = aws.value(alice.secret)["AccessKeyId"]
    assert aws.keys("alice") == {leaked: "Inactive", new: "Active"}, "whatever its age or GRACE_HOURS"
    assert aws.holds_working_key(alice.secret) and aws.sts.calls[-1] == new, "the new key authenticated first"
    (entry,) = result["secrets"]
    assert entry["status"] == "rotated" and entry["exposed"] is True
    assert (entry["exposed_key_id"], entry["new_key_id"]) == (leaked, new)
    (event,) = bus()
    assert event["detail-type"] == "Access Key Exposed" and event["detail"]["exposed_key_id"] == leaked
    assert event["detail"]["current_key_id"] == new
    (message,) = topic()
    assert f"EXPOSED key {leaked}" in message and "deactivated" in message and "broken until it reads" in message
    assert any('"action": "exposed_key"' in r.getMessage() and r.levelname == "WARNING" for r in caplog.records)
    said = json.dumps(result) + message + json.dumps(event) + caplog.text
    assert not [s for s in iam_secret_keys("alice").values() if s in said]


@pytest.mark.parametrize("trigger", TRIGGERS)
def test_a_leaked_previous_key_in_its_grace_period_is_deactivated_now(aws, invoke, clock, monkeypatch, trigger):
    monkeypatch.setenv("GRACE_HOURS", "24")
    seeded = seed_row(aws.iam, aws.secrets, ROWS[1], user="alice")
    invoke(seeded.secret)  # rotated: the old key kept Active for a day
    (previous,) = seeded.key_ids
    current = aws.value(seeded.secret)["AccessKeyId"]
    assert aws.keys("alice")[previous] == "Active"
    (entry,) = invoke(seeded.secret, event=trigger(previous))["secrets"]
    assert aws.keys("alice") == {previous: "Inactive", current: "Active"}
    assert entry["status"] == "retired" and entry["exposed_key_id"] == previous


def test_a_leaked_adopted_key_is_deactivated_now(aws, invoke, clock):
    seeded = seed_user(aws.iam, aws.secrets, "alice", ("Active", "Active"), held=0, stale=False)
    held, person = seeded.key_ids
    set_last_used("alice", person, clock.now())
    invoke(seeded.secret)  # adopted: kept Active
    assert aws.keys("alice")[person] == "Active"
    (entry,) = invoke(seeded.secret, event=operator_event(person))["secrets"]
    assert aws.keys("alice")[person] == "Inactive" and entry["exposed"] and entry["status"] == "retired"
    assert aws.holds_working_key(seeded.secret)


def test_a_key_no_secret_of_this_function_manages_is_reported_and_untouched(aws, invoke, alice, topic, cloudtrail,
                                                                            clock):
    # Whose key it is, and that nothing changed: no more. Not its use, and no CloudTrail lookup of its callers
    # (the function has no business reading who uses a key it does not manage, nor putting it in its outputs).
    aws.iam.create_user(UserName="stray")
    stray = aws.iam.create_access_key(UserName="stray")["AccessKey"]["AccessKeyId"]
    set_last_used("stray", stray, clock.now())
    cloudtrail.record(stray, clock.now(), source_ip="198.51.100.77")
    result = invoke(alice.secret, event=operator_event(stray))
    (entry,) = result["secrets"]
    assert entry["status"] == "skipped" and entry["user"] == "stray" and entry["exposed_key_id"] == stray
    assert "no secret this function manages" in entry["reason"] and "last used" not in entry["reason"]
    assert "holdouts" not in entry and cloudtrail.calls == []
    assert aws.keys("stray") == {stray: "Active"} and aws.keys("alice") == {alice.key_ids[0]: "Active"}
    message = topic()[0]
    assert "EXPOSED key" in message and "198.51.100.77" not in json.dumps(result) + message


def test_two_users_whose_tags_name_one_secret_each_key_answered_for_its_own_user_only(aws, invoke, alice):
    # bob's tag names alice's secret (a mistake, or someone's trick). A leak naming both users' keys answers
    # alice's (her secret holds her keys) and refuses bob's loudly: it is never reported replaced while Active.
    bob = seed_user(aws.iam, aws.secrets, "bob", ("Active",), held=0)
    alice_arn = aws.secrets.describe_secret(SecretId=alice.secret)["ARN"]
    aws.iam.tag_user(UserName="bob", Tags=[{"Key": "key-rotation-secret", "Value": alice_arn}])
    (leaked,), (bobs,) = alice.key_ids, bob.key_ids
    with pytest.raises(RotationFailed) as failed:
        invoke(sec="iam-keys/*", event=health_event(leaked, bobs))
    assert aws.keys("alice")[leaked] == "Inactive" and aws.holds_working_key(alice.secret)
    assert aws.keys("bob") == {bobs: "Active"}
    assert f"key {bobs} of IAM user 'bob' is exposed and NOT revoked" in str(failed.value)


def test_a_leak_names_the_secret_as_sec_does_like_every_entry_point(aws, invoke, alice):
    (leaked,) = alice.key_ids
    (entry,) = invoke(sec="iam-keys/*", event=operator_event(leaked))["secrets"]
    assert entry["secret"] == alice.secret and entry["status"] == "rotated"


def test_a_key_whose_user_names_a_secret_sec_does_not_select_is_not_acted_on(aws, invoke, monkeypatch):
    other = seed_row(aws.iam, aws.secrets, ROWS[1], user="bob")  # bob's tag names iam-keys/bob
    (entry,) = invoke(event=operator_event(other.key_ids[0]), sec="iam-keys/alice*")["secrets"]
    assert entry["status"] == "skipped" and "no secret this function manages" in entry["reason"]
    assert aws.keys("bob") == {other.key_ids[0]: "Active"}


@pytest.mark.parametrize("event", [
    health_event("not-a-key"), operator_event("wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"),
    health_event("AKIAIOSFODNN7EXAMPLE", code="AWS_EC2_OPERATIONAL_ISSUE"), health_event()])
def test_an_event_naming_no_access_key_id_or_of_another_kind_is_refused_before_anything(aws, invoke, alice, faults,
                                                                                      event):
    reads = faults.watch("get_access_key_last_used")
    with pytest.raises(ConfigError) as refused:
        invoke(alice.secret, event=event)
    assert "wJalrXUtnFEMI" not in str(refused.value) and reads == []
    assert aws.keys("alice") == {alice.key_ids[0]: "Active"}


def test_an_event_naming_several_keys_answers_each(aws, invoke, alice):
    bob = seed_row(aws.iam, aws.secrets, ROWS[1], user="bob")
    result = invoke(event=health_event(alice.key_ids[0], bob.key_ids[0]), sec="iam-keys/*")
    assert sorted(e["status"] for e in result["secrets"]) == ["rotated", "rotated"]
    assert aws.keys("alice")[alice.key_ids[0]] == "Inactive" and aws.keys("bob")[bob.key_ids[0]] == "Inactive"


def test_who_used_the_leaked_key_is_named_and_the_quarantine_reported(aws, invoke, alice, cloudtrail, clock, topic):
    (leaked,) = alice.key_ids
    cloudtrail.record(leaked, clock.now(), source_ip="198.51.100.9", user_agent="curl/8.5", event_name="ListBuckets",
                      event_source="s3.amazonaws.com", user="alice")
    policy = aws.iam.create_policy(PolicyName="AWSCompromisedKeyQuarantineV3", PolicyDocument=json.dumps(
        {"Version": "2012-10-17", "Statement": [{"Effect": "Deny", "Action": "iam:CreateUser", "Resource": "*"}]}))
    aws.iam.attach_user_policy(UserName="alice", PolicyArn=policy["Policy"]["Arn"])
    (entry,) = invoke(alice.secret, event=operator_event(leaked))["secrets"]
    (group,) = entry["holdouts"]
    assert (group["source_ip"], group["user_agent"], group["count"]) == ("198.51.100.9", "curl/8.5", 1)
    assert entry["quarantined"] is True
    message = topic()[0]
    assert "198.51.100.9" in message and "quarantine policy" in message


def test_without_cloudtrail_permission_the_note_says_so_and_the_key_is_still_revoked(aws, invoke, alice, cloudtrail):
    cloudtrail.refuse = "AccessDeniedException"
    (entry,) = invoke(alice.secret, event=operator_event(alice.key_ids[0]))["secrets"]
    assert "needs cloudtrail:LookupEvents" in entry["holdouts_note"]
    assert aws.keys("alice")[alice.key_ids[0]] == "Inactive"


def test_with_the_user_tag_guard_off_a_leak_acts_on_what_the_batch_would_rotate(aws, invoke, monkeypatch):
    # REQUIRE_USER_TAG=false: the batch rotates any secret sec selects that names the user, tagged or not. The
    # leak path takes the same holders and authority: it answers the leak there, and says so of a key whose
    # user no selected secret names.
    monkeypatch.setenv("REQUIRE_USER_TAG", "false")
    alice = seed_user(aws.iam, aws.secrets, "alice", ("Active",), held=0, tag=False)
    seed_user(aws.iam, aws.secrets, "carol", ("Active",), held=0, tag=False)
    aws.iam.create_user(UserName="stray")
    stray = aws.iam.create_access_key(UserName="stray")["AccessKey"]["AccessKeyId"]
    (leaked,) = alice.key_ids
    result = invoke(sec="iam-keys/*", event=operator_event(leaked, stray))
    by_status = {e["status"]: e for e in result["secrets"]}
    assert sorted(by_status) == ["rotated", "skipped"], result["secrets"]
    assert by_status["rotated"]["secret"] == alice.secret and by_status["rotated"]["exposed_key_id"] == leaked
    assert by_status["skipped"]["exposed_key_id"] == stray
    assert aws.keys("alice")[leaked] == "Inactive" and aws.holds_working_key(alice.secret)
    assert aws.keys("stray") == {stray: "Active"}


def test_a_leak_of_the_held_key_right_after_a_writer_re_saved_the_secret_is_answered(aws, invoke, clock,
                                                                                     monkeypatch):
    # A rotation keeps the old key Active for its grace period; an application re-saves the secret, so no
    # version holds the old key any more (it is the last create's old key, under the usage gate). A leak of the
    # key the secret holds is answered all the same: the old key is the function's own, freed as a labelled
    # previous key would be, never taken for a person's key in use.
    monkeypatch.setenv("GRACE_HOURS", "24")
    seeded = seed_row(aws.iam, aws.secrets, ROWS[1], user="alice")
    (old,) = seeded.key_ids
    invoke(seeded.secret)
    held = aws.value(seeded.secret)["AccessKeyId"]
    resave(aws, clock, seeded.secret, note="re-saved")
    (entry,) = invoke(seeded.secret, event=operator_event(held))["secrets"]
    new = aws.value(seeded.secret)["AccessKeyId"]
    assert entry["status"] == "rotated" and "NOT replaced" not in (entry.get("reason") or "")
    assert new not in (old, held) and aws.holds_working_key(seeded.secret)
    assert aws.keys("alice")[held] == "Inactive" and old not in aws.keys("alice")
    # and the entry says so: the leaked key deactivated (not kept), the old key freed (not kept Active)
    assert f"deactivate {held}" in entry["steps"] and f"delete {old}" in entry["steps"], entry["steps"]
    assert "kept Active" not in (entry.get("reason") or "") and not entry.get("retire_after"), entry


# --- two leaked keys, no room, a refused secret -----------------------------------------------------------------------


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
