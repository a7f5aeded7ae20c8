"""The dry run and the other holds: DRY_RUN=true, {"dry_run": true}, a key-rotation:mode=dry-run or =skip tag on
the secret. A held secret is planned (or skipped) and nothing is changed: no key, no secret version, no mark, no
owner told; the checks still run (the user's tag, a bad secret), and a tag never widens a hold.

Each test asserts what AWS is left holding."""

from __future__ import annotations

import pytest
import test_exposed
import test_owners
import test_security
from test_compliance import held_for
from test_exposed import operator_event
from test_fleet import tag_secret
from test_owners import adopted_user

import lambda_function
from conftest import LambdaContext
from seed import ROWS, seed_row

# the fixtures of the behaviours a hold binds, where they are defined
alice = test_exposed.alice  # alice's key, a day old, held by her secret
owners = test_owners.owners  # an owner's inbox and a team's topic
admin = test_security.admin  # a listed secret its writer pointed at an admin


def mutating_calls(aws_fixture) -> list[str]:
    """Record the names of the calls the function's clients make."""
    seen: list[str] = []
    clients = lambda_function.aws_clients(lambda_function.Settings())
    for client in (clients.iam, clients.secrets):
        client.meta.events.register("before-call.*.*", lambda model, **_: seen.append(model.name))
    return seen


@pytest.mark.parametrize("how", ["event", "env"])
def test_dry_run_returns_plans_and_changes_nothing(aws, invoke, monkeypatch, how):
    seeded = [seed_row(aws.iam, aws.secrets, row) for row in ROWS]
    before = {s.user: aws.keys(s.user) for s in seeded}
    calls = mutating_calls(aws)
    if how == "env":
        monkeypatch.setenv("DRY_RUN", "true")
    result = invoke(*(s.secret for s in seeded), event={"dry_run": True} if how == "event" else {})
    # GetAccessKeyLastUsed: whether an Active key no secret holds is someone's key in use (then never touched)
    assert set(calls) == {"DescribeSecret", "BatchGetSecretValue", "ListUserTags", "ListAccessKeys",
                          "GetAccessKeyLastUsed"}
    assert {s.user: aws.keys(s.user) for s in seeded} == before
    assert all(len(aws.versions(s.secret)) == 1 for s in seeded)
    assert result["dry_run"] is True and result["planned"] == len(ROWS) and result["rotated"] == 0
    two_active = result["secrets"][-1]
    assert two_active["steps"] == [f"delete {seeded[-1].key_ids[1]}", "create new", "store new",
                                   f"deactivate {seeded[-1].key_ids[0]}"]


def test_dry_run_still_reports_bad_secrets_and_returns_every_other_secret_s_plan(aws, invoke):
    aws.secrets.create_secret(Name="bad", SecretString="[]")
    good = seed_row(aws.iam, aws.secrets, ROWS[1], user="alice")
    result = invoke("bad", good.secret, event={"dry_run": True})
    assert result["failed"] == 1 and result["planned"] == 1
    bad, planned = result["secrets"]
    assert bad["status"] == "failed" and "must be a JSON object" in bad["reason"]
    assert planned["status"] == "planned" and planned["steps"]
    assert aws.keys("alice") == {good.key_ids[0]: "Active"}


def test_a_dry_run_says_what_rotates_when(aws, invoke):
    seeded = held_for(aws, "alice", 10)
    (entry,) = invoke(seeded.secret, event={"dry_run": True})["secrets"]
    assert entry["status"] == "planned" and 9.9 <= entry["key_age_days"] <= 10.1 and entry["next_rotation"]


def test_a_dry_run_checks_the_tag_too(aws, invoke, admin):
    (entry,) = invoke("iam-keys/app", event={"dry_run": True})["secrets"]
    assert entry["status"] == "failed" and "refused: IAM user 'admin'" in entry["reason"]


# --- tags: a hold for one secret, never a widening --------------------------------------------------------------------


def test_tag_modes_skip_and_dry_run_narrow_one_secret(aws, invoke):
    skip, dry, normal = (seed_row(aws.iam, aws.secrets, ROWS[1], user=u) for u in ("skip", "dry", "normal"))
    tag_secret(aws, skip.secret, mode="skip")
    tag_secret(aws, dry.secret, mode="dry-run")
    tag_secret(aws, normal.secret, mode="rotate")
    result = invoke(sec="iam-keys/*")
    by_name = {s["secret"]: s for s in result["secrets"]}
    assert by_name[skip.secret]["status"] == "skipped" and "key-rotation:mode=skip" in by_name[skip.secret]["reason"]
    assert by_name[dry.secret]["status"] == "planned"
    assert by_name[normal.secret]["status"] == "rotated"
    for seeded in (skip, dry):
        assert aws.keys(seeded.user) == {seeded.key_ids[0]: "Active"} and len(aws.versions(seeded.secret)) == 1


