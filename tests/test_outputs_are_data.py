"""Values are data in the function's own outputs: a value in the wrong field is refused without being echoed,
one secret cannot spoil another's events, and summaries and events go to this account (or the one
CENTRAL_ACCOUNT_ID names) only. What reaches SNS and EventBridge is read back from moto through SQS."""

from __future__ import annotations

import json
import logging

import pytest

import lambda_function
from faults import REFUSED
from lambda_function import ConfigError, RotationFailed
from seed import ROWS, iam_secret_keys, seed_row


def test_a_secret_access_key_in_the_key_id_field_is_refused_and_shown_nowhere(aws, invoke, topic, bus, caplog):
    # The two fields swapped by hand: the SecretAccessKey sits where the key id goes.
    caplog.set_level(logging.DEBUG)
    seeded = seed_row(aws.iam, aws.secrets, ROWS[1], user="alice")
    secret_key = iam_secret_keys("alice")[seeded.key_ids[0]]
    aws.secrets.put_secret_value(SecretId=seeded.secret, SecretString=json.dumps(
        {"UserName": "alice", "AccessKeyId": secret_key, "SecretAccessKey": seeded.key_ids[0]}))
    with pytest.raises(RotationFailed) as failed:
        invoke(seeded.secret)
    assert "'AccessKeyId' in the value is not an access key id" in str(failed.value)
    said = [str(failed.value), caplog.text, *topic(), *(json.dumps(e) for e in bus())]
    assert all(secret_key not in text for text in said)
    assert aws.keys("alice") == {seeded.key_ids[0]: "Active"}


def test_a_user_name_no_iam_user_can_have_is_refused_and_not_quoted(aws, invoke, caplog):
    aws.secrets.create_secret(Name="iam-keys/odd", SecretString=json.dumps({"UserName": "x" * 65536}))
    with pytest.raises(RotationFailed, match="is not an IAM user name") as failed:
        invoke("iam-keys/odd")
    assert "x" * 100 not in str(failed.value) and "x" * 100 not in caplog.text


def test_one_secret_s_huge_value_costs_no_other_secret_its_event(aws, invoke, bus):
    # Ten secrets rotate; an eleventh names a user of 64 KB of text. Every secret's event arrives, each entry
    # within PutEvents' limits.
    seeded = [seed_row(aws.iam, aws.secrets, ROWS[1], user=f"u{i}") for i in range(10)]
    aws.secrets.create_secret(Name="iam-keys/zz-huge", SecretString=json.dumps({"UserName": "y" * 65536}))
    with pytest.raises(RotationFailed):
        invoke(sec="iam-keys/*")
    received = bus()
    assert sorted(e["detail"]["secret"] for e in received) == sorted([s.secret for s in seeded] + ["iam-keys/zz-huge"])
    assert all(len(json.dumps(e["detail"])) < 16 * 1024 for e in received)


def test_a_put_events_call_refused_whole_is_tried_again_one_entry_a_call(aws, invoke, bus, faults):
    seeded = [seed_row(aws.iam, aws.secrets, ROWS[1], user=f"u{i}") for i in range(3)]
    faults.inject("put_events", REFUSED, error=("ValidationException", "Total size of the entries in the request "
                                                                      "is over the limit.", 400))
    result = invoke(sec="iam-keys/*")
    assert result["events_failed"] == 0
    assert sorted(e["detail"]["secret"] for e in bus()) == [s.secret for s in seeded]


@pytest.mark.unit
def test_put_events_calls_keep_within_ten_entries_and_256_kib():
    entries = [{"Source": "key-rotation", "DetailType": "Access Key Rotated", "Detail": "x" * 60_000}] * 9
    batches = lambda_function.put_batches(entries)
    assert [len(b) for b in batches] == [4, 4, 1]
    assert all(sum(lambda_function.entry_size(e) for e in b) <= 256 * 1024 for b in batches)
    assert [len(b) for b in lambda_function.put_batches([{"Detail": "{}"}] * 23)] == [10, 10, 3]


@pytest.mark.unit
def test_an_event_field_too_long_is_clipped_and_marked():
    entry = lambda_function.Outcome(secret="iam-keys/a", status=lambda_function.Status.FAILED, reasons=["r" * 10_000],
                                    secret_arn="arn:x")
    (made,) = lambda_function.event_entries(lambda_function.Settings(event_bus="keys"), [entry])
    detail = json.loads(made["Detail"])
    assert detail["clipped"] is True and detail["reason"].endswith("...(clipped)")
    assert len(detail["reason"]) == lambda_function.EVENT_TEXT


@pytest.mark.parametrize("name, value", [
    ("NOTIFY_TOPIC_ARN", "arn:aws:sns:us-east-1:999999999999:keys"),
    ("EVENT_BUS", "arn:aws:events:us-east-1:999999999999:event-bus/keys"),
])
def test_a_topic_or_bus_in_another_account_is_refused_unless_central_account_id_names_it(aws, invoke, monkeypatch,
                                                                                       name, value):
    seeded = seed_row(aws.iam, aws.secrets, ROWS[1], user="alice")
    monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError, match=f"{name} is in account 999999999999, not this one"):
        invoke(seeded.secret)
    assert aws.keys("alice") == {seeded.key_ids[0]: "Active"}
    monkeypatch.setenv("CENTRAL_ACCOUNT_ID", "999999999999")
    assert invoke(seeded.secret)["rotated"] == 1  # (moto has no such topic or bus: the publish is logged, not fatal)


@pytest.mark.parametrize("value", ["123", "12345678901x", "arn:aws:iam::123456789012:root"])
def test_central_account_id_is_twelve_digits(aws, invoke, monkeypatch, value):
    monkeypatch.setenv("CENTRAL_ACCOUNT_ID", value)
    with pytest.raises(ConfigError, match="CENTRAL_ACCOUNT_ID"):
        invoke("any")


@pytest.mark.parametrize("value", ["arn:aws:sns:us-east-1:123456789012:keys", "bus name", "arn:aws:events:x"])
def test_event_bus_is_a_bus_name_or_arn(aws, invoke, monkeypatch, value):
    monkeypatch.setenv("EVENT_BUS", value)
    with pytest.raises(ConfigError, match="EVENT_BUS"):
        invoke("any")
