"""NOTIFY_TOPIC_ARN: one SNS message per run that did something worth telling, never a secret value.

Read back from moto through an SQS queue subscribed to the topic."""

from __future__ import annotations

import json

import pytest

from lambda_function import RotationFailed
from seed import ROWS, iam_secret_keys, seed_row


def test_a_run_sends_one_message_saying_what_happened_and_what_to_do(aws, invoke, topic):
    good = seed_row(aws.iam, aws.secrets, ROWS[1], user="alice")
    aws.secrets.create_secret(Name="iam-keys/broken", SecretString="[]")
    with pytest.raises(RotationFailed):
        invoke(good.secret, "iam-keys/broken")
    (message,) = topic()
    assert f"{good.secret}: rotated" in message and "iam-keys/broken: failed" in message
    assert message.count("What to do:") == 2
    for secret_key in iam_secret_keys("alice").values():
        assert secret_key not in message
    assert json.dumps(aws.value(good.secret)["SecretAccessKey"]).strip('"') not in message


def test_a_run_with_nothing_to_tell_sends_nothing(aws, invoke, topic, monkeypatch):
    seeded = seed_row(aws.iam, aws.secrets, ROWS[1], user="alice")
    monkeypatch.setenv("ROTATE_AFTER_DAYS", "90")
    assert invoke(seeded.secret)["skipped"] == 1
    assert topic() == []
