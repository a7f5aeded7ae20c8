"""No SecretAccessKey in logs (any level, botocore's included), results or errors."""

from __future__ import annotations

import json
import logging

import boto3
import pytest

from faults import REFUSED, TIMEOUT
from lambda_function import RotationFailed
from seed import ROWS, iam_secret_keys, seed_row


def all_secret_keys(aws, secrets: list[str]) -> set[str]:
    """Every SecretAccessKey any version of the secrets holds, plus the users' live ones."""
    found = set()
    for secret in secrets:
        for version in aws.versions(secret):
            value = aws.secrets.get_secret_value(SecretId=secret, VersionId=version["VersionId"])
            data = json.loads(value["SecretString"])
            found.add(data.get("SecretAccessKey"))
            found |= set(iam_secret_keys(data["UserName"]).values())
    return found - {None}


def run_everything(aws, invoke, faults, caplog) -> tuple[list[str], str]:
    """Rotate every row, then a failing store and a lost answer; return secrets and output."""
    seeded = [seed_row(aws.iam, aws.secrets, row) for row in ROWS]
    names = [s.secret for s in seeded]
    caplog.clear()  # the test's own seeding calls are not the function's logs
    output = [json.dumps(invoke(*names))]
    faults.inject("put_secret_value", REFUSED)
    with pytest.raises(RotationFailed) as failure:
        invoke(names[1])
    output.append(str(failure.value))
    faults.clear()
    faults.inject("put_secret_value", TIMEOUT)
    output.append(json.dumps(invoke(names[2])))
    return names, "\n".join(output)


def test_no_secret_access_key_in_debug_logs_or_results(aws, invoke, faults, monkeypatch, caplog):
    monkeypatch.setenv("LOG_LEVEL", "DEBUG")
    caplog.set_level(logging.DEBUG)  # the root logger, as a Lambda at DEBUG has it
    names, output = run_everything(aws, invoke, faults, caplog)
    logs = caplog.text
    secrets = all_secret_keys(aws, names)
    assert len(secrets) > len(names)
    assert any(r.name == "key_rotation" for r in caplog.records)
    for secret in secrets:
        assert secret not in logs
        assert secret not in output


def test_wire_logs_would_leak_without_the_guard(aws, invoke, caplog):
    # Proves the test above can fail: botocore at DEBUG logs response bodies, here on a client of the test's own
    # (the function's are quieted by the guard, configure_logging).
    seeded = seed_row(aws.iam, aws.secrets, ROWS[1])
    logging.getLogger("botocore").setLevel(logging.DEBUG)
    try:
        caplog.set_level(logging.DEBUG)
        caplog.clear()
        secret = boto3.client("secretsmanager").get_secret_value(SecretId=seeded.secret)["SecretString"]
        assert json.loads(secret)["SecretAccessKey"] in caplog.text
    finally:
        logging.getLogger("botocore").setLevel(logging.WARNING)


def test_each_log_line_is_json_with_action_and_ids(aws, invoke, caplog):
    caplog.set_level(logging.INFO, logger="key_rotation")
    seeded = seed_row(aws.iam, aws.secrets, ROWS[1])
    result = invoke(seeded.secret)
    lines = [json.loads(r.getMessage()) for r in caplog.records if r.name == "key_rotation"]
    actions = [line["action"] for line in lines]
    assert actions == ["plan", "create_key", "store_key", "verify_key", "deactivate_key", "rotated", "run_complete"]
    new_key = result["secrets"][0]["new_key_id"]
    assert {"action": "store_key", "secret": seeded.secret, "user": seeded.user, "key_id": new_key} in lines


def test_log_level_setting_filters_our_lines(aws, invoke, monkeypatch, caplog):
    monkeypatch.setenv("LOG_LEVEL", "ERROR")
    caplog.set_level(logging.DEBUG)
    seeded = seed_row(aws.iam, aws.secrets, ROWS[1])
    invoke(seeded.secret)
    assert not [r for r in caplog.records if r.name == "key_rotation"]


def test_wire_loggers_turned_up_by_name_are_quieted_too(aws, invoke, monkeypatch, caplog):
    import boto3

    boto3.set_stream_logger("botocore", logging.DEBUG)  # what a user debugging a function might add
    logging.getLogger("botocore.parsers").setLevel(logging.DEBUG)
    logging.getLogger("urllib3.connectionpool").setLevel(logging.DEBUG)
    monkeypatch.setenv("LOG_LEVEL", "DEBUG")
    caplog.set_level(logging.DEBUG)
    seeded = seed_row(aws.iam, aws.secrets, ROWS[1])
    caplog.clear()
    invoke(seeded.secret)
    logs = caplog.text
    assert aws.value(seeded.secret)["SecretAccessKey"] not in logs
    assert not [r for r in caplog.records if r.name.startswith("botocore") and r.levelno < logging.WARNING]
    for handler in list(logging.getLogger("botocore").handlers):
        logging.getLogger("botocore").removeHandler(handler)