def test_a_tag_cannot_widen_a_dry_run(aws, invoke, monkeypatch):
    seeded = seed_row(aws.iam, aws.secrets, ROWS[1], user="alice")
    tag_secret(aws, seeded.secret, mode="rotate")
    monkeypatch.setenv("DRY_RUN", "true")
    assert invoke(seeded.secret)["planned"] == 1
    assert aws.keys("alice") == {seeded.key_ids[0]: "Active"}


# --- a leak and the owners' messages under a hold ---------------------------------------------------------------------


def test_a_dry_run_plans_the_answer_and_changes_nothing(aws, invoke, alice):
    (leaked,) = alice.key_ids
    (entry,) = invoke(alice.secret, event={**operator_event(leaked), "dry_run": True})["secrets"]
    assert entry["status"] == "planned" and entry["exposed_key_id"] == leaked
    assert aws.keys("alice") == {leaked: "Active"} and len(aws.versions(alice.secret)) == 1


def test_a_skip_tag_holds_and_the_leak_is_reported_loudly(aws, invoke, alice, caplog):
    (leaked,) = alice.key_ids
    aws.secrets.tag_resource(SecretId=alice.secret, Tags=[{"Key": "key-rotation:mode", "Value": "skip"}])
    (entry,) = invoke(alice.secret, event=operator_event(leaked))["secrets"]
    assert entry["status"] == "skipped" and entry["exposed"] and aws.keys("alice") == {leaked: "Active"}
    assert any('"action": "exposed_key_held"' in r.getMessage() and r.levelname == "WARNING" for r in caplog.records)


def test_a_dry_run_plans_the_messages_and_sends_none(aws, invoke, owners, monkeypatch):
    monkeypatch.setenv("DRY_RUN", "true")
    seeded = adopted_user(aws)
    owners.tag("bob", f"bob@example.com {owners.topic}")
    result = invoke(seeded.secret)
    assert [(e["case"], e["status"]) for e in result["owners_told"]] == [("adopted", "planned")] * 2
    assert owners.mails() == [] and owners.posts() == []
    assert lambda_function.TOLD_TAG not in {t["Key"] for t in aws.iam.list_user_tags(UserName="bob")["Tags"]}


def test_a_hold_binds_the_owners_messages_a_leak_of_a_held_secret_is_planned_and_marks_nothing(aws, invoke, owners):
    seeded = seed_row(aws.iam, aws.secrets, ROWS[1], user="alice")
    aws.secrets.tag_resource(SecretId=seeded.secret, Tags=[{"Key": "key-rotation:mode", "Value": "skip"}])
    owners.tag("alice", "alice@example.com")
    result = invoke(seeded.secret, event={"exposed": [seeded.key_ids[0]]}, context=LambdaContext())
    assert [(e["case"], e["status"]) for e in result["owners_told"]] == [("exposed", "planned")]
    assert owners.mails() == []
    assert lambda_function.TOLD_TAG not in {t["Key"] for t in aws.iam.list_user_tags(UserName="alice")["Tags"]}


def test_a_skip_tag_binds_whatever_another_tag_of_the_secret_says_nothing_failed_no_one_told(aws, invoke, owners):
    # A skipped secret with a bad key-rotation:smtp-regions tag is not reported failed, nor its owner e-mailed
    # every run: a hold binds first (secret_settings), and a failure never tells a held secret's.
    seeded = seed_row(aws.iam, aws.secrets, ROWS[1], user="alice")
    aws.secrets.tag_resource(SecretId=seeded.secret, Tags=[{"Key": "key-rotation:mode", "Value": "skip"},
                                                          {"Key": "key-rotation:smtp-regions", "Value": "moon-1"}])
    owners.tag("alice", "alice@example.com")
    (entry,) = invoke(seeded.secret, context=LambdaContext())["secrets"]
    assert entry["status"] == "skipped" and owners.mails() == []
    assert set(aws.keys("alice")) == set(seeded.key_ids)
