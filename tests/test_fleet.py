"""A fleet in one schedule: secrets by prefix, per-secret settings in tags, the calls a rotation costs."""

from __future__ import annotations

import collections
import json

import pytest

import lambda_function
from lambda_function import ConfigError, RotationFailed
from seed import ROWS, backdate_key, seed_row, seed_user


def names(result: dict) -> list[str]:
    return [s["secret"] for s in result["secrets"]]


def test_a_prefix_selects_every_secret_over_several_pages(aws, invoke, monkeypatch):
    monkeypatch.setenv("VERIFY_TIMEOUT_SECONDS", "0")
    seeded = [seed_row(aws.iam, aws.secrets, ROWS[1], user=f"u{i:03}") for i in range(130)]
    aws.secrets.create_secret(Name="other/not-selected", SecretString=json.dumps({"UserName": "u000"}))
    clients = lambda_function.aws_clients(lambda_function.Settings())
    pages = []
    clients.secrets.meta.events.register("before-call.secrets-manager.ListSecrets", lambda **_: pages.append(1))
    result = invoke(sec="iam-keys/*")
    assert len(pages) >= 2, "more than one page of 100"
    assert result["rotated"] == 130
    assert names(result) == sorted(s.secret for s in seeded), "discovered secrets in name order"


def test_explicit_entries_come_first_then_prefixes_by_name_each_secret_once(aws, invoke):
    for user in ("b", "a", "c"):
        seed_row(aws.iam, aws.secrets, ROWS[1], user=user)
    result = invoke(sec="iam-keys/c;iam-keys/*;iam-keys/a*;iam-keys/c")
    assert names(result) == ["iam-keys/c", "iam-keys/a", "iam-keys/b"]
    assert result["rotated"] == 3


def test_a_secret_scheduled_for_deletion_is_left_out(aws, invoke):
    kept = seed_row(aws.iam, aws.secrets, ROWS[1], user="kept")
    going = seed_row(aws.iam, aws.secrets, ROWS[1], user="going")
    aws.secrets.delete_secret(SecretId=going.secret, RecoveryWindowInDays=7)
    result = invoke(sec="iam-keys/*")
    assert names(result) == [kept.secret]
    assert aws.keys("going") == {going.key_ids[0]: "Active"}


@pytest.mark.parametrize("target, allowed", [("iam-keys/a", True), ("iam-keys/b", True), ("other/x", False)])
def test_a_targeted_run_must_be_listed_or_match_a_prefix(aws, invoke, target, allowed):
    seed_row(aws.iam, aws.secrets, ROWS[1], user="a")
    seed_row(aws.iam, aws.secrets, ROWS[1], user="b")
    if allowed:
        assert names(invoke(sec="x;iam-keys/*", event={"secrets": [target]})) == [target]
    else:
        with pytest.raises(ConfigError, match="does not select"):
            invoke(sec="x;iam-keys/*", event={"secrets": [target]})


# --- per-secret settings in tags ------------------------------------------------------------------------------------


def tag_secret(aws, secret: str, **tags: str) -> None:
    aws.secrets.tag_resource(SecretId=secret, Tags=[{"Key": f"key-rotation:{k.replace('_', '-')}", "Value": v}
                                                    for k, v in tags.items()])


def test_tags_narrow_age_threshold_and_grace_for_one_secret(aws, invoke, monkeypatch):
    monkeypatch.setenv("ROTATE_AFTER_DAYS", "7")
    old = seed_user(aws.iam, aws.secrets, "old", ("Inactive", "Active"), held=1)
    backdate_key("old", old.key_ids[1], days=10)
    tag_secret(aws, old.secret, grace_hours="12")  # later retirement: a narrowing
    (entry,) = invoke(old.secret)["secrets"]
    assert entry["status"] == "rotated" and entry.get("retire_after"), entry
    assert aws.keys("old")[old.key_ids[1]] == "Active", "kept through its own grace period"
    held = seed_user(aws.iam, aws.secrets, "held", ("Inactive", "Active"), held=1)
    backdate_key("held", held.key_ids[1], days=10)
    tag_secret(aws, held.secret, rotate_after_days="30")  # later rotation: a narrowing
    (entry,) = invoke(held.secret)["secrets"]
    assert entry["status"] == "skipped" and aws.keys("held") == {held.key_ids[0]: "Inactive", held.key_ids[1]: "Active"}


