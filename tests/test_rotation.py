"""Each row of the table against moto: the IAM keys and secret versions left behind."""

from __future__ import annotations

import json

import pytest

from seed import ROWS, iam_secret_keys, seed_row, seed_user


@pytest.mark.parametrize("row", ROWS, ids=[r.name for r in ROWS])
def test_row_rotates_to_one_active_key_held_by_secret(aws, invoke, row):
    seeded = seed_row(aws.iam, aws.secrets, row, user="alice")
    before = aws.value(seeded.secret)

    result = invoke(seeded.secret)

    keys = aws.keys("alice")
    after = aws.value(seeded.secret)
    new_key = after["AccessKeyId"]
    assert new_key not in seeded.key_ids
    assert keys.pop(new_key) == "Active"
    assert aws.holds_working_key(seeded.secret)
    expected = {k: s for k, s in zip(seeded.key_ids, row.after, strict=True) if s}
    assert keys == expected
    # The old value stays readable as AWSPREVIOUS.
    assert aws.value(seeded.secret, "AWSPREVIOUS") == before
    assert result["rotated"] == 1 and result["failed"] == 0
    (summary,) = result["secrets"]
    assert summary["new_key_id"] == new_key and summary["user"] == "alice"
    assert summary.get("old_key_id") == before.get("AccessKeyId")


def test_two_active_keeps_held_key_when_secret_holds_newer(aws, invoke):
    seeded = seed_user(aws.iam, aws.secrets, "bob", ("Active", "Active"), held=1)
    invoke(seeded.secret)
    older, newer = seeded.key_ids
    keys = aws.keys("bob")
    assert older not in keys
    assert keys[newer] == "Inactive"
    aws.assert_converged(seeded.secret)


def test_two_active_holding_neither_deletes_oldest(aws, invoke):
    seeded = seed_user(aws.iam, aws.secrets, "carol", ("Active", "Active"), held=None)
    invoke(seeded.secret)
    older, newer = seeded.key_ids
    keys = aws.keys("carol")
    assert older not in keys and keys[newer] == "Inactive"
    aws.assert_converged(seeded.secret)


def test_held_inactive_with_unheld_active_deletes_active_then_held(aws, invoke):
    seeded = seed_user(aws.iam, aws.secrets, "dan", ("Active", "Inactive"), held=1)
    result = invoke(seeded.secret)
    active, held = seeded.key_ids
    assert result["secrets"][0]["steps"][0] == f"delete {active}"
    assert result["secrets"][0]["steps"][-1] == f"delete {held}"
    assert set(aws.keys("dan")) == {aws.value(seeded.secret)["AccessKeyId"]}
    aws.assert_converged(seeded.secret)


def test_other_fields_of_the_secret_are_kept(aws, invoke):
    seeded = seed_user(aws.iam, aws.secrets, "erin", ("Active",), held=0,
                       extra={"Region": "eu-west-1", "Owner": {"team": "data"}})
    invoke(seeded.secret)
    value = aws.value(seeded.secret)
    assert value["Region"] == "eu-west-1" and value["Owner"] == {"team": "data"}
    assert set(value) == {"UserName", "AccessKeyId", "SecretAccessKey", "Region", "Owner"}


def test_secret_with_only_a_user_name_gets_its_first_key(aws, invoke):
    aws.iam.create_user(UserName="frank")
    arn = aws.secrets.create_secret(Name="frank-keys", SecretString=json.dumps({"UserName": "frank"}))["ARN"]
    aws.iam.tag_user(UserName="frank", Tags=[{"Key": "key-rotation-secret", "Value": arn}])
    invoke("frank-keys")
    aws.assert_converged("frank-keys")


def test_secret_named_by_arn_rotates(aws, invoke):
    seeded = seed_user(aws.iam, aws.secrets, "gina", ("Active",), held=0)
    arn = aws.secrets.describe_secret(SecretId=seeded.secret)["ARN"]
    invoke(sec=f" {arn} ; ")
    aws.assert_converged(seeded.secret)
    assert len(aws.keys("gina")) == 2


def test_same_secret_by_name_and_arn_rotates_once(aws, invoke):
    seeded = seed_user(aws.iam, aws.secrets, "hank", ("Active",), held=0)
    arn = aws.secrets.describe_secret(SecretId=seeded.secret)["ARN"]
    result = invoke(sec=f"{seeded.secret};{arn};{seeded.secret}")
    assert (result["rotated"], result["skipped"]) == (1, 1)
    assert len(aws.versions(seeded.secret)) == 2
    aws.assert_converged(seeded.secret)


def test_many_secrets_rotate_in_one_run(aws, invoke):
    seeded = [seed_row(aws.iam, aws.secrets, row) for row in ROWS]
    result = invoke(*(s.secret for s in seeded))
    assert result["rotated"] == len(ROWS)
    for s in seeded:
        aws.assert_converged(s.secret)


def test_second_run_retires_previous_fallback(aws, invoke):
    seeded = seed_user(aws.iam, aws.secrets, "ivy", ("Active",), held=0)
    invoke(seeded.secret)
    first = aws.value(seeded.secret)["AccessKeyId"]
    invoke(seeded.secret)
    second = aws.value(seeded.secret)["AccessKeyId"]
    assert aws.keys("ivy") == {first: "Inactive", second: "Active"}
    assert seeded.key_ids[0] not in iam_secret_keys("ivy")