def test_tags_never_widen_age_threshold_or_grace(aws, invoke, monkeypatch):
    # A tag below the run's ROTATE_AFTER_DAYS or GRACE_HOURS would rotate sooner or retire sooner: ignored.
    monkeypatch.setenv("ROTATE_AFTER_DAYS", "90")
    monkeypatch.setenv("GRACE_HOURS", "24")
    young = seed_user(aws.iam, aws.secrets, "young", ("Inactive", "Active"), held=1)
    backdate_key("young", young.key_ids[1], days=10)
    tag_secret(aws, young.secret, rotate_after_days="7", grace_hours="0")
    (entry,) = invoke(young.secret)["secrets"]
    assert entry["status"] == "skipped", entry
    assert len(aws.versions(young.secret)) == 1
    monkeypatch.setenv("ROTATE_AFTER_DAYS", "0")
    (entry,) = invoke(young.secret)["secrets"]
    assert entry["status"] == "rotated" and entry.get("retire_after"), entry
    assert aws.keys("young")[young.key_ids[1]] == "Active", "the tag's grace-hours=0 does not retire sooner"


@pytest.mark.parametrize("tag, value", [("mode", "sometimes"), ("rotate-after-days", "-1"),
                                        ("grace-hours", "nan"), ("grace-hours", "500")])
def test_a_bad_tag_value_fails_that_secret_naming_the_tag_and_the_others_go_on(aws, invoke, tag, value):
    bad = seed_row(aws.iam, aws.secrets, ROWS[1], user="bad")
    good = seed_row(aws.iam, aws.secrets, ROWS[1], user="good")
    aws.secrets.tag_resource(SecretId=bad.secret, Tags=[{"Key": f"key-rotation:{tag}", "Value": value}])
    with pytest.raises(RotationFailed, match=f"tag key-rotation:{tag}") as failure:
        invoke(bad.secret, good.secret)
    assert str(failure.value).startswith("1 of 2")
    assert aws.keys("bad") == {bad.key_ids[0]: "Active"}
    aws.assert_converged(good.secret)


# --- what a rotation costs ------------------------------------------------------------------------------------------


def test_calls_per_steady_state_rotation_at_fifty_secrets(aws, invoke, monkeypatch):
    monkeypatch.setenv("VERIFY_TIMEOUT_SECONDS", "0")
    for i in range(50):
        seed_user(aws.iam, aws.secrets, f"u{i:02}", ("Inactive", "Active"), held=1)
    clients = lambda_function.aws_clients(lambda_function.Settings())
    counts: collections.Counter = collections.Counter()
    for client in (clients.iam, clients.secrets):
        client.meta.events.register("before-call", lambda model, **_: counts.update([model.name]))
    assert invoke(sec="iam-keys/*")["rotated"] == 50
    per_rotation = sum(counts.values()) / 50
    # 8 a secret (DescribeSecret, ListUserTags, ListAccessKeys, Delete, TagUser, Create, Put, Update), the values
    # 20 a BatchGetSecretValue, one ListSecrets page for all 50. The README's "What a rotation costs" says why.
    assert per_rotation <= 8.1, counts
    assert counts["ListSecrets"] == 1 and counts["BatchGetSecretValue"] == 3 and "GetSecretValue" not in counts


def test_a_batch_answer_that_is_not_the_awscurrent_version_is_read_again_by_its_label(aws, invoke):
    # BatchGetSecretValue cannot ask for a staging label. Stock moto answers with its "default" version, which
    # UpdateSecretVersionStage does not move; on AWS a write between DescribeSecret and the batch read gives a
    # version that is not the one described. Either way the AWSCURRENT label decides.
    from moto.secretsmanager.models import secretsmanager_backends

    seeded = seed_row(aws.iam, aws.secrets, ROWS[1], user="alice")
    invoke(seeded.secret)
    stored = secretsmanager_backends["123456789012"]["us-east-1"].secrets[seeded.secret]
    stored.default_version_id = next(v for v, d in stored.versions.items() if "AWSPREVIOUS" in d["version_stages"])
    result = invoke(seeded.secret, event={"dry_run": True})
    assert result["secrets"][0]["old_key_id"] == aws.value(seeded.secret)["AccessKeyId"] != seeded.key_ids[0]


def test_a_run_warns_when_its_secrets_cannot_all_rotate_in_the_time_its_memory_allows(aws, invoke, caplog):
    from conftest import LambdaContext

    seeded = [seed_row(aws.iam, aws.secrets, ROWS[1], user=f"w{i}") for i in range(3)]
    context = LambdaContext(timeout_seconds=0.2)
    context.memory_limit_in_mb = 128  # 0.2 s at 128 MB: room for about one rotation
    with pytest.raises(lambda_function.RotationFailed, match="not attempted"):  # too little time left, too
        invoke(*(s.secret for s in seeded), context=context)
    assert any('"action": "too_many_secrets"' in r.getMessage() and r.levelname == "WARNING" for r in caplog.records)
    assert lambda_function.capacity(1769, 900) == 52941 and lambda_function.capacity(256, 900) == 7661
